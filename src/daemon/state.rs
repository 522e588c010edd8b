//! What the daemon's threads share: the utterance hand-off flags (which one is generating,
//! which are cut, which have finished playing), latency histograms and counters, and the
//! `status` reply built from them and the audio loop's own statistics. All atomics: the frame
//! thread reads and writes them without locks or allocation.

use super::health::AudioHealth;
use super::turn::TurnCounters;
use crate::stream::LoopStats;
use crate::stream::stats::{Histogram, Summary};
use serde_json::{Value, json};
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed},
};
use std::time::Instant;

/// Why the last cut happened.
pub const CUT_BY_STOP: u64 = 1;
pub const CUT_BY_BARGE_IN: u64 = 2;
pub const CUT_BY_SHUTDOWN: u64 = 3;
pub const CUT_BY_ERROR: u64 = 4;

/// Shared state (see the module docs). Utterance ids start at 1; 0 means none.
#[derive(Debug)]
pub struct Shared {
    pub epoch: Instant,
    /// The utterance being generated (0: none).
    pub speaking: AtomicU64,
    /// Every utterance with an id at or below this is cut: not played any further.
    pub cut: AtomicU64,
    /// Why `cut` was last raised (`CUT_BY_*`).
    pub cut_reason: AtomicU64,
    /// Generation of every utterance up to this id has ended (no more blocks will come).
    pub gen_done: AtomicU64,
    /// Playback of every utterance up to this id is over (played out or cut).
    pub finished: AtomicU64,
    /// When the request of the utterance being generated arrived (ns since `epoch`).
    pub utterance_received_ns: AtomicU64,
    /// When the last `stop` arrived (ns since `epoch`; 0 once the frame thread handled it).
    pub stop_received_ns: AtomicU64,
    /// Text-to-first-sound of the last utterance that made a sound (us; `u64::MAX`: none).
    pub last_first_sound_us: AtomicU64,
    /// Frames handed to playback for the utterance being played.
    pub played_frames: AtomicU64,
    /// Frames generated for the utterance being generated.
    pub generated_frames: AtomicU64,
    /// The frame limit of the utterance being generated.
    pub utterance_max_frames: AtomicU64,
    /// Generation time per frame (ns): the mean of the current utterance's frames after its
    /// first, or the last utterance's until it has one (0: not known yet). The frame thread
    /// starts playback from it (see [`super::frames`]).
    pub frame_ns: AtomicU64,
    /// When the current utterance's first frame was queued for playback (ns since `epoch`).
    pub first_queued_ns: AtomicU64,
    /// The utterance playback has started (0: none): generation runs at most the lead ahead
    /// of it.
    pub playing: AtomicU64,
    /// When the last user turn ended on the frame thread (ns since `epoch`).
    pub turn_end_ns: AtomicU64,
    /// Requests waiting for the session thread.
    pub queued: AtomicU64,
    /// The last `say` accepted (its id; 0: none): a `stop` cuts every utterance up to it.
    pub accepted: AtomicU64,
    /// Times the session thread recovered from a panic (the utterance ended with an error and
    /// the conversation was rebuilt).
    pub session_restarts: AtomicU64,
    /// Test hook (`DaemonConfig::fault_injection`): the session panics at its next frame.
    pub inject_panic: AtomicBool,
    /// How long `Daemon::start` took: model loaded, devices open, threads running (us).
    pub ready_us: AtomicU64,
    pub shutdown: AtomicBool,
    /// The devices' health (lost, reopening, reconnects).
    pub audio: AudioHealth,
    pub barge_in: bool,
    // conversation, published by the session thread
    pub segments: AtomicU64,
    pub positions: AtomicU64,
    pub max_positions: u64,
    pub evicted_segments: AtomicU64,
    pub user_turns_added: AtomicU64,
    pub user_turns_failed: AtomicU64,
    // counters
    pub turns: TurnCounters,
    pub barge_ins: AtomicU64,
    /// Periods of silence played inside an utterance because generation was late.
    pub speech_underruns: AtomicU64,
    pub speech_frames_played: AtomicU64,
    /// Times an utterance ran dry while playing and paused until it could go on without a gap.
    pub rebuffers: AtomicU64,
    pub utterances: AtomicU64,
    /// Events not delivered because a client's queue was full.
    pub events_dropped: AtomicU64,
    /// Generation compute per frame: CSM frame + Mimi decode (waits for ring room excluded).
    pub gen_frame: Histogram,
    /// From a `say` request's arrival to its first frame handed to playback.
    pub text_to_first_sound: Histogram,
    /// From a `stop` request's arrival to the frame thread's cut.
    pub stop_to_cut: Histogram,
    /// From an utterance's first frame queued to its playback start (the wait for enough of
    /// it to play without a gap).
    pub playback_wait: Histogram,
    /// From the end of a user turn on the frame thread to its codes in the conversation.
    pub user_turn: Histogram,
}

