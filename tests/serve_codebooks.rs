//! The daemon with fewer codebooks than its model's: `codebooks = N` in the options file is
//! read (an impossible count fails the start with one line naming the model's count), and a
//! daemon running with 2 of the bundled model's 4 codebooks reports them in `status`, speaks
//! (frames generated and played) and takes a user turn heard on capture into its conversation
//! (encoded with the same 2 codebooks). On a private PulseAudio (see tests/alsa_common).
#![cfg(feature = "alsa")]

mod alsa_common;
mod common;
mod serve_common;

use edgecsm::daemon::{Daemon, DaemonConfig};
use serde_json::{Value, json};
use serve_common::wait_for;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const IN: &str = "codebooks_in";
const OUT: &str = "codebooks_out";
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/csm-tiny");

fn request(c: &mut BufReader<UnixStream>, v: Value) -> Value {
    c.get_mut().write_all(format!("{v}\n").as_bytes()).unwrap();
    recv(c)
}

fn recv(c: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    assert!(c.read_line(&mut line).unwrap() > 0, "the daemon hung up");
    serde_json::from_str(&line).unwrap()
}

/// Plays 1 s of a tremolo tone and 0.2 s of silence into sink `IN` (the daemon's microphone).
fn speak_into_mic(pulse: &alsa_common::Pulse) {
    let mut child = Command::new("pacat")
        .args(["-p", "-d", IN, "--raw", "--latency-msec=20", "--rate=24000"])
        .args(["--channels=1", "--format=s16le"])
        .envs(pulse.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pacat");
    let bytes: Vec<u8> = (0..28_800)
        .map(|i| {
            let t = i as f32 / 24_000.0;
            let env = 0.6 + 0.4 * (std::f32::consts::TAU * 3.0 * t).sin();
            let x = if i < 24_000 {
                0.3 * env * (std::f32::consts::TAU * 220.0 * t).sin()
            } else {
                0.0
            };
            (x * 32767.0) as i16
        })
        .flat_map(i16::to_le_bytes)
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes).unwrap();
    drop(stdin);
    let _ = child.wait();
}

#[test]
fn a_daemon_with_fewer_codebooks() {
    let dir = tempfile::tempdir().unwrap();
    // the options file's key: a count beyond the model's fails the start, before any device
    let conf = dir.path().join("serve.conf");
    std::fs::write(&conf, "codebooks = 9\n").unwrap();
    let o = common::edgecsm()
        .args([
            "--threads",
            "1",
            "serve",
            "--capture",
            "none",
            "--playback",
            "none",
        ])
        .args(["--model", MODEL, "--socket"])
        .arg(dir.path().join("no.sock"))
        .arg("--config")
        .arg(&conf)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("--codebooks 9") && errors[0].contains("1 to 4 codebooks"),
        "{err}"
    );

    let pulse = alsa_common::Pulse::start(&[IN, OUT]);
    let socket = dir.path().join("codebooks.sock");
    let mut cfg = DaemonConfig::new(IN, OUT, Path::new(MODEL), &socket);
    cfg.threads = 1;
    cfg.codebooks = Some(2);
    let mut env = pulse.env();
    // the ALSA pulse plugin of this process finds the private server through these
    for (k, v) in env.drain(..) {
        // SAFETY: this binary's only test sets its environment before loading ALSA or
        // starting threads of its own; the PulseAudio helpers are other processes.
        unsafe { std::env::set_var(k, v) };
    }
    let daemon = Daemon::start(cfg).unwrap();
    let config = &daemon.status()["config"];
    assert_eq!(
        (
            config["codebooks"].clone(),
            config["model_codebooks"].clone()
        ),
        (json!(2), json!(4)),
        "{config}"
    );
    let s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut c = BufReader::new(s);
    let r = request(
        &mut c,
        json!({"op": "say", "text": "Two codebooks.", "max_seconds": 1.0, "temperature": 0}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(recv(&mut c)["event"], "started");
    let done = recv(&mut c);
    assert_eq!(done["event"], "done", "{done}");
    assert!(done["frames"].as_u64().unwrap() >= 1, "{done}");
    assert!(done["played"].as_u64().unwrap() >= 1, "{done}");

    let turns = || daemon.status()["conversation"]["user_turns_added"].clone();
    assert_eq!(turns(), json!(0));
    speak_into_mic(&pulse);
    wait_for("the user turn", 10, || turns() == json!(1));
    let st = daemon.status();
    assert_eq!(st["conversation"]["user_turns_failed"], 0, "{st}");
    assert_eq!(st["conversation"]["segments"], 2, "{st}");
    daemon.shutdown().unwrap();
}
