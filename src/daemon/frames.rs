//! The daemon's per-period work on the audio loop's frame thread ([`crate::stream`]): every
//! captured period goes through the energy gate and, inside a user turn, into the turn ring
//! (the session thread encodes it, see [`super::turn`]); every played period is the next block
//! of generated speech or silence. Nothing here allocates, locks, waits or runs a model: the
//! period's work is microseconds, so generation can have every core.
//!
//! # Speech playback policy
//! The session thread decodes generated frames and pushes them, tagged with their utterance
//! id, into a ring that holds the longest allowed utterance, so holding frames back never
//! blocks generation. An utterance starts playing when it can play to the end without a gap,
//! judged from the measured generation time per frame
//! ([`super::handoff::Handoff::can_start`]): with `q` frames
//! queued, `r` still to generate (up to the utterance's frame limit), `g` per frame and a
//! period `p`, it starts once `q >= prebuffer` and `r * g * 9/8 <= (q + r - 1) * p` (the last
//! frame arrives before the queue runs dry, with 1/8 to spare), or once its generation has
//! ended. A model
//! faster than real time starts after the prebuffer; a slower one waits (the wait is in
//! `status` and estimated in the `started` event). Once playing, a period with no frame ready
//! (generation slowed down, e.g. another process took a core) plays silence, counts a speech
//! underrun and a rebuffer, and playback resumes only when the same rule holds again: one
//! pause rather than a gap every few frames. The queue never grows past the ring.
//!
//! # Cuts (stop and barge-in)
//! Blocks of an utterance whose id is at or below the cut watermark are discarded at the next
//! period: after a `stop`, no new frame of that utterance is handed to playback, so the sound
//! ends within one period plus what the device already holds (the configured latency bound).
//! With barge-in on, a confirmed speech onset while an utterance plays cuts it the same way.

use super::handoff::CutReason;
use super::state::Shared;
use super::turn::TurnCollector;
use super::vad::{EnergyGate, Vad};
use crate::Result;
use crate::stream::FrameProcessor;
use crate::stream::ring::BlockConsumer;
use std::sync::Arc;

/// The frame processor (see the module docs).
#[derive(Debug)]
pub struct DaemonFrames {
    gate: EnergyGate,
    turns: TurnCollector,
    speech: BlockConsumer,
    shared: Arc<Shared>,
    prebuffer: usize,
    /// One period in nanoseconds.
    period_ns: u64,
    /// The utterance being played (0: none).
    playing: u64,
    /// It ran dry and waits until the rest will arrive in time (see the module docs).
    rebuffering: bool,
    /// The utterance whose first frame has been played.
    sounded: u64,
    /// The last cut this thread acted on.
    seen_cut: u64,
}

impl DaemonFrames {
    pub fn new(
        gate: EnergyGate,
        turns: TurnCollector,
        speech: BlockConsumer,
        shared: Arc<Shared>,
        prebuffer: usize,
        period_ns: u64,
    ) -> DaemonFrames {
        DaemonFrames {
            gate,
            turns,
            speech,
            shared,
            prebuffer: prebuffer.max(1),
            period_ns,
            playing: 0,
            rebuffering: false,
            sounded: 0,
            seen_cut: 0,
        }
    }

    /// Discards queued blocks of cut utterances; marks them finished.
    fn apply_cut(&mut self) {
        let sh = &*self.shared;
        let cut = sh.handoff.cut_watermark();
        if cut > self.seen_cut {
            self.seen_cut = cut;
            sh.metrics.cut_applied(sh.now_ns());
            sh.handoff.finish(cut);
            if self.playing != 0 && self.playing <= cut {
                self.playing = 0;
                self.rebuffering = false;
                // `status` "playing" and the session's view end with the cut
                sh.handoff.pause();
            }
        }
        while let Some(id) = self.speech.peek_stamp() {
            if id > self.seen_cut {
                break;
            }
            self.speech.skip();
        }
    }

