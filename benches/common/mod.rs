//! What the benchmarks share: the same-run bandwidth floor, thread CPU time, medians, the
//! synthetic full-size models (made on demand under `target/real/`), and the boards' recorded
//! bandwidth for projections (`cross/boards.json`).
#![allow(dead_code)] // each benchmark uses a different part

pub mod boards;
pub mod floor;
pub mod models;

/// The median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time of the calling thread so far (seconds), `CLOCK_THREAD_CPUTIME_ID`: unlike wall time
/// it does not count the time other processes on a busy machine hold the core. (Linux's
/// `/proc/thread-self/schedstat`, used before, advances only at scheduler ticks, 4 ms here: the
/// per-frame percentiles came out as multiples of 4 ms.)
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill in.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Whether `flag` is on the command line.
pub fn flag(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// A comma-separated list after `name`, or `default`.
pub fn list<T: std::str::FromStr + Clone>(name: &str, default: &[T]) -> Vec<T> {
    match arg(name) {
        Some(v) => v
            .split(',')
            .map(|x| {
                x.parse()
                    .unwrap_or_else(|_| panic!("{name}: cannot parse `{x}`"))
            })
            .collect(),
        None => default.to_vec(),
    }
}

/// Whether the benchmark should run as a short smoke run (`--quick` or EDGECSM_BENCH_QUICK=1).
pub fn quick() -> bool {
    flag("--quick") || std::env::var("EDGECSM_BENCH_QUICK").is_ok_and(|v| v == "1")
}
