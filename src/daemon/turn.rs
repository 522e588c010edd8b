//! The user's turns as Mimi codes, collected on the frame thread and handed to the session
//! thread without allocating: a fixed pool of turn buffers (each sized for the longest turn)
//! cycles through two `rtrb` rings, free buffers to the frame thread and full turns back.
//!
//! A turn longer than the cap is split: the full buffer is handed over as one turn (counted
//! in `turns_split`) and the turn goes on in the next buffer. When no buffer is free (the
//! session thread is busy generating and turns pile up), frames are dropped and counted in
//! `frames_dropped`. Nothing here grows.

use super::vad::Vad;
use rtrb::{Consumer, Producer, RingBuffer};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Turn buffers in the pool.
pub const TURN_BUFFERS: usize = 3;

/// A finished user turn: `frames * codebooks` codes, frames-major.
#[derive(Debug)]
pub struct UserTurn {
    pub codes: Vec<u32>,
    /// The turn went on past the cap (this is one piece of it).
    pub split: bool,
}

/// What the collector counts (relaxed atomics, read by `status`).
#[derive(Debug, Default)]
pub struct TurnCounters {
    /// Turns (or pieces of split turns) handed to the session.
    pub turns: AtomicU64,
    /// Pieces handed over because a turn reached the cap.
    pub turns_split: AtomicU64,
    /// Frames of speech lost because no turn buffer was free.
    pub frames_dropped: AtomicU64,
}

/// The frame thread's end (see the module docs).
#[derive(Debug)]
pub struct TurnCollector {
    codebooks: usize,
    cap_frames: usize,
    cur: Option<Vec<u32>>,
    /// The frames in `cur` are a candidate onset, not a confirmed turn yet.
    tentative: bool,
    free: Consumer<Vec<u32>>,
    full: Producer<UserTurn>,
}

/// The session thread's end: finished turns in, buffers back.
#[derive(Debug)]
pub struct TurnReceiver {
    full: Consumer<UserTurn>,
    free: Producer<Vec<u32>>,
}

/// Makes the pool: `TURN_BUFFERS` buffers of `cap_frames * codebooks` codes.
pub fn turn_channel(codebooks: usize, cap_frames: usize) -> (TurnCollector, TurnReceiver) {
    let (mut free_tx, free_rx) = RingBuffer::new(TURN_BUFFERS);
    let (full_tx, full_rx) = RingBuffer::new(TURN_BUFFERS);
    for _ in 0..TURN_BUFFERS {
        let pushed = free_tx
            .push(Vec::with_capacity(cap_frames * codebooks))
            .is_ok();
        debug_assert!(pushed);
    }
    (
        TurnCollector {
            codebooks,
            cap_frames: cap_frames.max(1),
            cur: None,
            tentative: false,
            free: free_rx,
            full: full_tx,
        },
        TurnReceiver {
            full: full_rx,
            free: free_tx,
        },
    )
}

impl TurnCollector {
    /// Longest turn piece in frames.
    pub fn cap_frames(&self) -> usize {
        self.cap_frames
    }

    /// Takes the gate's decision and the codes of the same frame.
    pub fn push(&mut self, vad: Vad, codes: &[u32], counters: &TurnCounters) {
        debug_assert_eq!(codes.len(), self.codebooks);
        match vad {
            Vad::Quiet => {
                if self.tentative {
                    self.discard();
                }
            }
            Vad::Candidate | Vad::Start | Vad::Speech => {
                if vad == Vad::Start {
                    self.tentative = false;
                } else if vad == Vad::Candidate {
                    self.tentative = true;
                }
                self.append(codes, counters);
            }
            Vad::End => {
                self.hand_over(false, counters);
            }
        }
    }

