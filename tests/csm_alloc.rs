//! The CSM frame loop allocates nothing: after warm-up, each generated frame (backbone step,
//! codebook-0 head, depth decoder over all codebooks, sampling, feeding the frame back) makes
//! zero heap allocations on a 2-thread pool, worker threads included (counted by a global
//! allocator wrapper). One test function only: the counter is process-wide.

mod csm_common;

use csm_common::*;
use edgecsm::csm::{Conversation, GenerateOptions, InvalidCodes, SamplingParams, Segment};
use edgecsm::kernels::Pool;
use std::alloc::{GlobalAlloc, Layout, System};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn generated_frames_allocate_nothing_after_warm_up() {
    let names = fixture_names();
    assert!(
        !names.is_empty(),
        "no CSM fixtures under {}",
        fixture_root().display()
    );
    for name in names {
        let dir = fixture_root().join(&name);
        let mut csm = load(&dir);
        csm.set_pool(Arc::new(Pool::new(2)));
        let csm = Arc::new(csm);
        let ids = u32s(&dir.join("context_input_ids.npy")).0;
        let codes = u32s(&dir.join("context_audio_codes.npy")).0;
        for params in [SamplingParams::GREEDY, SamplingParams::CSM_DEFAULT] {
            let mut conv = Conversation::new(csm.clone());
            let frames = 24;
            let mut opts = GenerateOptions::greedy(frames);
            opts.backbone = params;
            opts.depth = params;
            opts.seed = 3;
            // frames the codec cannot decode are still frames the model runs
            opts.invalid_codes = InvalidCodes::Keep;
            let mut marks = Vec::with_capacity(frames + 1);
            let g = conv
                .generate(
                    Segment::new("ctx", ids.clone(), codes.clone()),
                    &opts,
                    |_| {
                        marks.push(ALLOCS.load(Ordering::SeqCst));
                        ControlFlow::Continue(())
                    },
                )
                .unwrap();
            assert!(
                g.frames >= 8,
                "{name}: only {} frames ({:?})",
                g.frames,
                g.stop
            );
            // between two callbacks: feed the frame back, produce the next one
            let per_frame: Vec<usize> = marks.windows(2).map(|w| w[1] - w[0]).collect();
            println!(
                "{name} {params:?}: {} frames, allocations between frames after the first two: {:?}",
                g.frames,
                &per_frame[2..]
            );
            assert!(
                per_frame[2..].iter().all(|&a| a == 0),
                "{name}: frames allocate: {per_frame:?}"
            );
        }
    }
}
