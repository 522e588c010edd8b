//! Rotary position embeddings in the half-split ("rotate_half") layout of transformers-format
//! checkpoints: for head dim `d`, element `i` pairs with `i + d/2` and rotates by `pos *
//! inv_freq[i]`.
//!
//! Positions are `u64` and grow without bound in a stream that runs for days, so there is no
//! position table: [`Rope::cos_sin`] computes the `d/2` angles of one position in f64 (exact
//! position, f64 product and range reduction: about 1e-7 rad even at position 10^9), once per
//! step, and the caller shares them across heads and layers. [`RopeBuf`] does the same for a
//! chunk of consecutive positions.

use crate::{Error, Result};

/// Llama-3 frequency scaling (`rope_scaling` with `rope_type: "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The inverse frequencies of one RoPE configuration.
#[derive(Clone, Debug)]
pub struct Rope {
    head_dim: usize,
    inv_freq: Vec<f64>,
}

impl Rope {
    /// Frequencies `theta^(-2i/d)` for `i < d/2`, Llama-3 scaled if `scaling` is given (as
    /// transformers' `_compute_llama3_parameters`). Each is rounded to f32, the precision the
    /// reference implementation (and training) used. Errors name a bad configuration value.
    pub fn new(head_dim: usize, theta: f64, scaling: Option<Llama3Scaling>) -> Result<Rope> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::Invalid(format!(
                "rope: head_dim must be even and positive, got {head_dim}"
            )));
        }
        if !(theta.is_finite() && theta > 1.0) {
            return Err(Error::Invalid(format!(
                "rope: rope_theta must be finite and > 1, got {theta}"
            )));
        }
        let half = head_dim / 2;
        let mut inv_freq: Vec<f64> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f64 / head_dim as f64))
            .collect();
        if let Some(s) = scaling {
            let ok = s.factor.is_finite()
                && s.factor > 0.0
                && s.low_freq_factor > 0.0
                && s.high_freq_factor > s.low_freq_factor
                && s.original_max_position_embeddings.is_finite()
                && s.original_max_position_embeddings > 0.0;
            if !ok {
                return Err(Error::Invalid(format!(
                    "rope: bad llama3 rope_scaling {s:?} (need factor > 0, \
                     high_freq_factor > low_freq_factor > 0, original_max_position_embeddings > 0)"
                )));
            }
            let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
            let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
            for f in &mut inv_freq {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                *f = if wavelen > low_wavelen {
                    // long wavelengths: interpolate fully
                    *f / s.factor
                } else if wavelen < high_wavelen {
                    // short wavelengths: unchanged
                    *f
                } else {
                    let smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * *f / s.factor + smooth * *f
                };
            }
        }
        for f in &mut inv_freq {
            *f = *f as f32 as f64;
        }
        Ok(Rope { head_dim, inv_freq })
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// The `head_dim / 2` inverse frequencies.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// `cos` and `sin` (each `head_dim / 2` long) of the angles `pos * inv_freq[i]`.
    pub fn cos_sin(&self, pos: u64, cos: &mut [f32], sin: &mut [f32]) {
        let half = self.inv_freq.len();
        assert!(
            cos.len() == half && sin.len() == half,
            "rope cos_sin: cos/sin must be head_dim/2 = {half} long"
        );
        let p = pos as f64;
        for ((c, s), f) in cos.iter_mut().zip(sin.iter_mut()).zip(&self.inv_freq) {
            let (sv, cv) = (p * f).sin_cos();
            *c = cv as f32;
            *s = sv as f32;
        }
    }

    /// Rotates every head of `x` (`[heads, head_dim]`, or several rows of that, all at the one
    /// position of `cos`/`sin`): `x[i], x[i + d/2] = x[i] c - x[i + d/2] s, x[i + d/2] c + x[i] s`.
    pub fn apply(&self, x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        assert!(
            x.len().is_multiple_of(d),
            "rope apply: {} values are not whole heads of {d}",
            x.len()
        );
        assert!(
            cos.len() == half && sin.len() == half,
            "rope apply: cos/sin must be head_dim/2 = {half} long"
        );
        for head in x.chunks_exact_mut(d) {
            let (a, b) = head.split_at_mut(half);
            for (((x1, x2), c), s) in a.iter_mut().zip(b.iter_mut()).zip(cos).zip(sin) {
                let (u, v) = (*x1, *x2);
                *x1 = u * c - v * s;
                *x2 = v * c + u * s;
            }
        }
    }
}

