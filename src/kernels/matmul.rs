//! Matrix products with f32 activations and packed F32P/F16P/Q8P/Q4P weights ([`super::packed`]),
//! split over the threads of a [`Pool`] by output rows (each part reads its own panels of the
//! weights) and computed tile by tile by the kernel set's microkernels ([`super::gemm`]).
//!
//! Layout: weights `[rows, cols]` (PyTorch's `nn.Linear` layout, and a conv weight
//! `[out, in * k]` flattened), packed in panels of 8 rows; activations token-major `[n, cols]`;
//! output `[n, rows]`. Row-major matrices ([`Mat::F32`], [`Mat::F16`], [`Mat::Q8`]) are for
//! tables read a row at a time (embeddings, depthwise convs), not for products.

use super::dispatch::Kernels;
use super::gemm::Tile;
use super::packed::{self, PANEL, PackedFormat};
use super::pool::{Pool, SyncPtr};
use super::q8::{QK, blocks};
use half::f16;

/// A borrowed weight matrix in one of the kernel formats.
#[derive(Clone, Copy, Debug)]
pub enum Mat<'a> {
    /// Row-major f32 (a table).
    F32 {
        w: &'a [f32],
        rows: usize,
        cols: usize,
    },
    /// Row-major f16 (a table).
    F16 {
        w: &'a [f16],
        rows: usize,
        cols: usize,
    },
    /// Row-major Q8 (a table): `q`: `[rows, blocks(cols) * 32]` int8, `d`: `[rows,
    /// blocks(cols)]` f16 scales.
    Q8 {
        q: &'a [i8],
        d: &'a [f16],
        rows: usize,
        cols: usize,
    },
    /// Packed f32 panels (`PackedFormat::F32P.len(rows, cols)` values).
    F32P {
        w: &'a [f32],
        rows: usize,
        cols: usize,
    },
    /// Packed f16 panels.
    F16P {
        w: &'a [f16],
        rows: usize,
        cols: usize,
    },
    /// Packed Q8 panel-blocks (bytes).
    Q8P {
        w: &'a [u8],
        rows: usize,
        cols: usize,
    },
    /// Packed Q4 panel-blocks (bytes).
    Q4P {
        w: &'a [u8],
        rows: usize,
        cols: usize,
    },
}

/// The weight format of a [`Mat`] (and of a stored tensor).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    F32,
    F16,
    Q8,
    Packed(PackedFormat),
}

impl<'a> Mat<'a> {
    pub fn rows(&self) -> usize {
        match *self {
            Mat::F32 { rows, .. }
            | Mat::F16 { rows, .. }
            | Mat::Q8 { rows, .. }
            | Mat::F32P { rows, .. }
            | Mat::F16P { rows, .. }
            | Mat::Q8P { rows, .. }
            | Mat::Q4P { rows, .. } => rows,
        }
    }
    pub fn cols(&self) -> usize {
        match *self {
            Mat::F32 { cols, .. }
            | Mat::F16 { cols, .. }
            | Mat::Q8 { cols, .. }
            | Mat::F32P { cols, .. }
            | Mat::F16P { cols, .. }
            | Mat::Q8P { cols, .. }
            | Mat::Q4P { cols, .. } => cols,
        }
    }
    pub fn format(&self) -> Format {
        match self {
            Mat::F32 { .. } => Format::F32,
            Mat::F16 { .. } => Format::F16,
            Mat::Q8 { .. } => Format::Q8,
            Mat::F32P { .. } => Format::Packed(PackedFormat::F32P),
            Mat::F16P { .. } => Format::Packed(PackedFormat::F16P),
            Mat::Q8P { .. } => Format::Packed(PackedFormat::Q8P),
            Mat::Q4P { .. } => Format::Packed(PackedFormat::Q4P),
        }
    }
    /// Bytes of weight data a product reads (scales and padding included).
    pub fn bytes(&self) -> usize {
        match *self {
            Mat::F32 { w, .. } | Mat::F32P { w, .. } => w.len() * 4,
            Mat::F16 { w, .. } | Mat::F16P { w, .. } => w.len() * 2,
            Mat::Q8 { q, d, .. } => q.len() + d.len() * 2,
            Mat::Q8P { w, .. } | Mat::Q4P { w, .. } => w.len(),
        }
    }

