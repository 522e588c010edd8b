//! The Q4 block format (ggml's Q4_0 semantics): each block of [`QK`] = 32 values of a row holds
//! 32 unsigned 4-bit codes `q` in `[0, 15]` and one f16 scale `d`; the value is `d * (q - 8)`.
//! Rows are padded with zeros (code 8) to a whole number of blocks. This module quantizes
//! row-major matrices into codes and scales; [`super::packed`] packs them into the Q4P panels
//! the kernels read (4.5 bits per weight: 144 bytes per 8 rows x 32 columns).
//!
//! The scale: ggml's rule maps the value of largest magnitude to code 0 (`d = m / -8`) so the
//! full `[-8, 7]` range is used; here that scale and a few smaller and larger ones around it
//! (both signs) are tried per block and the one with the least squared error is kept, which
//! gains about 1 dB of SNR on Gaussian weights at no cost to the kernels (the format is the
//! same). Quantization runs offline (`quantize`, `synth`).

use super::q8::{QK, blocks};
use half::f16;

/// The code of the value 0.
pub const ZERO_CODE: u8 = 8;

/// Scale multipliers tried around ggml's `m / -8` (1.0), and the same for `m / 7` (the value
/// of largest magnitude at code 15).
const SEARCH: [f32; 7] = [1.0, 0.95, 0.9, 0.85, 0.8, 1.05, 1.1];

/// Codes of `x` against scale `d` (f16-rounded) and their squared error.
fn codes_for(x: &[f32], d: f16, q: &mut [u8; QK]) -> f32 {
    let s = d.to_f32();
    let inv = if s != 0.0 { 1.0 / s } else { 0.0 };
    let mut err = 0f32;
    for (i, o) in q.iter_mut().enumerate() {
        let v = x.get(i).copied().unwrap_or(0.0);
        let c = ((v * inv).round() + ZERO_CODE as f32).clamp(0.0, 15.0) as u8;
        *o = c;
        let e = v - s * (c as f32 - ZERO_CODE as f32);
        err += e * e;
    }
    err
}

/// Quantizes one row into `q` (`blocks(x.len()) * 32` codes) and `d` (`blocks(x.len())`
/// scales). Every candidate scale is rounded to f16 before the codes are chosen against it.
pub fn quantize_weight_row(x: &[f32], q: &mut [u8], d: &mut [f16]) {
    let nb = blocks(x.len());
    assert_eq!(q.len(), nb * QK, "q4 row: code length");
    assert_eq!(d.len(), nb, "q4 row: scale length");
    let mut cand = [0u8; QK];
    for (b, db) in d.iter_mut().enumerate() {
        let src = &x[b * QK..((b + 1) * QK).min(x.len())];
        let m = src
            .iter()
            .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
        let dst: &mut [u8; QK] = (&mut q[b * QK..(b + 1) * QK]).try_into().expect("block");
        if m == 0.0 {
            *db = f16::ZERO;
            dst.fill(ZERO_CODE);
            continue;
        }
        let mut best = (f32::INFINITY, f16::ZERO);
        for base in [m / -8.0, m / 7.0] {
            for f in SEARCH {
                let s = f16::from_f32(base * f);
                if !s.is_finite() {
                    continue;
                }
                let e = codes_for(src, s, &mut cand);
                if e < best.0 {
                    best = (e, s);
                    *dst = cand;
                }
            }
        }
        *db = best.1;
    }
}

/// Quantizes a row-major `[rows, cols]` matrix: codes `[rows, blocks(cols) * 32]` (one per
/// byte) and scales `[rows, blocks(cols)]`.
pub fn quantize_matrix(w: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f16>) {
    assert_eq!(w.len(), rows * cols, "q4 matrix: length");
    let nb = blocks(cols);
    let mut q = vec![ZERO_CODE; rows * nb * QK];
    let mut d = vec![f16::ZERO; rows * nb];
    if cols == 0 {
        return (q, d);
    }
    // the scale search is the slow part of converting a model: rows in parallel
    use rayon::prelude::*;
    q.par_chunks_mut(nb * QK)
        .zip(d.par_chunks_mut(nb))
        .zip(w.par_chunks(cols))
        .for_each(|((q, d), w)| quantize_weight_row(w, q, d));
    (q, d)
}

/// The value of code `q` at scale `d`.
pub fn value(q: u8, d: f16) -> f32 {
    d.to_f32() * (q as f32 - ZERO_CODE as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q8::snr_db;
    use crate::kernels::test_rand::rand_vec;

    fn round_trip(x: &[f32]) -> (Vec<f32>, Vec<u8>, Vec<f16>) {
        let (q, d) = quantize_matrix(x, 1, x.len());
        let y = (0..x.len()).map(|i| value(q[i], d[i / QK])).collect();
        (y, q, d)
    }

    #[test]
    fn error_is_within_a_step_and_better_than_the_plain_rule() {
        let x = rand_vec(32 * 64 + 7, 5);
        let (y, q, d) = round_trip(&x);
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            let step = d[i / QK].to_f32().abs();
            assert!((a - b).abs() <= step * 1.0001 + 1e-7, "{i}: {a} vs {b}");
        }
        assert!(
            q[x.len()..].iter().all(|&c| c == ZERO_CODE),
            "padding is zero"
        );
        // ggml's rule alone (d = m / -8) on the same data
        let mut plain = vec![0f32; x.len()];
        for (b, chunk) in x.chunks(QK).enumerate() {
            let m = chunk
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let s = f16::from_f32(m / -8.0);
            let mut c = [0u8; QK];
            codes_for(chunk, s, &mut c);
            for i in 0..chunk.len() {
                plain[b * QK + i] = value(c[i], s);
            }
        }
        let (ours, theirs) = (snr_db(&x, &y), snr_db(&x, &plain));
        assert!(ours > 16.0, "SNR {ours:.1} dB");
        assert!(
            ours >= theirs + 0.3,
            "searched {ours:.2} dB vs plain {theirs:.2} dB"
        );
    }

    #[test]
    fn zeros_and_extremes() {
        let (y, q, d) = round_trip(&[0.0; 32]);
        assert_eq!(d[0], f16::ZERO);
        assert!(q.iter().all(|&c| c == ZERO_CODE) && y.iter().all(|&v| v == 0.0));
        // a lone large value is represented exactly (it sets the scale)
        let mut x = [0.01f32; 32];
        x[3] = -2.0;
        let (y, _, _) = round_trip(&x);
        assert!((y[3] + 2.0).abs() < 2e-3, "{}", y[3]);
    }
}
