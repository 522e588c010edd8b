//! The command line's log backend for the `log` facade: one line per event on stderr.
//!
//! - Level: `info` by default, `warn` with `--quiet`, `debug` with `-v`, `trace` with `-vv`;
//!   `RUST_LOG` overrides them: a level (`debug`), or comma-separated `target=level` entries
//!   and an optional bare default (`warn,edgecsm::daemon::audio=debug`; the longest matching
//!   target prefix wins).
//! - Format: `<command>: <message>`, with `warning: `/`error: ` before the message of those
//!   levels. Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority
//!   (`<4>`), which journald reads as the entry's level (`journalctl -p warning`).
//!
//! Errors that end a command are not logged: they stay the one `error:` line `main` prints.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

struct Logger {
    command: &'static str,
    default: LevelFilter,
    targets: Targets,
    journald: bool,
}

impl Logger {
    fn level_for(&self, target: &str) -> LevelFilter {
        self.targets
            .iter()
            .find(|(prefix, _)| target.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, l)| *l)
    }
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= self.level_for(m.target())
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let (priority, label) = match r.level() {
            Level::Error => (3, "error: "),
            Level::Warn => (4, "warning: "),
            Level::Info => (6, ""),
            Level::Debug | Level::Trace => (7, ""),
        };
        // one event, one line (a message's own line breaks become spaces)
        let msg = r.args().to_string().replace('\n', " ");
        let line = if self.journald {
            format!("<{priority}>{}: {label}{msg}\n", self.command)
        } else {
            format!("{}: {label}{msg}\n", self.command)
        };
        // one write per line, so lines of different threads do not interleave
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Per-target levels: `(target prefix, level)`, longest prefix first.
type Targets = Vec<(String, LevelFilter)>;

/// Parses a `RUST_LOG` value: the default level and the per-target ones.
fn parse_spec(spec: &str) -> Result<(Option<LevelFilter>, Targets), String> {
    let mut default = None;
    let mut targets = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let level = |s: &str| {
            s.parse::<LevelFilter>().map_err(|_| {
                format!("RUST_LOG: `{s}` is not a level (off, error, warn, info, debug, trace)")
            })
        };
        match part.split_once('=') {
            Some((t, l)) => targets.push((t.trim().to_string(), level(l.trim())?)),
            None => default = Some(level(part)?),
        }
    }
    targets.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
    Ok((default, targets))
}

/// Installs the logger for `command` (the subcommand's name, which prefixes every line).
/// `verbose` counts `-v`; `quiet` is `--quiet`. A bad `RUST_LOG` is an error.
pub fn init(command: &'static str, verbose: u8, quiet: bool) -> Result<(), String> {
    let flag_level = match (quiet, verbose) {
        (true, _) => LevelFilter::Warn,
        (false, 0) => LevelFilter::Info,
        (false, 1) => LevelFilter::Debug,
        (false, _) => LevelFilter::Trace,
    };
    let (env_default, targets) = match std::env::var("RUST_LOG") {
        Ok(spec) => parse_spec(&spec)?,
        Err(_) => (None, Vec::new()),
    };
    let default = env_default.unwrap_or(flag_level);
    let max = targets
        .iter()
        .map(|(_, l)| *l)
        .chain([default])
        .max()
        .unwrap_or(default);
    let logger = Logger {
        command,
        default,
        targets,
        journald: std::env::var_os("JOURNAL_STREAM").is_some(),
    };
    log::set_boxed_logger(Box::new(logger)).map_err(|e| e.to_string())?;
    log::set_max_level(max);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_specs() {
        let (d, t) =
            parse_spec("warn,edgecsm::daemon=debug, edgecsm::daemon::audio=trace").unwrap();
        assert_eq!(d, Some(LevelFilter::Warn));
        let l = Logger {
            command: "serve",
            default: d.unwrap(),
            targets: t,
            journald: false,
        };
        assert_eq!(l.level_for("edgecsm::daemon::audio"), LevelFilter::Trace);
        assert_eq!(l.level_for("edgecsm::daemon::session"), LevelFilter::Debug);
        assert_eq!(l.level_for("edgecsm::csm"), LevelFilter::Warn);
        assert_eq!(parse_spec("").unwrap().0, None);
        let e = parse_spec("loud").unwrap_err();
        assert!(e.contains("`loud` is not a level"), "{e}");
    }
}
