//! `edgecsm serve` end to end on a private PulseAudio (null sinks behind the ALSA `pulse`
//! plugin, clocked in real time; see tests/alsa_common): the daemon captures from the monitor
//! of sink `serve_in` (which the test plays "user speech" into) and plays into sink
//! `serve_out` (whose monitor the test records). One test function: one daemon and one
//! PulseAudio for every step, run in order:
//! start-up errors; a stale socket file replaced, mode 0600; `say` -> reply, `started`,
//! `done` and sound on the speaker; `status` from a second client while the first one's `say`
//! runs; `stop` mid-utterance (the speaker goes silent, the utterance is reported stopped);
//! malformed, unknown, incomplete and oversized requests get error objects and the connection
//! keeps working; a user turn heard on capture joins the conversation; barge-in cuts speech;
//! `reset`; SIGTERM exits 0 and removes the socket.
#![cfg(feature = "alsa")]

mod alsa_common;
mod serve_common;

use serde_json::{Value, json};
use serve_common::wait_for;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const IN: &str = "serve_in";
const OUT: &str = "serve_out";
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/csm-tiny");
const FRAME: usize = 1920;
/// RMS above which a recorded 80 ms frame counts as sound.
const SOUND: f32 = 1e-3;

fn serve_cmd(pulse: &alsa_common::Pulse, socket: &Path, extra: &[&str]) -> Command {
    serve_with(pulse, socket, IN, MODEL, extra)
}

fn serve_with(
    pulse: &alsa_common::Pulse,
    socket: &Path,
    capture: &str,
    model: &str,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_edgecsm"));
    c.args([
        "--threads",
        "1",
        "serve",
        "--capture",
        capture,
        "--playback",
        OUT,
    ])
    .args(["--model", model, "--socket"])
    .arg(socket)
    .args(extra)
    .envs(pulse.env())
    .stdin(Stdio::null());
    c
}

/// A client connection with a read timeout (a missing reply fails the test, not hangs it).
struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Client {
        let s = UnixStream::connect(path).expect("connect to the daemon");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    fn send(&mut self, v: Value) {
        self.send_raw(format!("{v}\n").as_bytes());
    }

    fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("a line from the daemon");
        assert!(n > 0, "the daemon closed the connection");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    }

    /// The next line that is an event (replies in between are returned too, in order).
    fn recv_event(&mut self, name: &str) -> Value {
        loop {
            let v = self.recv();
            if v["event"] == name {
                return v;
            }
            assert!(v.get("event").is_some(), "unexpected line {v}");
        }
    }

    fn request(&mut self, v: Value) -> Value {
        self.send(v);
        self.recv()
    }
}

/// Records the monitor of `OUT`: the RMS of every 80 ms frame the speaker got.
struct Recorder {
    child: Child,
    rms: Arc<Mutex<Vec<f32>>>,
}

