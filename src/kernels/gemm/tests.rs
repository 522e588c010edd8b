//! Every registered kernel against the scalar reference of its format, on tiles with partial
//! panels, every token count `1..=nr`, column counts around the block and vector sizes, and
//! values that reach the int8 extremes: Q8P and Q4P bit for bit, F32P/F16P within the rounding bound
//! of a k-term dot product computed two ways (`2 k u sum |w x|`, u = 2^-24). A kernel this CPU
//! cannot run is counted and reported, not silently passed.

use super::{GemmKernel, Tile, registry, scalar};
use crate::kernels::packed::{PANEL, PackedFormat, pack_float, pack_q4, pack_q8};
use crate::kernels::q8::{QK, blocks, quantize_matrix};
use crate::kernels::test_rand::rand_vec;
use half::f16;

/// The operands of one tile test.
struct Case {
    rows: usize,
    cols: usize,
    n: usize,
    w: Vec<f32>,
    x: Vec<f32>,
}

/// Runs `k`'s tile for `n` tokens over the case; returns `[n, rows]`.
fn run(k: &GemmKernel, c: &Case) -> Vec<f32> {
    let (rows, cols, n) = (c.rows, c.cols, c.n);
    // guard values after the outputs: a kernel that stores padding rows overwrites them
    const GUARD: usize = 2 * 16;
    let mut y = vec![f32::NAN; n * rows + GUARD];
    let (wbuf, panel_len): (Vec<u8>, usize) = match k.format {
        PackedFormat::F32P => (
            pack_float(&c.w, rows, cols, 0.0)
                .iter()
                .flat_map(|v| v.to_ne_bytes())
                .collect(),
            PANEL * cols,
        ),
        PackedFormat::F16P => {
            let h: Vec<f16> = c.w.iter().map(|&v| f16::from_f32(v)).collect();
            (
                pack_float(&h, rows, cols, f16::ZERO)
                    .iter()
                    .flat_map(|v| v.to_ne_bytes())
                    .collect(),
                PANEL * cols,
            )
        }
        PackedFormat::Q8P => {
            let (q, d) = quantize_matrix(&c.w, rows, cols);
            (pack_q8(&q, &d, rows, cols), k.format.panel_len(cols))
        }
        PackedFormat::Q4P => {
            let (q, d) = crate::kernels::q4::quantize_matrix(&c.w, rows, cols);
            (pack_q4(&q, &d, rows, cols), k.format.panel_len(cols))
        }
    };
    // aligned copies, as the map gives them (and the f32/f16 kernels read typed pointers)
    let mut aligned = vec![0u64; wbuf.len().div_ceil(8)];
    // SAFETY: `aligned` holds at least wbuf.len() bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(wbuf.as_ptr(), aligned.as_mut_ptr().cast(), wbuf.len())
    };
    let nb = blocks(cols);
    let mut xq = vec![0i8; n * nb * QK];
    let mut xd = vec![0f32; n * nb];
    let (x, ldx): (*const u8, usize) = if k.format.integer() {
        let kern = crate::kernels::Kernels::new(crate::kernels::KernelSet::Scalar).unwrap();
        for t in 0..n {
            kern.quantize_q8(
                &c.x[t * cols..(t + 1) * cols],
                &mut xq[t * nb * QK..(t + 1) * nb * QK],
                &mut xd[t * nb..(t + 1) * nb],
            );
        }
        (xq.as_ptr().cast(), nb * QK)
    } else {
        (c.x.as_ptr().cast(), cols)
    };
    let elem = match k.format {
        PackedFormat::F32P => 4,
        PackedFormat::F16P => 2,
        PackedFormat::Q8P | PackedFormat::Q4P => 1,
    };
    let x_elem = if k.format.integer() { 1 } else { 4 };
    // tiles of mr rows by up to nr tokens, as the driver cuts them
    for r0 in (0..rows).step_by(k.mr) {
        for j in (0..n).step_by(k.nr) {
            let nt = (n - j).min(k.nr);
            let t = Tile {
                // SAFETY: panel r0 / 8 of the packed buffer.
                w: unsafe {
                    aligned
                        .as_ptr()
                        .cast::<u8>()
                        .add(r0 / PANEL * panel_len * elem)
                },
                panel_len,
                cols,
                // SAFETY: token j's activations and scales.
                x: unsafe { x.add(j * ldx * x_elem) },
                ldx,
                xd: unsafe { xd.as_ptr().add(j * nb) },
                ldd: nb,
                // SAFETY: output row r0 of token j.
                y: unsafe { y.as_mut_ptr().add(j * rows + r0) },
                ldy: rows,
                rows: (rows - r0).min(k.mr),
            };
            // SAFETY: the kernel is supported (checked by the caller) and the buffers hold
            // the tile (padded panels, nt tokens).
            unsafe { k.tile(nt)(&t) };
        }
    }
    assert!(
        y[n * rows..].iter().all(|v| v.is_nan()),
        "{}: wrote past the tile's valid rows ({rows} rows, n {n})",
        k.name
    );
    y.truncate(n * rows);
    y
}

