//! The NEON activation quantizer, bit-exact with [`super::scalar::quantize_q8`]. (The matrix
//! kernels are in [`super::gemm`].)

use super::q8::QK;
use core::arch::aarch64::*;

// ---------------------------------------------------------------------------------------------
// Activation quantizer

/// Quantizes the 32 values at `p` into `q`; returns the block scale. Bit-exact with the scalar
/// formula: `amax` by max-of-abs (order free), `d = amax / 127`, `id = 1 / d` (or 0), then
/// `x * id` (a plain multiply, no fusion) rounded to nearest-even by `fcvtns` and narrowed with
/// saturation, as Rust's saturating `as i8` does (NaN gives 0 in both).
///
/// # Safety
/// `p` readable and `q` writable for 32 values.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn quant_block(p: *const f32, q: *mut i8) -> f32 {
    let mut v = [vdupq_n_f32(0.0); 8];
    for (k, vk) in v.iter_mut().enumerate() {
        // SAFETY: 32 readable values at `p`.
        *vk = unsafe { vld1q_f32(p.add(4 * k)) };
    }
    // start from 0 and use maxNum (ignores NaN) as the scalar `fold(0, f32::max)` does
    let mut m = vdupq_n_f32(0.0);
    for vk in &v {
        m = vmaxnmq_f32(m, vabsq_f32(*vk));
    }
    let amax = vmaxnmvq_f32(m);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let vid = vdupq_n_f32(id);
    for half in 0..2 {
        let [a, b, c, e] = [0, 1, 2, 3].map(|j| vcvtnq_s32_f32(vmulq_f32(v[4 * half + j], vid)));
        let lo = vqmovn_high_s32(vqmovn_s32(a), b);
        let hi = vqmovn_high_s32(vqmovn_s32(c), e);
        // SAFETY: 32 writable bytes at `q`.
        unsafe { vst1q_s8(q.add(16 * half), vqmovn_high_s16(vqmovn_s16(lo), hi)) };
    }
    d
}

#[target_feature(enable = "neon")]
unsafe fn quantize_q8_neon(x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
    for (b, d_out) in xd.iter_mut().enumerate() {
        let lo = (b * QK).min(x.len());
        let hi = (lo + QK).min(x.len());
        let src = &x[lo..hi];
        // a short (or empty) last block is read from a zero-padded copy
        let mut padded = [0f32; QK];
        let p = if src.len() == QK {
            src.as_ptr()
        } else {
            padded[..src.len()].copy_from_slice(src);
            padded.as_ptr()
        };
        let dst = &mut xq[b * QK..(b + 1) * QK];
        // SAFETY: `p` points at 32 values and `dst` holds 32 bytes.
        *d_out = unsafe { quant_block(p, dst.as_mut_ptr()) };
    }
}

/// NEON [`super::scalar::quantize_q8`], bit-exact with it.
///
/// # Safety
/// As the scalar kernel, and the CPU must have NEON.
pub unsafe fn quantize_q8(x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
    // SAFETY: forwarded contract; NEON checked by the caller (kernel table).
    unsafe { quantize_q8_neon(x, xq, xd) }
}
