//! The Q8 block format (the ggml Q8_0 idea, stored as two arrays).
//!
//! A matrix `[rows, cols]` is split along each row into blocks of [`QK`] = 32 values. Each block
//! holds 32 signed bytes `q` in `[-127, 127]` and one f16 scale `d`; the value is `d * q`.
//! Rows are padded with zeros to a whole number of blocks, so the int8 tensor is
//! `[rows, blocks * 32]` and the scale tensor `[rows, blocks]`. This is exactly the layout the
//! kernels read and the layout `quantize` writes, so loading is a zero-copy mmap.
//!
//! Activations are quantized the same way on the fly (with an f32 scale) so that a Q8 dot
//! product is an integer dot product per block, scaled once per block.

use half::f16;

/// Values per block.
pub const QK: usize = 32;

/// Number of blocks needed for `cols` values.
pub fn blocks(cols: usize) -> usize {
    cols.div_ceil(QK)
}

/// Quantizes one row of weights into `q` (len `blocks(x.len()) * QK`) and `d` (len
/// `blocks(x.len())`). The scale is rounded to f16 first and the values are quantized against
/// the rounded scale, which is what the kernels will multiply by.
pub fn quantize_weight_row(x: &[f32], q: &mut [i8], d: &mut [f16]) {
    let nb = blocks(x.len());
    assert_eq!(q.len(), nb * QK, "q8 row: int8 length");
    assert_eq!(d.len(), nb, "q8 row: scale length");
    for (b, db) in d.iter_mut().enumerate() {
        let lo = b * QK;
        let hi = (lo + QK).min(x.len());
        let src = &x[lo..hi];
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = f16::from_f32(amax / 127.0);
        *db = scale;
        let s = scale.to_f32();
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        let dst = &mut q[lo..lo + QK];
        for (i, o) in dst.iter_mut().enumerate() {
            *o = match src.get(i) {
                Some(v) => (v * inv).round().clamp(-127.0, 127.0) as i8,
                None => 0,
            };
        }
    }
}

/// Quantizes a whole `[rows, cols]` row-major matrix with [`quantize_weight_row`]: returns the
/// int8 data `[rows, blocks(cols) * 32]` and the scales `[rows, blocks(cols)]`.
pub fn quantize_matrix(w: &[f32], rows: usize, cols: usize) -> (Vec<i8>, Vec<f16>) {
    assert_eq!(w.len(), rows * cols, "q8 matrix: length");
    let nb = blocks(cols);
    let mut q = vec![0i8; rows * nb * QK];
    let mut d = vec![f16::ZERO; rows * nb];
    for r in 0..rows {
        quantize_weight_row(
            &w[r * cols..(r + 1) * cols],
            &mut q[r * nb * QK..(r + 1) * nb * QK],
            &mut d[r * nb..(r + 1) * nb],
        );
    }
    (q, d)
}

/// Dequantizes one Q8 row back to `cols` f32 values.
pub fn dequantize_row(q: &[i8], d: &[f16], out: &mut [f32]) {
    assert!(q.len() >= out.len() && d.len() * QK >= out.len());
    for (i, o) in out.iter_mut().enumerate() {
        *o = q[i] as f32 * d[i / QK].to_f32();
    }
}

/// Signal-to-noise ratio in dB of an approximation `y` of `x` (infinite when exact).
pub fn snr_db(x: &[f32], y: &[f32]) -> f64 {
    let (mut s, mut n) = (0f64, 0f64);
    for (a, b) in x.iter().zip(y) {
        s += (*a as f64) * (*a as f64);
        n += (*a as f64 - *b as f64).powi(2);
    }
    if n == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (s / n).log10()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_error_is_within_half_a_step() {
        let x: Vec<f32> = (0..77)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let nb = blocks(x.len());
        let mut q = vec![0i8; nb * QK];
        let mut d = vec![f16::ZERO; nb];
        quantize_weight_row(&x, &mut q, &mut d);
        let mut y = vec![0f32; x.len()];
        dequantize_row(&q, &d, &mut y);
        for (i, (a, b)) in x.iter().zip(&y).enumerate() {
            let step = d[i / QK].to_f32();
            assert!((a - b).abs() <= 0.5 * step + 1e-7, "{i}: {a} vs {b}");
        }
        // padding is zero
        assert!(q[x.len()..].iter().all(|&v| v == 0));
        assert!(snr_db(&x, &y) > 35.0);
    }

    #[test]
    fn zero_block_has_zero_scale() {
        let x = [0f32; 32];
        let mut q = [1i8; 32];
        let mut d = [f16::ONE; 1];
        quantize_weight_row(&x, &mut q, &mut d);
        assert_eq!(d[0], f16::ZERO);
        assert!(q.iter().all(|&v| v == 0));
    }
}
