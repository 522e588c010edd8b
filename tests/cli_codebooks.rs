//! `--codebooks N` on the command line: `say` and `generate` with all the model's codebooks
//! give exactly the default output; with fewer, `generate` writes `[N, frames]` codes that
//! `decode` turns into audio, context codes are read to their first N rows, `say` speaks;
//! a count of 0 or above the model's is one `error:` line and no output.
//!
//! The bundled model and the parity fixture have 4 codebooks (csm-1b has 32): 2 stands for
//! "fewer", 5 and 33 for "more than the model's".

mod common;

use common::run;

use edgecsm::audio::{SampleFormat, read_codes, write_codes, write_wav};
use ndarray::{Array1, Array2};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use std::path::{Path, PathBuf};
use std::process::Output;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/csm/a");
const BUNDLED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/csm-tiny");

fn fixture() -> PathBuf {
    PathBuf::from(FIXTURE)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// A command that must fail with one `error:` line (returned) and leave `out` unwritten.
fn fails(args: &[&str], out: &Path) -> String {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "{args:?} succeeded:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one error line:\n{err}");
    assert!(!out.exists(), "{args:?} left {}", out.display());
    lines[0].to_string()
}

/// The fixture's context: its input ids and its codes `[4, frames]` (frame-major in the file).
fn context(dir: &Path) -> (PathBuf, PathBuf) {
    let f = std::fs::File::open(fixture().join("context_input_ids.npy")).unwrap();
    let ids = Array1::<i64>::read_npy(f).unwrap();
    let ids_path = dir.join("ids.npy");
    ids.write_npy(std::fs::File::create(&ids_path).unwrap())
        .unwrap();
    let codes: Array2<i64> = read_codes(&fixture().join("context_audio_codes.npy"))
        .unwrap()
        .t()
        .to_owned();
    let codes_path = dir.join("codes.npy");
    write_codes(&codes_path, codes.view()).unwrap();
    (ids_path, codes_path)
}

/// `generate` on the fixture model with `ids`, `codes` and `extra` options, writing `out`.
fn generate_args<'a>(
    ids: &'a Path,
    codes: &'a Path,
    out: &'a Path,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = vec![
        "generate",
        "--model",
        FIXTURE,
        "--input-ids",
        p(ids),
        "--audio-codes",
        p(codes),
        "--max-frames",
        "6",
        "--seed",
        "4",
        "--out",
        p(out),
    ];
    a.extend_from_slice(extra);
    a
}

fn generate(ids: &Path, codes: &Path, out: &Path, extra: &[&str]) -> Output {
    ok(&generate_args(ids, codes, out, extra))
}

#[test]
fn generate_with_fewer_codebooks_writes_them_and_decode_reads_them_back() {
    let d = tempfile::tempdir().unwrap();
    let (ids, codes) = context(d.path());
    let (default, all, two) = (
        d.path().join("default.npy"),
        d.path().join("all.npy"),
        d.path().join("two.npy"),
    );
    generate(&ids, &codes, &default, &[]);
    generate(&ids, &codes, &all, &["--codebooks", "4"]);
    assert_eq!(
        std::fs::read(&default).unwrap(),
        std::fs::read(&all).unwrap(),
        "--codebooks 4 (all) differs from the default"
    );
    let o = generate(&ids, &codes, &two, &["--codebooks", "2"]);
    let summary = String::from_utf8_lossy(&o.stdout);
    let got = read_codes(&two).unwrap();
    let frames = got.ncols();
    assert_eq!(got.nrows(), 2, "{summary}");
    assert!(frames >= 1, "{summary}");
    assert!(
        summary.contains(&format!("{frames} frames x 2 codebooks")),
        "{summary}"
    );
    // the 4-row context codes were read to their first 2 rows: the same as a 2-row file
    let two_rows = d.path().join("codes2.npy");
    let c = read_codes(&codes).unwrap();
    write_codes(&two_rows, c.slice(ndarray::s![..2, ..]).view()).unwrap();
    let again = d.path().join("again.npy");
    generate(&ids, &two_rows, &again, &["--codebooks", "2"]);
    assert_eq!(read_codes(&again).unwrap(), got);
    // fewer rows than codebooks in use: one error
    let out = d.path().join("no.npy");
    let e = fails(&generate_args(&ids, &two_rows, &out, &[]), &out);
    assert!(e.contains("2 codebooks, the model uses 4"), "{e}");

    // decode: frames x 1920 samples
    let wav = d.path().join("two.wav");
    ok(&["decode", "--model", FIXTURE, p(&two), "--out", p(&wav)]);
    let r = hound::WavReader::open(&wav).unwrap();
    assert_eq!(r.duration() as usize, frames * 1920);
}

