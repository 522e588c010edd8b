//! AVX2/FMA/F16C twins of the scalar kernels in [`super::scalar`] (same signatures, same shape
//! convention; see there).
//!
//! Each public `unsafe fn` is a thin entry point into a `#[target_feature]` implementation.
//! The products work on register tiles of `TILE_ROWS` (4) weight rows by a few tokens: one load
//! of an activation vector serves several rows (the matrix-vector product of a decode step is
//! bound by reading the weights once, so the loop must stay ahead of memory) and, with several
//! tokens, one load of a weight vector serves several tokens. Column tails (not a multiple of
//! 8) are finished in scalar code; row and token tails run the same tile with one row or one
//! token.
//!
//! Q8 dot products per 32-value block use the AVX2 idiom for signed x signed bytes:
//! `maddubs(|x|, sign(w, x))` multiplies `|x|` (unsigned) by `w` carrying the sign of `x`, so
//! each product is `w * x`; pairs are summed into i16 (at most 2 * 128 * 127 < 2^15, so no
//! saturation for values in `[-128, 127]` x `[-127, 127]`) and `madd` with ones sums them into
//! eight i32 lanes. Each block is reduced to its exact integer sum and scaled by `wd * xd`
//! exactly as in the scalar kernel, and block terms are added in the same order, so the Q8
//! product equals the scalar one bit for bit (see `q8_tile`); so does the quantizer. The f32
//! and f16 products differ from scalar only by summation order.

use super::q8::QK;
use half::f16;
use std::arch::x86_64::*;

/// Weight rows per register tile.
const TILE_ROWS: usize = 4;
/// How far ahead (bytes) of each weight row the products prefetch. A matrix-vector product
/// reads 4 rows at once; the hardware prefetchers alone leave a good part of the DRAM
/// bandwidth unused on such short interleaved streams (rows are 1-16 KiB), and the Q8 loop
/// does enough work per byte that the out-of-order window cannot cover the memory latency by
/// itself. Near the end of a row the prefetch moves on to the same row of the next tile, which
/// is where that stream continues.
const PREFETCH: usize = 2048;
/// Tokens per register tile of the f32/f16 products (4 x 3 accumulators + 3 activations fit
/// the 16 ymm registers for f32; f16 needs one more for the conversion and spills one).
const TILE_TOKENS_FLOAT: usize = 3;
/// Tokens per register tile of the Q8 product (it needs more temporaries per product).
const TILE_TOKENS_Q8: usize = 2;

/// # Safety
/// The CPU supports AVX2, FMA and F16C; otherwise as [`super::scalar::gemm_f32`].
pub unsafe fn gemm_f32(
    w: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    // SAFETY: the caller guarantees the CPU features and the lengths.
    unsafe { gemm_float(w, x, rows, cols, n, y, ldy) }
}

/// # Safety
/// The CPU supports AVX2, FMA and F16C; otherwise as [`super::scalar::gemm_f16`].
pub unsafe fn gemm_f16(
    w: &[f16],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    // SAFETY: the caller guarantees the CPU features and the lengths.
    unsafe { gemm_float(w, x, rows, cols, n, y, ldy) }
}

/// # Safety
/// The CPU supports AVX2, FMA and F16C; otherwise as [`super::scalar::gemm_q8`].
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
    // SAFETY: the caller guarantees the CPU features and the lengths.
    unsafe { gemm_q8_avx2(wq, wd, xq, xd, rows, nb, n, y, ldy) }
}

/// # Safety
/// The CPU supports AVX2, FMA and F16C; otherwise as [`super::scalar::quantize_q8`].
pub unsafe fn quantize_q8(x: &[f32], xq: &mut [i8], xd: &mut [f32]) {
    // SAFETY: the caller guarantees the CPU features and the lengths.
    unsafe { quantize_q8_avx2(x, xq, xd) }
}

/// A weight element type of the float products.
trait Weight: Copy {
    /// Eight consecutive weights from `p`, widened to f32.
    ///
    /// # Safety
    /// AVX2/FMA/F16C available; `p` valid for reading eight values.
    unsafe fn load8(p: *const Self) -> __m256;
    fn widen(self) -> f32;
}

