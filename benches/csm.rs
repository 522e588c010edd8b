//! CSM at real size: where a frame goes, what it reads, and what that means on the boards.
//!
//! Runs on the synthetic csm-1b (transformers `CsmConfig()` shapes, 1.65 B parameters, its
//! Mimi codec inside; made on demand under `target/real/`, see `common/models.rs`), in each
//! weight format and thread count asked for, and prints, measured in one run:
//!
//! 1. the read floor of this machine (a plain wide read of a buffer several times the LLC);
//! 2. per format and thread count: time to ready (load from a warm page cache), prefill
//!    tokens/s (difference of a 31- and a 95-token prompt), time to first frame (20-token
//!    prompt: prefill + first frame + its Mimi decode) with its projection on each board (the
//!    prompt's multiply-adds at the board's estimated int8 peak plus the frame's bytes at its
//!    streaming bandwidth: a floor), then per generated frame the time of
//!    the backbone step, the codebook-0 head, the depth decoder's passes, its heads, sampling
//!    and the streaming Mimi decode, with the weight bytes each reads and the GB/s that makes;
//!    on one thread also the **sum of the frame's parts**: every matrix-vector product of a
//!    frame timed by itself on the same weights, against the frame's own time (what is left is
//!    overhead: attention, norms, sampling, dispatch);
//! 3. the projection of each frame onto the boards of `cross/boards.json` (bytes per frame /
//!    each board's weight-streaming bandwidth): a floor from bytes, not a measurement;
//! 4. per number of generated codebooks (`--codebooks`, default 32,16,8; `Csm::set_codebooks`):
//!    weight bytes per frame (backbone step, codebook-0 head, N-1 depth-decoder passes and
//!    heads, the streaming Mimi decode), the projected time per frame and real-time factor on
//!    each board, and the measured time per frame (generate + decode) on this machine, with
//!    its ratio to all codebooks in the same run (the machine is shared: compare ratios);
//! 5. `say` per-frame time for 1..nproc threads on a quiet machine and beside one
//!    normal-priority busy process (the same frames, sampled, each decoded by a streaming Mimi
//!    decoder as `say` does), with `generate`'s per-frame time (no decode) beside it.
//!
//! ```text
//!     cargo bench --bench csm                       # q8, f16, f32; 1 and all threads
//!     cargo bench --bench csm -- --dtype q8 --threads 1,2 --frames 16 --say-frames 60
//!     cargo bench --bench csm -- --quick            # csm-mid, q8, a few frames (smoke run)
//!     cargo bench --bench csm -- --no-busy          # skip the busy-process rows
//!     cargo bench --bench csm -- --only-say         # only the say/generate thread table
//!     cargo bench --bench csm -- --dtype q8 --threads 1 --only-codebooks --codebooks 32,16,8
//! ```

#[path = "common/mod.rs"]
mod common;

use common::boards;
use common::floor::{Floor, llc_bytes, read_gbs};
use common::models;
use edgecsm::csm::model::FramePart;
use edgecsm::csm::{Conversation, Csm, FrameProfile, GenerateOptions, Segment};
use edgecsm::kernels::matmul::matmul;
use edgecsm::kernels::{Kernels, Pool, QScratch};
use edgecsm::mimi::MimiDecoderStream;
use edgecsm::synth::SynthDtype;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// Seconds of audio per frame (Mimi: 1920 samples at 24 kHz).
const FRAME_SECS: f64 = 0.08;

struct Settings {
    preset: String,
    dtypes: Vec<SynthDtype>,
    threads: Vec<usize>,
    frames: usize,
    say_frames: usize,
    busy: bool,
    codebooks: Vec<usize>,
}

