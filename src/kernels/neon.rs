//! NEON twins of the scalar kernels in [`super::scalar`]: same signatures; the f32/f16 products
//! equal the scalar ones up to f32 summation order, the Q8 product and `quantize_q8` bit for bit.
//!
//! Two sets use this file: base NEON (ARMv8.0, Raspberry Pi 4: `gemm_q8` multiplies int8 pairs
//! into i16 with `smull`/`smlal` and widens into i32 with `sadalp`) and NEON + dotprod (ARMv8.2,
//! Pi 5 and Jetson Orin: `gemm_q8_sdot` uses `sdot`). Everything else is base ARMv8: f16
//! weights are widened with `fcvtl`/`fcvtl2` (written with `asm!` because the NEON f16
//! conversion intrinsics, like `vdotq_s32`, are unstable), and the f32 products use `fmla`.
//!
//! Tiling: a decode step (`n == 1`) is memory bound, so each activation load serves 4 or 8
//! weight rows; with several tokens a tile of rows x 2 tokens also reuses each weight load.
//! Rows are the outer loop so a tile's weights stay in cache while all tokens pass over them.
//! Each `pub` function is a thin `unsafe` wrapper around a `#[target_feature]` implementation;
//! the helpers carry the same features and `#[inline]`, so in a release build they all inline
//! into that implementation (checked in the disassembly: no calls in the hot loops).

use super::q8::QK;
use core::arch::aarch64::*;
use core::arch::asm;
use half::f16;

// ---------------------------------------------------------------------------------------------
// f32 and f16 weights

/// A weight element type the float products read: 8 at a time widened to f32, or one.
trait Weight: Copy {
    /// Loads `p[0..8]` as two f32 vectors.
    ///
    /// # Safety
    /// `p` valid for reading 8 elements.
    unsafe fn load8(p: *const Self) -> (float32x4_t, float32x4_t);
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load8(p: *const f32) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller guarantees 8 readable values at `p`.
        unsafe { (vld1q_f32(p), vld1q_f32(p.add(4))) }
    }
    #[inline]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for f16 {
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load8(p: *const f16) -> (float32x4_t, float32x4_t) {
        // SAFETY: the caller guarantees 8 readable halves at `p` (f16 is a plain u16).
        let h = unsafe { vld1q_u16(p.cast::<u16>()) };
        let (lo, hi): (float32x4_t, float32x4_t);
        // SAFETY: fcvtl/fcvtl2 are base ARMv8 SIMD instructions that only touch registers;
        // `lo` is an `out` (not `lateout`) operand, so it never shares `h`'s register.
        unsafe {
            asm!(
                "fcvtl {lo:v}.4s, {h:v}.4h",
                "fcvtl2 {hi:v}.4s, {h:v}.8h",
                h = in(vreg) h,
                lo = out(vreg) lo,
                hi = out(vreg) hi,
                options(pure, nomem, nostack, preserves_flags),
            )
        };
        (lo, hi)
    }
    #[inline]
    fn to_f32(self) -> f32 {
        half_to_f32(self)
    }
}

