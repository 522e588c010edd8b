//! Choosing a code from logits: temperature, then top-k, then a categorical draw from a seeded
//! RNG (the order of transformers' logits processors and of the original CSM generator), or
//! greedy argmax when `top_k == 1` or `temperature <= 0`.
//!
//! The RNG is xoshiro256** seeded through SplitMix64, written out here (a dozen lines) rather
//! than taken from a crate: a given seed must give the same speech on every platform and every
//! future build, and a local generator cannot change its stream under a dependency update.
//! Its quality is far beyond what drawing one category per step needs.
//!
//! [`Sampler`] keeps its buffers from construction: sampling allocates nothing.

use crate::{Error, Result};

/// Temperature and top-k of one sampling stage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Logits are divided by this before top-k and softmax; `<= 0` means greedy.
    pub temperature: f32,
    /// Keep the `top_k` largest logits (ties with the k-th kept too, as transformers does);
    /// 0 keeps all, 1 is greedy.
    pub top_k: usize,
}

impl SamplingParams {
    /// Always the most likely code.
    pub const GREEDY: SamplingParams = SamplingParams {
        temperature: 0.0,
        top_k: 1,
    };

    /// The original CSM generator's defaults: temperature 0.9, top-k 50.
    pub const CSM_DEFAULT: SamplingParams = SamplingParams {
        temperature: 0.9,
        top_k: 50,
    };

    pub fn is_greedy(&self) -> bool {
        self.top_k == 1 || self.temperature <= 0.0
    }

    /// Rejects a NaN or infinite temperature.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() {
            return Err(Error::Invalid(format!(
                "sampling temperature must be finite, got {}",
                self.temperature
            )));
        }
        Ok(())
    }
}

/// xoshiro256** (Blackman and Vigna), seeded by SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let out = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        out
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Index of the largest value (the first one on ties; NaN never wins). `logits` must not be
/// empty.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > bv {
            best = i;
            bv = v;
        }
    }
    best
}

/// A sampler over a fixed vocabulary size with its own RNG and buffers.
#[derive(Clone, Debug)]
pub struct Sampler {
    rng: Rng,
    idx: Vec<u32>,
    w: Vec<f64>,
}

impl Sampler {
    /// For logits of up to `vocab` values.
    pub fn new(seed: u64, vocab: usize) -> Sampler {
        Sampler {
            rng: Rng::new(seed),
            idx: vec![0; vocab],
            w: vec![0.0; vocab],
        }
    }

    /// Restarts the random stream.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }

    /// Draws an index from `logits` under `p`. Panics if `logits` is empty or longer than the
    /// vocabulary the sampler was built for.
    pub fn sample(&mut self, logits: &[f32], p: &SamplingParams) -> u32 {
        let n = logits.len();
        assert!(
            n > 0 && n <= self.idx.len(),
            "sample: {n} logits for a sampler of {}",
            self.idx.len()
        );
        if p.is_greedy() {
            return argmax(logits) as u32;
        }
        let inv_t = 1.0 / p.temperature as f64;
        // NaN logits are never drawn
        let score = |i: usize| {
            let v = logits[i];
            if v.is_nan() { f32::NEG_INFINITY } else { v }
        };
        let threshold = if p.top_k == 0 || p.top_k >= n {
            f32::NEG_INFINITY
        } else {
            let idx = &mut self.idx[..n];
            for (i, x) in idx.iter_mut().enumerate() {
                *x = i as u32;
            }
            idx.select_nth_unstable_by(p.top_k - 1, |&a, &b| {
                score(b as usize).total_cmp(&score(a as usize))
            });
            score(idx[p.top_k - 1] as usize)
        };
        let max = score(argmax(logits)) as f64;
        if !max.is_finite() {
            // no finite logit: nothing to weigh, fall back to the first index
            return argmax(logits) as u32;
        }
        let w = &mut self.w[..n];
        let mut sum = 0f64;
        for (i, wi) in w.iter_mut().enumerate() {
            let s = score(i);
            *wi = if s >= threshold && s > f32::NEG_INFINITY {
                ((s as f64 - max) * inv_t).exp()
            } else {
                0.0
            };
            sum += *wi;
        }
        let mut u = self.rng.next_f64() * sum;
        let mut last = 0;
        for (i, &wi) in w.iter().enumerate() {
            if wi > 0.0 {
                if u < wi {
                    return i as u32;
                }
                u -= wi;
                last = i;
            }
        }
        last as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_first_argmax() {
        let mut s = Sampler::new(1, 8);
        let l = [0.5, 3.0, -1.0, 3.0, f32::NAN];
        assert_eq!(s.sample(&l, &SamplingParams::GREEDY), 1);
        let p = SamplingParams {
            temperature: 0.7,
            top_k: 1,
        };
        assert_eq!(s.sample(&l, &p), 1);
        let p = SamplingParams {
            temperature: 0.0,
            top_k: 50,
        };
        assert_eq!(s.sample(&l, &p), 1);
    }

    #[test]
    fn rng_is_reproducible_and_uniform() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let mut c = Rng::new(43);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], c.next_u64());
        let mean = (0..100_000).map(|_| a.next_f64()).sum::<f64>() / 100_000.0;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
    }

    #[test]
    fn frequencies_follow_tempered_top_k_softmax() {
        let logits = [1.0f32, 2.0, 0.5, 3.0, -1.0, 2.0];
        let p = SamplingParams {
            temperature: 0.8,
            top_k: 3,
        };
        let mut s = Sampler::new(7, 6);
        let n = 200_000;
        let mut counts = [0usize; 6];
        for _ in 0..n {
            counts[s.sample(&logits, &p) as usize] += 1;
        }
        // top 3 with ties: 3.0, 2.0, 2.0 (indices 3, 1, 5)
        let e = |x: f64| (x / 0.8).exp();
        let z = e(3.0) + 2.0 * e(2.0);
        let want = [0.0, e(2.0) / z, 0.0, e(3.0) / z, 0.0, e(2.0) / z];
        for i in 0..6 {
            let f = counts[i] as f64 / n as f64;
            assert!((f - want[i]).abs() < 0.01, "[{i}] {f} vs {}", want[i]);
        }
        // ties at the k-th value are all kept (as transformers' top-k does)
        let mut s = Sampler::new(9, 6);
        let p2 = SamplingParams {
            temperature: 1.0,
            top_k: 2,
        };
        let mut seen5 = false;
        for _ in 0..2000 {
            let i = s.sample(&logits, &p2);
            assert!([1, 3, 5].contains(&i), "{i}");
            seen5 |= i == 5;
        }
        assert!(seen5);
        // same seed, same draws
        let mut a = Sampler::new(5, 6);
        let mut b = Sampler::new(5, 6);
        for _ in 0..100 {
            assert_eq!(a.sample(&logits, &p), b.sample(&logits, &p));
        }
    }
}
