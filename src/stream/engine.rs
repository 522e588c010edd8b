//! The loop's three threads and how they hand frames over.
//!
//! ```text
//! capture thread --[block ring]--> compute thread --[block ring]--> playback thread
//! ```
//! Audio threads only move fixed-size blocks through lock-free SPSC rings (two blocks each);
//! in real-time pacing they never allocate, lock, log or wait on compute:
//! - capture: a full ring drops the new period (counted); the compute thread is unparked.
//! - compute: when it falls behind it skips to the newest captured frame (counted).
//! - playback: no frame ready -> a period of silence (counted as late); a frame older than
//!   [`STALE_PERIODS`] periods since its capture, or with a newer one behind it, is dropped
//!   (counted), so a late frame costs at most two periods and the queue never grows.
//!
//! Playback starts half a period after the first processed frame is ready (the only time an
//! audio thread waits for compute: before its device runs), so compute has half a period of
//! slack against the device clock; then `prefill` periods of silence and the frame are queued.
//! Lossless pacing (unclocked devices) waits instead of dropping and never plays silence, so
//! the output is exactly `prefill` periods of silence followed by every processed frame.

use super::config::{Pacing, StreamConfig, ThreadRole};
use super::device::{CaptureDevice, DeviceError, PlaybackDevice};
use super::processor::FrameProcessor;
use super::ring::{BlockConsumer, BlockProducer, block_ring};
use super::stats::{Counters, LoopStats, Snapshot};
use crate::{Error, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Blocks in each ring.
pub const RING_BLOCKS: usize = 2;

/// A processed frame older than this many periods (capture end to its turn at playback,
/// numerator/denominator) is dropped as stale.
pub const STALE_PERIODS: (u64, u64) = (5, 4);

/// How long a waiting thread sleeps between looks at a ring (lossless pacing and start-up).
const POLL: Duration = Duration::from_micros(250);

/// Flags shared by the three threads.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    capture_done: AtomicBool,
    compute_done: AtomicBool,
}

/// A running loop over frame processor `F`. Dropping it without [`Running::join`] stops the
/// threads and detaches them.
#[derive(Debug)]
pub struct Running<F> {
    stats: Arc<LoopStats>,
    shared: Arc<Shared>,
    capture: Option<JoinHandle<Result<(), DeviceError>>>,
    /// The compute thread gives the processor back with its result.
    compute: Option<JoinHandle<(Result<()>, F)>>,
    playback: Option<JoinHandle<Result<(), DeviceError>>>,
    names: (String, String),
    latency_bound_ms: f64,
    started: Instant,
}