fn settings() -> Settings {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quick = common::quick();
    let dtypes: Vec<String> = common::list(
        "--dtype",
        &if quick {
            vec!["q8".to_string()]
        } else {
            vec!["q8".into(), "f16".into(), "f32".into()]
        },
    );
    let mut threads = common::list("--threads", &[1, nproc]);
    threads.dedup();
    let num = |name: &str, full: usize, q: usize| {
        common::arg(name)
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(if quick { q } else { full })
    };
    Settings {
        preset: common::arg("--preset").unwrap_or(if quick { "csm-mid" } else { "csm-1b" }.into()),
        dtypes: dtypes
            .iter()
            .map(|d| SynthDtype::parse(d).unwrap_or_else(|e| panic!("--dtype: {e}")))
            .collect(),
        threads,
        frames: num("--frames", 16, 3),
        say_frames: num("--say-frames", 60, 4),
        busy: !common::flag("--no-busy"),
        codebooks: common::list(
            "--codebooks",
            if quick {
                &[32, 8][..]
            } else {
                &[32, 16, 8][..]
            },
        ),
    }
}

/// `n` prompt ids in the bundled tokenizer's text range, shaped like a `say` prompt.
fn prompt(n: usize) -> Vec<u32> {
    let mut ids = vec![480];
    ids.extend((0..n.saturating_sub(2)).map(|i| (i as u32 * 37 + 11) % 470));
    ids.push(481);
    ids.truncate(n);
    ids
}

fn load(dir: &Path, threads: usize) -> (Arc<Csm>, f64) {
    let t = Instant::now();
    let mut csm = Csm::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    csm.set_pool(Arc::new(Pool::new(threads))).expect("pool");
    (Arc::new(csm), t.elapsed().as_secs_f64())
}

/// Per-frame wall times of a `say`-like run: `frames` sampled frames after a 20-token prompt,
/// each decoded by a streaming Mimi decoder when `decode` is set. Returns the time to the
/// first frame (decoded), the per-frame times after it, the profile and the decode times.
struct Run {
    first_frame_s: f64,
    per_frame_s: Vec<f64>,
    profile: FrameProfile,
    decode_s: Vec<f64>,
}

fn run(csm: &Arc<Csm>, frames: usize, decode: bool, seed: u64) -> Run {
    let mut conv = Conversation::new(csm.clone());
    let codec = csm.codec().expect("a codec").clone();
    let mut dec = MimiDecoderStream::new(codec.clone()).expect("decoder");
    let mut pcm = vec![0f32; codec.frame_size()];
    let mut opts = GenerateOptions::sampled(frames, seed);
    // every frame counts: the synthetic model rarely ends itself, and is not asked to
    opts.invalid_codes = edgecsm::csm::InvalidCodes::Mask;
    let mut marks = Vec::with_capacity(frames + 1);
    let mut decode_s = Vec::with_capacity(frames);
    let t0 = Instant::now();
    conv.generate(Segment::new("bench", prompt(20), Vec::new()), &opts, |f| {
        if decode {
            let t = Instant::now();
            dec.decode_frame(f, &mut pcm).expect("decode");
            decode_s.push(t.elapsed().as_secs_f64());
        }
        marks.push(t0.elapsed().as_secs_f64());
        ControlFlow::Continue(())
    })
    .expect("generate");
    Run {
        first_frame_s: marks[0],
        per_frame_s: marks.windows(2).map(|w| w[1] - w[0]).collect(),
        profile: *conv.profile(),
        decode_s,
    }
}

