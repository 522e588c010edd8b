//! The packed weight formats the matrix kernels read, each defined once: how a `[rows, cols]`
//! matrix is laid out, how it is packed from row-major values (what `edgecsm quantize` writes,
//! so loading is a memory map), and how one element is read back (the reference every kernel
//! is tested against).
//!
//! All four cut the matrix into **panels of [`PANEL`] = 8 rows** (the last one zero-padded):
//! a kernel's SIMD lanes are output rows, so it needs no horizontal sums, and the same bytes
//! serve the matrix-vector product of a decode step and the tiles of a multi-token product, on
//! x86 and on ARM.
//!
//! - [`PackedFormat::F32P`] / [`PackedFormat::F16P`]: panel `p` holds, for each column `k` in
//!   order, the 8 values `w[8p..8p+8][k]` (k-major, one vector load per column).
//! - [`PackedFormat::Q8P`] ("x8i4", the layout ggml repacks Q8_0 into for `sdot`, with 8 rows):
//!   blocks of [`QK`] = 32 columns with one f16 scale per row and block, as the row-major Q8
//!   format. Panel `p`, block `b` is [`Q8P_BLOCK`] = 272 bytes: the 8 rows' scales (f16, 16
//!   bytes), then 8 groups of 4 columns, each group the 8 rows' 4 int8 values (32 bytes). One
//!   32-byte load is 8 rows x 4 columns: a `vpdpbusd`/`maddubs` operand with a broadcast of
//!   4 activation bytes (x86), or two `sdot` operands of 4 rows with one 4-token lane vector
//!   (NEON). Columns are zero-padded to whole blocks.
//! - [`PackedFormat::Q4P`] (4.5 bits per weight): the Q8P panel-block with 4-bit codes
//!   ([`super::q4`]: value `d * (q - 8)`), [`Q4P_BLOCK`] = 144 bytes: the 8 scales (16 bytes),
//!   then 4 pairs of column groups `(h, h + 4)`, each 32 bytes laid out as a Q8P group (8 rows x
//!   4 columns) whose bytes hold group `h`'s code in the low nibble and group `h + 4`'s in the
//!   high one. One 32-byte load, masked and shifted, gives two Q8P-shaped operands (codes
//!   0..15, minus 8 where a kernel needs signed values), so the Q4 kernels are the Q8 ones
//!   with two instructions of unpacking per 8 columns, and the integer sums stay exact. The
//!   low/high split by group (not by neighbouring column) keeps each nibble plane a whole
//!   operand: no shuffles. (ggml's ARM repacks of Q4_0, `block_q4_0x4`/`x8`, interleave rows the
//!   same way for the same reason; they pair columns `k` and `k + 16`.)

use super::q4::ZERO_CODE;
use super::q8::{QK, blocks};
use half::f16;

/// Rows per panel.
pub const PANEL: usize = 8;
/// Bytes per column group of one row in [`PackedFormat::Q8P`].
pub const KGROUP: usize = 4;
/// Bytes of one panel-block in [`PackedFormat::Q8P`]: 8 f16 scales + 8 x 8 x 4 int8.
pub const Q8P_BLOCK: usize = PANEL * 2 + PANEL * QK;
/// Bytes of one panel-block in [`PackedFormat::Q4P`]: 8 f16 scales + 8 x 32 4-bit codes.
pub const Q4P_BLOCK: usize = PANEL * 2 + PANEL * QK / 2;

/// The packed formats (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PackedFormat {
    F32P,
    F16P,
    Q8P,
    Q4P,
}

impl PackedFormat {
    pub const ALL: [PackedFormat; 4] = [
        PackedFormat::F32P,
        PackedFormat::F16P,
        PackedFormat::Q8P,
        PackedFormat::Q4P,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PackedFormat::F32P => "f32p",
            PackedFormat::F16P => "f16p",
            PackedFormat::Q8P => "q8p",
            PackedFormat::Q4P => "q4p",
        }
    }

    /// Whether its kernels take Q8-quantized activations (integer formats).
    pub fn integer(self) -> bool {
        matches!(self, PackedFormat::Q8P | PackedFormat::Q4P)
    }

    /// Elements of the packed buffer for a `[rows, cols]` matrix (f32, f16 or bytes).
    pub fn len(self, rows: usize, cols: usize) -> usize {
        match self {
            PackedFormat::F32P | PackedFormat::F16P => panels(rows) * PANEL * cols,
            PackedFormat::Q8P => panels(rows) * blocks(cols) * Q8P_BLOCK,
            PackedFormat::Q4P => panels(rows) * blocks(cols) * Q4P_BLOCK,
        }
    }

    /// Bytes of the packed buffer.
    pub fn bytes(self, rows: usize, cols: usize) -> usize {
        let n = self.len(rows, cols);
        match self {
            PackedFormat::F32P => 4 * n,
            PackedFormat::F16P => 2 * n,
            PackedFormat::Q8P | PackedFormat::Q4P => n,
        }
    }

    /// Elements of one panel (a multiple of the whole buffer's element type).
    pub fn panel_len(self, cols: usize) -> usize {
        self.len(PANEL, cols)
    }
}

