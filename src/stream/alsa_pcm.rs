//! ALSA capture and playback PCMs with the loop's explicit hardware and software parameters.
//!
//! Opened non-blocking (a busy `hw:` device fails at once with `EBUSY` instead of blocking the
//! open) and driven with `snd_pcm_wait` + `readi`/`writei`, so a stop request is seen within
//! [`WAIT_MS`]. hw_params: interleaved access, the configured format, channels and exact rate,
//! period = one codec frame (refused if the device rounds it), buffer = `periods` periods
//! (read back; ALSA may round up). sw_params: `avail_min` = one period; capture starts
//! explicitly; playback starts when the prefill and the first frame are queued.
//!
//! Xruns (`EPIPE`) and suspends (`ESTRPIPE`) are recovered with `snd_pcm_recover` and counted.
//! Capture overruns that a plugin does not report (the `pulse` plugin keeps buffering, its
//! `delay()` grows) are caught by checking `delay()` after every period in real-time pacing:
//! above one buffer minus one period, the backlog is dropped (`drop` -> `prepare` -> `start`).

use super::config::{Pacing, SampleFormat, StreamConfig};
use super::device::{CaptureDevice, DeviceError, PlaybackDevice};
use super::stats::Counters;
use crate::audio::{f32_to_s16, s16_to_f32};
use crate::{Error, Result};
use alsa::pcm::{Access, Format, HwParams, PCM};
use alsa::{Direction, ValueOr};
use std::sync::atomic::{AtomicBool, Ordering};

/// Longest single wait for the device before the stop flag is checked again.
pub const WAIT_MS: u32 = 100;

fn role(dir: Direction) -> &'static str {
    match dir {
        Direction::Capture => "capture",
        Direction::Playback => "playback",
    }
}

/// The user-facing message for an ALSA failure on device `name`.
fn device_error(dir: Direction, name: &str, what: &str, e: alsa::Error) -> Error {
    let hint = match e.errno() {
        libc_errno::ENOENT => " (no PCM of that name; `edgecsm devices` lists them)",
        libc_errno::EBUSY => " (the device is busy: another program is using it)",
        libc_errno::ECONNREFUSED => " (the sound server is not running)",
        _ => "",
    };
    Error::Invalid(format!(
        "{} device \"{name}\": {what}: {e}{hint}",
        role(dir)
    ))
}

/// The few errno values the loop tells apart (Linux numbering, as alsa-lib returns them).
mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const EINTR: i32 = 4;
    pub const EAGAIN: i32 = 11;
    pub const EBUSY: i32 = 16;
    pub const EPIPE: i32 = 32;
    pub const ESTRPIPE: i32 = 86;
    pub const ECONNREFUSED: i32 = 111;
}

/// One open, configured PCM plus its byte buffer for one period.
struct Pcm {
    pcm: PCM,
    dir: Direction,
    name: String,
    format: SampleFormat,
    channels: usize,
    period: usize,
    buffer: usize,
    /// Free frames the device must have before a period is written (playback's `avail_min`).
    room: usize,
    /// Sample rate, to turn a frame shortfall into a sleep.
    rate: u32,
    bytes: Vec<u8>,
}

