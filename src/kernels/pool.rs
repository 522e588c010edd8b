//! A persistent compute pool for the per-token grain, that holds up on a busy machine.
//!
//! A decode step is a few dozen matrix-vector products of well under a millisecond each, so the
//! cost of handing work to threads is paid thousands of times per frame: the workers stay
//! alive, a job is a borrowed closure, and posting one is a few atomic operations with no
//! allocation. `benches/kernels.rs` measures it against rayon at that grain.
//!
//! # Scheduling
//! A job is `f(part)` for every `part` in `0..parts`; the caller chooses `parts` (several per
//! thread). Parts are **claimed dynamically**: the caller and whichever workers are awake take
//! the next unclaimed part until none is left, so a worker the scheduler has put aside (another
//! process wants the core, or the daemon's audio thread) simply takes no part, and the job does
//! not wait for it. Only a part already claimed by a worker that is then preempted holds the
//! caller up, and only until that worker runs again — which is soon, because nobody here keeps
//! a core busy while waiting: a waiting thread spins for a few microseconds (the common case on
//! a quiet machine: the next job or the last part arrives within that), then yields, then
//! sleeps until woken. So `--threads N` costs little beside a busy process, and the spinning
//! never steals a core another thread needs for more than [`SPIN_NS`].
//!
//! One pool serves a whole process (CSM, its codec, the live-context encoder and the RVQ
//! search): if it is already running a job (a nested call, or a second thread using it), the
//! new job runs on its caller alone, so `run` never deadlocks and never oversubscribes.
//!
//! Beside a busy process a worker can still be preempted in the middle of a part it claimed,
//! and the caller then waits for it; the pool measures those waits and, when they eat more than
//! a quarter of its time, runs the next jobs on the caller alone for a while (and the workers
//! park, leaving their core to the other process), then tries again: `--threads 2` is then no
//! slower than `--threads 1`.
//!
//! A panic in a part is caught, the job is finished by the others, and the caller gets the
//! panic back; the pool stays usable (there is no lock to poison).

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it yields and then sleeps.
pub const SPIN_NS: u64 = 20_000;
/// Jobs per measurement window of the caller's waits (see [`Pool::run`]).
const WINDOW: u64 = 256;
/// A window in which the caller waited for workers' unfinished parts longer than this share
/// of its jobs' time (percent) means the workers are not getting a core.
const WAIT_PERCENT: u64 = 25;
/// Jobs run on the caller alone after such a window, doubling while it persists.
const SERIAL_BASE: u64 = 2048;
const SERIAL_MAX: u64 = 32 * 1024;
/// How long it then yields the CPU (`sched_yield`) before it parks.
const YIELD_NS: u64 = 100_000;
/// How often a caller parked for its job's last parts re-checks without being woken.
const CALLER_RECHECK: Duration = Duration::from_millis(1);

type Job = dyn Fn(usize) + Sync;

/// The job state word: generation in the high 32 bits, next unclaimed part in the low 32.
const PART_BITS: u32 = 32;
const PART_MASK: u64 = (1 << PART_BITS) - 1;

struct Shared {
    /// `generation << 32 | next part`; a worker claims part `p` of generation `g` with one
    /// compare-and-swap from `g << 32 | p` to `g << 32 | p + 1`.
    state: AtomicU64,
    /// Parts of the current job.
    parts: AtomicUsize,
    /// Parts finished in the current job.
    done: AtomicUsize,
    /// Set while a job runs: one job at a time (others run on their caller).
    busy: AtomicBool,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// Workers that have started (their thread set-up, which allocates, is done).
    started: AtomicUsize,
    /// Adaptivity (only touched by the thread that holds `busy`): the current window's jobs,
    /// their time and the caller's waits for workers (ns); jobs still to run on the caller
    /// alone, the next serial stretch; and totals for [`Pool::stats`].
    window_jobs: AtomicU64,
    window_ns: AtomicU64,
    window_wait_ns: AtomicU64,
    serial_left: AtomicU64,
    serial_next: AtomicU64,
    jobs_parallel: AtomicU64,
    jobs_serial: AtomicU64,
    /// The current job, valid while a part of it is unfinished.
    job: UnsafeCell<*const Job>,
    /// The thread that posted the current job (woken by the worker that finishes the last part).
    caller: UnsafeCell<Option<Thread>>,
}

