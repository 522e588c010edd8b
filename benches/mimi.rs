//! Mimi real-time factor (processing time / audio duration) at the full kyutai/mimi size.
//!
//! Builds the published configuration (512 hidden, 64 filters, ratios [8, 6, 5, 4], 8 + 8
//! transformer layers, 32 quantizers x 2048 x 256) with deterministic random weights in a
//! temporary directory (see `mimi/synth.rs`; nothing is committed or downloaded), converts it
//! to F16 and Q8 with `edgecsm::quantize`, and times, for each weight format and 1 and 2
//! threads: batch `encode` (all 32 codebooks) and `decode` of a clip, and the same clip frame
//! by frame through `MimiEncoderStream` / `MimiDecoderStream`. Prints a Markdown table with the
//! columns of `tools/bench_mimi_torch.py` (the PyTorch reference), so rows can be compared.
//!
//!     cargo bench --bench mimi                 # 10 s clip, median of 3 runs
//!     cargo bench --bench mimi -- --quick      # 0.24 s clip, 1 thread, one run
//!     cargo bench --bench mimi -- --dtype q8 --threads 1   # one format, one thread count
//!                                              # (or EDGECSM_BENCH_QUICK=1)
//!     cargo bench --bench mimi -- --profile 100   # f32 (or --dtype), 1 thread, streaming only,
//!                                              # 100 frames each way, median of 3 thread
//!                                              # CPU times (for perf record; no batch rows)

#[path = "common/mod.rs"]
mod common;

use common::{boards, median, models, thread_cpu_secs};
use edgecsm::kernels::{Kernels, Pool};
use edgecsm::mimi::{Mimi, MimiConfig, MimiDecoderStream, MimiEncoderStream};
use edgecsm::synth::SynthDtype;
use edgecsm::weights::Weights;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

struct Settings {
    /// Clip length in code frames (80 ms each).
    frames: usize,
    reps: usize,
    threads: Vec<usize>,
    dtypes: Vec<SynthDtype>,
    /// Profiling run: f32 weights only, streaming only, no batch rows.
    profile: bool,
}

fn settings() -> Settings {
    let profile = common::arg("--profile");
    let dtypes: Vec<String> = common::list(
        "--dtype",
        &if profile.is_some() {
            vec!["f32".into()]
        } else {
            vec!["f32".into(), "f16".into(), "q8".into()]
        },
    );
    let dtypes: Vec<SynthDtype> = dtypes
        .iter()
        .map(|d| SynthDtype::parse(d).unwrap_or_else(|e| panic!("--dtype: {e}")))
        .collect();
    if let Some(frames) = profile {
        return Settings {
            frames: frames.parse().expect("--profile takes a frame count"),
            reps: 3,
            threads: vec![1],
            dtypes,
            profile: true,
        };
    }
    let quick = common::quick();
    Settings {
        // 10 s, or short enough to finish well under a minute even with slow weights
        frames: if quick { 3 } else { 125 },
        reps: if quick { 1 } else { 3 },
        threads: common::list("--threads", if quick { &[1] } else { &[1, 2] }),
        dtypes,
        profile: false,
    }
}

/// A speech-like test signal: a few harmonics with a slow pitch glide plus a little noise.
fn test_audio(samples: usize, rate: usize) -> Vec<f32> {
    let mut noise = 0x1234_5678_u32;
    (0..samples)
        .map(|i| {
            let t = i as f64 / rate as f64;
            let f0 = 140.0 + 40.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            let phase = 2.0 * std::f64::consts::PI * f0 * t;
            let voiced: f64 = (1..=5).map(|h| (phase * h as f64).sin() / h as f64).sum();
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let n = noise as f64 / u32::MAX as f64 - 0.5;
            (0.25 * voiced + 0.02 * n) as f32
        })
        .collect()
}

