//! Kernel benchmark (plain `main`, no harness): `cargo bench --bench kernels [-- --quick]`.
//!
//! Prints, for the kernel set this CPU gets:
//! 1. a read-bandwidth floor measured in the same run (a plain wide-sum read of a buffer several
//!    times the last-level cache), 1 and 2 threads;
//! 2. matrix-vector products (one token, the decode step) at the real model shapes in F32, F16
//!    and Q8, 1 and 2 threads, with weights cycled over enough copies to exceed the last-level
//!    cache so that the weights come from DRAM: time per call, weight GB/s, share of the floor,
//!    speed-up over F32;
//! 3. the per-call overhead of splitting one 2048x2048 Q8 product over 2 threads with the
//!    crate's `Pool` and with rayon;
//! 4. multi-token (prefill, conv-as-GEMM) products against `matrixmultiply::sgemm`.
//!
//! `--quick` (or `EDGECSM_BENCH_QUICK=1`) shrinks the repetitions to a smoke run.

#[path = "common/mod.rs"]
mod common;

use common::floor::{Floor, llc_bytes};
use common::median;
use edgecsm::kernels::matmul::matmul;
use edgecsm::kernels::q8::{QK, blocks, quantize_matrix};
use edgecsm::kernels::{Kernels, Mat, Pool, QScratch};
use half::f16;
use rayon::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The unit tests' deterministic test-data generator (one for the whole project).
#[path = "../src/kernels/test_rand.rs"]
mod test_rand;
use test_rand::rand_vec;

/// (name, rows, cols) of the products a decode step makes.
const SHAPES: [(&str, usize, usize); 8] = [
    ("csm attn/out", 2048, 2048),
    ("csm up/gate", 8192, 2048),
    ("csm down", 2048, 8192),
    ("csm k/v (gqa)", 512, 2048),
    ("depth up/gate", 8192, 1024),
    ("depth down", 1024, 8192),
    ("mimi proj", 2048, 512),
    ("mimi proj^T", 512, 2048),
];

/// Repetition budget.
struct Budget {
    /// Time spent measuring one configuration.
    per_config: Duration,
    /// Repetitions of the bandwidth floor.
    floor_reps: usize,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick")
        || std::env::var("EDGECSM_BENCH_QUICK").is_ok_and(|v| v == "1");
    let budget = if quick {
        Budget {
            per_config: Duration::from_millis(60),
            floor_reps: 5,
        }
    } else {
        Budget {
            per_config: Duration::from_millis(500),
            floor_reps: 21,
        }
    };
    let k = Kernels::get();
    let llc = llc_bytes();
    // Weight bytes cycled through per configuration, so that the caches cannot hold them.
    let cycle_bytes = (4 * llc).max(128 << 20);
    println!(
        "edgecsm kernel bench: kernel set `{}`, last-level cache {} MiB, weights cycled over >= {} MiB{}",
        k.set().name(),
        llc >> 20,
        cycle_bytes >> 20,
        if quick { " (quick run)" } else { "" }
    );
    let pools = [Pool::new(1), Pool::new(2)];

    let mut floor = Floor::new(cycle_bytes);
    let start = read_floor(&pools, &mut floor, budget.floor_reps);
    println!(
        "\n== read-bandwidth floor: plain {} read of {} MiB, median of {}",
        if cfg!(target_arch = "x86_64") {
            "AVX2"
        } else {
            "u64"
        },
        cycle_bytes >> 20,
        budget.floor_reps
    );
    for (p, f) in pools.iter().zip(start) {
        println!("  {} thread(s): {:6.1} GB/s", p.threads(), f);
    }

    matvec_table(k, &pools, &mut floor, cycle_bytes, &budget);
    let end = read_floor(&pools, &mut floor, budget.floor_reps);
    println!(
        "  (floor again after the table: {:.1} GB/s 1 thread, {:.1} GB/s 2 threads)",
        end[0], end[1]
    );
    drop(floor);
    overhead(k, &pools, cycle_bytes, &budget);
    multi_token(k, &pools, &budget);
}

