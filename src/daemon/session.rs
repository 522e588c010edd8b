//! The session thread: owns the CSM [`Conversation`], runs queued `say` and `reset` requests
//! one at a time, and appends the user's turns (from the frame thread) as audio segments.
//! [`Dispatcher`] is what client threads call: `stop` and `status` are answered at once from
//! shared atomics (so they work while a `say` generates); `say` and `reset` are queued.
//!
//! A `say` generates frame by frame; each frame is decoded by a `MimiDecoderStream` and pushed
//! to the frame thread's speech ring, which holds the longest allowed utterance, so frames held
//! back before playback starts never block generation; once the utterance plays, generation
//! runs at most `lead` frames ahead of it. The session publishes the measured generation time
//! per frame, from which the frame thread decides when playback can start without a gap (see
//! [`super::frames`]). Codes the codec cannot decode are never drawn (as in `say`). `done` is
//! sent once playback of the utterance is over (played out or cut). A cut utterance is still
//! committed to the conversation with every frame generated (up to `lead` frames more than was
//! heard once it played).
//!
//! Between requests the session encodes the user's turns from the turn ring with its own
//! streaming Mimi encoder (see [`super::turn`]) and adds each finished turn to the conversation.

use super::handoff::CutReason;
use super::protocol::{self, FaultPlace, Request, Say};
use super::state::{Shared, StaticInfo};
use super::turn::{TurnEvent, TurnReceiver};
use crate::csm::prompt::{PromptFormatter, Turn};
use crate::csm::{Conversation, GenerateOptions, InvalidCodes, Segment, StopReason};
use crate::mimi::{MimiDecoderStream, MimiEncoderStream};
use crate::stream::LoopStats;
use crate::stream::ring::BlockProducer;
use crate::{Error, Result};
use serde_json::json;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

/// Requests waiting for the session thread, at most.
pub const MAX_QUEUED: u64 = 8;

/// A client's outgoing line queue.
pub type Outbox = SyncSender<String>;

/// Work for the session thread.
#[derive(Debug)]
pub enum Command {
    Say {
        id: u64,
        say: Say,
        out: Outbox,
        received_ns: u64,
    },
    Reset {
        out: Outbox,
    },
}

/// Sends without blocking; a full or closed client queue drops the line (counted when full).
pub fn post(out: &Outbox, line: String, shared: &Shared) {
    if let Err(TrySendError::Full(_)) = out.try_send(line) {
        shared.metrics.events_dropped.incr();
    }
}

/// Generation defaults from the command line.
#[derive(Clone, Copy, Debug)]
pub struct SayDefaults {
    pub max_seconds: f64,
    pub user_speaker: u32,
}

/// The session thread's state (see the module docs).
pub struct Session {
    pub conv: Conversation,
    pub fmt: PromptFormatter,
    pub dec: MimiDecoderStream,
    pub pcm: Vec<f32>,
    pub speech: BlockProducer,
    /// Frames generation may run ahead of playback once the utterance plays.
    pub lead: usize,
    /// Frames queued before an utterance may start playing.
    pub prebuffer: usize,
    /// The longest utterance in frames (the speech ring holds it whole).
    pub max_frames: usize,
    pub turns: TurnReceiver,
    /// Encodes the user's turns (fresh for each).
    pub enc: MimiEncoderStream,
    /// The codes of the turn being encoded (capacity: the longest turn piece), and of one frame.
    pub turn_codes: Vec<u32>,
    pub frame_codes: Vec<u32>,
    pub cmds: Receiver<Command>,
    pub shared: Arc<Shared>,
    pub defaults: SayDefaults,
    /// Frames per second of the codec (12.5 for Mimi).
    pub frame_rate: f64,
    /// Called first thing on the session thread (the daemon's thread hook).
    pub hook: Option<fn()>,
    pub user_turn_count: u64,
}

