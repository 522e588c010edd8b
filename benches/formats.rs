//! What each weight format costs and what it gives, at real size, in one run.
//!
//! On the synthetic csm-1b (made on demand under `target/real/`, see `common/models.rs`; the
//! f32 model is the reference and each format is converted from it as `edgecsm quantize` does):
//!
//! 1. **Quality**, teacher-forced over the f32 model's greedy frames (a 24-token prompt, then
//!    `--frames` frames): for codebook 0 (the backbone and `lm_head`) and for the depth
//!    decoder's codebooks, the top-1 agreement with f32, the mean and largest KL divergence of
//!    the softmax from f32's, and the mean relative error of the logits (`csm::teacher`).
//!    For the codec: Mimi (kyutai/mimi shape) decodes the f32 encoder's codes of 10 s of a
//!    test signal in each format; SNR of the decoded audio against f32's, and how many of the
//!    format's own encoder codes equal f32's.
//! 2. **Bytes**: weight bytes read per frame (backbone step, `lm_head`, the depth decoder's
//!    passes and heads, and one streaming Mimi decode), against q8.
//! 3. **Time**, one thread, the formats interleaved round by round: the backbone step (DRAM-
//!    bound here for f16/q8; the depth decoder sits in this machine's 300 MB L3 and is compute-
//!    bound here) and the whole frame without its Mimi decode, against q8.
//! 4. **Projection** onto the boards of `cross/boards.json` per format and codebook count
//!    (the depth decoder runs N-1 passes): a floor from bytes, not a measurement.
//! 5. **Peak RSS** of a process that loads the model, generates and decodes 8 frames (this
//!    bench run again as a child with `--rss-child DIR`; `VmHWM` from `/proc/self/status`).
//!
//! ```text
//!     cargo bench --bench formats                          # csm-1b, every preset
//!     cargo bench --bench formats -- --formats "q8;q4;q4,depth=q8" --frames 8 --rounds 3
//!     cargo bench --bench formats -- --quick               # csm-mid, a few frames
//!     cargo bench --bench formats -- --skip-mimi --skip-rss --skip-time
//! ```
//!
//! Every quality number is provisional: random weights lack a trained model's structure
//! (`src/synth/csm.rs` says what the synthetic model imitates).

#[path = "common/mod.rs"]
mod common;

use common::{boards, median, models};
use edgecsm::csm::teacher::{Agreement, compare, greedy_frames, teacher_forced};
use edgecsm::csm::{Csm, FrameEngine, SamplingParams};
use edgecsm::kernels::Pool;
use edgecsm::mimi::{Mimi, MimiDecoderStream};
use edgecsm::synth::SynthDtype;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const FRAME_SECS: f64 = 0.08;

fn prompt() -> Vec<u32> {
    (0..24u32).map(|i| (i * 37 + 11) % 470).collect()
}

fn load(dir: &Path, threads: usize) -> Csm {
    let mut csm = Csm::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    csm.set_pool(Arc::new(Pool::new(threads))).expect("pool");
    csm
}

/// The child of section 5: load, generate and decode `frames` frames, print VmHWM (kB).
fn rss_child(dir: &Path, frames: usize) {
    let csm = load(dir, 1);
    let codec = csm.codec().expect("a codec").clone();
    let mut dec = MimiDecoderStream::new(codec.clone()).expect("decoder");
    let mut pcm = vec![0f32; codec.frame_size()];
    let mut e = FrameEngine::new(&csm, 64);
    e.prefill(&csm, &prompt(), &[], None, None)
        .expect("prefill");
    let limit = csm.decodable_limit() as usize;
    for _ in 0..frames {
        let g = SamplingParams::GREEDY;
        let f = e.next_frame(&csm, limit, &g, &g).expect("frame").to_vec();
        dec.decode_frame(&f, &mut pcm).expect("decode");
        e.feed_frame(&csm, &f).expect("feed");
    }
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM");
    println!("VmHWM {}", hwm.trim().trim_end_matches(" kB"));
}

fn peak_rss_mb(dir: &Path) -> Option<f64> {
    let me = std::env::current_exe().ok()?;
    let out = std::process::Command::new(me)
        .args(["--rss-child", dir.to_str()?])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM "))?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// A test signal: two gliding tones, a pulse train and a little noise, 24 kHz.
fn test_signal(secs: f64) -> Vec<f32> {
    let n = (secs * 24_000.0) as usize;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            let t = i as f64 / 24_000.0;
            let f1 = 180.0 + 60.0 * (0.5 * t).sin();
            let tone = 0.3 * (2.0 * std::f64::consts::PI * f1 * t).sin()
                + 0.15 * (2.0 * std::f64::consts::PI * 2.7 * f1 * t).sin();
            let pulse = if i % 2400 < 24 { 0.4 } else { 0.0 };
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let noise = 0.02 * ((seed >> 40) as f64 / (1u64 << 24) as f64 - 0.5);
            (tone + pulse + noise) as f32
        })
        .collect()
}