impl Pcm {
    fn open(name: &str, dir: Direction, cfg: &StreamConfig) -> Result<Pcm> {
        cfg.validate()?;
        let pcm =
            PCM::new(name, dir, true).map_err(|e| device_error(dir, name, "cannot open", e))?;
        let bad = |what: &str, e| device_error(dir, name, what, e);
        let (period, buffer) = {
            let hw = HwParams::any(&pcm).map_err(|e| bad("no hardware parameters", e))?;
            hw.set_access(Access::RWInterleaved)
                .map_err(|e| bad("interleaved access refused", e))?;
            let format = match cfg.format {
                SampleFormat::S16 => Format::s16(),
                SampleFormat::F32 => Format::float(),
            };
            hw.set_format(format).map_err(|e| {
                bad(
                    &format!(
                        "format {} refused (a `plug:` or `plughw:` device converts)",
                        cfg.format.alsa_name()
                    ),
                    e,
                )
            })?;
            hw.set_channels(cfg.channels)
                .map_err(|e| bad(&format!("{} channel(s) refused", cfg.channels), e))?;
            hw.set_rate(cfg.rate, ValueOr::Nearest).map_err(|e| {
                bad(
                    &format!(
                        "rate {} Hz refused (a `plughw:` device resamples)",
                        cfg.rate
                    ),
                    e,
                )
            })?;
            hw.set_period_size_near(cfg.period as alsa::pcm::Frames, ValueOr::Nearest)
                .map_err(|e| bad("period size refused", e))?;
            hw.set_buffer_size_near((cfg.period * cfg.periods as usize) as alsa::pcm::Frames)
                .map_err(|e| bad("buffer size refused", e))?;
            pcm.hw_params(&hw)
                .map_err(|e| bad("cannot apply hardware parameters", e))?;
            let cur = pcm
                .hw_params_current()
                .map_err(|e| bad("cannot read hardware parameters", e))?;
            let p = cur.get_period_size().map_err(|e| bad("period size", e))? as usize;
            let b = cur.get_buffer_size().map_err(|e| bad("buffer size", e))? as usize;
            (p, b)
        };
        if period != cfg.period {
            return Err(Error::Invalid(format!(
                "{} device \"{name}\": it gives periods of {period} frames, the loop needs exactly \
                 {} (one codec frame)",
                role(dir),
                cfg.period
            )));
        }
        {
            let sw = pcm
                .sw_params_current()
                .map_err(|e| bad("no software parameters", e))?;
            // capture wakes for one period; playback wakes when no more than `prefill`
            // periods are queued, so its queue never exceeds prefill + 1 periods
            let avail_min = match dir {
                Direction::Capture => period,
                Direction::Playback => {
                    (buffer.saturating_sub(period * cfg.prefill as usize)).max(period)
                }
            };
            sw.set_avail_min(avail_min as alsa::pcm::Frames)
                .map_err(|e| bad("avail_min refused", e))?;
            let start = match dir {
                // started explicitly by the capture thread
                Direction::Capture => buffer,
                // the prefill plus the first processed frame
                Direction::Playback => (period * (cfg.prefill as usize + 1)).min(buffer),
            };
            sw.set_start_threshold(start as alsa::pcm::Frames)
                .map_err(|e| bad("start threshold refused", e))?;
            pcm.sw_params(&sw)
                .map_err(|e| bad("cannot apply software parameters", e))?;
        }
        pcm.prepare().map_err(|e| bad("cannot prepare", e))?;
        let channels = cfg.channels as usize;
        let room = match dir {
            Direction::Capture => period,
            Direction::Playback => {
                (buffer.saturating_sub(period * cfg.prefill as usize)).max(period)
            }
        };
        Ok(Pcm {
            room,
            rate: cfg.rate,
            pcm,
            dir,
            name: name.to_string(),
            format: cfg.format,
            channels,
            period,
            buffer,
            bytes: vec![0; period * channels * cfg.format.bytes()],
        })
    }

    /// Recovers an xrun or suspend (counted in `xruns`); anything else is fatal.
    fn recover(
        &self,
        e: alsa::Error,
        xruns: &std::sync::atomic::AtomicU64,
    ) -> Result<(), DeviceError> {
        let errno = e.errno();
        if errno == libc_errno::EINTR {
            return Ok(());
        }
        if errno == libc_errno::EPIPE || errno == libc_errno::ESTRPIPE {
            Counters::bump(xruns);
            let fail = |r: alsa::Error| DeviceError {
                op: r.func(),
                errno: r.errno(),
            };
            self.pcm.try_recover(e, true).map_err(fail)?;
            // recovery leaves the PCM prepared; capture does not start by itself (its start
            // threshold is the whole buffer), playback starts again at its threshold
            if self.dir == Direction::Capture {
                self.pcm.start().map_err(fail)?;
            }
            return Ok(());
        }
        Err(DeviceError {
            op: e.func(),
            errno,
        })
    }

