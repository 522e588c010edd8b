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
use edgecsm::kernels::matmul::{Act, matmul, matmul_rows};
use edgecsm::kernels::packed::{pack_float, pack_q8};
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

/// Copies of one packed weight matrix in one format, enough to exceed `cycle_bytes` in all.
enum Copies {
    F32(Vec<Vec<f32>>),
    F16(Vec<Vec<f16>>),
    Q8(Vec<Vec<u8>>),
}

impl Copies {
    fn new(fmt: usize, w: &[f32], rows: usize, cols: usize, cycle_bytes: usize) -> Copies {
        let count = |bytes: usize| cycle_bytes.div_ceil(bytes).max(2);
        match fmt {
            0 => {
                let p = pack_float(w, rows, cols, 0.0);
                Copies::F32(vec![p.clone(); count(p.len() * 4)])
            }
            1 => {
                let h: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
                let p = pack_float(&h, rows, cols, f16::ZERO);
                Copies::F16(vec![p.clone(); count(p.len() * 2)])
            }
            _ => {
                let (q, d) = quantize_matrix(w, rows, cols);
                let p = pack_q8(&q, &d, rows, cols);
                Copies::Q8(vec![p.clone(); count(p.len())])
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
            Copies::F32(v) => Mat::F32P {
                w: &v[i],
                rows,
                cols,
            },
            Copies::F16(v) => Mat::F16P {
                w: &v[i],
                rows,
                cols,
            },
            Copies::Q8(v) => Mat::Q8P {
                w: &v[i],
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
        let m = copies.mat(i % copies.len(), rows, cols);
        k.quantize_q8(black_box(&x), &mut xq, &mut xd);
        let act = Act::Q8 { xq: &xq, xd: &xd };
        rp.install(|| {
            y.par_chunks_mut(half).enumerate().for_each(|(c, yc)| {
                let r0 = c * half;
                matmul_rows(k, &m, r0, r0 + yc.len(), act, 1, yc);
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

/// The multi-token problems of the models: (name, rows, cols, tokens).
const GEMM_SHAPES: [(&str, usize, usize, usize); 9] = [
    ("csm prefill q/o", 2048, 2048, 32),
    ("csm prefill up/gate", 8192, 2048, 32),
    ("csm prefill down", 2048, 8192, 32),
    ("csm prefill k/v", 512, 2048, 32),
    ("depth first step", 8192, 1024, 2),
    ("mimi xfmr chunk", 2048, 512, 16),
    ("mimi conv k3 512ch", 512, 512 * 3, 25),
    ("mimi conv k3 64ch", 64, 64 * 3, 960),
    ("mimi convT 512->256 k16", 256 * 16, 512, 25),
];

/// Register-only peaks of this core in the same run: the f32 FMA (256-bit, or 512-bit for the
/// AVX-512 set) and the int8 dot product of the kernel set, in G multiply-adds per second (12
/// independent accumulators, no loads).
fn peaks(k: &Kernels) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        use edgecsm::kernels::KernelSet;
        let int8 = match k.set() {
            KernelSet::Avx2 => x86_peak::Int8::Maddubs,
            KernelSet::Avx512Vnni => x86_peak::Int8::Evex,
            KernelSet::AvxVnni => x86_peak::Int8::Vex,
            _ => return (f64::NAN, f64::NAN),
        };
        // SAFETY: the kernel set was selected for this CPU, so it has these features.
        unsafe {
            (
                if k.set() == KernelSet::Avx512Vnni {
                    x86_peak::fma512()
                } else {
                    x86_peak::fma()
                },
                x86_peak::int8(int8),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = k;
        (f64::NAN, f64::NAN)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86_peak {
    use std::arch::x86_64::*;
    use std::hint::black_box;
    use std::time::Instant;

    const ITERS: usize = 20_000_000;

    /// # Safety
    /// AVX2 + FMA available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma() -> f64 {
        let mut acc = [_mm256_set1_ps(0.5); 12];
        let (a, b) = (_mm256_set1_ps(0.999), _mm256_set1_ps(1e-3));
        let t = Instant::now();
        for _ in 0..ITERS / 12 {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let s = t.elapsed().as_secs_f64();
        black_box(acc);
        (ITERS / 12 * 12 * 8) as f64 / s / 1e9
    }

    /// # Safety
    /// AVX-512F available.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512() -> f64 {
        let mut acc = [_mm512_set1_ps(0.5); 12];
        let (a, b) = (_mm512_set1_ps(0.999), _mm512_set1_ps(1e-3));
        let t = Instant::now();
        for _ in 0..ITERS / 12 {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let s = t.elapsed().as_secs_f64();
        black_box(acc);
        (ITERS / 12 * 12 * 16) as f64 / s / 1e9
    }

    /// How a kernel set multiplies int8.
    #[derive(Clone, Copy, PartialEq)]
    pub enum Int8 {
        /// `vpmaddubsw` + `vpmaddwd` + `vpaddd` (AVX2).
        Maddubs,
        /// `vpdpbusd`, EVEX (AVX-512VL + VNNI).
        Evex,
        /// `vpdpbusd`, VEX (AVX-VNNI).
        Vex,
    }

    /// # Safety
    /// AVX2 and the features of `kind` available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn int8(kind: Int8) -> f64 {
        let (a, b) = (_mm256_set1_epi8(3), _mm256_set1_epi8(-2));
        let t = Instant::now();
        let macs = match kind {
            // SAFETY: the caller checked the features.
            Int8::Evex => unsafe { dpbusd_evex_loop(a, b) },
            // SAFETY: the caller checked the features.
            Int8::Vex => unsafe { dpbusd_vex_loop(a, b) },
            Int8::Maddubs => {
                // the products must change every iteration, or the compiler computes them
                // once outside the loop (it did: a "peak" of 1 100 G MAC/s): `a` alternates,
                // and each of the 6 accumulators (16 ymm registers in all) has its own `b`
                let (ones, flip) = (_mm256_set1_epi16(1), _mm256_set1_epi8(1));
                let bs: [__m256i; 6] = std::array::from_fn(|i| _mm256_set1_epi8(-2 - i as i8));
                let mut a = a;
                let mut acc = [_mm256_setzero_si256(); 6];
                for _ in 0..ITERS / 6 {
                    a = _mm256_xor_si256(a, flip);
                    for (v, b) in acc.iter_mut().zip(&bs) {
                        let p = _mm256_maddubs_epi16(a, *b);
                        *v = _mm256_add_epi32(*v, _mm256_madd_epi16(p, ones));
                    }
                }
                black_box(acc);
                (ITERS / 6 * 6 * 32) as f64
            }
        };
        macs / t.elapsed().as_secs_f64() / 1e9
    }

    /// `$f(acc, a, b)` on 12 independent accumulators: the register-only dot-product loop (a
    /// macro, so that it compiles with its caller's target features).
    macro_rules! dot_loop {
        ($a:expr, $b:expr, $f:path) => {{
            let mut acc = [_mm256_set1_epi32(0); 12];
            for _ in 0..ITERS / 12 {
                for v in acc.iter_mut() {
                    *v = $f(*v, $a, $b);
                }
            }
            black_box(acc);
            (ITERS / 12 * 12 * 32) as f64
        }};
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    unsafe fn dpbusd_evex_loop(a: __m256i, b: __m256i) -> f64 {
        dot_loop!(a, b, _mm256_dpbusd_epi32)
    }

    #[target_feature(enable = "avx2,avxvnni")]
    unsafe fn dpbusd_vex_loop(a: __m256i, b: __m256i) -> f64 {
        dot_loop!(a, b, _mm256_dpbusd_avx_epi32)
    }
}

/// Multi-token products at the models' shapes: G multiply-adds per second per format, against
/// the same-run register-only peaks and, for f32, against `matrixmultiply::sgemm`.
fn multi_token(k: &Kernels, pools: &[Pool; 2], b: &Budget) {
    let (fma_peak, int8_peak) = peaks(k);
    println!("\n== multi-token products (weights cache-resident after the first call), G MAC/s");
    println!(
        "  same-run register-only peaks, 1 core: f32 FMA {fma_peak:.1} G MAC/s, int8 {int8_peak:.1} G MAC/s"
    );
    println!(
        "  {:<24} {:>5} {:>5} {:>4} {:>3} | {:>7} {:>7} {:>7} | {:>7} {:>6} | {:>5} {:>5}",
        "problem", "rows", "cols", "n", "thr", "F32", "F16", "Q8", "sgemm", "F32/sg", "%fma", "%i8"
    );
    for &(name, rows, cols, n) in &GEMM_SHAPES {
        let w = rand_vec(rows * cols, 11);
        let x = rand_vec(n * cols, 12);
        let mut y = vec![0f32; n * rows];
        let mut s = QScratch::new(n, cols);
        let macs = (rows * cols * n) as f64;
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
        let copies: Vec<Copies> = (0..3).map(|f| Copies::new(f, &w, rows, cols, 0)).collect();
        for pool in pools {
            let us: Vec<f64> = copies
                .iter()
                .map(|c| {
                    let m = c.mat(0, rows, cols);
                    median_us(b.per_config, 5, |_| {
                        matmul(k, pool, &m, black_box(&x), &mut y, &mut s);
                        black_box(&y);
                    })
                })
                .collect();
            let g = |t: f64| macs / t / 1e3;
            println!(
                "  {:<24} {:>5} {:>5} {:>4} {:>3} | {:>7.1} {:>7.1} {:>7.1} | {:>7.1} {:>5.2}x | {:>4.0}% {:>4.0}%",
                name,
                rows,
                cols,
                n,
                pool.threads(),
                g(us[0]),
                g(us[1]),
                g(us[2]),
                g(sg),
                sg / us[0],
                100.0 * g(us[0]) / pool.threads() as f64 / fma_peak,
                100.0 * g(us[2]) / pool.threads() as f64 / int8_peak,
            );
        }
        // f32 must agree with sgemm (a sanity check of the benchmark, not a test).
        matmul(
            k,
            &pools[0],
            &copies[0].mat(0, rows, cols),
            &x,
            &mut y,
            &mut s,
        );
        for (got, want) in y.iter().zip(&want) {
            assert!(
                (got - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "matmul vs sgemm"
            );
        }
    }
    println!(
        "  (sgemm: matrixmultiply, single-threaded, f32; F32/sg = sgemm time / edgecsm F32 time;"
    );
    println!("   %fma, %i8: the F32 and Q8 rates per thread against the same-run peaks)");
}
