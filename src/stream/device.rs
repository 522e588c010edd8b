//! What the loop's audio threads need from a device: read or write one period, recovering
//! xruns themselves, never allocating. [`super::alsa_pcm`] implements them for ALSA.

use super::stats::Counters;
use std::fmt;
use std::sync::atomic::AtomicBool;

/// A failure the device could not recover from: the failing operation and its errno.
/// `Copy` and allocation-free, so an audio thread can return it as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceError {
    pub op: &'static str,
    pub errno: i32,
}

impl fmt::Display for DeviceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = std::io::Error::from_raw_os_error(self.errno);
        write!(f, "{} failed: {os}", self.op)
    }
}

/// The capture side of the loop (used from the capture thread only).
pub trait CaptureDevice: Send + 'static {
    /// The device's name as the user gave it.
    fn name(&self) -> &str;
    /// Starts capturing (on the capture thread, right before the first read).
    fn start(&mut self) -> Result<(), DeviceError>;
    /// Reads one period, averaged to mono, into `out` (the period's length). Returns
    /// `Ok(false)` if `stop` was raised while waiting for data.
    fn read_period(
        &mut self,
        out: &mut [f32],
        counters: &Counters,
        stop: &AtomicBool,
    ) -> Result<bool, DeviceError>;
}

/// The playback side of the loop (used from the playback thread only).
pub trait PlaybackDevice: Send + 'static {
    fn name(&self) -> &str;
    /// The device buffer in frames (for the latency bound).
    fn buffer_frames(&self) -> usize;
    /// Writes one mono period (duplicated to every channel). Returns `Ok(false)` if `stop` was
    /// raised while waiting for room.
    fn write_period(
        &mut self,
        pcm: &[f32],
        counters: &Counters,
        stop: &AtomicBool,
    ) -> Result<bool, DeviceError>;
    /// Plays out what is queued, then stops (end of stream).
    fn drain(&mut self) -> Result<(), DeviceError>;
}
