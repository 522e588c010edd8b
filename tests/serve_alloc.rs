//! The daemon allocates nothing per frame: run in this process on a private PulseAudio (null
//! sinks behind the ALSA `pulse` plugin, real-time clocked), with a counting global allocator
//! that counts only the threads the daemon marks through its hooks — capture, frame (compute)
//! and playback threads of the audio loop, and the session thread that generates. After
//! warm-up: an idle window (the audio loop running, nothing said), then a window in the middle
//! of a long utterance (every frame generated, decoded, queued and played) must both make zero
//! heap allocations. Then a minute of conversation (utterance after utterance): no allocation
//! on the audio and frame threads and no xrun. Client threads (JSON, unmarked) may allocate.
//! One test function: the counter and the process environment are process-wide.
#![cfg(feature = "alsa")]

mod alsa_common;

mod counting_alloc;
use edgecsm::daemon::{Daemon, DaemonConfig};
use edgecsm::stream::ThreadRole;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Counting classes: the audio loop's capture, frame and playback threads, and the session
/// thread that generates.
const AUDIO: usize = 1;
const SESSION: usize = 2;

fn mark(_: ThreadRole) {
    counting_alloc::mark_current_thread_as(AUDIO);
}

fn mark_session() {
    counting_alloc::mark_current_thread_as(SESSION);
}

/// How long the daemon keeps a conversation going in the last phase.
const CONVERSATION: Duration = Duration::from_secs(60);

const IN: &str = "serve_alloc_in";
const OUT: &str = "serve_alloc_out";
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/csm-tiny");

struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Client {
    fn request(&mut self, v: Value) -> Value {
        writeln!(self.w, "{v}").unwrap();
        self.recv()
    }
    fn recv(&mut self) -> Value {
        let mut line = String::new();
        assert!(
            self.r.read_line(&mut line).unwrap() > 0,
            "connection closed"
        );
        serde_json::from_str(&line).unwrap()
    }
    fn status(&mut self) -> Value {
        self.request(json!({"op": "status"}))["status"].clone()
    }
}

fn connect(p: &Path) -> Client {
    let s = UnixStream::connect(p).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    Client {
        w: s.try_clone().unwrap(),
        r: BufReader::new(s),
    }
}

#[test]
fn daemon_threads_allocate_nothing_per_frame() {
    // the counter sees allocations of marked threads (so a zero below means something)
    mark(ThreadRole::Compute);
    let before = counting_alloc::marked();
    std::hint::black_box(vec![1u8; 64]);
    assert!(counting_alloc::marked() > before, "allocation counter");
    counting_alloc::mark_current_thread(false);

    let pulse = alsa_common::Pulse::start(&[IN, OUT]);
    for (k, v) in pulse.env() {
        // SAFETY: the only test of this binary sets its environment before it starts any
        // thread of its own (or loads ALSA); the PulseAudio helpers are other processes.
        unsafe { std::env::set_var(k, v) };
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("alloc.sock");
    let mut cfg = DaemonConfig::new(IN, OUT, Path::new(MODEL), &socket);
    cfg.threads = 1;
    cfg.stream.thread_hook = Some(mark);
    cfg.session_hook = Some(mark_session);
    let daemon = Daemon::start(cfg).unwrap();
    let mut c = connect(&socket);

    // idle: the loop runs, the session waits for requests
    std::thread::sleep(Duration::from_secs(1));
    let a0 = counting_alloc::marked();
    std::thread::sleep(Duration::from_secs(2));
    let idle = counting_alloc::marked() - a0;

    // speaking: 100 frames (8 s); measure from the 10th frame played for about 3.5 s
    let r = c.request(
        json!({"op": "say", "text": "Allocation free, frame after frame.",
                             "max_seconds": 8.0, "temperature": 0}),
    );
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(c.recv()["event"], "started");
    let t0 = Instant::now();
    loop {
        let s = c.status();
        if s["played_frames"].as_u64().unwrap() >= 10 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no playback: {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let s0 = c.status();
    let b0 = counting_alloc::marked();
    std::thread::sleep(Duration::from_millis(3500));
    let b1 = counting_alloc::marked();
    let s1 = c.status();
    let speaking = b1 - b0;
    let (g0, g1) = (
        s0["generated_frames"].as_u64().unwrap(),
        s1["generated_frames"].as_u64().unwrap(),
    );
    let (p0, p1) = (
        s0["played_frames"].as_u64().unwrap(),
        s1["played_frames"].as_u64().unwrap(),
    );
    let done = c.recv();
    assert_eq!(done["event"], "done", "{done}");

    // a minute of conversation: one utterance after another (each new turn prefills, which
    // may allocate on the session thread; the audio and frame threads must not, and no
    // period may be lost)
    let x0 = c.status();
    let a0 = counting_alloc::marked_as(AUDIO);
    let t0 = Instant::now();
    let mut turns = 0;
    while t0.elapsed() < CONVERSATION {
        let r = c.request(
            json!({"op": "say", "text": format!("Turn {turns} of a long talk."),
                                 "max_seconds": 4.0, "seed": turns}),
        );
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(c.recv()["event"], "started");
        let d = c.recv();
        assert_eq!(d["event"], "done", "{d}");
        turns += 1;
    }
    let audio_allocs = counting_alloc::marked_as(AUDIO) - a0;
    let x1 = c.status();
    let count = |s: &Value, k: &str| s["counters"][k].as_u64().unwrap_or(0);
    let xruns = count(&x1, "xruns") - count(&x0, "xruns");
    let underruns = count(&x1, "underruns") - count(&x0, "underruns");
    println!(
        "conversation: {turns} turns in {:.1} s, audio/frame-thread allocations {audio_allocs}, \
         xruns {xruns}, underruns {underruns}\nstatus: {x1:#}",
        t0.elapsed().as_secs_f64()
    );
    let report = daemon.shutdown().unwrap();
    println!("done: {done}\nstatus: {s1:#}\n{report}");
    println!(
        "allocations on the daemon's audio, frame and session threads: {idle} in 2 s idle, \
         {speaking} while speaking (frames generated {g0}..{g1}, played {p0}..{p1})"
    );
    assert!(
        s1["speaking"].as_u64().is_some() && g1 < 100,
        "the window must lie inside the generation: {s1}"
    );
    assert!(
        g1 - g0 >= 30 && p1 - p0 >= 30,
        "frames in the window: {s0} {s1}"
    );
    assert_eq!(idle, 0, "heap allocations while idle");
    assert_eq!(speaking, 0, "heap allocations while speaking");
    assert_eq!(done["reason"], "max_frames", "{done}");
    assert!(turns >= 5, "too few turns in a minute: {turns}");
    assert_eq!(
        audio_allocs, 0,
        "heap allocations on the audio and frame threads during the conversation"
    );
    assert_eq!(xruns, 0, "xruns during the conversation");
    assert!(!socket.exists(), "socket left behind");
}