fn cases(nr: usize) -> Vec<Case> {
    let mut v = Vec::new();
    let mut seed = 1;
    for &rows in &[1, 5, 8, 9, 16, 17, 33] {
        for &cols in &[1, 4, 31, 32, 33, 96, 300] {
            for n in 1..=nr {
                seed += 1;
                let mut w = rand_vec(rows * cols, seed);
                let mut x = rand_vec(n * cols, seed + 1000);
                // outliers: blocks whose extremes quantize to +-127
                if cols > 3 {
                    w[0] = 9.0;
                    x[cols - 1] = -7.0;
                }
                v.push(Case {
                    rows,
                    cols,
                    n,
                    w,
                    x,
                });
            }
        }
    }
    v
}

fn supported(k: &GemmKernel) -> bool {
    k.set.supported()
}

#[test]
fn every_registered_kernel_matches_the_scalar_reference() {
    let (mut ran, mut skipped) = (Vec::new(), Vec::new());
    for k in registry() {
        if !supported(k) {
            skipped.push(k.name);
            continue;
        }
        ran.push(k.name);
        let reference = scalar::reference(k.format);
        for c in cases(k.nr) {
            let got = run(k, &c);
            let want = run(reference, &c);
            if k.format.integer() {
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(
                        a.to_bits(),
                        b.to_bits(),
                        "{}: {}x{} n {} output {i}: {a} vs {b}",
                        k.name,
                        c.rows,
                        c.cols,
                        c.n
                    );
                }
            } else {
                for t in 0..c.n {
                    for r in 0..c.rows {
                        let wr = |k: usize| {
                            let v = c.w[r * c.cols + k];
                            if k_is_f16(reference) {
                                f16::from_f32(v).to_f32()
                            } else {
                                v
                            }
                        };
                        let mag: f64 = (0..c.cols)
                            .map(|kk| (wr(kk) as f64 * c.x[t * c.cols + kk] as f64).abs())
                            .sum();
                        let bound = 2.0 * c.cols as f64 * f32::EPSILON as f64 / 2.0 * mag + 1e-30;
                        let (a, b) = (got[t * c.rows + r], want[t * c.rows + r]);
                        assert!(
                            ((a - b) as f64).abs() <= bound,
                            "{}: {}x{} n {} ({t}, {r}): {a} vs {b} (bound {bound})",
                            k.name,
                            c.rows,
                            c.cols,
                            c.n
                        );
                    }
                }
            }
        }
    }
    println!("kernels checked: {ran:?}; not supported by this CPU: {skipped:?}");
    assert!(ran.len() >= 3, "at least the scalar references run");
}

fn k_is_f16(k: &GemmKernel) -> bool {
    k.format == PackedFormat::F16P
}

/// The scalar Q4P tile is the Q4 definition: `sum_k d_w (q - 8) * d_x x_q` over the codes and
/// scales the format's accessors read back (in f64, within f32 rounding of the tile's sums).
#[test]
fn the_q4_reference_computes_the_dequantized_product() {
    use crate::kernels::packed::{q4p_code, q4p_scale};
    for c in cases(4).into_iter().step_by(7) {
        let got = run(&scalar::Q4P, &c);
        let (q, d) = crate::kernels::q4::quantize_matrix(&c.w, c.rows, c.cols);
        let p = pack_q4(&q, &d, c.rows, c.cols);
        let nb = blocks(c.cols);
        let kern = crate::kernels::Kernels::new(crate::kernels::KernelSet::Scalar).unwrap();
        for t in 0..c.n {
            let mut xq = vec![0i8; nb * QK];
            let mut xd = vec![0f32; nb];
            kern.quantize_q8(&c.x[t * c.cols..(t + 1) * c.cols], &mut xq, &mut xd);
            for r in 0..c.rows {
                let (mut want, mut mag) = (0f64, 0f64);
                for k in 0..c.cols {
                    let w = q4p_scale(&p, c.cols, r, k / QK).to_f64()
                        * (q4p_code(&p, c.cols, r, k) as f64 - 8.0);
                    let x = xq[k] as f64 * xd[k / QK] as f64;
                    want += w * x;
                    mag += (w * x).abs();
                }
                let a = got[t * c.rows + r] as f64;
                assert!(
                    (a - want).abs() <= 1e-5 * mag + 1e-12,
                    "{}x{} ({t}, {r}): {a} vs {want}",
                    c.rows,
                    c.cols
                );
            }
        }
    }
}
