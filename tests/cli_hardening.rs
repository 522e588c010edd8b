//! The command line against hostile input, end to end: output paths that are not plain files
//! (FIFOs, devices, symlinks, `-`), `quantize --force` next to its source, NaN/Inf in audio and
//! weights, sizes in headers larger than their files, huge limits, corrupt tensors, argument
//! errors, streaming `say`/`decode` to stdout. Every failure must be one `error:` line (no
//! panic, no abort, no usage block) and leave no file behind.

mod common;

use common::{repo, run};

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

fn mimi() -> PathBuf {
    repo().join("tests/fixtures/mimi/b")
}

fn csm_tiny() -> PathBuf {
    repo().join("models/csm-tiny")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "{args:?} failed:\n{}", stderr(&o));
    o
}

/// Runs a command that must fail cleanly: exit code 1 (not a panic's 101 or an abort's
/// signal), exactly one `error:` line and nothing that looks like a panic or a usage block.
/// Returns the error line.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {:?}\n{err}", o.status);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one error line:\n{err}");
    for bad in ["panicked", "Usage:", "RUST_BACKTRACE"] {
        assert!(!err.contains(bad), "{args:?}: {bad}:\n{err}");
    }
    lines[0].to_string()
}

/// The type of the file at `p` itself (a symlink is not followed).
fn kind(p: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(p).unwrap().file_type()
}

/// The machine's /dev/null is still a character device.
fn dev_null_intact() {
    let t = std::fs::metadata("/dev/null").unwrap().file_type();
    assert!(t.is_char_device(), "/dev/null was replaced");
}

/// `say "Hello" ARGS --max-seconds 0.3 --out OUT`, which must fail (see [`fails`]).
fn say_fails(args: &[&str], out: &Path) -> String {
    let mut a = vec!["say", "Hello"];
    a.extend_from_slice(args);
    a.extend(["--max-seconds", "0.3", "--out", s(out)]);
    fails(&a)
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn write_f32_wav(path: &Path, samples: &[f32], rate: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &x in samples {
        w.write_sample(x).unwrap();
    }
    w.finalize().unwrap();
}

fn tone(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.3 * (i as f32 * 0.07).sin()).collect()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

/// Reads everything written to the FIFO at `path` on another thread; the result arrives on
/// the returned channel (never joined: if the command replaced the FIFO, the open blocks).
fn drain_fifo(path: &Path) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let mut f = std::fs::File::open(&p).unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        let _ = tx.send(v);
    });
    rx
}

/// A safetensors file's header (JSON) and the offset of its data section.
fn st_header(bytes: &[u8]) -> (Value, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), 8 + n)
}

/// `bytes` with its header replaced by `header` (padded to keep the data offset).
fn st_with_header(bytes: &[u8], header: &Value) -> Vec<u8> {
    let (_, base) = st_header(bytes);
    let mut h = header.to_string().into_bytes();
    assert!(h.len() <= base - 8, "the new header is longer");
    h.resize(base - 8, b' ');
    let mut out = ((base - 8) as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend_from_slice(&bytes[base..]);
    out
}

/// A copy of the bundled CSM in a temporary directory.
fn copy_model(from: &Path) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
    }
    d
}

/// Fills tensor `name` of `dir/model.safetensors` (F32) with `value`.
fn poison(dir: &Path, name: &str, value: f32) {
    let p = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&p).unwrap();
    let (h, base) = st_header(&bytes);
    let off = &h[name]["data_offsets"];
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    for c in bytes[base + a..base + b].chunks_exact_mut(4) {
        c.copy_from_slice(&value.to_le_bytes());
    }
    std::fs::write(&p, bytes).unwrap();
}

/// Writes `ids` as a 1-D int64 `.npy` file.
fn write_ids(path: &Path, ids: &[i64]) {
    let mut v = npy_with_shape(&format!("({},)", ids.len()), 0);
    v.extend(ids.iter().flat_map(|i| i.to_le_bytes()));
    std::fs::write(path, v).unwrap();
}