/// Panels needed for `rows` rows.
pub fn panels(rows: usize) -> usize {
    rows.div_ceil(PANEL)
}

/// Packs a row-major `[rows, cols]` matrix of any `Copy` value into the F32P/F16P layout
/// (`zero` fills the padding rows).
pub fn pack_float<T: Copy>(w: &[T], rows: usize, cols: usize, zero: T) -> Vec<T> {
    assert_eq!(w.len(), rows * cols, "pack_float: length");
    let mut out = vec![zero; panels(rows) * PANEL * cols];
    for r in 0..rows {
        let (p, lane) = (r / PANEL, r % PANEL);
        let base = p * PANEL * cols;
        for (k, &v) in w[r * cols..(r + 1) * cols].iter().enumerate() {
            out[base + k * PANEL + lane] = v;
        }
    }
    out
}

/// Element `(r, k)` of an F32P/F16P buffer.
pub fn float_at<T: Copy>(packed: &[T], cols: usize, r: usize, k: usize) -> T {
    packed[(r / PANEL) * PANEL * cols + k * PANEL + r % PANEL]
}

/// Packs row-major Q8 (`q`: `[rows, blocks(cols) * 32]` int8, `d`: `[rows, blocks(cols)]`
/// scales, as [`super::q8::quantize_matrix`] makes them) into the Q8P layout.
pub fn pack_q8(q: &[i8], d: &[f16], rows: usize, cols: usize) -> Vec<u8> {
    let nb = blocks(cols);
    assert_eq!(q.len(), rows * nb * QK, "pack_q8: int8 length");
    assert_eq!(d.len(), rows * nb, "pack_q8: scale length");
    let mut out = vec![0u8; PackedFormat::Q8P.len(rows, cols)];
    for r in 0..rows {
        let (p, lane) = (r / PANEL, r % PANEL);
        for b in 0..nb {
            let blk = &mut out[(p * nb + b) * Q8P_BLOCK..][..Q8P_BLOCK];
            blk[2 * lane..2 * lane + 2].copy_from_slice(&d[r * nb + b].to_le_bytes());
            for g in 0..QK / KGROUP {
                let src = &q[r * nb * QK + b * QK + g * KGROUP..][..KGROUP];
                let dst = &mut blk[2 * PANEL + g * PANEL * KGROUP + lane * KGROUP..][..KGROUP];
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o = v as u8;
                }
            }
        }
    }
    out
}

/// The scale of row `r`, block `b` of a Q8P buffer.
pub fn q8p_scale(packed: &[u8], cols: usize, r: usize, b: usize) -> f16 {
    let blk = (r / PANEL * blocks(cols) + b) * Q8P_BLOCK;
    let at = blk + 2 * (r % PANEL);
    f16::from_le_bytes([packed[at], packed[at + 1]])
}

/// The int8 value of row `r`, column `k` of a Q8P buffer.
pub fn q8p_value(packed: &[u8], cols: usize, r: usize, k: usize) -> i8 {
    let (b, g, i) = (k / QK, (k % QK) / KGROUP, k % KGROUP);
    let blk = (r / PANEL * blocks(cols) + b) * Q8P_BLOCK;
    packed[blk + 2 * PANEL + g * PANEL * KGROUP + (r % PANEL) * KGROUP + i] as i8
}

/// Row `r` of a Q8P buffer dequantized into `out` (`cols` values).
pub fn q8p_row(packed: &[u8], cols: usize, r: usize, out: &mut [f32]) {
    for (k, o) in out.iter_mut().enumerate().take(cols) {
        *o = q8p_value(packed, cols, r, k) as f32 * q8p_scale(packed, cols, r, k / QK).to_f32();
    }
}