/// cos/sin for a chunk of up to `max_n` consecutive positions, computed once per chunk and
/// applied to q and k of every layer.
#[derive(Clone, Debug)]
pub struct RopeBuf {
    half: usize,
    max_n: usize,
    n: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeBuf {
    pub fn new(rope: &Rope, max_n: usize) -> Self {
        let half = rope.head_dim / 2;
        RopeBuf {
            half,
            max_n,
            n: 0,
            cos: vec![0.0; max_n * half],
            sin: vec![0.0; max_n * half],
        }
    }

    /// Computes positions `first_pos .. first_pos + n`.
    pub fn set(&mut self, rope: &Rope, first_pos: u64, n: usize) {
        assert_eq!(
            rope.head_dim / 2,
            self.half,
            "RopeBuf: built for another head_dim"
        );
        assert!(
            n <= self.max_n,
            "RopeBuf: {n} positions but sized for {} at construction",
            self.max_n
        );
        self.n = n;
        let h = self.half;
        for t in 0..n {
            rope.cos_sin(
                first_pos + t as u64,
                &mut self.cos[t * h..(t + 1) * h],
                &mut self.sin[t * h..(t + 1) * h],
            );
        }
    }

    /// Number of positions currently held.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Rotates `x` (`[n, heads * head_dim]`, row `t` at position `first_pos + t` of the last
    /// [`RopeBuf::set`]).
    pub fn apply(&self, rope: &Rope, x: &mut [f32]) {
        let h = self.half;
        assert_eq!(rope.head_dim / 2, h, "RopeBuf: built for another head_dim");
        assert!(
            self.n > 0 && x.len().is_multiple_of(self.n),
            "RopeBuf apply: {} values are not {} rows",
            x.len(),
            self.n
        );
        let row = x.len() / self.n;
        for (t, xr) in x.chunks_exact_mut(row).enumerate() {
            rope.apply(
                xr,
                &self.cos[t * h..(t + 1) * h],
                &self.sin[t * h..(t + 1) * h],
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rand::rand_vec;

    /// transformers: `x * cos + rotate_half(x) * sin`, cos/sin duplicated over both halves.
    fn naive(x: &[f32], d: usize, theta: f64, pos: u64) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for (h, o) in x.chunks(d).zip(out.chunks_mut(d)) {
            for i in 0..d {
                let fi = i % (d / 2);
                let inv = (1.0 / theta.powf((2 * fi) as f64 / d as f64)) as f32 as f64;
                let a = pos as f64 * inv;
                let rot = if i < d / 2 {
                    -h[i + d / 2]
                } else {
                    h[i - d / 2]
                };
                o[i] = (h[i] as f64 * a.cos() + rot as f64 * a.sin()) as f32;
            }
        }
        out
    }

    #[test]
    fn apply_matches_rotate_half_formula() {
        let rope = Rope::new(8, 10000.0, None).unwrap();
        let mut buf = RopeBuf::new(&rope, 3);
        let (mut c, mut s) = (vec![0f32; 4], vec![0f32; 4]);
        for pos in [0u64, 1, 7, 1234] {
            let x = rand_vec(3 * 8, pos + 1);
            let mut y = x.clone();
            rope.cos_sin(pos, &mut c, &mut s);
            rope.apply(&mut y, &c, &s);
            let want = naive(&x, 8, 10000.0, pos);
            for (a, b) in y.iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "pos {pos}: {a} vs {b}");
            }
        }
        // a chunk of positions, two rows of two heads each
        let x = rand_vec(2 * 16, 9);
        let mut y = x.clone();
        buf.set(&rope, 41, 2);
        buf.apply(&rope, &mut y);
        for t in 0..2 {
            let want = naive(&x[t * 16..(t + 1) * 16], 8, 10000.0, 41 + t as u64);
            for (a, b) in y[t * 16..(t + 1) * 16].iter().zip(&want) {
                assert!((a - b).abs() < 1e-6, "row {t}: {a} vs {b}");
            }
        }
    }

    fn score(rope: &Rope, q: &[f32], k: &[f32], pq: u64, pk: u64) -> f64 {
        let h = rope.head_dim() / 2;
        let (mut c, mut s) = (vec![0f32; h], vec![0f32; h]);
        let (mut q, mut k) = (q.to_vec(), k.to_vec());
        rope.cos_sin(pq, &mut c, &mut s);
        rope.apply(&mut q, &c, &s);
        rope.cos_sin(pk, &mut c, &mut s);
        rope.apply(&mut k, &c, &s);
        q.iter().zip(&k).map(|(a, b)| (a * b) as f64).sum()
    }

    #[test]
    fn scores_depend_on_offset_only_even_at_huge_positions() {
        let scaling = Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        for rope in [
            Rope::new(64, 10000.0, None).unwrap(),
            Rope::new(64, 500000.0, Some(scaling)).unwrap(),
        ] {
            let q = rand_vec(64, 1);
            let k = rand_vec(64, 2);
            for off in [0u64, 1, 17, 249] {
                let small = score(&rope, &q, &k, 3 + off, 3);
                for base in [1_000_000_000u64, 86_400 * 25 * 365 * 3] {
                    let big = score(&rope, &q, &k, base + off, base);
                    assert!(
                        (small - big).abs() < 1e-5,
                        "offset {off} at {base}: {small} vs {big}"
                    );
                }
            }
        }
    }

    #[test]
    fn llama3_scaled_frequencies_match_the_formula() {
        let s = Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        let rope = Rope::new(64, 500000.0, Some(s)).unwrap();
        let inv = rope.inv_freq();
        assert_eq!(inv.len(), 32);
        // By hand: inv_i = 500000^(-i/32); wavelen = 2 pi / inv_i. Wavelengths below 2048
        // (= 8192 / 4) are kept, above 8192 divided by 32, in between smoothed with
        // s = (8192 / wavelen - 1) / 3.
        // i = 0: inv 1, wavelen 6.28: kept.
        // i = 12: inv = 500000^(-0.375) = 0.00729266, wavelen 861.58: kept.
        // i = 16: inv = 500000^(-0.5) = 1/707.1068 = 0.00141421, wavelen 4442.88: smoothed,
        //   s = (8192/4442.88 - 1) / 3 = 0.281283; inv * ((1 - s)/32 + s) = 0.000429557.
        // i = 20: inv = 500000^(-0.625) = 0.000274248, wavelen 22910.6 > 8192: inv / 32.
        // i = 31: inv = 500000^(-31/32) = 3.01386e-6 -> / 32 = 9.41831e-8.
        let hand = [
            (0, 1.0),
            (12, 0.00729266),
            (16, 0.000429557),
            (20, 0.000274248 / 32.0),
            (31, 3.01386e-6 / 32.0),
        ];
        for (i, want) in hand {
            assert!(
                (inv[i] - want).abs() < 1e-5 * want,
                "inv_freq[{i}] = {} vs hand {want}",
                inv[i]
            );
        }
        // and the full formula at f64 for every index
        for (i, &got) in inv.iter().enumerate() {
            let f = 500000f64.powf(-(2.0 * i as f64) / 64.0);
            let wl = 2.0 * std::f64::consts::PI / f;
            let want = if wl < 2048.0 {
                f
            } else if wl > 8192.0 {
                f / 32.0
            } else {
                let sm = (8192.0 / wl - 1.0) / 3.0;
                (1.0 - sm) * f / 32.0 + sm * f
            };
            assert!((got - want).abs() <= 1e-7 * want, "[{i}] {got} vs {want}");
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        assert!(Rope::new(7, 10000.0, None).is_err());
        assert!(Rope::new(0, 10000.0, None).is_err());
        assert!(Rope::new(64, f64::NAN, None).is_err());
        let bad = Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 4.0,
            high_freq_factor: 1.0,
            original_max_position_embeddings: 8192.0,
        };
        assert!(Rope::new(64, 500000.0, Some(bad)).is_err());
    }
}