/// Times `f(i)` for i = 0, 1, ... (after a few warm-up calls) until `budget` has passed and at
/// least `min_reps` calls were made; returns the median call time in microseconds.
fn median_us(budget: Duration, min_reps: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..3 {
        f(i);
    }
    let mut times = Vec::with_capacity(1 << 16);
    let start = Instant::now();
    let mut i = 3;
    while times.len() < min_reps || (start.elapsed() < budget && times.len() < 1 << 20) {
        let t = Instant::now();
        f(i);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    median(&mut times)
}

/// Read bandwidth in GB/s of whole-buffer reads for each pool (median of `reps`).
fn read_floor(pools: &[Pool; 2], floor: &mut Floor, reps: usize) -> [f64; 2] {
    [0, 1].map(|i| common::floor::read_gbs(&pools[i], floor, reps))
}

/// Copies of one weight matrix in one format, enough to exceed `cycle_bytes` in all.
enum Copies {
    F32(Vec<Vec<f32>>),
    F16(Vec<Vec<f16>>),
    Q8(Vec<(Vec<i8>, Vec<f16>)>),
}

impl Copies {
    fn new(fmt: usize, w: &[f32], rows: usize, cols: usize, cycle_bytes: usize) -> Copies {
        let count = |bytes: usize| cycle_bytes.div_ceil(bytes).max(2);
        match fmt {
            0 => Copies::F32(vec![w.to_vec(); count(w.len() * 4)]),
            1 => {
                let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                Copies::F16(vec![h; count(w.len() * 2)])
            }
            _ => {
                let (q, d) = quantize_matrix(w, rows, cols);
                let n = count(q.len() + d.len() * 2);
                Copies::Q8(vec![(q, d); n])
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Copies::F32(v) => v.len(),
            Copies::F16(v) => v.len(),
            Copies::Q8(v) => v.len(),
        }
    }

    fn mat(&self, i: usize, rows: usize, cols: usize) -> Mat<'_> {
        match self {
            Copies::F32(v) => Mat::F32 {
                w: &v[i],
                rows,
                cols,
            },
            Copies::F16(v) => Mat::F16 {
                w: &v[i],
                rows,
                cols,
            },
            Copies::Q8(v) => Mat::Q8 {
                q: &v[i].0,
                d: &v[i].1,
                rows,
                cols,
            },
        }
    }
}

const FORMATS: [&str; 3] = ["F32", "F16", "Q8"];

fn matvec_table(k: &Kernels, pools: &[Pool; 2], floor: &mut Floor, cycle: usize, b: &Budget) {
    println!("\n== matrix-vector products (1 token, weights from DRAM), median per call");
    println!(
        "  floor = a plain read of the same number of bytes from DRAM, alternated with the calls;"
    );
    println!(
        "  vs F32 = F32 time / this time; norm = the same with each time taken relative to its own"
    );
    println!("  floor read (removes drift of the machine's load between the configurations)");
    println!(
        "  {:<15} {:>11} {:>4} {:>3} {:>9} {:>7} {:>8} {:>7} {:>7} {:>8}",
        "shape",
        "rows x cols",
        "fmt",
        "thr",
        "us/call",
        "GB/s",
        "floor",
        "%floor",
        "vs F32",
        "norm"
    );
    for &(name, rows, cols) in &SHAPES {
        let w = rand_vec(rows * cols, rows as u64 * 31 + cols as u64);
        let x = rand_vec(cols, 7);
        let mut y = vec![0f32; rows];
        let mut s = QScratch::new(1, cols);
        // F32's time per call and its time per call at the floor's pace, per pool.
        let mut f32_us = [(0f64, 0f64); 2];
        for (fi, fmt) in FORMATS.iter().enumerate() {
            let copies = Copies::new(fi, &w, rows, cols, cycle);
            let bytes = copies.mat(0, rows, cols).bytes();
            let f32_bytes = (rows * cols * 4) as f64;
            for (pi, pool) in pools.iter().enumerate() {
                // One untimed pass over every copy: page faults and TLB warm-up.
                for c in 0..copies.len() {
                    matmul(k, pool, &copies.mat(c, rows, cols), &x, &mut y, &mut s);
                }
                // Calls and floor reads of the same bytes alternate, so both see the same
                // machine (other processes, clock).
                let (mut call_us, mut floor_us) = (Vec::new(), Vec::new());
                let start = Instant::now();
                let mut i = 0;
                while call_us.len() < 20 || start.elapsed() < b.per_config {
                    let m = copies.mat(i % copies.len(), rows, cols);
                    let t = Instant::now();
                    matmul(k, pool, &m, black_box(&x), &mut y, &mut s);
                    black_box(&y);
                    call_us.push(t.elapsed().as_secs_f64() * 1e6);
                    floor_us.push(floor.read(pool, bytes));
                    i += 1;
                }
                let (us, fus) = (median(&mut call_us), median(&mut floor_us));
                if fi == 0 {
                    f32_us[pi] = (us, us / fus);
                }
                let gbs = bytes as f64 / us / 1e3;
                println!(
                    "  {:<15} {:>11} {:>4} {:>3} {:>9.1} {:>7.1} {:>8.1} {:>6.0}% {:>6.2}x {:>7.2}x",
                    name,
                    format!("{rows}x{cols}"),
                    fmt,
                    pool.threads(),
                    us,
                    gbs,
                    bytes as f64 / fus / 1e3,
                    100.0 * fus / us,
                    f32_us[pi].0 / us,
                    f32_us[pi].1 * f32_bytes * fus / (bytes as f64 * us),
                );
            }
        }
    }
}

/// Splitting one 2048x2048 Q8 matrix-vector product over two threads: the crate's pool
/// against rayon, and each one's cost for an (almost) empty job.
fn overhead(k: &Kernels, pools: &[Pool; 2], cycle: usize, b: &Budget) {
    let (rows, cols) = (2048, 2048);
    let nb = blocks(cols);
    let w = rand_vec(rows * cols, 3);
    let x = rand_vec(cols, 4);
    let copies = Copies::new(2, &w, rows, cols, cycle);
    let Copies::Q8(qc) = &copies else {
        unreachable!("format 2 is Q8")
    };
    let mut y = vec![0f32; rows];
    let mut s = QScratch::new(1, cols);
    let rp = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("building a rayon pool");
    let mut xq = vec![0i8; nb * QK];
    let mut xd = vec![0f32; nb];

    let single = median_us(b.per_config, 20, |i| {
        let m = copies.mat(i % copies.len(), rows, cols);
        matmul(k, &pools[0], &m, black_box(&x), &mut y, &mut s);
    });
    let pool2 = median_us(b.per_config, 20, |i| {
        let m = copies.mat(i % copies.len(), rows, cols);
        matmul(k, &pools[1], &m, black_box(&x), &mut y, &mut s);
    });
    let half = rows / 2;
    let rayon2 = median_us(b.per_config, 20, |i| {
        let (q, d) = &qc[i % qc.len()];
        k.quantize_q8(black_box(&x), &mut xq, &mut xd);
        let (xq, xd) = (&xq, &xd);
        rp.install(|| {
            y.par_chunks_mut(half).enumerate().for_each(|(c, yc)| {
                let r0 = c * half;
                let r1 = r0 + yc.len();
                k.gemm_q8(
                    &q[r0 * nb * QK..r1 * nb * QK],
                    &d[r0 * nb..r1 * nb],
                    xq,
                    xd,
                    r1 - r0,
                    nb,
                    1,
                    yc,
                    r1 - r0,
                );
            })
        });
    });
    let empty_pool = median_us(b.per_config, 20, |i| {
        pools[1].run(2, &|part| {
            black_box(part + i);
        })
    });
    let mut tiny = [0f32; 2];
    let empty_rayon = median_us(b.per_config, 20, |i| {
        rp.install(|| {
            tiny.par_chunks_mut(1).for_each(|c| {
                c[0] = black_box(i as f32);
            })
        })
    });
    println!("\n== per-call overhead at the 2048x2048 Q8 matrix-vector grain (weights from DRAM)");
    println!("  (a) 1 thread                     {single:8.1} us");
    println!(
        "  (b) 2 threads, edgecsm Pool      {pool2:8.1} us  ({:.2}x vs 1 thread)",
        single / pool2
    );
    println!(
        "  (c) 2 threads, rayon install     {rayon2:8.1} us  ({:.2}x vs 1 thread)",
        single / rayon2
    );
    println!(
        "  empty job, edgecsm Pool          {empty_pool:8.2} us  ({:.2}% of the 1-thread call)",
        100.0 * empty_pool / single
    );
    println!(
        "  empty job, rayon install         {empty_rayon:8.2} us  ({:.2}% of the 1-thread call)",
        100.0 * empty_rayon / single
    );
}

/// Multi-token products (prefill, convolutions as GEMM) against `matrixmultiply::sgemm`.
fn multi_token(k: &Kernels, pools: &[Pool; 2], b: &Budget) {
    println!("\n== multi-token products, f32 (weights cache-resident after the first call)");
    println!(
        "  {:<22} {:>6} {:>6} {:>5} {:>3} {:>9} {:>9} {:>9} {:>8}",
        "problem", "rows", "cols", "n", "thr", "us/call", "GFLOP/s", "sgemm", "ratio"
    );
    let problems = [
        ("csm prefill 64 tok", 2048, 2048, 64),
        ("mimi conv k=3 64ch", 64, 64 * 3, 1920),
        ("mimi conv k=8 128ch", 128, 64 * 8, 240),
    ];
    for &(name, rows, cols, n) in &problems {
        let w = rand_vec(rows * cols, 11);
        let x = rand_vec(n * cols, 12);
        let mut y = vec![0f32; n * rows];
        let mut s = QScratch::new(n, cols);
        let flop = 2.0 * (rows * cols * n) as f64;
        let m = Mat::F32 { w: &w, rows, cols };
        // y[n, rows] = x[n, cols] * w^T: A = x (row-major), B = w^T (column-major view of w).
        let sg = median_us(b.per_config, 5, |_| {
            // SAFETY: the pointers and strides describe the x, w and y buffers above.
            unsafe {
                matrixmultiply::sgemm(
                    n,
                    cols,
                    rows,
                    1.0,
                    x.as_ptr(),
                    cols as isize,
                    1,
                    w.as_ptr(),
                    1,
                    cols as isize,
                    0.0,
                    y.as_mut_ptr(),
                    rows as isize,
                    1,
                )
            };
            black_box(&y);
        });
        let want = y.clone();
        for pool in pools {
            let us = median_us(b.per_config, 5, |_| {
                matmul(k, pool, &m, black_box(&x), &mut y, &mut s);
                black_box(&y);
            });
            println!(
                "  {:<22} {:>6} {:>6} {:>5} {:>3} {:>9.1} {:>9.1} {:>9.1} {:>7.2}x",
                name,
                rows,
                cols,
                n,
                pool.threads(),
                us,
                flop / us / 1e3,
                flop / sg / 1e3,
                sg / us
            );
        }
        // The two must agree (a sanity check of the benchmark, not a test).
        for (got, want) in y.iter().zip(&want) {
            assert!(
                (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "matmul vs sgemm"
            );
        }
    }
    println!("  (sgemm: matrixmultiply, single-threaded; ratio = sgemm time / edgecsm time)");

    println!("\n== multi-token products, other formats: csm prefill 64 tokens, 2048x2048");
    let (rows, cols, n) = (2048, 2048, 64);
    let w = rand_vec(rows * cols, 13);
    let x = rand_vec(n * cols, 14);
    let mut y = vec![0f32; n * rows];
    let mut s = QScratch::new(n, cols);
    let flop = 2.0 * (rows * cols * n) as f64;
    for (fi, fmt) in FORMATS.iter().enumerate() {
        let copies = Copies::new(fi, &w, rows, cols, 0);
        let m = copies.mat(0, rows, cols);
        for pool in pools {
            let us = median_us(b.per_config, 5, |_| {
                matmul(k, pool, &m, black_box(&x), &mut y, &mut s);
                black_box(&y);
            });
            println!(
                "  {:<4} {} thread(s): {:9.1} us  {:7.1} GFLOP/s",
                fmt,
                pool.threads(),
                us,
                flop / us / 1e3
            );
        }
    }
}