/// Fixed facts for `status`.
#[derive(Clone, Debug)]
pub struct StaticInfo {
    pub capture: String,
    pub playback: String,
    pub model: String,
    pub latency_bound_ms: f64,
    pub prebuffer_frames: usize,
    /// Frames generation may run ahead of playback once it plays.
    pub lead_frames: usize,
    /// The longest utterance in frames (the speech ring holds one whole).
    pub max_utterance_frames: usize,
    pub max_turn_frames: usize,
    pub user_speaker: u32,
    pub threads: usize,
    /// Codebooks generated per frame, and the model's count.
    pub codebooks: usize,
    pub model_codebooks: usize,
}

impl Shared {
    pub fn new(barge_in: bool, max_positions: usize) -> Shared {
        Shared {
            epoch: Instant::now(),
            speaking: AtomicU64::new(0),
            cut: AtomicU64::new(0),
            cut_reason: AtomicU64::new(0),
            gen_done: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            utterance_received_ns: AtomicU64::new(0),
            stop_received_ns: AtomicU64::new(0),
            last_first_sound_us: AtomicU64::new(u64::MAX),
            played_frames: AtomicU64::new(0),
            generated_frames: AtomicU64::new(0),
            utterance_max_frames: AtomicU64::new(0),
            frame_ns: AtomicU64::new(0),
            first_queued_ns: AtomicU64::new(0),
            playing: AtomicU64::new(0),
            turn_end_ns: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            session_restarts: AtomicU64::new(0),
            inject_panic: AtomicBool::new(false),
            ready_us: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            audio: AudioHealth::default(),
            barge_in,
            segments: AtomicU64::new(0),
            positions: AtomicU64::new(0),
            max_positions: max_positions as u64,
            evicted_segments: AtomicU64::new(0),
            user_turns_added: AtomicU64::new(0),
            user_turns_failed: AtomicU64::new(0),
            turns: TurnCounters::default(),
            barge_ins: AtomicU64::new(0),
            speech_underruns: AtomicU64::new(0),
            speech_frames_played: AtomicU64::new(0),
            rebuffers: AtomicU64::new(0),
            utterances: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            gen_frame: Histogram::default(),
            text_to_first_sound: Histogram::default(),
            stop_to_cut: Histogram::default(),
            playback_wait: Histogram::default(),
            user_turn: Histogram::default(),
        }
    }

    /// Nanoseconds since `epoch`.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Whether utterance `id`, with `queued` frames waiting, can start playing now: its
    /// generation has ended, or at least `prebuffer` frames are queued and, at the measured
    /// generation time per frame `g`, the `r` frames still to come (up to its frame limit) will
    /// arrive before the queue runs dry: `r * g * 9/8 <= (queued + r - 1) * period` (1/8 to
    /// spare). The frame thread starts playback on it; the session stops running ahead on it.
    pub fn can_start(&self, id: u64, queued: u64, prebuffer: u64, period_ns: u64) -> bool {
        if self.gen_done.load(Acquire) >= id {
            return true;
        }
        if queued < prebuffer || self.speaking.load(Acquire) != id {
            return false;
        }
        let g = self.frame_ns.load(Relaxed);
        if g == 0 {
            // no measurement yet: wait for one
            return false;
        }
        let left = self
            .utterance_max_frames
            .load(Relaxed)
            .saturating_sub(self.generated_frames.load(Relaxed));
        left.saturating_mul(g).saturating_mul(9) / 8
            <= (queued + left).saturating_sub(1).saturating_mul(period_ns)
    }

    /// Whether generation of utterance `id`, with `queued` frames waiting, should pause rather
    /// than run further ahead of playback: only with at least `lead` frames queued, and then
    /// before playback starts once it can start (the frame thread picks it up within a period),
    /// and while it plays only if generation is measured faster than real time (with 1/8 to
    /// spare). A slower generator never pauses: holding it back to `lead` frames would empty
    /// the queue it needs to play to the end without a gap.
    pub fn should_hold(
        &self,
        id: u64,
        queued: u64,
        lead: u64,
        prebuffer: u64,
        period_ns: u64,
    ) -> bool {
        if queued < lead {
            return false;
        }
        if self.playing.load(Acquire) == id {
            let g = self.frame_ns.load(Relaxed);
            g != 0 && g.saturating_mul(9) / 8 <= period_ns
        } else {
            self.can_start(id, queued, prebuffer, period_ns)
        }
    }