    /// Rows `r0..r1` as a matrix of their own (packed: `r0` a multiple of 8).
    pub fn slice_rows(&self, r0: usize, r1: usize) -> Mat<'a> {
        assert!(r0 <= r1 && r1 <= self.rows(), "row range out of bounds");
        let panel_rows = |fmt: PackedFormat, cols: usize| {
            assert!(
                r0.is_multiple_of(PANEL) && (r1.is_multiple_of(PANEL) || r1 == self.rows()),
                "packed rows are sliced in whole panels of {PANEL}"
            );
            let l = fmt.panel_len(cols);
            (r0 / PANEL * l)..(r1.div_ceil(PANEL) * l)
        };
        match *self {
            Mat::F32 { w, cols, .. } => Mat::F32 {
                w: &w[r0 * cols..r1 * cols],
                rows: r1 - r0,
                cols,
            },
            Mat::F16 { w, cols, .. } => Mat::F16 {
                w: &w[r0 * cols..r1 * cols],
                rows: r1 - r0,
                cols,
            },
            Mat::Q8 { q, d, cols, .. } => {
                let nb = blocks(cols);
                Mat::Q8 {
                    q: &q[r0 * nb * QK..r1 * nb * QK],
                    d: &d[r0 * nb..r1 * nb],
                    rows: r1 - r0,
                    cols,
                }
            }
            Mat::F32P { w, cols, .. } => Mat::F32P {
                w: &w[panel_rows(PackedFormat::F32P, cols)],
                rows: r1 - r0,
                cols,
            },
            Mat::F16P { w, cols, .. } => Mat::F16P {
                w: &w[panel_rows(PackedFormat::F16P, cols)],
                rows: r1 - r0,
                cols,
            },
            Mat::Q8P { w, cols, .. } => Mat::Q8P {
                w: &w[panel_rows(PackedFormat::Q8P, cols)],
                rows: r1 - r0,
                cols,
            },
            Mat::Q4P { w, cols, .. } => Mat::Q4P {
                w: &w[panel_rows(PackedFormat::Q4P, cols)],
                rows: r1 - r0,
                cols,
            },
        }
    }

    /// Writes row `r` as f32 values into `out` (`cols` long): embedding lookups.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols();
        assert!(
            r < self.rows() && out.len() == cols,
            "row_into: bad row or length"
        );
        match *self {
            Mat::F32 { w, .. } => out.copy_from_slice(&w[r * cols..(r + 1) * cols]),
            Mat::F16 { w, .. } => {
                for (o, v) in out.iter_mut().zip(&w[r * cols..(r + 1) * cols]) {
                    *o = v.to_f32();
                }
            }
            Mat::Q8 { q, d, .. } => {
                let nb = blocks(cols);
                super::q8::dequantize_row(&q[r * nb * QK..], &d[r * nb..(r + 1) * nb], out);
            }
            Mat::F32P { w, .. } => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = packed::float_at(w, cols, r, k);
                }
            }
            Mat::F16P { w, .. } => {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = packed::float_at(w, cols, r, k).to_f32();
                }
            }
            Mat::Q8P { w, .. } => packed::q8p_row(w, cols, r, out),
            Mat::Q4P { w, .. } => packed::q4p_row(w, cols, r, out),
        }
    }
}

/// Scratch for the on-the-fly activation quantization of Q8 products, sized once at load time
/// for the largest product a model makes (a call never grows it).
#[derive(Debug, Default)]
pub struct QScratch {
    xq: Vec<i8>,
    xd: Vec<f32>,
}

