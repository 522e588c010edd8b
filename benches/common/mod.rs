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

/// CPU time of the calling thread so far (seconds), from Linux's `/proc/thread-self/schedstat`
/// (first field: nanoseconds on the CPU): unlike wall time it does not count the time other
/// processes on a busy machine hold the core.
pub fn thread_cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let ns: u64 = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat field");
    ns as f64 * 1e-9
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