impl Weight for f32 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees eight readable values.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline]
    fn widen(self) -> f32 {
        self
    }
}

impl Weight for f16 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees eight readable values (16 bytes).
        _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p.cast()) })
    }
    #[inline]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// The shared driver of [`gemm_f32`] and [`gemm_f16`].
///
/// # Safety
/// As [`gemm_f32`].
#[target_feature(enable = "avx2,fma,f16c")]
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
    let full = rows / TILE_ROWS * TILE_ROWS;
    let mut r = 0;
    while r < full {
        // SAFETY: rows r..r + TILE_ROWS exist; outputs in bounds by the caller's contract.
        unsafe { float_rows::<W, TILE_ROWS>(w.add(r * cols), x, cols, n, y.add(r), ldy) };
        r += TILE_ROWS;
    }
    while r < rows {
        // SAFETY: as above for one row.
        unsafe { float_rows::<W, 1>(w.add(r * cols), x, cols, n, y.add(r), ldy) };
        r += 1;
    }
}

/// `R` weight rows (at `w`, stride `cols`) against all `n` tokens.
///
/// # Safety
/// `w` holds `R` rows, `x` holds `n` tokens, `y` is writable at `t * ldy + r`, `r < R`, `t < n`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_rows<W: Weight, const R: usize>(
    w: *const W,
    x: *const f32,
    cols: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    let full = n / TILE_TOKENS_FLOAT * TILE_TOKENS_FLOAT;
    let mut t = 0;
    while t < full {
        // SAFETY: tokens t..t + TILE_TOKENS_FLOAT exist; the rest from the caller.
        unsafe {
            float_tile::<W, R, TILE_TOKENS_FLOAT, 1>(w, x.add(t * cols), cols, y.add(t * ldy), ldy)
        };
        t += TILE_TOKENS_FLOAT;
    }
    while t < n {
        // SAFETY: as above for one token (two accumulators per row to hide the FMA latency).
        unsafe { float_tile::<W, R, 1, 2>(w, x.add(t * cols), cols, y.add(t * ldy), ldy) };
        t += 1;
    }
}

/// One `R` x `T` register tile of dot products over `cols` columns, with `U` accumulators per
/// product (independent FMA chains).
///
/// # Safety
/// `w` holds `R` rows and `x` holds `T` tokens of `cols` values; `y` is writable at
/// `t * ldy + r`, `r < R`, `t < T`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::needless_range_loop)]
unsafe fn float_tile<W: Weight, const R: usize, const T: usize, const U: usize>(
    w: *const W,
    x: *const f32,
    cols: usize,
    y: *mut f32,
    ldy: usize,
) {
    let mut acc = [[[_mm256_setzero_ps(); U]; T]; R];
    let mut c = 0;
    while c + 8 * U <= cols {
        // Only the one-token product streams weights from memory; a multi-token tile reads
        // weights its caller keeps cache-sized, and prefetches would only take load slots.
        // A prefetch is a hint that does not fault, so running past the matrix is harmless.
        if T == 1 {
            let dist = PREFETCH / size_of::<W>();
            let ahead = if c + dist < cols {
                dist
            } else {
                dist + (R - 1) * cols
            };
            for r in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(r * cols + c + ahead).cast::<i8>());
            }
        }
        for u in 0..U {
            let cu = c + 8 * u;
            let mut xv = [_mm256_setzero_ps(); T];
            for t in 0..T {
                // SAFETY: cu + 8 <= cols within token t.
                xv[t] = unsafe { _mm256_loadu_ps(x.add(t * cols + cu)) };
            }
            for r in 0..R {
                // SAFETY: cu + 8 <= cols within row r.
                let wv = unsafe { W::load8(w.add(r * cols + cu)) };
                for t in 0..T {
                    acc[r][t][u] = _mm256_fmadd_ps(wv, xv[t], acc[r][t][u]);
                }
            }
        }
        c += 8 * U;
    }
    while c + 8 <= cols {
        let mut xv = [_mm256_setzero_ps(); T];
        for t in 0..T {
            // SAFETY: c + 8 <= cols within token t.
            xv[t] = unsafe { _mm256_loadu_ps(x.add(t * cols + c)) };
        }
        for r in 0..R {
            // SAFETY: c + 8 <= cols within row r.
            let wv = unsafe { W::load8(w.add(r * cols + c)) };
            for t in 0..T {
                acc[r][t][0] = _mm256_fmadd_ps(wv, xv[t], acc[r][t][0]);
            }
        }
        c += 8;
    }
    let main = c;
    for r in 0..R {
        for t in 0..T {
            let mut v = acc[r][t][0];
            for u in 1..U {
                v = _mm256_add_ps(v, acc[r][t][u]);
            }
            let mut s = hsum(v);
            for c in main..cols {
                // SAFETY: c < cols within row r and token t.
                s += unsafe { (*w.add(r * cols + c)).widen() * *x.add(t * cols + c) };
            }
            // SAFETY: output in bounds by the caller's contract.
            unsafe { *y.add(t * ldy + r) = s };
        }
    }
}

