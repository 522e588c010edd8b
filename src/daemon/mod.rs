//! The `edgecsm serve` daemon: a CSM voice on ALSA devices, controlled over a Unix socket.
//!
//! ```text
//!  capture ──> [audio loop: frame thread]  Mimi encode -> energy gate -> user-turn codes ─┐
//!                    ^ decoded speech blocks (fixed ring)                                 │
//!  playback <────────┘                                                                    v
//!  clients ─ socket ─> dispatcher ─(queue)─> session thread: Conversation (CSM) <── user turns
//!                                              generate -> Mimi decode -> speech ring
//! ```
//! [`crate::stream`] runs the capture and playback threads and the frame thread, which calls
//! [`frames::DaemonFrames`] once per 80 ms period: it never allocates, locks or waits. The
//! session thread ([`session`]) owns the conversation and generates one utterance at a time;
//! [`socket`] serves clients ([`protocol`]: JSON lines); [`vad`] segments the user's turns and
//! [`turn`] hands them over; [`state`] holds what the threads share: the utterance hand-off
//! between the client, session and frame threads ([`handoff`], where every memory ordering of
//! that protocol is documented) and the `status` figures ([`metrics`]).
//!
//! # Latency accounting (reported by `status`)
//! Frame thread compute per period (encode + gate + playback hand-off), generation compute per
//! frame (CSM + decode), capture-to-codes, text-to-first-sound (request arrival to the first
//! generated frame handed to playback), stop-to-cut, xruns (ALSA-reported and unreported
//! capture backlogs), underruns (silence played because the frame thread was late, and, inside
//! an utterance, because generation was late), dropped frames, and the configured bound
//! (playback buffer + one period) of the path from the frame thread to the speaker.

#[cfg(feature = "alsa")]
pub mod audio;
pub mod frames;
pub mod handoff;
pub mod health;
pub mod metrics;
pub mod protocol;
pub mod session;
pub mod socket;
pub mod state;
pub mod turn;
pub mod vad;

#[cfg(feature = "alsa")]
pub use run::{Daemon, DaemonConfig};

#[cfg(feature = "alsa")]
mod run {
    use super::audio::{Devices, Supervisor};
    use super::frames::DaemonFrames;
    use super::handoff::CutReason;
    use super::session::{Dispatcher, MAX_QUEUED, SayDefaults, Session};
    use super::socket::ControlSocket;
    use super::state::{Shared, StaticInfo};
    use super::turn::turn_channel;
    use super::vad::{EnergyGate, GateConfig};
    use crate::csm::prompt::PromptFormatter;
    use crate::csm::{Conversation, Csm, CsmConfig};
    use crate::kernels::Pool;
    use crate::mimi::{MimiDecoderStream, MimiEncoderStream};
    use crate::stream::ring::block_ring;
    use crate::stream::{self, LoopStats, PlaybackDevice, Report, StreamConfig};
    use crate::{Error, Result};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::sync::mpsc::sync_channel;
    use std::thread::JoinHandle;

    /// The longest utterance `--max-seconds` may allow (its speech ring: 7500 frames, 58 MB).
    pub const MAX_SECONDS: f64 = 600.0;

    /// Everything `serve` is started with.
    #[derive(Clone, Debug)]
    pub struct DaemonConfig {
        pub capture: String,
        pub playback: String,
        /// CSM model directory (config.json, safetensors with the codec, tokenizer.json).
        pub model: PathBuf,
        pub socket: PathBuf,
        /// Compute threads for the CSM (0 = one per core).
        pub threads: usize,
        /// Speech heard during playback cuts it.
        pub barge_in: bool,
        /// Speaker id of the user's turns in the conversation.
        pub user_speaker: u32,
        /// Longest utterance, in seconds: the default of a `say`, and the most one may ask for
        /// (the speech ring holds one whole, allocated at start-up).
        pub max_seconds: f64,
        /// Longest user turn kept in one piece, in seconds (longer ones are split).
        pub max_turn_seconds: f64,
        pub gate: GateConfig,
        /// Frames queued before an utterance starts playing.
        pub prebuffer: usize,
        /// Decoded frames generation may run ahead of playback once an utterance plays.
        pub lead: usize,
        /// Codebooks generated per frame (None: all the model's). The user's turns are encoded
        /// with as many, so the conversation holds frames of one width (see
        /// [`crate::csm::model`]).
        pub codebooks: Option<usize>,
        /// Device settings (periods, prefill, format, channels, thread hook); rate and period
        /// are taken from the model's codec.
        pub stream: StreamConfig,
        /// Called first thing on the session thread (e.g. to mark it for an allocation counter).
        pub session_hook: Option<fn()>,
        /// Test hook: accept `{"op":"_fault","in":"session"|"client"}`, which makes the session
        /// thread (at its next generated frame) or the client's thread panic, to test recovery.
        pub fault_injection: bool,
    }

