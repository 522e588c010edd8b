//! The daemon's per-period work on the audio loop's compute thread ([`crate::stream`]): every
//! captured period is encoded by a `MimiEncoderStream`, classified by the energy gate and, in
//! a turn, collected as codes; every played period is the next block of generated speech or
//! silence. Nothing here allocates, locks or waits.
//!
//! # Speech playback policy
//! The session thread decodes generated frames and pushes them, tagged with their utterance
//! id, into a fixed ring of `ring` periods (it waits for room: generation never runs more than
//! `ring` frames ahead). An utterance starts playing once `prebuffer` frames are queued or its
//! generation has ended; after that, a period with no frame ready (generation slower than real
//! time) plays silence and counts a speech underrun; the queue never grows.
//!
//! # Cuts (stop and barge-in)
//! Blocks of an utterance whose id is at or below `Shared::cut` are discarded at the next
//! period: after a `stop`, no new frame of that utterance is handed to playback, so the sound
//! ends within one period plus what the device already holds (the configured latency bound).
//! With barge-in on, a confirmed speech onset while an utterance plays cuts it the same way.

use super::state::{CUT_BY_BARGE_IN, Shared};
use super::turn::TurnCollector;
use super::vad::{EnergyGate, Vad};
use crate::Result;
use crate::mimi::MimiEncoderStream;
use crate::stream::FrameProcessor;
use crate::stream::ring::BlockConsumer;
use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

/// The frame processor (see the module docs).
#[derive(Debug)]
pub struct DaemonFrames {
    enc: MimiEncoderStream,
    codes: Vec<u32>,
    gate: EnergyGate,
    turns: TurnCollector,
    speech: BlockConsumer,
    shared: Arc<Shared>,
    prebuffer: usize,
    /// The utterance being played (0: none).
    playing: u64,
    /// The utterance whose first frame has been played.
    sounded: u64,
    /// The last cut this thread acted on.
    seen_cut: u64,
}

impl DaemonFrames {
    pub fn new(
        enc: MimiEncoderStream,
        gate: EnergyGate,
        turns: TurnCollector,
        speech: BlockConsumer,
        shared: Arc<Shared>,
        prebuffer: usize,
    ) -> DaemonFrames {
        let codes = vec![0; enc.num_codebooks()];
        DaemonFrames {
            enc,
            codes,
            gate,
            turns,
            speech,
            shared,
            prebuffer: prebuffer.max(1),
            playing: 0,
            sounded: 0,
            seen_cut: 0,
        }
    }

    /// Discards queued blocks of cut utterances; marks them finished.
    fn apply_cut(&mut self) {
        let sh = &*self.shared;
        let cut = sh.cut.load(Acquire);
        if cut > self.seen_cut {
            self.seen_cut = cut;
            let asked = sh.stop_received_ns.swap(0, Relaxed);
            if asked != 0 {
                sh.stop_to_cut.record_ns(sh.now_ns().saturating_sub(asked));
            }
            sh.finished.fetch_max(cut, Relaxed);
            if self.playing <= cut {
                self.playing = 0;
            }
        }
        while let Some(id) = self.speech.peek_stamp() {
            if id > self.seen_cut {
                break;
            }
            self.speech.skip();
        }
    }
}

