//! Scalar reference kernels. Every SIMD twin is tested against these on random inputs; they are
//! also the fallback on CPUs without the SIMD features.
//!
//! All three products share one shape: weights `w` hold `rows` rows of `cols` values, the
//! activations `x` hold `n` tokens of `cols` values, and `y[t * ldy + r] = dot(w[r], x[t])`.
//! `n == 1` is the matrix-vector product of a decode step. The callers in
//! [`super::dispatch`] check every length; `y` is a raw pointer so that the threads of one
//! product can each write their own rows of a shared output.

use super::q8::QK;
use half::f16;

/// # Safety
/// `y` must be valid for writes at `t * ldy + r` for `t < n`, `r < rows`; `w` and `x` hold at
/// least `rows * cols` and `n * cols` values.
pub unsafe fn gemm_f32(
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    for t in 0..n {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let v: f32 = wr.iter().zip(xt).map(|(a, b)| a * b).sum();
            // SAFETY: in bounds by the caller's contract.
            unsafe { *y.add(t * ldy + r) = v };
        }
    }
}

/// # Safety
/// As [`gemm_f32`].
pub unsafe fn gemm_f16(
    w: &[f16],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    for t in 0..n {
        let xt = &x[t * cols..(t + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let v: f32 = wr.iter().zip(xt).map(|(a, b)| a.to_f32() * b).sum();
            // SAFETY: in bounds by the caller's contract.
            unsafe { *y.add(t * ldy + r) = v };
        }
    }
}

/// Q8 weights (`rows * nb` blocks: `wq` int8, `wd` scales) times Q8 activations (`n * nb`
/// blocks: `xq`, `xd`). Per block: `wd * xd * sum(wq * xq)` in exact integer arithmetic.
///
/// # Safety
/// As [`gemm_f32`], with `nb` blocks per row.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_q8(
    wq: &[i8],
    wd: &[f16],
    xq: &[i8],
    xd: &[f32],
    rows: usize,
    nb: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    for t in 0..n {
        for r in 0..rows {
            let mut acc = 0f32;
            for b in 0..nb {
                let wb = &wq[(r * nb + b) * QK..(r * nb + b + 1) * QK];
                let xb = &xq[(t * nb + b) * QK..(t * nb + b + 1) * QK];
                let isum: i32 = wb.iter().zip(xb).map(|(&a, &c)| a as i32 * c as i32).sum();
                acc += isum as f32 * (wd[r * nb + b].to_f32() * xd[t * nb + b]);
            }
            // SAFETY: in bounds by the caller's contract.
            unsafe { *y.add(t * ldy + r) = acc };
        }
    }
}

/// Quantizes one activation vector to Q8 blocks: per block `d = amax / 127` and
/// `q = round_ties_even(x * (1 / d))` (0 when `d == 0`); padding values are zero. SIMD twins
/// reproduce this bit for bit.
///
/// # Safety
/// `xq.len() == xd.len() * 32 >= x.len()`.
pub unsafe fn quantize_q8(x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
    for (b, d_out) in xd.iter_mut().enumerate() {
        let lo = (b * QK).min(x.len());
        let hi = (lo + QK).min(x.len());
        let src = &x[lo..hi];
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        *d_out = d;
        let dst = &mut xq[b * QK..(b + 1) * QK];
        for (i, o) in dst.iter_mut().enumerate() {
            *o = src.get(i).map_or(0, |v| (v * id).round_ties_even() as i8);
        }
    }
}
