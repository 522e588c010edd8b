//! x86_64 microkernels: AVX2/FMA/F16C (set `avx2`), AVX-512VL + VNNI (set `avx512-vnni`, the
//! same float tiles with 32 ymm registers, and `vpdpbusd` for Q8 and Q4) and AVX-VNNI (set
//! `avx-vnni`: the AVX2 float tiles, and the VNNI integer tiles one panel high with the VEX
//! form of `vpdpbusd`).
//!
//! Every tile is an outer product: a 32-byte load is 8 weight rows (one panel) at one column
//! (F32P/F16P: 8 values; Q8P: 8 rows x 4 bytes) and is multiplied by a broadcast of one
//! token's activation(s), so lanes are output rows and there is no horizontal sum. A tile of
//! `P` panels by `N` tokens keeps `P * N` accumulators in registers over the whole `k` loop;
//! each weight load serves `N` tokens and each broadcast `P` panels.
//!
//! Q8: per 4-byte column group, `maddubs(|x|, sign(w, x))` then `madd` with ones (AVX2: every
//! product exact, pairs at most 2 * 127 * 127 < 2^15), or `vpdpbusd` of `x + 128` (as u8, by an
//! xor with 0x80) with `w`, minus `vpdpbusd` of 128 with `w` computed once per panel (VNNI:
//! exact i32). Then per block `acc += isum * (wd * xd)` with separate multiply and add, as the
//! scalar reference: bit for bit the same result.
//!
//! Q4: a 32-byte load of a Q4P block holds two Q8P-shaped groups (low and high nibbles); masked
//! and shifted they are codes 0..15. AVX2 subtracts 8 and goes on as Q8. VNNI multiplies the
//! codes as the unsigned operand of `vpdpbusd` with the activations as the signed one, and
//! subtracts `8 * sum(x)` per token (one more `vpdpbusd` of 8s per group and token): exact.

use super::{GemmKernel, Tile};
use crate::kernels::dispatch::KernelSet;
use crate::kernels::packed::{PANEL, PackedFormat, Q4P_BLOCK, Q8P_BLOCK};
use crate::kernels::q8::{QK, blocks};
use half::f16;
use std::arch::x86_64::*;

/// How far ahead (bytes) of each panel stream the tiles prefetch. A decode step streams each
/// weight byte once; the hardware prefetchers alone leave part of the DRAM bandwidth unused on
/// streams this short (a panel is 17-64 KiB), so the loops ask for the data 2 KiB ahead, which
/// runs on into the next panels where the stream continues.
const PREFETCH: usize = 2048;

/// Prefetches the cache line `PREFETCH` bytes after `p` (a hint: never faults).
#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: a prefetch is a hint that reads nothing architecturally and never faults, so
    // any address is fine (SSE is part of x86_64).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(PREFETCH).cast()) };
}

macro_rules! tiles {
    ($f:ident, $($n:literal),+) => {
        &[$($f::<$n>),+]
    };
    ($f:ident < $w:ty >, $($n:literal),+) => {
        &[$($f::<$w, $n>),+]
    };
}

pub const F32P_AVX2: GemmKernel = GemmKernel {
    name: "avx2 f32p 16x6",
    set: KernelSet::Avx2,
    format: PackedFormat::F32P,
    mr: 2 * PANEL,
    nr: 6,
    tiles: tiles!(float_avx2<f32>, 1, 2, 3, 4, 5, 6),
};

pub const F16P_AVX2: GemmKernel = GemmKernel {
    name: "avx2 f16p 16x6",
    set: KernelSet::Avx2,
    format: PackedFormat::F16P,
    mr: 2 * PANEL,
    nr: 6,
    tiles: tiles!(float_avx2<f16>, 1, 2, 3, 4, 5, 6),
};

pub const Q8P_AVX2: GemmKernel = GemmKernel {
    name: "avx2 q8p 8x4",
    set: KernelSet::Avx2,
    format: PackedFormat::Q8P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(q8_avx2, 1, 2, 3, 4),
};

