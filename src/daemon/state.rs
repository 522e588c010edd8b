//! What the daemon's threads share: the utterance hand-off ([`Handoff`]), the figures for
//! `status` ([`Metrics`]), the devices' health, the request queue's count and the shutdown
//! flag, and the `status` reply built from them and the audio loop's own statistics.

use super::handoff::Handoff;
use super::health::AudioHealth;
use super::metrics::Metrics;
use crate::stream::LoopStats;
use crate::stream::stats::Summary;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Shared state (see the module docs).
#[derive(Debug)]
pub struct Shared {
    epoch: Instant,
    /// The utterance hand-off between the client, session and frame threads.
    pub handoff: Handoff,
    /// Counters, histograms and the stamps they are measured from.
    pub metrics: Metrics,
    /// The devices' health (lost, reopening, reconnects).
    pub audio: AudioHealth,
    pub barge_in: bool,
    pub max_positions: u64,
    /// Requests waiting for the session thread (slots taken by client threads, given back by
    /// the session; Relaxed: the channel itself carries the request).
    queued: AtomicU64,
    /// Test hook (`DaemonConfig::fault_injection`): the session panics at its next frame.
    inject_panic: AtomicBool,
    /// Raised once by the thread shutting the daemon down; the session polls it (Relaxed:
    /// the join that follows is the synchronisation).
    shutdown: AtomicBool,
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
            handoff: Handoff::default(),
            metrics: Metrics::default(),
            audio: AudioHealth::default(),
            barge_in,
            max_positions: max_positions as u64,
            queued: AtomicU64::new(0),
            inject_panic: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        }
    }

    /// Nanoseconds since the daemon started (the epoch of every stamp).
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Client thread: takes a slot in the request queue, or false when `max` are taken.
    pub fn reserve_slot(&self, max: u64) -> bool {
        let mut cur = self.queued.load(Relaxed);
        loop {
            if cur >= max {
                return false;
            }
            match self
                .queued
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    /// Session thread (a request taken) or client thread (a request never sent): gives a
    /// slot back.
    pub fn release_slot(&self) {
        self.queued.fetch_sub(1, Relaxed);
    }

    /// Test hook: the session thread panics at its next generated frame.
    pub fn inject_panic(&self) {
        self.inject_panic.store(true, Relaxed);
    }

    /// Session thread: whether a panic was injected (and clears it).
    pub fn take_injected_panic(&self) -> bool {
        self.inject_panic.swap(false, Relaxed)
    }

    /// The daemon is shutting down: the session ends its utterance and its loop.
    pub fn shut_down(&self) {
        self.shutdown.store(true, Relaxed);
    }

    pub fn shutting_down(&self) -> bool {
        self.shutdown.load(Relaxed)
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
        let (h, m) = (&self.handoff, &self.metrics);
        let tfs = m.text_to_first_sound.summary();
        json!({
            "uptime_s": self.epoch.elapsed().as_secs_f64(),
            "ready_ms": m.ready_us.get() as f64 / 1000.0,
            "speaking": h.speaking(),
            "playing": h.playing(),
            "generated_frames": h.generated_frames(),
            "played_frames": h.played_frames(),
            "queued": self.queued.load(Relaxed),
            "audio": self.audio.status(self.now_ns()),
            "latency": {
                "frame_compute_ms": ms(s.frame_time),
                "generation_frame_ms": ms(m.gen_frame.summary()),
                "capture_to_gate_ms": ms(s.capture_to_codes),
                "text_to_first_sound_ms": {
                    "last": m.last_first_sound_ms(),
                    "p50": tfs.p50_us as f64 / 1000.0,
                    "max": tfs.max_us as f64 / 1000.0,
                    "count": tfs.count,
                },
                "stop_to_cut_ms": ms(m.stop_to_cut.summary()),
                "playback_wait_ms": ms(m.playback_wait.summary()),
                "user_turn_ms": ms(m.user_turn.summary()),
                "bound_ms": info.latency_bound_ms,
            },
            "counters": {
                "xruns": c.xruns(),
                "capture_xruns": c.capture_xruns,
                "playback_xruns": c.playback_xruns,
                "capture_backlog_drops": c.capture_backlog_drops,
                "underruns": c.playback_late,
                "speech_underruns": m.speech_underruns.get(),
                "rebuffers": m.rebuffers.get(),
                "dropped": c.dropped(),
                "captured": c.captured,
                "processed": c.processed,
                "played": c.played,
                "speech_frames_played": m.speech_frames_played.get(),
                "utterances": m.utterances.get(),
                "barge_ins": m.barge_ins.get(),
                "events_dropped": m.events_dropped.get(),
                "session_restarts": m.session_restarts.get(),
            },
            "conversation": {
                "segments": m.segments.get(),
                "positions": m.positions.get(),
                "max_positions": self.max_positions,
                "evicted_segments": m.evicted_segments.get(),
                "user_turns": m.turns.turns.get(),
                "user_turns_added": m.user_turns_added.get(),
                "user_turns_failed": m.user_turns_failed.get(),
                "user_turns_split": m.turns.turns_split.get(),
                "user_frames_dropped": m.turns.frames_dropped.get(),
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