impl Session {
    /// Runs until shutdown or until every request sender is gone.
    pub fn run(mut self) {
        if let Some(h) = self.hook {
            h();
        }
        self.publish();
        while !self.shared.shutting_down() {
            self.encode_user_turns();
            match self.cmds.recv_timeout(Duration::from_millis(20)) {
                Ok(cmd) => {
                    self.shared.release_slot();
                    self.supervised(cmd);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Runs one command; a panic (a bug) ends it instead of the thread: the utterance gets its
    /// `done` with reason `error`, its queued speech is cut, and the conversation, decoder and
    /// encoder are rebuilt (their state is suspect), so the daemon keeps serving; `status`
    /// counts it in `session_restarts`.
    fn supervised(&mut self, cmd: Command) {
        let (id, out) = match &cmd {
            Command::Say { id, out, .. } => (Some(*id), out.clone()),
            Command::Reset { out } => (None, out.clone()),
        };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match cmd {
            Command::Say {
                id,
                say,
                out,
                received_ns,
            } => self.say(id, &say, &out, received_ns),
            Command::Reset { out } => {
                self.conv.clear();
                self.publish();
                log::info!("conversation reset");
                post(&out, protocol::ok("reset", json!({})), &self.shared);
            }
        }));
        let Err(panic) = r else { return };
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        let sh = self.shared.clone();
        sh.metrics.session_restarts.incr();
        log::error!("internal error in the session thread ({msg}); conversation rebuilt");
        self.conv = Conversation::new(self.conv.model().clone());
        self.dec.reset();
        self.enc.reset();
        self.turn_codes.clear();
        let error = format!("internal error ({msg}); the conversation was reset");
        match id {
            Some(id) => {
                sh.handoff.fail(id);
                let data = json!({
                    "frames": sh.handoff.generated_frames(),
                    "played": sh.handoff.played_frames(),
                    "reason": "error",
                    "error": error,
                    "text_to_first_sound_ms": null,
                });
                post(&out, protocol::event("done", id, data), &sh);
            }
            None => post(&out, protocol::error(&error), &sh),
        }
        self.publish();
    }

    /// Publishes the conversation's size for `status`.
    fn publish(&self) {
        let m = &self.shared.metrics;
        m.segments.set(self.conv.segments().count() as u64);
        m.positions.set(self.conv.positions() as u64);
    }

    fn note_evictions(&self, r: &crate::csm::ContextReport) {
        if let Some(m) = r.eviction_message() {
            self.shared
                .metrics
                .evicted_segments
                .add(r.evicted.len() as u64);
            log::info!("{m}");
        }
    }

    /// Encodes every captured block waiting in the turn ring; adds each finished turn.
    fn encode_user_turns(&mut self) {
        while let Some(ev) = self.turns.try_recv() {
            let frame = match ev {
                TurnEvent::First(pcm) => {
                    self.enc.reset();
                    self.turn_codes.clear();
                    Some(self.enc.encode_frame(pcm, &mut self.frame_codes))
                }
                TurnEvent::Audio(pcm) => Some(self.enc.encode_frame(pcm, &mut self.frame_codes)),
                TurnEvent::Discard => {
                    self.turn_codes.clear();
                    None
                }
                TurnEvent::End { split } => {
                    self.add_user_turn(split);
                    None
                }
            };
            match frame {
                // capacity is the longest piece: never reallocates
                Some(Ok(()))
                    if self.turn_codes.len() + self.frame_codes.len()
                        <= self.turn_codes.capacity() =>
                {
                    self.turn_codes.extend_from_slice(&self.frame_codes);
                }
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    self.shared.metrics.user_turns_failed.incr();
                    log::warn!("encoding a user turn failed: {e}");
                    self.turn_codes.clear();
                }
                None => {}
            }
        }
    }

    fn add_user_turn(&mut self, split: bool) {
        let n = self.conv.model().codebooks();
        let frames = self.turn_codes.len() / n;
        if frames == 0 {
            return;
        }
        self.user_turn_count += 1;
        let k = self.user_turn_count;
        let mut ids = Vec::new();
        let t = Turn {
            speaker: self.defaults.user_speaker,
            text: "",
            audio_frames: Some(frames),
        };
        let seg = self.fmt.segment(&t, &mut ids).map(|()| {
            Segment::new(
                format!("user turn {k} ({frames} frames)"),
                ids,
                self.turn_codes.clone(),
            )
        });
        self.turn_codes.clear();
        match seg.and_then(|s| self.conv.add_segment(s)) {
            Ok(r) => {
                self.note_evictions(&r);
                let sh = &self.shared;
                sh.metrics.turn_added(sh.now_ns());
                log::info!(
                    "user turn {k}: {frames} frames ({:.2} s){} added to the conversation",
                    frames as f64 / self.frame_rate,
                    if split { ", split at the cap" } else { "" }
                );
            }
            Err(e) => {
                self.shared.metrics.user_turns_failed.incr();
                log::warn!("user turn {k} not added: {e}");
            }
        }
        self.publish();
    }

    fn say(&mut self, id: u64, say: &Say, out: &Outbox, received_ns: u64) {
        let sh = self.shared.clone();
        // this utterance's figures only, whatever happens below
        sh.metrics.utterance_claimed();
        if !sh.handoff.claim(id) {
            // stopped while it waited in the queue: nothing was generated or played
            sh.handoff.skip(id);
            let data = json!({"frames": 0, "played": 0, "reason": "stopped",
                              "text_to_first_sound_ms": null});
            post(out, protocol::event("done", id, data), &sh);
            return;
        }
        let r = self.generate(id, say, out, received_ns);
        sh.handoff.end_generating(id);
        // wait until the frame thread has played the utterance out or cut it
        while !sh.handoff.is_finished(id) && !sh.shutting_down() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (frames, mut reason, err) = match r {
            Ok((frames, stop)) => (frames, stop_name(stop), None),
            Err((frames, e)) => (frames, "error", Some(e.to_string())),
        };
        if let Some(cut) = sh.handoff.cut_reason(id)
            && err.is_none()
        {
            reason = cut.name();
        }
        let mut data = json!({
            "frames": frames,
            "played": sh.handoff.played_frames(),
            "reason": reason,
            "text_to_first_sound_ms": sh.metrics.last_first_sound_ms(),
        });
        log::debug!(
            "utterance {id} done: {frames} frames generated, {} played, {reason}",
            data["played"]
        );
        if let Some(e) = err {
            log::warn!("utterance {id}: {e}");
            data["error"] = e.into();
        }
        self.publish();
        post(out, protocol::event("done", id, data), &sh);
    }

    /// Generates utterance `id`; returns the frames generated and why it ended.
    fn generate(
        &mut self,
        id: u64,
        say: &Say,
        out: &Outbox,
        received_ns: u64,
    ) -> std::result::Result<(usize, StopReason), (usize, Error)> {
        let sh = self.shared.clone();
        let mut ids = Vec::new();
        let turn = Turn {
            speaker: say.speaker,
            text: &say.text,
            audio_frames: None,
        };
        self.fmt.segment(&turn, &mut ids).map_err(|e| (0, e))?;
        let max_pos = self.conv.model().dims().backbone.max_positions;
        let room = max_pos.saturating_sub(ids.len() + 1);
        if room == 0 {
            return Err((
                0,
                Error::Invalid(format!(
                    "the text takes {} positions, the model holds {max_pos}",
                    ids.len()
                )),
            ));
        }
        let want = say.max_seconds.unwrap_or(self.defaults.max_seconds) * self.frame_rate;
        // the speech ring holds the longest allowed utterance (--max-seconds)
        let max_frames = (want.ceil() as usize).clamp(1, room.min(self.max_frames));
        let mut opts = GenerateOptions::sampled(max_frames, say.seed.unwrap_or(id));
        if let Some(t) = say.temperature {
            opts.backbone.temperature = t;
            opts.depth.temperature = t;
        }
        if let Some(k) = say.top_k {
            opts.backbone.top_k = k;
            opts.depth.top_k = k;
        }
        // as `say` does: never draw a code the codec cannot decode
        opts.invalid_codes = InvalidCodes::Mask;
        sh.metrics.utterance_begins(received_ns);
        sh.handoff.begin_generating(id, max_frames as u64);
        // the wait for a gap-free start, from the last measured rate (see `frames`)
        let prior = sh.handoff.frame_ns();
        let expected_wait_ms = (prior != 0).then(|| {
            let (m, g, p) = (
                max_frames as f64,
                prior as f64 * 9.0 / 8.0,
                1e9 / self.frame_rate,
            );
            (m * g - (m - 1.0) * p).max(self.prebuffer as f64 * g) / 1e6
        });
        post(
            out,
            protocol::event(
                "started",
                id,
                json!({"max_frames": max_frames, "expected_wait_ms": expected_wait_ms}),
            ),
            &sh,
        );
        self.dec.reset();
        let label = format!(
            "utterance {id} (speaker {}): {}",
            say.speaker,
            say.text.chars().take(40).collect::<String>()
        );
        let (dec, pcm, speech) = (&mut self.dec, &mut self.pcm, &mut self.speech);
        let (lead, capacity) = (self.lead as u64, (self.max_frames + 1) as u64);
        let (prebuffer, period_ns) = (self.prebuffer as u64, (1e9 / self.frame_rate) as u64);
        let mut frames = 0usize;
        let mut decode_err: Option<Error> = None;
        let mut resumed = sh.now_ns();
        let mut measured_ns = 0u64;
        let cut = |sh: &Shared| sh.handoff.is_cut(id) || sh.shutting_down();
        let g = self
            .conv
            .generate(Segment::new(label, ids, Vec::new()), &opts, |frame| {
                if cut(&sh) {
                    return ControlFlow::Break(());
                }
                if sh.take_injected_panic() {
                    panic!("injected panic in the session thread (utterance {id})");
                }
                if let Err(e) = dec.decode_frame(frame, pcm) {
                    decode_err = Some(e);
                    return ControlFlow::Break(());
                }
                if frames > 0 {
                    // the first frame's time includes the prompt's prefill
                    let t = sh.now_ns().saturating_sub(resumed);
                    sh.metrics.gen_frame.record_ns(t);
                    measured_ns += t;
                    sh.handoff.measured(measured_ns / frames as u64);
                }
                frames += 1;
                if frames == 1 {
                    sh.metrics.first_frame_queued(sh.now_ns());
                }
                // run at most `lead` frames ahead of playback once it plays (or can), if that
                // keeps it gap-free (see `Handoff::should_hold`); the ring holds it whole
                let ahead = |free: usize| {
                    let queued = capacity - free as u64;
                    sh.handoff
                        .should_hold(id, queued, lead, prebuffer, period_ns)
                };
                while ahead(speech.free()) || !speech.try_push(pcm, id) {
                    if cut(&sh) {
                        return ControlFlow::Break(());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                sh.handoff.frame_generated(frames as u64);
                resumed = sh.now_ns();
                ControlFlow::Continue(())
            });
        match g {
            Ok(g) => {
                self.note_evictions(&g.context);
                match decode_err {
                    Some(e) => Err((frames, e)),
                    None => Ok((frames, g.stop)),
                }
            }
            Err(e) => Err((frames, e)),
        }
    }
}

fn stop_name(s: StopReason) -> &'static str {
    match s {
        StopReason::EndOfSpeech => "end_of_speech",
        StopReason::MaxFrames => "max_frames",
        StopReason::InvalidCode { .. } => "invalid_code",
        StopReason::Stopped => "stopped",
    }
}

/// What the client threads call (see the module docs).
pub struct Dispatcher {
    pub shared: Arc<Shared>,
    pub cmds: SyncSender<Command>,
    pub info: StaticInfo,
    pub stream_stats: Arc<LoopStats>,
    /// The id of the next `say` (from 1; only client threads take ids, Relaxed).
    next_id: AtomicU64,
    /// Accept the `_fault` test requests (`DaemonConfig::fault_injection`).
    pub faults: bool,
}

impl Dispatcher {
    pub fn new(
        shared: Arc<Shared>,
        cmds: SyncSender<Command>,
        info: StaticInfo,
        stream_stats: Arc<LoopStats>,
        faults: bool,
    ) -> Dispatcher {
        Dispatcher {
            shared,
            cmds,
            info,
            stream_stats,
            next_id: AtomicU64::new(1),
            faults,
        }
    }

    /// Handles one parsed request from a client whose replies go to `out`.
    pub fn dispatch(&self, req: Request, out: &Outbox) -> Result<()> {
        let sh = &*self.shared;
        let reply = |line: String| {
            // a reply waits for room in the client's own queue (its writer drains it)
            let _ = out.send(line);
        };
        match req {
            Request::Status => {
                let data = sh.status(&self.info, &self.stream_stats);
                reply(protocol::ok("status", json!({ "status": data })));
            }
            Request::Stop => {
                sh.metrics.stop_received(sh.now_ns());
                // the utterance speaking or being generated and every one queued behind it
                let stopped = sh.handoff.cut_all(CutReason::Stop);
                if stopped.is_none() {
                    sh.metrics.stop_found_nothing();
                }
                reply(protocol::ok("stop", json!({ "stopped": stopped })));
            }
            Request::Fault(place) => {
                if !self.faults {
                    reply(protocol::error(
                        "unknown op \"_fault\" (one of say, stop, status, reset)",
                    ));
                    return Ok(());
                }
                match place {
                    FaultPlace::Session => {
                        sh.inject_panic();
                        reply(protocol::ok("_fault", json!({})));
                    }
                    FaultPlace::Client => panic!("injected panic in a client thread"),
                }
            }
            Request::Say(say) => {
                if !self.reserve() {
                    reply(protocol::error(&format!(
                        "busy: {MAX_QUEUED} requests are already queued"
                    )));
                    return Ok(());
                }
                let id = self.next_id.fetch_add(1, Relaxed);
                // before the reply: a `stop` that follows it sees this utterance
                sh.handoff.accept(id);
                let received_ns = sh.now_ns();
                // the reply goes out before the session can post the first event
                reply(protocol::ok("say", json!({ "id": id })));
                self.enqueue(Command::Say {
                    id,
                    say,
                    out: out.clone(),
                    received_ns,
                });
            }
            Request::Reset => {
                if !self.reserve() {
                    reply(protocol::error(&format!(
                        "busy: {MAX_QUEUED} requests are already queued"
                    )));
                    return Ok(());
                }
                self.enqueue(Command::Reset { out: out.clone() });
            }
        }
        Ok(())
    }

    /// Takes a queue slot, or false when `MAX_QUEUED` are taken.
    fn reserve(&self) -> bool {
        self.shared.reserve_slot(MAX_QUEUED)
    }

    fn enqueue(&self, cmd: Command) {
        // a reserved slot means the channel (capacity MAX_QUEUED) has room
        if self.cmds.send(cmd).is_err() {
            self.shared.release_slot();
        }
    }
}
