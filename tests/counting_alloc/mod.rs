//! A counting global allocator for the zero-allocation tests: it forwards to the system
//! allocator and counts allocations (and reallocations) made on any thread, and separately
//! those made on threads that marked themselves (e.g. a loop's audio threads through its
//! thread hook). A test binary that declares `mod counting_alloc;` installs it.
#![allow(dead_code)] // each test uses one of the two counts

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

thread_local! {
    static MARKED: Cell<bool> = const { Cell::new(false) };
}
static ALL: AtomicUsize = AtomicUsize::new(0);
static ON_MARKED: AtomicU64 = AtomicU64::new(0);

struct Counting;

impl Counting {
    fn count(&self) {
        ALL.fetch_add(1, Ordering::Relaxed);
        // `try_with`: the thread-local may already be gone while a thread exits
        if MARKED.try_with(Cell::get).unwrap_or(false) {
            ON_MARKED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        self.count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations so far on every thread.
pub fn all() -> usize {
    ALL.load(Ordering::SeqCst)
}

/// Allocations so far on marked threads.
pub fn marked() -> u64 {
    ON_MARKED.load(Ordering::SeqCst)
}

/// Marks (or unmarks) the calling thread as one whose allocations [`marked`] counts.
pub fn mark_current_thread(on: bool) {
    MARKED.with(|c| c.set(on));
}
