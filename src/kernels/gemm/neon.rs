//! aarch64 microkernels: base NEON (set `neon`, ARMv8.0: Raspberry Pi 4) and NEON with the
//! dot-product extension (set `neon-dotprod`, ARMv8.2: Pi 5, Jetson Orin). Both sets share the
//! float tiles; Q8P and Q4P have one kernel per set, the same code for both formats.
//!
//! Every tile is one panel (8 weight rows, two 4-lane vectors) by up to `nr` tokens, an outer
//! product as in the x86 kernels: lanes are output rows, so there is no horizontal sum, and each
//! weight load serves every token of the tile. Activations are read token-major, as the
//! [`Tile`] contract gives them; nothing is packed per call.
//!
//! - **F32P / F16P, 8 x 8** (both sets). One 16-byte load of a token's activations holds four
//!   consecutive columns, and the by-element `fmla v.4s, w.4s, x.s[i]` takes column `i` from
//!   it, so no broadcast is needed. F16 panels are widened with `fcvtl`/`fcvtl2` (base ARMv8).
//!   Per 4 columns and 8 tokens: 8 (f32) or 4 (f16, + 8 `fcvtl`) weight loads, 8 activation
//!   loads and 64 `fmla` into 16 accumulators (26 of the 32 registers in use). Columns past a
//!   multiple of 4 take a broadcast (`ld1r`) and the by-vector `fmla`. One to four tokens spread
//!   the columns over 4 or 2 independent accumulator chains (summed at the end), so the FMA
//!   latency does not serialise the decode-step matrix-vector product.
//! - **Q8P, `neon`, 8 x 4**: per 4-column group and token, the 4 activation bytes are
//!   replicated to every 32-bit lane (`ld1r`), multiplied with the 8 rows x 4 bytes of the group
//!   by `smull`/`smull2` (16 exact i16 products per 4 rows) and added pairwise into i32 lanes by
//!   `sadalp` (lanes = (row, column pair)); at the end of the block `addp` gives one i32 per row.
//!   Exact for every int8 value, in any order. On the A72 `smull` and `sadalp` issue on
//!   different SIMD pipes (F0 and F1 in Arm's optimization guide; not measured here), so the
//!   pair can run at 8 multiply-adds per cycle, the f32 `fmla` rate, on 4x fewer weight bytes.
//! - **Q8P, `neon-dotprod`, 8 x 4**: `sdot acc.4s, w.16b, x.4b[i]` (by element; written with
//!   `asm!`, as `vdotq_laneq_s32` is unstable): `w` is 4 rows x 4 bytes of a group, `x` 16
//!   bytes (4 groups) of one token's block, and lane `i` picks the group's 4 bytes, so one
//!   activation load serves 4 groups. 16 `sdot` per panel, token and block into two i32
//!   vectors (rows 0-3, 4-7).
//! - **Q4P, both sets, 8 x 4**: the Q8P tiles above over the Q4P block (the trait
//!   `IntBlocks` hands either format's block out as Q8P-shaped int8 groups, in pairs
//!   `(h, h + 4)`). One 32-byte load of a Q4P pair holds both groups; after an `eor` with 0x88
//!   (`c ^ 8` is `c - 8` as a 4-bit two's complement number) `shl #4` puts the low nibbles and
//!   `and 0xF0` the high ones at the top of their bytes: int8 operands `16 (c - 8)`, exact, three
//!   instructions per 16 bytes (`and`/`ushr` and two subtractions of 8 take four). The sums
//!   are 16x the true ones (at most 2^14 per product, below 2^20 per block: exact in i16
//!   pairs and i32), and the epilogue's fixed-point `scvtf #4` divides the 16 out exactly.
//!
//! Integer blocks end exactly as the scalar reference: `acc + (isum as f32) * (wd * xd)` with
//! separate `fmul`, `fmul` and `fadd` (never `fmla`), blocks in order, so the result equals it
//! bit for bit. That epilogue is 8 instructions per token and block (2 `scvtf`, 4 `fmul`,
//! 2 `fadd`) against 16 `sdot`: the dot-product kernel issues `sdot` at most about 60 % of the
//! time. (A faster sdot tile, the lane-indexed form with 4 tokens interleaved as ggml's
//! `block_q8_0x4`, needs an activation layout the contract does not have.)
//!
//! Instructions per 32-column block and panel with `n` tokens (counted in the release build's
//! assembly, loop overhead aside; nothing here was timed: qemu gives correctness only):
//!
//! | set | format | tile | per block and panel |
//! |---|---|---|---|
//! | both | f32p | 8 x 8 | 32 `ldp q` (weights), 8n `ldr q` (activations), 64n `fmla`, 16 `prfm` |
//! | both | f16p | 8 x 8 | 16 `ldp q` + 64 `fcvtl(2)`, 8n `ldr q`, 64n `fmla`, 8 `prfm` |
//! | `neon` | q8p | 8 x 4 | 8 `ldp q` + 16 `ext`, 8n `ld1r`, 32n `smull`, 32n `sadalp`/`saddlp`, 2n `addp`, 9n + 3 epilogue, 5 `prfm` |
//! | `neon-dotprod` | q8p | 8 x 4 | 8 `ldp q` (weights), n `ldp q` (activations), 16n `sdot`, 2n `movi`, 9n + 3 epilogue, 5 `prfm` |
//! | `neon` | q4p | 8 x 4 | 4 `ldp q` + 24 unpacking (8 `eor`, 8 `shl`, 8 `and`) + 16 `ext`, then as q8p, 3 `prfm` |
//! | `neon-dotprod` | q4p | 8 x 4 | 4 `ldp q` + 24 unpacking, then as q8p, 3 `prfm` |
//!
//! Whole block loop, address arithmetic and branch included, by token count (same count):
//!
//! | kernel | n = 1 | 2 | 3 | 4 | weight bytes |
//! |---|---|---|---|---|---|
//! | `neon` q8p | 131 | 223 | 314 | 413 | 272 |
//! | `neon` q4p | 146 | 238 | 331 | 436 | 144 |
//! | `neon-dotprod` q8p | 65 | 91 | 112 | 142 | 272 |
//! | `neon-dotprod` q4p | 80 | 107 | 128 | 160 | 144 |
//!
//! Q4P costs about 15-23 instructions per block more than Q8P and reads 0.53x the bytes; a
//! decode step (n = 1) that streams its weights from DRAM should gain close to the byte ratio
//! if the extra instructions hide under the memory time. Not measured on a board.
//!
//! (Integer epilogue: per token an `ld1r` of its scale, 2 `fmul` for `wd * xd`, 2 `scvtf`, 2
//! `fmul`, 2 `fadd`; per panel an `ldr q` of the 8 scales and `fcvtl`/`fcvtl2`. LLVM turns
//! `smull2` against a replicated activation into `smull` of the weights' high half, hence the
//! `ext`. With 1 or 2 tokens the `sdot` kernel keeps 4 or 2 chains per row vector: 6 or 2 more
//! `movi` and as many `add` per token.)