impl FrameProcessor for DaemonFrames {
    fn analyze(&mut self, input: &[f32]) -> Result<()> {
        self.enc.encode_frame(input, &mut self.codes)?;
        let vad = self.gate.push(input);
        self.turns.push(vad, &self.codes, &self.shared.turns);
        if vad == Vad::Start
            && self.shared.barge_in
            && self.playing != 0
            && self.shared.cut_current(CUT_BY_BARGE_IN).is_some()
        {
            self.shared.barge_ins.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    fn synthesize(&mut self, output: &mut [f32]) -> Result<()> {
        self.apply_cut();
        let sh = &*self.shared;
        if self.playing == 0
            && let Some(id) = self.speech.peek_stamp()
            && (self.speech.len() >= self.prebuffer || sh.gen_done.load(Acquire) >= id)
        {
            self.playing = id;
            sh.played_frames.store(0, Relaxed);
        }
        if self.playing != 0 {
            if self.speech.peek_stamp() == Some(self.playing) {
                self.speech.try_pop(output);
                sh.played_frames.fetch_add(1, Relaxed);
                sh.speech_frames_played.fetch_add(1, Relaxed);
                if self.sounded != self.playing {
                    self.sounded = self.playing;
                    let t = sh
                        .now_ns()
                        .saturating_sub(sh.utterance_received_ns.load(Relaxed));
                    sh.text_to_first_sound.record_ns(t);
                    sh.last_first_sound_us.store(t / 1000, Relaxed);
                }
                return Ok(());
            }
            if sh.gen_done.load(Acquire) >= self.playing {
                // played out (a block of a later utterance, if any, starts next period)
                sh.finished.fetch_max(self.playing, Relaxed);
                self.playing = 0;
            } else {
                sh.speech_underruns.fetch_add(1, Relaxed);
            }
        } else if self.speech.is_empty() {
            // nothing queued and nothing playing: every ended generation is finished
            sh.finished.fetch_max(sh.gen_done.load(Acquire), Relaxed);
        }
        output.fill(0.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::CUT_BY_STOP;
    use crate::daemon::turn::turn_channel;
    use crate::daemon::vad::GateConfig;
    use crate::mimi::Mimi;
    use crate::stream::ring::{BlockProducer, block_ring};

    const P: usize = 1920;

    fn setup(barge_in: bool) -> (DaemonFrames, BlockProducer, Arc<Shared>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/mimi-tiny");
        let mimi = Arc::new(Mimi::load(dir).unwrap());
        let shared = Arc::new(Shared::new(barge_in, 128));
        let (collector, _rx) = turn_channel(2, 10);
        let (tx, rx) = block_ring(P, 4);
        let gate = EnergyGate::new(GateConfig {
            threshold_dbfs: -30.0,
            onset: 1,
            hangover: 2,
        })
        .unwrap();
        let f = DaemonFrames::new(
            MimiEncoderStream::new(mimi, 2).unwrap(),
            gate,
            collector,
            rx,
            shared.clone(),
            2,
        );
        (f, tx, shared)
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
        sh.speaking.store(1, Relaxed);
        assert!(tx.try_push(&[0.1; P], 1));
        assert_eq!(play(&mut f), 0.0, "waits for the prebuffer");
        assert!(tx.try_push(&[0.2; P], 1));
        assert_eq!(play(&mut f), 0.1);
        assert_eq!(play(&mut f), 0.2);
        // generation late: silence, counted
        assert_eq!(play(&mut f), 0.0);
        assert_eq!(sh.speech_underruns.load(Relaxed), 1);
        assert!(tx.try_push(&[0.3; P], 1));
        assert_eq!(play(&mut f), 0.3);
        assert_eq!(sh.finished.load(Relaxed), 0);
        // generation ends: the utterance is over at the next period, not an underrun
        sh.speaking.store(0, Relaxed);
        sh.gen_done.store(1, Relaxed);
        assert_eq!(play(&mut f), 0.0);
        assert_eq!(sh.finished.load(Relaxed), 1);
        assert_eq!(sh.speech_underruns.load(Relaxed), 1);
        assert_eq!(sh.played_frames.load(Relaxed), 3);
        assert_eq!(sh.text_to_first_sound.summary().count, 1);
        // a one-frame utterance plays without waiting for a prebuffer it will never fill
        assert!(tx.try_push(&[0.4; P], 2));
        sh.gen_done.store(2, Relaxed);
        assert_eq!(play(&mut f), 0.4);
        assert_eq!(play(&mut f), 0.0);
        assert_eq!(sh.finished.load(Relaxed), 2);
    }

    #[test]
    fn a_stop_discards_queued_frames_at_the_next_period() {
        let (mut f, mut tx, sh) = setup(false);
        sh.speaking.store(1, Relaxed);
        for v in [0.1, 0.2, 0.3, 0.4] {
            assert!(tx.try_push(&[v; P], 1));
        }
        assert_eq!(play(&mut f), 0.1);
        sh.stop_received_ns.store(sh.now_ns().max(1), Relaxed);
        assert_eq!(sh.cut_current(CUT_BY_STOP), Some(1));
        assert_eq!(
            play(&mut f),
            0.0,
            "nothing of a cut utterance plays after the stop"
        );
        assert_eq!(sh.finished.load(Relaxed), 1);
        assert_eq!(sh.stop_to_cut.summary().count, 1);
        // a frame pushed after the cut (generation had not seen it yet) is discarded too
        assert!(tx.try_push(&[0.5; P], 1));
        assert_eq!(play(&mut f), 0.0);
        // the next utterance plays normally
        sh.speaking.store(2, Relaxed);
        assert!(tx.try_push(&[0.6; P], 2));
        assert!(tx.try_push(&[0.7; P], 2));
        assert_eq!(play(&mut f), 0.6);
        // nothing to stop once it is over
        sh.speaking.store(0, Relaxed);
        sh.gen_done.store(2, Relaxed);
        assert_eq!(play(&mut f), 0.7);
        assert_eq!(play(&mut f), 0.0);
        assert_eq!(sh.cut_current(CUT_BY_STOP), None);
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
            sh.speaking.store(1, Relaxed);
            for v in [0.1, 0.2, 0.3] {
                assert!(tx.try_push(&[v; P], 1));
            }
            assert_eq!(play(&mut f), 0.1);
            f.analyze(&loud).unwrap();
            let next = play(&mut f);
            if enabled {
                assert_eq!(next, 0.0, "barge-in cuts the speech");
                assert_eq!(sh.barge_ins.load(Relaxed), 1);
                assert_eq!(sh.cut.load(Relaxed), 1);
            } else {
                assert_eq!(next, 0.2, "barge-in off: speech goes on");
                assert_eq!(sh.barge_ins.load(Relaxed), 0);
            }
            assert_eq!(sh.turns.turns.load(Relaxed), 1);
        }
    }
}
