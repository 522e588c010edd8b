//! The AVX2 activation quantizer, bit-exact with [`super::scalar::quantize_q8`]. (The matrix
//! kernels are in [`super::gemm::x86`].)

use super::q8::QK;
use std::arch::x86_64::*;

/// # Safety
/// The CPU supports AVX2, FMA and F16C; otherwise as [`super::scalar::quantize_q8`].
pub unsafe fn quantize_q8(x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
    // SAFETY: the caller guarantees the CPU features and the lengths.
    unsafe { quantize_q8_avx2(x, xq, xd) }
}

/// # Safety
/// As [`quantize_q8`].
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_avx2(x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
    let whole = x.len() / QK;
    for (b, d) in xd[..whole].iter_mut().enumerate() {
        // SAFETY: block b is whole in x, and xq holds xd.len() * 32 >= x.len() bytes.
        *d = unsafe { quantize_block(x.as_ptr().add(b * QK), xq.as_mut_ptr().add(b * QK)) };
    }
    if whole < xd.len() {
        // The last, partial block: quantize a zero-padded copy (padding quantizes to 0 and does
        // not change the block maximum, as in the scalar kernel).
        let mut buf = [0f32; QK];
        let tail = &x[whole * QK..];
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: buf holds 32 values; block `whole` of xq exists since xd has a block for it.
        xd[whole] = unsafe { quantize_block(buf.as_ptr(), xq.as_mut_ptr().add(whole * QK)) };
    }
}

/// Quantizes the 32 values at `x` into the 32 bytes at `q` and returns the scale, bit for bit
/// as [`super::scalar::quantize_q8`] does (including its `as i8` handling of NaN and of values
/// that overflow when the scale is subnormal).
///
/// # Safety
/// `x` readable and `q` writable for 32 values.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block(x: *const f32, q: *mut i8) -> f32 {
    let mut v = [_mm256_setzero_ps(); 4];
    for (i, vi) in v.iter_mut().enumerate() {
        // SAFETY: 32 readable values at x.
        *vi = unsafe { _mm256_loadu_ps(x.add(8 * i)) };
    }
    // |v| by clearing the sign bit; `max(|v|, m)` returns m when |v| is NaN, which skips NaN
    // the way f32::max does in the scalar fold.
    let sign = _mm256_set1_ps(-0.0);
    let mut m = _mm256_setzero_ps();
    for vi in v {
        m = _mm256_max_ps(_mm256_andnot_ps(sign, vi), m);
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
    let mut qi = [_mm256_setzero_si256(); 4];
    for (qv, vi) in qi.iter_mut().zip(v) {
        let p = _mm256_mul_ps(vi, idv);
        // NaN -> 0, then round half to even, then saturate: exactly `round_ties_even() as i8`.
        let p = _mm256_and_ps(p, _mm256_cmp_ps::<_CMP_ORD_Q>(p, p));
        let p = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(p);
        *qv = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(p, lo), hi));
    }
    // Packing works within 128-bit lanes; the permute puts the four-byte groups back in order.
    let p16a = _mm256_packs_epi32(qi[0], qi[1]);
    let p16b = _mm256_packs_epi32(qi[2], qi[3]);
    let p8 = _mm256_packs_epi16(p16a, p16b);
    let out = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: 32 writable bytes at q.
    unsafe { _mm256_storeu_si256(q.cast(), out) };
    d
}

#[cfg(test)]
mod tests {
    //! Special float values in the quantizer (the proptest in `tests/kernels_simd.rs` covers
    //! random inputs): bit for bit the scalar result.
    use super::super::q8::blocks;
    use super::super::{KernelSet, Kernels};
    use super::*;

    fn sets() -> Option<(Kernels, Kernels)> {
        let avx2 = Kernels::new(KernelSet::Avx2).ok()?;
        Some((avx2, Kernels::new(KernelSet::Scalar).unwrap()))
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                // a few larger values so that blocks get different scales
                if s.is_multiple_of(7) { v * 100.0 } else { v }
            })
            .collect()
    }

    fn quantize(k: &Kernels, x: &[f32]) -> (Vec<i8>, Vec<f32>) {
        let nb = blocks(x.len());
        let (mut q, mut d) = (vec![0i8; nb * QK], vec![0f32; nb]);
        k.quantize_q8(x, &mut q, &mut d);
        (q, d)
    }

    #[test]
    fn quantizer_matches_scalar_on_special_values() {
        let Some((avx2, scalar)) = sets() else {
            return;
        };
        let cases: [&[f32]; 7] = [
            &[f32::NAN, 1.0, -2.0, 0.5],
            &[f32::INFINITY, 1.0, -3.0],
            &[f32::NEG_INFINITY, f32::NAN, 0.0],
            // amax / 127 is subnormal and its reciprocal overflows to infinity
            &[1e-40, -1e-40, 5e-41, 0.0],
            &[-0.0, 0.0, -0.0],
            // exact halves after scaling by 127 / 127: ties go to even
            &[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5],
            &[f32::MAX, -f32::MAX, 1.0],
        ];
        for x in cases {
            // place each case in a whole block and in a partial one after a whole block
            let mut long = values(QK, 9);
            long.extend_from_slice(x);
            for input in [x, &long[..]] {
                let (q, d) = quantize(&avx2, input);
                let (qs, ds) = quantize(&scalar, input);
                assert_eq!(q, qs, "int8 of {input:?}");
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&d), bits(&ds), "scales of {input:?}");
            }
        }
    }
}
