//! The CSM command line end to end: `generate` on the parity fixture reproduces the
//! reference's greedy codes (and `decode` of a CSM directory its audio), `say` on the bundled
//! random-weight model (reproducible per seed, with the test-model notice), `say --context`
//! with WAV and code turns, and bad inputs failing with one `error:` line and no output file.

mod common;

use common::repo;

use edgecsm::audio::{SampleFormat, read_codes, read_mono, write_codes, write_wav};
use ndarray::{Array1, Array2};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture() -> PathBuf {
    repo().join("tests/fixtures/csm/a")
}

fn bundled() -> PathBuf {
    repo().join("models/csm-tiny")
}

fn run(args: &[&str], cwd: &Path) -> Output {
    common::edgecsm()
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str], cwd: &Path) -> Output {
    let o = run(args, cwd);
    assert!(o.status.success(), "{args:?} failed:\n{}", stderr(&o));
    o
}

/// Runs a command that must fail: non-zero exit, exactly one `error:` line (returned), and
/// `out` not written.
fn fails(args: &[&str], cwd: &Path, out: &Path) -> String {
    let o = run(args, cwd);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one error line:\n{err}");
    assert!(!out.exists(), "{args:?} left {}", out.display());
    lines[0].to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The fixture's context codes (frame-major `[frames, N]` in the fixture) as the
/// `[codebooks, frames]` layout the command line takes, first `frames` frames.
fn context_codes(frames: usize) -> Array2<i64> {
    let c = read_codes(&fixture().join("context_audio_codes.npy")).unwrap();
    c.t().slice(ndarray::s![.., ..frames]).to_owned()
}

fn write_ids(path: &Path, ids: &[i64]) {
    Array1::from(ids.to_vec())
        .write_npy(std::fs::File::create(path).unwrap())
        .unwrap();
}

fn fixture_ids() -> Vec<i64> {
    let f = std::fs::File::open(fixture().join("context_input_ids.npy")).unwrap();
    Array1::<i64>::read_npy(f).unwrap().to_vec()
}

#[test]
fn generate_reproduces_the_reference_greedy_codes_and_decode_reads_a_csm_dir() {
    let d = tempfile::tempdir().unwrap();
    let ids = d.path().join("ids.npy");
    let codes = d.path().join("codes.npy");
    let out = d.path().join("gen.npy");
    write_ids(&ids, &fixture_ids());
    write_codes(&codes, context_codes(5).view()).unwrap();
    let o = ok(
        &[
            "generate",
            "--model",
            p(&fixture()),
            "--input-ids",
            p(&ids),
            "--audio-codes",
            p(&codes),
            "--max-frames",
            "6",
            "--top-k",
            "1",
            "--out",
            p(&out),
        ],
        repo(),
    );
    let summary = String::from_utf8_lossy(&o.stdout);
    assert!(summary.contains("6 frames x 4 codebooks"), "{summary}");
    let want = read_codes(&fixture().join("gen_codes.npy")).unwrap();
    let got = read_codes(&out).unwrap();
    assert_eq!(got, want.t(), "greedy codes differ from the reference");

    // the output decodes with the CSM directory's own codec to the reference audio
    let wav = d.path().join("gen.wav");
    ok(
        &[
            "decode",
            "--model",
            p(&fixture()),
            p(&out),
            "--out",
            p(&wav),
            "--sample-format",
            "f32",
        ],
        repo(),
    );
    let clip = read_mono(&wav).unwrap();
    let f = std::fs::File::open(fixture().join("gen_audio.npy")).unwrap();
    let audio = Array1::<f32>::read_npy(f).unwrap();
    assert_eq!((clip.sample_rate, clip.samples.len()), (24000, audio.len()));
    let err = clip
        .samples
        .iter()
        .zip(audio.iter())
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        err < 1e-4,
        "decoded audio differs from the reference by {err}"
    );
}

fn say_bundled(out: &Path, seed: &str) -> Output {
    // from the repository root, without --model: the bundled model is found
    ok(
        &[
            "say",
            "Hello there",
            "--out",
            p(out),
            "--seed",
            seed,
            "--max-seconds",
            "1",
        ],
        repo(),
    )
}

