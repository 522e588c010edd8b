//! A counting global allocator for the zero-allocation tests: it forwards to the system
//! allocator and counts allocations (and reallocations) made on any thread, and separately
//! those made on threads that marked themselves (e.g. a loop's audio threads through its
//! thread hook), by class so that a test can tell kinds of threads apart. It also records the
//! largest single allocation made on each thread (for the fuzz tests' bound on what a parser
//! may allocate). A test binary that declares `mod counting_alloc;` installs it.
#![allow(dead_code)] // each test uses one of the two counts

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Thread classes a test can tell apart (class 0 = not counted).
const CLASSES: usize = 4;

thread_local! {
    static CLASS: Cell<usize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}
static ALL: AtomicUsize = AtomicUsize::new(0);
static BY_CLASS: [AtomicU64; CLASSES] = [const { AtomicU64::new(0) }; CLASSES];

struct Counting;

impl Counting {
    fn count_size(&self, size: usize) {
        self.count();
        // `try_with`: as below; a const thread-local with no destructor never allocates
        let _ = LARGEST.try_with(|c| {
            if size > c.get() {
                c.set(size);
            }
        });
    }

    fn count(&self) {
        ALL.fetch_add(1, Ordering::Relaxed);
        // `try_with`: the thread-local may already be gone while a thread exits
        let class = CLASS.try_with(Cell::get).unwrap_or(0);
        if class != 0 {
            BY_CLASS[class].fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        self.count_size(l.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        self.count_size(n);
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

/// Allocations so far on marked threads (every class).
pub fn marked() -> u64 {
    BY_CLASS[1..].iter().map(|c| c.load(Ordering::SeqCst)).sum()
}

/// Allocations so far on threads marked as `class` (1..4).
pub fn marked_as(class: usize) -> u64 {
    BY_CLASS[class].load(Ordering::SeqCst)
}

/// Marks (or unmarks) the calling thread as one whose allocations [`marked`] counts.
pub fn mark_current_thread(on: bool) {
    mark_current_thread_as(usize::from(on));
}

/// Marks the calling thread as of `class` (1..4; 0 unmarks it).
pub fn mark_current_thread_as(class: usize) {
    assert!(class < CLASSES, "thread class {class} out of range");
    CLASS.with(|c| c.set(class));
}

/// The largest single allocation (or reallocation) in bytes made on the calling thread since
/// the last [`reset_largest`].
pub fn largest() -> usize {
    LARGEST.with(Cell::get)
}

/// Starts a new [`largest`] measurement on the calling thread.
pub fn reset_largest() {
    LARGEST.with(|c| c.set(0));
}
