//! The utterance hand-off between the daemon's threads: the client threads accept and stop
//! utterances, the session thread generates them one at a time into the speech ring, the frame
//! thread plays them, applies cuts and says when each is over. [`Handoff`] is that protocol's
//! whole shared state: utterance ids (1, 2, ...; 0 means none) and the two figures the start
//! rule needs, behind one method per protocol step. Lock-free and allocation-free: the frame
//! thread calls it every period.
//!
//! # Lifecycle of utterance `id`
//! 1. A client thread [`accept`](Handoff::accept)s it (before the reply carrying the id).
//! 2. The session thread [`claim`](Handoff::claim)s it from the queue (or
//!    [`skip`](Handoff::skip)s it if it was cut while queued),
//!    [`begin_generating`](Handoff::begin_generating), publishes each
//!    [`frame_generated`](Handoff::frame_generated) and the [`measured`](Handoff::measured)
//!    time per frame, pauses while [`should_hold`](Handoff::should_hold), and
//!    [`end_generating`](Handoff::end_generating) (or [`fail`](Handoff::fail)s it).
//! 3. The frame thread [`start_playing`](Handoff::start_playing) once
//!    [`can_start`](Handoff::can_start), counts each [`frame_played`](Handoff::frame_played),
//!    [`pause`](Handoff::pause)s to rebuffer and [`resume`](Handoff::resume)s, and
//!    [`finish`](Handoff::finish)es it when it is played out or cut.
//! 4. The session waits until [`is_finished`](Handoff::is_finished), then reads the counts and
//!    [`cut_reason`](Handoff::cut_reason) for its `done` event.
//!
//! Cuts ([`cut_all`](Handoff::cut_all) for `stop`, [`cut_current`](Handoff::cut_current) for
//! barge-in and shutdown) raise a watermark: every id at or below it is cut.
//!
//! # Memory orderings
//! Each id watermark is written by one side and read by the other; the store that publishes
//! is a Release, the load that relies on it an Acquire:
//! - `speaking` (session, Release in `begin_generating`) publishes the utterance's frame
//!   limit and its reset frame count to `can_start` (frame thread, Acquire).
//! - `gen_done` (session, Release in `end_generating`/`skip`/`fail`) publishes the final
//!   frame count to the frame thread (`can_start`, `generation_ended`, `finish_ended`:
//!   Acquire). The frames themselves travel through the speech ring, which has its own
//!   Release/Acquire pair.
//! - `playing` (frame thread, Release) is read by `should_hold` (session, Acquire).
//! - `cut` (any thread, Release after `cut_reason`) publishes the reason to the loads of
//!   `cut` (Acquire) on the frame and session threads.
//! - `finished` (frame thread, Release) publishes the played-frame count to
//!   `is_finished` (session, Acquire), which then reports it.
//! - `accepted` (client thread, Release) is read by `cut_all` (Acquire).
//!
//! The counts and the generation time per frame (`generated`, `played`, `max_frames`,
//! `frame_ns`) are Relaxed: a stale value only delays a start by a period or shows in
//! `status`, never breaks the protocol.

use std::sync::atomic::{
    AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};

/// Why an utterance was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CutReason {
    /// A `stop` request.
    Stop = 1,
    /// The user spoke over it (barge-in).
    BargeIn = 2,
    /// The daemon shuts down.
    Shutdown = 3,
    /// The session thread failed while generating it.
    Error = 4,
}

impl CutReason {
    /// The `reason` of the utterance's `done` event.
    pub fn name(self) -> &'static str {
        match self {
            CutReason::Stop => "stopped",
            CutReason::BargeIn => "barge_in",
            CutReason::Shutdown => "shutdown",
            CutReason::Error => "error",
        }
    }

    fn from_code(c: u64) -> CutReason {
        match c {
            2 => CutReason::BargeIn,
            3 => CutReason::Shutdown,
            4 => CutReason::Error,
            _ => CutReason::Stop,
        }
    }
}

/// The hand-off state (see the module docs).
#[derive(Debug, Default)]
pub struct Handoff {
    /// The last `say` accepted: a `stop` cuts every utterance up to it.
    accepted: AtomicU64,
    /// The utterance being generated (0: none).
    speaking: AtomicU64,
    /// Generation of every utterance up to this id has ended (no more frames will come).
    gen_done: AtomicU64,
    /// The utterance playing (0: none, or paused to rebuffer): generation runs at most the
    /// lead ahead of it.
    playing: AtomicU64,
    /// Playback of every utterance up to this id is over (played out or cut).
    finished: AtomicU64,
    /// Every utterance with an id at or below this is cut: not played any further.
    cut: AtomicU64,
    /// Why `cut` was last raised (a `CutReason` code).
    cut_reason: AtomicU64,
    /// Frames generated for the utterance being generated.
    generated: AtomicU64,
    /// Frames handed to playback for the utterance being played.
    played: AtomicU64,
    /// The frame limit of the utterance being generated.
    max_frames: AtomicU64,
    /// Generation time per frame (ns): the mean of the current utterance's frames after its
    /// first, or the last utterance's until it has one (0: not known yet).
    frame_ns: AtomicU64,
}