pub const F32P_VNNI: GemmKernel = GemmKernel {
    name: "avx512 f32p 32x12 (zmm)",
    set: KernelSet::Avx512Vnni,
    format: PackedFormat::F32P,
    mr: 4 * PANEL,
    nr: 12,
    tiles: tiles!(float_avx512<f32>, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12),
};

pub const F16P_VNNI: GemmKernel = GemmKernel {
    name: "avx512 f16p 32x12 (zmm)",
    set: KernelSet::Avx512Vnni,
    format: PackedFormat::F16P,
    mr: 4 * PANEL,
    nr: 12,
    tiles: tiles!(float_avx512<f16>, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12),
};

pub const Q8P_VNNI: GemmKernel = GemmKernel {
    name: "avx512-vnni q8p 16x4",
    set: KernelSet::Avx512Vnni,
    format: PackedFormat::Q8P,
    mr: 2 * PANEL,
    nr: 4,
    tiles: tiles!(q8_vnni, 1, 2, 3, 4),
};

pub const Q4P_AVX2: GemmKernel = GemmKernel {
    name: "avx2 q4p 8x4",
    set: KernelSet::Avx2,
    format: PackedFormat::Q4P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(q4_avx2, 1, 2, 3, 4),
};

pub const Q4P_VNNI: GemmKernel = GemmKernel {
    name: "avx512-vnni q4p 16x4",
    set: KernelSet::Avx512Vnni,
    format: PackedFormat::Q4P,
    mr: 2 * PANEL,
    nr: 4,
    tiles: tiles!(q4_vnni, 1, 2, 3, 4),
};

pub const Q8P_AVXVNNI: GemmKernel = GemmKernel {
    name: "avx-vnni q8p 8x4",
    set: KernelSet::AvxVnni,
    format: PackedFormat::Q8P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(q8_avxvnni, 1, 2, 3, 4),
};

pub const Q4P_AVXVNNI: GemmKernel = GemmKernel {
    name: "avx-vnni q4p 8x4",
    set: KernelSet::AvxVnni,
    format: PackedFormat::Q4P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(q4_avxvnni, 1, 2, 3, 4),
};

/// A float weight element: eight consecutive values widened to f32.
trait Load8: Copy {
    /// # Safety
    /// AVX2/F16C available; `p` valid for reading eight values.
    unsafe fn load8(p: *const Self) -> __m256;
    /// Eight values from `p` (lanes 0-7) and eight from `q` (lanes 8-15), widened.
    ///
    /// # Safety
    /// AVX-512F available; `p` and `q` valid for reading eight values each.
    unsafe fn load16(p: *const Self, q: *const Self) -> __m512;
}

impl Load8 for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32, q: *const f32) -> __m512 {
        // SAFETY: the caller guarantees eight readable values at p and at q, and AVX-512F.
        unsafe {
            _mm512_insertf32x8::<1>(
                _mm512_castps256_ps512(_mm256_loadu_ps(p)),
                _mm256_loadu_ps(q),
            )
        }
    }

    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees eight readable values and AVX.
        unsafe { _mm256_loadu_ps(p) }
    }
}

impl Load8 for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16, q: *const f16) -> __m512 {
        // SAFETY: the caller guarantees eight readable values (16 bytes) at p and at q, and
        // AVX-512F (vcvtph2ps zmm).
        unsafe {
            let lo = _mm_loadu_si128(p.cast());
            let hi = _mm_loadu_si128(q.cast());
            _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi))
        }
    }

    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: the caller guarantees eight readable values (16 bytes) and F16C.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// Stores the accumulators of panel `p` (rows `8p..8p+8` of the tile) for `N` tokens, only
