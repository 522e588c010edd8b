//! The daemon never wedges: a panic in the session thread ends that utterance with reason
//! `error` and the daemon keeps speaking; a panic in a client thread closes that connection
//! only (and gives its slot back); a `stop` sent right after a `say`'s reply ends that
//! utterance with reason `stopped` before anything of it is played, every time. Run in this
//! process on a private PulseAudio (null sinks behind the ALSA `pulse` plugin) with the
//! daemon's test hook for injected panics. One test function: the process environment is
//! process-wide.
#![cfg(feature = "alsa")]

mod alsa_common;
mod serve_common;

use edgecsm::daemon::{Daemon, DaemonConfig};
use serde_json::{Value, json};
use serve_common::Client;
use std::path::Path;

const IN: &str = "serve_recovery_in";
const OUT: &str = "serve_recovery_out";
const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/csm-tiny");

#[test]
fn the_daemon_survives_panics_and_stop_always_wins() {
    let pulse = alsa_common::Pulse::start(&[IN, OUT]);
    for (k, v) in pulse.env() {
        // SAFETY: the only test of this binary sets its environment before it starts any
        // thread of its own (or loads ALSA); the PulseAudio helpers are other processes.
        unsafe { std::env::set_var(k, v) };
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("recovery.sock");
    let mut cfg = DaemonConfig::new(IN, OUT, Path::new(MODEL), &socket);
    cfg.threads = 1;
    cfg.fault_injection = true;
    let daemon = Daemon::start(cfg).unwrap();
    let mut c = Client::connect(&socket);

    // stop right after say: 100 of 100 end `stopped` with nothing played
    for trial in 0..100 {
        let r = c.request(json!({"op": "say", "text": "A sentence to stop.", "max_seconds": 2.0}));
        let id = r["id"].as_u64().unwrap();
        let s = c.request(json!({"op": "stop"}));
        assert_eq!(s["stopped"], id, "trial {trial}: {s}");
        let d = c.event("done");
        assert_eq!(d["id"], id, "trial {trial}: {d}");
        assert_eq!(d["reason"], "stopped", "trial {trial}: {d}");
        assert_eq!(d["played"], 0, "trial {trial}: {d}");
    }
    // one stop also clears what is queued behind the utterance
    let ids: Vec<u64> = (0..3)
        .map(|_| {
            c.request(json!({"op": "say", "text": "Queued.", "max_seconds": 2.0}))["id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let s = c.request(json!({"op": "stop"}));
    assert_eq!(s["stopped"], ids[2], "{s}");
    for id in &ids {
        let d = c.event("done");
        assert_eq!(
            (&d["id"], &d["reason"]),
            (&json!(id), &json!("stopped")),
            "{d}"
        );
    }
    // nothing left to stop
    assert_eq!(c.request(json!({"op": "stop"}))["stopped"], Value::Null);

    // a panic in the session thread mid-utterance: that utterance ends with `error`
    let r = c.request(json!({"op": "say", "text": "This one breaks.", "max_seconds": 4.0}));
    let id = r["id"].as_u64().unwrap();
    c.event("started");
    assert_eq!(
        c.request(json!({"op": "_fault", "in": "session"}))["ok"],
        true
    );
    let d = c.event("done");
    assert_eq!(
        (&d["id"], &d["reason"]),
        (&json!(id), &json!("error")),
        "{d}"
    );
    assert!(
        d["error"].as_str().unwrap().contains("internal error"),
        "{d}"
    );
    assert_eq!(c.status()["counters"]["session_restarts"], 1);
    // ... and the daemon goes on speaking
    let r = c
        .request(json!({"op": "say", "text": "Still here.", "max_seconds": 0.4, "temperature": 0}));
    let id = r["id"].as_u64().unwrap();
    let d = c.event("done");
    assert_eq!(
        (&d["id"], &d["reason"]),
        (&json!(id), &json!("max_frames")),
        "{d}"
    );
    assert_eq!(d["played"], 5, "{d}");

    // a panic in a client thread closes that connection only, and gives its slot back
    for _ in 0..20 {
        let mut bad = Client::connect(&socket);
        bad.send(json!({"op": "_fault", "in": "client"}));
        assert!(
            bad.recv().is_none(),
            "the panicking client's connection closes"
        );
    }
    let mut fresh = Client::connect(&socket);
    assert_eq!(fresh.request(json!({"op": "status"}))["ok"], true);
    assert_eq!(c.request(json!({"op": "status"}))["ok"], true);

    daemon.shutdown().unwrap();
    assert!(!socket.exists());
}