/// A `.npy` header declaring an int64 array of `shape` followed by `data_bytes` zero bytes.
fn npy_with_shape(shape: &str, data_bytes: usize) -> Vec<u8> {
    let mut h = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend((h.len() as u16).to_le_bytes());
    v.extend(h.as_bytes());
    v.extend(std::iter::repeat_n(0u8, data_bytes));
    v
}

// ---- 1. one output policy ----------------------------------------------------------------

#[test]
fn outputs_that_are_not_regular_files_are_never_replaced() {
    let d = tempfile::tempdir().unwrap();
    let codes = mimi().join("chirp.codes.npy");
    let decode = |out: &Path| -> Output {
        run(&["decode", "--model", s(&mimi()), s(&codes), "--out", s(out)])
    };

    // a FIFO is written in place (a streaming WAV), and stays a FIFO
    let fifo = d.path().join("fifo.wav");
    mkfifo(&fifo);
    let rx = drain_fifo(&fifo);
    let o = decode(&fifo);
    assert!(o.status.success(), "{}", stderr(&o));
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("fifo reader");
    assert_eq!(&got[..4], b"RIFF");
    assert!(got.len() > 1000, "{} bytes", got.len());
    assert!(kind(&fifo).is_fifo(), "the FIFO was replaced");

    // a symlink is followed: a link to a character device writes into the device ...
    let null_link = d.path().join("null.wav");
    symlink("/dev/null", &null_link).unwrap();
    let o = decode(&null_link);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kind(&null_link).is_symlink());
    dev_null_intact();

    // ... and a link to a regular file replaces that file (atomically), keeping the link
    let target_dir = d.path().join("real");
    std::fs::create_dir(&target_dir).unwrap();
    let target = target_dir.join("t.wav");
    std::fs::write(&target, b"old").unwrap();
    let link = d.path().join("link.wav");
    symlink(&target, &link).unwrap();
    let o = decode(&link);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(kind(&link).is_symlink());
    assert_eq!(&std::fs::read(&target).unwrap()[..4], b"RIFF");
    assert_eq!(entries(&target_dir), ["t.wav"]);

    // a dangling symlink is refused, and not replaced
    let dangling = d.path().join("dangling.wav");
    symlink(d.path().join("nowhere/x.wav"), &dangling).unwrap();
    let e = fails(&[
        "decode",
        "--model",
        s(&mimi()),
        s(&codes),
        "--out",
        s(&dangling),
    ]);
    assert!(e.contains("dangling.wav"), "{e}");
    assert!(kind(&dangling).is_symlink());
    // a directory is refused
    let e = fails(&[
        "decode",
        "--model",
        s(&mimi()),
        s(&codes),
        "--out",
        s(d.path()),
    ]);
    assert!(e.contains("directory"), "{e}");

    // every writing command follows the same policy: encode and generate into a FIFO
    let wav = d.path().join("in.wav");
    write_f32_wav(&wav, &tone(4800), 24000);
    let fifo2 = d.path().join("codes.npy");
    mkfifo(&fifo2);
    let rx = drain_fifo(&fifo2);
    ok(&["encode", "--model", s(&mimi()), s(&wav), "--out", s(&fifo2)]);
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("fifo reader");
    assert_eq!(&got[..6], b"\x93NUMPY");
    assert!(kind(&fifo2).is_fifo());

    // nothing but the test's own files is left
    assert_eq!(
        entries(d.path()),
        [
            "codes.npy",
            "dangling.wav",
            "fifo.wav",
            "in.wav",
            "link.wav",
            "null.wav",
            "real"
        ]
    );
}