/// the tile's valid rows.
///
/// # Safety
/// AVX available; the outputs of rows `8p..min(8p+8, rows)` of `N` tokens are writable.
#[inline(always)]
unsafe fn store<const N: usize>(t: &Tile, p: usize, acc: &[__m256; N]) {
    // SAFETY: inlined into #[target_feature] callers with AVX; the outputs of rows 8p..8p+valid of N tokens are the tile's (TileFn contract).
    unsafe {
        let valid = t.rows.saturating_sub(p * PANEL).min(PANEL);
        for (j, a) in acc.iter().enumerate() {
            let y = t.y.add(j * t.ldy + p * PANEL);
            if valid == PANEL {
                _mm256_storeu_ps(y, *a);
            } else {
                let mut tmp = [0f32; PANEL];
                _mm256_storeu_ps(tmp.as_mut_ptr(), *a);
                for (i, v) in tmp.iter().take(valid).enumerate() {
                    *y.add(i) = *v;
                }
            }
        }
    }
}

/// The float tile body: `P` panels x `N` tokens, each accumulated in `U` independent chains
/// over the columns (summed at the end): with one or two tokens a single chain would wait on
/// the FMA latency at every column instead of streaming the weights.
///
/// # Safety
/// As [`super::TileFn`]; AVX2/FMA/F16C available.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles: acc[p][j][u] over several index ranges
unsafe fn float_body<W: Load8, const P: usize, const N: usize, const U: usize>(t: &Tile) {
    // SAFETY: inlined into #[target_feature(avx2,fma,f16c)] callers; every weight, activation
    // and output access is inside the tile (TileFn contract: P panels of cols x 8 values, N
    // tokens of ldx >= cols).
    unsafe {
        let w = t.w.cast::<W>();
        let x = t.x.cast::<f32>();
        let mut acc = [[[_mm256_setzero_ps(); U]; N]; P];
        // one column into chain `u` (a constant in both loops below, so the accumulators stay
        // in registers; a macro, not a closure taking `&mut acc`, which would put them in
        // memory)
        macro_rules! step {
            ($k:expr, $u:expr) => {{
                let (k, u) = ($k, $u);
                let mut wv = [_mm256_setzero_ps(); P];
                for (p, v) in wv.iter_mut().enumerate() {
                    *v = W::load8(w.add(p * t.panel_len + k * PANEL));
                }
                for j in 0..N {
                    let xb = _mm256_set1_ps(*x.add(j * t.ldx + k));
                    for p in 0..P {
                        acc[p][j][u] = _mm256_fmadd_ps(wv[p], xb, acc[p][j][u]);
                    }
                }
            }};
        }
        let whole = t.cols / U * U;
        for k in (0..whole).step_by(U) {
            // one cache line per panel every 64 bytes of weights
            if (k * PANEL * std::mem::size_of::<W>()).is_multiple_of(64) {
                for p in 0..P {
                    prefetch(w.add(p * t.panel_len + k * PANEL).cast());
                }
            }
            for u in 0..U {
                step!(k + u, u);
            }
        }
        for k in whole..t.cols {
            step!(k, 0);
        }
        // (indexing, not iterators over `&acc`: a borrowed accumulator array lives in memory)
        for p in 0..P {
            let mut sums = [_mm256_setzero_ps(); N];
            for j in 0..N {
                sums[j] = acc[p][j][0];
                for u in 1..U {
                    sums[j] = _mm256_add_ps(sums[j], acc[p][j][u]);
                }
            }
            store::<N>(t, p, &sums);
        }
    }
}

