//! A client of the daemon's control socket for the serve tests: JSON lines out, replies and
//! events in, events that arrive while waiting for a reply kept for later.
#![allow(dead_code)] // each test binary uses a different part

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct Client {
    r: BufReader<UnixStream>,
    w: UnixStream,
    /// Events read while waiting for a reply.
    pub events: Vec<Value>,
}

impl Client {
    /// Connects, with a 30 s read timeout (a hung daemon fails the test, not the run).
    pub fn connect(p: &Path) -> Client {
        let s = UnixStream::connect(p).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
            events: Vec::new(),
        }
    }

    pub fn send(&mut self, v: Value) {
        writeln!(self.w, "{v}").unwrap();
    }

    /// The next line, or None at end of stream.
    pub fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
            Err(e) => panic!("reading from the daemon: {e}"),
        }
    }

    /// Sends a request and returns its reply; events that arrive first are kept.
    pub fn request(&mut self, v: Value) -> Value {
        self.send(v);
        loop {
            let v = self.recv().expect("the daemon closed the connection");
            if v.get("event").is_none() {
                return v;
            }
            self.events.push(v);
        }
    }

    /// [`Client::request`], asserting the reply is `ok`.
    pub fn request_ok(&mut self, v: Value) -> Value {
        let r = self.request(v);
        assert_eq!(r["ok"], true, "{r}");
        r
    }

    pub fn status(&mut self) -> Value {
        self.request_ok(json!({"op": "status"}))["status"].clone()
    }

    /// The next event named `name`; the events before it are dropped.
    pub fn event(&mut self, name: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            let v = self.events.remove(i);
            self.events.drain(..i);
            return v;
        }
        self.events.clear();
        self.read_until(|v| v["event"] == name)
    }

    /// Event `name` of utterance `id`; other kept events stay kept.
    pub fn event_of(&mut self, name: &str, id: u64) -> Value {
        let is = |e: &Value| e["event"] == name && e["id"] == id;
        match self.events.iter().position(is) {
            Some(i) => self.events.remove(i),
            None => self.read_until(is),
        }
    }

    fn read_until(&mut self, is: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().expect("the daemon closed the connection");
            if is(&v) {
                return v;
            }
        }
    }
}

/// Polls `f` every 20 ms until it holds; fails the test after `secs` seconds.
pub fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
