//! Scalar reference tiles, one per packed format: the definition every SIMD kernel is tested
//! against, and the fallback on CPUs without SIMD features. Plain loops over the layout of
//! [`super::super::packed`]; f32 products are multiplied and added separately, in column order.

use super::{GemmKernel, Tile};
use crate::kernels::dispatch::KernelSet;
use crate::kernels::packed::{KGROUP, PANEL, PackedFormat, Q4P_BLOCK};
use crate::kernels::q4::ZERO_CODE;
use crate::kernels::q8::{QK, blocks};
use half::f16;

/// Tokens per scalar tile (any value works; 4 keeps the generic code small).
const NR: usize = 4;

pub const F32P: GemmKernel = GemmKernel {
    name: "scalar f32p",
    set: KernelSet::Scalar,
    format: PackedFormat::F32P,
    mr: PANEL,
    nr: NR,
    tiles: &[
        float_tile::<f32, 1>,
        float_tile::<f32, 2>,
        float_tile::<f32, 3>,
        float_tile::<f32, 4>,
    ],
};

pub const F16P: GemmKernel = GemmKernel {
    name: "scalar f16p",
    set: KernelSet::Scalar,
    format: PackedFormat::F16P,
    mr: PANEL,
    nr: NR,
    tiles: &[
        float_tile::<f16, 1>,
        float_tile::<f16, 2>,
        float_tile::<f16, 3>,
        float_tile::<f16, 4>,
    ],
};

pub const Q8P: GemmKernel = GemmKernel {
    name: "scalar q8p",
    set: KernelSet::Scalar,
    format: PackedFormat::Q8P,
    mr: PANEL,
    nr: NR,
    tiles: &[q8_tile::<1>, q8_tile::<2>, q8_tile::<3>, q8_tile::<4>],
};

pub const Q4P: GemmKernel = GemmKernel {
    name: "scalar q4p",
    set: KernelSet::Scalar,
    format: PackedFormat::Q4P,
    mr: PANEL,
    nr: NR,
    tiles: &[q4_tile::<1>, q4_tile::<2>, q4_tile::<3>, q4_tile::<4>],
};

/// A weight element of a float format.
pub(crate) trait Float: Copy {
    fn f32(self) -> f32;
}

impl Float for f32 {
    fn f32(self) -> f32 {
        self
    }
}

impl Float for f16 {
    fn f32(self) -> f32 {
        self.to_f32()
    }
}

/// # Safety
/// As [`TileFn`] (one panel: `rows <= 8`).
unsafe fn float_tile<W: Float, const N: usize>(t: &Tile) {
    let w = t.w.cast::<W>();
    let x = t.x.cast::<f32>();
    for r in 0..t.rows.min(PANEL) {
        for tok in 0..N {
            let mut acc = 0f32;
            for k in 0..t.cols {
                // SAFETY: the panel holds cols x 8 values and x holds n rows of ldx >= cols.
                let (wv, xv) = unsafe { (*w.add(k * PANEL + r), *x.add(tok * t.ldx + k)) };
                acc += wv.f32() * xv;
            }
            // SAFETY: output (tok, r) of the tile.
            unsafe { *t.y.add(tok * t.ldy + r) = acc };
        }
    }
}

/// # Safety
/// As [`TileFn`] (one panel: `rows <= 8`).
unsafe fn q8_tile<const N: usize>(t: &Tile) {
    let nb = blocks(t.cols);
    for r in 0..t.rows.min(PANEL) {
        for tok in 0..N {
            let mut acc = 0f32;
            for b in 0..nb {
                // SAFETY: block b of the panel: 272 bytes at b * 272.
                let blk = unsafe { t.w.add(b * crate::kernels::packed::Q8P_BLOCK) };
                // SAFETY: the scale of row r is the r-th f16 of the block.
                let wd = unsafe { f16::from_le_bytes([*blk.add(2 * r), *blk.add(2 * r + 1)]) };
                let mut isum = 0i32;
                for k in 0..QK {
                    let (g, i) = (k / KGROUP, k % KGROUP);
                    // SAFETY: inside the block; x holds n tokens of ldx >= nb * 32 bytes.
                    let (wq, xq) = unsafe {
                        (
                            *blk.add(2 * PANEL + g * PANEL * KGROUP + r * KGROUP + i) as i8,
                            *t.x.add(tok * t.ldx + b * QK + k) as i8,
                        )
                    };
                    isum += wq as i32 * xq as i32;
                }
                // SAFETY: the scales of token tok hold nb values.
                let xd = unsafe { *t.xd.add(tok * t.ldd + b) };
                acc += isum as f32 * (wd.to_f32() * xd);
            }
            // SAFETY: output (tok, r) of the tile.
            unsafe { *t.y.add(tok * t.ldy + r) = acc };
        }
    }
}

/// # Safety
/// As [`TileFn`] (one panel: `rows <= 8`).
unsafe fn q4_tile<const N: usize>(t: &Tile) {
    let nb = blocks(t.cols);
    let half = QK / KGROUP / 2;
    for r in 0..t.rows.min(PANEL) {
        for tok in 0..N {
            let mut acc = 0f32;
            for b in 0..nb {
                // SAFETY: block b of the panel: 144 bytes at b * 144.
                let blk = unsafe { t.w.add(b * Q4P_BLOCK) };
                // SAFETY: the scale of row r is the r-th f16 of the block.
                let wd = unsafe { f16::from_le_bytes([*blk.add(2 * r), *blk.add(2 * r + 1)]) };
                let mut isum = 0i32;
                for k in 0..QK {
                    let (g, i) = (k / KGROUP, k % KGROUP);
                    // SAFETY: inside the block; x holds n tokens of ldx >= nb * 32 bytes.
                    let (byte, xq) = unsafe {
                        (
                            *blk.add(2 * PANEL + (g % half) * PANEL * KGROUP + r * KGROUP + i),
                            *t.x.add(tok * t.ldx + b * QK + k) as i8,
                        )
                    };
                    let code = if g < half { byte & 0x0F } else { byte >> 4 };
                    isum += (code as i32 - ZERO_CODE as i32) * xq as i32;
                }
                // SAFETY: the scales of token tok hold nb values.
                let xd = unsafe { *t.xd.add(tok * t.ldd + b) };
                acc += isum as f32 * (wd.to_f32() * xd);
            }
            // SAFETY: output (tok, r) of the tile.
            unsafe { *t.y.add(tok * t.ldy + r) = acc };
        }
    }
}

/// The scalar reference kernel of `format`.
pub fn reference(format: PackedFormat) -> &'static GemmKernel {
    match format {
        PackedFormat::F32P => &F32P,
        PackedFormat::F16P => &F16P,
        PackedFormat::Q8P => &Q8P,
        PackedFormat::Q4P => &Q4P,
    }
}
