//! A persistent spin-then-park thread pool for the per-token grain.
//!
//! A decode step is a few dozen matrix-vector products of well under a millisecond each, so the
//! cost of handing work to threads is paid many times per frame. This pool keeps its workers
//! alive, spinning briefly after each job and then parking, and hands out one job at a time as
//! a borrowed closure: posting a job is two atomic operations and a (usually free) unpark, with
//! no allocation. `benches/kernels.rs` measures it against rayon at that grain. Rayon stays the
//! tool for coarse work (the RVQ search, batch encoding).
//!
//! A job is `f(part, parts)` run once for every `part` in `0..parts` where `parts` is the pool
//! size; the caller runs part 0. If the pool is already busy (a nested call, or a second thread
//! using the same pool) the job runs serially on the caller, so `run` never deadlocks.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};

/// How many spin iterations a waiting thread makes before parking (tens of microseconds).
const SPIN: u32 = 1 << 14;

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    /// Bumped (Release) after `job` is written; workers compare it with the last one they ran.
    generation: AtomicUsize,
    /// Workers that have not finished the current job.
    pending: AtomicUsize,
    shutdown: AtomicBool,
    panicked: AtomicBool,
    /// The current job, valid from a generation bump until `pending` reaches zero.
    job: UnsafeCell<*const Job>,
    /// The thread that posted the current job (woken by the last worker to finish).
    caller: UnsafeCell<Option<Thread>>,
    /// Held for the length of a job: one job at a time.
    busy: Mutex<()>,
}

// SAFETY: `job` and `caller` are written only by the thread holding `busy`, before the Release
// bump of `generation`, and read by workers only after the matching Acquire load; they are not
// written again until every worker has decremented `pending`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

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
    /// available CPU).
    pub fn new(threads: usize) -> Pool {
        let threads = if threads == 0 {
            thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(std::ptr::null::<fn(usize, usize)>() as *const Job),
            caller: UnsafeCell::new(None),
            busy: Mutex::new(()),
        });
        let workers = (1..threads)
            .map(|part| {
                let s = shared.clone();
                let h = thread::Builder::new()
                    .name(format!("edgecsm-compute-{part}"))
                    .spawn(move || worker(&s, part, threads))
                    .expect("spawning a compute thread");
                (h.thread().clone(), h)
            })
            .collect();
        Pool {
            threads,
            shared,
            workers,
        }
    }

    /// Total number of threads working on a job (the caller included).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(part, parts)` for every part in `0..parts` and returns when all are done.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        if self.threads == 1 {
            return f(0, 1);
        }
        let Ok(_guard) = self.shared.busy.try_lock() else {
            // Busy (nested or concurrent use): do the whole job here.
            for p in 0..self.threads {
                f(p, self.threads);
            }
            return;
        };
        let s = &*self.shared;
        // SAFETY: we hold `busy` and every worker finished the previous job (pending == 0), so
        // no one reads these cells now. The 'static lifetime is a lie the wait below makes
        // true: `run` does not return until no worker can touch `f` any more.
        unsafe {
            *s.job.get() = std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), *const Job>(f);
            *s.caller.get() = Some(thread::current());
        }
        s.pending.store(self.threads - 1, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::Release);
        for (t, _) in &self.workers {
            t.unpark();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0, self.threads)));
        let mut spins = 0;
        while s.pending.load(Ordering::Acquire) != 0 {
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::park();
            }
        }
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a compute thread panicked while running a job");
        }
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

fn worker(s: &Shared, part: usize, parts: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0;
        loop {
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if spins < SPIN {
                spins += 1;
                std::hint::spin_loop();
            } else {
                thread::park();
            }
        }
        // SAFETY: the Acquire load of the new generation orders this read after the caller's
        // write; the caller keeps `f` alive until `pending` reaches zero below.
        let (job, caller) = unsafe { (&**s.job.get(), (*s.caller.get()).clone()) };
        if catch_unwind(AssertUnwindSafe(|| job(part, parts))).is_err() {
            s.panicked.store(true, Ordering::Relaxed);
        }
        if s.pending.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(c) = caller
        {
            c.unpark();
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
            for _ in 0..200 {
                let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|p, n| {
                    assert_eq!(n, threads);
                    hits[p].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn nested_use_runs_serially_instead_of_deadlocking() {
        let pool = Pool::new(2);
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            pool.run(&|_, _| {
                count.fetch_add(1, Ordering::Relaxed);
            })
        });
        assert_eq!(count.load(Ordering::Relaxed), 4);
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
    fn a_panicking_part_is_reported_to_the_caller() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(&|p, _| assert!(p != 1, "boom"))
        }));
        assert!(r.is_err());
        // the pool still works afterwards
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }
}