impl Handoff {
    // ---- client threads --------------------------------------------------------------

    /// Client thread, before the reply that gives the client `id`: a `stop` that follows the
    /// reply (on any client thread) cuts it. Release, read by `cut_all`.
    pub fn accept(&self, id: u64) {
        self.accepted.fetch_max(id, Release);
    }

    /// Client thread (`stop`): cuts every utterance accepted so far — the one being generated
    /// or played and every one queued behind it — for `reason`; returns the highest id cut, or
    /// None when none was left. Acquire on `accepted` (see `accept`); publishes the reason
    /// with the cut (see `raise`).
    pub fn cut_all(&self, reason: CutReason) -> Option<u64> {
        let target = self.accepted.load(Acquire);
        if target == 0 || target <= self.finished.load(Relaxed) || target <= self.cut.load(Relaxed)
        {
            return None;
        }
        self.raise(target, reason);
        Some(target)
    }

    /// Frame thread (barge-in) or the thread shutting the daemon down: cuts the utterance
    /// being generated, or else the last one whose generation ended if it still plays, for
    /// `reason`; returns its id. The loads are Relaxed: a stale view at worst cuts nothing
    /// this time (the caller acts again on the next period or gives up on a finished one).
    pub fn cut_current(&self, reason: CutReason) -> Option<u64> {
        let id = self.speaking.load(Relaxed);
        let finished = self.finished.load(Relaxed);
        let target = if id != 0 {
            id
        } else {
            self.gen_done.load(Relaxed)
        };
        if target == 0 || target <= finished || target <= self.cut.load(Relaxed) {
            return None;
        }
        self.raise(target, reason);
        Some(target)
    }

    /// The reason first, then the watermark with Release: whoever sees the cut (Acquire)
    /// sees its reason.
    fn raise(&self, target: u64, reason: CutReason) {
        self.cut_reason.store(reason as u64, Relaxed);
        self.cut.fetch_max(target, Release);
    }

    // ---- session thread ----------------------------------------------------------------

    /// Session thread, taking utterance `id` from its queue: resets the per-utterance counts
    /// (for `status` and its `done` event); false when it was cut while queued (then
    /// [`skip`](Self::skip) it). Acquire on `cut`.
    pub fn claim(&self, id: u64) -> bool {
        self.played.store(0, Relaxed);
        self.generated.store(0, Relaxed);
        !self.is_cut(id)
    }

    /// Session thread: utterance `id` ends without a frame (cut while queued): its generation
    /// and its playback are both over. Release on `gen_done` and `finished`.
    pub fn skip(&self, id: u64) {
        self.gen_done.fetch_max(id, Release);
        self.finished.fetch_max(id, Release);
    }

    /// Session thread: generation of `id` starts, at most `max_frames` frames. The frame limit
    /// (and `claim`'s reset count) are published by the Release store of `speaking`, which
    /// `can_start` loads with Acquire.
    pub fn begin_generating(&self, id: u64, max_frames: u64) {
        self.max_frames.store(max_frames, Relaxed);
        self.speaking.store(id, Release);
    }

    /// Session thread: `frames` frames of the current utterance are in the speech ring
    /// (Relaxed; the ring's own push published the frames).
    pub fn frame_generated(&self, frames: u64) {
        self.generated.store(frames, Relaxed);
    }

    /// Session thread: publishes the generation time per frame the start rule uses
    /// (Relaxed: a stale value delays a start by a period at most).
    pub fn measured(&self, frame_ns: u64) {
        self.frame_ns.store(frame_ns, Relaxed);
    }

    /// The last published generation time per frame (ns; 0: none yet). Relaxed.
    pub fn frame_ns(&self) -> u64 {
        self.frame_ns.load(Relaxed)
    }

    /// Session thread (and the frame thread): whether utterance `id` is cut. Acquire on
    /// `cut`, so its reason is visible too.
    pub fn is_cut(&self, id: u64) -> bool {
        self.cut.load(Acquire) >= id
    }