impl QScratch {
    /// Room for `tokens` activation vectors of up to `cols` values.
    pub fn new(tokens: usize, cols: usize) -> Self {
        let nb = blocks(cols);
        QScratch {
            xq: vec![0; tokens * nb * QK],
            xd: vec![0.0; tokens * nb],
        }
    }
}

/// Weight bytes a thread works on at a time in a multi-token product (fits in L2 with room for
/// the activations).
const ROW_BLOCK_BYTES: usize = 96 * 1024;
/// Activation bytes per token block in a multi-token product.
const TOKEN_BLOCK_BYTES: usize = 64 * 1024;
/// Smallest part of a threaded product, in weight bytes x tokens (a few microseconds of work:
/// smaller parts cost more in claiming than they gain in balance).
const MIN_PART_WORK: usize = 32 * 1024;

/// Activations of a product: f32 rows `[n, cols]`, or rows already quantized to Q8 (`xq`:
/// `[n, blocks(cols) * 32]`, `xd`: `[n, blocks(cols)]`, as [`Kernels::quantize_q8`] makes them)
/// for Q8P weights.
#[derive(Clone, Copy, Debug)]
pub enum Act<'a> {
    F32(&'a [f32]),
    Q8 { xq: &'a [i8], xd: &'a [f32] },
}

/// A checked product: the weights' raw panels, the activations' raw rows, the tile geometry.
struct Plan {
    kern: &'static super::gemm::GemmKernel,
    rows: usize,
    cols: usize,
    n: usize,
    w: SyncPtr<u8>,
    elem: usize,
    panel_len: usize,
    x: SyncPtr<u8>,
    ldx: usize,
    x_elem: usize,
    xd: SyncPtr<f32>,
    ldd: usize,
    tiles: usize,
    /// Row tiles and tokens per cache block.
    rb: usize,
    tb: usize,
}

impl Plan {
    /// Checks `w`, `x` (`n` tokens) and `y` against each other.
    /// `ld` is the f32 activations' row stride (`cols` for packed rows; less for the
    /// overlapping windows of a convolution); quantized activations are always packed rows.
    fn new(k: &Kernels, w: &Mat, x: Act, n: usize, ld: usize, y_len: usize) -> Plan {
        let (rows, cols) = (w.rows(), w.cols());
        let Format::Packed(format) = w.format() else {
            panic!(
                "matmul: {:?} weights are a row-major table; products need packed weights \
                 (Weights::linear)",
                w.format()
            );
        };
        assert_eq!(y_len, n * rows, "matmul: output is not [{n}, {rows}]");
        let (wptr, elem, wlen) = match *w {
            Mat::F32P { w, .. } => (w.as_ptr().cast::<u8>(), 4, w.len()),
            Mat::F16P { w, .. } => (w.as_ptr().cast::<u8>(), 2, w.len()),
            Mat::Q8P { w, .. } | Mat::Q4P { w, .. } => (w.as_ptr(), 1, w.len()),
            _ => unreachable!("checked: packed"),
        };
        assert_eq!(
            wlen,
            format.len(rows, cols),
            "matmul: packed {} weights of [{rows}, {cols}] have the wrong length",
            format.name()
        );
        let nb = blocks(cols);
        let (xptr, ldx, x_elem, xd, ldd): (*const u8, usize, usize, *const f32, usize) =
            match (format, x) {
                (PackedFormat::Q8P | PackedFormat::Q4P, Act::Q8 { xq, xd }) => {
                    assert!(
                        xq.len() >= n * nb * QK && xd.len() >= n * nb,
                        "matmul: Q8 activations are not {n} x {nb} blocks"
                    );
                    (xq.as_ptr().cast(), nb * QK, 1, xd.as_ptr(), nb)
                }
                (PackedFormat::F32P | PackedFormat::F16P, Act::F32(x)) => {
                    let need = n.checked_sub(1).and_then(|m| m.checked_mul(ld));
                    assert!(
                        ld >= 1 && need.and_then(|v| v.checked_add(cols)) == Some(x.len()),
                        "matmul: activations are not {n} rows of {cols} at a stride of {ld}"
                    );
                    (x.as_ptr().cast(), ld, 4, std::ptr::null(), 0)
                }
                (f, a) => panic!(
                    "matmul: {} weights take other activations than {a:?}",
                    f.name()
                ),
            };
        let kern = k.gemm_for(format, n);
        let panel_len = format.panel_len(cols);
        let tiles = rows.div_ceil(kern.mr);
        let tile_bytes = (kern.mr / PANEL) * panel_len * elem;
        Plan {
            kern,
            rows,
            cols,
            n,
            w: SyncPtr(wptr.cast_mut()),
            elem,
            panel_len,
            x: SyncPtr(xptr.cast_mut()),
            ldx,
            x_elem,
            xd: SyncPtr(xd.cast_mut()),
            ldd,
            tiles,
            rb: if n == 1 {
                tiles
            } else {
                (ROW_BLOCK_BYTES / tile_bytes.max(1)).max(1)
            },
            tb: if n == 1 {
                1
            } else {
                (TOKEN_BLOCK_BYTES / (cols * 4).max(1)).max(kern.nr) / kern.nr * kern.nr
            },
        }
    }

