//! The fixed-size audio loop: ALSA capture -> per-frame compute -> ALSA playback, 24 kHz
//! mono, one period = one codec frame (1920 samples, 80 ms), with bounded latency.
//!
//! [`config`] holds the loop's shape, [`ring`] the lock-free SPSC block rings (`rtrb`),
//! [`stats`] the fixed-size latency histograms and counters, [`device`] what an audio thread
//! needs from a device, [`engine`] the three threads and their drop/silence policy,
//! [`processor`] the per-frame work (the Mimi round trip of `edgecsm loop`); with the `alsa`
//! feature, [`alsa_pcm`] the ALSA PCMs (explicit hw/sw params, xrun recovery, capture backlog
//! watch) and [`devices`] the PCM list.
//!
//! # The `alsa` cargo feature
//! `alsa` (on by default) pulls in the `alsa` crate, whose `alsa-sys` links `libasound`
//! dynamically (Debian: `libasound2-dev` to build). The aarch64 test build (`cross/test.sh`)
//! is static (dynamic aarch64 binaries hang under qemu-user here) and Debian has no static
//! arm64 `libasound`, so it builds with `--no-default-features`: everything here except
//! [`alsa_pcm`] and [`devices`] still builds and is tested there, and the `loop` and
//! `devices` subcommands report that ALSA support was not built in. Board builds
//! (`cross/build.sh`) link `libasound` dynamically or drop the feature the same way.
//!
//! # Latency
//! In real-time pacing the path from the end of a captured period to the speaker is one
//! capture period, up to half a period of compute slack, and at most `prefill + 1` queued
//! playback periods: the configured bound reported is the playback buffer plus one period.
//! Nothing queues beyond that: see [`engine`] for what is dropped or replaced by silence.

pub mod config;
pub mod device;
pub mod engine;
pub mod processor;
pub mod ring;
pub mod stats;

#[cfg(feature = "alsa")]
pub mod alsa_pcm;
#[cfg(feature = "alsa")]
pub mod devices;

pub use config::{Pacing, SampleFormat, StreamConfig, ThreadRole};
pub use device::{CaptureDevice, DeviceError, PlaybackDevice};
pub use engine::{Report, Running, start, start_with_stats};
pub use processor::{FrameProcessor, MimiRoundTrip};
pub use stats::{LoopStats, Snapshot, Summary};

#[cfg(feature = "alsa")]
pub use alsa_pcm::{AlsaCapture, AlsaPlayback};
#[cfg(feature = "alsa")]
pub use devices::{PcmHint, list_pcms};
