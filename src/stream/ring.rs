//! Fixed-size blocks through a lock-free single-producer/single-consumer ring: `period`
//! samples plus the capture time stamp of each block, in two `rtrb` rings filled in lock step
//! (samples committed before the stamp, so a visible stamp means a whole visible block).
//! Capacity is a fixed number of blocks; nothing ever grows or allocates after `block_ring`.

use rtrb::{Consumer, Producer, RingBuffer};

/// Creates a ring of `blocks` blocks of `period` samples.
pub fn block_ring(period: usize, blocks: usize) -> (BlockProducer, BlockConsumer) {
    let (sp, sc) = RingBuffer::new(period * blocks);
    let (tp, tc) = RingBuffer::new(blocks);
    (
        BlockProducer {
            samples: sp,
            stamps: tp,
            period,
        },
        BlockConsumer {
            samples: sc,
            stamps: tc,
            period,
        },
    )
}

/// The writing end (one thread).
#[derive(Debug)]
pub struct BlockProducer {
    samples: Producer<f32>,
    stamps: Producer<u64>,
    period: usize,
}

impl BlockProducer {
    /// Pushes one block stamped `stamp`; `false` (and nothing written) when the ring is full.
    /// `block.len()` must be the period.
    pub fn try_push(&mut self, block: &[f32], stamp: u64) -> bool {
        debug_assert_eq!(block.len(), self.period);
        if self.stamps.slots() == 0 || self.samples.slots() < self.period {
            return false;
        }
        let pushed = self.samples.push_entire_slice(block).is_ok();
        debug_assert!(pushed, "slots checked above");
        pushed && self.stamps.push(stamp).is_ok()
    }

    /// Free blocks.
    pub fn free(&self) -> usize {
        self.stamps.slots()
    }
}

/// The reading end (one thread).
#[derive(Debug)]
pub struct BlockConsumer {
    samples: Consumer<f32>,
    stamps: Consumer<u64>,
    period: usize,
}

impl BlockConsumer {
    /// Whole blocks ready to read.
    pub fn len(&self) -> usize {
        self.stamps.slots()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stamp of the oldest block, if any.
    pub fn peek_stamp(&self) -> Option<u64> {
        self.stamps.peek().ok().copied()
    }

    /// Pops the oldest block into `out` (the period's length) and returns its stamp.
    pub fn try_pop(&mut self, out: &mut [f32]) -> Option<u64> {
        debug_assert_eq!(out.len(), self.period);
        let stamp = self.stamps.pop().ok()?;
        let popped = self.samples.pop_entire_slice(out).is_ok();
        debug_assert!(popped, "a stamp is committed only after its samples");
        Some(stamp)
    }

    /// Discards the oldest block; `false` when empty.
    pub fn skip(&mut self) -> bool {
        if self.stamps.pop().is_err() {
            return false;
        }
        if let Ok(c) = self.samples.read_chunk(self.period) {
            c.commit_all();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_keep_order_stamps_and_bound() {
        let (mut p, mut c) = block_ring(4, 2);
        assert!(p.try_push(&[1.0, 2.0, 3.0, 4.0], 10));
        assert!(p.try_push(&[5.0; 4], 20));
        assert!(
            !p.try_push(&[6.0; 4], 30),
            "a full ring refuses, it never grows"
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c.peek_stamp(), Some(10));
        let mut out = [0.0; 4];
        assert_eq!(c.try_pop(&mut out), Some(10));
        assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
        assert!(c.skip());
        assert!(c.try_pop(&mut out).is_none());
        assert!(!c.skip());
        assert_eq!(p.free(), 2);
    }
}