/// # Safety
/// As [`gemm_q8`].
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_q8_avx2(
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
    let full = rows / TILE_ROWS * TILE_ROWS;
    let mut r = 0;
    while r < full {
        // SAFETY: rows r..r + TILE_ROWS exist; outputs in bounds by the caller's contract.
        unsafe {
            q8_rows::<TILE_ROWS>(
                wq.add(r * nb * QK),
                wd.add(r * nb),
                xq,
                xd,
                nb,
                n,
                y.add(r),
                ldy,
            )
        };
        r += TILE_ROWS;
    }
    while r < rows {
        // SAFETY: as above for one row.
        unsafe {
            q8_rows::<1>(
                wq.add(r * nb * QK),
                wd.add(r * nb),
                xq,
                xd,
                nb,
                n,
                y.add(r),
                ldy,
            )
        };
        r += 1;
    }
}

/// `R` Q8 weight rows against all `n` tokens.
///
/// # Safety
/// `wq`/`wd` hold `R` rows of `nb` blocks, `xq`/`xd` hold `n` tokens of `nb` blocks, `y` is
/// writable at `t * ldy + r`, `r < R`, `t < n`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_rows<const R: usize>(
    wq: *const i8,
    wd: *const f16,
    xq: *const i8,
    xd: *const f32,
    nb: usize,
    n: usize,
    y: *mut f32,
    ldy: usize,
) {
    let full = n / TILE_TOKENS_Q8 * TILE_TOKENS_Q8;
    let mut t = 0;
    while t < full {
        // SAFETY: tokens t..t + TILE_TOKENS_Q8 exist; the rest from the caller.
        unsafe {
            q8_tile::<R, TILE_TOKENS_Q8>(
                wq,
                wd,
                xq.add(t * nb * QK),
                xd.add(t * nb),
                nb,
                y.add(t * ldy),
                ldy,
            )
        };
        t += TILE_TOKENS_Q8;
    }
    while t < n {
        // SAFETY: as above for one token.
        unsafe {
            q8_tile::<R, 1>(
                wq,
                wd,
                xq.add(t * nb * QK),
                xd.add(t * nb),
                nb,
                y.add(t * ldy),
                ldy,
            )
        };
        t += 1;
    }
}

/// One f16 scale as f32 (F16C, no runtime detection in the loop).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_to_f32(h: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

/// Blocks a Q8 tile reduces and scales at once: eight integer block sums fill one vector.
const GROUP: usize = 8;

