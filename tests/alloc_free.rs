//! The steady state allocates nothing: after a warm-up call, threaded matrix products in every
//! weight format make zero heap allocations (counted by a global allocator wrapper).

mod counting_alloc;
use edgecsm::kernels::matmul::{QScratch, matmul};
use edgecsm::kernels::packed::{pack_float, pack_q8};
use edgecsm::kernels::q8::quantize_matrix;
use edgecsm::kernels::{Kernels, Mat, Pool};
use half::f16;

#[test]
fn threaded_matmul_allocates_nothing_after_warm_up() {
    let k = Kernels::get();
    let pool = Pool::new(2);
    let (rows, cols, n) = (96, 200, 3);
    let w: Vec<f32> = (0..rows * cols)
        .map(|i| (i % 13) as f32 * 0.1 - 0.6)
        .collect();
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let (q, d) = quantize_matrix(&w, rows, cols);
    let (wp, hp, qp) = (
        pack_float(&w, rows, cols, 0.0),
        pack_float(&wh, rows, cols, f16::ZERO),
        pack_q8(&q, &d, rows, cols),
    );
    let mats = [
        Mat::F32P { w: &wp, rows, cols },
        Mat::F16P { w: &hp, rows, cols },
        Mat::Q8P { w: &qp, rows, cols },
    ];
    let x: Vec<f32> = (0..n * cols).map(|i| (i % 7) as f32 - 3.0).collect();
    let mut y = vec![0f32; n * rows];
    let mut s = QScratch::new(n, cols);
    // warm-up: thread handles and lazy statics are created once
    for m in &mats {
        matmul(k, &pool, m, &x, &mut y, &mut s);
        matmul(k, &pool, m, &x[..cols], &mut y[..rows], &mut s);
    }
    let before = counting_alloc::all();
    for _ in 0..200 {
        for m in &mats {
            matmul(k, &pool, m, &x, &mut y, &mut s);
            matmul(k, &pool, m, &x[..cols], &mut y[..rows], &mut s);
        }
    }
    let after = counting_alloc::all();
    assert_eq!(after - before, 0, "heap allocations in the steady state");
}
