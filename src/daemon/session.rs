//! The session thread: owns the CSM [`Conversation`], runs queued `say` and `reset` requests
//! one at a time, and appends the user's turns (from the frame thread) as audio segments.
//! [`Dispatcher`] is what client threads call: `stop` and `status` are answered at once from
//! shared atomics (so they work while a `say` generates); `say` and `reset` are queued.
//!
//! A `say` generates frame by frame; each frame is decoded by a `MimiDecoderStream` and pushed
//! to the frame thread's speech ring (waiting for room, so generation never runs more than the
//! ring ahead of playback). `done` is sent once playback of the utterance is over (played out
//! or cut). A cut utterance is still committed to the conversation with every frame generated
//! (up to the ring's length more than was heard).

use super::protocol::{self, Request, Say};
use super::state::{CUT_BY_BARGE_IN, CUT_BY_SHUTDOWN, CUT_BY_STOP, Shared, StaticInfo};
use super::turn::{TurnReceiver, UserTurn};
use crate::csm::prompt::{PromptFormatter, Turn};
use crate::csm::{Conversation, GenerateOptions, InvalidCodes, Segment, StopReason};
use crate::mimi::MimiDecoderStream;
use crate::stream::LoopStats;
use crate::stream::ring::BlockProducer;
use crate::{Error, Result};
use serde_json::json;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering::{Relaxed, Release};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
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
        shared.events_dropped.fetch_add(1, Relaxed);
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
    pub turns: TurnReceiver,
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
        while !self.shared.shutdown.load(Relaxed) {
            while let Some(t) = self.turns.try_recv() {
                self.add_user_turn(t);
            }
            match self.cmds.recv_timeout(Duration::from_millis(20)) {
                Ok(cmd) => {
                    self.shared.queued.fetch_sub(1, Relaxed);
                    match cmd {
                        Command::Say {
                            id,
                            say,
                            out,
                            received_ns,
                        } => self.say(id, &say, &out, received_ns),
                        Command::Reset { out } => {
                            self.conv.clear();
                            self.publish();
                            eprintln!("serve: conversation reset");
                            post(&out, protocol::ok("reset", json!({})), &self.shared);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Publishes the conversation's size for `status`.
    fn publish(&self) {
        self.shared
            .segments
            .store(self.conv.segments().count() as u64, Relaxed);
        self.shared
            .positions
            .store(self.conv.positions() as u64, Relaxed);
    }

    fn note_evictions(&self, r: &crate::csm::ContextReport) {
        if let Some(m) = r.eviction_message() {
            self.shared
                .evicted_segments
                .fetch_add(r.evicted.len() as u64, Relaxed);
            eprintln!("serve: {m}");
        }
    }

    fn add_user_turn(&mut self, turn: UserTurn) {
        let n = self.conv.model().num_codebooks();
        let frames = turn.codes.len() / n;
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
                turn.codes.clone(),
            )
        });
        let split = turn.split;
        self.turns.recycle(turn);
        match seg.and_then(|s| self.conv.add_segment(s)) {
            Ok(r) => {
                self.note_evictions(&r);
                self.shared.user_turns_added.fetch_add(1, Relaxed);
                eprintln!(
                    "serve: user turn {k}: {frames} frames ({:.2} s){} added to the conversation",
                    frames as f64 / self.frame_rate,
                    if split { ", split at the cap" } else { "" }
                );
            }
            Err(e) => {
                self.shared.user_turns_failed.fetch_add(1, Relaxed);
                eprintln!("serve: user turn {k} not added: {e}");
            }
        }
        self.publish();
    }

    fn say(&mut self, id: u64, say: &Say, out: &Outbox, received_ns: u64) {
        let sh = self.shared.clone();
        let r = self.generate(id, say, out, received_ns);
        sh.speaking.store(0, Relaxed);
        sh.gen_done.fetch_max(id, Release);
        // wait until the frame thread has played the utterance out or cut it
        while sh.finished.load(Relaxed) < id && !sh.shutdown.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let cut = sh.cut.load(Relaxed) >= id;
        let (frames, mut reason, err) = match r {
            Ok((frames, stop)) => (frames, stop_name(stop), None),
            Err((frames, e)) => (frames, "error", Some(e.to_string())),
        };
        if cut && err.is_none() {
            reason = match sh.cut_reason.load(Relaxed) {
                CUT_BY_BARGE_IN => "barge_in",
                CUT_BY_SHUTDOWN => "shutdown",
                _ => "stopped",
            };
        }
        let tfs = sh.last_first_sound_us.load(Relaxed);
        let mut data = json!({
            "frames": frames,
            "played": sh.played_frames.load(Relaxed),
            "reason": reason,
            "text_to_first_sound_ms": (tfs != u64::MAX).then(|| tfs as f64 / 1000.0),
        });
        if let Some(e) = err {
            eprintln!("serve: utterance {id}: {e}");
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
        let max_frames = (want.ceil() as usize).clamp(1, room);
        let mut opts = GenerateOptions::sampled(max_frames, say.seed.unwrap_or(id));
        if let Some(t) = say.temperature {
            opts.backbone.temperature = t;
            opts.depth.temperature = t;
        }
        if let Some(k) = say.top_k {
            opts.backbone.top_k = k;
            opts.depth.top_k = k;
        }
        opts.invalid_codes = InvalidCodes::Stop;
        sh.last_first_sound_us.store(u64::MAX, Relaxed);
        sh.generated_frames.store(0, Relaxed);
        sh.played_frames.store(0, Relaxed);
        sh.utterance_received_ns.store(received_ns, Relaxed);
        sh.utterances.fetch_add(1, Relaxed);
        sh.speaking.store(id, Release);
        post(
            out,
            protocol::event("started", id, json!({"max_frames": max_frames})),
            &sh,
        );
        self.dec.reset();
        let label = format!(
            "utterance {id} (speaker {}): {}",
            say.speaker,
            say.text.chars().take(40).collect::<String>()
        );
        let (dec, pcm, speech) = (&mut self.dec, &mut self.pcm, &mut self.speech);
        let mut frames = 0usize;
        let mut decode_err: Option<Error> = None;
        let mut resumed = sh.now_ns();
        let cut = |sh: &Shared| sh.cut.load(Relaxed) >= id || sh.shutdown.load(Relaxed);
        let g = self
            .conv
            .generate(Segment::new(label, ids, Vec::new()), &opts, |frame| {
                if cut(&sh) {
                    return ControlFlow::Break(());
                }
                if let Err(e) = dec.decode_frame(frame, pcm) {
                    decode_err = Some(e);
                    return ControlFlow::Break(());
                }
                if frames > 0 {
                    // the first frame's time includes the prompt's prefill
                    sh.gen_frame.record_ns(sh.now_ns().saturating_sub(resumed));
                }
                frames += 1;
                sh.generated_frames.store(frames as u64, Relaxed);
                while !speech.try_push(pcm, id) {
                    if cut(&sh) {
                        return ControlFlow::Break(());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
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
    pub stream_stats: OnceLock<Arc<LoopStats>>,
    pub next_id: std::sync::atomic::AtomicU64,
}

impl Dispatcher {
    /// Handles one parsed request from a client whose replies go to `out`.
    pub fn dispatch(&self, req: Request, out: &Outbox) -> Result<()> {
        let sh = &*self.shared;
        let reply = |line: String| {
            // a reply waits for room in the client's own queue (its writer drains it)
            let _ = out.send(line);
        };
        match req {
            Request::Status => {
                let data = match self.stream_stats.get() {
                    Some(s) => sh.status(&self.info, s),
                    None => sh.status(&self.info, &LoopStats::default()),
                };
                reply(protocol::ok("status", json!({ "status": data })));
            }
            Request::Stop => {
                sh.stop_received_ns.store(sh.now_ns(), Relaxed);
                let stopped = sh.cut_current(CUT_BY_STOP);
                if stopped.is_none() {
                    sh.stop_received_ns.store(0, Relaxed);
                }
                reply(protocol::ok("stop", json!({ "stopped": stopped })));
            }
            Request::Say(say) => {
                if !self.reserve() {
                    reply(protocol::error(&format!(
                        "busy: {MAX_QUEUED} requests are already queued"
                    )));
                    return Ok(());
                }
                let id = self.next_id.fetch_add(1, Relaxed);
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
        let q = &self.shared.queued;
        let mut cur = q.load(Relaxed);
        loop {
            if cur >= MAX_QUEUED {
                return false;
            }
            match q.compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    fn enqueue(&self, cmd: Command) {
        // a reserved slot means the channel (capacity MAX_QUEUED) has room
        if self.cmds.send(cmd).is_err() {
            self.shared.queued.fetch_sub(1, Relaxed);
        }
    }
}