    /// Stands in for the periods while the devices are away (see [`super::audio`]): applies
    /// cuts, so a `stop` still ends its utterance, and finishes generations with nothing left
    /// to play.
    pub fn idle(&mut self) {
        self.apply_cut();
        if self.playing == 0 && self.speech.is_empty() {
            self.shared.handoff.finish_ended();
        }
    }
}

impl FrameProcessor for DaemonFrames {
    fn analyze(&mut self, input: &[f32]) -> Result<()> {
        let vad = self.gate.push(input);
        let sh = &*self.shared;
        if self.turns.push(vad, input, &sh.metrics.turns) {
            sh.metrics.turn_ended(sh.now_ns());
        }
        if vad == Vad::Start
            && sh.barge_in
            && self.playing != 0
            && sh.handoff.cut_current(CutReason::BargeIn).is_some()
        {
            sh.metrics.barge_ins.incr();
        }
        Ok(())
    }

    fn synthesize(&mut self, output: &mut [f32]) -> Result<()> {
        self.apply_cut();
        let sh = &*self.shared;
        let (h, m) = (&sh.handoff, &sh.metrics);
        let can_start = |id: u64, queued: usize| {
            h.can_start(id, queued as u64, self.prebuffer as u64, self.period_ns)
        };
        if self.playing == 0
            && let Some(id) = self.speech.peek_stamp()
            && can_start(id, self.speech.len())
        {
            self.playing = id;
            self.rebuffering = false;
            h.start_playing(id);
            m.playback_started(sh.now_ns());
        }
        if self.playing != 0 && self.rebuffering && can_start(self.playing, self.speech.len()) {
            self.rebuffering = false;
            h.resume(self.playing);
        }
        if self.playing != 0 && !self.rebuffering {
            if self.speech.peek_stamp() == Some(self.playing) {
                self.speech.try_pop(output);
                h.frame_played();
                m.speech_frames_played.incr();
                if self.sounded != self.playing {
                    self.sounded = self.playing;
                    m.first_sound(sh.now_ns());
                }
                return Ok(());
            }
            if h.generation_ended(self.playing) {
                // played out (a block of a later utterance, if any, starts next period)
                h.finish(self.playing);
                self.playing = 0;
                h.pause();
            } else {
                // generation fell behind: one pause until the rest will arrive in time, rather
                // than a gap every few frames
                self.rebuffering = true;
                h.pause();
                m.rebuffers.incr();
                m.speech_underruns.incr();
            }
        } else if self.playing != 0 {
            m.speech_underruns.incr();
        } else if self.speech.is_empty() {
            // nothing queued and nothing playing: every ended generation is finished
            h.finish_ended();
        }
        output.fill(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::handoff::CutReason::Stop;
    use crate::daemon::turn::{TurnEvent, TurnReceiver, turn_channel};
    use crate::daemon::vad::GateConfig;
    use crate::stream::ring::{BlockProducer, block_ring};

    const P: usize = 1920;
    const PERIOD_NS: u64 = 80_000_000;

    fn setup_with(
        barge_in: bool,
        ring: usize,
    ) -> (DaemonFrames, BlockProducer, Arc<Shared>, TurnReceiver) {
        let shared = Arc::new(Shared::new(barge_in, 128));
        let (collector, turns) = turn_channel(P, 10);
        let (tx, rx) = block_ring(P, ring);
        let gate = EnergyGate::new(GateConfig {
            threshold_dbfs: -30.0,
            onset: 1,
            hangover: 2,
        })
        .unwrap();
        let f = DaemonFrames::new(gate, collector, rx, shared.clone(), 2, PERIOD_NS);
        // generation measured faster than real time: playback starts after the prebuffer
        shared.handoff.measured(PERIOD_NS / 4);
        (f, tx, shared, turns)
    }

    fn setup(barge_in: bool) -> (DaemonFrames, BlockProducer, Arc<Shared>) {
        let (f, tx, sh, _) = setup_with(barge_in, 4);
        (f, tx, sh)
    }

    fn play(f: &mut DaemonFrames) -> f32 {
        let mut out = vec![9.0; P];
        f.synthesize(&mut out).unwrap();
        assert!(out.iter().all(|&x| x == out[0]), "one value per block here");
        out[0]
    }

    #[test]
    fn prebuffer_underruns_and_end_of_utterance() {
        let (mut f, mut tx, sh) = setup(false);
        assert_eq!(play(&mut f), 0.0, "silence when idle");
        sh.handoff.begin_generating(1, 100);
        assert!(tx.try_push(&[0.1; P], 1));
        assert_eq!(play(&mut f), 0.0, "waits for the prebuffer");
        assert!(tx.try_push(&[0.2; P], 1));
        assert_eq!(play(&mut f), 0.1);
        assert_eq!(play(&mut f), 0.2);
        // generation late: silence, counted, and playback pauses until it can go on without
        // a gap (here: the prebuffer again), instead of playing each frame as it comes
        assert_eq!(play(&mut f), 0.0);
        assert_eq!(sh.metrics.speech_underruns.get(), 1);
        assert_eq!(sh.metrics.rebuffers.get(), 1);
        assert_eq!(
            sh.handoff.playing(),
            None,
            "the session may run ahead again"
        );
        assert!(tx.try_push(&[0.3; P], 1));
        assert_eq!(play(&mut f), 0.0, "one frame is not enough to go on");
        assert_eq!(sh.metrics.speech_underruns.get(), 2);
        assert!(tx.try_push(&[0.35; P], 1));
        assert_eq!(play(&mut f), 0.3);
        assert_eq!(sh.handoff.playing(), Some(1));
        assert_eq!(play(&mut f), 0.35);
        assert!(!sh.handoff.is_finished(1));
        // generation ends: the utterance is over at the next period, not an underrun
        sh.handoff.end_generating(1);
        assert_eq!(play(&mut f), 0.0);
        assert!(sh.handoff.is_finished(1) && !sh.handoff.is_finished(2));
        assert_eq!(sh.metrics.speech_underruns.get(), 2);
        assert_eq!(sh.metrics.rebuffers.get(), 1);
        assert_eq!(sh.handoff.played_frames(), 4);
        assert_eq!(sh.metrics.text_to_first_sound.summary().count, 1);
        // a one-frame utterance plays without waiting for a prebuffer it will never fill
        assert!(tx.try_push(&[0.4; P], 2));
        sh.handoff.end_generating(2);
        assert_eq!(play(&mut f), 0.4);
        assert_eq!(play(&mut f), 0.0);
        assert!(sh.handoff.is_finished(2));
    }

    #[test]
    fn a_stop_discards_queued_frames_at_the_next_period() {
        let (mut f, mut tx, sh) = setup(false);
        sh.handoff.begin_generating(1, 100);
        for v in [0.1, 0.2, 0.3, 0.4] {
            assert!(tx.try_push(&[v; P], 1));
        }
        assert_eq!(play(&mut f), 0.1);
        sh.metrics.stop_received(sh.now_ns().max(1));
        assert_eq!(sh.handoff.cut_current(Stop), Some(1));
        assert_eq!(
            play(&mut f),
            0.0,
            "nothing of a cut utterance plays after the stop"
        );
        assert!(sh.handoff.is_finished(1) && !sh.handoff.is_finished(2));
        assert_eq!(
            sh.handoff.playing(),
            None,
            "status shows nothing playing after the cut"
        );
        assert_eq!(sh.metrics.stop_to_cut.summary().count, 1);
        // a frame pushed after the cut (generation had not seen it yet) is discarded too
        assert!(tx.try_push(&[0.5; P], 1));
        assert_eq!(play(&mut f), 0.0);
        // the next utterance plays normally
        sh.handoff.begin_generating(2, 100);
        assert!(tx.try_push(&[0.6; P], 2));
        assert!(tx.try_push(&[0.7; P], 2));
        assert_eq!(play(&mut f), 0.6);
        // nothing to stop once it is over
        sh.handoff.end_generating(2);
        assert_eq!(play(&mut f), 0.7);
        assert_eq!(play(&mut f), 0.0);
        assert_eq!(sh.handoff.cut_current(Stop), None);
    }

    #[test]
    fn slow_generation_waits_until_the_rest_will_arrive_in_time_then_plays_without_a_gap() {
        // 10 frames at 200 ms each (2.5x slower than real time); playback of 80 ms periods
        let (mut f, mut tx, sh, _) = setup_with(false, 16);
        let (frames, gen_ms) = (10u64, 200u64);
        sh.handoff.measured(gen_ms * 1_000_000);
        sh.handoff.begin_generating(1, frames);
        let (mut generated, mut started_at, mut played) = (0u64, None, 0u64);
        for t in (0..6000u64).step_by(10) {
            if generated < frames && t >= (generated + 1) * gen_ms {
                assert!(tx.try_push(&[0.5; P], 1));
                generated += 1;
                sh.handoff.frame_generated(generated);
                if generated == frames {
                    sh.handoff.end_generating(1);
                }
            }
            if t % 80 == 0 {
                let v = play(&mut f);
                if v == 0.5 {
                    played += 1;
                    started_at.get_or_insert(t);
                }
            }
        }
        assert_eq!(played, frames);
        assert_eq!(sh.metrics.speech_underruns.get(), 0, "a gap in the speech");
        // it could not start after the prebuffer (2 frames at 400 ms): it waited for 7
        let start = started_at.unwrap();
        assert!((1400..1500).contains(&start), "started at {start} ms");
        assert_eq!(sh.metrics.playback_wait.summary().count, 1);
        // the same utterance with only the prebuffer policy would have played at 400 ms and
        // then run dry: the rate rule is what held it back
        assert!(start > 2 * gen_ms);
    }

    #[test]
    fn user_turns_go_to_the_session_as_audio_and_their_end_is_stamped() {
        let (mut f, _tx, sh, mut turns) = setup_with(false, 4);
        let loud: Vec<f32> = (0..P).map(|i| 0.5 * (i as f32 * 0.1).sin()).collect();
        let quiet = vec![0.0; P];
        f.analyze(&loud).unwrap();
        f.analyze(&loud).unwrap();
        assert_eq!(sh.metrics.last_turn_end_ns(), 0);
        for _ in 0..3 {
            f.analyze(&quiet).unwrap();
        }
        assert!(
            sh.metrics.last_turn_end_ns() > 0,
            "the turn's end is stamped"
        );
        let mut kinds = Vec::new();
        while let Some(e) = turns.try_recv() {
            kinds.push(match e {
                TurnEvent::First(b) => {
                    assert_eq!(b, &loud[..]);
                    'F'
                }
                TurnEvent::Audio(_) => 'A',
                TurnEvent::End { .. } => 'E',
                TurnEvent::Discard => 'D',
            });
        }
        // two loud frames and the hangover's quiet ones belong to the turn
        assert_eq!(kinds.first(), Some(&'F'));
        assert_eq!(kinds.last(), Some(&'E'));
        assert_eq!(sh.metrics.turns.turns.get(), 1);
    }

    #[test]
    fn speech_on_capture_barges_in_only_when_enabled_and_playing() {
        let loud: Vec<f32> = (0..P).map(|i| 0.5 * (i as f32 * 0.1).sin()).collect();
        let quiet = vec![0.0; P];
        for enabled in [false, true] {
            let (mut f, mut tx, sh) = setup(enabled);
            // heard while idle: a user turn, never a barge-in
            f.analyze(&loud).unwrap();
            for _ in 0..3 {
                f.analyze(&quiet).unwrap();
            }
            sh.handoff.begin_generating(1, 100);
            for v in [0.1, 0.2, 0.3] {
                assert!(tx.try_push(&[v; P], 1));
            }
            assert_eq!(play(&mut f), 0.1);
            f.analyze(&loud).unwrap();
            let next = play(&mut f);
            if enabled {
                assert_eq!(next, 0.0, "barge-in cuts the speech");
                assert_eq!(sh.metrics.barge_ins.get(), 1);
                assert!(sh.handoff.is_cut(1));
            } else {
                assert_eq!(next, 0.2, "barge-in off: speech goes on");
                assert_eq!(sh.metrics.barge_ins.get(), 0);
            }
            assert_eq!(sh.metrics.turns.turns.get(), 1);
        }
    }
}