#[test]
fn say_on_the_bundled_model_is_reproducible_per_seed_and_says_it_is_a_test_model() {
    let d = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        d.path().join("a.wav"),
        d.path().join("b.wav"),
        d.path().join("c.wav"),
    );
    let o = say_bundled(&a, "1");
    let err = stderr(&o);
    assert!(err.contains("RANDOM-WEIGHT TEST MODEL"), "{err}");
    assert!(err.contains("sesame/csm-1b"), "{err}");
    assert!(err.contains("say: done:"), "{err}");
    let clip = read_mono(&a).unwrap();
    assert_eq!((clip.sample_rate, clip.channels), (24000, 1));
    assert!(!clip.samples.is_empty() && clip.samples.len().is_multiple_of(1920));
    assert!(clip.samples.len() <= 13 * 1920, "{}", clip.samples.len());
    assert!(clip.samples.iter().any(|&x| x != 0.0));
    say_bundled(&b, "1");
    say_bundled(&c, "2");
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert_eq!(read(&a), read(&b), "same seed, different output");
    assert_ne!(read(&a), read(&c), "different seeds, same output");
}

#[test]
fn say_with_a_context_of_a_wav_turn_and_a_codes_turn() {
    let d = tempfile::tempdir().unwrap();
    // 0.3 s of a 16 kHz tone (resampled to 24 kHz and encoded: 4 frames)
    let tone: Vec<f32> = (0..4800)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 16000.0).sin())
        .collect();
    write_wav(&d.path().join("turn0.wav"), &tone, 16000, SampleFormat::S16).unwrap();
    write_codes(&d.path().join("turn1.npy"), context_codes(2).view()).unwrap();
    std::fs::write(
        d.path().join("context.json"),
        r#"[{"speaker": 0, "text": "How are you?", "audio": "turn0.wav"},
            {"speaker": 1, "text": "Fine.", "codes": "turn1.npy"}]"#,
    )
    .unwrap();
    let with = d.path().join("with.wav");
    let without = d.path().join("without.wav");
    let args = |out: &Path, ctx: bool| {
        let mut v = vec![
            "say".to_string(),
            "Good to hear".into(),
            "--speaker".into(),
            "0".into(),
            "--model".into(),
            p(&bundled()).into(),
            "--max-seconds".into(),
            "0.5".into(),
            "--out".into(),
            p(out).into(),
        ];
        if ctx {
            v.extend(["--context".into(), p(d.path()).into()]);
        }
        v
    };
    let a = args(&with, true);
    let o = ok(&a.iter().map(String::as_str).collect::<Vec<_>>(), repo());
    let err = stderr(&o);
    assert!(
        err.contains("context turn 0 (speaker 0): 4 frames"),
        "{err}"
    );
    assert!(
        err.contains("context turn 1 (speaker 1): 2 frames"),
        "{err}"
    );
    let b = args(&without, false);
    ok(&b.iter().map(String::as_str).collect::<Vec<_>>(), repo());
    assert_eq!(read_mono(&with).unwrap().sample_rate, 24000);
    assert_ne!(
        std::fs::read(&with).unwrap(),
        std::fs::read(&without).unwrap(),
        "the context changed nothing"
    );
}