    /// Waits for the device; `Ok(false)` if `stop` was raised.
    fn wait(
        &self,
        stop: &AtomicBool,
        xruns: &std::sync::atomic::AtomicU64,
    ) -> Result<bool, DeviceError> {
        if stop.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if let Err(e) = self.pcm.wait(Some(WAIT_MS)) {
            self.recover(e, xruns)?;
        }
        Ok(!stop.load(Ordering::Relaxed))
    }
}

/// An ALSA capture PCM set up for the loop.
pub struct AlsaCapture {
    io: Pcm,
    /// Capture `delay()` above which the backlog is dropped (real-time pacing only).
    backlog_limit: Option<usize>,
}

impl AlsaCapture {
    /// Opens `name` (an ALSA PCM name: `default`, `hw:1,0`, `plughw:1,0`, a config alias).
    pub fn open(name: &str, cfg: &StreamConfig) -> Result<AlsaCapture> {
        let io = Pcm::open(name, Direction::Capture, cfg)?;
        let backlog_limit = (cfg.pacing == Pacing::RealTime)
            .then(|| io.buffer.saturating_sub(io.period).max(io.period));
        Ok(AlsaCapture { io, backlog_limit })
    }

    pub fn buffer_frames(&self) -> usize {
        self.io.buffer
    }
}

impl CaptureDevice for AlsaCapture {
    fn name(&self) -> &str {
        &self.io.name
    }

    fn start(&mut self) -> Result<(), DeviceError> {
        self.io.pcm.start().map_err(|e| DeviceError {
            op: e.func(),
            errno: e.errno(),
        })
    }

    fn read_period(
        &mut self,
        out: &mut [f32],
        counters: &Counters,
        stop: &AtomicBool,
    ) -> Result<bool, DeviceError> {
        let io = &mut self.io;
        let frame_bytes = io.channels * io.format.bytes();
        let mut got = 0;
        while got < io.period {
            match io.pcm.io_bytes().readi(&mut io.bytes[got * frame_bytes..]) {
                Ok(n) => got += n,
                Err(e) if e.errno() == libc_errno::EAGAIN => {
                    if !io.wait(stop, &counters.capture_xruns)? {
                        return Ok(false);
                    }
                }
                Err(e) => io.recover(e, &counters.capture_xruns)?,
            }
        }
        decode_mono(&io.bytes, io.format, io.channels, out);
        if let Some(limit) = self.backlog_limit
            && let Ok(d) = io.pcm.delay()
            && d > limit as alsa::pcm::Frames
        {
            Counters::bump(&counters.capture_backlog_drops);
            let restart = io
                .pcm
                .drop()
                .and_then(|_| io.pcm.prepare())
                .and_then(|_| io.pcm.start());
            restart.map_err(|e| DeviceError {
                op: e.func(),
                errno: e.errno(),
            })?;
        }
        Ok(true)
    }
}

/// An ALSA playback PCM set up for the loop.
pub struct AlsaPlayback {
    io: Pcm,
}

impl AlsaPlayback {
    pub fn open(name: &str, cfg: &StreamConfig) -> Result<AlsaPlayback> {
        Ok(AlsaPlayback {
            io: Pcm::open(name, Direction::Playback, cfg)?,
        })
    }
}

impl PlaybackDevice for AlsaPlayback {
    fn name(&self) -> &str {
        &self.io.name
    }

    fn buffer_frames(&self) -> usize {
        self.io.buffer
    }