// SAFETY: `job` and `caller` are written only by the thread that set `busy`, before the Release
// store that publishes a new generation, and while no part of any job is unfinished; a worker
// reads them only after claiming a part of the current generation (Acquire), and the job cannot
// finish (so they cannot be rewritten) until that part is done.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// The number of compute threads for a request of `requested` (0 means one per available CPU).
pub fn thread_count(requested: usize) -> usize {
    if requested == 0 {
        thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        requested
    }
}

/// A fixed-size pool of compute threads (see the module docs).
pub struct Pool {
    threads: usize,
    shared: Arc<Shared>,
    workers: Vec<(Thread, JoinHandle<()>)>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads)
    }
}

impl Pool {
    /// A pool of `threads` compute threads in all, the caller included (0 means one per
    /// available CPU, see [`thread_count`]).
    pub fn new(threads: usize) -> Pool {
        let threads = thread_count(threads);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(0),
            parts: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            started: AtomicUsize::new(0),
            window_jobs: AtomicU64::new(0),
            window_ns: AtomicU64::new(0),
            window_wait_ns: AtomicU64::new(0),
            serial_left: AtomicU64::new(0),
            serial_next: AtomicU64::new(SERIAL_BASE),
            jobs_parallel: AtomicU64::new(0),
            jobs_serial: AtomicU64::new(0),
            job: UnsafeCell::new(std::ptr::null::<fn(usize)>() as *const Job),
            caller: UnsafeCell::new(None),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = shared.clone();
                let h = thread::Builder::new()
                    .name(format!("edgecsm-compute-{i}"))
                    .spawn(move || worker(&s))
                    .expect("spawning a compute thread");
                (h.thread().clone(), h)
            })
            .collect();
        // a worker that starts late would do its thread set-up (and its allocations) in the
        // middle of some later job; wait until every worker is running
        while shared.started.load(Ordering::Acquire) < threads - 1 {
            thread::yield_now();
        }
        Pool {
            threads,
            shared,
            workers,
        }
    }

    /// Total number of threads that may work on a job (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(part)` for every part in `0..parts` and returns when all are done (see the
    /// module docs). Parts run in any order, on any thread, each exactly once. On a machine
    /// where the workers do not get a core, jobs run on the caller alone for a while (see
    /// `Pool::account`).
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        if parts == 0 {
            return;
        }
        if self.threads == 1 || parts == 1 {
            return (0..parts).for_each(f);
        }
        let s = &*self.shared;
        if s.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // in use (nested or concurrent): the whole job here
            return (0..parts).for_each(f);
        }
        assert!(
            (parts as u64) < PART_MASK,
            "pool: {parts} parts is too many for one job"
        );
        let left = s.serial_left.load(Ordering::Relaxed);
        if left > 0 {
            // the workers were not getting a core lately: do not wait for them
            s.serial_left.store(left - 1, Ordering::Relaxed);
            s.jobs_serial.fetch_add(1, Ordering::Relaxed);
            let r = catch_unwind(AssertUnwindSafe(|| (0..parts).for_each(f)));
            s.busy.store(false, Ordering::Release);
            if let Err(p) = r {
                std::panic::resume_unwind(p);
            }
            return;
        }
        let t0 = Instant::now();
        // SAFETY: we set `busy` and the previous job is finished (done == parts), so no worker
        // reads these cells now. The 'static lifetime is a lie the wait below makes true: `run`
        // does not return until every part, the only users of `f`, has finished.
        unsafe {
            *s.job.get() = std::mem::transmute::<&(dyn Fn(usize) + Sync), *const Job>(f);
            *s.caller.get() = Some(thread::current());
        }
        s.parts.store(parts, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        let generation = (s.state.load(Ordering::Relaxed) >> PART_BITS) + 1;
        s.state.store(generation << PART_BITS, Ordering::Release);
        for (t, _) in &self.workers {
            t.unpark();
        }
        let mut mine = Ok(());
        while let Some(p) = claim(s, generation) {
            if mine.is_ok() {
                mine = catch_unwind(AssertUnwindSafe(|| f(p)));
            }
            s.done.fetch_add(1, Ordering::Release);
        }
        let t1 = Instant::now();
        // bounded sleeps: the worker that finishes the last part wakes us, but should that
        // wake-up ever be lost (a CI run under qemu once hung here, never reproduced), the job
        // still ends within a millisecond of its last part instead of never
        wait(
            || s.done.load(Ordering::Acquire) == parts,
            Some(CALLER_RECHECK),
        );
        self.account(t1 - t0, t1.elapsed());
        s.busy.store(false, Ordering::Release);
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a compute thread panicked while running a job");
        }
    }

    /// Adapts to a busy machine: after each window of jobs, if the caller spent more than
    /// [`WAIT_PERCENT`] of the time waiting for parts that workers had claimed but not finished
    /// (a worker the scheduler put aside mid-part), the next jobs run on the caller alone for a
    /// stretch (doubling while it persists, reset after a good window), so a second thread
    /// never makes things slower than one; then it tries the workers again.
    fn account(&self, own: std::time::Duration, waited: std::time::Duration) {
        let s = &*self.shared;
        s.jobs_parallel.fetch_add(1, Ordering::Relaxed);
        let (own, waited) = (own.as_nanos() as u64, waited.as_nanos() as u64);
        let ns = s.window_ns.fetch_add(own + waited, Ordering::Relaxed) + own + waited;
        let wait = s.window_wait_ns.fetch_add(waited, Ordering::Relaxed) + waited;
        if s.window_jobs.fetch_add(1, Ordering::Relaxed) + 1 < WINDOW {
            return;
        }
        let next = s.serial_next.load(Ordering::Relaxed);
        if wait * 100 > ns * WAIT_PERCENT {
            s.serial_left.store(next, Ordering::Relaxed);
            s.serial_next
                .store((2 * next).min(SERIAL_MAX), Ordering::Relaxed);
        } else {
            s.serial_next.store(SERIAL_BASE, Ordering::Relaxed);
        }
        s.window_jobs.store(0, Ordering::Relaxed);
        s.window_ns.store(0, Ordering::Relaxed);
        s.window_wait_ns.store(0, Ordering::Relaxed);
    }

    /// Jobs run so far in parallel and on the caller alone because the workers were not getting
    /// a core (see [`Pool::run`]).
    pub fn stats(&self) -> (u64, u64) {
        let s = &*self.shared;
        (
            s.jobs_parallel.load(Ordering::Relaxed),
            s.jobs_serial.load(Ordering::Relaxed),
        )
    }

    /// How many parts to cut a job of `units` equal units into, for a pool of this size: about
    /// four per thread (so a thread that is late or preempted holds up little), each at least
    /// `min_units` long.
    pub fn parts_for(&self, units: usize, min_units: usize) -> usize {
        if self.threads == 1 {
            return 1;
        }
        units.div_ceil(min_units.max(1)).clamp(1, 4 * self.threads)
    }

    /// Splits `0..len` into `parts` contiguous ranges whose starts are multiples of `align`
    /// and returns the range of `part`.
    pub fn split(len: usize, part: usize, parts: usize, align: usize) -> std::ops::Range<usize> {
        let units = len.div_ceil(align);
        let lo = (units * part / parts * align).min(len);
        let hi = (units * (part + 1) / parts * align).min(len);
        lo..hi
    }
}