/// Packs row-major Q4 (`q`: `[rows, blocks(cols) * 32]` codes, `d`: `[rows, blocks(cols)]`
/// scales, as [`super::q4::quantize_matrix`] makes them) into the Q4P layout; padding rows
/// hold code 8 (zero) and scale 0.
pub fn pack_q4(q: &[u8], d: &[f16], rows: usize, cols: usize) -> Vec<u8> {
    let nb = blocks(cols);
    assert_eq!(q.len(), rows * nb * QK, "pack_q4: code length");
    assert_eq!(d.len(), rows * nb, "pack_q4: scale length");
    let zero = ZERO_CODE | ZERO_CODE << 4;
    let mut out = vec![zero; PackedFormat::Q4P.len(rows, cols)];
    let half = QK / KGROUP / 2;
    for p in 0..panels(rows) {
        for b in 0..nb {
            let blk = &mut out[(p * nb + b) * Q4P_BLOCK..][..Q4P_BLOCK];
            blk[..2 * PANEL].fill(0);
            for lane in 0..PANEL.min(rows - p * PANEL) {
                let r = p * PANEL + lane;
                blk[2 * lane..2 * lane + 2].copy_from_slice(&d[r * nb + b].to_le_bytes());
                let row = &q[r * nb * QK + b * QK..][..QK];
                for h in 0..half {
                    for i in 0..KGROUP {
                        let lo = row[h * KGROUP + i];
                        let hi = row[(h + half) * KGROUP + i];
                        blk[2 * PANEL + h * PANEL * KGROUP + lane * KGROUP + i] = lo | hi << 4;
                    }
                }
            }
        }
    }
    out
}

/// The scale of row `r`, block `b` of a Q4P buffer.
pub fn q4p_scale(packed: &[u8], cols: usize, r: usize, b: usize) -> f16 {
    let at = (r / PANEL * blocks(cols) + b) * Q4P_BLOCK + 2 * (r % PANEL);
    f16::from_le_bytes([packed[at], packed[at + 1]])
}

/// The 4-bit code of row `r`, column `k` of a Q4P buffer.
pub fn q4p_code(packed: &[u8], cols: usize, r: usize, k: usize) -> u8 {
    let half = QK / KGROUP / 2;
    let (b, g, i) = (k / QK, (k % QK) / KGROUP, k % KGROUP);
    let blk = (r / PANEL * blocks(cols) + b) * Q4P_BLOCK;
    let byte = packed[blk + 2 * PANEL + (g % half) * PANEL * KGROUP + (r % PANEL) * KGROUP + i];
    if g < half { byte & 0x0F } else { byte >> 4 }
}

/// Row `r` of a Q4P buffer dequantized into `out` (`cols` values).
pub fn q4p_row(packed: &[u8], cols: usize, r: usize, out: &mut [f32]) {
    for (k, o) in out.iter_mut().enumerate().take(cols) {
        *o = super::q4::value(
            q4p_code(packed, cols, r, k),
            q4p_scale(packed, cols, r, k / QK),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::q8::quantize_matrix;
    use crate::kernels::test_rand::rand_vec;

    #[test]
    fn every_element_lands_where_the_accessors_read_it() {
        for (rows, cols) in [(1, 1), (8, 32), (9, 33), (17, 100), (3, 64)] {
            let w = rand_vec(rows * cols, 3);
            let p = pack_float(&w, rows, cols, 0.0);
            assert_eq!(p.len(), PackedFormat::F32P.len(rows, cols));
            for r in 0..panels(rows) * PANEL {
                for k in 0..cols {
                    let want = if r < rows { w[r * cols + k] } else { 0.0 };
                    assert_eq!(float_at(&p, cols, r, k), want);
                }
            }
            let (q, d) = quantize_matrix(&w, rows, cols);
            let p = pack_q8(&q, &d, rows, cols);
            assert_eq!(p.len(), PackedFormat::Q8P.bytes(rows, cols));
            let nb = blocks(cols);
            for r in 0..panels(rows) * PANEL {
                for k in 0..nb * QK {
                    let want = if r < rows { q[r * nb * QK + k] } else { 0 };
                    assert_eq!(q8p_value(&p, cols, r, k), want, "{rows}x{cols} ({r}, {k})");
                }
                for b in 0..nb {
                    let want = if r < rows { d[r * nb + b] } else { f16::ZERO };
                    assert_eq!(q8p_scale(&p, cols, r, b), want);
                }
            }
            let (q, d) = crate::kernels::q4::quantize_matrix(&w, rows, cols);
            let p = pack_q4(&q, &d, rows, cols);
            assert_eq!(p.len(), PackedFormat::Q4P.bytes(rows, cols));
            for r in 0..panels(rows) * PANEL {
                for k in 0..nb * QK {
                    let want = if r < rows {
                        q[r * nb * QK + k]
                    } else {
                        ZERO_CODE
                    };
                    assert_eq!(q4p_code(&p, cols, r, k), want, "{rows}x{cols} ({r}, {k})");
                }
                for b in 0..nb {
                    let want = if r < rows { d[r * nb + b] } else { f16::ZERO };
                    assert_eq!(q4p_scale(&p, cols, r, b), want);
                }
            }
        }
    }
}