impl Recorder {
    fn start(pulse: &alsa_common::Pulse) -> Recorder {
        let mut child = Command::new("pacat")
            .args(["-r", "-d", &format!("{OUT}.monitor"), "--raw"])
            .args(["--latency-msec=20", "--rate=24000", "--channels=1"])
            .arg("--format=s16le")
            .envs(pulse.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("pacat");
        let mut out = child.stdout.take().unwrap();
        let rms = Arc::new(Mutex::new(Vec::new()));
        let sink = rms.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; FRAME * 2];
            while out.read_exact(&mut buf).is_ok() {
                let e: f32 = buf
                    .chunks_exact(2)
                    .map(|b| (i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0).powi(2))
                    .sum::<f32>()
                    / FRAME as f32;
                sink.lock().unwrap().push(e.sqrt());
            }
        });
        Recorder { child, rms }
    }

    fn frames(&self) -> usize {
        self.rms.lock().unwrap().len()
    }

    /// Frames with sound from frame `from` on.
    fn loud_since(&self, from: usize) -> usize {
        let r = self.rms.lock().unwrap();
        r[from.min(r.len())..]
            .iter()
            .filter(|&&x| x > SOUND)
            .count()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays `samples` into sink `IN` (the daemon's microphone) and waits until they are out.
fn speak_into_mic(pulse: &alsa_common::Pulse, samples: &[f32]) {
    let mut child = Command::new("pacat")
        .args(["-p", "-d", IN, "--raw", "--latency-msec=20", "--rate=24000"])
        .args(["--channels=1", "--format=s16le"])
        .envs(pulse.env())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pacat");
    let bytes: Vec<u8> = samples
        .iter()
        .flat_map(|&x| ((x * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes).unwrap();
    drop(stdin);
    let _ = child.wait();
}

/// A "voice": a 220 Hz tone with a 3 Hz tremolo, `seconds` long, then 0.2 s of silence.
fn voice(seconds: f32) -> Vec<f32> {
    let n = (seconds * 24_000.0) as usize;
    let mut v: Vec<f32> = (0..n)
        .map(|i| {
            let t = i as f32 / 24_000.0;
            let env = 0.6 + 0.4 * (2.0 * std::f32::consts::PI * 3.0 * t).sin();
            0.3 * env * (2.0 * std::f32::consts::PI * 220.0 * t).sin()
        })
        .collect();
    v.extend(std::iter::repeat_n(0.0, 4800));
    v
}

fn status(c: &mut Client) -> Value {
    let r = c.request(json!({"op": "status"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["op"], "status");
    r["status"].clone()
}

/// Runs a `serve` that must fail at start; returns its stderr.
fn start_error(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run edgecsm serve");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "serve should have failed: {err}");
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "{err}");
    last
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // by PID; a test that got here normally has already stopped it
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_over_the_socket() {
    let pulse = alsa_common::Pulse::start(&[IN, OUT]);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("edgecsm.sock");

    // start-up errors: one clear line each, non-zero exit, no socket left behind
    let e = start_error(&mut serve_with(&pulse, &socket, "no_such_pcm", MODEL, &[]));
    assert!(e.contains("no_such_pcm"), "{e}");
    assert!(!socket.exists(), "a failed start removes its socket");
    let e = start_error(&mut serve_with(
        &pulse,
        &socket,
        IN,
        "/nonexistent/model",
        &[],
    ));
    assert!(e.contains("/nonexistent/model"), "{e}");
    std::fs::write(dir.path().join("plain"), b"x").unwrap();
    let e = start_error(&mut serve_cmd(&pulse, &dir.path().join("plain"), &[]));
    assert!(e.contains("not a socket"), "{e}");

    // a stale socket file (nobody listening) is replaced
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let log = dir.path().join("serve.log");
    let child = serve_cmd(&pulse, &socket, &["--report-every", "1"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut daemon = Daemon {
        child,
        socket: socket.clone(),
        log,
    };
    wait_for("the daemon's socket", 60, || {
        daemon.log().contains("listening on") || matches!(daemon.child.try_wait(), Ok(Some(_)))
    });
    assert!(daemon.log().contains("listening on"), "{}", daemon.log());
    assert!(daemon.log().contains("random-weight"), "{}", daemon.log());
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    // a second daemon on the same socket is refused
    let e = start_error(&mut serve_cmd(&pulse, &socket, &[]));
    assert!(e.contains("in use"), "{e}");

    let rec = Recorder::start(&pulse);
    let mut a = Client::connect(&socket);
    let mut b = Client::connect(&socket);

    // say: reply with an id, then started and done; the speaker gets the sound
    let before = rec.frames();
    let r = a.request(
        json!({"op": "say", "text": "Hello there.", "max_seconds": 1.0,
                             "temperature": 0}),
    );
    assert_eq!(
        (r["ok"].clone(), r["op"].clone()),
        (json!(true), json!("say")),
        "{r}"
    );
    let id = r["id"].as_u64().unwrap();
    let s = a.recv_event("started");
    assert_eq!(s["id"], id);
    // status from a second client while the first one's say runs
    let st = status(&mut b);
    for path in [
        "/latency/frame_compute_ms/p50",
        "/latency/frame_compute_ms/p99",
        "/latency/frame_compute_ms/max",
        "/latency/generation_frame_ms/p99",
        "/latency/capture_to_gate_ms/p99",
        "/latency/playback_wait_ms/p99",
        "/latency/user_turn_ms/p99",
        "/latency/text_to_first_sound_ms/count",
        "/latency/bound_ms",
        "/counters/xruns",
        "/counters/underruns",
        "/counters/speech_underruns",
        "/counters/dropped",
        "/conversation/segments",
        "/conversation/positions",
        "/uptime_s",
    ] {
        assert!(st.pointer(path).is_some(), "status lacks {path}: {st}");
    }
    let d = a.recv_event("done");
    println!("say: {s}\n      {d}");
    assert_eq!(d["id"], id);
    assert_eq!(d["reason"], "max_frames", "{d}");
    assert_eq!(d["frames"], 13, "{d}");
    assert_eq!(d["played"], 13, "{d}");
    assert!(d["text_to_first_sound_ms"].as_f64().unwrap() > 0.0, "{d}");
    wait_for("the speech on the speaker", 5, || {
        rec.loud_since(before) >= 10
    });
    let st = status(&mut b);
    assert_eq!(st["conversation"]["segments"], 1, "{st}");

    // stop mid-utterance: 8 s asked, stopped after about 1 s
    let r = a.request(
        json!({"op": "say", "text": "A long one.", "max_seconds": 8.0,
                             "temperature": 0}),
    );
    let id = r["id"].as_u64().unwrap();
    let s = a.recv_event("started");
    assert_eq!(s["max_frames"], 100, "{s}");
    wait_for("some of the long utterance played", 10, || {
        status(&mut b)["played_frames"].as_u64().unwrap() >= 8
    });
    let r = b.request(json!({"op": "stop"}));
    assert_eq!(r["stopped"], id, "{r}");
    let d = a.recv_event("done");
    println!("stopped: {d}");
    assert_eq!(d["reason"], "stopped", "{d}");
    let (frames, played) = (d["frames"].as_u64().unwrap(), d["played"].as_u64().unwrap());
    assert!(frames < 100 && played < 50 && played <= frames, "{d}");
    // after the cut the speaker stays silent (the remaining ~6 s are not played)
    std::thread::sleep(Duration::from_millis(400));
    let mark = rec.frames();
    std::thread::sleep(Duration::from_millis(1200));
    assert!(rec.frames() >= mark + 10, "the recorder stalled");
    assert_eq!(rec.loud_since(mark), 0, "sound after the stop");
    let st = status(&mut b);
    assert_eq!(st["latency"]["stop_to_cut_ms"]["count"], 1, "{st}");
    // stop with nothing to stop
    assert_eq!(b.request(json!({"op": "stop"}))["stopped"], Value::Null);

    // bad requests: an error object each, the connection keeps working
    for (line, want) in [
        (b"{\"op\": \"say\", \n".to_vec(), "malformed JSON"),
        (b"{\"op\":\"sing\"}\n".to_vec(), "unknown op"),
        (b"{\"op\":\"say\"}\n".to_vec(), "missing field `text`"),
        (b"[]\n".to_vec(), "JSON object"),
        (b"\n".to_vec(), "empty request line"),
        (b"  \r\n".to_vec(), "empty request line"),
    ] {
        b.send_raw(&line);
        let r = b.recv();
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().contains(want), "{r}");
    }
    let mut big = br#"{"op":"say","text":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend_from_slice(b"\"}\n");
    b.send_raw(&big);
    let r = b.recv();
    assert_eq!(r["ok"], false, "{r}");
    assert!(r["error"].as_str().unwrap().contains("longer than"), "{r}");
    // the 8 s utterance needed room: the tiny model's 128 positions held only it
    let st = status(&mut b);
    assert_eq!(st["conversation"]["segments"], 1, "{st}");
    assert_eq!(st["conversation"]["evicted_segments"], 1, "{st}");

    // live voice context: a turn heard on capture joins the conversation
    let st = status(&mut b);
    let turns0 = st["conversation"]["user_turns_added"].as_u64().unwrap();
    speak_into_mic(&pulse, &voice(1.0));
    wait_for("the user turn", 10, || {
        status(&mut b)["conversation"]["user_turns_added"]
            .as_u64()
            .unwrap()
            > turns0
    });
    let st = status(&mut b);
    assert_eq!(st["conversation"]["segments"], 2, "{st}");
    assert!(daemon.log().contains("user turn 1"), "{}", daemon.log());

    // barge-in: speech heard while the daemon speaks cuts it
    let r = a.request(
        json!({"op": "say", "text": "Go on and on.", "max_seconds": 8.0,
                             "temperature": 0}),
    );
    let id = r["id"].as_u64().unwrap();
    a.recv_event("started");
    wait_for("the utterance playing", 10, || {
        status(&mut b)["played_frames"].as_u64().unwrap() >= 4
    });
    speak_into_mic(&pulse, &voice(0.6));
    let d = a.recv_event("done");
    println!("barge-in: {d}");
    assert_eq!(
        (d["id"].as_u64(), d["reason"].clone()),
        (Some(id), json!("barge_in")),
        "{d}"
    );
    assert!(d["played"].as_u64().unwrap() < 60, "{d}");
    let st = status(&mut b);
    assert_eq!(st["counters"]["barge_ins"], 1, "{st}");

    // reset forgets the conversation (the barge-in turn may still be arriving)
    std::thread::sleep(Duration::from_millis(800));
    let r = b.request(json!({"op": "reset"}));
    assert_eq!(
        (r["ok"].clone(), r["op"].clone()),
        (json!(true), json!("reset")),
        "{r}"
    );
    assert_eq!(status(&mut b)["conversation"]["positions"], 0);
    println!("status: {:#}", status(&mut b));

    // SIGTERM: exit 0, socket removed
    let pid = daemon.child.id().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    let code = loop {
        if let Some(s) = daemon.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("daemon log:\n{}", daemon.log());
    assert!(code.success(), "exit after SIGTERM: {code}");
    let log = daemon.log();
    assert!(
        log.contains("serve: report frame_p50_ms="),
        "no latency line: {log}"
    );
    assert!(log.contains("serve: stopped"), "{log}");
    assert!(!socket.exists(), "socket left behind");
    // the clients see the connection closed
    let mut rest = String::new();
    let _ = a.r.read_to_string(&mut rest);
    assert!(rest.is_empty(), "{rest}");
}