/// Claims the next unfinished part of job `generation`, or None when all are claimed or the
/// job is no longer current.
fn claim(s: &Shared, generation: u64) -> Option<usize> {
    let mut cur = s.state.load(Ordering::Acquire);
    loop {
        if cur >> PART_BITS != generation {
            return None;
        }
        let p = (cur & PART_MASK) as usize;
        if p >= s.parts.load(Ordering::Relaxed) {
            return None;
        }
        match s
            .state
            .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return Some(p),
            Err(c) => cur = c,
        }
    }
}

/// Waits until `ready()`: spins [`SPIN_NS`], then yields the CPU for a while, then parks until
/// whoever makes `ready` true unparks this thread (an unpark that comes between the check and
/// the park leaves a token, so it is never lost; a spurious wake-up re-checks), or for at most
/// `recheck` at a time if given.
fn wait(mut ready: impl FnMut() -> bool, recheck: Option<Duration>) {
    if ready() {
        return;
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready() {
                return;
            }
            std::hint::spin_loop();
        }
        // reading the clock every 64 spins keeps its cost out of the fast path
        let ns = start.elapsed().as_nanos() as u64;
        if ns < SPIN_NS {
            continue;
        }
        if ready() {
            return;
        }
        if ns < SPIN_NS + YIELD_NS {
            thread::yield_now();
        } else if let Some(d) = recheck {
            thread::park_timeout(d);
        } else {
            thread::park();
        }
    }
}

