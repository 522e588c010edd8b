//! The `encode` / `decode` command line end to end on the committed tiny codec
//! `tests/fixtures/mimi/b`.

mod common;

use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mimi")
        .join(name)
}

// ---- the binary, end to end -------------------------------------------------------------

use ndarray::{Array1, Array2};
use ndarray_npy::{ReadNpyExt, WriteNpyExt};
use std::process::Output;

fn edgecsm(args: &[&std::ffi::OsStr]) -> Output {
    common::edgecsm().args(args).output().expect("run edgecsm")
}

fn run_ok(args: &[&std::ffi::OsStr]) -> String {
    let out = edgecsm(args);
    assert!(
        out.status.success(),
        "edgecsm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail: one `error: ...` line containing every `needles` entry, and
/// the output file `out` not created.
fn run_err(args: &[&std::ffi::OsStr], out: &Path, needles: &[&str]) {
    let o = edgecsm(args);
    assert!(!o.status.success(), "edgecsm {args:?} succeeded");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("error: "), "{err:?}");
    for n in needles {
        assert!(err.contains(n), "{err:?} does not mention {n:?}");
    }
    assert!(!out.exists(), "{} was created", out.display());
    let dir = out.parent().unwrap();
    let stray: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn read_f32(path: &Path) -> Vec<f32> {
    Array1::<f32>::read_npy(std::fs::File::open(path).unwrap())
        .unwrap()
        .to_vec()
}

fn read_i64(path: &Path) -> Array2<i64> {
    Array2::<i64>::read_npy(std::fs::File::open(path).unwrap()).unwrap()
}

fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[f32]) {
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &x in samples {
        match spec.sample_format {
            hound::SampleFormat::Float => w.write_sample(x).unwrap(),
            hound::SampleFormat::Int => w.write_sample((x * 32767.0).round() as i16).unwrap(),
        }
    }
    w.finalize().unwrap();
}

fn wav_spec(channels: u16, rate: u32, float: bool) -> hound::WavSpec {
    hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: if float { 32 } else { 16 },
        sample_format: if float {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    }
}

fn read_wav(path: &Path) -> (hound::WavSpec, Vec<f32>) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    let v = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.unwrap()).collect(),
        hound::SampleFormat::Int => r
            .samples::<i32>()
            .map(|s| s.unwrap() as f32 / 32768.0)
            .collect(),
    };
    (spec, v)
}

#[test]
fn encode_matches_the_reference_codes() {
    let b = fixture("b");
    let d = tempfile::tempdir().unwrap();
    let wav = d.path().join("chirp.wav");
    write_wav(
        &wav,
        wav_spec(1, 24000, true),
        &read_f32(&b.join("chirp.input.npy")),
    );
    let codes = d.path().join("chirp.npy");
    let line = run_ok(&[
        os("encode"),
        os("--model"),
        os(&b),
        os(&wav),
        os("--out"),
        os(&codes),
    ]);
    assert!(line.contains("8 codebooks x 7 frames"), "{line}");
    assert_eq!(read_i64(&codes), read_i64(&b.join("chirp.codes.npy")));

    // Fewer codebooks: the leading rows of the full encode (residual quantization), with
    // two threads giving the same codes.
    let three = d.path().join("three.npy");
    run_ok(&[
        os("--threads"),
        os("2"),
        os("encode"),
        os("--model"),
        os(&b),
        os(&wav),
        os("--out"),
        os(&three),
        os("--codebooks"),
        os("3"),
    ]);
    let full = read_i64(&b.join("chirp.codes.npy"));
    assert_eq!(read_i64(&three), full.slice(ndarray::s![..3, ..]));
}

