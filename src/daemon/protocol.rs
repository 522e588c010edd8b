//! The control protocol: one JSON object per line each way (UTF-8, `\n`-terminated).
//!
//! Requests: `{"op":"say","text":"...","speaker":0}` (optional `max_seconds`, `temperature`,
//! `top_k`, `seed`), `{"op":"stop"}`, `{"op":"status"}`, `{"op":"reset"}`. Every request gets
//! one reply, `{"ok":true,"op":...}` with its data, or `{"ok":false,"error":"..."}` for a line
//! that is blank, not JSON, not an object, has an unknown op, misses or mistypes a field, or is longer
//! than [`MAX_LINE`] bytes. A `say` is then followed by events on the same connection:
//! `{"event":"started","id":N,...}` and `{"event":"done","id":N,"frames":..,"reason":..}`.
//!
//! Lines are read through [`LineReader`], a fixed buffer that never grows: an oversized line
//! is reported once and skipped up to its newline.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::{self, Read};

/// Longest request line in bytes, newline excluded.
pub const MAX_LINE: usize = 64 * 1024 - 1;

/// A parsed request.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    Say(Say),
    Stop,
    Status,
    Reset,
    /// Test hook, refused unless the daemon was started with fault injection: a panic in the
    /// session thread (at its next generated frame) or in this client's thread.
    Fault(FaultPlace),
}

/// Where [`Request::Fault`] panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPlace {
    Session,
    Client,
}

/// The fields of a `say` request.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Say {
    pub text: String,
    #[serde(default)]
    pub speaker: u32,
    /// Upper bound on the spoken length (default: the daemon's `--max-seconds`).
    #[serde(default)]
    pub max_seconds: Option<f64>,
    /// Sampling temperature (0 = greedy; default 0.9 as the reference generator).
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Top-k (default 50).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// RNG seed (default: the request id).
    #[serde(default)]
    pub seed: Option<u64>,
}

const OPS: &str = "say, stop, status, reset";