/// One `R` x `T` register tile of Q8 block dot products over `nb` blocks.
///
/// The result is bit for bit the scalar kernel's: every block's dot product is reduced to its
/// exact integer sum, scaled by `wd * xd` with the same roundings, and the block terms are
/// added to the running sum in block order. (Summing in another order is not harmless here:
/// block terms of thousands can cancel to a result near 1.) For a group of [`GROUP`] blocks,
/// horizontal adds fold the eight lanes of each block's products into one vector of eight
/// block sums, which is converted and scaled at once; only the final in-order additions are
/// scalar. The blocks past the last whole group are reduced one by one.
///
/// # Safety
/// As [`q8_rows`] with `T` tokens.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_tile<const R: usize, const T: usize>(
    wq: *const i8,
    wd: *const f16,
    xq: *const i8,
    xd: *const f32,
    nb: usize,
    y: *mut f32,
    ldy: usize,
) {
    // Running sums, added to in block order exactly as the scalar kernel does.
    let mut acc = [[0f32; T]; R];
    let mut g = 0;
    while g + GROUP <= nb {
        // quad[h][r][t]: lanes 0..4 hold the sums of lanes 0..4 of blocks g + 4h .. g + 4h + 4,
        // lanes 4..8 the sums of their lanes 4..8.
        // Prefetches do not fault, so running past the matrix is harmless. A group's 256
        // bytes are four cache lines; its 16 bytes of scales a quarter of one (the other three
        // prefetches of a scale line hit a line already on its way).
        let dist = PREFETCH / QK;
        let ahead = if g + dist < nb {
            dist
        } else {
            dist + (R - 1) * nb
        };
        for r in 0..R {
            let next = wq.wrapping_add((r * nb + g + ahead) * QK);
            for l in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(64 * l));
            }
            _mm_prefetch::<_MM_HINT_T0>(wd.wrapping_add(r * nb + g + ahead).cast::<i8>());
        }
        let mut quad = [[[_mm256_setzero_si256(); T]; R]; 2];
        for (h, qh) in quad.iter_mut().enumerate() {
            for pair in 0..2 {
                let b = g + 4 * h + 2 * pair;
                // SAFETY: blocks b and b + 1 < g + GROUP <= nb exist.
                let (p0, p1) = unsafe {
                    (
                        q8_block::<R, T>(wq, xq, nb, b),
                        q8_block::<R, T>(wq, xq, nb, b + 1),
                    )
                };
                for r in 0..R {
                    for t in 0..T {
                        let s = _mm256_hadd_epi32(p0[r][t], p1[r][t]);
                        qh[r][t] = if pair == 0 {
                            s
                        } else {
                            _mm256_hadd_epi32(qh[r][t], s)
                        };
                    }
                }
            }
        }
        for r in 0..R {
            // SAFETY: blocks g..g + GROUP of row r exist (eight f16 scales).
            let ws = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(wd.add(r * nb + g).cast()) });
            for t in 0..T {
                let (lo, hi) = (quad[0][r][t], quad[1][r][t]);
                let sums = _mm256_add_epi32(
                    _mm256_permute2x128_si256::<0x20>(lo, hi),
                    _mm256_permute2x128_si256::<0x31>(lo, hi),
                );
                // SAFETY: blocks g..g + GROUP of token t exist.
                let xs = unsafe { _mm256_loadu_ps(xd.add(t * nb + g)) };
                // Each term rounds like the scalar `isum as f32 * (wd * xd)` (no FMA).
                let terms = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(ws, xs));
                let mut lanes = [0f32; GROUP];
                // SAFETY: lanes holds GROUP = 8 values.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), terms) };
                for v in lanes {
                    acc[r][t] += v;
                }
            }
        }
        g += GROUP;
    }
    for b in g..nb {
        // SAFETY: block b < nb exists.
        let p = unsafe { q8_block::<R, T>(wq, xq, nb, b) };
        for r in 0..R {
            for t in 0..T {
                // SAFETY: block b of row r and token t exists.
                let scale = unsafe { f16_to_f32(*wd.add(r * nb + b)) * *xd.add(t * nb + b) };
                acc[r][t] += hsum_epi32(p[r][t]) as f32 * scale;
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            // SAFETY: output in bounds by the caller's contract.
            unsafe { *y.add(t * ldy + r) = acc[r][t] };
        }
    }
}

