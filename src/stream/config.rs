//! The loop's fixed shape: rate, period, buffer, sample format and pacing, validated once.

use crate::{Error, Result};

pub use crate::audio::SampleFormat;

/// How the loop treats a device that is not clocked in real time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pacing {
    /// Real devices (or any clocked device): audio threads never wait on compute; a late
    /// frame becomes silence, a stale or surplus frame is dropped, capture backlog is cut.
    /// Every such event is counted.
    RealTime,
    /// Unclocked devices (alsa-lib's `file` plugin, offline runs): nothing is ever dropped;
    /// audio threads wait for ring space or data instead. Not for sound cards.
    Lossless,
}

/// Which thread of the loop a [`StreamConfig::thread_hook`] call comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadRole {
    Capture,
    Compute,
    Playback,
}

/// The loop's configuration: one period = one codec frame.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Sample rate in Hz (the codec's: 24000 for Mimi).
    pub rate: u32,
    /// Device channels: capture is averaged down to mono, playback duplicates mono.
    pub channels: u32,
    /// Samples per period per channel = samples per codec frame (1920 for Mimi).
    pub period: usize,
    /// Periods in each device buffer (ALSA may round up; the pulse plugin wants >= 3).
    pub periods: u32,
    pub format: SampleFormat,
    /// Periods of silence queued on playback before the first processed frame.
    pub prefill: u32,
    /// Stop after this many captured periods (`None`: run until stopped).
    pub frames: Option<u64>,
    pub pacing: Pacing,
    /// Called first thing on each of the loop's threads (e.g. to mark them for an allocation
    /// counter, or to set real-time priority). Must not block.
    pub thread_hook: Option<fn(ThreadRole)>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            rate: 24_000,
            channels: 1,
            period: 1920,
            periods: 3,
            format: SampleFormat::S16,
            prefill: 1,
            frames: None,
            pacing: Pacing::RealTime,
            thread_hook: None,
        }
    }
}

impl StreamConfig {
    /// Checks the numbers a user can get wrong; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("stream config: {m}")));
        if !(8_000..=192_000).contains(&self.rate) {
            return bad(format!("rate {} Hz is outside 8000..=192000", self.rate));
        }
        if !(1..=8).contains(&self.channels) {
            return bad(format!("{} channels (1 to 8 supported)", self.channels));
        }
        if !(16..=65_536).contains(&self.period) {
            return bad(format!("period of {} samples (16 to 65536)", self.period));
        }
        if !(2..=32).contains(&self.periods) {
            return bad(format!(
                "{} periods per buffer (2 to 32 supported)",
                self.periods
            ));
        }
        if self.prefill >= self.periods {
            return bad(format!(
                "prefill of {} periods does not leave room for audio in a {}-period buffer",
                self.prefill, self.periods
            ));
        }
        Ok(())
    }

    /// One period in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        self.period as u64 * 1_000_000_000 / self.rate as u64
    }

    /// The configured latency bound from capture to playback: one capture period plus the
    /// playback buffer (`(periods + 1) * period`), in milliseconds.
    pub fn latency_bound_ms(&self, playback_buffer_frames: usize) -> f64 {
        (self.period + playback_buffer_frames) as f64 * 1000.0 / self.rate as f64
    }
}