/// Prefill time (s) of an `n`-token prompt, from the frame engine's own profile.
fn prefill_secs(csm: &Arc<Csm>, n: usize) -> f64 {
    let mut conv = Conversation::new(csm.clone());
    conv.generate(
        Segment::new("prefill", prompt(n), Vec::new()),
        &GenerateOptions::greedy(1),
        |_| ControlFlow::Continue(()),
    )
    .expect("generate");
    conv.profile().prefill_ns as f64 * 1e-9
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Every matrix-vector product of one frame timed by itself (in frame order, on the same
/// weights and pool), summed per component; median of three passes. Seconds.
fn sum_of_parts(csm: &Csm, pool: &Pool) -> BTreeMap<FramePart, f64> {
    let k = Kernels::get();
    let products = csm.frame_products();
    let widest = products.iter().map(|(_, m)| m.cols()).max().unwrap_or(1);
    let tallest = products.iter().map(|(_, m)| m.rows()).max().unwrap_or(1);
    let x: Vec<f32> = (0..widest)
        .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let mut y = vec![0f32; tallest];
    let mut qs = QScratch::new(1, widest);
    let mut passes: Vec<BTreeMap<FramePart, f64>> = Vec::new();
    for _ in 0..3 {
        let mut by: BTreeMap<FramePart, f64> = BTreeMap::new();
        for (part, m) in &products {
            let t = Instant::now();
            matmul(
                k,
                pool,
                &m.mat(),
                &x[..m.cols()],
                &mut y[..m.rows()],
                &mut qs,
            );
            *by.entry(*part).or_default() += t.elapsed().as_secs_f64();
        }
        passes.push(by);
    }
    passes.sort_by(|a, b| a.values().sum::<f64>().total_cmp(&b.values().sum::<f64>()));
    passes.swap_remove(1)
}

fn section(dir: &Path, dtype: SynthDtype, threads: usize, s: &Settings, floor_gbs: f64) {
    let (_, cold) = load(dir, threads);
    let (csm, ready) = load(dir, threads);
    println!(
        "\n## {} {}, {threads} thread(s): ready in {:.0} ms (load from a warm page cache; first \
         load {:.0} ms)",
        s.preset,
        dtype.name(),
        ready * 1e3,
        cold * 1e3
    );
    // warm-up: page the weights in, spin the pool up
    run(&csm, 2, true, 7);

    let (p31, p95) = (prefill_secs(&csm, 31), prefill_secs(&csm, 95));
    println!(
        "prefill: {:.1} tokens/s (difference of 95 and 31 tokens; {:.1} ms per token); a \
         31-token prompt {:.0} ms",
        64.0 / (p95 - p31),
        (p95 - p31) / 64.0 * 1e3,
        p31 * 1e3
    );

    let r = run(&csm, s.frames, true, 1);
    let p = &r.profile;
    let n = p.frames.max(1) as f64;
    let bytes = csm.frame_bytes();
    let dec_bytes = models::codec_decoder_bytes(dir);
    let dec_s = mean(&r.decode_s);
    println!(
        "time to first frame (20-token prompt: prefill + frame + its decode): {:.0} ms; \
         projected (a floor):",
        r.first_frame_s * 1e3
    );
    let backbone_macs: usize = csm
        .frame_products()
        .iter()
        .filter(|(part, _)| *part == FramePart::Backbone)
        .map(|(_, m)| m.rows() * m.cols())
        .sum();
    boards::print_first_frame(
        20.0 * backbone_macs as f64,
        (bytes.total() + dec_bytes) as f64,
    );
    let per_frame_ns = |ns: u64, per: f64| ns as f64 * 1e-9 / per;
    let rows: [(&str, f64, usize); 6] = [
        (
            "backbone step",
            per_frame_ns(p.backbone_ns, p.backbone_steps.max(1) as f64),
            bytes.backbone,
        ),
        ("codebook-0 head", per_frame_ns(p.head0_ns, n), bytes.head0),
        (
            "depth decoder passes",
            per_frame_ns(p.depth_ns, n),
            bytes.depth,
        ),
        (
            "depth decoder heads",
            per_frame_ns(p.depth_heads_ns, n),
            bytes.depth_heads,
        ),
        ("sampling", per_frame_ns(p.sampling_ns, n), 0),
        ("Mimi decode (streaming)", dec_s, dec_bytes),
    ];
    let total_s: f64 = rows.iter().map(|r| r.1).sum();
    let total_bytes: usize = rows.iter().map(|r| r.2).sum();
    println!(
        "| part | ms/frame | share | weight MB/frame | GB/s | of floor ({floor_gbs:.1} GB/s) |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, t, b) in rows
        .iter()
        .chain(std::iter::once(&("frame (sum)", total_s, total_bytes)))
    {
        let gbs = *b as f64 / t / 1e9;
        println!(
            "| {name} | {:.2} | {:.0} % | {:.1} | {} | {} |",
            t * 1e3,
            t / total_s * 100.0,
            *b as f64 / 1e6,
            if *b > 0 {
                format!("{gbs:.1}")
            } else {
                "-".into()
            },
            if *b > 0 {
                format!("{:.0} %", gbs / floor_gbs * 100.0)
            } else {
                "-".into()
            }
        );
    }
    println!(
        "wall time per frame after the first: {:.1} ms (RTF {:.2}); frames {}",
        mean(&r.per_frame_s) * 1e3,
        mean(&r.per_frame_s) / FRAME_SECS,
        p.frames
    );
    if threads == 1 {
        let parts = sum_of_parts(&csm, csm.pool());
        let sum: f64 = parts.values().sum();
        let frame_work = p.frame_ns() as f64 * 1e-9 / n;
        println!(
            "sum of parts (each product of a frame timed alone, same weights): {:.1} ms \
             (backbone {:.1}, head0 {:.1}, depth {:.1}, depth heads {:.1}); the frame's own \
             work {:.1} ms = {:.2}x the sum",
            sum * 1e3,
            parts.get(&FramePart::Backbone).copied().unwrap_or(0.0) * 1e3,
            parts.get(&FramePart::Head0).copied().unwrap_or(0.0) * 1e3,
            parts.get(&FramePart::Depth).copied().unwrap_or(0.0) * 1e3,
            parts.get(&FramePart::DepthHeads).copied().unwrap_or(0.0) * 1e3,
            frame_work * 1e3,
            frame_work / sum
        );
    }
    println!(
        "projection (weight bytes per frame / the board's streaming bandwidth; a floor, not a \
         measurement):"
    );
    boards::print_projection(
        &format!("{} MB/frame", total_bytes / 1_000_000),
        total_bytes as f64,
        FRAME_SECS,
    );
}

/// Per number of generated codebooks: weight bytes per frame, the boards' projected real-time
/// factor, and the measured time per frame here (generate + streaming decode, sampled) with
/// its ratio to the first count listed, all in one run.
fn codebooks_section(dir: &Path, dtype: SynthDtype, threads: usize, s: &Settings) {
    let dec_bytes = models::codec_decoder_bytes(dir) as f64;
    let boards = boards::load();
    println!(
        "\n## {} {}, {threads} thread(s), by codebooks generated per frame ({} frames each, \
         sampled, each decoded by a streaming Mimi decoder; weight bytes include the decode's \
         {:.0} MB)",
        s.preset,
        dtype.name(),
        s.frames,
        dec_bytes / 1e6
    );
    let mut head = String::from(
        "| codebooks | depth steps | weight MB/frame | bytes vs first | ms/frame here | time vs \
         first | depth ms/frame |",
    );
    let mut rule = String::from("|---|---|---|---|---|---|---|");
    for b in &boards {
        head += &format!(" {} RTF |", b.name);
        rule += "---|";
    }
    println!("{head}\n{rule}");
    let mut first: Option<(f64, f64)> = None;
    for &n in &s.codebooks {
        let (csm, _) = load(dir, threads);
        let mut csm = Arc::try_unwrap(csm).expect("not shared yet");
        if let Err(e) = csm.set_codebooks(n) {
            println!("| {n} | skipped: {e} |");
            continue;
        }
        let csm = Arc::new(csm);
        run(&csm, 2, true, 7);
        let r = run(&csm, s.frames, true, 1);
        let p = &r.profile;
        let bytes = csm.frame_bytes().total() as f64 + dec_bytes;
        let t = mean(&r.per_frame_s);
        let (b0, t0) = *first.get_or_insert((bytes, t));
        let mut line = format!(
            "| {n} | {} | {:.0} | {:.2}x | {:.1} | {:.2}x | {:.1} |",
            p.depth_steps / p.frames.max(1),
            bytes / 1e6,
            bytes / b0,
            t * 1e3,
            t / t0,
            (p.depth_ns + p.depth_heads_ns) as f64 * 1e-6 / p.frames.max(1) as f64
        );
        for b in &boards {
            line += &format!(" {:.2} |", boards::seconds(b, bytes) / FRAME_SECS);
        }
        println!("{line}");
    }
    println!(
        "(RTF on a board = weight bytes per frame / its streaming bandwidth in cross/boards.json \
         / 80 ms: a floor from bytes, not a measurement; fewer codebooks is an approximation \
         of the model, see the README)"
    );
}

/// A normal-priority busy process (a shell loop), killed on drop.
struct Busy(std::process::Child);

impl Busy {
    fn start() -> Busy {
        Busy(
            std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("starting a busy process"),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn say_scaling(dir: &Path, s: &Settings) {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "\n## `say` per-frame time by thread count ({} {}, {} frames, sampled; ms per frame \
         after the first, each frame decoded by a streaming Mimi decoder; `generate` = the \
         same frames without the decode)",
        s.preset,
        dir.file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into()),
        s.say_frames
    );
    println!(
        "| beside | threads | say ms/frame | vs 1 thread | generate ms/frame | say / generate |"
    );
    println!("|---|---|---|---|---|---|");
    let modes: &[bool] = if s.busy { &[false, true] } else { &[false] };
    for &busy in modes {
        let _guard = busy.then(Busy::start);
        let mut one = 0.0;
        for t in 1..=nproc {
            let (csm, _) = load(dir, t);
            run(&csm, 2, true, 5);
            let before = csm.pool().stats();
            let say = mean(&run(&csm, s.say_frames, true, 1).per_frame_s);
            let generate = mean(&run(&csm, s.say_frames, false, 1).per_frame_s);
            let after = csm.pool().stats();
            let (par, ser) = (after.0 - before.0, after.1 - before.1);
            if t == 1 {
                one = say;
            }
            println!(
                "| {} | {t} | {:.1} | {:.2}x | {:.1} | {:.2} | {:.0} % |",
                if busy {
                    "a busy process"
                } else {
                    "nothing (quiet)"
                },
                say * 1e3,
                say / one,
                generate * 1e3,
                say / generate,
                100.0 * ser as f64 / (par + ser).max(1) as f64
            );
        }
    }
}

fn main() {
    let s = settings();
    let k = Kernels::init().expect("kernel selection");
    println!(
        "# CSM at real size ({}), kernels {:?}, {} CPUs; synthetic random weights (see \
         src/synth/csm.rs), so speed and bytes are real, sound is not",
        s.preset,
        k.set(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // f32 first when asked for: f16 and q8 are then converted from it instead of redrawn
    let mut order = s.dtypes.clone();
    order.sort_by_key(|d| *d != SynthDtype::F32);
    for d in order {
        models::ensure(&s.preset, d);
    }
    let dirs: Vec<(SynthDtype, std::path::PathBuf)> = s
        .dtypes
        .iter()
        .map(|&d| (d, models::ensure(&s.preset, d)))
        .collect();
    let mut floor = Floor::new((4 * llc_bytes()).max(1 << 30));
    let floors: Vec<(usize, f64)> = s
        .threads
        .iter()
        .map(|&t| (t, read_gbs(&Pool::new(t), &mut floor, 5)))
        .collect();
    drop(floor);
    for (t, g) in &floors {
        println!("read floor, {t} thread(s): {g:.1} GB/s");
    }
    let only_codebooks = common::flag("--only-codebooks");
    if !common::flag("--only-say") {
        for (dtype, dir) in &dirs {
            for (t, g) in &floors {
                if !only_codebooks {
                    section(dir, *dtype, *t, &s, *g);
                }
                codebooks_section(dir, *dtype, *t, &s);
            }
        }
    }
    if only_codebooks {
        return;
    }
    if let Some((_, dir)) = dirs.iter().find(|(d, _)| *d == SynthDtype::Q8) {
        say_scaling(dir, &s);
    }
}
