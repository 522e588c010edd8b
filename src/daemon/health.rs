//! The health of the daemon's audio devices, as `status` reports it. The audio supervisor
//! ([`super::audio`], built with the `alsa` feature) writes it; the socket reads it.

use serde_json::{Value, json};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::metrics::Counter;

pub(super) const RUNNING: u64 = 0;
pub(super) const REOPENING: u64 = 1;
#[cfg_attr(not(feature = "alsa"), allow(dead_code))]
pub(super) const FAILED: u64 = 2;

/// The audio devices' health, for `status`.
#[derive(Debug, Default)]
pub struct AudioHealth {
    pub(super) state: AtomicU64,
    /// Times the loop was started again on reopened devices.
    pub(super) reconnects: Counter,
    /// Reopen attempts that failed.
    pub(super) failed_attempts: Counter,
    /// When the devices were lost (ns since the shared epoch; 0: not lost).
    pub(super) lost_since_ns: AtomicU64,
    /// Time spent without devices, over the daemon's life (ns; the current loss excluded).
    pub(super) lost_total_ns: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl AudioHealth {
    #[cfg_attr(not(feature = "alsa"), allow(dead_code))]
    pub(super) fn set_error(&self, e: &str) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }

    /// The `audio` section of `status`.
    pub fn status(&self, now_ns: u64) -> Value {
        let state = match self.state.load(Relaxed) {
            RUNNING => "running",
            REOPENING => "reopening",
            _ => "failed",
        };
        let since = self.lost_since_ns.load(Relaxed);
        let lost_for = (since != 0).then(|| now_ns.saturating_sub(since));
        let total = self.lost_total_ns.load(Relaxed) + lost_for.unwrap_or(0);
        let last_error = self.last_error.lock().ok().and_then(|g| g.clone());
        json!({
            "state": state,
            "reconnects": self.reconnects.get(),
            "failed_attempts": self.failed_attempts.get(),
            "lost_for_s": lost_for.map(|ns| ns as f64 / 1e9),
            "lost_total_s": total as f64 / 1e9,
            "last_error": last_error,
        })
    }
}
