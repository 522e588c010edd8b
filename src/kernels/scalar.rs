//! The scalar activation quantizer: the reference its SIMD twins reproduce bit for bit, and the
//! fallback on CPUs without SIMD features. (The matrix kernels' references are in
//! [`super::gemm::scalar`].)

use super::q8::QK;

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
