//! The user's turns, from the frame thread to the session thread, without allocating: the
//! frame thread pushes each captured period of a turn, as audio, into a fixed ring of blocks,
//! with marker blocks for the turn's end (or a cut at the cap) and for a candidate onset that
//! fell back to quiet; the session thread encodes the audio with its own streaming Mimi encoder
//! (fresh for every turn, as the upstream processor encodes each context turn on its own) and
//! adds the codes to the conversation when the turn ends.
//!
//! # Who encodes, and when
//! Encoding the user's voice is deferred to the session thread, which encodes whenever it is
//! not generating: on a 2-core board the frame thread's period must never compete with
//! generation for a core, so it only runs the energy gate and copies blocks. A turn heard while
//! the daemon speaks waits in the ring until the utterance is over (the ring holds two of the
//! longest turns); frames that find it full are dropped and counted in `frames_dropped`.
//!
//! A turn longer than the cap is cut into pieces of `cap_frames` (counted in `turns_split`),
//! each added as a turn of its own. Nothing here grows.

use super::metrics::TurnCounters;
use super::vad::Vad;
use crate::stream::ring::{BlockConsumer, BlockProducer, block_ring};

/// Block kinds (the ring's stamp).
const FIRST: u64 = 0;
const AUDIO: u64 = 1;
const END: u64 = 2;
const END_SPLIT: u64 = 3;
const DISCARD: u64 = 4;

/// What the session receives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TurnEvent<'a> {
    /// The first period of a turn (or of the next piece of a split one).
    First(&'a [f32]),
    /// The next period of the turn.
    Audio(&'a [f32]),
    /// The turn (piece) is over; `split` when it was cut at the cap and goes on.
    End { split: bool },
    /// The frames since the last `First` were a false onset: forget them.
    Discard,
}

/// The frame thread's end (see the module docs).
#[derive(Debug)]
pub struct TurnCollector {
    tx: BlockProducer,
    zeros: Vec<f32>,
    cap_frames: usize,
    /// Frames of the current turn piece in the ring.
    frames: usize,
    /// The frames of the current piece are a candidate onset, not a confirmed turn yet.
    tentative: bool,
}

/// The session thread's end.
#[derive(Debug)]
pub struct TurnReceiver {
    rx: BlockConsumer,
    block: Vec<f32>,
}

/// The ring for turns of up to `cap_frames` periods of `period` samples: room for two of them
/// plus their markers.
pub fn turn_channel(period: usize, cap_frames: usize) -> (TurnCollector, TurnReceiver) {
    let cap_frames = cap_frames.max(1);
    let (tx, rx) = block_ring(period, 2 * cap_frames + 4);
    (
        TurnCollector {
            tx,
            zeros: vec![0.0; period],
            cap_frames,
            frames: 0,
            tentative: false,
        },
        TurnReceiver {
            rx,
            block: vec![0.0; period],
        },
    )
}

impl TurnCollector {
    /// Longest turn piece in frames.
    pub fn cap_frames(&self) -> usize {
        self.cap_frames
    }

    /// Takes the gate's decision about one captured period `pcm`. Returns true when a turn
    /// (piece) ended with it.
    pub fn push(&mut self, vad: Vad, pcm: &[f32], counters: &TurnCounters) -> bool {
        match vad {
            Vad::Quiet => {
                if self.tentative && self.frames > 0 {
                    self.marker(DISCARD);
                }
                self.frames = 0;
                self.tentative = false;
                false
            }
            Vad::Candidate | Vad::Start | Vad::Speech => {
                match vad {
                    Vad::Start => self.tentative = false,
                    Vad::Candidate => self.tentative = true,
                    _ => {}
                }
                // one slot stays free for the marker that ends the turn
                let kind = if self.frames == 0 { FIRST } else { AUDIO };
                if self.tx.free() >= 2 && self.tx.try_push(pcm, kind) {
                    self.frames += 1;
                } else {
                    counters.frames_dropped.incr();
                }
                if self.frames >= self.cap_frames && !self.tentative {
                    self.marker(END_SPLIT);
                    counters.turns.incr();
                    counters.turns_split.incr();
                    self.frames = 0;
                    return true;
                }
                false
            }
            Vad::End => {
                let ended = self.frames > 0;
                if ended {
                    self.marker(END);
                    counters.turns.incr();
                }
                self.frames = 0;
                self.tentative = false;
                ended
            }
        }
    }

    fn marker(&mut self, kind: u64) {
        // a slot was kept free for it (audio is pushed only with two free)
        let pushed = self.tx.try_push(&self.zeros, kind);
        debug_assert!(pushed, "a marker always finds its slot");
    }
}

impl TurnReceiver {
    /// The next block, if any.
    pub fn try_recv(&mut self) -> Option<TurnEvent<'_>> {
        let kind = self.rx.try_pop(&mut self.block)?;
        Some(match kind {
            FIRST => TurnEvent::First(&self.block),
            AUDIO => TurnEvent::Audio(&self.block),
            END => TurnEvent::End { split: false },
            END_SPLIT => TurnEvent::End { split: true },
            _ => TurnEvent::Discard,
        })
    }

    /// Blocks waiting.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drains the receiver into a readable list: F/A with the block's first sample, E, S, D.
    fn drain(r: &mut TurnReceiver) -> Vec<String> {
        std::iter::from_fn(|| {
            r.try_recv().map(|e| match e {
                TurnEvent::First(b) => format!("F{}", b[0]),
                TurnEvent::Audio(b) => format!("A{}", b[0]),
                TurnEvent::End { split: false } => "E".into(),
                TurnEvent::End { split: true } => "S".into(),
                TurnEvent::Discard => "D".into(),
            })
        })
        .collect()
    }

    #[test]
    fn turns_are_handed_over_as_audio_with_markers_split_at_the_cap_and_bounded() {
        let (mut c, mut r) = turn_channel(2, 4);
        let k = TurnCounters::default();
        use Vad::*;
        let p = |x: f32| [x, x];
        // a candidate that falls back is discarded
        c.push(Candidate, &p(1.0), &k);
        c.push(Quiet, &p(0.0), &k);
        assert_eq!(drain(&mut r), ["F1", "D"]);
        // a 3-frame turn
        for (v, x) in [(Candidate, 1.0), (Start, 2.0), (Speech, 3.0)] {
            assert!(!c.push(v, &p(x), &k));
        }
        assert!(c.push(End, &p(9.0), &k));
        assert_eq!(drain(&mut r), ["F1", "A2", "A3", "E"]);
        // a 6-frame turn with a cap of 4: a piece of 4, then 2
        c.push(Start, &p(1.0), &k);
        for x in 2..=6 {
            c.push(Speech, &p(x as f32), &k);
        }
        c.push(End, &p(0.0), &k);
        assert_eq!(
            drain(&mut r),
            ["F1", "A2", "A3", "A4", "S", "F5", "A6", "E"]
        );
        assert_eq!(k.turns.get(), 3);
        assert_eq!(k.turns_split.get(), 1);
        // nobody reading (the session generates): the ring fills, frames are dropped and
        // counted, the end marker still gets through, nothing grows
        for turn in 0..3 {
            c.push(Start, &p(1.0), &k);
            for x in 2..=4 {
                c.push(Speech, &p(x as f32 + 10.0 * turn as f32), &k);
            }
            c.push(End, &p(0.0), &k);
        }
        assert!(k.frames_dropped.get() > 0);
        let got = drain(&mut r);
        assert_eq!(got.iter().filter(|e| *e == "S" || *e == "E").count(), 3);
        assert!(r.pending() == 0);
    }
}