/// One f16 to f32 with the base ARMv8 `fcvt` (`half`'s conversion checks for fp16 at run time on
/// every call).
#[inline]
fn half_to_f32(h: f16) -> f32 {
    let out: f32;
    // SAFETY: fcvt (half to single) is a base ARMv8 FP instruction that only touches registers;
    // it reads the low 16 bits of the input register, which hold `h`.
    unsafe {
        asm!(
            "fcvt {o:s}, {i:h}",
            i = in(vreg) f32::from_bits(u32::from(h.to_bits())),
            o = lateout(vreg) out,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    out
}

/// `y[t * ldy + r] = dot(w[r], x[t])` for rows `r0..r0 + R` and tokens `t0..t0 + T`.
///
/// # Safety
/// Those rows, tokens and outputs are in bounds (`cols` values per row and token).
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn float_tile<W: Weight, const R: usize, const T: usize>(
    w: *const W,
    x: *const f32,
    cols: usize,
    r0: usize,
    t0: usize,
    y: *mut f32,
    ldy: usize,
) {
    let zero = vdupq_n_f32(0.0);
    // two accumulators per (row, token): one per half of an 8-column step
    let mut acc = [[[zero; 2]; T]; R];
    let main = cols & !7;
    let mut c = 0;
    while c < main {
        let mut xv = [[zero; 2]; T];
        for (t, v) in xv.iter_mut().enumerate() {
            // SAFETY: c + 8 <= cols, token t0 + t is in bounds.
            let p = unsafe { x.add((t0 + t) * cols + c) };
            // SAFETY: as above, 8 readable values at `p`.
            *v = unsafe { [vld1q_f32(p), vld1q_f32(p.add(4))] };
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: c + 8 <= cols, row r0 + r is in bounds.
            let (w0, w1) = unsafe { W::load8(w.add((r0 + r) * cols + c)) };
            for (a, xt) in acc_r.iter_mut().zip(&xv) {
                a[0] = vfmaq_f32(a[0], w0, xt[0]);
                a[1] = vfmaq_f32(a[1], w1, xt[1]);
            }
        }
        c += 8;
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (t, a) in acc_r.iter().enumerate() {
            let mut s = vaddvq_f32(vaddq_f32(a[0], a[1]));
            for c in main..cols {
                // SAFETY: c < cols, row and token in bounds.
                unsafe {
                    s += (*w.add((r0 + r) * cols + c)).to_f32() * *x.add((t0 + t) * cols + c)
                };
            }
            // SAFETY: output (t0 + t, r0 + r) in bounds by the caller's contract.
            unsafe { *y.add((t0 + t) * ldy + r0 + r) = s };
        }
    }
}

/// Rows `r0..r0 + R` against every token, two tokens at a time.
///
/// # Safety
/// As [`float_tile`], for all `n` tokens.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn float_rows<W: Weight, const R: usize>(
    w: *const W,
    x: *const f32,
    cols: usize,
    n: usize,
    r0: usize,
    y: *mut f32,
    ldy: usize,
) {
    let mut t = 0;
    while t + 2 <= n {
        // SAFETY: tokens t, t + 1 < n; rows in bounds by the caller.
        unsafe { float_tile::<W, R, 2>(w, x, cols, r0, t, y, ldy) };
        t += 2;
    }
    if t < n {
        // SAFETY: token t < n; rows in bounds by the caller.
        unsafe { float_tile::<W, R, 1>(w, x, cols, r0, t, y, ldy) };
    }
}

/// The whole float product: 4-row tiles, then single rows.
///
/// # Safety
/// As [`super::scalar::gemm_f32`], on a CPU with NEON.
#[target_feature(enable = "neon")]
unsafe fn gemm_float<W: Weight>(
    w: &[W],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    let (w, x) = (w.as_ptr(), x.as_ptr());
    let mut r = 0;
    while r + 4 <= rows {
        // SAFETY: rows r..r + 4 < rows; the rest by the caller's contract.
        unsafe { float_rows::<W, 4>(w, x, cols, n, r, y, ldy) };
        r += 4;
    }
    while r < rows {
        // SAFETY: row r < rows; the rest by the caller's contract.
        unsafe { float_rows::<W, 1>(w, x, cols, n, r, y, ldy) };
        r += 1;
    }
}

/// NEON [`super::scalar::gemm_f32`].
///
/// # Safety
/// As the scalar kernel, and the CPU must have NEON.
pub unsafe fn gemm_f32(
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    // SAFETY: forwarded contract; NEON checked by the caller (kernel table).
    unsafe { gemm_float(w, x, rows, cols, n, y, ldy) }
}

/// NEON [`super::scalar::gemm_f16`]: f16 weights widened to f32 (`fcvtl`, base ARMv8).
///
/// # Safety
/// As the scalar kernel, and the CPU must have NEON.
pub unsafe fn gemm_f16(
    w: &[f16],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    // SAFETY: forwarded contract; NEON checked by the caller (kernel table).
    unsafe { gemm_float(w, x, rows, cols, n, y, ldy) }
}

// ---------------------------------------------------------------------------------------------
// Q8 blocks

/// One 32-value block, as two 16-byte vectors.
type Block = [int8x16_t; 2];

/// # Safety
/// `p` valid for reading 32 bytes.
#[target_feature(enable = "neon")]
#[inline]
unsafe fn load_block(p: *const i8) -> Block {
    // SAFETY: the caller guarantees 32 readable bytes.
    unsafe { [vld1q_s8(p), vld1q_s8(p.add(16))] }
}

/// The integer dot product of two blocks, as four i32 partial sums (to be added up).
trait BlockDot {
    /// # Safety
    /// The CPU has the instructions this implementation uses.
    unsafe fn dot(w: Block, x: Block) -> int32x4_t;
}

/// Base NEON: `smull`/`smlal` into i16, `sadalp` into i32.
struct Mla;

impl BlockDot for Mla {
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn dot(w: Block, x: Block) -> int32x4_t {
        // Values are in [-127, 127]: a product is at most 127 * 127 = 16129 in size and a sum
        // of two at most 32258, which fits i16.
        let lo = vmlal_s8(
            vmull_s8(vget_low_s8(w[0]), vget_low_s8(x[0])),
            vget_low_s8(w[1]),
            vget_low_s8(x[1]),
        );
        let hi = vmlal_high_s8(vmull_high_s8(w[0], x[0]), w[1], x[1]);
        vpadalq_s16(vpaddlq_s16(lo), hi)
    }
}

/// ARMv8.2 dotprod: two `sdot` per block (`vdotq_s32` is unstable, hence `asm!`; the
/// function's `dotprod` feature lets the assembler accept the instruction).
struct Sdot;

impl BlockDot for Sdot {
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn dot(w: Block, x: Block) -> int32x4_t {
        let mut acc = vdupq_n_s32(0);
        // SAFETY: sdot only reads and writes the named vector registers; the trait contract
        // guarantees a CPU with dotprod.
        unsafe {
            asm!(
                "sdot {acc:v}.4s, {w0:v}.16b, {x0:v}.16b",
                "sdot {acc:v}.4s, {w1:v}.16b, {x1:v}.16b",
                acc = inout(vreg) acc,
                w0 = in(vreg) w[0],
                x0 = in(vreg) x[0],
                w1 = in(vreg) w[1],
                x1 = in(vreg) x[1],
                options(pure, nomem, nostack, preserves_flags),
            )
        };
        acc
    }
}

/// Four f16 scales widened to f32 with `fcvtl` (base ARMv8).
#[target_feature(enable = "neon")]
#[inline]
fn widen4(h: [f16; 4]) -> float32x4_t {
    let bits = [
        h[0].to_bits(),
        h[1].to_bits(),
        h[2].to_bits(),
        h[3].to_bits(),
    ];
    // SAFETY: `bits` holds 4 u16 values.
    let v = unsafe { vld1_u16(bits.as_ptr()) };
    let out: float32x4_t;
    // SAFETY: fcvtl is a base ARMv8 SIMD instruction that only touches registers.
    unsafe {
        asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            h = in(vreg) v,
            o = lateout(vreg) out,
            options(pure, nomem, nostack, preserves_flags),
        )
    };
    out
}

