//! Streaming encode/decode against batch encode/decode on the fixtures, seams at frame
//! boundaries, and positions far past any table (fast-forwarded and run). The timing behind
//! the RVQ search's serial/parallel cut-over is `benches/rvq.rs`.

mod common;
mod mimi_common;

use edgecsm::kernels::Pool;
use edgecsm::mimi::{Mimi, MimiDecoderStream, MimiEncoderStream};
use mimi_common::*;
use std::sync::Arc;

/// The fixture codec with a `threads`-thread pool; `cutover` 0 forces the pooled search.
fn load(name: &str, threads: usize, cutover: Option<usize>) -> Arc<Mimi> {
    let mut m = Mimi::load(fixture_dir(name)).unwrap();
    m.set_pool(Arc::new(Pool::new(threads)));
    if let Some(c) = cutover {
        m.set_rvq_parallel_cutover(c);
    }
    Arc::new(m)
}

fn stream_encode(mimi: &Arc<Mimi>, pcm: &[f32], start: u64) -> Vec<Vec<u32>> {
    let nq = mimi.num_quantizers();
    let mut s = MimiEncoderStream::starting_at(mimi.clone(), nq, start).unwrap();
    let mut rows = vec![Vec::new(); nq];
    let mut codes = vec![0u32; nq];
    for frame in pcm.chunks_exact(mimi.frame_size()) {
        s.encode_frame(frame, &mut codes).unwrap();
        for (r, c) in rows.iter_mut().zip(&codes) {
            r.push(*c);
        }
    }
    rows
}

fn stream_decode(mimi: &Arc<Mimi>, rows: &[Vec<u32>], start: u64) -> Vec<f32> {
    let mut s = MimiDecoderStream::starting_at(mimi.clone(), start).unwrap();
    let fs = mimi.frame_size();
    let frames = rows[0].len();
    let mut out = vec![0f32; frames * fs];
    let mut codes = vec![0u32; rows.len()];
    for (f, o) in out.chunks_exact_mut(fs).enumerate() {
        for (c, r) in codes.iter_mut().zip(rows) {
            *c = r[f];
        }
        s.decode_frame(&codes, o).unwrap();
    }
    out
}

/// Max error within `w` samples of every frame boundary.
fn seam_err(a: &[f32], b: &[f32], fs: usize, w: usize) -> f32 {
    let mut m = 0f32;
    for edge in (fs..a.len()).step_by(fs) {
        for i in edge.saturating_sub(w)..(edge + w).min(a.len()) {
            m = m.max((a[i] - b[i]).abs());
        }
    }
    m
}

#[test]
fn streaming_encode_gives_batch_codes() {
    for name in ["a", "b"] {
        let dir = fixture_dir(name);
        // serial search on one thread, and the pooled search forced on two
        for (threads, cutover) in [(1, None), (2, Some(0))] {
            let mimi = load(name, threads, cutover);
            let fs = mimi.frame_size();
            for input in inputs(&dir) {
                let (pcm, _) = f32s(&dir, &format!("{input}.input.npy"));
                let whole = &pcm[..pcm.len() / fs * fs];
                let batch = mimi.encode(whole, mimi.num_quantizers()).unwrap();
                let stream = stream_encode(&mimi, whole, 0);
                assert_eq!(stream, batch, "{name}/{input} threads {threads}");
                // and the reference codes of a whole-frame input
                if whole.len() == pcm.len() {
                    assert_eq!(stream, codes(&dir, &format!("{input}.codes.npy")));
                }
                println!(
                    "{name}/{input} ({threads} threads): {} frames, stream codes == batch codes",
                    batch[0].len()
                );
            }
        }
    }
}