    /// Weight bytes of one row tile.
    fn tile_bytes(&self) -> usize {
        (self.kern.mr / PANEL) * self.panel_len * self.elem
    }

    /// Computes row tiles `range` for every token into `y` (`[n, rows]`).
    ///
    /// # Safety
    /// `y` is valid for `n * rows` writes, and no one else writes these tiles' outputs.
    unsafe fn run(&self, range: std::ops::Range<usize>, y: *mut f32) {
        let (mr, nr, n, rows) = (self.kern.mr, self.kern.nr, self.n, self.rows);
        let mut b0 = range.start;
        while b0 < range.end {
            let b1 = (b0 + self.rb).min(range.end);
            let mut t0 = 0;
            while t0 < n {
                let t1 = (t0 + self.tb).min(n);
                for tile in b0..b1 {
                    let r0 = tile * mr;
                    let mut j = t0;
                    while j < t1 {
                        let nt = (t1 - j).min(nr);
                        let t = Tile {
                            // SAFETY (these four): inside the buffers Plan::new checked: panel
                            // r0 / 8 of the weights, token j's activations and scales, output
                            // (j, r0).
                            w: unsafe { self.w.get().add(r0 / PANEL * self.panel_len * self.elem) },
                            panel_len: self.panel_len,
                            cols: self.cols,
                            x: unsafe { self.x.get().add(j * self.ldx * self.x_elem) },
                            ldx: self.ldx,
                            xd: if self.xd.get().is_null() {
                                std::ptr::null()
                            } else {
                                unsafe { self.xd.get().add(j * self.ldd) }
                            },
                            ldd: self.ldd,
                            y: unsafe { y.add(j * rows + r0) },
                            ldy: rows,
                            rows: (rows - r0).min(mr),
                        };
                        // SAFETY: the kernel belongs to this CPU's set; the tile's panels, its
                        // nt tokens and its outputs are in bounds, and the caller owns them.
                        unsafe { self.kern.tile(nt)(&t) };
                        j += nt;
                    }
                }
                t0 = t1;
            }
            b0 = b1;
        }
    }
}

/// `y[t, r] = dot(w[r], x[t])` for `n = x.len() / w.cols()` tokens; `y` is `[n, w.rows()]`.
/// With one token this is the decode-step matrix-vector product. `w` must be packed; Q8P and
/// Q4P weights quantize the activations into `s` first.
pub fn matmul(k: &Kernels, pool: &Pool, w: &Mat, x: &[f32], y: &mut [f32], s: &mut QScratch) {
    let cols = w.cols();
    assert!(cols > 0 || x.is_empty(), "matmul: zero columns");
    let n = x.len().checked_div(cols).unwrap_or(0);
    assert_eq!(
        x.len(),
        n * cols,
        "matmul: activations are not whole rows of {cols}"
    );
    assert_eq!(
        y.len(),
        n * w.rows(),
        "matmul: output is not [{n}, {}]",
        w.rows()
    );
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    matmul_strided(k, pool, w, x, cols, y, s);
}

