//! `edgecsm serve`: the daemon (see `edgecsm::daemon`), run until SIGTERM or SIGINT.
//!
//! Signals are caught with `signal-hook`'s flag registration: the handler only sets an atomic
//! flag (async-signal-safe), and the main thread polls it and shuts the daemon down from normal
//! code (cut speech, stop the threads, close the devices, remove the socket).

use clap::{Args, ValueEnum};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// ALSA capture PCM (e.g. `default`, `plughw:1,0`).
    #[arg(long)]
    pub capture: String,
    /// ALSA playback PCM.
    #[arg(long)]
    pub playback: String,
    /// CSM model directory (config.json, weights with the codec, tokenizer.json).
    #[arg(long, default_value = "models/csm-tiny")]
    pub model: PathBuf,
    /// Control socket path (created with mode 0600).
    #[arg(long)]
    pub socket: PathBuf,
    /// Speech heard while the daemon speaks cuts its speech.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub barge_in: OnOff,
    /// Speaker id of the user's turns in the conversation.
    #[arg(long, default_value_t = 1)]
    pub user_speaker: u32,
    /// Longest utterance in seconds: the default of a `say`, and the most its `max_seconds`
    /// may ask for (the speech ring holds one whole utterance).
    #[arg(long, default_value_t = 20.0)]
    pub max_seconds: f64,
    /// Longest user turn kept in one piece, in seconds (also capped at half the model's
    /// context); longer turns are split.
    #[arg(long, default_value_t = 20.0)]
    pub max_turn_seconds: f64,
    /// Voice activity threshold: frame RMS level in dBFS.
    #[arg(long, default_value_t = -40.0, allow_negative_numbers = true)]
    pub vad_threshold: f32,
    /// Loud 80 ms frames in a row that start a user turn.
    #[arg(long, default_value_t = 2)]
    pub vad_onset: u32,
    /// Quiet 80 ms frames in a row that end a user turn.
    #[arg(long, default_value_t = 6)]
    pub vad_hangover: u32,
    /// Generated frames queued at least before an utterance starts playing (more when
    /// generation is slower than real time: playback starts when the rest will arrive in time).
    #[arg(long, default_value_t = 2)]
    pub prebuffer: usize,
    /// Decoded frames generation may run ahead of playback once an utterance plays (when it is
    /// faster than real time; a slower generator never pauses).
    #[arg(long, default_value_t = 8)]
    pub lead: usize,
    /// Periods (80 ms) per device buffer.
    #[arg(long, default_value_t = 3)]
    pub periods: u32,
    /// Periods of silence queued on playback before the first frame.
    #[arg(long, default_value_t = 1)]
    pub prefill: u32,
    /// Sample format on the devices.
    #[arg(long, value_enum, default_value_t = super::audio::FormatArg::S16)]
    pub format: super::audio::FormatArg,
    /// Device channels.
    #[arg(long, default_value_t = 1)]
    pub channels: u32,
    #[command(flatten)]
    pub codebooks: super::generate::CodebooksArg,
    /// Seconds between latency lines in the log (0: only at exit).
    #[arg(long, default_value_t = 60.0)]
    pub report_every: f64,
    /// Read options from FILE: `key = value` lines whose keys are these long options (e.g.
    /// `capture = plughw:CARD=Device,DEV=0`, `threads = 3`); the command line overrides it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Whether the model directory says it holds random (untrained) weights.
#[cfg(feature = "alsa")]
fn random_weight_notice(dir: &std::path::Path) -> Option<String> {
    let readme = std::fs::read_to_string(dir.join("README.md")).ok()?;
    let lower = readme.to_lowercase();
    (lower.contains("random weights") || lower.contains("random-weight")).then(|| {
        format!(
            "{} holds a random-weight test model: it runs every code path but produces \
             noise-like audio, not speech",
            dir.display()
        )
    })
}