use super::{GemmKernel, Tile};
use crate::kernels::dispatch::KernelSet;
use crate::kernels::packed::{KGROUP, PANEL, PackedFormat, Q4P_BLOCK, Q8P_BLOCK};
use crate::kernels::q4::ZERO_CODE;
use crate::kernels::q8::{QK, blocks};
use core::arch::aarch64::*;
use core::arch::asm;
use half::f16;

/// How far ahead (bytes) of each panel stream the tiles prefetch, as the x86 kernels do: a
/// decode step reads each weight byte once, in streams of 17-64 KiB per panel, and the loads
/// are issued about 2 KiB before use (which runs on into the next panel, where the stream
/// continues). Not tuned on a board.
const PREFETCH: usize = 2048;

/// Prefetches (`prfm pldl1keep`) the cache line `PREFETCH` bytes after `p`.
#[inline(always)]
fn prefetch(p: *const u8) {
    // SAFETY: prfm is a hint: it never faults and changes no architectural state, so any
    // address is fine (`core::arch::aarch64::_prefetch` is unstable, hence asm!).
    unsafe {
        asm!(
            "prfm pldl1keep, [{p}]",
            p = in(reg) p.wrapping_add(PREFETCH),
            options(nostack, preserves_flags, readonly)
        )
    };
}

/// Prefetches every cache line of the `bytes` bytes of a panel stream from `p`.
#[inline(always)]
fn prefetch_span(p: *const u8, bytes: usize) {
    let mut off = 0;
    while off < bytes {
        prefetch(p.wrapping_add(off));
        off += 64;
    }
}

macro_rules! tiles {
    ($f:ident, $($n:literal),+) => {
        &[$($f::<$n>),+]
    };
    ($f:ident < $w:ty >, $($n:literal),+) => {
        &[$($f::<$w, $n>),+]
    };
}