/// Parses one request line; the error is the message for the client.
pub fn parse(line: &[u8]) -> Result<Request, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(format!(
            "empty request line: send one JSON object per line, e.g. {{\"op\":\"status\"}} \
             (ops: {OPS})"
        ));
    }
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut obj) = v else {
        return Err("a request must be a JSON object".into());
    };
    let op = match obj.remove("op") {
        Some(Value::String(s)) => s,
        Some(_) => return Err("field `op` must be a string".into()),
        None => return Err(format!("missing field `op` (one of {OPS})")),
    };
    let no_fields = |obj: &Map<String, Value>, op: &str| -> Result<(), String> {
        match obj.keys().next() {
            Some(k) => Err(format!("`{op}` takes no field `{k}`")),
            None => Ok(()),
        }
    };
    match op.as_str() {
        "say" => {
            let say: Say = serde_json::from_value(Value::Object(obj))
                .map_err(|e| format!("bad `say` request: {e}"))?;
            say.validate()?;
            Ok(Request::Say(say))
        }
        "stop" => no_fields(&obj, "stop").map(|_| Request::Stop),
        "status" => no_fields(&obj, "status").map(|_| Request::Status),
        "reset" => no_fields(&obj, "reset").map(|_| Request::Reset),
        "_fault" => match obj.remove("in") {
            Some(Value::String(w)) if w == "session" => Ok(Request::Fault(FaultPlace::Session)),
            Some(Value::String(w)) if w == "client" => Ok(Request::Fault(FaultPlace::Client)),
            _ => Err("`_fault` takes `in`: \"session\" or \"client\"".into()),
        },
        other => Err(format!(
            "unknown op {:?} (one of {OPS})",
            truncate(other, 64)
        )),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl Say {
    fn validate(&self) -> Result<(), String> {
        if self.text.trim().is_empty() {
            return Err("bad `say` request: `text` is empty".into());
        }
        if let Some(s) = self.max_seconds
            && !(s > 0.0 && s.is_finite())
        {
            return Err(format!(
                "bad `say` request: `max_seconds` must be positive, got {s}"
            ));
        }
        if let Some(t) = self.temperature
            && !(t >= 0.0 && t.is_finite())
        {
            return Err(format!(
                "bad `say` request: `temperature` must be 0 or more, got {t}"
            ));
        }
        Ok(())
    }
}

/// `{"ok":false,"error":msg}`.
pub fn error(msg: &str) -> String {
    serde_json::json!({"ok": false, "error": msg}).to_string()
}

/// `{"ok":true,"op":op}` plus the fields of `data` (an object).
pub fn ok(op: &str, data: Value) -> String {
    let mut m = Map::new();
    m.insert("ok".into(), Value::Bool(true));
    m.insert("op".into(), Value::String(op.into()));
    if let Value::Object(d) = data {
        m.extend(d);
    }
    Value::Object(m).to_string()
}

/// `{"event":name,"id":id}` plus the fields of `data` (an object).
pub fn event(name: &str, id: u64, data: Value) -> String {
    let mut m = Map::new();
    m.insert("event".into(), Value::String(name.into()));
    m.insert("id".into(), Value::from(id));
    if let Value::Object(d) = data {
        m.extend(d);
    }
    Value::Object(m).to_string()
}

/// One result of [`LineReader::next_line`].
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line (without its newline; a last unterminated line counts too).
    Text(&'a [u8]),
    /// A line longer than [`MAX_LINE`]: reported as soon as the buffer fills; the rest of it
    /// is skipped.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

/// Reads `\n`-terminated lines through a fixed buffer of `MAX_LINE + 1` bytes.
#[derive(Debug)]
pub struct LineReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Inside an oversized line: drop bytes up to the next newline.
    skipping: bool,
}

impl<R: Read> LineReader<R> {
    pub fn new(inner: R) -> Self {
        Self::with_capacity(inner, MAX_LINE + 1)
    }

    /// A reader whose lines may be `cap - 1` bytes long (tests use small ones).
    pub fn with_capacity(inner: R, cap: usize) -> Self {
        LineReader {
            inner,
            buf: vec![0; cap.max(2)].into_boxed_slice(),
            start: 0,
            end: 0,
            skipping: false,
        }
    }

    pub fn next_line(&mut self) -> io::Result<Line<'_>> {
        loop {
            if let Some(i) = self.buf[self.start..self.end]
                .iter()
                .position(|&b| b == b'\n')
            {
                let (s, e) = (self.start, self.start + i);
                self.start = e + 1;
                if self.skipping {
                    self.skipping = false;
                    continue;
                }
                return Ok(Line::Text(&self.buf[s..e]));
            }
            if self.skipping {
                self.start = 0;
                self.end = 0;
            } else if self.end - self.start == self.buf.len() {
                // a full buffer and no newline: the line is too long
                self.skipping = true;
                self.start = 0;
                self.end = 0;
                return Ok(Line::TooLong);
            } else if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let n = loop {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                if self.end > self.start && !self.skipping {
                    let (s, e) = (self.start, self.end);
                    self.start = self.end;
                    return Ok(Line::Text(&self.buf[s..e]));
                }
                return Ok(Line::Eof);
            }
            self.end += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_bad_ones_say_why() {
        assert_eq!(parse(br#"{"op":"stop"}"#), Ok(Request::Stop));
        assert_eq!(parse(br#"{"op":"status"}"#), Ok(Request::Status));
        assert_eq!(parse(br#" {"op":"reset"} "#), Ok(Request::Reset));
        let Ok(Request::Say(s)) = parse(br#"{"op":"say","text":"hi","speaker":1,"seed":7}"#) else {
            panic!()
        };
        assert_eq!((s.text.as_str(), s.speaker, s.seed), ("hi", 1, Some(7)));
        assert_eq!(s.max_seconds, None);
        for (line, want) in [
            (&b"{\"op\":"[..], "malformed JSON"),
            (b"[1,2]", "JSON object"),
            (b"{}", "missing field `op`"),
            (br#"{"op":3}"#, "must be a string"),
            (br#"{"op":"dance"}"#, "unknown op \"dance\""),
            (br#"{"op":"say"}"#, "missing field `text`"),
            (br#"{"op":"say","text":"a","speaker":-1}"#, "bad `say`"),
            (
                br#"{"op":"say","text":"a","voice":2}"#,
                "unknown field `voice`",
            ),
            (br#"{"op":"say","text":"  "}"#, "`text` is empty"),
            (br#"{"op":"say","text":"a","max_seconds":0}"#, "max_seconds"),
            (br#"{"op":"stop","now":true}"#, "takes no field `now`"),
            (b"\xff\xfe", "malformed JSON"),
            (b"", "empty request line"),
            (b" \t\r", "empty request line"),
        ] {
            let e = parse(line).unwrap_err();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn replies_are_one_json_line() {
        let e = error("bad \"thing\"\n");
        assert!(!e.contains('\n'));
        let v: Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "bad \"thing\"\n");
        let v: Value = serde_json::from_str(&ok("say", serde_json::json!({"id": 3}))).unwrap();
        assert_eq!(
            (v["ok"].clone(), v["op"].clone(), v["id"].clone()),
            (true.into(), "say".into(), 3.into())
        );
        let v: Value =
            serde_json::from_str(&event("done", 3, serde_json::json!({"frames": 9}))).unwrap();
        assert_eq!(
            (v["event"].clone(), v["id"].clone(), v["frames"].clone()),
            ("done".into(), 3.into(), 9.into())
        );
    }

    /// A reader handing out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn lines(data: &[u8], cap: usize, step: usize) -> Vec<Result<String, &'static str>> {
        let mut r = LineReader::with_capacity(Trickle { data, step }, cap);
        let mut out = Vec::new();
        loop {
            match r.next_line().unwrap() {
                Line::Text(t) => out.push(Ok(String::from_utf8_lossy(t).into_owned())),
                Line::TooLong => out.push(Err("too long")),
                Line::Eof => return out,
            }
        }
    }

    #[test]
    fn lines_are_bounded_and_oversized_ones_skipped() {
        for step in [1, 3, 100] {
            let got = lines(b"ab\ncdefgh\n\nxyz\n0123456789abcdef\nok\ntail", 8, step);
            assert_eq!(
                got,
                [
                    Ok("ab".into()),
                    Ok("cdefgh".into()),
                    Ok("".into()),
                    Ok("xyz".into()),
                    Err("too long"),
                    Ok("ok".into()),
                    Ok("tail".into()),
                ],
                "step {step}"
            );
            // exactly cap - 1 bytes fit; cap bytes do not
            assert_eq!(lines(b"1234567\n", 8, step), [Ok("1234567".into())]);
            assert_eq!(
                lines(b"12345678\nz\n", 8, step),
                [Err("too long"), Ok("z".into())]
            );
        }
        // a huge line through the real size: reported once, the reader stays usable
        let mut big = vec![b'x'; 3 * MAX_LINE];
        big.extend_from_slice(b"\n{\"op\":\"stop\"}\n");
        let mut r = LineReader::new(Trickle {
            data: &big,
            step: 4096,
        });
        assert_eq!(r.next_line().unwrap(), Line::TooLong);
        assert_eq!(r.next_line().unwrap(), Line::Text(br#"{"op":"stop"}"#));
        assert_eq!(r.next_line().unwrap(), Line::Eof);
        assert_eq!(r.buf.len(), MAX_LINE + 1, "the buffer never grows");
    }
}
