//! `edgecsm loop` (capture -> Mimi encode -> decode -> playback, with latency figures) and
//! `edgecsm devices` (the ALSA PCM list).

use clap::{Args, ValueEnum};
use edgecsm::audio::SampleFormat;
use std::path::PathBuf;

/// `--format` / `--sample-format`: a sample format on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FormatArg {
    /// 16-bit PCM (clipped to full scale).
    S16,
    /// 32-bit float (unclipped).
    F32,
}

impl From<FormatArg> for SampleFormat {
    fn from(f: FormatArg) -> SampleFormat {
        match f {
            FormatArg::S16 => SampleFormat::S16,
            FormatArg::F32 => SampleFormat::F32,
        }
    }
}

#[derive(Args, Debug)]
pub struct LoopArgs {
    /// ALSA capture PCM (e.g. `default`, `hw:1,0`, `plughw:1,0`).
    #[arg(long)]
    pub capture: String,
    /// ALSA playback PCM.
    #[arg(long)]
    pub playback: String,
    /// Mimi model directory.
    #[arg(long, default_value = "models/mimi-tiny")]
    pub model: PathBuf,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Periods (80 ms codec frames) per device buffer.
    #[arg(long, default_value_t = 3)]
    pub periods: u32,
    /// Sample format on the devices.
    #[arg(long, value_enum, default_value_t = FormatArg::S16)]
    pub format: FormatArg,
    /// Device channels (capture is averaged to mono, playback gets mono on every channel).
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
    /// Periods of silence queued on playback before the first frame.
    #[arg(long, default_value_t = 1)]
    pub prefill: u32,
    /// Codebooks per frame (default: all of the model's).
    #[arg(long)]
    pub codebooks: Option<usize>,
    /// For unclocked devices (alsa-lib `file` plugin): wait instead of dropping, no silence.
    #[arg(long)]
    pub lossless: bool,
    /// Seconds between progress reports (0: only the final report).
    #[arg(long, default_value_t = 5.0)]
    pub report_every: f64,
    /// After the report, print one JSON line `{"loop_summary": {...}}` (for scripts: counters,
    /// percentiles in us, latency bound, allocations on the loop's threads).
    #[arg(long)]
    pub json: bool,
    /// Seconds after the start from which the summary's `after_warmup` figures count.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
}

#[cfg(feature = "alsa")]
pub fn run_loop(threads: usize, a: LoopArgs) -> edgecsm::Result<()> {
    use crate::cli::alloc_count;
    use edgecsm::Error;
    use edgecsm::kernels::Pool;
    use edgecsm::mimi::Mimi;
    use edgecsm::stream::{self, AlsaCapture, AlsaPlayback, MimiRoundTrip, Pacing, StreamConfig};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        return Err(Error::Invalid(format!(
            "--seconds must be a positive number, got {}",
            a.seconds
        )));
    }
    if !(a.warmup >= 0.0 && a.warmup.is_finite()) {
        return Err(Error::Invalid(format!(
            "--warmup must be a number of seconds >= 0, got {}",
            a.warmup
        )));
    }
    let mut mimi = Mimi::load(&a.model)?;
    mimi.set_pool(Arc::new(Pool::new(threads)));
    let mimi = Arc::new(mimi);
    let n_q = a.codebooks.unwrap_or(mimi.num_quantizers());
    let mut cfg = StreamConfig {
        rate: mimi.config().sampling_rate as u32,
        channels: a.channels,
        period: mimi.frame_size(),
        periods: a.periods,
        format: a.format.into(),
        prefill: a.prefill,
        pacing: if a.lossless {
            Pacing::Lossless
        } else {
            Pacing::RealTime
        },
        thread_hook: Some(alloc_count::count_this_thread),
        ..StreamConfig::default()
    };
    cfg.frames = Some((a.seconds * cfg.rate as f64 / cfg.period as f64).ceil() as u64);
    cfg.validate()?;
    let processor = MimiRoundTrip::new(mimi.clone(), n_q)?;
    let capture = AlsaCapture::open(&a.capture, &cfg)?;
    let playback = AlsaPlayback::open(&a.playback, &cfg)?;
    println!(
        "loop: {} -> Mimi ({} codebooks, {} threads) -> {}; {} Hz, {} ch, {}, period {} \
         frames, capture buffer {} frames",
        a.capture,
        n_q,
        threads,
        a.playback,
        cfg.rate,
        cfg.channels,
        cfg.format.alsa_name(),
        cfg.period,
        capture.buffer_frames()
    );
    let running = stream::start(&cfg, capture, playback, processor)?;
    println!(
        "configured latency bound (playback buffer + one period): {:.1} ms",
        running.latency_bound_ms()
    );
    let t0 = Instant::now();
    let mut next_report = a.report_every;
    let mut warm = None;
    while !running.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        let t = t0.elapsed().as_secs_f64();
        if warm.is_none() && t >= a.warmup {
            warm = Some((t, alloc_count::allocations(), running.stats().snapshot()));
        }
        if a.report_every > 0.0 && t >= next_report {
            next_report += a.report_every;
            let s = running.stats().snapshot();
            println!(
                "[{t:6.1} s] frame {}; capture->codes p99 {:.2} ms; xruns {}; late {}; dropped {}",
                s.frame_time,
                s.capture_to_codes.p99_us as f64 / 1000.0,
                s.counters.xruns(),
                s.counters.playback_late,
                s.counters.dropped()
            );
        }
    }
    let report = running.join()?;
    println!("{report}");
    if a.json {
        println!(
            "{}",
            summary_json(&report, alloc_count::allocations(), warm)
        );
    }
    Ok(())
}