#[cfg(feature = "alsa")]
pub fn run_serve(threads: usize, a: ServeArgs) -> edgecsm::Result<()> {
    use edgecsm::Error;
    use edgecsm::daemon::vad::GateConfig;
    use edgecsm::daemon::{Daemon, DaemonConfig};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone())
            .map_err(|e| Error::Invalid(format!("cannot install the signal handler: {e}")))?;
    }
    let mut cfg = DaemonConfig::new(&a.capture, &a.playback, &a.model, &a.socket);
    cfg.threads = threads;
    cfg.barge_in = a.barge_in == OnOff::On;
    cfg.user_speaker = a.user_speaker;
    cfg.max_seconds = a.max_seconds;
    cfg.max_turn_seconds = a.max_turn_seconds;
    cfg.gate = GateConfig {
        threshold_dbfs: a.vad_threshold,
        onset: a.vad_onset,
        hangover: a.vad_hangover,
    };
    cfg.prebuffer = a.prebuffer;
    cfg.lead = a.lead;
    cfg.codebooks = match a.codebooks.codebooks {
        super::generate::Codebooks::All => None,
        super::generate::Codebooks::First(n) => Some(n),
    };
    cfg.stream.periods = a.periods;
    cfg.stream.prefill = a.prefill;
    cfg.stream.channels = a.channels;
    cfg.stream.format = a.format.into();
    if let Some(note) = random_weight_notice(&a.model) {
        log::warn!("{note}");
    }
    let daemon = Daemon::start(cfg)?;
    let info = daemon.info();
    log::info!(
        "ready in {:.0} ms, listening on {} (mode 0600); {} -> CSM {} ({} threads, {} \
         codebooks) -> {}; barge-in {}; latency bound {:.1} ms; user turns up to {} frames",
        daemon.status()["ready_ms"].as_f64().unwrap_or(0.0),
        daemon.socket_path().display(),
        info.capture,
        info.model,
        info.threads,
        info.codebooks,
        info.playback,
        if a.barge_in == OnOff::On { "on" } else { "off" },
        info.latency_bound_ms,
        info.max_turn_frames
    );
    let t0 = std::time::Instant::now();
    let mut next_report = a.report_every;
    while !term.load(Ordering::Relaxed) && !daemon.audio_failed() {
        std::thread::sleep(Duration::from_millis(50));
        let t = t0.elapsed().as_secs_f64();
        if a.report_every > 0.0 && t >= next_report {
            next_report += a.report_every;
            log::info!("{}", report_line(&daemon.status()));
        }
    }
    let by_signal = term.load(Ordering::Relaxed);
    log::info!("{}", report_line(&daemon.status()));
    let report = daemon.shutdown()?;
    log::info!("stopped");
    for line in report.to_string().lines() {
        log::info!("{line}");
    }
    if !by_signal {
        return Err(Error::Invalid(
            "the audio loop ended without an error report".into(),
        ));
    }
    Ok(())
}

/// The `status` figures a log reader wants, as one `report key=value ...` line (ms; `-` for a
/// figure not measured yet).
#[cfg(feature = "alsa")]
fn report_line(s: &serde_json::Value) -> String {
    let l = &s["latency"];
    let c = &s["counters"];
    let fields: [(&str, &serde_json::Value); 18] = [
        ("frame_p50_ms", &l["frame_compute_ms"]["p50"]),
        ("frame_p99_ms", &l["frame_compute_ms"]["p99"]),
        ("frame_max_ms", &l["frame_compute_ms"]["max"]),
        ("gen_frame_p50_ms", &l["generation_frame_ms"]["p50"]),
        ("gen_frame_p99_ms", &l["generation_frame_ms"]["p99"]),
        ("playback_wait_max_ms", &l["playback_wait_ms"]["max"]),
        ("user_turn_p99_ms", &l["user_turn_ms"]["p99"]),
        ("first_sound_last_ms", &l["text_to_first_sound_ms"]["last"]),
        ("bound_ms", &l["bound_ms"]),
        ("xruns", &c["xruns"]),
        ("underruns", &c["underruns"]),
        ("speech_underruns", &c["speech_underruns"]),
        ("dropped", &c["dropped"]),
        ("utterances", &c["utterances"]),
        ("segments", &s["conversation"]["segments"]),
        ("positions", &s["conversation"]["positions"]),
        ("audio", &s["audio"]["state"]),
        ("reconnects", &s["audio"]["reconnects"]),
    ];
    let mut line = String::from("report");
    for (k, v) in fields {
        let v = match v {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        line += &format!(" {k}={v}");
    }
    line
}

#[cfg(not(feature = "alsa"))]
pub fn run_serve(_threads: usize, _a: ServeArgs) -> edgecsm::Result<()> {
    Err(edgecsm::Error::Invalid(
        "this edgecsm was built without ALSA support (cargo feature `alsa`)".into(),
    ))
}