#[test]
fn streaming_decode_matches_batch_decode_without_seams() {
    for name in ["a", "b"] {
        let dir = fixture_dir(name);
        let mimi = load(name, 2, None);
        let fs = mimi.frame_size();
        let mut sets: Vec<(String, Vec<Vec<u32>>)> = inputs(&dir)
            .into_iter()
            .map(|i| (i.clone(), codes(&dir, &format!("{i}.codes.npy"))))
            .collect();
        let random = codes(&dir, "random.codes.npy");
        let k = mimi.num_semantic_quantizers() + 1;
        sets.push(("random-first".into(), random[..k].to_vec()));
        sets.push(("random".into(), random));
        for (what, rows) in sets {
            let batch = mimi.decode(&rows).unwrap();
            let stream = stream_decode(&mimi, &rows, 0);
            let peak = max_abs(&batch);
            let err = max_err(&stream, &batch);
            let seam = seam_err(&stream, &batch, fs, 8);
            println!(
                "{name}/{what}: {} frames, stream vs batch decode max err {err:.3e} \
                 (peak {peak:.3}), at frame seams {seam:.3e}",
                rows[0].len()
            );
            assert!(err <= 1e-4 * peak, "{name}/{what}: {err} vs peak {peak}");
            // against the reference decode too, where the fixture has one
            let file = format!("{what}.decoded.npy");
            if dir.join(&file).exists() {
                let (r, _) = f32s(&dir, &file);
                let e = max_err(&stream, &r);
                println!("  stream vs reference decode max err {e:.3e}");
                assert!(e <= 1e-4 * max_abs(&r));
            }
        }
    }
}

#[test]
fn fast_forwarded_positions_give_the_same_output() {
    for name in ["a", "b"] {
        let dir = fixture_dir(name);
        let mimi = load(name, 1, None);
        let fs = mimi.frame_size();
        let input = &inputs(&dir)[0];
        let (pcm, _) = f32s(&dir, &format!("{input}.input.npy"));
        let whole = &pcm[..pcm.len() / fs * fs];
        let rows = stream_encode(&mimi, whole, 0);
        let pcm0 = stream_decode(&mimi, &rows, 0);
        for start in [8_193u64, 1_000_000_000, 1 << 40] {
            assert_eq!(
                stream_encode(&mimi, whole, start),
                rows,
                "{name} at {start}"
            );
            let pcm1 = stream_decode(&mimi, &rows, start);
            let err = max_err(&pcm1, &pcm0);
            println!("{name}: decoder stream at position {start}: max err {err:.3e} vs position 0");
            assert!(err <= 1e-4 * max_abs(&pcm0), "{name} at {start}: {err}");
        }
    }
}

/// A deterministic test signal: a few sines and some noise.
fn signal(n: usize) -> Vec<f32> {
    let noise = common::rand_vec(n, 7);
    (0..n)
        .map(|i| {
            let t = i as f32 / 24000.0;
            0.4 * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
                + 0.2
                    * (2.0 * std::f32::consts::PI * 1330.0 * t * (1.0 + 0.1 * (0.7 * t).sin()))
                        .sin()
                + 0.025 * noise[i]
        })
        .collect()
}

#[test]
fn streams_run_past_8192_steps_and_agree_with_a_fresh_start() {
    // fixture a: 96-sample frames, 2 transformer steps per frame; 4200 frames = 8400 steps
    let mimi = load("a", 1, None);
    let fs = mimi.frame_size();
    let nq = mimi.num_quantizers();
    let frames = 4200;
    let tail = 40; // frames compared at the end
    let warm = 60; // frames a fresh stream sees first (more than the receptive field)
    let pcm = signal(frames * fs);
    let long = stream_encode(&mimi, &pcm, 0);
    let from = frames - tail - warm;
    let fresh = stream_encode(&mimi, &pcm[from * fs..], 0);
    for q in 0..nq {
        assert_eq!(long[q][frames - tail..], fresh[q][warm..], "codebook {q}");
    }
    // batch encoding splits 100 frames into several bounded chunks: same codes
    let batch = mimi.encode(&pcm[..100 * fs], nq).unwrap();
    for q in 0..nq {
        assert_eq!(batch[q], long[q][..100], "batch codebook {q}");
    }
    let mut e = MimiEncoderStream::new(mimi.clone(), nq).unwrap();
    let mut c = vec![0u32; nq];
    for f in pcm.chunks_exact(fs) {
        e.encode_frame(f, &mut c).unwrap();
    }
    assert_eq!(e.position(), 2 * frames as u64);

    let long_pcm = stream_decode(&mimi, &long, 0);
    let cut: Vec<Vec<u32>> = long.iter().map(|r| r[from..].to_vec()).collect();
    let fresh_pcm = stream_decode(&mimi, &cut, 0);
    let a = &long_pcm[(frames - tail) * fs..];
    let b = &fresh_pcm[warm * fs..];
    let err = max_err(a, b);
    println!(
        "encoder: last {tail} of {frames} frames (position {}) == fresh stream; decoder max err \
         {err:.3e} (peak {:.3})",
        e.position(),
        max_abs(a)
    );
    assert!(
        err <= 1e-4 * max_abs(a),
        "decoder after {frames} frames: {err}"
    );
}