    fn append(&mut self, codes: &[u32], counters: &TurnCounters) {
        if self.cur.is_none() {
            match self.free.pop() {
                Ok(mut b) => {
                    b.clear();
                    self.cur = Some(b);
                }
                Err(_) => {
                    counters.frames_dropped.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
        let cap = self.cap_frames * self.codebooks;
        let buf = self.cur.as_mut().expect("set above");
        // capacity was reserved for the cap: this never reallocates
        buf.extend_from_slice(codes);
        if buf.len() >= cap && !self.tentative {
            self.hand_over(true, counters);
        }
    }

    /// Forgets tentative frames (the buffer is kept for the next turn).
    fn discard(&mut self) {
        if let Some(b) = self.cur.as_mut() {
            b.clear();
        }
        self.tentative = false;
    }

    fn hand_over(&mut self, split: bool, counters: &TurnCounters) {
        self.tentative = false;
        let Some(b) = self.cur.take() else { return };
        if b.is_empty() {
            self.cur = Some(b);
            return;
        }
        counters.turns.fetch_add(1, Relaxed);
        if split {
            counters.turns_split.fetch_add(1, Relaxed);
        }
        // `full` has a slot per buffer, so a buffer we hold always fits
        let pushed = self.full.push(UserTurn { codes: b, split }).is_ok();
        debug_assert!(pushed);
    }
}

impl TurnReceiver {
    /// The next finished turn, if any.
    pub fn try_recv(&mut self) -> Option<UserTurn> {
        self.full.pop().ok()
    }

    /// Gives a turn's buffer back to the pool.
    pub fn recycle(&mut self, turn: UserTurn) {
        let pushed = self.free.push(turn.codes).is_ok();
        debug_assert!(pushed, "one free slot per buffer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_collected_split_at_the_cap_and_recycled() {
        let (mut c, mut r) = turn_channel(2, 4);
        let k = TurnCounters::default();
        use Vad::*;
        // a candidate that falls back leaves nothing
        c.push(Candidate, &[1, 1], &k);
        c.push(Quiet, &[0, 0], &k);
        assert!(r.try_recv().is_none());
        // a 3-frame turn
        for (v, x) in [(Candidate, 1), (Start, 2), (Speech, 3), (End, 9)] {
            c.push(v, &[x, x], &k);
        }
        let t = r.try_recv().unwrap();
        assert_eq!(
            (t.codes.as_slice(), t.split),
            (&[1, 1, 2, 2, 3, 3][..], false)
        );
        r.recycle(t);
        // a 6-frame turn with a cap of 4: a split piece of 4, then 2
        c.push(Start, &[1, 1], &k);
        for x in 2..=6 {
            c.push(Speech, &[x, x], &k);
        }
        c.push(End, &[0, 0], &k);
        let a = r.try_recv().unwrap();
        let b = r.try_recv().unwrap();
        assert_eq!((a.codes.len(), a.split), (8, true));
        assert_eq!((b.codes.as_slice(), b.split), (&[5, 5, 6, 6][..], false));
        assert_eq!(k.turns.load(Relaxed), 3);
        assert_eq!(k.turns_split.load(Relaxed), 1);
        // no buffer free: frames are dropped and counted, nothing grows
        let d = r.try_recv();
        assert!(d.is_none());
        c.push(Start, &[7, 7], &k);
        c.push(End, &[0, 0], &k);
        // pool of 3: a, b and the last one are out, only the recycled one came back
        let got: Vec<UserTurn> = std::iter::from_fn(|| r.try_recv()).collect();
        assert_eq!(got.len(), 1);
        c.push(Start, &[8, 8], &k);
        assert_eq!(k.frames_dropped.load(Relaxed), 1);
        c.push(End, &[0, 0], &k);
        // buffers are reused, not reallocated
        for t in [a, b].into_iter().chain(got) {
            r.recycle(t);
        }
        c.push(Start, &[1, 1], &k);
        c.push(End, &[0, 0], &k);
        let t = r.try_recv().unwrap();
        assert_eq!(t.codes, [1, 1]);
        assert!(t.codes.capacity() >= 8);
    }
}