/// Q8 product for rows `r0..r0 + 4 * G` and tokens `t0..t0 + T`. Per block and token, the four
/// rows of a group are reduced into one vector (lane i = row i), scaled by `wd * xd` and
/// accumulated in f32, so the result is stored with one vector store per group and token. The
/// result equals the scalar kernel's bit for bit (same per-block operations in the same order).
///
/// # Safety
/// Those rows (`nb` blocks each), tokens and outputs are in bounds.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn q8_tile<D: BlockDot, const G: usize, const T: usize>(
    wq: *const i8,
    wd: *const f16,
    xq: *const i8,
    xd: *const f32,
    nb: usize,
    r0: usize,
    t0: usize,
    y: *mut f32,
    ldy: usize,
) {
    let mut acc = [[vdupq_n_f32(0.0); T]; G];
    let zero_block = [vdupq_n_s8(0); 2];
    for b in 0..nb {
        let mut xv = [zero_block; T];
        let mut xs = [0f32; T];
        for t in 0..T {
            let i = (t0 + t) * nb + b;
            // SAFETY: token t0 + t and block b are in bounds.
            unsafe {
                xv[t] = load_block(xq.add(i * QK));
                xs[t] = *xd.add(i);
            }
        }
        for (g, acc_g) in acc.iter_mut().enumerate() {
            let rb = r0 + 4 * g;
            let mut sums = [[vdupq_n_s32(0); T]; 4];
            let mut scales = [f16::ZERO; 4];
            for (i, (s_i, sc)) in sums.iter_mut().zip(&mut scales).enumerate() {
                let j = (rb + i) * nb + b;
                // SAFETY: row rb + i and block b are in bounds.
                let wv = unsafe { load_block(wq.add(j * QK)) };
                // SAFETY: as above.
                *sc = unsafe { *wd.add(j) };
                for (s, xt) in s_i.iter_mut().zip(&xv) {
                    // SAFETY: D's instructions are available (the caller's target feature).
                    *s = unsafe { D::dot(wv, *xt) };
                }
            }
            let wdv = widen4(scales);
            for t in 0..T {
                let s = vpaddq_s32(
                    vpaddq_s32(sums[0][t], sums[1][t]),
                    vpaddq_s32(sums[2][t], sums[3][t]),
                );
                // |block sum| <= 32 * 127 * 127 < 2^24: exact in f32. Multiply then add (not
                // fused), the scalar kernel's order, so each lane's result is bit-identical
                // to it: a cancelling sum of large block terms would expose any difference.
                let scaled = vmulq_f32(vcvtq_f32_s32(s), vmulq_n_f32(wdv, xs[t]));
                acc_g[t] = vaddq_f32(acc_g[t], scaled);
            }
        }
    }
    for (g, acc_g) in acc.iter().enumerate() {
        for (t, a) in acc_g.iter().enumerate() {
            // SAFETY: outputs (t0 + t, r0 + 4g .. r0 + 4g + 4) are in bounds.
            unsafe { vst1q_f32(y.add((t0 + t) * ldy + r0 + 4 * g), *a) };
        }
    }
}

