//! Interrupted commands leave nothing behind: SIGINT, SIGTERM or SIGHUP sent to a running
//! `encode`, `decode`, `say`, `generate` or `quantize` removes its temporary output, and the
//! process ends as killed by that signal (as any program would).
//!
//! The file commands open their output before reading their input, so a child reading its
//! input from a FIFO nobody writes to is reliably caught mid-run, with its temporary file
//! present. `quantize` is interrupted while converting a model large enough to take a while;
//! if it finishes first, the test retries with a larger one.

mod common;

use common::repo;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(s(path)).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system node.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
}

fn spawn(args: &[&str]) -> Child {
    common::edgecsm()
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Polls until a name in `dir` contains `part`, or the child exits (None), for up to 60 s.
fn wait_for_partial(child: &mut Child, dir: &Path, part: &str) -> Option<String> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(60) {
        if let Some(n) = names(dir).into_iter().find(|n| n.contains(part)) {
            return Some(n);
        }
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("no {part} appeared in {}", dir.display());
}

fn kill(child: &Child, sig: i32) {
    // SAFETY: kill only sends a signal to our own child process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// Interrupts `args` (whose input blocks on a FIFO) with `sig` once its temporary output
/// exists in `dir`, then checks it died of the signal and left only `keep` in `dir`.
fn interrupt(args: &[&str], dir: &Path, sig: i32, keep: &[&str]) {
    let mut child = spawn(args);
    let partial = wait_for_partial(&mut child, dir, ".partial")
        .unwrap_or_else(|| panic!("{args:?} ended before it was interrupted"));
    kill(&child, sig);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(sig),
        "{args:?}: {:?}\n{err}",
        out.status
    );
    assert!(!err.contains("error:"), "{args:?}: {err}");
    assert_eq!(names(dir), keep, "{args:?} left {partial}");
}

#[test]
fn interrupted_file_commands_remove_their_temporary_output() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let fifo = dir.join("input.fifo");
    mkfifo(&fifo);
    let mimi = repo().join("tests/fixtures/mimi/b");
    let csm = repo().join("models/csm-tiny");
    let out = |n: &str| -> PathBuf { dir.join(n) };
    interrupt(
        &[
            "encode",
            "--model",
            s(&mimi),
            s(&fifo),
            "--out",
            s(&out("c.npy")),
        ],
        dir,
        libc::SIGINT,
        &["input.fifo"],
    );
    interrupt(
        &[
            "decode",
            "--model",
            s(&mimi),
            s(&fifo),
            "--out",
            s(&out("a.wav")),
        ],
        dir,
        libc::SIGTERM,
        &["input.fifo"],
    );
    interrupt(
        &[
            "say",
            "Hello",
            "--model",
            s(&csm),
            "--context",
            s(&fifo),
            "--out",
            s(&out("s.wav")),
        ],
        dir,
        libc::SIGHUP,
        &["input.fifo"],
    );
    // an existing output stays as it was
    std::fs::write(out("g.npy"), b"old").unwrap();
    interrupt(
        &[
            "generate",
            "--model",
            s(&csm),
            "--input-ids",
            s(&fifo),
            "--max-frames",
            "2",
            "--out",
            s(&out("g.npy")),
        ],
        dir,
        libc::SIGINT,
        &["g.npy", "input.fifo"],
    );
    assert_eq!(std::fs::read(out("g.npy")).unwrap(), b"old");
}

/// A source model of `tensors` F32 matrices of 1024 x 1024 (4 MiB each).
fn write_model(dir: &Path, tensors: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut header = serde_json::Map::new();
    let size = 1024 * 1024 * 4;
    for i in 0..tensors {
        header.insert(
            format!("layers.{i}.weight"),
            serde_json::json!({"dtype": "F32", "shape": [1024, 1024],
                               "data_offsets": [i * size, (i + 1) * size]}),
        );
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut f =
        std::io::BufWriter::new(std::fs::File::create(dir.join("model.safetensors")).unwrap());
    use std::io::Write;
    f.write_all(&(h.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&h).unwrap();
    let row: Vec<u8> = (0..1024)
        .flat_map(|i| ((i as f32 - 512.0) / 512.0).to_le_bytes())
        .collect();
    for _ in 0..tensors * 1024 {
        f.write_all(&row).unwrap();
    }
    f.flush().unwrap();
}

#[test]
fn interrupted_quantize_removes_its_partial_directory() {
    let d = tempfile::tempdir().unwrap();
    let model = d.path().join("model");
    let out_dir = d.path().join("outputs");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("q8");
    for (attempt, tensors) in [16, 64, 256].into_iter().enumerate() {
        let _ = std::fs::remove_dir_all(&model);
        write_model(&model, tensors);
        let mut child = spawn(&[
            "quantize",
            "--model",
            s(&model),
            "--dtype",
            "q8",
            "--out",
            s(&out),
            "--quiet",
        ]);
        let Some(_) = wait_for_partial(&mut child, &out_dir, ".partial-") else {
            // finished before it could be caught: try a larger model
            assert!(child.wait().unwrap().success());
            std::fs::remove_dir_all(&out).unwrap();
            continue;
        };
        let sig = [libc::SIGINT, libc::SIGTERM, libc::SIGINT][attempt];
        kill(&child, sig);
        let o = child.wait_with_output().unwrap();
        if o.status.success() {
            // the rename won the race with the signal: complete output, nothing partial
            assert_eq!(names(&out_dir), ["q8"]);
            std::fs::remove_dir_all(&out).unwrap();
            continue;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.signal(), Some(sig), "{:?}\n{err}", o.status);
        assert!(!err.contains("error:"), "{err}");
        assert!(names(&out_dir).is_empty(), "left {:?}", names(&out_dir));
        return;
    }
    panic!("quantize always finished before the signal");
}
