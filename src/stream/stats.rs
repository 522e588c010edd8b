//! Latency accounting that never grows: fixed-size log-linear histograms of microseconds
//! (64 exact buckets below 64 us, then 32 per power of two: under 3.2 % relative error, up
//! to ~12 days) with an exact maximum, and event counters. All atomics: one thread records
//! (relaxed stores, no allocation), any thread may take a [`Snapshot`] while it runs.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const LINEAR: usize = 64;
const SUB: usize = 32;
const OCTAVES: usize = 34;
const BUCKETS: usize = LINEAR + OCTAVES * SUB;

fn bucket(us: u64) -> usize {
    if us < LINEAR as u64 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // >= 6
    let m = (us >> (e - 5)) as usize; // 32..64
    (LINEAR + (e - 6) * SUB + (m - SUB)).min(BUCKETS - 1)
}

/// The smallest value that falls in bucket `i`.
fn bucket_floor(i: usize) -> u64 {
    if i < LINEAR {
        return i as u64;
    }
    let (e, m) = ((i - LINEAR) / SUB + 6, (i - LINEAR) % SUB + SUB);
    (m as u64) << (e - 5)
}

/// A histogram of durations in microseconds, recorded by one thread.
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
    total: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl fmt::Debug for Histogram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.summary())
    }
}

impl Histogram {
    /// Records one value (single writer: the loads and stores are not one atomic step).
    pub fn record_ns(&self, ns: u64) {
        let us = ns / 1000;
        let c = &self.counts[bucket(us)];
        c.store(c.load(Relaxed) + 1, Relaxed);
        if us > self.max.load(Relaxed) {
            self.max.store(us, Relaxed);
        }
        self.total.store(self.total.load(Relaxed) + 1, Relaxed);
    }

    /// p50, p99, max and count.
    pub fn summary(&self) -> Summary {
        let n = self.total.load(Relaxed);
        let max = self.max.load(Relaxed);
        let q = |p: f64| -> u64 {
            if n == 0 {
                return 0;
            }
            let rank = ((p * n as f64).ceil() as u64).clamp(1, n);
            let mut seen = 0;
            for (i, c) in self.counts.iter().enumerate() {
                seen += c.load(Relaxed);
                if seen >= rank {
                    // the bucket's upper edge, never above the exact maximum
                    return (bucket_floor(i + 1).saturating_sub(1)).min(max);
                }
            }
            max
        };
        Summary {
            count: n,
            p50_us: q(0.50),
            p99_us: q(0.99),
            max_us: max,
        }
    }
}

/// Percentiles of a [`Histogram`] (upper bucket edges, <= 3.2 % above the true value).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
            ms(self.p50_us),
            ms(self.p99_us),
            ms(self.max_us),
            self.count
        )
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        /// Event counters, bumped by the loop's threads (relaxed atomics, no allocation).
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// A plain copy of [`Counters`].
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct CounterValues {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            pub fn values(&self) -> CounterValues {
                CounterValues { $($name: self.$name.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Periods read from the capture device.
    captured,
    /// Frames run through the processor.
    processed,
    /// Processed frames written to the playback device.
    played,
    /// Capture overruns reported by ALSA (`EPIPE`) and recovered.
    capture_xruns,
    /// Playback underruns reported by ALSA (`EPIPE`) and recovered.
    playback_xruns,
    /// Capture backlogs (device `delay()` above the limit) dropped by the loop itself: the
    /// overruns that the pulse plugin does not report.
    capture_backlog_drops,
    /// Captured periods dropped because compute had not taken the previous ones.
    capture_ring_full,
    /// Captured frames skipped by compute to catch up (only the newest one is processed).
    compute_skipped,
    /// Processed frames dropped because the playback ring was full.
    playback_ring_full,
    /// Periods of silence played because no processed frame was ready (compute late).
    playback_late,
    /// Processed frames dropped at playback for being older than the latency budget.
    playback_stale,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
}

impl CounterValues {
    /// ALSA-reported xruns plus unreported capture overruns.
    pub fn xruns(&self) -> u64 {
        self.capture_xruns + self.playback_xruns + self.capture_backlog_drops
    }

    /// Frames lost or replaced by silence anywhere in the loop.
    pub fn dropped(&self) -> u64 {
        self.capture_ring_full
            + self.compute_skipped
            + self.playback_ring_full
            + self.playback_stale
    }
}

/// Everything the loop measures, shared between its threads and the caller.
#[derive(Debug, Default)]
pub struct LoopStats {
    pub counters: Counters,
    /// Processor time per frame (analysis + synthesis).
    pub frame_time: Histogram,
    /// From the end of a period's capture to its codes (analysis done).
    pub capture_to_codes: Histogram,
    /// From the end of a period's capture to handing its output to the playback device.
    pub capture_to_playback_write: Histogram,
}

impl LoopStats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            counters: self.counters.values(),
            frame_time: self.frame_time.summary(),
            capture_to_codes: self.capture_to_codes.summary(),
            capture_to_playback_write: self.capture_to_playback_write.summary(),
        }
    }
}

/// A copy of [`LoopStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub counters: CounterValues,
    pub frame_time: Summary,
    pub capture_to_codes: Summary,
    pub capture_to_playback_write: Summary,
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.counters;
        writeln!(f, "frame compute time:        {}", self.frame_time)?;
        writeln!(f, "capture -> codes:          {}", self.capture_to_codes)?;
        writeln!(
            f,
            "capture -> playback write: {}",
            self.capture_to_playback_write
        )?;
        writeln!(
            f,
            "frames: captured {}, processed {}, played {}",
            c.captured, c.processed, c.played
        )?;
        writeln!(
            f,
            "xruns: capture {} (+{} unreported backlogs dropped), playback {}",
            c.capture_xruns, c.capture_backlog_drops, c.playback_xruns
        )?;
        write!(
            f,
            "compute late (silence played) {}; dropped: capture ring full {}, compute catch-up {}, \
             playback ring full {}, stale {}",
            c.playback_late,
            c.capture_ring_full,
            c.compute_skipped,
            c.playback_ring_full,
            c.playback_stale
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 30, 1 << 40, u64::MAX / 1000]) {
            let b = bucket(us);
            assert!(b >= last, "bucket order at {us}");
            last = b;
            assert!(bucket_floor(b) <= us, "floor of {us}");
            if b + 1 < BUCKETS {
                let hi = bucket_floor(b + 1);
                assert!(us < hi, "{us} below next bucket");
                assert!((hi - bucket_floor(b)) as f64 <= 1.0f64.max(us as f64 / 31.0));
            }
        }
    }

    #[test]
    fn percentiles() {
        let h = Histogram::default();
        assert_eq!(h.summary(), Summary::default());
        for us in 1..=1000u64 {
            h.record_ns(us * 1000);
        }
        let s = h.summary();
        assert_eq!((s.count, s.max_us), (1000, 1000));
        assert!((500..=516).contains(&s.p50_us), "{s:?}");
        assert!((990..=1000).contains(&s.p99_us), "{s:?}");
    }
}