fn snr_db(reference: &[f32], x: &[f32]) -> f64 {
    let (mut s, mut e) = (0f64, 0f64);
    for (a, b) in reference.iter().zip(x) {
        s += (*a as f64).powi(2);
        e += (*a as f64 - *b as f64).powi(2);
    }
    10.0 * (s / e.max(1e-30)).log10()
}

fn mimi_section(formats: &[String]) {
    println!("\n## Mimi (kyutai/mimi shape): decoded audio against f32, 10 s of a test signal");
    let pcm = test_signal(10.0);
    let load_mimi = |dir: &Path| {
        let mut m = Mimi::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        m.set_pool(Arc::new(Pool::new(0)));
        m
    };
    let reference = load_mimi(&models::ensure("mimi", SynthDtype::F32));
    let n_q = reference.num_quantizers();
    let codes = reference.encode(&pcm, n_q).expect("encode");
    let want = reference.decode(&codes).expect("decode");
    drop(reference);
    println!(
        "| format | decoder SNR (f32 codes) | encoder codes equal to f32's (codebook 0 / all) |"
    );
    println!("|---|---|---|");
    let mut seen = Vec::new();
    for f in formats {
        // the codec takes the policy's codec precision; a preset maps to one of these
        let d = SynthDtype::parse(f).expect("format");
        let codec = match d {
            SynthDtype::Quantized(p) => p.get(edgecsm::quantize::Component::Codec),
            SynthDtype::F32 => continue,
        };
        if seen.contains(&codec) {
            continue;
        }
        seen.push(codec);
        let name = format!("{codec:?}").to_lowercase();
        let m = load_mimi(&models::ensure(
            "mimi",
            SynthDtype::parse(&name).expect("format"),
        ));
        let got = m.decode(&codes).expect("decode");
        let mine = m.encode(&pcm, n_q).expect("encode");
        let eq = |rows: &[Vec<u32>]| {
            let (mut same, mut all) = (0usize, 0usize);
            for (a, b) in rows.iter().zip(&codes) {
                same += a.iter().zip(b).filter(|(x, y)| x == y).count();
                all += a.len();
            }
            same as f64 / all.max(1) as f64 * 100.0
        };
        println!(
            "| {name} | {:.1} dB | {:.1} % / {:.1} % |",
            snr_db(&want, &got),
            eq(&mine[..1]),
            eq(&mine)
        );
    }
}

struct Row {
    name: String,
    dir: PathBuf,
    cb0: Agreement,
    depth: Agreement,
    /// backbone + lm_head, the depth decoder's 31 passes + heads, one Mimi decode
    fixed: f64,
    depth_bytes: f64,
    codec: f64,
    backbone_ms: f64,
    frame_ms: f64,
    rss_mb: Option<f64>,
}

