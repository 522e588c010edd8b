//! A conversation: the segments said so far (each a speaker turn: text ids and, usually, its
//! audio as codes), the backbone KV cache that holds them, and generation of new turns.
//!
//! Across turns the cache is kept: adding a segment prefills only that segment's positions.
//! When a new segment (plus, for generation, room for the frames to come) would not fit in the
//! backbone's maximum positions, the oldest whole segments are dropped, the cache is cleared
//! and what remains is prefilled again; the returned [`ContextReport`] says what was evicted so
//! the caller can log it.
//!
//! A generated turn becomes a segment too: its prompt ids, one `audio_token_id` per frame
//! produced and a closing `audio_eos_token_id` (so the next turn sees it in the upstream layout).

use super::generate::{FrameEngine, FrameKind, GenerateOptions, InvalidCodes, StopReason};
use super::model::Csm;
use crate::{Error, Result};
use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::sync::Arc;

/// One turn of the conversation in the upstream input layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// For logs: e.g. the speaker and the start of the text.
    pub label: String,
    /// Text ids with audio / audio-eos placeholders (as the prompt formatter writes them).
    pub ids: Vec<u32>,
    /// The frames filling the audio placeholders in order, frames-major
    /// (`frames * num_codebooks`).
    pub codes: Vec<u32>,
}

impl Segment {
    pub fn new(label: impl Into<String>, ids: Vec<u32>, codes: Vec<u32>) -> Segment {
        Segment {
            label: label.into(),
            ids,
            codes,
        }
    }

    /// Positions the segment takes in the backbone.
    pub fn positions(&self) -> usize {
        self.ids.len()
    }
}

/// What happened to the context while adding a segment or generating.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContextReport {
    /// Labels of the oldest segments dropped to make room.
    pub evicted: Vec<String>,
    /// Positions those segments took.
    pub evicted_positions: usize,
    /// Positions of the remaining history prefilled again after the eviction.
    pub reprefilled_positions: usize,
    /// Positions of the new segment prefilled.
    pub prefilled_positions: usize,
}

impl ContextReport {
    /// A one-line description of an eviction, or None when nothing was evicted.
    pub fn eviction_message(&self) -> Option<String> {
        (!self.evicted.is_empty()).then(|| {
            format!(
                "context full: dropped the {} oldest segment(s) ({} positions: {}) and prefilled \
                 the remaining {} positions again",
                self.evicted.len(),
                self.evicted_positions,
                self.evicted.join(", "),
                self.reprefilled_positions
            )
        })
    }
}

/// The outcome of [`Conversation::generate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// Frames handed to the callback.
    pub frames: usize,
    pub stop: StopReason,
    pub context: ContextReport,
}

/// A conversation over a shared model (see the module docs).
#[derive(Debug)]
pub struct Conversation {
    csm: Arc<Csm>,
    engine: FrameEngine,
    segments: VecDeque<Segment>,
}

impl Conversation {
    /// An empty conversation with the default prefill chunk.
    pub fn new(csm: Arc<Csm>) -> Conversation {
        Self::with_prefill_chunk(csm, super::generate::DEFAULT_PREFILL_CHUNK)
    }

    /// An empty conversation prefilling `chunk` tokens per backbone pass (scratch grows with it).
    pub fn with_prefill_chunk(csm: Arc<Csm>, chunk: usize) -> Conversation {
        let engine = FrameEngine::new(&csm, chunk.max(1));
        Conversation {
            csm,
            engine,
            segments: VecDeque::new(),
        }
    }

    pub fn model(&self) -> &Arc<Csm> {
        &self.csm
    }

    /// Positions held (= the sum of the segments' positions).
    pub fn positions(&self) -> usize {
        self.engine.positions()
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter()
    }