    impl DaemonConfig {
        /// Defaults for the devices, model and socket given.
        pub fn new(capture: &str, playback: &str, model: &Path, socket: &Path) -> Self {
            DaemonConfig {
                capture: capture.into(),
                playback: playback.into(),
                model: model.into(),
                socket: socket.into(),
                threads: 0,
                barge_in: true,
                user_speaker: 1,
                max_seconds: 20.0,
                max_turn_seconds: 20.0,
                gate: GateConfig::default(),
                prebuffer: 2,
                lead: 8,
                codebooks: None,
                stream: StreamConfig::default(),
                session_hook: None,
                fault_injection: false,
            }
        }

        fn validate(&self) -> Result<()> {
            let bad = |m: String| Err(Error::Invalid(m));
            if !(self.max_seconds > 0.0 && self.max_seconds <= MAX_SECONDS) {
                return bad(format!(
                    "--max-seconds must be positive and at most {MAX_SECONDS}, got {}",
                    self.max_seconds
                ));
            }
            if !(self.max_turn_seconds > 0.0 && self.max_turn_seconds.is_finite()) {
                return bad(format!(
                    "--max-turn-seconds must be positive, got {}",
                    self.max_turn_seconds
                ));
            }
            if !(1..=256).contains(&self.lead) {
                return bad(format!("--lead of {} frames (1 to 256)", self.lead));
            }
            if !(1..=256).contains(&self.prebuffer) {
                return bad(format!(
                    "--prebuffer of {} frames (1 to 256)",
                    self.prebuffer
                ));
            }
            self.gate.validate()
        }
    }

    /// A running daemon.
    pub struct Daemon {
        audio: Option<Supervisor>,
        stream_stats: Arc<LoopStats>,
        session: Option<JoinHandle<()>>,
        socket: ControlSocket,
        shared: Arc<Shared>,
        accept_stop: Arc<AtomicBool>,
        info: StaticInfo,
    }

