//! Deterministic ALSA tests through alsa-lib's `file` plugin (no sound hardware, no daemon):
//! `edgecsm loop` captures from a raw file and plays into a raw file; the output must be the
//! batch pipeline (`Mimi::encode` then `decode` of the same samples) after the loop's fixed
//! start offset (one period of prefill silence). Also: unknown devices give a clear error and
//! `edgecsm devices` lists PCMs. The CLI runs as a child process with its own ALSA config.
#![cfg(feature = "alsa")]

mod common;

use edgecsm::audio::f32_to_s16;
use edgecsm::mimi::Mimi;
use edgecsm::stream::{AlsaCapture, AlsaPlayback, StreamConfig};
use std::path::Path;
use std::process::{Command, Output};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/mimi-tiny");
const FRAME: usize = 1920;
/// Frames the loop runs.
const FRAMES: usize = 30;

fn edgecsm(args: &[&str], asoundrc: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgecsm"));
    c.args(args);
    if let Some(conf) = asoundrc {
        // ALSA_CONFIG_PATH replaces the stock configuration: list it first
        c.env(
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
        );
    }
    c.output().expect("run edgecsm")
}

/// A test signal: a chirp plus a little deterministic noise, in [-0.6, 0.6].
fn signal(n: usize) -> Vec<f32> {
    let noise = common::rand_vec(n, 12345);
    (0..n)
        .map(|i| {
            let t = i as f32 / 24_000.0;
            0.5 * (2.0 * std::f32::consts::PI * (200.0 + 900.0 * t) * t).sin() + 0.05 * noise[i]
        })
        .collect()
}

fn run_file_loop(format: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.raw"), dir.path().join("out.raw"));
    // the file plugin repeats stale data past the end of its input: give it spare frames
    let x = signal((FRAMES + 4) * FRAME);
    let (bytes, pcm): (Vec<u8>, Vec<f32>) = match format {
        "s16" => {
            let q: Vec<i16> = x.iter().map(|&v| f32_to_s16(v)).collect();
            (
                q.iter().flat_map(|s| s.to_le_bytes()).collect(),
                q.iter().map(|&s| s as f32 / 32768.0).collect(),
            )
        }
        _ => (x.iter().flat_map(|s| s.to_le_bytes()).collect(), x.clone()),
    };
    std::fs::write(&inp, bytes).unwrap();
    let conf = dir.path().join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            "pcm.test_cap {{ type file slave.pcm \"null\" file \"/dev/null\" infile \"{}\" \
             format \"raw\" }}\npcm.test_play {{ type file slave.pcm \"null\" file \"{}\" \
             format \"raw\" }}\n",
            inp.display(),
            out.display()
        ),
    )
    .unwrap();
    let seconds = format!("{}", (FRAMES as f64 - 0.5) * 0.08);
    let o = edgecsm(
        &[
            "--threads",
            "1",
            "loop",
            "--capture",
            "test_cap",
            "--playback",
            "test_play",
            "--model",
            MODEL,
            "--seconds",
            &seconds,
            "--lossless",
            "--format",
            format,
            "--report-every",
            "0",
        ],
        Some(&conf),
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "loop failed: {}{stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(stdout.contains("played 30"), "{stdout}");

    let got = std::fs::read(&out).unwrap();
    let mimi = Mimi::load(MODEL).unwrap();
    let codes = mimi
        .encode(&pcm[..FRAMES * FRAME], mimi.num_quantizers())
        .unwrap();
    let want = mimi.decode(&codes).unwrap();
    let prefill = StreamConfig::default().prefill as usize * FRAME;
    match format {
        "s16" => {
            let y: Vec<i16> = got
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            assert_eq!(y.len(), prefill + FRAMES * FRAME, "output length");
            assert!(y[..prefill].iter().all(|&s| s == 0), "prefill is silence");
            let worst = y[prefill..]
                .iter()
                .zip(&want)
                .map(|(&a, &b)| (a as i32 - f32_to_s16(b) as i32).abs())
                .max()
                .unwrap();
            println!("s16: largest difference to the batch pipeline: {worst} LSB");
            assert!(worst <= 1, "loop output differs from batch by {worst} LSB");
        }
        _ => {
            let y: Vec<f32> = got
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(y.len(), prefill + FRAMES * FRAME, "output length");
            assert!(y[..prefill].iter().all(|&s| s == 0.0), "prefill is silence");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = y[prefill..]
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            println!("f32: largest difference to the batch pipeline: {worst:e} (peak {scale})");
            assert!(
                worst <= 1e-5 * scale.max(1.0),
                "loop output differs from batch by {worst}"
            );
        }
    }
}

#[test]
fn file_loop_s16_equals_batch_pipeline() {
    run_file_loop("s16");
}

#[test]
fn file_loop_f32_equals_batch_pipeline() {
    run_file_loop("f32");
}

#[test]
fn unknown_devices_are_named_in_the_error() {
    let cfg = StreamConfig::default();
    let e = AlsaCapture::open("edgecsm_no_such_pcm", &cfg)
        .err()
        .expect("an unknown capture PCM must not open")
        .to_string();
    assert!(
        e.contains("capture device \"edgecsm_no_such_pcm\"") && e.contains("snd_pcm_open"),
        "{e}"
    );
    let e = AlsaPlayback::open("edgecsm_no_such_pcm", &cfg)
        .err()
        .expect("an unknown playback PCM must not open")
        .to_string();
    assert!(e.contains("playback device \"edgecsm_no_such_pcm\""), "{e}");

    let o = edgecsm(
        &[
            "loop",
            "--capture",
            "null",
            "--playback",
            "edgecsm_no_such_pcm",
            "--model",
            MODEL,
        ],
        None,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("error: playback device \"edgecsm_no_such_pcm\": cannot open")
            && err.contains("No such file or directory"),
        "{err}"
    );
}

#[test]
fn devices_lists_pcms() {
    let o = edgecsm(&["devices"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l == "null"), "{out}");
}