    /// Cuts every utterance accepted so far — the one being generated or played and every one
    /// queued behind it — for `reason`; returns the highest id cut, or None when none was left.
    pub fn cut_all(&self, reason: u64) -> Option<u64> {
        let target = self.accepted.load(Acquire);
        if target == 0 || target <= self.finished.load(Relaxed) || target <= self.cut.load(Relaxed)
        {
            return None;
        }
        self.cut_reason.store(reason, Relaxed);
        self.cut.fetch_max(target, Relaxed);
        Some(target)
    }

    /// Cuts the utterance being generated or played (if any) for `reason`; returns its id.
    pub fn cut_current(&self, reason: u64) -> Option<u64> {
        let id = self.speaking.load(Relaxed);
        let finished = self.finished.load(Relaxed);
        // the one being generated, or else the last one still playing
        let target = if id != 0 {
            id
        } else {
            self.gen_done.load(Relaxed)
        };
        if target == 0 || target <= finished || target <= self.cut.load(Relaxed) {
            return None;
        }
        self.cut_reason.store(reason, Relaxed);
        self.cut.fetch_max(target, Relaxed);
        Some(target)
    }

    /// The `status` reply's data.
    pub fn status(&self, info: &StaticInfo, stream: &LoopStats) -> Value {
        let s = stream.snapshot();
        let c = s.counters;
        let ms = |x: Summary| {
            json!({
                "p50": x.p50_us as f64 / 1000.0,
                "p99": x.p99_us as f64 / 1000.0,
                "max": x.max_us as f64 / 1000.0,
                "count": x.count,
            })
        };
        let tfs = self.text_to_first_sound.summary();
        let last_tfs = self.last_first_sound_us.load(Relaxed);
        let speaking = self.speaking.load(Relaxed);
        let playing = self.playing.load(Relaxed);
        json!({
            "uptime_s": self.epoch.elapsed().as_secs_f64(),
            "ready_ms": self.ready_us.load(Relaxed) as f64 / 1000.0,
            "speaking": (speaking != 0).then_some(speaking),
            "playing": (playing != 0).then_some(playing),
            "generated_frames": self.generated_frames.load(Relaxed),
            "played_frames": self.played_frames.load(Relaxed),
            "queued": self.queued.load(Relaxed),
            "audio": self.audio.status(self.now_ns()),
            "latency": {
                "frame_compute_ms": ms(s.frame_time),
                "generation_frame_ms": ms(self.gen_frame.summary()),
                "capture_to_gate_ms": ms(s.capture_to_codes),
                "text_to_first_sound_ms": {
                    "last": (last_tfs != u64::MAX).then(|| last_tfs as f64 / 1000.0),
                    "p50": tfs.p50_us as f64 / 1000.0,
                    "max": tfs.max_us as f64 / 1000.0,
                    "count": tfs.count,
                },
                "stop_to_cut_ms": ms(self.stop_to_cut.summary()),
                "playback_wait_ms": ms(self.playback_wait.summary()),
                "user_turn_ms": ms(self.user_turn.summary()),
                "bound_ms": info.latency_bound_ms,
            },
            "counters": {
                "xruns": c.xruns(),
                "capture_xruns": c.capture_xruns,
                "playback_xruns": c.playback_xruns,
                "capture_backlog_drops": c.capture_backlog_drops,
                "underruns": c.playback_late,
                "speech_underruns": self.speech_underruns.load(Relaxed),
                "rebuffers": self.rebuffers.load(Relaxed),
                "dropped": c.dropped(),
                "captured": c.captured,
                "processed": c.processed,
                "played": c.played,
                "speech_frames_played": self.speech_frames_played.load(Relaxed),
                "utterances": self.utterances.load(Relaxed),
                "barge_ins": self.barge_ins.load(Relaxed),
                "events_dropped": self.events_dropped.load(Relaxed),
                "session_restarts": self.session_restarts.load(Relaxed),
            },
            "conversation": {
                "segments": self.segments.load(Relaxed),
                "positions": self.positions.load(Relaxed),
                "max_positions": self.max_positions,
                "evicted_segments": self.evicted_segments.load(Relaxed),
                "user_turns": self.turns.turns.load(Relaxed),
                "user_turns_added": self.user_turns_added.load(Relaxed),
                "user_turns_failed": self.user_turns_failed.load(Relaxed),
                "user_turns_split": self.turns.turns_split.load(Relaxed),
                "user_frames_dropped": self.turns.frames_dropped.load(Relaxed),
            },
            "config": {
                "capture": info.capture,
                "playback": info.playback,
                "model": info.model,
                "barge_in": self.barge_in,
                "user_speaker": info.user_speaker,
                "prebuffer_frames": info.prebuffer_frames,
                "lead_frames": info.lead_frames,
                "max_utterance_frames": info.max_utterance_frames,
                "max_turn_frames": info.max_turn_frames,
                "threads": info.threads,
                "codebooks": info.codebooks,
                "model_codebooks": info.model_codebooks,
            },
        })
    }
}