fn main() {
    if let Some(dir) = common::arg("--rss-child") {
        rss_child(Path::new(&dir), 8);
        return;
    }
    let quick = common::quick();
    let preset = common::arg("--preset").unwrap_or(if quick { "csm-mid" } else { "csm-1b" }.into());
    // `;`-separated, so a per-component policy (`q4,depth=q8`) is one entry
    let formats: Vec<String> = common::arg("--formats").map_or_else(
        || {
            ["f16", "q8", "q4", "q4-q8heads", "q4-q8depth", "q4-f16codec"]
                .map(String::from)
                .to_vec()
        },
        |v| v.split(';').map(String::from).collect(),
    );
    let num = |name: &str, full: usize, q: usize| {
        common::arg(name)
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(if quick { q } else { full })
    };
    let frames = num("--frames", 16, 4);
    let rounds = num("--rounds", 5, 2);
    let steps = num("--steps", 4, 2);

    println!(
        "# weight formats at real size: synthetic {preset}, teacher-forced over {frames} frames \
         of the f32 model's greedy output"
    );
    let f32_dir = models::ensure(&preset, SynthDtype::F32);
    let reference = load(&f32_dir, 0);
    let limit = reference.decodable_limit() as usize;
    let n = reference.num_codebooks();
    let t = Instant::now();
    let codes = greedy_frames(&reference, &prompt(), frames).expect("greedy frames");
    let want = teacher_forced(&reference, &prompt(), &codes).expect("teacher forcing");
    eprintln!("reference in {:.0} s", t.elapsed().as_secs_f64());
    drop(reference);

    let mut rows: Vec<Row> = Vec::new();
    for f in &formats {
        let d = SynthDtype::parse(f).unwrap_or_else(|e| panic!("--formats: {e}"));
        let dir = models::ensure(&preset, d);
        let csm = load(&dir, 0);
        let got = teacher_forced(&csm, &prompt(), &codes).expect("teacher forcing");
        let b = csm.frame_bytes();
        rows.push(Row {
            name: f.clone(),
            cb0: compare(&want.codebook0, &got.codebook0, want.vocab, limit).expect("compare"),
            depth: compare(&want.depth, &got.depth, want.vocab, limit).expect("compare"),
            fixed: (b.backbone + b.head0) as f64,
            depth_bytes: (b.depth + b.depth_heads) as f64,
            codec: models::codec_decoder_bytes(&dir) as f64,
            dir,
            backbone_ms: f64::NAN,
            frame_ms: f64::NAN,
            rss_mb: None,
        });
    }

    if !common::flag("--skip-time") {
        // one thread, every format in each round; medians over rounds of `steps` steps
        let loaded: Vec<Csm> = rows.iter().map(|r| load(&r.dir, 1)).collect();
        let mut engines: Vec<FrameEngine> = loaded
            .iter()
            .map(|c| {
                let mut e = FrameEngine::new(c, 64);
                e.prefill(c, &prompt(), &[], None, None).expect("prefill");
                e
            })
            .collect();
        let mut bb: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
        let mut fr: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
        for round in 0..=rounds {
            for (i, (c, e)) in loaded.iter().zip(engines.iter_mut()).enumerate() {
                let g = SamplingParams::GREEDY;
                let (mut b_s, mut f_s) = (0.0, 0.0);
                for _ in 0..steps {
                    let t0 = Instant::now();
                    let f = e.next_frame(c, limit, &g, &g).expect("frame").to_vec();
                    let t1 = Instant::now();
                    e.feed_frame(c, &f).expect("feed");
                    let t2 = Instant::now();
                    b_s += (t2 - t1).as_secs_f64();
                    f_s += (t2 - t0).as_secs_f64();
                }
                if round > 0 {
                    // round 0 pages the weights in
                    bb[i].push(b_s / steps as f64);
                    fr[i].push(f_s / steps as f64);
                }
            }
        }
        for (r, (b, f)) in rows.iter_mut().zip(bb.iter_mut().zip(fr.iter_mut())) {
            r.backbone_ms = median(b) * 1e3;
            r.frame_ms = median(f) * 1e3;
        }
    }
    if !common::flag("--skip-rss") {
        for r in rows.iter_mut() {
            r.rss_mb = peak_rss_mb(&r.dir);
        }
    }

    let q8 = rows.iter().find(|r| r.name == "q8");
    let total =
        |r: &Row, cb: usize| r.fixed + r.depth_bytes * (cb - 1) as f64 / (n - 1) as f64 + r.codec;
    let ratio = |v: f64, of: Option<f64>| match of {
        Some(o) if o > 0.0 && v.is_finite() => format!("{:.2}x", v / o),
        _ => "-".into(),
    };
    println!(
        "\n## CSM quality against f32 (codebook 0 | depth codebooks 1-{})",
        n - 1
    );
    println!(
        "| format | cb0 top-1 | cb0 KL mean / max | cb0 rel err | depth top-1 | depth KL mean / \
         max | depth rel err |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.1} % | {:.1e} / {:.1e} | {:.4} | {:.1} % | {:.1e} / {:.1e} | {:.4} |",
            r.name,
            r.cb0.top1 * 100.0,
            r.cb0.kl_mean,
            r.cb0.kl_max,
            r.cb0.rel_err,
            r.depth.top1 * 100.0,
            r.depth.kl_mean,
            r.depth.kl_max,
            r.depth.rel_err
        );
    }
    println!(
        "({} codebook-0 rows, {} depth rows)",
        rows.first().map_or(0, |r| r.cb0.rows),
        rows.first().map_or(0, |r| r.depth.rows)
    );

    println!("\n## Bytes per frame ({n} codebooks) and time, 1 thread, formats interleaved");
    println!(
        "| format | weight MB/frame | x q8 | backbone step ms | x q8 | frame ms (no decode) | x q8 \
         | peak RSS MB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {} | {:.1} | {} | {:.1} | {} | {} |",
            r.name,
            total(r, n) / 1e6,
            ratio(total(r, n), q8.map(|q| total(q, n))),
            r.backbone_ms,
            ratio(r.backbone_ms, q8.map(|q| q.backbone_ms)),
            r.frame_ms,
            ratio(r.frame_ms, q8.map(|q| q.frame_ms)),
            r.rss_mb.map_or("-".into(), |m| format!("{m:.0}"))
        );
    }

    println!(
        "\n## Projection: weight bytes per frame / the board's streaming bandwidth (a floor, not \
         a measurement), real-time factor"
    );
    let boards = boards::load();
    let mut head = "| format | codebooks | MB/frame |".to_string();
    for b in &boards {
        head += &format!(" {} RTF |", b.name);
    }
    println!("{head}");
    println!("|---|---|---|{}", "---|".repeat(boards.len()));
    for r in &rows {
        for cb in [n, n / 2, n / 4].into_iter().filter(|&c| c >= 1) {
            let bytes = total(r, cb);
            let mut line = format!("| {} | {cb} | {:.0} |", r.name, bytes / 1e6);
            for b in &boards {
                line += &format!(" {:.2} |", boards::seconds(b, bytes) / FRAME_SECS);
            }
            println!("{line}");
        }
    }

    if !common::flag("--skip-mimi") {
        mimi_section(&formats);
    }
}