/// The products of block `b` of the tile's `R` rows and `T` tokens, as eight i32 lanes each
/// (lane `i` holds the sum of the four products `4i..4i + 4`).
///
/// # Safety
/// Block `b` exists in all `R` rows (at `wq`, `nb` blocks each) and `T` tokens (at `xq`).
#[allow(clippy::needless_range_loop)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_block<const R: usize, const T: usize>(
    wq: *const i8,
    xq: *const i8,
    nb: usize,
    b: usize,
) -> [[__m256i; T]; R] {
    let ones = _mm256_set1_epi16(1);
    let mut xv = [_mm256_setzero_si256(); T];
    let mut xa = [_mm256_setzero_si256(); T];
    for t in 0..T {
        // SAFETY: block b of token t exists (32 bytes).
        xv[t] = unsafe { _mm256_loadu_si256(xq.add((t * nb + b) * QK).cast()) };
        xa[t] = _mm256_sign_epi8(xv[t], xv[t]);
    }
    let mut out = [[_mm256_setzero_si256(); T]; R];
    for r in 0..R {
        // SAFETY: block b of row r exists (32 bytes).
        let wv = unsafe { _mm256_loadu_si256(wq.add((r * nb + b) * QK).cast()) };
        for t in 0..T {
            let p16 = _mm256_maddubs_epi16(xa[t], _mm256_sign_epi8(wv, xv[t]));
            out[r][t] = _mm256_madd_epi16(p16, ones);
        }
    }
    out
}

/// Sum of the eight i32 lanes (exact: block sums are far below `i32::MAX`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s)))
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
    //! What the proptest in `tests/kernels_simd.rs` does not reach: special float values in
    //! the quantizer, and long rows (many whole Q8 groups, prefetches running into the next
    //! tile and past the matrix) at and around the tile sizes. Q8 is checked bit for bit.
    use super::super::q8::{blocks, quantize_matrix};
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

    /// Float products agree up to summation order: within a few ulps of the sum of the
    /// products' magnitudes (the results can be far smaller than that when terms cancel).
    /// Untouched padding columns (NaN) must stay NaN.
    #[allow(clippy::too_many_arguments)]
    fn close(got: &[f32], want: &[f32], w: &[f32], x: &[f32], cols: usize, ldy: usize, what: &str) {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            let (t, r) = (i / ldy, i % ldy);
            if b.is_nan() {
                assert!(a.is_nan(), "{what}[{i}]: padding written");
                continue;
            }
            let mag: f32 = (0..cols)
                .map(|c| (w[r * cols + c] * x[t * cols + c]).abs())
                .sum();
            assert!(
                (a - b).abs() <= 1e-5 * mag + 1e-6,
                "{what}[{i}]: {a} vs {b} (cols {cols})"
            );
        }
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

    #[test]
    fn long_rows_at_tile_boundaries_match_scalar() {
        let Some((avx2, scalar)) = sets() else {
            return;
        };
        // cols: whole groups of 8 blocks, a block tail, a column tail; rows and tokens below,
        // at and above the tile sizes.
        for &cols in &[2048usize, 2048 + 32 * 3 + 5, 100] {
            for &rows in &[3usize, 4, 8, 9] {
                for n in 1..=5 {
                    let w = values(rows * cols, (rows * 131 + cols) as u64);
                    let x = values(n * cols, n as u64 + 77);
                    let ldy = rows + 1;
                    let mut got = vec![f32::NAN; n * ldy];
                    let mut want = got.clone();

                    avx2.gemm_f32(&w, &x, rows, cols, n, &mut got, ldy);
                    scalar.gemm_f32(&w, &x, rows, cols, n, &mut want, ldy);
                    close(&got, &want, &w, &x, cols, ldy, "f32");

                    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                    avx2.gemm_f16(&wh, &x, rows, cols, n, &mut got, ldy);
                    scalar.gemm_f16(&wh, &x, rows, cols, n, &mut want, ldy);
                    close(&got, &want, &w, &x, cols, ldy, "f16");

                    let nb = blocks(cols);
                    let (q, d) = quantize_matrix(&w, rows, cols);
                    let (mut xq, mut xd) = (vec![0i8; n * nb * QK], vec![0f32; n * nb]);
                    for t in 0..n {
                        scalar.quantize_q8(
                            &x[t * cols..(t + 1) * cols],
                            &mut xq[t * nb * QK..(t + 1) * nb * QK],
                            &mut xd[t * nb..(t + 1) * nb],
                        );
                    }
                    avx2.gemm_q8(&q, &d, &xq, &xd, rows, nb, n, &mut got, ldy);
                    scalar.gemm_q8(&q, &d, &xq, &xd, rows, nb, n, &mut want, ldy);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "q8 {rows}x{cols} n={n}");
                }
            }
        }
    }
}