#[test]
fn encode_resamples_and_downmixes_any_common_wav() {
    let b = fixture("b");
    let d = tempfile::tempdir().unwrap();
    // 0.5 s of a 300 Hz tone, stereo 16-bit at 44.1 kHz: 22050 samples -> 12000 at 24 kHz
    // -> ceil(12000 / 1920) = 7 frames.
    let x: Vec<f32> = (0..22050 * 2)
        .map(|i| ((i / 2) as f32 * 2.0 * std::f32::consts::PI * 300.0 / 44100.0).sin() * 0.4)
        .collect();
    let wav = d.path().join("stereo.wav");
    write_wav(&wav, wav_spec(2, 44100, false), &x);
    let codes = d.path().join("c.npy");
    let line = run_ok(&[
        os("encode"),
        os("--model"),
        os(&b),
        os(&wav),
        os("--out"),
        os(&codes),
    ]);
    assert!(line.contains("44100 Hz, 2 channel(s)"), "{line}");
    let c = read_i64(&codes);
    assert_eq!(c.dim(), (8, 7));
    assert!(c.iter().all(|&v| (0..16).contains(&v)));
    // The same tone written at 24 kHz mono encodes to nearly the same codes (the resampler is
    // not bit-exact, so allow a few differing decisions).
    let y: Vec<f32> = (0..12000)
        .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 300.0 / 24000.0).sin() * 0.4)
        .collect();
    let wav24 = d.path().join("mono24.wav");
    write_wav(&wav24, wav_spec(1, 24000, true), &y);
    let codes24 = d.path().join("c24.npy");
    run_ok(&[
        os("encode"),
        os("--model"),
        os(&b),
        os(&wav24),
        os("--out"),
        os(&codes24),
    ]);
    let same = c
        .iter()
        .zip(read_i64(&codes24).iter())
        .filter(|(a, b)| a == b)
        .count();
    assert!(
        same * 10 >= c.len() * 8,
        "only {same} of {} codes agree",
        c.len()
    );
}

#[test]
fn decode_matches_the_reference_waveform() {
    let b = fixture("b");
    let d = tempfile::tempdir().unwrap();
    let want = read_f32(&b.join("random.decoded.npy"));
    let peak = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let wav = d.path().join("out.wav");
    let codes = b.join("random.codes.npy");
    let line = run_ok(&[
        os("decode"),
        os("--model"),
        os(&b),
        os(&codes),
        os("--out"),
        os(&wav),
        os("--sample-format"),
        os("f32"),
    ]);
    assert!(line.contains("8 codebooks x 19 frames"), "{line}");
    let (spec, got) = read_wav(&wav);
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 24000, 32)
    );
    assert_eq!(got.len(), want.len());
    let err = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err <= 1e-4 * peak, "max error {err}, peak {peak}");

    // Default s16: same audio within one quantization step (and clipping at full scale).
    let wav16 = d.path().join("out16.wav");
    run_ok(&[
        os("decode"),
        os("--model"),
        os(&b),
        os(&codes),
        os("--out"),
        os(&wav16),
    ]);
    let (spec, got) = read_wav(&wav16);
    assert_eq!(
        (spec.bits_per_sample, spec.sample_format),
        (16, hound::SampleFormat::Int)
    );
    for (a, w) in got.iter().zip(&want) {
        let w = w.clamp(-1.0, 1.0);
        assert!((a - w).abs() <= 1e-4 * peak + 1.0 / 32768.0, "{a} vs {w}");
    }

    // A codebook subset (semantic + one acoustic) decodes like the reference did.
    let first3 = d.path().join("first3.npy");
    let c = read_i64(&codes);
    c.slice(ndarray::s![..3, ..6])
        .to_owned()
        .write_npy(std::fs::File::create(&first3).unwrap())
        .unwrap();
    let wav3 = d.path().join("first3.wav");
    run_ok(&[
        os("decode"),
        os("--model"),
        os(&b),
        os(&first3),
        os("--out"),
        os(&wav3),
        os("--sample-format"),
        os("f32"),
    ]);
    let want3 = read_f32(&b.join("random.decoded_first3.npy"));
    let (_, got3) = read_wav(&wav3);
    assert_eq!(got3.len(), want3.len());
    let err = got3
        .iter()
        .zip(&want3)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(err <= 1e-4 * peak, "first3: max error {err}");
}