    /// Forgets the whole conversation.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.engine.reset();
    }

    /// Adds a turn, prefilling only its positions (after evicting old turns if needed).
    pub fn add_segment(&mut self, seg: Segment) -> Result<ContextReport> {
        self.add_inner(seg, None)
    }

    /// [`Conversation::add_segment`] that also returns the codebook-0 logits at every position
    /// of the new segment (`[positions, audio_vocab]`), for parity tests.
    pub fn add_segment_with_logits(&mut self, seg: Segment) -> Result<(ContextReport, Vec<f32>)> {
        let mut logits = Vec::new();
        let r = self.add_inner(seg, Some(&mut logits))?;
        Ok((r, logits))
    }

    fn add_inner(&mut self, seg: Segment, logits: Option<&mut Vec<f32>>) -> Result<ContextReport> {
        FrameEngine::check_input(&self.csm, &seg.ids, &seg.codes)?;
        let mut report = self.make_room(seg.positions(), &seg.label)?;
        let r = self
            .engine
            .prefill(&self.csm, &seg.ids, &seg.codes, logits, None);
        if let Err(e) = r {
            self.rebuild()?;
            return Err(e);
        }
        report.prefilled_positions = seg.positions();
        self.segments.push_back(seg);
        Ok(report)
    }

    /// The backbone's final hidden states at every position of `seg` run on an empty context
    /// (`[positions, hidden]`), plus its codebook-0 logits; the conversation is cleared.
    pub fn hidden_and_logits(&mut self, seg: &Segment) -> Result<(Vec<f32>, Vec<f32>)> {
        self.clear();
        let (mut h, mut l) = (Vec::new(), Vec::new());
        let r = self
            .engine
            .prefill(&self.csm, &seg.ids, &seg.codes, Some(&mut l), Some(&mut h));
        self.engine.reset();
        r.map(|()| (h, l))
    }

    /// Depth-decoder teacher-forced logits of codebooks 1.. for `frame` after the backbone
    /// hidden state `hidden` (`[num_codebooks - 1, audio_vocab]`).
    pub fn depth_logits(&mut self, hidden: &[f32], frame: &[u32]) -> Result<Vec<f32>> {
        self.engine.depth_logits(&self.csm, hidden, frame)
    }

    /// Drops the oldest segments until `need` more positions fit; re-prefills what remains.
    fn make_room(&mut self, need: usize, what: &str) -> Result<ContextReport> {
        let max = self.csm.dims().backbone.max_positions;
        if need > max {
            return Err(Error::Invalid(format!(
                "`{what}` needs {need} positions, more than the model's {max}"
            )));
        }
        let mut report = ContextReport::default();
        if self.engine.positions() + need <= max {
            return Ok(report);
        }
        let mut used: usize = self.segments.iter().map(Segment::positions).sum();
        while used + need > max {
            let s = self
                .segments
                .pop_front()
                .expect("used > 0 means a segment is left");
            used -= s.positions();
            report.evicted_positions += s.positions();
            report.evicted.push(s.label);
        }
        self.rebuild()?;
        report.reprefilled_positions = used;
        Ok(report)
    }

    /// Clears the cache and prefills the kept segments again.
    fn rebuild(&mut self) -> Result<()> {
        self.engine.reset();
        for s in &self.segments {
            self.engine
                .prefill(&self.csm, &s.ids, &s.codes, None, None)?;
        }
        Ok(())
    }

    /// Generates a turn after the prompt `prompt` (usually the speaker's text; it may hold
    /// audio placeholders with codes too). Each frame (`num_codebooks` codes) is handed to
    /// `on_frame` as soon as it exists; returning `ControlFlow::Break` ends the turn. The turn
    /// (prompt + frames + audio-eos) then becomes part of the conversation. Room for the
    /// prompt and `max_frames + 1` positions is made first (evicting old segments if needed).
    ///
    /// After the first frame, each frame runs without allocating (the callback aside).
    pub fn generate<F>(
        &mut self,
        prompt: Segment,
        opts: &GenerateOptions,
        mut on_frame: F,
    ) -> Result<Generated>
    where
        F: FnMut(&[u32]) -> ControlFlow<()>,
    {
        opts.backbone.validate()?;
        opts.depth.validate()?;
        if opts.max_frames == 0 {
            return Err(Error::Invalid("max_frames must be at least 1".into()));
        }
        FrameEngine::check_input(&self.csm, &prompt.ids, &prompt.codes)?;
        let need = prompt.positions() + opts.max_frames + 1;
        if prompt.ids.is_empty() && self.engine.positions() == 0 {
            return Err(Error::Invalid(
                "nothing to continue: empty prompt and empty context".into(),
            ));
        }
        let mut context = self.make_room(need, &prompt.label)?;
        context.prefilled_positions = prompt.positions();
        let r = self.generate_inner(prompt, opts, &mut on_frame, context);
        if r.is_err() {
            self.rebuild()?;
        }
        r
    }

    fn generate_inner(
        &mut self,
        mut seg: Segment,
        opts: &GenerateOptions,
        on_frame: &mut dyn FnMut(&[u32]) -> ControlFlow<()>,
        context: ContextReport,
    ) -> Result<Generated> {
        let csm = Arc::clone(&self.csm);
        let d = csm.dims();
        let n = d.num_codebooks;
        self.engine
            .prefill(&csm, &seg.ids, &seg.codes, None, None)?;
        self.engine.reseed(opts.seed);
        seg.ids.reserve(opts.max_frames + 1);
        seg.codes.reserve(opts.max_frames * n);
        let mut frames = 0;
        // whether the last frame handed out has been fed to the backbone
        let mut fed = true;
        let stop = loop {
            let frame = self.engine.next_frame(&csm, &opts.backbone, &opts.depth)?;
            match FrameEngine::classify(&csm, frame) {
                FrameKind::EndOfSpeech => break StopReason::EndOfSpeech,
                FrameKind::Invalid { codebook, code } => match opts.invalid_codes {
                    InvalidCodes::Stop => break StopReason::InvalidCode { codebook, code },
                    InvalidCodes::Error => {
                        return Err(Error::Invalid(format!(
                            "generated audio code {code} in codebook {codebook} (frame {frames}) \
                             is not decodable (codec codebook size {})",
                            csm.decodable_limit()
                        )));
                    }
                    InvalidCodes::Keep => {}
                },
                FrameKind::Speech => {}
            }
            seg.ids.push(d.audio_token_id);
            seg.codes.extend_from_slice(frame);
            frames += 1;
            let flow = on_frame(&seg.codes[(frames - 1) * n..frames * n]);
            if flow.is_break() {
                fed = false;
                break StopReason::Stopped;
            }
            if frames == opts.max_frames {
                fed = false;
                break StopReason::MaxFrames;
            }
            let last = frames - 1;
            self.engine
                .feed_frame(&csm, &seg.codes[last * n..frames * n])?;
        };
        if !fed {
            let last = frames - 1;
            self.engine
                .feed_frame(&csm, &seg.codes[last * n..frames * n])?;
        }
        self.engine.feed_eos_frame(&csm)?;
        seg.ids.push(d.audio_eos_token_id);
        self.segments.push_back(seg);
        Ok(Generated {
            frames,
            stop,
            context,
        })
    }
}