fn worker(s: &Shared) {
    s.started.fetch_add(1, Ordering::Release);
    let mut seen = 0u64;
    loop {
        let mut generation = seen;
        // an idle worker sleeps until woken (one that is not only leaves its parts to others)
        wait(
            || {
                generation = s.state.load(Ordering::Acquire) >> PART_BITS;
                generation != seen || s.shutdown.load(Ordering::Relaxed)
            },
            None,
        );
        if s.shutdown.load(Ordering::Acquire) {
            return;
        }
        seen = generation;
        while let Some(p) = claim(s, generation) {
            // SAFETY: we own part p of the current job, which keeps the job (and these cells)
            // alive and unchanged until we count the part done below.
            let job = unsafe { &**s.job.get() };
            if catch_unwind(AssertUnwindSafe(|| job(p))).is_err() {
                s.panicked.store(true, Ordering::Relaxed);
            }
            // SAFETY: as above; read before the part is counted done.
            let caller = unsafe { (*s.caller.get()).clone() };
            let parts = s.parts.load(Ordering::Relaxed);
            if s.done.fetch_add(1, Ordering::AcqRel) + 1 == parts {
                if let Some(c) = caller {
                    c.unpark();
                }
                break;
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for (t, h) in self.workers.drain(..) {
            t.unpark();
            let _ = h.join();
        }
    }
}

/// A raw pointer that may be shared between the parts of a job which write disjoint ranges.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub *mut T);

impl<T> SyncPtr<T> {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: users only write through it to ranges no other part touches.
unsafe impl<T> Sync for SyncPtr<T> {}
unsafe impl<T> Send for SyncPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_per_job() {
        for threads in [1, 2, 3] {
            let pool = Pool::new(threads);
            for parts in [1, 2, 3, 7, 64] {
                for _ in 0..200 {
                    let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                    pool.run(parts, &|p| {
                        hits[p].fetch_add(1, Ordering::Relaxed);
                    });
                    assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                }
            }
        }
    }

    #[test]
    fn nested_and_concurrent_use_runs_on_the_caller_instead_of_deadlocking() {
        let pool = Pool::new(2);
        let count = AtomicUsize::new(0);
        pool.run(4, &|_| {
            pool.run(3, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(count.load(Ordering::Relaxed), 12);
        // two threads posting jobs at once
        let pool = Arc::new(Pool::new(2));
        let total = Arc::new(AtomicUsize::new(0));
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let (pool, total) = (pool.clone(), total.clone());
                thread::spawn(move || {
                    for _ in 0..2000 {
                        pool.run(5, &|_| {
                            total.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Relaxed), 2 * 2000 * 5);
    }

    #[test]
    fn a_job_does_not_wait_for_a_worker_that_is_not_running() {
        // A part that blocks its thread until every other part has run: it can only finish if
        // the others are claimed by someone else (the caller) — with static splitting into
        // one part per thread this deadlocks whenever the worker takes the blocking part
        // first; with claiming the caller runs the rest.
        let pool = Pool::new(2);
        for _ in 0..50 {
            let done = AtomicUsize::new(0);
            let parts = 8;
            pool.run(parts, &|p| {
                if p == 0 {
                    let t = Instant::now();
                    while done.load(Ordering::Acquire) < parts - 1 {
                        assert!(t.elapsed().as_secs() < 10, "other parts stalled");
                        thread::yield_now();
                    }
                }
                done.fetch_add(1, Ordering::Release);
            });
            assert_eq!(done.load(Ordering::Relaxed), parts);
        }
    }

    #[test]
    fn split_covers_the_range_with_aligned_starts() {
        for len in [0, 1, 5, 64, 100, 2051] {
            for parts in 1..5 {
                let mut next = 0;
                for p in 0..parts {
                    let r = Pool::split(len, p, parts, 4);
                    assert_eq!(r.start, next);
                    assert!(r.start.is_multiple_of(4) || r.start == len);
                    next = r.end;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn a_panicking_part_is_reported_and_the_pool_recovers() {
        let pool = Pool::new(2);
        for bad in [0, 3] {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run(4, &|p| assert!(p != bad, "boom"))
            }));
            assert!(r.is_err());
            // the pool still works in parallel afterwards (no poisoned lock, no serial mode)
            let count = AtomicUsize::new(0);
            pool.run(16, &|_| {
                count.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(count.load(Ordering::Relaxed), 16);
            assert!(!pool.shared.busy.load(Ordering::Relaxed));
        }
    }
}