/// What a finished loop measured.
#[derive(Clone, Copy, Debug)]
pub struct Report {
    pub stats: Snapshot,
    /// The configured bound: one capture period plus the playback buffer, in ms.
    pub latency_bound_ms: f64,
    pub elapsed: Duration,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}", self.stats)?;
        write!(
            f,
            "configured latency bound (playback buffer + one period): {:.1} ms; ran {:.1} s",
            self.latency_bound_ms,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Starts the loop: spawns the capture, compute and playback threads. Devices are opened by
/// the caller (so their errors come before anything runs).
pub fn start<C, P, F>(
    cfg: &StreamConfig,
    capture: C,
    playback: P,
    processor: F,
) -> Result<Running<F>>
where
    C: CaptureDevice,
    P: PlaybackDevice,
    F: FrameProcessor,
{
    start_with_stats(cfg, capture, playback, processor, Arc::default())
}

/// [`start`], counting into `stats` (a loop restarted on reopened devices keeps adding to the
/// figures of the one before).
pub fn start_with_stats<C, P, F>(
    cfg: &StreamConfig,
    capture: C,
    playback: P,
    processor: F,
    stats: Arc<LoopStats>,
) -> Result<Running<F>>
where
    C: CaptureDevice,
    P: PlaybackDevice,
    F: FrameProcessor,
{
    cfg.validate()?;
    let shared = Arc::new(Shared::default());
    let started = Instant::now();
    let names = (capture.name().to_string(), playback.name().to_string());
    let latency_bound_ms = cfg.latency_bound_ms(playback.buffer_frames());
    let (cap_tx, cap_rx) = block_ring(cfg.period, RING_BLOCKS);
    let (play_tx, play_rx) = block_ring(cfg.period, RING_BLOCKS);

    let spawn_err = |what: &str, e: std::io::Error| {
        Error::Invalid(format!("cannot start the {what} thread: {e}"))
    };
    let compute = {
        let (cfg, stats, shared) = (cfg.clone(), stats.clone(), shared.clone());
        thread::Builder::new()
            .name("edgecsm-compute".into())
            .spawn(move || {
                let mut processor = processor;
                let r = compute_thread(
                    &cfg,
                    &stats,
                    &shared,
                    started,
                    cap_rx,
                    play_tx,
                    &mut processor,
                );
                shared.compute_done.store(true, Ordering::Release);
                if r.is_err() {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                (r, processor)
            })
            .map_err(|e| spawn_err("compute", e))?
    };
    let compute_thread_handle = compute.thread().clone();
    let playback = {
        let (cfg, stats, shared) = (cfg.clone(), stats.clone(), shared.clone());
        thread::Builder::new()
            .name("edgecsm-playback".into())
            .spawn(move || {
                let r = playback_thread(&cfg, &stats, &shared, started, play_rx, playback);
                if r.is_err() {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| spawn_err("playback", e))?
    };
    let capture = {
        let (cfg, stats, shared) = (cfg.clone(), stats.clone(), shared.clone());
        thread::Builder::new()
            .name("edgecsm-capture".into())
            .spawn(move || {
                let r = capture_thread(
                    &cfg,
                    &stats,
                    &shared,
                    started,
                    cap_tx,
                    capture,
                    &compute_thread_handle,
                );
                shared.capture_done.store(true, Ordering::Release);
                compute_thread_handle.unpark();
                if r.is_err() {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                r
            })
            .map_err(|e| spawn_err("capture", e))?
    };
    Ok(Running {
        stats,
        shared,
        capture: Some(capture),
        compute: Some(compute),
        playback: Some(playback),
        names,
        latency_bound_ms,
        started,
    })
}

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

fn capture_thread<C: CaptureDevice>(
    cfg: &StreamConfig,
    stats: &LoopStats,
    shared: &Shared,
    epoch: Instant,
    mut ring: BlockProducer,
    mut dev: C,
    compute: &Thread,
) -> Result<(), DeviceError> {
    if let Some(hook) = cfg.thread_hook {
        hook(ThreadRole::Capture);
    }
    let c = &stats.counters;
    let mut block = vec![0f32; cfg.period];
    dev.start()?;
    let mut n = 0u64;
    // (a device that never makes the thread wait, such as the file plugin, still sees `stop`)
    'frames: while cfg.frames.is_none_or(|f| n < f) && !shared.stop.load(Ordering::Relaxed) {
        if !dev.read_period(&mut block, c, &shared.stop)? {
            break;
        }
        let stamp = now_ns(epoch);
        n += 1;
        Counters::bump(&c.captured);
        while !ring.try_push(&block, stamp) {
            match cfg.pacing {
                Pacing::RealTime => {
                    Counters::bump(&c.capture_ring_full);
                    break;
                }
                Pacing::Lossless => {
                    if shared.stop.load(Ordering::Relaxed) {
                        break 'frames;
                    }
                    thread::sleep(POLL);
                }
            }
        }
        compute.unpark();
    }
    Ok(())
}

fn compute_thread<F: FrameProcessor>(
    cfg: &StreamConfig,
    stats: &LoopStats,
    shared: &Shared,
    epoch: Instant,
    mut input_ring: BlockConsumer,
    mut output_ring: BlockProducer,
    proc: &mut F,
) -> Result<()> {
    if let Some(hook) = cfg.thread_hook {
        hook(ThreadRole::Compute);
    }
    let c = &stats.counters;
    let mut input = vec![0f32; cfg.period];
    let mut output = vec![0f32; cfg.period];
    let nap = Duration::from_nanos(cfg.period_ns() / 8);
    'frames: while !shared.stop.load(Ordering::Relaxed) {
        let capture_done = shared.capture_done.load(Ordering::Acquire);
        if input_ring.is_empty() {
            if capture_done {
                break;
            }
            thread::park_timeout(nap);
            continue;
        }
        if cfg.pacing == Pacing::RealTime {
            while input_ring.len() > 1 {
                input_ring.skip();
                Counters::bump(&c.compute_skipped);
            }
        }
        let Some(stamp) = input_ring.try_pop(&mut input) else {
            continue;
        };
        let t0 = now_ns(epoch);
        proc.analyze(&input)?;
        let t1 = now_ns(epoch);
        proc.synthesize(&mut output)?;
        let t2 = now_ns(epoch);
        stats.capture_to_codes.record_ns(t1.saturating_sub(stamp));
        stats.frame_time.record_ns(t2 - t0);
        Counters::bump(&c.processed);
        while !output_ring.try_push(&output, stamp) {
            match cfg.pacing {
                Pacing::RealTime => {
                    Counters::bump(&c.playback_ring_full);
                    break;
                }
                Pacing::Lossless => {
                    if shared.stop.load(Ordering::Relaxed) {
                        break 'frames;
                    }
                    thread::sleep(POLL);
                }
            }
        }
    }
    Ok(())
}

fn playback_thread<P: PlaybackDevice>(
    cfg: &StreamConfig,
    stats: &LoopStats,
    shared: &Shared,
    epoch: Instant,
    mut ring: BlockConsumer,
    mut dev: P,
) -> Result<(), DeviceError> {
    if let Some(hook) = cfg.thread_hook {
        hook(ThreadRole::Playback);
    }
    let c = &stats.counters;
    let silence = vec![0f32; cfg.period];
    let mut block = vec![0f32; cfg.period];
    let stop = &shared.stop;
    // start-up: the device is not running yet, so waiting for the first frame is safe
    while ring.is_empty() {
        if stop.load(Ordering::Relaxed) || shared.compute_done.load(Ordering::Acquire) {
            return Ok(());
        }
        thread::sleep(POLL);
    }
    if cfg.pacing == Pacing::RealTime {
        thread::sleep(Duration::from_nanos(cfg.period_ns() / 2));
    }
    for _ in 0..cfg.prefill {
        if !dev.write_period(&silence, c, stop)? {
            return Ok(());
        }
    }
    let stale_ns = cfg.period_ns() * STALE_PERIODS.0 / STALE_PERIODS.1;
    while !stop.load(Ordering::Relaxed) {
        if cfg.pacing == Pacing::RealTime {
            while let Some(s) = ring.peek_stamp() {
                if ring.len() > 1 || now_ns(epoch).saturating_sub(s) > stale_ns {
                    ring.skip();
                    Counters::bump(&c.playback_stale);
                } else {
                    break;
                }
            }
        }
        if let Some(stamp) = ring.try_pop(&mut block) {
            stats
                .capture_to_playback_write
                .record_ns(now_ns(epoch).saturating_sub(stamp));
            if !dev.write_period(&block, c, stop)? {
                break;
            }
            Counters::bump(&c.played);
        } else if shared.compute_done.load(Ordering::Acquire) && ring.is_empty() {
            break;
        } else {
            match cfg.pacing {
                Pacing::RealTime => {
                    if !dev.write_period(&silence, c, stop)? {
                        break;
                    }
                    Counters::bump(&c.playback_late);
                }
                Pacing::Lossless => thread::sleep(POLL),
            }
        }
    }
    dev.drain()
}

impl<F> Running<F> {
    /// Live statistics (readable while the loop runs).
    pub fn stats(&self) -> &Arc<LoopStats> {
        &self.stats
    }

    /// Asks every thread to stop (each sees it within one device wait).
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// True once all three threads have ended (frame budget reached, stopped or failed).
    pub fn is_finished(&self) -> bool {
        [
            self.capture.as_ref().map(|h| h.is_finished()),
            self.compute.as_ref().map(|h| h.is_finished()),
            self.playback.as_ref().map(|h| h.is_finished()),
        ]
        .iter()
        .all(|f| f.unwrap_or(true))
    }

    /// The configured latency bound (playback buffer + one period), in ms.
    pub fn latency_bound_ms(&self) -> f64 {
        self.latency_bound_ms
    }

    /// Waits for the threads and returns the report, or the first error (naming the device).
    pub fn join(self) -> Result<Report> {
        self.join_parts().0
    }

    /// [`Running::join`], also giving the frame processor back (None if its thread panicked),
    /// so a loop whose device failed can be started again on reopened devices.
    pub fn join_parts(mut self) -> (Result<Report>, Option<F>) {
        let dead = |what: &str| Error::Invalid(format!("the {what} thread panicked"));
        let cap = self.capture.take().map(|h| h.join());
        let comp = self.compute.take().map(|h| h.join());
        let play = self.playback.take().map(|h| h.join());
        let dev_err = |role: &str, name: &str, e: DeviceError| {
            Error::Invalid(format!("{role} device \"{name}\": {e}"))
        };
        let (comp, processor) = match comp {
            Some(Ok((r, p))) => (Some(Ok(r)), Some(p)),
            Some(Err(_)) => (Some(Err(())), None),
            None => (None, None),
        };
        let result = (|| {
            if let Some(r) = cap {
                r.map_err(|_| dead("capture"))?
                    .map_err(|e| dev_err("capture", &self.names.0, e))?;
            }
            if let Some(r) = play {
                r.map_err(|_| dead("playback"))?
                    .map_err(|e| dev_err("playback", &self.names.1, e))?;
            }
            if let Some(r) = comp {
                r.map_err(|_| dead("compute"))??;
            }
            Ok(Report {
                stats: self.stats.snapshot(),
                latency_bound_ms: self.latency_bound_ms,
                elapsed: self.started.elapsed(),
            })
        })();
        (result, processor)
    }
}

impl<F> Drop for Running<F> {
    fn drop(&mut self) {
        self.stop();
    }
}