/// [`matmul`] over `n = y.len() / w.rows()` activation rows that start `ld` values apart in
/// `x` (`x.len() = (n - 1) * ld + w.cols()`): with `ld < cols` the rows overlap, which is how a
/// convolution with its weights in tap-major order reads its input windows without copying
/// them ([`super::conv::conv1d`]).
pub fn matmul_strided(
    k: &Kernels,
    pool: &Pool,
    w: &Mat,
    x: &[f32],
    ld: usize,
    y: &mut [f32],
    s: &mut QScratch,
) {
    let (rows, cols) = (w.rows(), w.cols());
    if rows == 0 || y.is_empty() {
        return;
    }
    assert!(cols > 0, "matmul: zero columns");
    assert!(
        y.len().is_multiple_of(rows),
        "matmul: output is not whole rows of {rows}"
    );
    let n = y.len() / rows;
    let need = (n - 1).checked_mul(ld).and_then(|v| v.checked_add(cols));
    assert!(
        ld >= 1 && need == Some(x.len()),
        "matmul: activations are not {n} rows of {cols} at a stride of {ld}"
    );
    let act = if matches!(w.format(), Format::Packed(f) if f.integer()) {
        let nb = blocks(cols);
        assert!(
            s.xd.len() >= n * nb,
            "matmul: Q8 scratch sized for {} blocks, need {}",
            s.xd.len(),
            n * nb
        );
        let (xq, xd) = (&mut s.xq[..n * nb * QK], &mut s.xd[..n * nb]);
        for t in 0..n {
            k.quantize_q8(
                &x[t * ld..t * ld + cols],
                &mut xq[t * nb * QK..(t + 1) * nb * QK],
                &mut xd[t * nb..(t + 1) * nb],
            );
        }
        Act::Q8 { xq, xd }
    } else {
        Act::F32(x)
    };
    let plan = Plan::new(k, w, act, n, ld, y.len());
    let parts = pool.parts_for(
        plan.tiles,
        MIN_PART_WORK.div_ceil((plan.tile_bytes() * n).max(1)),
    );
    let yp = SyncPtr(y.as_mut_ptr());
    pool.run(parts, &|part| {
        // SAFETY: y holds n * rows values (checked by the plan); parts cover disjoint tiles.
        unsafe { plan.run(Pool::split(plan.tiles, part, parts, 1), yp.get()) }
    });
}

