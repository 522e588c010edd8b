//! The read-bandwidth floor every benchmark compares against: a plain wide-sum read of a buffer
//! several times the last-level cache, measured in the same run as what it is compared with
//! (this machine is shared, so absolute times alone mean little).

use edgecsm::kernels::Pool;
use std::hint::black_box;
use std::time::Instant;

/// The largest cache size the OS reports for CPU 0 (32 MiB if it reports none).
pub fn llc_bytes() -> usize {
    let mut best = 0;
    for i in 0..8 {
        let p = format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size");
        let Ok(s) = std::fs::read_to_string(p) else {
            continue;
        };
        let s = s.trim();
        let (num, mul) = match s.chars().last() {
            Some('K') => (&s[..s.len() - 1], 1 << 10),
            Some('M') => (&s[..s.len() - 1], 1 << 20),
            _ => (s, 1),
        };
        if let Ok(v) = num.parse::<usize>() {
            best = best.max(v * mul);
        }
    }
    if best == 0 { 32 << 20 } else { best }
}

/// A buffer several times the last-level cache, read in rotating chunks: the bandwidth floor.
pub struct Floor {
    pub buf: Vec<u64>,
    /// Next chunk start (u64 index).
    next: usize,
}

impl Floor {
    pub fn new(bytes: usize) -> Floor {
        Floor {
            buf: (0..bytes / 8).map(|i| i as u64).collect(),
            next: 0,
        }
    }

    /// Reads the next `bytes` of the buffer (wrapping around) split over `pool`; returns the
    /// time in microseconds.
    pub fn read(&mut self, pool: &Pool, bytes: usize) -> f64 {
        let len = (bytes / 8).min(self.buf.len());
        if self.next + len > self.buf.len() {
            self.next = 0;
        }
        let chunk = &self.buf[self.next..self.next + len];
        self.next += len;
        let t = Instant::now();
        let parts = pool.threads();
        pool.run(parts, &|part| {
            let r = Pool::split(chunk.len(), part, parts, 64);
            black_box(read_sum(black_box(&chunk[r])));
        });
        t.elapsed().as_secs_f64() * 1e6
    }
}

/// A plain read of `buf`: 256-bit loads into four accumulators where AVX2 exists, else a
/// portable sum with eight accumulators.
fn read_sum(buf: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available (checked just above).
        return unsafe { read_sum_avx2(buf) };
    }
    let mut acc = [0u64; 8];
    let chunks = buf.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(*v);
        }
    }
    acc.iter().chain(rest).fold(0u64, |s, v| s.wrapping_add(*v))
}

/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_sum_avx2(buf: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_si256(); 4];
    let chunks = buf.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: c holds 16 u64, so 4 * i .. 4 * i + 4 is in bounds.
            let v = unsafe { _mm256_loadu_si256(c.as_ptr().add(4 * i).cast()) };
            *a = _mm256_add_epi64(*a, v);
        }
    }
    let mut lanes = [0u64; 4];
    let sum = _mm256_add_epi64(
        _mm256_add_epi64(acc[0], acc[1]),
        _mm256_add_epi64(acc[2], acc[3]),
    );
    // SAFETY: lanes holds four u64.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum) };
    lanes
        .iter()
        .chain(rest)
        .fold(0u64, |s, v| s.wrapping_add(*v))
}

/// Read bandwidth in GB/s of whole-buffer reads of `floor` with `pool` (median of `reps`).
pub fn read_gbs(pool: &Pool, floor: &mut Floor, reps: usize) -> f64 {
    let bytes = floor.buf.len() * 8;
    let mut times: Vec<f64> = (0..reps).map(|_| floor.read(pool, bytes)).collect();
    bytes as f64 / super::median(&mut times) / 1e3
}