pub const F32P_NEON: GemmKernel = GemmKernel {
    name: "neon f32p 8x8",
    set: KernelSet::Neon,
    format: PackedFormat::F32P,
    mr: PANEL,
    nr: 8,
    tiles: tiles!(float_neon<f32>, 1, 2, 3, 4, 5, 6, 7, 8),
};

pub const F16P_NEON: GemmKernel = GemmKernel {
    name: "neon f16p 8x8",
    set: KernelSet::Neon,
    format: PackedFormat::F16P,
    mr: PANEL,
    nr: 8,
    tiles: tiles!(float_neon<f16>, 1, 2, 3, 4, 5, 6, 7, 8),
};

pub const Q8P_NEON: GemmKernel = GemmKernel {
    name: "neon q8p 8x4 smull",
    set: KernelSet::Neon,
    format: PackedFormat::Q8P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(int_neon<Q8Blocks>, 1, 2, 3, 4),
};

pub const Q4P_NEON: GemmKernel = GemmKernel {
    name: "neon q4p 8x4 smull",
    set: KernelSet::Neon,
    format: PackedFormat::Q4P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(int_neon<Q4Blocks>, 1, 2, 3, 4),
};

/// The float tiles have no ARMv8.2 variant: the same code in the dot-product set.
pub const F32P_DOTPROD: GemmKernel = GemmKernel {
    name: "neon-dotprod f32p 8x8",
    set: KernelSet::NeonDotprod,
    ..F32P_NEON
};

pub const F16P_DOTPROD: GemmKernel = GemmKernel {
    name: "neon-dotprod f16p 8x8",
    set: KernelSet::NeonDotprod,
    ..F16P_NEON
};

pub const Q8P_DOTPROD: GemmKernel = GemmKernel {
    name: "neon-dotprod q8p 8x4 sdot",
    set: KernelSet::NeonDotprod,
    format: PackedFormat::Q8P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(int_sdot<Q8Blocks>, 1, 2, 3, 4),
};

pub const Q4P_DOTPROD: GemmKernel = GemmKernel {
    name: "neon-dotprod q4p 8x4 sdot",
    set: KernelSet::NeonDotprod,
    format: PackedFormat::Q4P,
    mr: PANEL,
    nr: 4,
    tiles: tiles!(int_sdot<Q4Blocks>, 1, 2, 3, 4),
};