/// The `--json` line: the whole run's figures, and the changes since the warm-up snapshot
/// (`null` when the run ended before it).
#[cfg(feature = "alsa")]
fn summary_json(
    report: &edgecsm::stream::Report,
    allocations: u64,
    warm: Option<(f64, u64, edgecsm::stream::Snapshot)>,
) -> serde_json::Value {
    use edgecsm::stream::Summary;
    use serde_json::json;
    let us =
        |s: &Summary| json!({"p50": s.p50_us, "p99": s.p99_us, "max": s.max_us, "count": s.count});
    let s = &report.stats;
    let c = &s.counters;
    let after_warmup = warm.map(|(t, allocs0, s0)| {
        let c0 = &s0.counters;
        json!({
            "from_s": t,
            "allocations": allocations - allocs0,
            "xruns": c.xruns() - c0.xruns(),
            "late": c.playback_late - c0.playback_late,
            "dropped": c.dropped() - c0.dropped(),
            "processed": c.processed - c0.processed,
        })
    });
    json!({"loop_summary": {
        "elapsed_s": report.elapsed.as_secs_f64(),
        "latency_bound_ms": report.latency_bound_ms,
        "frames": {"captured": c.captured, "processed": c.processed, "played": c.played},
        "xruns": {
            "total": c.xruns(),
            "capture": c.capture_xruns,
            "playback": c.playback_xruns,
            "capture_backlog_drops": c.capture_backlog_drops,
        },
        "late": c.playback_late,
        "dropped": {
            "total": c.dropped(),
            "capture_ring_full": c.capture_ring_full,
            "compute_skipped": c.compute_skipped,
            "playback_ring_full": c.playback_ring_full,
            "playback_stale": c.playback_stale,
        },
        "frame_time_us": us(&s.frame_time),
        "capture_to_codes_us": us(&s.capture_to_codes),
        "capture_to_playback_write_us": us(&s.capture_to_playback_write),
        "allocations": {"loop_threads": allocations, "counted_threads": "capture, compute, playback (not compute-pool workers)"},
        "after_warmup": after_warmup,
    }})
}

#[cfg(feature = "alsa")]
pub fn run_devices() -> edgecsm::Result<()> {
    use std::io::Write;
    let pcms = edgecsm::stream::list_pcms()?;
    let mut out = std::io::stdout().lock();
    for p in pcms {
        let dir = match (p.capture, p.playback) {
            (true, true) => "capture+playback",
            (true, false) => "capture",
            _ => "playback",
        };
        // a closed stdout (e.g. piped into `head`) is not an error of the listing
        if writeln!(out, "{}\n    {} [{dir}]", p.name, p.description).is_err() {
            break;
        }
    }
    Ok(())
}

#[cfg(not(feature = "alsa"))]
fn no_alsa() -> edgecsm::Result<()> {
    Err(edgecsm::Error::Invalid(
        "this edgecsm was built without ALSA support (cargo feature `alsa`)".into(),
    ))
}

#[cfg(not(feature = "alsa"))]
pub fn run_loop(_threads: usize, _a: LoopArgs) -> edgecsm::Result<()> {
    no_alsa()
}

#[cfg(not(feature = "alsa"))]
pub fn run_devices() -> edgecsm::Result<()> {
    no_alsa()
}