/// Median time of `reps` runs of `f` (seconds): wall time, or with `cpu` the calling thread's
/// CPU time (only meaningful for 1-thread runs).
fn median_secs(reps: usize, cpu: bool, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            if cpu {
                let start = thread_cpu_secs();
                f();
                thread_cpu_secs() - start
            } else {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            }
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn load(dir: &Path, threads: usize) -> Mimi {
    let mut m = Mimi::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    if threads > 1 {
        m.set_pool(Arc::new(Pool::new(threads)));
    }
    m
}

fn row(weights: &str, threads: usize, mode: &str, enc: f64, dec: f64) {
    println!(
        "| {:<8} | {weights:<7} | {threads:>7} | {mode:<9} | {enc:>10.4} | {dec:>10.4} | {:>11.4} |",
        "edgecsm",
        enc + dec
    );
}

/// Weight bytes of the encoder side (SEANet encoder, transformer, downsample, quantizer input
/// projections and codebooks) and of the decoder side (quantizer output projections, upsample,
/// transformer, SEANet decoder): one streaming frame reads each about once. A codebook is
/// stored as f32 EMA sums, but a frame's search reads its Q8 copy (34 bytes per 32 values; the
/// f32 re-scoring touches a few rows), and the usage counts only serve the load: that is what
/// is counted for them.
fn side_bytes(dir: &Path) -> (usize, usize) {
    let w = Weights::open(dir).expect("weights");
    let (mut enc, mut dec) = (0, 0);
    for n in w.names() {
        let bytes = if n.ends_with("codebook.embed_sum") {
            let values: usize = w.info(&n).expect("listed").shape.iter().product();
            values / 32 * 34
        } else if n.contains(".codebook.") {
            0
        } else {
            w.stored_bytes(&n)
        };
        let decoder =
            n.starts_with("decoder") || n.starts_with("upsample") || n.contains("output_proj");
        if decoder {
            dec += bytes;
        } else {
            enc += bytes;
        }
    }
    (enc, dec)
}

fn main() {
    let s = settings();
    Kernels::init().expect("kernel selection");
    let cfg = MimiConfig::default();
    let models: Vec<(String, std::path::PathBuf)> = s
        .dtypes
        .iter()
        .map(|&d| (d.name(), models::ensure("mimi", d)))
        .collect();

    let rate = cfg.sampling_rate;
    let frame = cfg.frame_size();
    let frames = s.frames;
    let pcm = test_audio(frames * frame, rate);
    let duration = pcm.len() as f64 / rate as f64;
    let frame_secs = frame as f64 / rate as f64;
    let n_q = cfg.num_quantizers;

    println!(
        "# edgecsm Mimi (synthetic kyutai/mimi), kernels {:?}, {duration} s audio, {n_q} \
         codebooks, median of {}{}",
        Kernels::get().set(),
        s.reps,
        if s.profile { " (thread CPU time)" } else { "" }
    );
    println!(
        "| {:<8} | {:<7} | {:>7} | {:<11} | {:>10} | {:>10} | {:>11} |",
        "impl", "weights", "threads", "mode", "encode RTF", "decode RTF", "enc+dec RTF"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(10),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(13),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(13)
    );
    let mut frame_rows = Vec::new();
    for (weights, dir) in &models {
        for &threads in &s.threads {
            let mimi = Arc::new(load(dir, threads));
            // Warm-up (page in the weights, spin up the pool) on one frame each way.
            let warm = mimi.encode(&pcm[..frame], n_q).expect("encode");
            mimi.decode(&warm).expect("decode");
            // CPU time is only the whole story with one thread
            let cpu = s.profile || threads == 1;

            if !s.profile {
                let mut codes = Vec::new();
                let enc = median_secs(s.reps, false, || {
                    codes = mimi.encode(&pcm, n_q).expect("encode")
                });
                let dec = median_secs(s.reps, false, || {
                    mimi.decode(&codes).expect("decode");
                });
                row(weights, threads, "batch", enc / duration, dec / duration);
            }

            // The stream's codes frame by frame (equal to the batch codes), so the decode loop
            // only decodes.
            let mut by_frame = vec![0u32; frames * n_q];
            let mut enc_stream = MimiEncoderStream::new(mimi.clone(), n_q).expect("stream");
            let mut dec_stream = MimiDecoderStream::new(mimi.clone()).expect("stream");
            let mut out = vec![0f32; frame];
            let enc = median_secs(s.reps, cpu, || {
                enc_stream.reset();
                for (chunk, fc) in pcm.chunks_exact(frame).zip(by_frame.chunks_exact_mut(n_q)) {
                    enc_stream.encode_frame(chunk, fc).expect("encode frame");
                }
            });
            let dec = median_secs(s.reps, cpu, || {
                dec_stream.reset();
                for fc in by_frame.chunks_exact(n_q) {
                    dec_stream.decode_frame(fc, &mut out).expect("decode frame");
                }
            });
            row(
                weights,
                threads,
                "streaming",
                enc / duration,
                dec / duration,
            );
            // As `edgecsm loop` runs it: each frame encoded, then decoded, so both sides'
            // weights pass through the caches every frame (the separate loops above keep one
            // side's weights cached). Per-frame times, for the loop's p50/p99.
            let mut codes = vec![0u32; n_q];
            let mut per_frame = Vec::with_capacity(frames);
            enc_stream.reset();
            dec_stream.reset();
            for chunk in pcm.chunks_exact(frame) {
                let t = Instant::now();
                let c = if cpu { thread_cpu_secs() } else { 0.0 };
                enc_stream
                    .encode_frame(chunk, &mut codes)
                    .expect("encode frame");
                dec_stream
                    .decode_frame(&codes, &mut out)
                    .expect("decode frame");
                per_frame.push(if cpu {
                    thread_cpu_secs() - c
                } else {
                    t.elapsed().as_secs_f64()
                });
            }
            let total: f64 = per_frame.iter().sum();
            println!(
                "| {:<8} | {weights:<7} | {threads:>7} | {:<11} | {:>10} | {:>10} | {:>11.4} |",
                "edgecsm",
                "interleaved",
                "",
                "",
                total / duration
            );
            per_frame.sort_by(f64::total_cmp);
            let p99 = per_frame[(per_frame.len() * 99 / 100).min(per_frame.len() - 1)];
            frame_rows.push((
                weights.to_string(),
                threads,
                median(&mut per_frame.clone()),
                p99,
                side_bytes(dir),
            ));
        }
    }
    println!(
        "\nStreaming encode + decode per 80 ms frame, interleaved as `edgecsm loop` runs it{}:",
        if s.profile {
            ""
        } else {
            " (1 thread: thread CPU time)"
        }
    );
    for (weights, threads, p50, p99, (enc, dec)) in &frame_rows {
        println!(
            "  {weights} {threads} thread(s): p50 {:.1} ms, p99 {:.1} ms per frame; weights read \
             per frame: encoder {:.0} MB + decoder {:.0} MB",
            p50 * 1e3,
            p99 * 1e3,
            *enc as f64 / 1e6,
            *dec as f64 / 1e6
        );
    }
    println!("Projection (weight bytes per frame / the board's streaming bandwidth; a floor):");
    let mut seen = std::collections::BTreeSet::new();
    for (weights, _, _, _, (enc, dec)) in &frame_rows {
        if seen.insert(weights.clone()) {
            boards::print_projection(
                &format!("{weights} enc+dec {} MB", (enc + dec) / 1_000_000),
                (enc + dec) as f64,
                frame_secs,
            );
        }
    }
}