    fn check_model_dir(dir: &Path) -> Result<()> {
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "model directory {} does not exist",
                dir.display()
            )));
        }
        for f in ["config.json", "tokenizer.json"] {
            if !dir.join(f).is_file() {
                return Err(Error::Invalid(format!(
                    "model directory {}: missing {f}",
                    dir.display()
                )));
            }
        }
        Ok(())
    }

    impl Daemon {
        /// Binds the socket, loads the model, opens the devices and starts every thread. Any
        /// failure is one error naming what is at fault; nothing is left running.
        pub fn start(cfg: DaemonConfig) -> Result<Daemon> {
            let t0 = std::time::Instant::now();
            cfg.validate()?;
            check_model_dir(&cfg.model)?;
            let socket = ControlSocket::bind(&cfg.socket)?;
            let model_cfg = CsmConfig::load(cfg.model.join("config.json"))?;
            let fmt = PromptFormatter::from_file(cfg.model.join("tokenizer.json"))?;
            fmt.check_config(&model_cfg)?;
            let mut csm = Csm::load(&cfg.model)?;
            if let Some(n) = cfg.codebooks {
                csm.set_codebooks(n).map_err(|_| {
                    Error::Invalid(format!(
                        "--codebooks {n}: the model in {} generates 1 to {} codebooks per frame",
                        cfg.model.display(),
                        csm.num_codebooks()
                    ))
                })?;
            }
            let pool = Arc::new(Pool::new(cfg.threads));
            let threads = pool.threads();
            csm.set_pool(pool)?;
            let csm = Arc::new(csm);
            let mimi = csm
                .codec()
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "model {}: no codec weights (codec_model.*)",
                        cfg.model.display()
                    ))
                })?
                .clone();
            let n = csm.codebooks();
            let mut scfg = cfg.stream.clone();
            scfg.rate = mimi.config().sampling_rate as u32;
            scfg.period = mimi.frame_size();
            scfg.frames = None;
            scfg.pacing = stream::Pacing::RealTime;
            scfg.validate()?;
            let devices = Devices {
                capture: cfg.capture.clone(),
                playback: cfg.playback.clone(),
                cfg: scfg.clone(),
            };
            let (capture, playback) = devices.open()?;
            let frame_rate = scfg.rate as f64 / scfg.period as f64;

            let max_positions = csm.dims().backbone.max_positions;
            // a user turn leaves at least half the context for the reply
            let max_turn_frames = ((cfg.max_turn_seconds * frame_rate).ceil() as usize)
                .min(max_positions.saturating_sub(8) / 2)
                .max(1);
            let shared = Arc::new(Shared::new(cfg.barge_in, max_positions));
            let (collector, receiver) = turn_channel(scfg.period, max_turn_frames);
            // the whole longest utterance fits: holding it back never blocks generation
            let max_frames = (cfg.max_seconds * frame_rate).ceil() as usize;
            let (speech_tx, speech_rx) = block_ring(scfg.period, max_frames + 1);
            let frames = DaemonFrames::new(
                EnergyGate::new(cfg.gate)?,
                collector,
                speech_rx,
                shared.clone(),
                cfg.prebuffer,
                (1e9 / frame_rate) as u64,
            );
            let (cmd_tx, cmd_rx) = sync_channel(MAX_QUEUED as usize);
            let session = Session {
                conv: Conversation::new(csm.clone()),
                fmt,
                dec: MimiDecoderStream::new(mimi.clone())?,
                pcm: vec![0.0; scfg.period],
                speech: speech_tx,
                lead: cfg.lead,
                prebuffer: cfg.prebuffer,
                max_frames,
                turns: receiver,
                enc: MimiEncoderStream::new(mimi.clone(), n)?,
                turn_codes: Vec::with_capacity(max_turn_frames * n),
                frame_codes: vec![0; n],
                cmds: cmd_rx,
                shared: shared.clone(),
                defaults: SayDefaults {
                    max_seconds: cfg.max_seconds,
                    user_speaker: cfg.user_speaker,
                },
                frame_rate,
                hook: cfg.session_hook,
                user_turn_count: 0,
            };
            let info = StaticInfo {
                capture: cfg.capture.clone(),
                playback: cfg.playback.clone(),
                model: cfg.model.display().to_string(),
                latency_bound_ms: scfg.latency_bound_ms(playback.buffer_frames()),
                prebuffer_frames: cfg.prebuffer,
                lead_frames: cfg.lead,
                max_utterance_frames: max_frames,
                max_turn_frames,
                user_speaker: cfg.user_speaker,
                threads,
                codebooks: n,
                model_codebooks: csm.num_codebooks(),
            };
            let stream_stats = Arc::new(LoopStats::default());
            let dispatcher = Arc::new(Dispatcher::new(
                shared.clone(),
                cmd_tx,
                info.clone(),
                stream_stats.clone(),
                cfg.fault_injection,
            ));
            let session = std::thread::Builder::new()
                .name("edgecsm-session".into())
                .spawn(move || session.run())
                .map_err(|e| Error::Invalid(format!("cannot start the session thread: {e}")))?;
            let mut daemon = Daemon {
                audio: None,
                stream_stats: stream_stats.clone(),
                session: Some(session),
                socket,
                shared: shared.clone(),
                accept_stop: Arc::new(AtomicBool::new(false)),
                info,
            };
            daemon.audio = Some(Supervisor::start(
                devices,
                (capture, playback),
                frames,
                stream_stats,
                shared.clone(),
            )?);
            daemon
                .socket
                .serve(dispatcher, daemon.accept_stop.clone())?;
            shared.metrics.ready_us.set(t0.elapsed().as_micros() as u64);
            Ok(daemon)
        }

        pub fn socket_path(&self) -> &Path {
            self.socket.path()
        }

        pub fn shared(&self) -> &Arc<Shared> {
            &self.shared
        }

        pub fn info(&self) -> &StaticInfo {
            &self.info
        }

        /// The `status` reply's data (as a client would get it).
        pub fn status(&self) -> serde_json::Value {
            self.shared.status(&self.info, &self.stream_stats)
        }

        /// True once the audio loop has ended in a way reopening the devices cannot mend (a
        /// lost device is reopened: see [`super::audio`]).
        pub fn audio_failed(&self) -> bool {
            self.audio.as_ref().is_none_or(Supervisor::failed)
        }

        /// Stops cleanly: cuts speech, ends the session, stops the audio loop (devices are
        /// closed as its threads end), removes the socket. Returns the audio loop's report, or
        /// the device error that ended it.
        pub fn shutdown(mut self) -> Result<Report> {
            self.stop_threads()
        }

        fn stop_threads(&mut self) -> Result<Report> {
            let sh = &self.shared;
            sh.handoff.cut_current(CutReason::Shutdown);
            sh.shut_down();
            self.accept_stop.store(true, Relaxed);
            if let Some(s) = self.session.take() {
                let _ = s.join();
            }
            match self.audio.take() {
                Some(a) => a.stop(),
                None => Err(Error::Invalid("the audio loop was not running".into())),
            }
        }
    }

    impl Drop for Daemon {
        fn drop(&mut self) {
            if self.session.is_some() || self.audio.is_some() {
                let _ = self.stop_threads();
            }
        }
    }
}
