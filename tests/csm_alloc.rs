//! The CSM frame loop allocates nothing: after warm-up, each generated frame (backbone step,
//! codebook-0 head, depth decoder over all codebooks, sampling, feeding the frame back) makes
//! zero heap allocations on a 2-thread pool, worker threads included (counted by a global
//! allocator wrapper); so does a model generating fewer codebooks than it has
//! (`Csm::set_codebooks`). One test function only: the counter is process-wide.

mod csm_common;

mod counting_alloc;
use csm_common::*;
use edgecsm::csm::{Conversation, GenerateOptions, InvalidCodes, SamplingParams, Segment};
use edgecsm::kernels::Pool;
use std::ops::ControlFlow;
use std::sync::Arc;

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
        let ids = u32s(&dir.join("context_input_ids.npy")).0;
        let all_codes = u32s(&dir.join("context_audio_codes.npy")).0;
        let all = load(&dir).num_codebooks();
        for (n, params) in [
            (all, SamplingParams::GREEDY),
            (all, SamplingParams::CSM_DEFAULT),
            (2, SamplingParams::CSM_DEFAULT),
        ] {
            let mut csm = load(&dir);
            csm.set_codebooks(n).unwrap();
            csm.set_pool(Arc::new(Pool::new(2))).unwrap();
            let csm = Arc::new(csm);
            // the context's frames cut to the codebooks in use
            let codes: Vec<u32> = all_codes
                .chunks_exact(all)
                .flat_map(|f| &f[..n])
                .copied()
                .collect();
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
                        marks.push(counting_alloc::all());
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
                "{name} {n} codebooks {params:?}: {} frames, allocations between frames after the \
                 first two: {:?}",
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