/// Stores one panel's accumulators (`[rows 0-3, rows 4-7]` per token) for `N` tokens, only the
/// tile's valid rows.
///
/// # Safety
/// The outputs of rows `0..min(rows, 8)` of `N` tokens are writable (TileFn contract).
#[inline(always)]
unsafe fn store<const N: usize>(t: &Tile, acc: &[[float32x4_t; 2]; N]) {
    // SAFETY: NEON is part of aarch64; rows 0..valid of the N tokens are the tile's outputs.
    unsafe {
        let valid = t.rows.min(PANEL);
        for (j, a) in acc.iter().enumerate() {
            let y = t.y.add(j * t.ldy);
            if valid == PANEL {
                vst1q_f32(y, a[0]);
                vst1q_f32(y.add(4), a[1]);
            } else {
                let mut tmp = [0f32; PANEL];
                vst1q_f32(tmp.as_mut_ptr(), a[0]);
                vst1q_f32(tmp.as_mut_ptr().add(4), a[1]);
                for (i, v) in tmp.iter().take(valid).enumerate() {
                    *y.add(i) = *v;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// F32P / F16P

/// A float weight element: one panel column (8 values) widened to two f32 vectors.
trait Load8: Copy {
    /// # Safety
    /// `p` valid for reading eight values.
    unsafe fn load8(p: *const Self) -> [float32x4_t; 2];
}

impl Load8 for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> [float32x4_t; 2] {
        // SAFETY: the caller guarantees eight readable values; NEON is part of aarch64.
        unsafe { [vld1q_f32(p), vld1q_f32(p.add(4))] }
    }
}

impl Load8 for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> [float32x4_t; 2] {
        // SAFETY: the caller guarantees eight readable halves (16 bytes, read as u16 because
        // the f16 loads are unstable); fcvtl/fcvtl2 are base ARMv8.
        unsafe {
            let h = vreinterpretq_f16_u16(vld1q_u16(p.cast()));
            [vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h)]
        }
    }
}

/// Column `k + L` of a 4-column step: `acc[j][L % U] += w[.., k + L] * x[j][k + L]`, with the
/// activation taken from lane `L` of `xv[j]` (token `j`'s columns `k..k + 4`).
///
/// # Safety
/// `w` (the panel at column `k + L`) readable for eight values.
#[inline(always)]
unsafe fn float_col<W: Load8, const N: usize, const U: usize, const L: i32>(
    w: *const W,
    xv: &[float32x4_t; N],
    acc: &mut [[[float32x4_t; 2]; U]; N],
) {
    // SAFETY: the caller guarantees the panel column; the rest is register arithmetic.
    unsafe {
        let [lo, hi] = W::load8(w);
        let u = L as usize % U;
        for (a, x) in acc.iter_mut().zip(xv) {
            a[u][0] = vfmaq_laneq_f32::<L>(a[u][0], lo, *x);
            a[u][1] = vfmaq_laneq_f32::<L>(a[u][1], hi, *x);
        }
    }
}

/// The float tile body: one panel x `N` tokens, the columns spread over `U` (1, 2 or 4)
/// accumulator chains summed at the end.
///
/// # Safety
/// As [`super::TileFn`].
#[inline(always)]
unsafe fn float_body<W: Load8, const N: usize, const U: usize>(t: &Tile) {
    // SAFETY: every weight access is inside the panel (cols x 8 values), every activation
    // access inside token j < N's row of ldx >= cols values (TileFn contract).
    unsafe {
        let w = t.w.cast::<W>();
        let x = t.x.cast::<f32>();
        let zero = vdupq_n_f32(0.0);
        let mut acc = [[[zero; 2]; U]; N];
        let quads = t.cols / 4;
        let step_bytes = 4 * PANEL * size_of::<W>();
        for q in 0..quads {
            let k = 4 * q;
            let wk = w.add(k * PANEL);
            prefetch_span(wk.cast(), step_bytes);
            let xv: [float32x4_t; N] = std::array::from_fn(|j| vld1q_f32(x.add(j * t.ldx + k)));
            float_col::<W, N, U, 0>(wk, &xv, &mut acc);
            float_col::<W, N, U, 1>(wk.add(PANEL), &xv, &mut acc);
            float_col::<W, N, U, 2>(wk.add(2 * PANEL), &xv, &mut acc);
            float_col::<W, N, U, 3>(wk.add(3 * PANEL), &xv, &mut acc);
        }
        for k in 4 * quads..t.cols {
            let [lo, hi] = W::load8(w.add(k * PANEL));
            for (j, a) in acc.iter_mut().enumerate() {
                let xb = vld1q_dup_f32(x.add(j * t.ldx + k));
                a[0][0] = vfmaq_f32(a[0][0], lo, xb);
                a[0][1] = vfmaq_f32(a[0][1], hi, xb);
            }
        }
        let sums: [[float32x4_t; 2]; N] = std::array::from_fn(|j| {
            let a = &acc[j];
            let fold = |h: usize| a.iter().skip(1).fold(a[0][h], |s, v| vaddq_f32(s, v[h]));
            [fold(0), fold(1)]
        });
        store::<N>(t, &sums);
    }
}

#[target_feature(enable = "neon")]
unsafe fn float_neon<W: Load8, const N: usize>(t: &Tile) {
    // SAFETY: forwarded contract (one panel: mr = 8). Chains: 8-16 accumulators in flight.
    unsafe {
        match N {
            1 | 2 => float_body::<W, N, 4>(t),
            3 | 4 => float_body::<W, N, 2>(t),
            _ => float_body::<W, N, 1>(t),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Q8P

/// The block's 8 row scales (f16 at the start of the block) as two f32 vectors.
///
/// # Safety
/// `blk` readable for 16 bytes.
#[inline(always)]
unsafe fn scales(blk: *const u8) -> [float32x4_t; 2] {
    // SAFETY: 16 readable bytes (a byte load: no alignment needed); fcvtl(2) is base ARMv8.
    unsafe {
        let h = vreinterpretq_f16_u8(vld1q_u8(blk));
        [vcvt_f32_f16(vget_low_f16(h)), vcvt_high_f32_f16(h)]
    }
}

/// `acc[j] += isum[j] * (wd * xd[j])` for one block, per lane with separate multiply and add,
/// as the scalar reference computes it. `isum` is the sum over `F`'s weights, `F::SCALE`
/// times the true one; the fixed-point `scvtf #4` divides the 16 out while converting, and
/// the quotient is an integer, so the f32 is the reference's `isum as f32` exactly.
///
/// # Safety
/// `blk` is the panel's block `b` and the tile's `N` tokens have scales for it.
#[inline(always)]
unsafe fn int_epilogue<F: IntBlocks, const N: usize>(
    t: &Tile,
    blk: *const u8,
    b: usize,
    isum: &[[int32x4_t; 2]; N],
    acc: &mut [[float32x4_t; 2]; N],
) {
    // SAFETY: the block starts with its scales; token j's scales hold block b (TileFn
    // contract).
    unsafe {
        let wd = scales(blk);
        for (j, (a, s)) in acc.iter_mut().zip(isum).enumerate() {
            let xd = *t.xd.add(j * t.ldd + b);
            for h in 0..2 {
                let scale = vmulq_n_f32(wd[h], xd);
                let sum = match F::SCALE {
                    1 => vcvtq_f32_s32(s[h]),
                    16 => vcvtq_n_f32_s32::<4>(s[h]),
                    _ => unreachable!("IntBlocks::SCALE is 1 or 16"),
                };
                a[h] = vaddq_f32(a[h], vmulq_f32(sum, scale));
            }
        }
    }
}

/// An integer panel format as the Q8 tiles read it: each panel-block starts with the 8 rows'
/// f16 scales and holds 8 Q8P-shaped column groups of int8 weights (8 rows x 4 columns),
/// handed out in pairs `(h, h + 4)`, the two groups one Q4P load holds. Q8P reads them as
/// they are; Q4P unpacks them from nibbles, and the tiles are otherwise the same code.
trait IntBlocks {
    /// Bytes of one panel-block.
    const BLOCK: usize;
    /// The factor (1 or 16) the int8 operands of [`IntBlocks::groups`] carry; the epilogue
    /// divides it out of the integer sums.
    const SCALE: i32;
    /// Column groups `h` and `h + 4` (`h < 4`) of the block at `blk`, each as two vectors
    /// (rows 0-3, rows 4-7) of 16 int8, `SCALE` times the weights.
    ///
    /// # Safety
    /// `blk` readable for `BLOCK` bytes.
    unsafe fn groups(blk: *const u8, h: usize) -> [[int8x16_t; 2]; 2];
}

/// Q8P: the groups are stored as they are used.
struct Q8Blocks;

impl IntBlocks for Q8Blocks {
    const BLOCK: usize = Q8P_BLOCK;
    const SCALE: i32 = 1;

    #[inline(always)]
    unsafe fn groups(blk: *const u8, h: usize) -> [[int8x16_t; 2]; 2] {
        // SAFETY: groups h and h + 4 (32 bytes each after the 16 bytes of scales) lie inside
        // the 272-byte block the caller guarantees; byte loads need no alignment.
        unsafe {
            let at = |g: usize| blk.add(2 * PANEL + g * 32).cast::<i8>();
            let (lo, hi) = (at(h), at(h + PAIRS));
            [
                [vld1q_s8(lo), vld1q_s8(lo.add(16))],
                [vld1q_s8(hi), vld1q_s8(hi.add(16))],
            ]
        }
    }
}

/// Q4P: pair `h`'s 32 bytes hold group `h`'s codes `c` in the low nibbles and group `h + 4`'s
/// in the high ones, weight `c - 8`. `c ^ 8` is `c - 8` as a 4-bit two's complement number,
/// so after one `eor` with 0x88 a nibble moved to the top of its byte (`shl #4` for the low
/// one, `and 0xF0` for the high one) is the int8 `16 (c - 8)`, -128..112: three instructions
/// per 16 bytes instead of four for `and`/`ushr` and two subtractions of 8, and every product
/// and sum stays exact (|16 (c - 8) x| <= 2^14, 32 of them < 2^20). (ggml's ARM Q4_0 repacks
/// xor the codes with 0x88 when repacking, for the same sign form; Q4P keeps the plain codes
/// its scalar and x86 kernels read, at one `eor` per 16 bytes.)
struct Q4Blocks;

impl IntBlocks for Q4Blocks {
    const BLOCK: usize = Q4P_BLOCK;
    const SCALE: i32 = 16;

    #[inline(always)]
    unsafe fn groups(blk: *const u8, h: usize) -> [[int8x16_t; 2]; 2] {
        // SAFETY: pair h (32 bytes after the 16 bytes of scales) lies inside the 144-byte
        // block the caller guarantees; byte loads need no alignment.
        unsafe {
            let at = blk.add(2 * PANEL + h * 32);
            let zero = vdupq_n_u8(ZERO_CODE | ZERO_CODE << 4);
            let v = [
                veorq_u8(vld1q_u8(at), zero),
                veorq_u8(vld1q_u8(at.add(16)), zero),
            ];
            let lo = |v: uint8x16_t| vreinterpretq_s8_u8(vshlq_n_u8::<4>(v));
            let hi = |v: uint8x16_t| vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0xF0)));
            [[lo(v[0]), lo(v[1])], [hi(v[0]), hi(v[1])]]
        }
    }
}

/// Column-group pairs per block (`h` in `0..PAIRS`; the pair is groups `h` and `h + PAIRS`).
const PAIRS: usize = QK / KGROUP / 2;

/// Column-group pair `H` of the block at `blk` for the base-NEON body: per group and token, the
/// group's 4 activation bytes replicated to every 32-bit lane, `smull`/`smull2` against the
/// 8 rows x 4 weights (16 exact i16 products per 4 rows) and `sadalp` into the token's four
/// pair-sum vectors (`saddlp` starts them at group 0).
///
/// # Safety
/// `blk` is the panel's block `b` (readable for `F::BLOCK` bytes) and the tile's `N` tokens
/// have activations for it.
#[inline(always)]
unsafe fn smull_pair<F: IntBlocks, const N: usize, const H: usize>(
    t: &Tile,
    blk: *const u8,
    b: usize,
    pairs: &mut [[int32x4_t; 4]; N],
) {
    // SAFETY: the block is readable; token j's block b (32 bytes at x + j * ldx + 32 b) holds
    // group g's 4 bytes (TileFn contract); unaligned reads.
    unsafe {
        for (g, [w0, w1]) in [H, H + PAIRS].into_iter().zip(F::groups(blk, H)) {
            for (j, pr) in pairs.iter_mut().enumerate() {
                let x4 = t.x.add(j * t.ldx + b * QK + KGROUP * g).cast::<i32>();
                let xb = vreinterpretq_s8_s32(vdupq_n_s32(x4.read_unaligned()));
                let xl = vget_low_s8(xb);
                let prods = [
                    vmull_s8(vget_low_s8(w0), xl),
                    vmull_high_s8(w0, xb),
                    vmull_s8(vget_low_s8(w1), xl),
                    vmull_high_s8(w1, xb),
                ];
                for (p, v) in pr.iter_mut().zip(prods) {
                    *p = if g == 0 {
                        vpaddlq_s16(v)
                    } else {
                        vpadalq_s16(*p, v)
                    };
                }
            }
        }
    }
}

/// The base-NEON integer body: one panel x `N` tokens. Per token four i32 vectors of pair sums
/// (rows 0-1, 2-3, 4-5, 6-7; two lanes per row), independent chains, so one token needs no
/// extra ones; at the end of the block `addp` gives one i32 per row.
///
/// # Safety
/// As [`super::TileFn`], for a panel of format `F`.
#[inline(always)]
unsafe fn int_neon_body<F: IntBlocks, const N: usize>(t: &Tile) {
    // SAFETY: the panel's blocks (nb x F::BLOCK bytes) and token j < N's activations (nb x 32
    // bytes at x + j * ldx) and scales lie inside the tile (TileFn contract).
    unsafe {
        let nb = blocks(t.cols);
        let mut acc = [[vdupq_n_f32(0.0); 2]; N];
        for b in 0..nb {
            let blk = t.w.add(b * F::BLOCK);
            prefetch_span(blk, F::BLOCK);
            let mut pairs = [[vdupq_n_s32(0); 4]; N];
            smull_pair::<F, N, 0>(t, blk, b, &mut pairs);
            smull_pair::<F, N, 1>(t, blk, b, &mut pairs);
            smull_pair::<F, N, 2>(t, blk, b, &mut pairs);
            smull_pair::<F, N, 3>(t, blk, b, &mut pairs);
            let isum: [[int32x4_t; 2]; N] = std::array::from_fn(|j| {
                let p = &pairs[j];
                [vpaddq_s32(p[0], p[1]), vpaddq_s32(p[2], p[3])]
            });
            int_epilogue::<F, N>(t, blk, b, &isum, &mut acc);
        }
        store::<N>(t, &acc);
    }
}

#[target_feature(enable = "neon")]
unsafe fn int_neon<F: IntBlocks, const N: usize>(t: &Tile) {
    // SAFETY: forwarded contract (one panel of format F: mr = 8).
    unsafe { int_neon_body::<F, N>(t) }
}

/// `acc + sum over the 4 bytes of w's lanes times the 4 bytes of lane L of x` (`sdot` by
/// element).
///
/// # Safety
/// The CPU has the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_lane<const L: i32>(acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: sdot only reads and writes the named registers (dotprod enabled here).
    unsafe {
        asm!(
            "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            x = in(vreg) x,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    acc
}

/// One column group of a block (rows 0-3, rows 4-7) against lane `L` of each token's
/// activation vector, into chain `c`.
///
/// # Safety
/// The CPU has the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_group<const N: usize, const C: usize, const L: i32>(
    [w0, w1]: [int8x16_t; 2],
    xs: &[int8x16_t; N],
    isum: &mut [[[int32x4_t; 2]; C]; N],
    c: usize,
) {
    // SAFETY: sdot needs the feature this function has; the rest is register arithmetic.
    unsafe {
        for (s, x) in isum.iter_mut().zip(xs) {
            s[c][0] = sdot_lane::<L>(s[c][0], w0, *x);
            s[c][1] = sdot_lane::<L>(s[c][1], w1, *x);
        }
    }
}

/// Column-group pair `L` of the block at `blk`: group `L` against lane `L` of the tokens'
/// columns 0-15 (`xlo`), group `L + 4` against lane `L` of columns 16-31 (`xhi`). In issue
/// order (0, 4, 1, 5, ...) the groups take chains round-robin, so consecutive `sdot`s into one
/// chain are `C` groups apart.
///
/// # Safety
/// `blk` readable for `F::BLOCK` bytes; the CPU has the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn sdot_pair<F: IntBlocks, const N: usize, const C: usize, const L: i32>(
    blk: *const u8,
    xlo: &[int8x16_t; N],
    xhi: &[int8x16_t; N],
    isum: &mut [[[int32x4_t; 2]; C]; N],
) {
    // SAFETY: the caller guarantees the block and the feature.
    unsafe {
        let [lo, hi] = F::groups(blk, L as usize);
        let i = 2 * L as usize;
        sdot_group::<N, C, L>(lo, xlo, isum, i % C);
        sdot_group::<N, C, L>(hi, xhi, isum, (i + 1) % C);
    }
}

/// The dot-product integer body: one panel x `N` tokens, the block's groups spread over `C`
/// chains (exact: integer sums do not depend on the order).
///
/// # Safety
/// As [`super::TileFn`], for a panel of format `F`; the CPU has the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
#[inline]
unsafe fn int_sdot_body<F: IntBlocks, const N: usize, const C: usize>(t: &Tile) {
    // SAFETY: the panel's blocks (nb x F::BLOCK bytes) and token j < N's activations (nb x 32
    // bytes at x + j * ldx) and scales lie inside the tile (TileFn contract); unaligned reads.
    unsafe {
        let nb = blocks(t.cols);
        let mut acc = [[vdupq_n_f32(0.0); 2]; N];
        for b in 0..nb {
            let blk = t.w.add(b * F::BLOCK);
            prefetch_span(blk, F::BLOCK);
            // token j's block: columns 0-15 (groups 0-3) and 16-31 (groups 4-7)
            let mut xlo = [vdupq_n_s8(0); N];
            let mut xhi = [vdupq_n_s8(0); N];
            for j in 0..N {
                let p = t.x.add(j * t.ldx + b * QK).cast::<i8>();
                xlo[j] = vld1q_s8(p);
                xhi[j] = vld1q_s8(p.add(16));
            }
            let mut isum = [[[vdupq_n_s32(0); 2]; C]; N];
            sdot_pair::<F, N, C, 0>(blk, &xlo, &xhi, &mut isum);
            sdot_pair::<F, N, C, 1>(blk, &xlo, &xhi, &mut isum);
            sdot_pair::<F, N, C, 2>(blk, &xlo, &xhi, &mut isum);
            sdot_pair::<F, N, C, 3>(blk, &xlo, &xhi, &mut isum);
            let mut sums = [[vdupq_n_s32(0); 2]; N];
            for (s, chains) in sums.iter_mut().zip(&isum) {
                for h in 0..2 {
                    s[h] = chains
                        .iter()
                        .skip(1)
                        .fold(chains[0][h], |a, v| vaddq_s32(a, v[h]));
                }
            }
            int_epilogue::<F, N>(t, blk, b, &sums, &mut acc);
        }
        store::<N>(t, &acc);
    }
}

#[target_feature(enable = "neon,dotprod")]
unsafe fn int_sdot<F: IntBlocks, const N: usize>(t: &Tile) {
    // SAFETY: forwarded contract (one panel of format F: mr = 8); 8 i32 accumulators for 1-2
    // tokens.
    unsafe {
        match N {
            1 => int_sdot_body::<F, N, 4>(t),
            2 => int_sdot_body::<F, N, 2>(t),
            _ => int_sdot_body::<F, N, 1>(t),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The extremes (the generic tests only see what the quantizers make): the Q8 kernels are
    //! exact for any int8 weights and activations, -128 included, and the Q4 ones for codes 0
    //! and 15 (weights -8 and 7) against any int8 activations.
    use super::*;
    use crate::kernels::gemm::scalar;
    use crate::kernels::packed::{pack_q4, pack_q8};

    const ROWS: usize = 8;
    const COLS: usize = 96;

    /// Mostly `v`, every `period`-th element (from the second) `other`, so that a wrong lane
    /// or group changes the sum.
    fn mix<T: Copy>(v: T, other: T, len: usize, period: usize) -> Vec<T> {
        (0..len)
            .map(|i| if i % period == 1 { other } else { v })
            .collect()
    }

    /// Runs `kernels` (those this CPU supports) against `reference` on the packed panel `w`
    /// for every token count, activations mostly `xv`; returns how many kernels ran.
    fn check(w: &[u8], kernels: [&GemmKernel; 2], reference: &GemmKernel, xv: i8) -> usize {
        let nb = blocks(COLS);
        let flip = if xv < 0 { 127 } else { -128 };
        let mut ran = 0;
        for k in kernels {
            if !k.set.supported() {
                continue;
            }
            ran += 1;
            for n in 1..=k.nr {
                let x = mix(xv, flip, n * nb * QK, 7);
                let xd: Vec<f32> = (0..n * nb).map(|i| 0.5 + i as f32 * 0.25).collect();
                let run = |kern: &GemmKernel| {
                    let mut y = vec![f32::NAN; n * ROWS];
                    let t = Tile {
                        w: w.as_ptr(),
                        panel_len: w.len(),
                        cols: COLS,
                        x: x.as_ptr().cast(),
                        ldx: nb * QK,
                        xd: xd.as_ptr(),
                        ldd: nb,
                        y: y.as_mut_ptr(),
                        ldy: ROWS,
                        rows: ROWS,
                    };
                    // SAFETY: the kernel's set is supported; one whole panel, n tokens of nb
                    // blocks, n x ROWS outputs.
                    unsafe { kern.tile(n)(&t) };
                    y
                };
                let (got, want) = (run(k), run(reference));
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{} n {n} x {xv}", k.name);
            }
        }
        ran
    }

    /// Distinct scales per row and block.
    fn scales() -> Vec<f16> {
        (0..ROWS * blocks(COLS))
            .map(|i| f16::from_f32(0.01 + i as f32 * 1e-3))
            .collect()
    }

    #[test]
    fn q8_kernels_are_exact_over_the_whole_int8_range() {
        let mut ran = 0;
        for (wv, xv) in [
            (-128i8, -128i8),
            (127, -128),
            (-128, 127),
            (127, 127),
            (-127, 5),
        ] {
            let flip = if wv < 0 { 127 } else { -128 };
            let q = mix(wv, flip, ROWS * blocks(COLS) * QK, 5);
            let w = pack_q8(&q, &scales(), ROWS, COLS);
            ran += check(&w, [&Q8P_NEON, &Q8P_DOTPROD], &scalar::Q8P, xv);
        }
        println!("q8 int8-range checks run: {ran}");
    }

    #[test]
    fn q4_kernels_are_exact_for_the_extreme_codes() {
        let mut ran = 0;
        for (code, other, xv) in [
            (0u8, 15u8, -128i8),
            (15, 0, -128),
            (0, 15, 127),
            (15, 0, 127),
            (1, 14, 5),
        ] {
            // period 3 against the 32-column block: every nibble position gets both codes
            let q = mix(code, other, ROWS * blocks(COLS) * QK, 3);
            let w = pack_q4(&q, &scales(), ROWS, COLS);
            ran += check(&w, [&Q4P_NEON, &Q4P_DOTPROD], &scalar::Q4P, xv);
        }
        println!("q4 extreme-code checks run: {ran}");
    }
}