/// Q8 product of one row and one token (the row tail), as the scalar kernel computes it.
///
/// # Safety
/// Row `r` and token `t` are in bounds.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn q8_one<D: BlockDot>(
    wq: *const i8,
    wd: *const f16,
    xq: *const i8,
    xd: *const f32,
    nb: usize,
    r: usize,
    t: usize,
) -> f32 {
    let mut acc = 0f32;
    for b in 0..nb {
        let (i, j) = (t * nb + b, r * nb + b);
        // SAFETY: row r, token t and block b are in bounds; D's instructions are available.
        let (isum, scale) = unsafe {
            let s = D::dot(load_block(wq.add(j * QK)), load_block(xq.add(i * QK)));
            (vaddvq_s32(s), half_to_f32(*wd.add(j)) * *xd.add(i))
        };
        acc += isum as f32 * scale;
    }
    acc
}

/// Rows `r0..r0 + 4 * G` against every token, two tokens at a time.
///
/// # Safety
/// As [`q8_tile`], for all `n` tokens.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn q8_rows<D: BlockDot, const G: usize>(
    wq: *const i8,
    wd: *const f16,
    xq: *const i8,
    xd: *const f32,
    nb: usize,
    n: usize,
    r0: usize,
    y: *mut f32,
    ldy: usize,
) {
    let mut t = 0;
    while t + 2 <= n {
        // SAFETY: tokens t, t + 1 < n; rows in bounds by the caller.
        unsafe { q8_tile::<D, G, 2>(wq, wd, xq, xd, nb, r0, t, y, ldy) };
        t += 2;
    }
    if t < n {
        // SAFETY: token t < n; rows in bounds by the caller.
        unsafe { q8_tile::<D, G, 1>(wq, wd, xq, xd, nb, r0, t, y, ldy) };
    }
}

/// The whole Q8 product: 8-row tiles, a 4-row tile, then single rows.
///
/// # Safety
/// As [`super::scalar::gemm_q8`], on a CPU with D's instructions.
#[target_feature(enable = "neon")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_q8_with<D: BlockDot>(
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
    let (wq, wd, xq, xd) = (wq.as_ptr(), wd.as_ptr(), xq.as_ptr(), xd.as_ptr());
    let mut r = 0;
    while r + 8 <= rows {
        // SAFETY: rows r..r + 8 < rows; the rest by the caller's contract.
        unsafe { q8_rows::<D, 2>(wq, wd, xq, xd, nb, n, r, y, ldy) };
        r += 8;
    }
    if r + 4 <= rows {
        // SAFETY: rows r..r + 4 < rows; the rest by the caller's contract.
        unsafe { q8_rows::<D, 1>(wq, wd, xq, xd, nb, n, r, y, ldy) };
        r += 4;
    }
    for r in r..rows {
        for t in 0..n {
            // SAFETY: row r < rows, token t < n; outputs by the caller's contract.
            unsafe { *y.add(t * ldy + r) = q8_one::<D>(wq, wd, xq, xd, nb, r, t) };
        }
    }
}

#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_q8_neon(
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
    // SAFETY: forwarded contract; Mla needs only NEON, enabled here.
    unsafe { gemm_q8_with::<Mla>(wq, wd, xq, xd, rows, nb, n, y, ldy) }
}

#[target_feature(enable = "neon,dotprod")]
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_q8_dotprod(
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
    // SAFETY: forwarded contract; Sdot needs dotprod, enabled here.
    unsafe { gemm_q8_with::<Sdot>(wq, wd, xq, xd, rows, nb, n, y, ldy) }
}

/// NEON [`super::scalar::gemm_q8`] for ARMv8.0 (no dot-product instruction).
///
/// # Safety
/// As the scalar kernel, the CPU must have NEON, and every int8 value is in [-127, 127] (as
/// [`super::q8::quantize_weight_row`] and [`quantize_q8`] make them).
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
    // SAFETY: forwarded contract; NEON checked by the caller (kernel table).
    unsafe { gemm_q8_neon(wq, wd, xq, xd, rows, nb, n, y, ldy) }
}

/// [`gemm_q8`] with the ARMv8.2 `sdot` instruction.
///
/// # Safety
/// As the scalar kernel, and the CPU must have NEON and dotprod.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_q8_sdot(
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
    // SAFETY: forwarded contract; dotprod checked by the caller (kernel table).
    unsafe { gemm_q8_dotprod(wq, wd, xq, xd, rows, nb, n, y, ldy) }
}

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