#[test]
fn quantize_never_replaces_a_special_file_or_its_source() {
    let d = tempfile::tempdir().unwrap();
    let parent = d.path().join("parent");
    let model = parent.join("m");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(mimi().join(f), model.join(f))
            .or_else(|_| std::fs::write(model.join(f), b"{}").map(|_| 0))
            .unwrap();
    }
    let q = |out: &Path, force: bool| -> String {
        let mut a = vec![
            "quantize",
            "--model",
            s(&model),
            "--dtype",
            "f16",
            "--out",
            s(out),
        ];
        if force {
            a.push("--force");
        }
        fails(&a)
    };
    // OUT a parent of the model
    let e = q(&parent, true);
    assert!(e.contains("parent") || e.contains("contains"), "{e}");
    // OUT inside the model
    let e = q(&model.join("sub"), true);
    assert!(e.contains("inside"), "{e}");
    let e = q(&model.join("model.safetensors"), true);
    assert!(e.contains("inside") || e.contains("model directory"), "{e}");
    // OUT a symlink to the parent
    let link = d.path().join("link");
    symlink(&parent, &link).unwrap();
    q(&link, true);
    // the model by another name
    let alias = d.path().join("alias");
    symlink(&model, &alias).unwrap();
    q(&alias, true);
    assert!(model.join("model.safetensors").is_file());
    assert!(model.join("config.json").is_file());

    // a special file at OUT is never removed, even with --force
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let e = q(&fifo, true);
    assert!(e.contains("fifo"), "{e}");
    assert!(kind(&fifo).is_fifo());
    let null_link = d.path().join("null");
    symlink("/dev/null", &null_link).unwrap();
    q(&null_link, true);
    dev_null_intact();
    // --force does not delete a directory that is not an edgecsm output
    let precious = d.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("thesis.tex"), b"years of work").unwrap();
    let e = q(&precious, true);
    assert!(e.contains("precious") && e.contains("not"), "{e}");
    assert!(precious.join("thesis.tex").is_file());
    // `-` is not a directory
    let e = q(Path::new("-"), false);
    assert!(e.contains("directory"), "{e}");

    // and an edgecsm output is replaced with --force
    let out = d.path().join("out");
    let mut args = vec!["quantize", "--model", s(&model), "--dtype", "f16"];
    args.extend(["--out", s(&out), "-q"]);
    ok(&args);
    args.push("--force");
    ok(&args);
    let mut names = entries(d.path());
    names.retain(|n| n.contains("partial"));
    assert!(names.is_empty(), "{names:?}");
}

// ---- 3. NaN / Inf -------------------------------------------------------------------------

#[test]
fn non_finite_audio_is_an_error_naming_the_file_and_sample() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("codes.npy");
    for (name, bad) in [("nan.wav", f32::NAN), ("inf.wav", f32::NEG_INFINITY)] {
        let wav = d.path().join(name);
        let mut x = tone(4800);
        x[1234] = bad;
        write_f32_wav(&wav, &x, 24000);
        let e = fails(&["encode", "--model", s(&mimi()), s(&wav), "--out", s(&out)]);
        assert!(e.contains(name) && e.contains("1234"), "{e}");
        assert!(!out.exists());
    }
    // the same file as context audio of `say`
    let wav = d.path().join("ctx.wav");
    let mut x = tone(4800);
    x[77] = f32::NAN;
    write_f32_wav(&wav, &x, 16000);
    std::fs::write(
        d.path().join("context.json"),
        r#"[{"speaker": 1, "text": "Hi", "audio": "ctx.wav"}]"#,
    )
    .unwrap();
    let out = d.path().join("say.wav");
    let e = say_fails(&["--context", s(d.path())], &out);
    assert!(e.contains("ctx.wav") && e.contains("77"), "{e}");
    assert!(!out.exists());
}

