//! The streaming frame path allocates nothing: after warm-up, encoder and decoder streams on a
//! 2-thread pool make zero heap allocations per frame (counted by a global allocator wrapper,
//! worker threads included). Also records why the single-frame RVQ search does not use rayon:
//! posting work to rayon's pool from outside it allocates now and then.
//!
//! One test function only: the counter is process-wide, so nothing may run beside it. It is
//! kept well under a minute in debug builds: at 60 s the test harness prints a "has been
//! running for over 60 seconds" notice, and formatting it allocates on the harness thread.

mod mimi_common;

mod counting_alloc;
use edgecsm::kernels::Pool;
use edgecsm::mimi::{Mimi, MimiDecoderStream, MimiEncoderStream};
use mimi_common::*;
use std::sync::Arc;

fn count<F: FnMut()>(mut f: F) -> usize {
    let before = counting_alloc::all();
    f();
    counting_alloc::all() - before
}

fn stream_frames_allocate_nothing(name: &str, cutover: usize, rounds: usize) {
    let mut m = Mimi::load(fixture_dir(name)).unwrap();
    m.set_pool(Arc::new(Pool::new(2)));
    m.set_rvq_parallel_cutover(cutover);
    let mimi = Arc::new(m);
    let fs = mimi.frame_size();
    let nq = mimi.num_quantizers();
    let dir = fixture_dir(name);
    let input = &inputs(&dir)[0];
    let (pcm, _) = f32s(&dir, &format!("{input}.input.npy"));
    let frames: Vec<&[f32]> = pcm.chunks_exact(fs).collect();
    let mut enc = MimiEncoderStream::new(mimi.clone(), nq).unwrap();
    let mut dec = MimiDecoderStream::new(mimi.clone()).unwrap();
    let mut codes = vec![0u32; nq];
    let mut out = vec![0f32; fs];
    // warm-up: thread handles, lazy statics
    for f in &frames[..2] {
        enc.encode_frame(f, &mut codes).unwrap();
        dec.decode_frame(&codes, &mut out).unwrap();
    }
    let mut enc_allocs = 0;
    let mut dec_allocs = 0;
    for _ in 0..rounds {
        for f in &frames {
            enc_allocs += count(|| enc.encode_frame(f, &mut codes).unwrap());
            dec_allocs += count(|| dec.decode_frame(&codes, &mut out).unwrap());
        }
    }
    println!(
        "{name} (rvq cut-over {cutover}): {} frames each way on a 2-thread pool: encoder {enc_allocs} \
         allocations, decoder {dec_allocs}",
        rounds * frames.len()
    );
    assert_eq!(enc_allocs, 0, "{name}: encoder stream allocated");
    assert_eq!(dec_allocs, 0, "{name}: decoder stream allocated");
}

/// Counts the allocations of small jobs posted to rayon's global pool from a thread outside
/// it, after warm-up. A finding, printed; asserted only to be counted.
fn rayon_allocations_from_outside() -> (usize, usize) {
    use rayon::prelude::*;
    let data = vec![1u64; 64];
    let job = || {
        data.par_chunks(16)
            .map(|c| c.iter().sum::<u64>())
            .sum::<u64>()
    };
    for _ in 0..100 {
        std::hint::black_box(job());
    }
    let calls = 2000;
    let n = count(|| {
        for _ in 0..calls {
            std::hint::black_box(job());
        }
    });
    (n, calls)
}

#[test]
fn streams_make_no_allocation_per_frame() {
    for (name, rounds) in [("a", 10), ("b", 2)] {
        // pooled RVQ search forced, then serial
        stream_frames_allocate_nothing(name, 0, rounds);
        stream_frames_allocate_nothing(name, usize::MAX, rounds);
    }
    let (n, calls) = rayon_allocations_from_outside();
    println!(
        "rayon: {n} heap allocations over {calls} small par_iter calls posted from outside its \
         pool after warm-up"
    );
}
