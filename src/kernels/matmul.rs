//! Matrix products with f32 activations and F32/F16/Q8 weights, split over the threads of a
//! [`Pool`] by output rows (each part reads its own slice of the weights).
//!
//! Layout: weights `[rows, cols]` (PyTorch's `nn.Linear` layout, and a conv weight
//! `[out, in * k]` flattened), activations token-major `[n, cols]`, output `[n, rows]`.

use super::dispatch::Kernels;
use super::pool::{Pool, SyncPtr};
use super::q8::{QK, blocks};
use half::f16;

/// A borrowed weight matrix in one of the kernel formats.
#[derive(Clone, Copy, Debug)]
pub enum Mat<'a> {
    F32 {
        w: &'a [f32],
        rows: usize,
        cols: usize,
    },
    F16 {
        w: &'a [f16],
        rows: usize,
        cols: usize,
    },
    /// `q`: `[rows, blocks(cols) * 32]` int8, `d`: `[rows, blocks(cols)]` f16 scales.
    Q8 {
        q: &'a [i8],
        d: &'a [f16],
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
}

impl<'a> Mat<'a> {
    pub fn rows(&self) -> usize {
        match *self {
            Mat::F32 { rows, .. } | Mat::F16 { rows, .. } | Mat::Q8 { rows, .. } => rows,
        }
    }
    pub fn cols(&self) -> usize {
        match *self {
            Mat::F32 { cols, .. } | Mat::F16 { cols, .. } | Mat::Q8 { cols, .. } => cols,
        }
    }
    pub fn format(&self) -> Format {
        match self {
            Mat::F32 { .. } => Format::F32,
            Mat::F16 { .. } => Format::F16,
            Mat::Q8 { .. } => Format::Q8,
        }
    }
    /// Bytes of weight data a product reads (scales included).
    pub fn bytes(&self) -> usize {
        match *self {
            Mat::F32 { w, .. } => w.len() * 4,
            Mat::F16 { w, .. } => w.len() * 2,
            Mat::Q8 { q, d, .. } => q.len() + d.len() * 2,
        }
    }

    /// Rows `r0..r1` as a matrix of their own.
    pub fn slice_rows(&self, r0: usize, r1: usize) -> Mat<'a> {
        assert!(r0 <= r1 && r1 <= self.rows(), "row range out of bounds");
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

/// `y[t, r] = dot(w[r], x[t])` for `n = x.len() / w.cols()` tokens; `y` is `[n, w.rows()]`.
/// With one token this is the decode-step matrix-vector product.
pub fn matmul(k: &Kernels, pool: &Pool, w: &Mat, x: &[f32], y: &mut [f32], s: &mut QScratch) {
    let (rows, cols) = (w.rows(), w.cols());
    assert!(cols > 0 || x.is_empty(), "matmul: zero columns");
    let n = x.len().checked_div(cols).unwrap_or(0);
    assert_eq!(
        x.len(),
        n * cols,
        "matmul: activations are not whole rows of {cols}"
    );
    assert_eq!(y.len(), n * rows, "matmul: output is not [{n}, {rows}]");
    if n == 0 || rows == 0 {
        return;
    }
    if cols == 0 {
        y.fill(0.0);
        return;
    }
    let nb = blocks(cols);
    let (xq, xd) = if let Mat::Q8 { .. } = w {
        assert!(
            s.xd.len() >= n * nb,
            "matmul: Q8 scratch sized for {} blocks, need {}",
            s.xd.len(),
            n * nb
        );
        let (xq, xd) = (&mut s.xq[..n * nb * QK], &mut s.xd[..n * nb]);
        for t in 0..n {
            k.quantize_q8(
                &x[t * cols..(t + 1) * cols],
                &mut xq[t * nb * QK..(t + 1) * nb * QK],
                &mut xd[t * nb..(t + 1) * nb],
            );
        }
        (&*xq, &*xd)
    } else {
        (&[][..], &[][..])
    };
    let row_bytes = w.bytes() / rows;
    let rb = if n == 1 {
        rows
    } else {
        (ROW_BLOCK_BYTES / row_bytes.max(1)).clamp(4, rows.max(4)) / 4 * 4
    };
    let tb = if n == 1 {
        1
    } else {
        (TOKEN_BLOCK_BYTES / (cols * 4)).clamp(1, n)
    };
    // parts of whole 4-row units, each worth at least MIN_PART_WORK (bytes x tokens)
    let unit_work = 4 * row_bytes * n;
    let parts = pool.parts_for(rows.div_ceil(4), MIN_PART_WORK.div_ceil(unit_work.max(1)));
    let yp = SyncPtr(y.as_mut_ptr());
    let job = |part: usize| {
        let mine = Pool::split(rows, part, parts, 4);
        let mut r0 = mine.start;
        while r0 < mine.end {
            let r1 = (r0 + rb).min(mine.end);
            let wb = w.slice_rows(r0, r1);
            let mut t0 = 0;
            while t0 < n {
                let t1 = (t0 + tb).min(n);
                let nt = t1 - t0;
                // SAFETY: this part alone writes rows r0..r1 of tokens t0..t1; y holds
                // n * rows values (checked above).
                let out = unsafe { yp.get().add(t0 * rows + r0) };
                match wb {
                    // SAFETY: as above.
                    Mat::F32 { w, .. } => unsafe {
                        k.gemm_f32_raw(w, &x[t0 * cols..t1 * cols], r1 - r0, cols, nt, out, rows)
                    },
                    // SAFETY: as above.
                    Mat::F16 { w, .. } => unsafe {
                        k.gemm_f16_raw(w, &x[t0 * cols..t1 * cols], r1 - r0, cols, nt, out, rows)
                    },
                    // SAFETY: as above.
                    Mat::Q8 { q, d, .. } => unsafe {
                        k.gemm_q8_raw(
                            q,
                            d,
                            &xq[t0 * nb * QK..t1 * nb * QK],
                            &xd[t0 * nb..t1 * nb],
                            r1 - r0,
                            nb,
                            nt,
                            out,
                            rows,
                        )
                    },
                }
                t0 = t1;
            }
            r0 = r1;
        }
    };
    pool.run(parts, &job);
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn threaded_products_match_naive_for_every_format() {
        let k = Kernels::get();
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for &(rows, cols, n) in &[(1, 1, 1), (7, 33, 1), (64, 96, 5), (130, 70, 40)] {
                let w = rand_vec(rows * cols, 1);
                let x = rand_vec(n * cols, 2);
                let want = naive(&w, &x, rows, cols);
                let mut s = QScratch::new(n, cols);
                let mut y = vec![f32::NAN; n * rows];
                matmul(
                    k,
                    &pool,
                    &Mat::F32 { w: &w, rows, cols },
                    &x,
                    &mut y,
                    &mut s,
                );
                for (a, b) in y.iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4 * (1.0 + b.abs()), "f32 {a} vs {b}");
                }
                let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                matmul(
                    k,
                    &pool,
                    &Mat::F16 { w: &wh, rows, cols },
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
                let wq = Mat::Q8 {
                    q: &q,
                    d: &d,
                    rows,
                    cols,
                };
                matmul(k, &pool, &wq, &x, &mut y, &mut s);
                for (a, b) in y.iter().zip(&want) {
                    // both operands carry at most half a step of error per value (1/254 of the
                    // block's max, 1 here)
                    assert!((a - b).abs() < 0.02 * (cols as f32).sqrt(), "q8 {a} vs {b}");
                }
            }
        }
    }
}
