//! The daemon's figures for `status` and the report line: counters, latency histograms and
//! the time stamps the latencies are measured from. Nothing decides anything from them, so
//! every access is Relaxed (a figure may lag another by a moment) and lives in this file; the
//! hand-off between the threads is [`super::handoff`]. Lock-free and allocation-free: the frame
//! thread records into them every period.

use crate::stream::stats::Histogram;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A figure for `status`: a count or a last value (Relaxed).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn incr(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A moment one thread stamps and another measures a latency from (ns since the daemon's
/// epoch; 0: none).
#[derive(Debug, Default)]
struct Stamp(AtomicU64);

impl Stamp {
    fn set(&self, ns: u64) {
        self.0.store(ns, Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }

    fn take(&self) -> u64 {
        self.0.swap(0, Relaxed)
    }
}

/// The figures (see the module docs). Times are ns since the daemon's epoch
/// ([`super::state::Shared::now_ns`]).
#[derive(Debug)]
pub struct Metrics {
    /// How long `Daemon::start` took: model loaded, devices open, threads running (us).
    pub ready_us: Counter,
    /// Utterances generated (cut-while-queued ones excluded).
    pub utterances: Counter,
    pub barge_ins: Counter,
    /// Periods of silence played inside an utterance because generation was late.
    pub speech_underruns: Counter,
    pub speech_frames_played: Counter,
    /// Times an utterance ran dry while playing and paused until it could go on without a gap.
    pub rebuffers: Counter,
    /// Events not delivered because a client's queue was full.
    pub events_dropped: Counter,
    /// Times the session thread recovered from a panic (the utterance ended with an error and
    /// the conversation was rebuilt).
    pub session_restarts: Counter,
    // the conversation, published by the session thread
    pub segments: Counter,
    pub positions: Counter,
    pub evicted_segments: Counter,
    pub user_turns_added: Counter,
    pub user_turns_failed: Counter,
    /// What the frame thread's turn collector counts.
    pub turns: TurnCounters,
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
    /// When the request of the utterance being generated arrived.
    utterance_received: Stamp,
    /// Text-to-first-sound of the current utterance (us; `u64::MAX`: none yet).
    last_first_sound_us: AtomicU64,
    /// When the current utterance's first frame was queued for playback.
    first_queued: Stamp,
    /// When the last `stop` arrived (0 once the frame thread's cut measured it).
    stop_received: Stamp,
    /// When the last user turn ended on the frame thread.
    turn_ended: Stamp,
}

/// What the turn collector counts ([`super::turn`]).
#[derive(Debug, Default)]
pub struct TurnCounters {
    /// Turns (or pieces of split turns) handed to the session.
    pub turns: Counter,
    /// Pieces handed over because a turn reached the cap.
    pub turns_split: Counter,
    /// Frames of speech lost because the ring was full.
    pub frames_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            ready_us: Counter::default(),
            utterances: Counter::default(),
            barge_ins: Counter::default(),
            speech_underruns: Counter::default(),
            speech_frames_played: Counter::default(),
            rebuffers: Counter::default(),
            events_dropped: Counter::default(),
            session_restarts: Counter::default(),
            segments: Counter::default(),
            positions: Counter::default(),
            evicted_segments: Counter::default(),
            user_turns_added: Counter::default(),
            user_turns_failed: Counter::default(),
            turns: TurnCounters::default(),
            gen_frame: Histogram::default(),
            text_to_first_sound: Histogram::default(),
            stop_to_cut: Histogram::default(),
            playback_wait: Histogram::default(),
            user_turn: Histogram::default(),
            utterance_received: Stamp::default(),
            last_first_sound_us: AtomicU64::new(u64::MAX),
            first_queued: Stamp::default(),
            stop_received: Stamp::default(),
            turn_ended: Stamp::default(),
        }
    }
}

impl Metrics {
    /// Session thread, as it takes an utterance: its text-to-first-sound is not known yet.
    pub fn utterance_claimed(&self) {
        self.last_first_sound_us.store(u64::MAX, Relaxed);
    }

    /// Session thread: generation of an utterance whose request arrived at `received_ns`
    /// begins.
    pub fn utterance_begins(&self, received_ns: u64) {
        self.utterance_received.set(received_ns);
        self.utterances.incr();
    }

    /// Session thread: the utterance's first frame is queued for playback.
    pub fn first_frame_queued(&self, now_ns: u64) {
        self.first_queued.set(now_ns);
    }

    /// Frame thread: the utterance starts playing (records the wait since its first frame).
    pub fn playback_started(&self, now_ns: u64) {
        self.playback_wait
            .record_ns(now_ns.saturating_sub(self.first_queued.get()));
    }

    /// Frame thread: the utterance's first frame goes to the device (records
    /// text-to-first-sound).
    pub fn first_sound(&self, now_ns: u64) {
        let t = now_ns.saturating_sub(self.utterance_received.get());
        self.text_to_first_sound.record_ns(t);
        self.last_first_sound_us.store(t / 1000, Relaxed);
    }

    /// Text-to-first-sound of the current (or last) utterance in ms, if it made a sound.
    pub fn last_first_sound_ms(&self) -> Option<f64> {
        let us = self.last_first_sound_us.load(Relaxed);
        (us != u64::MAX).then(|| us as f64 / 1000.0)
    }

    /// Client thread: a `stop` arrived (measured when the frame thread cuts).
    pub fn stop_received(&self, now_ns: u64) {
        self.stop_received.set(now_ns);
    }

    /// Client thread: the `stop` found nothing to cut (nothing to measure).
    pub fn stop_found_nothing(&self) {
        self.stop_received.set(0);
    }

    /// Frame thread (or the supervisor standing in for it): a cut took effect; records
    /// stop-to-cut if a `stop` asked for it.
    pub fn cut_applied(&self, now_ns: u64) {
        let asked = self.stop_received.take();
        if asked != 0 {
            self.stop_to_cut.record_ns(now_ns.saturating_sub(asked));
        }
    }

    /// Frame thread: a user turn (piece) ended.
    pub fn turn_ended(&self, now_ns: u64) {
        self.turn_ended.set(now_ns);
    }

    /// When the last user turn ended (0: none yet).
    pub fn last_turn_end_ns(&self) -> u64 {
        self.turn_ended.get()
    }

    /// Session thread: a user turn is in the conversation (records the time since its end).
    pub fn turn_added(&self, now_ns: u64) {
        self.user_turns_added.incr();
        let ended = self.turn_ended.get();
        if ended != 0 {
            self.user_turn.record_ns(now_ns.saturating_sub(ended));
        }
    }
}