    fn write_period(
        &mut self,
        pcm: &[f32],
        counters: &Counters,
        stop: &AtomicBool,
    ) -> Result<bool, DeviceError> {
        let io = &mut self.io;
        // keep at most prefill + 1 periods queued: wait for `room` free frames first
        loop {
            match io.pcm.avail_update() {
                Ok(a) if a as usize >= io.room => break,
                Ok(_) => {
                    if !io.wait(stop, &counters.playback_xruns)? {
                        return Ok(false);
                    }
                    // Some plugins (`pulse`) report the PCM ready as soon as any space is
                    // free, below avail_min: sleep for the shortfall instead of spinning on
                    // poll (seen: ~19,000 polls/s and most of a core).
                    if let Ok(b) = io.pcm.avail_update()
                        && (b as usize) < io.room
                    {
                        let short = io.room - b as usize;
                        let us =
                            (short as u64 * 1_000_000 / io.rate.max(1) as u64).clamp(500, 20_000);
                        std::thread::sleep(std::time::Duration::from_micros(us));
                    }
                }
                Err(e) => io.recover(e, &counters.playback_xruns)?,
            }
        }
        encode_channels(pcm, io.format, io.channels, &mut io.bytes);
        let frame_bytes = io.channels * io.format.bytes();
        let mut put = 0;
        while put < io.period {
            match io.pcm.io_bytes().writei(&io.bytes[put * frame_bytes..]) {
                Ok(n) => put += n,
                Err(e) if e.errno() == libc_errno::EAGAIN => {
                    if !io.wait(stop, &counters.playback_xruns)? {
                        return Ok(false);
                    }
                }
                Err(e) => io.recover(e, &counters.playback_xruns)?,
            }
        }
        Ok(true)
    }

    fn drain(&mut self) -> Result<(), DeviceError> {
        // a drain of a non-blocking PCM returns EAGAIN at once: wait for the queue to empty
        let pcm = &self.io.pcm;
        if pcm.state() == alsa::pcm::State::Prepared {
            // never started (fewer frames than the start threshold): start it to play them
            let _ = pcm.start();
        }
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_millis(2000 + (self.io.buffer as u64 * 1000) / 8000);
        while pcm.state() == alsa::pcm::State::Running && std::time::Instant::now() < deadline {
            match pcm.delay() {
                Ok(d) if d > 0 => std::thread::sleep(std::time::Duration::from_millis(5)),
                _ => break,
            }
        }
        pcm.drop().map_err(|e| DeviceError {
            op: e.func(),
            errno: e.errno(),
        })
    }
}

/// Interleaved device bytes -> mono `f32` (channels averaged; S16 scaled by 1/32768).
fn decode_mono(bytes: &[u8], format: SampleFormat, channels: usize, out: &mut [f32]) {
    let w = format.bytes();
    let scale = 1.0 / channels as f32;
    for (o, frame) in out.iter_mut().zip(bytes.chunks_exact(w * channels)) {
        let mut acc = 0.0;
        for s in frame.chunks_exact(w) {
            acc += match format {
                SampleFormat::S16 => s16_to_f32(i16::from_le_bytes([s[0], s[1]])),
                SampleFormat::F32 => f32::from_le_bytes([s[0], s[1], s[2], s[3]]),
            };
        }
        *o = if channels == 1 { acc } else { acc * scale };
    }
}

/// Mono `f32` -> interleaved device bytes (every channel the same; S16 rounded and clipped).
fn encode_channels(pcm: &[f32], format: SampleFormat, channels: usize, bytes: &mut [u8]) {
    let w = format.bytes();
    for (&x, frame) in pcm.iter().zip(bytes.chunks_exact_mut(w * channels)) {
        for s in frame.chunks_exact_mut(w) {
            match format {
                SampleFormat::S16 => s.copy_from_slice(&f32_to_s16(x).to_le_bytes()),
                SampleFormat::F32 => s.copy_from_slice(&x.to_le_bytes()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_conversions_round_trip() {
        let x = [0.0f32, 0.5, -1.0, 0.999, 2.0, -3.0];
        let mut b = vec![0u8; x.len() * 2 * 2];
        encode_channels(&x, SampleFormat::S16, 2, &mut b);
        let mut y = [0f32; 6];
        decode_mono(&b, SampleFormat::S16, 2, &mut y);
        assert_eq!(y[..3], [0.0, 0.5, -1.0]);
        assert_eq!(y[4], 32767.0 / 32768.0, "clipped");
        assert_eq!(y[5], -1.0, "clipped");
        let mut b = vec![0u8; x.len() * 4];
        encode_channels(&x, SampleFormat::F32, 1, &mut b);
        decode_mono(&b, SampleFormat::F32, 1, &mut y);
        assert_eq!(y, x, "float is exact");
    }
}