#[test]
fn a_model_holding_nan_is_an_error_not_a_panic() {
    // a matrix deep in the backbone: found when its output is used
    let m = copy_model(&csm_tiny());
    poison(
        m.path(),
        "backbone_model.layers.1.mlp.down_proj.weight",
        f32::NAN,
    );
    let out = m.path().join("o.wav");
    let e = say_fails(&["--model", s(m.path())], &out);
    assert!(e.contains("NaN") || e.contains("non-finite"), "{e}");
    assert!(!out.exists());
    // a norm weight: found at load, by name
    let m = copy_model(&csm_tiny());
    poison(m.path(), "backbone_model.norm.weight", f32::INFINITY);
    let e = say_fails(&["--model", s(m.path())], &out);
    assert!(e.contains("backbone_model.norm.weight"), "{e}");
    // quantize reads every value: a NaN anywhere is named
    let m = copy_model(&csm_tiny());
    poison(m.path(), "codec_model.downsample.conv.weight", f32::NAN);
    let qd = tempfile::tempdir().unwrap();
    let q = qd.path().join("q");
    let e = fails(&[
        "quantize",
        "--model",
        s(m.path()),
        "--dtype",
        "q8",
        "--out",
        s(&q),
    ]);
    assert!(e.contains("codec_model.downsample.conv.weight"), "{e}");
    assert!(!q.exists());
    // the codec's encoder on NaN-free input with a NaN weight: no panic either
    let m = copy_model(&mimi());
    poison(
        m.path(),
        "encoder_transformer.layers.0.self_attn.q_proj.weight",
        f32::NAN,
    );
    let wav = m.path().join("in.wav");
    write_f32_wav(&wav, &tone(4800), 24000);
    let o = run(&[
        "encode",
        "--model",
        s(m.path()),
        s(&wav),
        "--out",
        s(&m.path().join("c.npy")),
    ]);
    assert!(
        o.status.code() == Some(0) || o.status.code() == Some(1),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

// ---- 4. sizes in headers ----------------------------------------------------------------

#[test]
fn huge_declared_sizes_are_errors_before_allocating() {
    let d = tempfile::tempdir().unwrap();
    let huge = d.path().join("huge.npy");
    std::fs::write(&huge, npy_with_shape("(4, 2000000000000)", 64)).unwrap();
    let huge1 = d.path().join("huge1.npy");
    std::fs::write(&huge1, npy_with_shape("(8000000000000,)", 64)).unwrap();
    let out = d.path().join("out");
    let e = fails(&["decode", "--model", s(&mimi()), s(&huge), "--out", s(&out)]);
    assert!(e.contains("huge.npy"), "{e}");
    let e = fails(&[
        "generate",
        "--model",
        s(&csm_tiny()),
        "--input-ids",
        s(&huge1),
        "--max-frames",
        "2",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("huge1.npy"), "{e}");
    let ids = d.path().join("ids.npy");
    write_ids(&ids, &[480, 482]);
    let e = fails(&[
        "generate",
        "--model",
        s(&csm_tiny()),
        "--input-ids",
        s(&ids),
        "--audio-codes",
        s(&huge),
        "--max-frames",
        "2",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("huge.npy"), "{e}");
    std::fs::write(
        d.path().join("context.json"),
        r#"[{"speaker": 1, "text": "Hi", "codes": "huge.npy"}]"#,
    )
    .unwrap();
    let e = say_fails(&["--context", s(d.path())], &out);
    assert!(e.contains("huge.npy"), "{e}");

    // a WAV whose data chunk claims 4 GB
    let wav = d.path().join("big.wav");
    write_f32_wav(&wav, &tone(100), 24000);
    let mut b = std::fs::read(&wav).unwrap();
    let pos = b.windows(4).position(|w| w == b"data").unwrap();
    b[pos + 4..pos + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    std::fs::write(&wav, b).unwrap();
    let e = fails(&["encode", "--model", s(&mimi()), s(&wav), "--out", s(&out)]);
    assert!(e.contains("big.wav"), "{e}");
    assert!(!out.exists());
}

// ---- 5. limits ------------------------------------------------------------------------------

#[test]
fn huge_limits_are_clear_errors_or_capped() {
    let d = tempfile::tempdir().unwrap();
    let ids = d.path().join("ids.npy");
    write_ids(&ids, &[480, 1]);
    let out = d.path().join("out.npy");
    for n in ["1000000000000000000", "18446744073709551615"] {
        let o = run(&[
            "generate",
            "--model",
            s(&csm_tiny()),
            "--input-ids",
            s(&ids),
            "--max-frames",
            n,
            "--top-k",
            "1",
            "--out",
            s(&out),
        ]);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("capped"), "{err}");
        std::fs::remove_file(&out).unwrap();
    }
    let e = fails(&[
        "--threads",
        "1000000",
        "decode",
        "--model",
        s(&mimi()),
        s(&mimi().join("chirp.codes.npy")),
        "--out",
        s(&d.path().join("x.wav")),
    ]);
    assert!(e.contains("--threads"), "{e}");
    let e = fails(&[
        "say",
        "Hi",
        "--max-seconds",
        "1e300",
        "--speaker",
        "4294967295",
        "--top-k",
        "18446744073709551615",
        "--out",
        s(&d.path().join("x.wav")),
        "--temperature",
        "inf",
    ]);
    assert!(e.contains("--temperature"), "{e}");
}

// ---- 8. corrupt tensors named ----------------------------------------------------------

#[test]
fn corrupt_tensors_are_named() {
    let m = copy_model(&mimi());
    let path = m.path().join("model.safetensors");
    let good = std::fs::read(&path).unwrap();
    let (h, _) = st_header(&good);
    let name = "encoder_transformer.layers.0.mlp.fc1.weight";
    let wav = m.path().join("in.wav");
    write_f32_wav(&wav, &tone(4800), 24000);
    let out = m.path().join("c.npy");
    let encode = || fails(&["encode", "--model", s(m.path()), s(&wav), "--out", s(&out)]);

    // a shape edit that changes the byte size
    let mut e1 = h.clone();
    e1[name]["shape"] = serde_json::json!([33, 16]);
    std::fs::write(&path, st_with_header(&good, &e1)).unwrap();
    let e = encode();
    assert!(e.contains(name) && e.contains("model.safetensors"), "{e}");
    // a dtype edit that changes it
    let mut e2 = h.clone();
    e2[name]["dtype"] = serde_json::json!("F16");
    std::fs::write(&path, st_with_header(&good, &e2)).unwrap();
    let e = encode();
    assert!(e.contains(name), "{e}");
    // a truncated data region names the tensors cut off
    std::fs::write(&path, &good[..good.len() - 100]).unwrap();
    let e = encode();
    assert!(e.contains("truncated") && e.contains("`"), "{e}");
    // a header length beyond the file
    let mut bad = good.clone();
    bad[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    std::fs::write(&path, bad).unwrap();
    let e = encode();
    assert!(e.contains("model.safetensors"), "{e}");
    assert!(!out.exists());
}

// ---- 10. the rest -----------------------------------------------------------------------

#[test]
fn argument_errors_are_one_line_and_help_still_shows_usage() {
    for args in [
        &["encode", "--bogus"][..],
        &["decode"],
        &["say"],
        &["quantize", "--dtype", "q4"],
        &["--threads", "x", "devices"],
        &["nosuchcommand"],
        &[],
    ] {
        let o = run(args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains("--help"), "{args:?}: {err}");
    }
    let o = ok(&["encode", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("Usage:"));
    let o = ok(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("edgecsm"));
}

#[test]
fn say_checks_its_output_before_generating() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("no/such/dir/x.wav");
    let o = run(&["say", "Hello", "--out", s(&out)]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no/such/dir"), "{err}");
    assert!(!err.contains("up to"), "generated before checking: {err}");
}

#[test]
fn a_long_context_is_evicted_in_one_go() {
    let d = tempfile::tempdir().unwrap();
    // 2000 one-frame turns of the tiny model (each 3+ positions): far more than its 128
    let codes = d.path().join("t.npy");
    let mut v = npy_with_shape("(4, 1)", 0);
    for c in [5i64, 6, 7, 8] {
        v.extend(c.to_le_bytes());
    }
    std::fs::write(&codes, v).unwrap();
    let turns: Vec<Value> = (0..2000)
        .map(|i| serde_json::json!({"speaker": i % 2, "text": "", "codes": "t.npy"}))
        .collect();
    std::fs::write(
        d.path().join("context.json"),
        serde_json::to_string(&turns).unwrap(),
    )
    .unwrap();
    let out = d.path().join("x.wav");
    let o = ok(&[
        "say",
        "Hi",
        "--context",
        s(d.path()),
        "--max-seconds",
        "1",
        "--out",
        s(&out),
    ]);
    let err = stderr(&o);
    // one eviction report, and the newest turns kept
    let evictions = err
        .lines()
        .filter(|l| l.contains("dropped") || l.contains("context full"))
        .count();
    assert_eq!(evictions, 1, "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("context positions"))
        .unwrap_or_else(|| panic!("{err}"));
    let kept: usize = line
        .split(" after ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(kept > 50, "{line}");
}

/// The streaming WAV header of a pipe: RIFF and data sizes unknown (0xFFFFFFFF).
fn assert_streaming_wav(b: &[u8], bits: u16) -> &[u8] {
    assert_eq!(&b[..4], b"RIFF");
    assert_eq!(&b[4..8], &[0xFF; 4]);
    assert_eq!(&b[8..12], b"WAVE");
    let pos = b.windows(4).position(|w| w == b"data").unwrap();
    assert_eq!(&b[pos + 4..pos + 8], &[0xFF; 4]);
    let fmt = b.windows(4).position(|w| w == b"fmt ").unwrap();
    let rate = u32::from_le_bytes(b[fmt + 12..fmt + 16].try_into().unwrap());
    let got_bits = u16::from_le_bytes(b[fmt + 22..fmt + 24].try_into().unwrap());
    assert_eq!((rate, got_bits), (24000, bits));
    &b[pos + 8..]
}

#[test]
fn say_and_decode_stream_to_stdout_and_say_reads_stdin() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("f.wav");
    ok(&["say", "Hi there", "--max-seconds", "0.5", "--out", s(&file)]);
    let pcm_file = edgecsm::audio::read_mono(&file).unwrap().samples;

    let mut child = common::edgecsm()
        .args(["say", "-", "--max-seconds", "0.5", "--out", "-"])
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hi there\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let data = assert_streaming_wav(&o.stdout, 16);
    assert_eq!(data.len(), pcm_file.len() * 2, "stdout holds only the WAV");
    let first = i16::from_le_bytes([data[0], data[1]]) as f32 / 32768.0;
    assert!((first - pcm_file[0]).abs() < 1e-6);
    // the same stream read back by our reader (sizes unknown: up to the end)
    let piped = d.path().join("piped.wav");
    std::fs::write(&piped, &o.stdout).unwrap();
    assert_eq!(edgecsm::audio::read_mono(&piped).unwrap().samples, pcm_file);

    // --raw: samples only
    let o = ok(&[
        "say",
        "Hi there",
        "--max-seconds",
        "0.5",
        "--out",
        "-",
        "--raw",
        "--sample-format",
        "f32",
    ]);
    assert_eq!(o.stdout.len(), pcm_file.len() * 4);

    // decode to stdout
    let o = ok(&[
        "decode",
        "--model",
        s(&mimi()),
        s(&mimi().join("chirp.codes.npy")),
        "--out",
        "-",
    ]);
    let data = assert_streaming_wav(&o.stdout, 16);
    assert!(!data.is_empty() && data.len().is_multiple_of(2));
    // errors stay on stderr, stdout empty
    let o = run(&["say", "-", "--out", "-", "--model", "/nonexistent"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
}