#[test]
fn say_rejects_bad_models_and_contexts() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.wav");
    let say = |extra: &[&str]| -> String {
        let mut a = vec!["say", "Hi", "--out", p(&out), "--max-seconds", "0.2"];
        a.extend_from_slice(extra);
        fails(&a, repo(), &out)
    };
    let missing = d.path().join("no-such-model");
    let e = say(&["--model", p(&missing)]);
    assert!(
        e.contains("no-such-model") && e.contains("not a model directory"),
        "{e}"
    );

    let ctx = |name: &str, json: &str| -> PathBuf {
        let path = d.path().join(name);
        std::fs::write(&path, json).unwrap();
        path
    };
    for (name, json, want) in [
        ("bad.json", "[{\"speaker\": 0,", "not valid JSON"),
        (
            "noaudio.json",
            r#"[{"speaker": 0, "text": "Hi"}]"#,
            "has no audio",
        ),
        (
            "speaker.json",
            r#"[{"speaker": "alice", "text": "Hi", "audio": "a.wav"}]"#,
            "`speaker` must be a non-negative integer",
        ),
        (
            "missing.json",
            r#"[{"speaker": 0, "text": "Hi", "audio": "nowhere.wav"}]"#,
            "nowhere.wav",
        ),
    ] {
        let path = ctx(name, json);
        let e = say(&["--context", p(&path)]);
        assert!(e.contains(want) && e.contains(name), "{name}: {e}");
    }
    let e = say(&["--context", p(&d.path().join("absent.json"))]);
    assert!(e.contains("absent.json"), "{e}");

    // a config whose KV cache cannot exist (this used to panic with a capacity overflow)
    let huge = d.path().join("huge-model");
    std::fs::create_dir(&huge).unwrap();
    for f in std::fs::read_dir(bundled()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, huge.join(f.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(huge.join("config.json")).unwrap();
    let cfg = cfg.replace(
        "\"max_position_embeddings\": 128,",
        "\"max_position_embeddings\": 4611686018427387904,",
    );
    assert!(cfg.contains("4611686018427387904"));
    std::fs::write(huge.join("config.json"), cfg).unwrap();
    let e = say(&["--model", p(&huge)]);
    assert!(
        e.contains("config.json") && e.contains("`max_position_embeddings` 4611686018427387904"),
        "{e}"
    );
    let e = fails(
        &["say", "Hi", "--out", p(&out), "--max-seconds=-1"],
        repo(),
        &out,
    );
    assert!(e.contains("--max-seconds"), "{e}");
}

#[test]
fn generate_rejects_bad_inputs_without_writing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out.npy");
    let codes = d.path().join("codes.npy");
    write_codes(&codes, context_codes(5).view()).unwrap();
    let model = fixture();
    let generate = |ids: &Path, codes: Option<&Path>| -> String {
        let mut a = vec![
            "generate",
            "--model",
            p(&model),
            "--input-ids",
            p(ids),
            "--max-frames",
            "2",
            "--out",
            p(&out),
        ];
        if let Some(c) = codes {
            a.extend(["--audio-codes", p(c)]);
        }
        fails(&a, repo(), &out)
    };
    let ids = |name: &str, v: &[i64]| -> PathBuf {
        let path = d.path().join(name);
        write_ids(&path, v);
        path
    };
    // a text id beyond the 488-token vocabulary
    let e = generate(&ids("vocab.npy", &[480, 9999, 481]), None);
    assert!(e.contains("9999") && e.contains("vocabulary"), "{e}");
    let e = generate(&ids("neg.npy", &[480, -3]), None);
    assert!(e.contains("-3"), "{e}");
    // 5 placeholders in the fixture ids: 4 frames of codes, or none, do not fill them
    let fixture_ids = ids("ctx.npy", &fixture_ids());
    let four = d.path().join("four.npy");
    write_codes(&four, context_codes(4).view()).unwrap();
    let e = generate(&fixture_ids, Some(&four));
    assert!(
        e.contains("5 audio placeholders") && e.contains("4 frames"),
        "{e}"
    );
    let e = generate(&fixture_ids, None);
    assert!(e.contains("5 audio placeholders"), "{e}");
    // codes: wrong codebook count, out of the audio vocabulary
    let three = d.path().join("three.npy");
    write_codes(&three, context_codes(5).slice(ndarray::s![..3, ..]).view()).unwrap();
    let e = generate(&fixture_ids, Some(&three));
    assert!(e.contains("3 codebooks"), "{e}");
    let mut big = context_codes(5);
    big[[2, 1]] = 67;
    let bigp = d.path().join("big.npy");
    write_codes(&bigp, big.view()).unwrap();
    let e = generate(&fixture_ids, Some(&bigp));
    assert!(
        e.contains("code 67") && e.contains("codebook 2, frame 1"),
        "{e}"
    );
    // wrong dtype and shape of the ids
    let f32s = d.path().join("f32.npy");
    Array1::from(vec![480.0f32, 1.0])
        .write_npy(std::fs::File::create(&f32s).unwrap())
        .unwrap();
    let e = generate(&f32s, None);
    assert!(e.contains("int64"), "{e}");
    let e = generate(&codes, None);
    assert!(e.contains("1-D"), "{e}");
    // nothing at all
    let e = generate(&d.path().join("absent.npy"), None);
    assert!(e.contains("absent.npy"), "{e}");
    // a model directory that is not one
    let o = run(
        &[
            "generate",
            "--model",
            p(d.path()),
            "--input-ids",
            p(&fixture_ids),
            "--audio-codes",
            p(&codes),
            "--max-frames",
            "2",
            "--out",
            p(&out),
        ],
        repo(),
    );
    assert!(!o.status.success() && stderr(&o).contains("not a model directory"));
    assert!(!out.exists());
}
