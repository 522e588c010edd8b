//! Keeps the daemon's audio up. When the audio loop ends because a device failed for good (a
//! USB sound card unplugged, PulseAudio or PipeWire restarted: ALSA reports `EIO`, `ENODEV`
//! or `EBADFD` and xrun recovery fails), the supervisor thread takes the frame processor back
//! from the ended loop, reports the loss (the `audio` section of `status`, a log line), and
//! reopens both devices with back-off (0.5 s, doubling up to 5 s) until they open, then starts
//! the loop again on them with the same processor and statistics. Nothing else stops: the
//! socket answers, the session keeps generating into the speech ring, the conversation is
//! kept. While the devices are away, `stop`s still take effect (the supervisor applies cuts),
//! and an utterance that was playing resumes where it was when they come back.

use super::frames::DaemonFrames;
use super::health::{FAILED, REOPENING, RUNNING};
use super::state::Shared;
use crate::stream::{self, AlsaCapture, AlsaPlayback, LoopStats, Report, Running, StreamConfig};
use crate::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// First wait before reopening a lost device; doubled after each failed attempt.
pub const REOPEN_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const REOPEN_MAX: Duration = Duration::from_secs(5);
/// How often the supervisor looks at the loop (and, while the devices are away, at cuts).
const TICK: Duration = Duration::from_millis(50);

/// The devices to (re)open and how.
#[derive(Clone, Debug)]
pub struct Devices {
    pub capture: String,
    pub playback: String,
    pub cfg: StreamConfig,
}

impl Devices {
    /// Opens both devices (capture first); an error names the device.
    pub fn open(&self) -> Result<(AlsaCapture, AlsaPlayback)> {
        let capture = AlsaCapture::open(&self.capture, &self.cfg)?;
        let playback = AlsaPlayback::open(&self.playback, &self.cfg)?;
        Ok((capture, playback))
    }

    fn start(
        &self,
        (capture, playback): (AlsaCapture, AlsaPlayback),
        frames: DaemonFrames,
        stats: &Arc<LoopStats>,
    ) -> Result<Running<DaemonFrames>> {
        stream::start_with_stats(&self.cfg, capture, playback, frames, stats.clone())
    }
}

/// The supervisor thread (see the module docs).
#[derive(Debug)]
pub struct Supervisor {
    thread: Option<JoinHandle<Result<Report>>>,
    stop: Arc<AtomicBool>,
}

struct Watch {
    devices: Devices,
    stats: Arc<LoopStats>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    latency_bound_ms: f64,
    started: Instant,
}

impl Supervisor {
    /// Starts the loop on the devices already opened, and the thread that keeps it up.
    pub fn start(
        devices: Devices,
        opened: (AlsaCapture, AlsaPlayback),
        frames: DaemonFrames,
        stats: Arc<LoopStats>,
        shared: Arc<Shared>,
    ) -> Result<Supervisor> {
        let latency_bound_ms = devices
            .cfg
            .latency_bound_ms(stream::PlaybackDevice::buffer_frames(&opened.1));
        let running = devices.start(opened, frames, &stats)?;
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Watch {
            devices,
            stats,
            shared,
            stop: stop.clone(),
            latency_bound_ms,
            started: Instant::now(),
        };
        let thread = std::thread::Builder::new()
            .name("edgecsm-audio".into())
            .spawn(move || watch.run(running))
            .map_err(|e| Error::Invalid(format!("cannot start the audio supervisor: {e}")))?;
        Ok(Supervisor {
            thread: Some(thread),
            stop,
        })
    }

    /// True once the supervisor gave up: the loop ended in a way reopening cannot mend (its
    /// frame thread panicked).
    pub fn failed(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the loop (or the reopening) and returns the loop's report over the daemon's life.
    pub fn stop(mut self) -> Result<Report> {
        self.stop.store(true, Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Invalid("the audio supervisor panicked".into())),
            None => Err(Error::Invalid("the audio loop was not running".into())),
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

impl Watch {
    fn stopping(&self) -> bool {
        self.stop.load(Relaxed)
    }

    fn report(&self) -> Report {
        Report {
            stats: self.stats.snapshot(),
            latency_bound_ms: self.latency_bound_ms,
            elapsed: self.started.elapsed(),
        }
    }

    fn run(self, mut running: Running<DaemonFrames>) -> Result<Report> {
        let health = &self.shared.audio;
        loop {
            while !running.is_finished() && !self.stopping() {
                std::thread::park_timeout(TICK);
            }
            if self.stopping() {
                running.stop();
                return running.join().map(|_| self.report());
            }
            let (result, frames) = running.join_parts();
            let why = match result {
                Err(e) => e.to_string(),
                Ok(_) => "the audio loop ended".into(),
            };
            let Some(mut frames) = frames else {
                health.state.store(FAILED, Relaxed);
                health.set_error(&why);
                log::error!("audio: {why}; cannot restart the audio loop");
                return Err(Error::Invalid(why));
            };
            let lost_at = self.shared.now_ns().max(1);
            health.lost_since_ns.store(lost_at, Relaxed);
            health.set_error(&why);
            health.state.store(REOPENING, Relaxed);
            log::warn!(
                "audio: lost ({why}); reopening {} and {} with back-off",
                self.devices.capture,
                self.devices.playback
            );
            let mut wait = REOPEN_FIRST;
            let mut last_logged = why;
            let opened = loop {
                if !self.idle(&mut frames, wait) {
                    return Ok(self.report());
                }
                match self.devices.open() {
                    Ok(d) => break d,
                    Err(e) => {
                        let e = e.to_string();
                        health.failed_attempts.incr();
                        health.set_error(&e);
                        if e != last_logged {
                            log::warn!("audio: reopening failed ({e}); retrying");
                            last_logged = e;
                        }
                        wait = (wait * 2).min(REOPEN_MAX);
                    }
                }
            };
            running = self.devices.start(opened, frames, &self.stats)?;
            let now = self.shared.now_ns();
            let lost_ns = now.saturating_sub(lost_at);
            health.lost_total_ns.fetch_add(lost_ns, Relaxed);
            health.lost_since_ns.store(0, Relaxed);
            health.reconnects.incr();
            let n = health.reconnects.get();
            health.state.store(RUNNING, Relaxed);
            log::warn!(
                "audio: back after {:.1} s (reconnect {n})",
                lost_ns as f64 / 1e9
            );
        }
    }

    /// Waits `d` while the devices are away, applying cuts; false if the daemon is stopping.
    fn idle(&self, frames: &mut DaemonFrames, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopping() {
                return false;
            }
            frames.idle();
            std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
        }
        !self.stopping()
    }
}