#[test]
fn say_with_fewer_codebooks_speaks_and_with_all_is_the_default() {
    let d = tempfile::tempdir().unwrap();
    let say = |name: &str, extra: &[&str]| -> Vec<u8> {
        let out = d.path().join(name);
        let mut a = vec![
            "say",
            "Fewer codebooks.",
            "--model",
            BUNDLED,
            "--max-seconds",
            "0.8",
            "--seed",
            "2",
            "--out",
            p(&out),
        ];
        a.extend_from_slice(extra);
        ok(&a);
        std::fs::read(out).unwrap()
    };
    let default = say("default.wav", &[]);
    assert_eq!(say("all.wav", &["--codebooks", "4"]), default);
    let two = say("two.wav", &["--codebooks", "2"]);
    let one = say("one.wav", &["--codebooks", "1"]);
    for (n, wav) in [(2, &two), (1, &one)] {
        let r = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
        assert!(
            r.duration() >= 1920,
            "{n} codebooks: {} samples",
            r.duration()
        );
        let peak = r
            .into_samples::<i16>()
            .map(|s| s.unwrap().unsigned_abs())
            .max();
        assert!(peak > Some(0), "{n} codebooks: silence");
    }
    assert_ne!(two, default, "2 codebooks sound the same as 4");
}

#[test]
fn a_codebook_count_outside_the_model_is_one_error() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.wav");
    let say = |n: &str| {
        fails(
            &[
                "say",
                "Hi.",
                "--model",
                BUNDLED,
                "--codebooks",
                n,
                "--out",
                p(&out),
            ],
            &out,
        )
    };
    let e = say("0");
    assert!(e.contains("--codebooks") && e.contains("at least 1"), "{e}");
    let e = say("many");
    assert!(e.contains("--codebooks") && e.contains("`many`"), "{e}");
    for n in ["5", "33"] {
        let e = say(n);
        assert!(
            e.contains(&format!("--codebooks {n}")) && e.contains("1 to 4 codebooks"),
            "{e}"
        );
    }
    let (ids, codes) = context(d.path());
    let npy = d.path().join("x.npy");
    let e = fails(
        &generate_args(&ids, &codes, &npy, &["--codebooks", "33"]),
        &npy,
    );
    assert!(e.contains("--codebooks 33") && e.contains("1 to 4"), "{e}");
}

#[test]
fn say_reads_context_audio_to_the_codebooks_in_use() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    // 0.4 s of a 24 kHz tone: 5 frames
    let tone: Vec<f32> = (0..9600)
        .map(|i| 0.3 * (i as f32 * 440.0 * std::f32::consts::TAU / 24000.0).sin())
        .collect();
    let wav = dir.join("turn0.wav");
    write_wav(&wav, &tone, 24000, SampleFormat::S16).unwrap();
    // the same turn as codes of all 4 codebooks (what `encode` writes by default)
    let all = dir.join("turn0.npy");
    ok(&["encode", "--model", BUNDLED, p(&wav), "--out", p(&all)]);
    assert_eq!(read_codes(&all).unwrap().nrows(), 4);
    // writes codes.npy (the second turn, 4 rows)
    context(dir);
    let ctx = |name: &str, first: &str| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                r#"[{{"speaker": 0, "text": "How are you?", {first}}},
                    {{"speaker": 1, "text": "Fine.", "codes": "codes.npy"}}]"#
            ),
        )
        .unwrap();
        path
    };
    let from_wav = ctx("wav.json", r#""audio": "turn0.wav""#);
    let from_codes = ctx("codes.json", r#""codes": "turn0.npy""#);
    let say = |name: &str, context: Option<&Path>| -> Vec<u8> {
        let out = dir.join(name);
        let mut a = vec![
            "say",
            "Good to hear",
            "--model",
            BUNDLED,
            "--codebooks",
            "2",
            "--max-seconds",
            "0.5",
            "--out",
            p(&out),
        ];
        if let Some(c) = context {
            a.extend(["--context", p(c)]);
        }
        ok(&a);
        std::fs::read(out).unwrap()
    };
    // a WAV encoded with 2 codebooks = the first 2 rows of a full encode
    let a = say("a.wav", Some(&from_wav));
    assert_eq!(a, say("b.wav", Some(&from_codes)));
    assert_ne!(a, say("c.wav", None), "the context changed nothing");
}