#[test]
fn bad_inputs_fail_cleanly_without_output() {
    let b = fixture("b");
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    let out_npy = p("out.npy");
    let out_wav = p("out.wav");
    let enc = |input: &Path, extra: &[&str], needles: &[&str]| {
        let mut args = vec![os("encode"), os("--model"), os(&b), os(input), os("--out")];
        args.push(os(&out_npy));
        args.extend(extra.iter().map(os));
        run_err(&args, &out_npy, needles);
    };

    std::fs::write(p("text.wav"), b"definitely not a RIFF file, just text").unwrap();
    enc(&p("text.wav"), &[], &["text.wav", "not a valid WAV"]);
    write_wav(&p("empty.wav"), wav_spec(1, 24000, false), &[]);
    enc(&p("empty.wav"), &[], &["empty.wav", "no audio samples"]);
    enc(&p("missing.wav"), &[], &["missing.wav"]);
    let good_wav = p("good.wav");
    write_wav(&good_wav, wav_spec(1, 24000, true), &[0.1; 4000]);
    enc(&good_wav, &["--codebooks", "9"], &["9 codebooks", "only 8"]);
    enc(&good_wav, &["--codebooks", "1"], &["too few", "2 semantic"]);
    let no_model = p("nomodel");
    run_err(
        &[
            os("encode"),
            os("--model"),
            os(&no_model),
            os(&good_wav),
            os("--out"),
            os(&out_npy),
        ],
        &out_npy,
        &["nomodel"],
    );

    let dec = |input: &Path, needles: &[&str]| {
        let args = [
            os("decode"),
            os("--model"),
            os(&b),
            os(input),
            os("--out"),
            os(&out_wav),
        ];
        run_err(&args, &out_wav, needles);
    };
    let save_i64 = |name: &str, a: Array2<i64>| {
        a.write_npy(std::fs::File::create(p(name)).unwrap())
            .unwrap();
        p(name)
    };
    let mut high = Array2::<i64>::zeros((8, 4));
    high[[5, 2]] = 16;
    dec(
        &save_i64("high.npy", high),
        &["high.npy", "code 16 at codebook 5, frame 2", "0..16"],
    );
    let mut neg = Array2::<i64>::zeros((8, 4));
    neg[[0, 3]] = -1;
    dec(&save_i64("neg.npy", neg), &["neg.npy", "code -1"]);
    dec(
        &save_i64("nine.npy", Array2::zeros((9, 4))),
        &["nine.npy", "9 codebooks", "only 8"],
    );
    dec(
        &save_i64("one.npy", Array2::zeros((1, 4))),
        &["one.npy", "too few"],
    );
    dec(
        &save_i64("noframes.npy", Array2::zeros((8, 0))),
        &["noframes.npy", "no frames"],
    );
    let f = p("float.npy");
    Array2::<f32>::zeros((8, 4))
        .write_npy(std::fs::File::create(&f).unwrap())
        .unwrap();
    dec(&f, &["float.npy", "int64"]);
    let v = p("vector.npy");
    Array1::<i64>::zeros(8)
        .write_npy(std::fs::File::create(&v).unwrap())
        .unwrap();
    dec(&v, &["vector.npy", "2-D"]);
    std::fs::write(p("junk.npy"), b"junk").unwrap();
    dec(&p("junk.npy"), &["junk.npy"]);
    dec(&p("absent.npy"), &["absent.npy"]);

    // A failed run leaves an existing output untouched.
    std::fs::write(&out_wav, b"keep me").unwrap();
    let args = [
        os("decode"),
        os("--model"),
        os(&b),
        os(&f),
        os("--out"),
        os(&out_wav),
    ];
    let o = edgecsm(&args);
    assert!(!o.status.success());
    assert_eq!(std::fs::read(&out_wav).unwrap(), b"keep me");
}