/// [`matmul`] of rows `r0..r1` only (`r0` a multiple of 8), on the calling thread, with the
/// activations given (already quantized for Q8P): `y` is `[n, r1 - r0]`. For searches that
/// split a product themselves (the RVQ codebook search).
pub fn matmul_rows(k: &Kernels, w: &Mat, r0: usize, r1: usize, x: Act, n: usize, y: &mut [f32]) {
    if n == 0 || r0 == r1 {
        return;
    }
    let part = w.slice_rows(r0, r1);
    let plan = Plan::new(k, &part, x, n, part.cols(), y.len());
    // SAFETY: y holds n * (r1 - r0) values (checked by the plan) and is ours.
    unsafe { plan.run(0..plan.tiles, y.as_mut_ptr()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::KernelSet;
    use crate::kernels::packed::{pack_float, pack_q8};
    use crate::kernels::q8::quantize_matrix;
    use crate::kernels::test_rand::rand_vec;

    fn naive(w: &[f32], x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        let n = x.len() / cols;
        let mut y = vec![0f32; n * rows];
        for t in 0..n {
            for r in 0..rows {
                y[t * rows + r] = (0..cols).map(|c| w[r * cols + c] * x[t * cols + c]).sum();
            }
        }
        y
    }

    #[test]
    fn threaded_products_match_naive_for_every_format_and_kernel_set() {
        let sets: Vec<Kernels> = KernelSet::available()
            .into_iter()
            .map(|s| Kernels::new(s).unwrap())
            .collect();
        for k in &sets {
            for threads in [1, 2, 3] {
                let pool = Pool::new(threads);
                for &(rows, cols, n) in &[
                    (1, 1, 1),
                    (7, 33, 1),
                    (64, 96, 5),
                    (130, 70, 40),
                    (2051, 64, 3),
                ] {
                    let w = rand_vec(rows * cols, 1);
                    let x = rand_vec(n * cols, 2);
                    let want = naive(&w, &x, rows, cols);
                    let mut s = QScratch::new(n, cols);
                    let mut y = vec![f32::NAN; n * rows];
                    let wp = pack_float(&w, rows, cols, 0.0);
                    matmul(
                        k,
                        &pool,
                        &Mat::F32P { w: &wp, rows, cols },
                        &x,
                        &mut y,
                        &mut s,
                    );
                    for (a, b) in y.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "f32 {a} vs {b}");
                    }
                    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                    let wp = pack_float(&wh, rows, cols, f16::ZERO);
                    matmul(
                        k,
                        &pool,
                        &Mat::F16P { w: &wp, rows, cols },
                        &x,
                        &mut y,
                        &mut s,
                    );
                    for (a, b) in y.iter().zip(&want) {
                        assert!(
                            (a - b).abs() < 2e-3 * (cols as f32).sqrt(),
                            "f16 {a} vs {b}"
                        );
                    }
                    let (q, d) = quantize_matrix(&w, rows, cols);
                    let wp = pack_q8(&q, &d, rows, cols);
                    matmul(
                        k,
                        &pool,
                        &Mat::Q8P { w: &wp, rows, cols },
                        &x,
                        &mut y,
                        &mut s,
                    );
                    for (a, b) in y.iter().zip(&want) {
                        // both operands carry at most half a step of error per value (1/254
                        // of the block's max, 1 here)
                        assert!((a - b).abs() < 0.02 * (cols as f32).sqrt(), "q8 {a} vs {b}");
                    }
                    let (q, d) = crate::kernels::q4::quantize_matrix(&w, rows, cols);
                    let wp = crate::kernels::packed::pack_q4(&q, &d, rows, cols);
                    matmul(
                        k,
                        &pool,
                        &Mat::Q4P { w: &wp, rows, cols },
                        &x,
                        &mut y,
                        &mut s,
                    );
                    for (a, b) in y.iter().zip(&want) {
                        // a weight error of up to one step (1/8 of the block's max, 1 here)
                        assert!((a - b).abs() < 0.25 * (cols as f32).sqrt(), "q4 {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn overlapping_rows_give_the_products_of_their_copies() {
        // a conv-like window: rows of 96 values starting 64 apart (they share 32)
        let (rows, cols, n, ld) = (40, 96, 9, 64);
        let w = rand_vec(rows * cols, 3);
        let x = rand_vec((n - 1) * ld + cols, 4);
        let copies: Vec<f32> = (0..n)
            .flat_map(|t| x[t * ld..t * ld + cols].to_vec())
            .collect();
        let f32p = pack_float(&w, rows, cols, 0.0);
        let (q, d) = quantize_matrix(&w, rows, cols);
        let q8p = pack_q8(&q, &d, rows, cols);
        let mats = [
            Mat::F32P {
                w: &f32p,
                rows,
                cols,
            },
            Mat::Q8P {
                w: &q8p,
                rows,
                cols,
            },
        ];
        for set in KernelSet::available() {
            let k = Kernels::new(set).unwrap();
            let pool = Pool::new(2);
            let mut s = QScratch::new(n, cols);
            for m in &mats {
                let mut want = vec![0.0; n * rows];
                matmul(&k, &pool, m, &copies, &mut want, &mut s);
                let mut got = vec![f32::NAN; n * rows];
                matmul_strided(&k, &pool, m, &x, ld, &mut got, &mut s);
                assert_eq!(got, want, "{set:?} {:?}", m.format());
            }
        }
    }
}