    /// Session thread: generation of `id` is over (no more frames will come). `speaking`
    /// goes to 0 first (Relaxed: only `status` and `cut_current` read it, and `gen_done`
    /// takes over as the current one); the Release on `gen_done` publishes the final frame
    /// count to the frame thread.
    pub fn end_generating(&self, id: u64) {
        self.speaking.store(0, Relaxed);
        self.gen_done.fetch_max(id, Release);
    }

    /// Session thread, after a panic while running `id`: its generation is over and, unless
    /// cut already, it is cut for [`CutReason::Error`] so its queued speech never plays.
    pub fn fail(&self, id: u64) {
        self.end_generating(id);
        if self.cut.load(Relaxed) < id {
            self.raise(id, CutReason::Error);
        }
    }

    /// Session thread: whether playback of `id` is over (played out or cut). Acquire on
    /// `finished`: the played count read after it is final.
    pub fn is_finished(&self, id: u64) -> bool {
        self.finished.load(Acquire) >= id
    }

    /// Session thread, once `id` is finished: why it was cut, or None when it was not.
    /// Acquire on `cut` (the reason is raised before it).
    pub fn cut_reason(&self, id: u64) -> Option<CutReason> {
        self.is_cut(id)
            .then(|| CutReason::from_code(self.cut_reason.load(Relaxed)))
    }

    /// Whether generation of utterance `id`, with `queued` frames waiting, should pause rather
    /// than run further ahead of playback: only with at least `lead` frames queued, and then
    /// before playback starts once it can start (the frame thread picks it up within a period),
    /// and while it plays only if generation is measured faster than real time (with 1/8 to
    /// spare). A slower generator never pauses: holding it back to `lead` frames would empty
    /// the queue it needs to play to the end without a gap. Session thread; Acquire on
    /// `playing` (published by the frame thread's `start_playing`/`resume`/`pause`).
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

    // ---- frame thread ------------------------------------------------------------------

