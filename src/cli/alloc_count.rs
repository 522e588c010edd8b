//! The binary's global allocator: the system allocator, plus a count of the allocations made
//! by threads that asked to be counted (the audio loop's capture, compute and playback threads
//! mark themselves through `StreamConfig::thread_hook`). Unmarked threads pay one thread-local
//! read per allocation; nothing else changes. `edgecsm loop --json` reports the count, so a
//! soak can check that the steady state does not allocate.

use edgecsm::stream::ThreadRole;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

fn counted() -> bool {
    // during thread teardown the thread-local may be gone: such a thread is not counted
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the wrapper only bumps
// an atomic counter, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: our caller upholds `GlobalAlloc::alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: our caller upholds `GlobalAlloc::alloc_zeroed`'s contract, which is System's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System through this allocator, with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from System through this allocator; our caller upholds the rest
        // of `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts the calling thread's allocations from now on (fits `StreamConfig::thread_hook`).
pub fn count_this_thread(_role: ThreadRole) {
    COUNTED.with(|c| c.set(true));
}

/// Allocations (alloc, alloc_zeroed, realloc) made so far by counted threads.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_marked_threads() {
        let unmarked = std::thread::spawn(|| {
            let before = allocations();
            std::hint::black_box(vec![0u8; 100]);
            allocations() - before
        });
        // other tests' threads are never marked, so an unmarked thread adds nothing
        assert_eq!(unmarked.join().unwrap(), 0);
        let marked = std::thread::spawn(|| {
            count_this_thread(ThreadRole::Compute);
            let before = allocations();
            std::hint::black_box(vec![0u8; 100]);
            let mut v: Vec<u8> = Vec::with_capacity(1);
            v.extend_from_slice(&[1; 64]);
            std::hint::black_box(&v);
            allocations() - before
        });
        assert_eq!(marked.join().unwrap(), 3);
    }
}