/// Dispatches a float tile to its body: one or two panels, and as many accumulator chains as
/// the token count leaves registers for.
macro_rules! float_dispatch {
    ($t:expr, $w:ty, $n:expr) => {
        match ($t.rows > PANEL, $n) {
            (true, 1) => float_body::<$w, 2, $n, 4>($t),
            (true, 2) => float_body::<$w, 2, $n, 2>($t),
            (true, _) => float_body::<$w, 2, $n, 1>($t),
            (false, 1) => float_body::<$w, 1, $n, 4>($t),
            (false, 2) => float_body::<$w, 1, $n, 2>($t),
            (false, _) => float_body::<$w, 1, $n, 1>($t),
        }
    };
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn float_avx2<W: Load8, const N: usize>(t: &Tile) {
    // SAFETY: features enabled; bounds by the caller (a second panel only if rows > 8).
    unsafe { float_dispatch!(t, W, N) }
}

/// The zmm float tile: `2 * PAIRS` panels (up to 32 rows) x `N` tokens. A zmm register holds
/// two panels' 8 rows at one column (two 32-byte loads), so each FMA does 16 rows; a pair whose
/// upper panel lies past the matrix reads its lower panel twice and stores only the valid
/// rows. `U` independent chains over the columns as in [`float_body`].
///
/// # Safety
/// As [`super::TileFn`]; AVX-512F/VL available.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles: acc[p][j][u] over several index ranges
unsafe fn float_zmm_body<W: Load8, const PAIRS: usize, const N: usize, const U: usize>(t: &Tile) {
    // SAFETY: inlined into #[target_feature(avx512f,..)] callers; every weight read is inside
    // one of the tile's panels (a missing upper panel is replaced by the last one), every
    // activation read inside token j's row, and stores cover only valid rows.
    unsafe {
        let w = t.w.cast::<W>();
        let x = t.x.cast::<f32>();
        let panels = t.rows.div_ceil(PANEL);
        let mut base = [[w; 2]; PAIRS];
        for q in 0..PAIRS {
            for h in 0..2 {
                base[q][h] = w.add((2 * q + h).min(panels - 1) * t.panel_len);
            }
        }
        let mut acc = [[[_mm512_setzero_ps(); U]; N]; PAIRS];
        // one column into chain `u` (see float_body: a macro keeps acc in registers)
        macro_rules! step {
            ($k:expr, $u:expr) => {{
                let (k, u) = ($k, $u);
                let col = k * PANEL;
                let mut wv = [_mm512_setzero_ps(); PAIRS];
                for q in 0..PAIRS {
                    wv[q] = W::load16(base[q][0].add(col), base[q][1].add(col));
                }
                for j in 0..N {
                    let xb = _mm512_set1_ps(*x.add(j * t.ldx + k));
                    for q in 0..PAIRS {
                        acc[q][j][u] = _mm512_fmadd_ps(wv[q], xb, acc[q][j][u]);
                    }
                }
            }};
        }
        let whole = t.cols / U * U;
        for k in (0..whole).step_by(U) {
            if (k * PANEL * std::mem::size_of::<W>()).is_multiple_of(64) {
                for q in 0..PAIRS {
                    prefetch(base[q][0].add(k * PANEL).cast());
                    prefetch(base[q][1].add(k * PANEL).cast());
                }
            }
            for u in 0..U {
                step!(k + u, u);
            }
        }
        for k in whole..t.cols {
            step!(k, 0);
        }
        // (indexing, not iterators over `&acc`: a borrowed accumulator array lives in memory)
        for q in 0..PAIRS {
            let mut lo = [_mm256_setzero_ps(); N];
            let mut hi = [_mm256_setzero_ps(); N];
            for j in 0..N {
                let mut sum = acc[q][j][0];
                for u in 1..U {
                    sum = _mm512_add_ps(sum, acc[q][j][u]);
                }
                lo[j] = _mm512_castps512_ps256(sum);
                hi[j] = _mm512_extractf32x8_ps::<1>(sum);
            }
            store::<N>(t, 2 * q, &lo);
            if 2 * q + 1 < panels {
                store::<N>(t, 2 * q + 1, &hi);
            }
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512dq")]
unsafe fn float_avx512<W: Load8, const N: usize>(t: &Tile) {
    // SAFETY: features enabled; one or two panel pairs by the tile's rows (a missing upper
    // panel is handled by the body), bounds by the caller. 32 zmm registers hold 2 x 12
    // accumulators.
    unsafe {
        match (t.rows > 2 * PANEL, N) {
            (true, 1) => float_zmm_body::<W, 2, N, 4>(t),
            (true, 2) => float_zmm_body::<W, 2, N, 2>(t),
            (true, _) => float_zmm_body::<W, 2, N, 1>(t),
            (false, 1) => float_zmm_body::<W, 1, N, 4>(t),
            (false, 2) => float_zmm_body::<W, 1, N, 2>(t),
            (false, _) => float_zmm_body::<W, 1, N, 1>(t),
        }
    }
}

/// Four activation bytes of token `j`, block `b`, column group `g`, broadcast to every lane.
///
/// # Safety
/// The tile's activations hold the block.
#[inline(always)]
unsafe fn x4(t: &Tile, j: usize, b: usize, g: usize) -> __m256i {
    // SAFETY: inlined into AVX2 callers; token j's block b lies inside the tile's activations (TileFn contract); an unaligned read.
    unsafe {
        let v = std::ptr::read_unaligned(t.x.add(j * t.ldx + b * QK + 4 * g).cast::<i32>());
        _mm256_set1_epi32(v)
    }
}

/// `acc += isum * (wd * xd)` for one panel's block of `N` tokens, and the store when done.
///
/// # Safety
/// AVX2/F16C; the block's scales are readable.
#[inline(always)]
unsafe fn q8_scale<const N: usize>(
    t: &Tile,
    blk: *const u8,
    b: usize,
    isum: &[__m256i; N],
    acc: &mut [__m256; N],
) {
    // SAFETY: inlined into AVX2/F16C callers; the block starts with the panel's eight f16 scales and token j's scales hold block b (TileFn contract).
    unsafe {
        let wd = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
        for j in 0..N {
            let xd = _mm256_set1_ps(*t.xd.add(j * t.ldd + b));
            let s = _mm256_mul_ps(wd, xd);
            acc[j] = _mm256_add_ps(acc[j], _mm256_mul_ps(_mm256_cvtepi32_ps(isum[j]), s));
        }
    }
}

/// One 4-column group `g` of block `b` for every token: the 8 rows' int8 weights `w` (row-major
/// groups of 4) times token j's 4 activations of the group, added into chain `chain` of
/// `isum[j]` (`vpmaddubsw` on |x| and sign(x)*w, then pairs summed by `vpmaddwd`; exact: with
/// weights and activations in -127..=127, as the formats write them, a pair sum stays within
/// int16).
///
/// # Safety
/// As [`super::TileFn`] for block `b`, group `g`; AVX2 available.
#[inline(always)]
unsafe fn avx2_group<const N: usize, const C: usize>(
    t: &Tile,
    b: usize,
    g: usize,
    chain: usize,
    w: __m256i,
    isum: &mut [[__m256i; C]; N],
) {
    // SAFETY: inlined into AVX2 callers; token j's activations of block b lie inside the tile.
    unsafe {
        let ones = _mm256_set1_epi16(1);
        for (j, s) in isum.iter_mut().enumerate() {
            let xb = x4(t, j, b, g);
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(xb, xb), _mm256_sign_epi8(w, xb));
            s[chain] = _mm256_add_epi32(s[chain], _mm256_madd_epi16(p16, ones));
        }
    }
}

/// Each token's integer block sum: its `C` chains added (exact in any order).
///
/// # Safety
/// AVX2 available.
#[inline(always)]
unsafe fn fold_chains<const N: usize, const C: usize>(isum: &[[__m256i; C]; N]) -> [__m256i; N] {
    // SAFETY: the caller runs with AVX2 (an inlined helper of the AVX2 bodies).
    std::array::from_fn(|j| {
        isum[j]
            .iter()
            .skip(1)
            .fold(isum[j][0], |s, v| unsafe { _mm256_add_epi32(s, *v) })
    })
}

/// The AVX2 Q8 body: one panel x `N` tokens, the integer sums of a block in `C` chains (exact:
/// integer addition does not depend on the order).
///
/// # Safety
/// As [`super::TileFn`]; AVX2/F16C available.
#[inline(always)]
unsafe fn q8_avx2_body<const N: usize, const C: usize>(t: &Tile) {
    // SAFETY: inlined into #[target_feature(avx2,fma,f16c)] callers; the panel's blocks and
    // token j's activations lie inside the tile (TileFn contract).
    unsafe {
        let nb = blocks(t.cols);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let blk = t.w.add(b * Q8P_BLOCK);
            let mut isum = [[_mm256_setzero_si256(); C]; N];
            for g in 0..QK / 4 {
                if g % 2 == 0 {
                    prefetch(blk.add(2 * PANEL + g * 32));
                }
                let w = _mm256_loadu_si256(blk.add(2 * PANEL + g * 32).cast());
                avx2_group::<N, C>(t, b, g, g % C, w, &mut isum);
            }
            q8_scale::<N>(t, blk, b, &fold_chains(&isum), &mut acc);
        }
        store::<N>(t, 0, &acc);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_avx2<const N: usize>(t: &Tile) {
    // SAFETY: features enabled; one panel (mr = 8), bounds by the caller.
    unsafe {
        match N {
            1 => q8_avx2_body::<N, 4>(t),
            2 => q8_avx2_body::<N, 2>(t),
            _ => q8_avx2_body::<N, 1>(t),
        }
    }
}

/// `vpdpbusd` on 256-bit registers: `acc + sum of the four u8 x i8 products of each lane`, in
/// one of its two encodings (the instruction and its result are the same).
trait Dpbusd {
    /// # Safety
    /// The CPU has the encoding's features (the callers' `target_feature`).
    unsafe fn dp(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
}

/// The EVEX form (AVX-512VL + AVX512-VNNI).
struct Evex;
impl Dpbusd for Evex {
    #[inline(always)]
    unsafe fn dp(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: inlined into #[target_feature(avx512vl,avx512vnni)] callers only.
        unsafe { _mm256_dpbusd_epi32(acc, u, s) }
    }
}

/// The VEX form (AVX-VNNI: Intel cores from Alder Lake on, also without AVX-512).
struct Vex;
impl Dpbusd for Vex {
    #[inline(always)]
    unsafe fn dp(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        // SAFETY: inlined into #[target_feature(avxvnni)] callers only.
        unsafe { _mm256_dpbusd_avx_epi32(acc, u, s) }
    }
}

/// # Safety
/// As [`super::TileFn`]; the features of `D` available.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles: isum[p][j] over two index ranges
unsafe fn q8_vnni_body<D: Dpbusd, const P: usize, const N: usize, const C: usize>(t: &Tile) {
    // SAFETY: inlined into callers with D's features; panel p's block b group g and token j's activations lie inside the tile (TileFn contract).
    unsafe {
        let nb = blocks(t.cols);
        let flip = _mm256_set1_epi8(0x80u8 as i8);
        let mut acc = [[_mm256_setzero_ps(); N]; P];
        for b in 0..nb {
            let mut isum = [[[_mm256_setzero_si256(); C]; N]; P];
            let mut corr = [[_mm256_setzero_si256(); C]; P];
            for g in 0..QK / 4 {
                let mut w = [_mm256_setzero_si256(); P];
                for (p, v) in w.iter_mut().enumerate() {
                    let at =
                        t.w.add(p * t.panel_len + b * Q8P_BLOCK + 2 * PANEL + g * 32);
                    if g % 2 == 0 {
                        prefetch(at);
                    }
                    *v = _mm256_loadu_si256(at.cast());
                    // 128 * sum(w): what the +128 on the activations adds
                    corr[p][g % C] = D::dp(corr[p][g % C], flip, *v);
                }
                for j in 0..N {
                    let xb = _mm256_xor_si256(x4(t, j, b, g), flip);
                    for p in 0..P {
                        isum[p][j][g % C] = D::dp(isum[p][j][g % C], xb, w[p]);
                    }
                }
            }
            for p in 0..P {
                let fold =
                    |v: &[__m256i; C]| v.iter().skip(1).fold(v[0], |s, x| _mm256_add_epi32(s, *x));
                let c = fold(&corr[p]);
                let sums: [__m256i; N] =
                    std::array::from_fn(|j| _mm256_sub_epi32(fold(&isum[p][j]), c));
                let blk = t.w.add(p * t.panel_len + b * Q8P_BLOCK);
                q8_scale::<N>(t, blk, b, &sums, &mut acc[p]);
            }
        }
        for (p, a) in acc.iter().enumerate() {
            store::<N>(t, p, a);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn q8_vnni<const N: usize>(t: &Tile) {
    // SAFETY: features enabled; a second panel only if rows > 8.
    unsafe {
        match (t.rows > PANEL, N) {
            (true, 1) => q8_vnni_body::<Evex, 2, N, 4>(t),
            (true, 2) => q8_vnni_body::<Evex, 2, N, 2>(t),
            (true, _) => q8_vnni_body::<Evex, 2, N, 1>(t),
            (false, 1) => q8_vnni_body::<Evex, 1, N, 4>(t),
            (false, 2) => q8_vnni_body::<Evex, 1, N, 2>(t),
            (false, _) => q8_vnni_body::<Evex, 1, N, 1>(t),
        }
    }
}

/// The two Q8P-shaped operands of column-group pair `h` of a Q4P block (groups `h` and `h + 4`):
/// codes 0..15 as bytes.
///
/// # Safety
/// AVX2; the block is readable.
#[inline(always)]
unsafe fn q4_planes(blk: *const u8, h: usize) -> (__m256i, __m256i) {
    // SAFETY: inlined into AVX2 callers; pair h's 32 bytes lie inside the block.
    unsafe {
        let v = _mm256_loadu_si256(blk.add(2 * PANEL + h * 32).cast());
        let m = _mm256_set1_epi8(0x0F);
        (
            _mm256_and_si256(v, m),
            _mm256_and_si256(_mm256_srli_epi16::<4>(v), m),
        )
    }
}

/// The AVX2 Q4 body: one panel x `N` tokens, as [`q8_avx2_body`] on the unpacked codes minus 8.
///
/// # Safety
/// As [`super::TileFn`]; AVX2/F16C available.
#[inline(always)]
unsafe fn q4_avx2_body<const N: usize, const C: usize>(t: &Tile) {
    // SAFETY: inlined into #[target_feature(avx2,fma,f16c)] callers; the panel's blocks and
    // token j's activations lie inside the tile (TileFn contract).
    unsafe {
        let nb = blocks(t.cols);
        let eight = _mm256_set1_epi8(8);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            let blk = t.w.add(b * Q4P_BLOCK);
            let mut isum = [[_mm256_setzero_si256(); C]; N];
            for h in 0..QK / 8 {
                if h % 2 == 0 {
                    prefetch(blk.add(2 * PANEL + h * 32));
                }
                let (lo, hi) = q4_planes(blk, h);
                // the pair's two groups in different chains: their adds do not wait on each other
                for (w, g, chain) in [
                    (_mm256_sub_epi8(lo, eight), h, (2 * h) % C),
                    (_mm256_sub_epi8(hi, eight), h + 4, (2 * h + 1) % C),
                ] {
                    avx2_group::<N, C>(t, b, g, chain, w, &mut isum);
                }
            }
            q8_scale::<N>(t, blk, b, &fold_chains(&isum), &mut acc);
        }
        store::<N>(t, 0, &acc);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4_avx2<const N: usize>(t: &Tile) {
    // SAFETY: features enabled; one panel (mr = 8), bounds by the caller.
    unsafe {
        match N {
            1 => q4_avx2_body::<N, 4>(t),
            2 => q4_avx2_body::<N, 2>(t),
            _ => q4_avx2_body::<N, 1>(t),
        }
    }
}

/// # Safety
/// As [`super::TileFn`]; the features of `D` available.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // register tiles: isum[p][j] over two index ranges
unsafe fn q4_vnni_body<D: Dpbusd, const P: usize, const N: usize, const C: usize>(t: &Tile) {
    // SAFETY: inlined into callers with D's features; panel p's block b and token j's activations lie inside the tile (TileFn contract).
    unsafe {
        let nb = blocks(t.cols);
        let eights = _mm256_set1_epi8(8);
        let mut acc = [[_mm256_setzero_ps(); N]; P];
        for b in 0..nb {
            let mut isum = [[[_mm256_setzero_si256(); C]; N]; P];
            // 8 * sum(x) of each token's block: what the codes' offset of 8 adds
            let mut corr = [_mm256_setzero_si256(); N];
            for h in 0..QK / 8 {
                let mut lo = [_mm256_setzero_si256(); P];
                let mut hi = [_mm256_setzero_si256(); P];
                for p in 0..P {
                    let blk = t.w.add(p * t.panel_len + b * Q4P_BLOCK);
                    if h % 2 == 0 {
                        prefetch(blk.add(2 * PANEL + h * 32));
                    }
                    (lo[p], hi[p]) = q4_planes(blk, h);
                }
                for j in 0..N {
                    let (xl, xh) = (x4(t, j, b, h), x4(t, j, b, h + 4));
                    corr[j] = D::dp(corr[j], eights, xl);
                    corr[j] = D::dp(corr[j], eights, xh);
                    for p in 0..P {
                        let (c0, c1) = ((2 * h) % C, (2 * h + 1) % C);
                        isum[p][j][c0] = D::dp(isum[p][j][c0], lo[p], xl);
                        isum[p][j][c1] = D::dp(isum[p][j][c1], hi[p], xh);
                    }
                }
            }
            for p in 0..P {
                let fold =
                    |v: &[__m256i; C]| v.iter().skip(1).fold(v[0], |s, x| _mm256_add_epi32(s, *x));
                let sums: [__m256i; N] =
                    std::array::from_fn(|j| _mm256_sub_epi32(fold(&isum[p][j]), corr[j]));
                let blk = t.w.add(p * t.panel_len + b * Q4P_BLOCK);
                q8_scale::<N>(t, blk, b, &sums, &mut acc[p]);
            }
        }
        for (p, a) in acc.iter().enumerate() {
            store::<N>(t, p, a);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
unsafe fn q4_vnni<const N: usize>(t: &Tile) {
    // SAFETY: features enabled; a second panel only if rows > 8.
    unsafe {
        match (t.rows > PANEL, N) {
            (true, 1) => q4_vnni_body::<Evex, 2, N, 4>(t),
            (true, 2) => q4_vnni_body::<Evex, 2, N, 2>(t),
            (true, _) => q4_vnni_body::<Evex, 2, N, 1>(t),
            (false, 1) => q4_vnni_body::<Evex, 1, N, 4>(t),
            (false, 2) => q4_vnni_body::<Evex, 1, N, 2>(t),
            (false, _) => q4_vnni_body::<Evex, 1, N, 1>(t),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn q8_avxvnni<const N: usize>(t: &Tile) {
    // SAFETY: features enabled; one panel (mr = 8), bounds by the caller.
    unsafe {
        match N {
            1 => q8_vnni_body::<Vex, 1, N, 4>(t),
            2 => q8_vnni_body::<Vex, 1, N, 2>(t),
            _ => q8_vnni_body::<Vex, 1, N, 1>(t),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
unsafe fn q4_avxvnni<const N: usize>(t: &Tile) {
    // SAFETY: features enabled; one panel (mr = 8), bounds by the caller.
    unsafe {
        match N {
            1 => q4_vnni_body::<Vex, 1, N, 4>(t),
            2 => q4_vnni_body::<Vex, 1, N, 2>(t),
            _ => q4_vnni_body::<Vex, 1, N, 1>(t),
        }
    }
}
