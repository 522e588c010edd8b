//! The matrix-kernel contract: every product of packed weights ([`super::packed`]) with
//! activations goes through a [`GemmKernel`], a register-tile microkernel that declares what it
//! computes and how it reads its operands, registered in one place ([`registry`]) from which the
//! kernel sets are chosen at start-up and the property tests are generated.
//!
//! # The contract
//! A kernel computes `y[t * ldy + r] = sum_k w[r, k] * x[t, k]` for one **tile**: `mr` rows
//! (whole panels of 8, the last one possibly partial: only `rows <= mr` are stored) by `n`
//! tokens, `1 <= n <= nr`, over all `cols` columns, for one [`PackedFormat`]:
//! - F32P / F16P weights take f32 activations, token-major (`x[t * ldx + k]`); products are
//!   accumulated in f32 over `k` in order, so a kernel differs from the scalar reference only
//!   by its use of fused multiply-adds (tested within the reference's rounding bound).
//! - Q8P and Q4P weights take Q8 activations ([`super::q8`]: per token, blocks of 32 int8 with an f32
//!   scale, token-major). Per (row, token, block) the kernel forms the exact integer sum of the
//!   32 products, then adds `isum * (wd * xd)` to an f32 accumulator, blocks in order, with
//!   separate multiply and add: every kernel equals the scalar reference **bit for bit** (and
//!   equals the row-major Q8 products before it).
//!
//! A kernel provides one function per token count (`tiles[n - 1]`), so the matrix-vector
//! product of a decode step (`n = 1`) and the edges of a multi-token product use the same code
//! with fewer columns of accumulators. The driver ([`super::matmul`]) splits rows over the
//! compute pool in whole tiles, blocks rows and tokens for the caches, and hands each call a
//! [`Tile`].
//!
//! # The kernels
//! - [`scalar`]: the reference tile of each format (set `scalar`, and the fallback).
//! - `x86`: sets `avx2`, `avx512-vnni` and `avx-vnni`: F32P/F16P 16x6 and 32x12, Q8P and Q4P
//!   8x4 (`maddubs`), 16x4 (`vpdpbusd`, EVEX) and 8x4 (`vpdpbusd`, VEX; its float kernels are
//!   the `avx2` set's).
//! - `neon`: sets `neon` (ARMv8.0) and `neon-dotprod` (ARMv8.2): F32P/F16P 8x8 in both, Q8P and
//!   Q4P 8x4 with `smull`/`sadalp` and with `sdot`.
//!
//! # Adding a kernel or a format
//! A format is defined once in [`super::packed`] (layout, packing, element accessors) with its
//! scalar tile in [`scalar`]. A kernel is a `GemmKernel` value in [`registry`] naming its
//! [`KernelSet`], format, `mr`, `nr` and tile functions; the kernel set picks it up by format,
//! and `tests` checks every registered kernel this CPU can run against the scalar tile (and
//! counts the ones it cannot run).

#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use super::dispatch::KernelSet;
use super::packed::PackedFormat;

/// One call of a microkernel (see the module docs). Pointers are to the tile's first panel,
/// first token and first output; the driver guarantees every access below is in bounds.
#[derive(Clone, Copy, Debug)]
pub struct Tile {
    /// The tile's first weight panel; panel `i` of the tile starts `i * panel_len` elements
    /// later (f32, f16 or bytes, by format).
    pub w: *const u8,
    pub panel_len: usize,
    /// Logical columns (`k`).
    pub cols: usize,
    /// Activations of the tile's first token: f32 (`x[t * ldx + k]`) for F32P/F16P, int8
    /// blocks (`x[t * ldx + k]`, `ldx` a whole number of blocks) for Q8P.
    pub x: *const u8,
    pub ldx: usize,
    /// Q8P only: the activation scales of the first token, `xd[t * ldd + b]`.
    pub xd: *const f32,
    pub ldd: usize,
    /// Output of the tile's first row and token: `y[t * ldy + r]`.
    pub y: *mut f32,
    pub ldy: usize,
    /// Valid rows of the tile (`1..=mr`); the rows after them are padding and not stored.
    pub rows: usize,
}

/// A tile function for a fixed number of tokens.
///
/// # Safety
/// The CPU has the kernel's features; every pointer of the [`Tile`] is valid for the tile's
/// accesses (`ceil(rows / 8)` panels of `cols` columns, `n` tokens) and no one else writes the
/// tile's outputs during the call.
pub type TileFn = unsafe fn(&Tile);

/// A registered microkernel (see the module docs).
#[derive(Clone, Copy, Debug)]
pub struct GemmKernel {
    pub name: &'static str,
    /// The kernel set it belongs to (its CPU features).
    pub set: KernelSet,
    pub format: PackedFormat,
    /// Rows per tile: a multiple of 8 (panels).
    pub mr: usize,
    /// Most tokens per tile; `tiles[n - 1]` computes `n` tokens.
    pub nr: usize,
    pub tiles: &'static [TileFn],
}

impl GemmKernel {
    /// The tile function for `n` tokens (`1..=nr`).
    pub fn tile(&self, n: usize) -> TileFn {
        self.tiles[n - 1]
    }
}

/// Every kernel this build has, the scalar references first. A kernel set uses, for each
/// format, its own kernel if it has one, else the scalar one.
pub fn registry() -> &'static [GemmKernel] {
    REGISTRY
}

#[cfg(target_arch = "x86_64")]
static REGISTRY: &[GemmKernel] = &[
    scalar::F32P,
    scalar::F16P,
    scalar::Q8P,
    scalar::Q4P,
    x86::F32P_AVX2,
    x86::F16P_AVX2,
    x86::Q8P_AVX2,
    x86::Q4P_AVX2,
    x86::F32P_VNNI,
    x86::F16P_VNNI,
    x86::Q8P_VNNI,
    x86::Q4P_VNNI,
    x86::Q8P_AVXVNNI,
    x86::Q4P_AVXVNNI,
];

#[cfg(target_arch = "aarch64")]
static REGISTRY: &[GemmKernel] = &[
    scalar::F32P,
    scalar::F16P,
    scalar::Q8P,
    scalar::Q4P,
    neon::F32P_NEON,
    neon::F16P_NEON,
    neon::Q8P_NEON,
    neon::Q4P_NEON,
    neon::F32P_DOTPROD,
    neon::F16P_DOTPROD,
    neon::Q8P_DOTPROD,
    neon::Q4P_DOTPROD,
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
static REGISTRY: &[GemmKernel] = &[scalar::F32P, scalar::F16P, scalar::Q8P, scalar::Q4P];

/// The kernel `set` uses for `format`: its own, else its base set's (see
/// [`KernelSet::base`]), else the scalar one.
pub fn select(set: KernelSet, format: PackedFormat) -> &'static GemmKernel {
    let of = |s: KernelSet| REGISTRY.iter().find(|k| k.set == s && k.format == format);
    of(set)
        .or_else(|| set.base().and_then(of))
        .or_else(|| of(KernelSet::Scalar))
        .expect("every format has a scalar kernel")
}

#[cfg(test)]
mod tests;