    /// Whether utterance `id`, with `queued` frames waiting, can start playing now: its
    /// generation has ended, or at least `prebuffer` frames are queued and, at the measured
    /// generation time per frame `g`, the `r` frames still to come (up to its frame limit) will
    /// arrive before the queue runs dry: `r * g * 9/8 <= (queued + r - 1) * period` (1/8 to
    /// spare). The frame thread starts playback on it; the session stops running ahead on it.
    /// Acquire on `gen_done` and `speaking` (the frame limit and count of `id` are then its
    /// own, see `begin_generating`).
    pub fn can_start(&self, id: u64, queued: u64, prebuffer: u64, period_ns: u64) -> bool {
        if self.generation_ended(id) {
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
            .max_frames
            .load(Relaxed)
            .saturating_sub(self.generated.load(Relaxed));
        left.saturating_mul(g).saturating_mul(9) / 8
            <= (queued + left).saturating_sub(1).saturating_mul(period_ns)
    }

    /// Frame thread: whether generation of `id` has ended (Acquire on `gen_done`: every frame
    /// of it is in the ring by now).
    pub fn generation_ended(&self, id: u64) -> bool {
        self.gen_done.load(Acquire) >= id
    }

    /// Frame thread: the highest cut id (Acquire: see `raise`).
    pub fn cut_watermark(&self) -> u64 {
        self.cut.load(Acquire)
    }

    /// Frame thread: utterance `id` starts playing (its played count from 0). Release on
    /// `playing`, read by `should_hold`.
    pub fn start_playing(&self, id: u64) {
        self.playing.store(id, Release);
        self.played.store(0, Relaxed);
    }

    /// Frame thread: utterance `id` plays again after a rebuffer. Release on `playing`.
    pub fn resume(&self, id: u64) {
        self.playing.store(id, Release);
    }

    /// Frame thread: playback pauses (it ran dry and rebuffers) or is over: the session may
    /// run ahead again. Release on `playing`.
    pub fn pause(&self) {
        self.playing.store(0, Release);
    }

    /// Frame thread: one more frame of the playing utterance went to the device (Relaxed;
    /// published by `finish`).
    pub fn frame_played(&self) {
        self.played.fetch_add(1, Relaxed);
    }

    /// Frame thread (or the audio supervisor standing in for it): playback of every utterance
    /// up to `id` is over. Release, read by `is_finished` (the played count is final).
    pub fn finish(&self, id: u64) {
        self.finished.fetch_max(id, Release);
    }

    /// Frame thread, with nothing queued and nothing playing: every utterance whose
    /// generation ended is finished (Acquire on `gen_done`, Release on `finished`).
    pub fn finish_ended(&self) {
        self.finish(self.gen_done.load(Acquire));
    }

    // ---- status --------------------------------------------------------------------------

    /// The utterance being generated, if any (Relaxed: for `status`).
    pub fn speaking(&self) -> Option<u64> {
        Some(self.speaking.load(Relaxed)).filter(|&id| id != 0)
    }

    /// The utterance playing, if any (Relaxed: for `status`).
    pub fn playing(&self) -> Option<u64> {
        Some(self.playing.load(Relaxed)).filter(|&id| id != 0)
    }

    /// Frames generated for the current utterance (Relaxed).
    pub fn generated_frames(&self) -> u64 {
        self.generated.load(Relaxed)
    }

    /// Frames played of the current utterance (Relaxed; final once `is_finished`).
    pub fn played_frames(&self) -> u64 {
        self.played.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD_NS: u64 = 80_000_000;

    #[test]
    fn a_stop_cuts_everything_accepted_and_a_barge_in_only_the_current_one() {
        let h = Handoff::default();
        assert_eq!(h.cut_all(CutReason::Stop), None, "nothing accepted");
        for id in 1..=3 {
            h.accept(id);
        }
        assert!(h.claim(1));
        h.begin_generating(1, 10);
        assert_eq!(h.cut_current(CutReason::BargeIn), Some(1));
        assert_eq!(h.cut_current(CutReason::BargeIn), None, "already cut");
        assert_eq!(h.cut_reason(1), Some(CutReason::BargeIn));
        assert_eq!(h.cut_reason(2), None);
        h.end_generating(1);
        h.finish(1);
        assert!(h.is_finished(1));
        // a stop reaches the two still queued
        assert_eq!(h.cut_all(CutReason::Stop), Some(3));
        assert!(!h.claim(2), "cut while queued");
        h.skip(2);
        assert!(h.is_finished(2) && h.generation_ended(2));
        assert_eq!(h.cut_reason(3).map(CutReason::name), Some("stopped"));
        h.skip(3);
        assert_eq!(h.cut_all(CutReason::Stop), None, "all finished");
    }

    #[test]
    fn a_failed_utterance_is_cut_for_error_unless_cut_already() {
        let h = Handoff::default();
        h.accept(1);
        h.accept(2);
        assert!(h.claim(1));
        h.begin_generating(1, 10);
        h.fail(1);
        assert_eq!(h.speaking(), None);
        assert_eq!(h.cut_reason(1), Some(CutReason::Error));
        assert!(h.claim(2));
        h.begin_generating(2, 10);
        h.cut_current(CutReason::Shutdown);
        h.fail(2);
        assert_eq!(h.cut_reason(2), Some(CutReason::Shutdown));
    }

    #[test]
    fn the_start_rule_uses_the_limit_and_count_of_its_own_utterance() {
        let h = Handoff::default();
        h.accept(1);
        assert!(h.claim(1));
        h.begin_generating(1, 10);
        assert!(!h.can_start(1, 2, 2, PERIOD_NS), "no measurement yet");
        h.measured(PERIOD_NS / 4);
        assert!(h.can_start(1, 2, 2, PERIOD_NS));
        assert!(!h.can_start(1, 1, 2, PERIOD_NS), "below the prebuffer");
        assert!(!h.can_start(2, 2, 2, PERIOD_NS), "not the one generating");
        // 2.5x slower than real time: the 8 frames still to come need 16 queued, not 2
        h.measured(PERIOD_NS * 5 / 2);
        h.frame_generated(2);
        assert!(!h.can_start(1, 2, 2, PERIOD_NS));
        h.end_generating(1);
        assert!(h.can_start(1, 2, 2, PERIOD_NS), "generation ended");
        assert!(h.can_start(1, 1, 2, PERIOD_NS), "even below the prebuffer");
    }

    #[test]
    fn a_slow_generator_is_never_held_back_while_its_utterance_plays() {
        let h = Handoff::default();
        let (lead, pre) = (8, 2);
        h.begin_generating(1, 125);
        h.frame_generated(67);
        // 139 ms per 80 ms frame (the csm-1b q8 daemon on 2 threads here)
        h.measured(139_000_000);
        // before playback: 67 queued can play to the end (58 * 139 * 9/8 <= 124 * 80 ms), so
        // generation waits for the frame thread to start it; below the lead it never waits
        assert!(h.should_hold(1, 67, lead, pre, PERIOD_NS));
        assert!(!h.should_hold(1, 7, lead, pre, PERIOD_NS));
        // playing: a slower-than-real-time generator keeps generating however far ahead
        h.start_playing(1);
        assert!(!h.should_hold(1, 67, lead, pre, PERIOD_NS));
        // a faster one stops `lead` frames ahead
        h.measured(PERIOD_NS / 2);
        assert!(h.should_hold(1, 8, lead, pre, PERIOD_NS));
        assert!(!h.should_hold(1, 7, lead, pre, PERIOD_NS));
    }
}
