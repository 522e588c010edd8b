//! Times one frame's RVQ nearest-neighbour search (one codebook level), serially and split
//! over a 2-thread compute pool, for codebooks of several sizes, next to the pool's bare
//! hand-off cost measured in the same run: the numbers behind the search's serial/parallel
//! cut-over (`DEFAULT_PARALLEL_CUTOVER` in `src/mimi/rvq.rs`).

use edgecsm::kernels::{Kernels, Pool};
use edgecsm::mimi::rvq::{Codebook, SplitRvq};
use std::time::Instant;

/// The unit tests' deterministic test-data generator (one for the whole project).
#[path = "../src/kernels/test_rand.rs"]
mod test_rand;

/// A deterministic test signal: a sine and a little noise.
fn signal(n: usize) -> Vec<f32> {
    let noise = test_rand::rand_vec(n, 1);
    (0..n)
        .map(|i| (i as f32 * 0.37).sin() * 0.5 + 0.05 * noise[i])
        .collect()
}

/// Times one frame's nearest-neighbour search (one codebook level) serially and split over a
/// 2-thread pool, for codebooks of several sizes; prints the numbers that chose
/// `DEFAULT_PARALLEL_CUTOVER`. Run: `cargo bench --bench rvq`.
fn main() {
    let k = Kernels::get();
    let pools = [Pool::new(1), Pool::new(2)];
    let sizes = [
        (64, 16),
        (256, 32),
        (256, 64),
        (512, 64),
        (1024, 64),
        (1024, 128),
        (2048, 128),
        (2048, 256),
    ];
    // the bare hand-off cost of the 2-thread pool (an empty job), for calibration
    let reps = 2000;
    let t = Instant::now();
    for _ in 0..reps {
        pools[1].run(2, &|_| {});
    }
    println!(
        "empty job on the 2-thread pool: {:.2} us",
        t.elapsed().as_secs_f64() * 1e6 / reps as f64
    );
    for (size, dim) in sizes {
        let sum = signal(size * dim);
        let usage = vec![1.0f32; size];
        let mut rvq =
            SplitRvq::from_codebooks(vec![Codebook::from_ema(&sum, &usage, dim)], vec![]).unwrap();
        let x = signal(dim + 7)[7..].to_vec();
        let mut codes = [0u32; 1];
        let mut line = format!("{size:5} x {dim:3} ({:8} MACs):", size * dim);
        for (pool, cutover) in [
            (&pools[0], usize::MAX),
            (&pools[1], usize::MAX),
            (&pools[1], 0),
        ] {
            rvq.set_parallel_cutover(cutover);
            let mut sc = rvq.scratch(1, pool.threads());
            let reps = (20_000_000 / (size * dim)).max(50);
            for _ in 0..reps / 10 {
                rvq.encode_frame(k, pool, &x, &mut codes, &mut sc);
            }
            let t = Instant::now();
            for _ in 0..reps {
                rvq.encode_frame(k, pool, &x, &mut codes, &mut sc);
            }
            let us = t.elapsed().as_secs_f64() * 1e6 / reps as f64;
            let what = if cutover == 0 { "pooled(2)" } else { "serial" };
            line += &format!("  {what} {us:8.2} us");
        }
        println!("{line}");
    }
}
