//! A conversation: the segments said so far (each a speaker turn: text ids and, usually, its
//! audio as codes), the backbone KV cache that holds them, and generation of new turns.
//!
//! Across turns the cache is kept: adding a segment prefills only that segment's positions.
//! When a new segment (plus, for generation, room for the frames to come) would not fit in the
//! backbone's maximum positions, the oldest whole segments are dropped, the cache is cleared
//! and what remains is prefilled again; the returned [`ContextReport`] says what was evicted so
//! the caller can log it. [`Conversation::add_segments`] adds many turns at once, computing
//! first which of the newest ones fit, so a long history is evicted and prefilled once.
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
    /// (`frames * codebooks`, the codebooks in use: [`Csm::codebooks`]).
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
            const SHOWN: usize = 4;
            let mut names = self.evicted[..self.evicted.len().min(SHOWN)].join(", ");
            if self.evicted.len() > SHOWN {
                names += &format!(", ... ({} more)", self.evicted.len() - SHOWN);
            }
            format!(
                "context full: dropped the {} oldest segment(s) ({} positions: {}) and prefilled \
                 the remaining {} positions again",
                self.evicted.len(),
                self.evicted_positions,
                names,
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

    /// Where the generation time went since the last [`Conversation::reset_profile`].
    pub fn profile(&self) -> &crate::csm::generate::FrameProfile {
        self.engine.profile()
    }

    pub fn reset_profile(&mut self) {
        self.engine.reset_profile();
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

    /// Adds many turns (oldest first) as one operation, leaving room for `reserve` more
    /// positions (e.g. the turn to be generated next): what fits is computed first — the
    /// newest turns, old and new, whose positions fit in `max_positions - reserve` — then the
    /// dropped ones are evicted in one go and the cache is prefilled once (only the new turns
    /// when no old turn is dropped). A turn larger than the whole room is dropped with every
    /// turn before it. Every new turn is checked before anything changes.
    pub fn add_segments(&mut self, segs: Vec<Segment>, reserve: usize) -> Result<ContextReport> {
        let max = self.csm.dims().backbone.max_positions;
        if reserve > max {
            return Err(Error::Invalid(format!(
                "{reserve} positions to keep free, more than the model's {max}"
            )));
        }
        for s in &segs {
            FrameEngine::check_input(&self.csm, &s.ids, &s.codes)?;
        }
        let room = max - reserve;
        // the newest turns that fit, counted from the end over old then new turns
        let mut used = 0usize;
        let mut keep_new = 0;
        for s in segs.iter().rev() {
            if used + s.positions() > room {
                break;
            }
            used += s.positions();
            keep_new += 1;
        }
        let mut keep_old = 0;
        if keep_new == segs.len() {
            for s in self.segments.iter().rev() {
                if used + s.positions() > room {
                    break;
                }
                used += s.positions();
                keep_old += 1;
            }
        }
        let mut report = ContextReport::default();
        let drop_old = self.segments.len() - keep_old;
        for s in self.segments.drain(..drop_old) {
            report.evicted_positions += s.positions();
            report.evicted.push(s.label);
        }
        let mut segs = segs;
        let drop_new = segs.len() - keep_new;
        for s in segs.drain(..drop_new) {
            report.evicted_positions += s.positions();
            report.evicted.push(s.label);
        }
        if drop_old > 0 {
            self.engine.reset();
            report.reprefilled_positions = self.segments.iter().map(Segment::positions).sum();
            if report.reprefilled_positions > 0 {
                self.rebuild()?;
            }
        }
        for s in segs {
            let r = self.engine.prefill(&self.csm, &s.ids, &s.codes, None, None);
            if let Err(e) = r {
                self.rebuild()?;
                return Err(e);
            }
            report.prefilled_positions += s.positions();
            self.segments.push_back(s);
        }
        Ok(report)
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
    /// audio placeholders with codes too). Each frame ([`Csm::codebooks`] codes) is handed to
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
        let n = csm.codebooks();
        self.engine
            .prefill(&csm, &seg.ids, &seg.codes, None, None)?;
        self.engine.reseed(opts.seed);
        seg.ids.reserve(opts.max_frames + 1);
        seg.codes.reserve(opts.max_frames * n);
        // generated frames start after the prompt's own audio codes
        let base = seg.codes.len();
        let limit = opts
            .invalid_codes
            .sample_limit(d.audio_vocab, csm.decodable_limit() as usize);
        let mut frames = 0;
        // whether the last frame handed out has been fed to the backbone
        let mut fed = true;
        let stop = loop {
            let frame = self
                .engine
                .next_frame(&csm, limit, &opts.backbone, &opts.depth)?;
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
                    // Mask never draws one
                    InvalidCodes::Keep | InvalidCodes::Mask => {}
                },
                FrameKind::Speech => {}
            }
            seg.ids.push(d.audio_token_id);
            seg.codes.extend_from_slice(frame);
            frames += 1;
            let flow = on_frame(&seg.codes[base + (frames - 1) * n..base + frames * n]);
            if flow.is_break() {
                fed = false;
                break StopReason::Stopped;
            }
            if frames == opts.max_frames {
                fed = false;
                break StopReason::MaxFrames;
            }
            self.engine
                .feed_frame(&csm, &seg.codes[base + (frames - 1) * n..])?;
        };
        if !fed {
            self.engine
                .feed_frame(&csm, &seg.codes[base + (frames - 1) * n..])?;
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

#[cfg(test)]
#[path = "codebooks_tests.rs"]
mod codebooks_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csm::llama::tests::{llama_tensors, rand_vec, tiny_cfg, write_safetensors};
    use crate::csm::model::CsmDims;
    use crate::csm::sampling::SamplingParams;
    use crate::weights::Weights;
    use std::collections::BTreeMap;

    const N: usize = 3;
    pub(super) const V: usize = 11;
    pub(super) const TV: usize = 50;
    pub(super) const AUDIO: u32 = 40;
    pub(super) const AUDIO_EOS: u32 = 41;

    /// A random tiny CSM (no codec) with `max_positions` backbone positions.
    fn tiny(max_positions: usize) -> (Arc<Csm>, tempfile::TempDir) {
        let (csm, dir) = tiny_with(max_positions, N, |_| {});
        (Arc::new(csm), dir)
    }

    /// The tensors of a random tiny CSM (name -> (shape, values)).
    pub(super) type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

    /// A random tiny CSM (no codec) of `n` codebooks with `max_positions` backbone positions,
    /// its tensors changed by `edit` before they are written; not yet shared, so
    /// [`Csm::set_codebooks`] can still be called.
    pub(super) fn tiny_with(
        max_positions: usize,
        n: usize,
        edit: impl FnOnce(&mut Tensors),
    ) -> (Csm, tempfile::TempDir) {
        let mut backbone = tiny_cfg();
        backbone.max_positions = max_positions;
        let mut depth = tiny_cfg();
        depth.hidden_size = 16;
        depth.head_dim = 4;
        depth.intermediate_size = 24;
        depth.max_positions = n + 1;
        let h = backbone.hidden_size;
        let mut t = BTreeMap::new();
        llama_tensors(&backbone, "backbone_model.", 1, &mut t);
        llama_tensors(&depth, "depth_decoder.model.", 100, &mut t);
        let mut add = |name: &str, shape: Vec<usize>, seed: u64, scale: f32| {
            let n = shape.iter().product();
            t.insert(name.to_string(), (shape, rand_vec(n, seed, scale)));
        };
        add("embed_text_tokens.weight", vec![TV, h], 200, 1.0);
        add(
            "depth_decoder.model.embed_tokens.weight",
            vec![n * V, h],
            201,
            1.0,
        );
        add("lm_head.weight", vec![V, h], 202, 1.0);
        add(
            "depth_decoder.model.inputs_embeds_projector.weight",
            vec![depth.hidden_size, h],
            203,
            0.4,
        );
        add(
            "depth_decoder.codebooks_head.weight",
            vec![n - 1, depth.hidden_size, V],
            204,
            1.0,
        );
        edit(&mut t);
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(dir.path(), &t);
        let dims = CsmDims {
            backbone,
            depth,
            num_codebooks: n,
            audio_vocab: V,
            text_vocab: TV,
            audio_token_id: AUDIO,
            audio_eos_token_id: AUDIO_EOS,
            codebook_eos_token_id: 0,
        };
        let w = Weights::open(dir.path()).unwrap();
        (Csm::from_weights(dims, &w, None).unwrap(), dir)
    }

    /// A turn: `text` ids, then `frames` audio frames and the audio-eos placeholder.
    fn seg(label: &str, text: &[u32], frames: usize, seed: u32) -> Segment {
        let mut ids = text.to_vec();
        ids.extend(std::iter::repeat_n(AUDIO, frames));
        ids.push(AUDIO_EOS);
        let codes = (0..frames * N)
            .map(|i| (i as u32 * 7 + seed) % (V as u32 - 1) + 1)
            .collect();
        Segment::new(label, ids, codes)
    }

    fn concat(a: &Segment, b: &Segment) -> Segment {
        let mut s = a.clone();
        s.ids.extend_from_slice(&b.ids);
        s.codes.extend_from_slice(&b.codes);
        s
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    #[test]
    fn a_second_turn_prefills_only_itself_and_matches_a_whole_prefill() {
        let (csm, _dir) = tiny(40);
        let a = seg("a", &[1, 2, 3], 4, 1);
        let b = seg("b", &[4, 5], 6, 2);
        for chunk in [1, 3, 64] {
            let mut conv = Conversation::with_prefill_chunk(csm.clone(), chunk);
            let r = conv.add_segment(a.clone()).unwrap();
            assert_eq!(r.prefilled_positions, a.positions());
            let (r, lb) = conv.add_segment_with_logits(b.clone()).unwrap();
            assert_eq!(r.prefilled_positions, b.positions());
            assert!(r.evicted.is_empty() && r.reprefilled_positions == 0);
            assert_eq!(conv.positions(), a.positions() + b.positions());
            let mut fresh = Conversation::with_prefill_chunk(csm.clone(), 5);
            let (_, l) = fresh.add_segment_with_logits(concat(&a, &b)).unwrap();
            let tail = &l[a.positions() * V..];
            let e = max_err(&lb, tail);
            assert!(e < 1e-5, "chunk {chunk}: {e}");
        }
    }

    #[test]
    fn full_context_evicts_oldest_whole_segments() {
        let (csm, _dir) = tiny(40);
        let (a, b, c) = (
            seg("a", &[1, 2], 10, 1),
            seg("b", &[3], 12, 2),
            seg("c", &[4], 14, 3),
        );
        assert_eq!((a.positions(), b.positions(), c.positions()), (13, 14, 16));
        let mut conv = Conversation::with_prefill_chunk(csm.clone(), 4);
        conv.add_segment(a.clone()).unwrap();
        conv.add_segment(b.clone()).unwrap();
        let (r, lc) = conv.add_segment_with_logits(c.clone()).unwrap();
        assert_eq!(r.evicted, vec!["a".to_string()]);
        assert_eq!(r.evicted_positions, 13);
        assert_eq!(r.reprefilled_positions, 14);
        assert!(r.eviction_message().unwrap().contains("a"));
        assert_eq!(conv.positions(), 30);
        let labels: Vec<&str> = conv.segments().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["b", "c"]);
        let mut fresh = Conversation::new(csm.clone());
        let (_, l) = fresh.add_segment_with_logits(concat(&b, &c)).unwrap();
        assert!(max_err(&lc, &l[b.positions() * V..]) < 1e-5);
        // a segment larger than the whole context is refused, history intact
        let huge = seg("huge", &[1], 40, 4);
        assert!(conv.add_segment(huge).is_err());
        assert_eq!(conv.positions(), 30);
    }

    #[test]
    fn bad_segments_are_errors_and_leave_the_context_intact() {
        let (csm, _dir) = tiny(40);
        let mut conv = Conversation::new(csm.clone());
        conv.add_segment(seg("a", &[1, 2], 3, 1)).unwrap();
        let before = conv.positions();
        let mut s = seg("b", &[3], 2, 1);
        s.codes.pop();
        let e = conv.add_segment(s).unwrap_err().to_string();
        assert!(e.contains("audio placeholders"), "{e}");
        let mut s = seg("b", &[3], 2, 1);
        s.codes[1] = V as u32;
        assert!(conv.add_segment(s).is_err());
        let s = seg("b", &[TV as u32], 2, 1);
        assert!(conv.add_segment(s).is_err());
        assert_eq!(conv.positions(), before);
        assert_eq!(conv.segments().count(), 1);
    }

    #[test]
    fn generation_streams_frames_and_commits_the_turn() {
        let (csm, _dir) = tiny(60);
        let ctx = seg("ctx", &[1, 2, 3], 5, 1);
        // a prompt holding audio of its own: generated frames come after its codes
        let prompt = Segment::new("p", vec![7, AUDIO, AUDIO, 8, 9], vec![1, 2, 3, 4, 5, 6]);
        let mut opts = GenerateOptions::sampled(6, 1234);
        opts.invalid_codes = InvalidCodes::Keep;
        let run = |opts: &GenerateOptions| {
            let mut conv = Conversation::with_prefill_chunk(csm.clone(), 4);
            conv.add_segment(ctx.clone()).unwrap();
            let mut frames = Vec::new();
            let g = conv
                .generate(prompt.clone(), opts, |f| {
                    frames.extend_from_slice(f);
                    ControlFlow::Continue(())
                })
                .unwrap();
            (conv, g, frames)
        };
        let (mut conv, g, frames) = run(&opts);
        assert_eq!(frames.len(), g.frames * N);
        assert!(g.frames >= 1);
        // reproducible with the same seed
        let (_, g2, frames2) = run(&opts);
        assert_eq!((g2.frames, &frames2), (g.frames, &frames));
        // the committed turn is the prompt, one placeholder per frame and the audio-eos
        let turn = conv.segments().last().unwrap().clone();
        let mut want_ids = prompt.ids.clone();
        want_ids.extend(std::iter::repeat_n(AUDIO, g.frames));
        want_ids.push(AUDIO_EOS);
        assert_eq!(turn.ids, want_ids);
        assert_eq!(turn.codes[..6], prompt.codes);
        assert_eq!(turn.codes[6..], frames);
        assert_eq!(conv.positions(), ctx.positions() + turn.positions());
        // the kept cache equals a from-scratch prefill of the history
        let next = seg("next", &[4, 5], 2, 3);
        let (_, l) = conv.add_segment_with_logits(next.clone()).unwrap();
        let mut fresh = Conversation::new(csm.clone());
        let (_, lf) = fresh
            .add_segment_with_logits(concat(&concat(&ctx, &turn), &next))
            .unwrap();
        let off = (ctx.positions() + turn.positions()) * V;
        assert!(max_err(&l, &lf[off..]) < 1e-5);
        // greedy frames: codebook 0 is the argmax of the step's logits
        let mut conv = Conversation::new(csm.clone());
        let mut frames = Vec::new();
        let mut g_opts = GenerateOptions::greedy(3);
        g_opts.invalid_codes = InvalidCodes::Keep;
        let first = prompt.clone();
        let (_, lp) = Conversation::new(csm.clone())
            .add_segment_with_logits(first.clone())
            .unwrap();
        let last = &lp[(first.positions() - 1) * V..];
        conv.generate(first, &g_opts, |f| {
            frames.extend_from_slice(f);
            ControlFlow::Break(())
        })
        .map(|g| assert_eq!(g.stop, StopReason::Stopped))
        .unwrap();
        assert_eq!(frames.len(), N);
        assert_eq!(frames[0] as usize, crate::csm::sampling::argmax(last));
        let _ = SamplingParams::GREEDY;
    }

    #[test]
    fn generation_needs_room_and_a_prompt() {
        let (csm, _dir) = tiny(40);
        let mut conv = Conversation::new(csm.clone());
        let opts = GenerateOptions::greedy(50);
        let e = conv
            .generate(Segment::new("p", vec![1, 2], vec![]), &opts, |_| {
                ControlFlow::Continue(())
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than the model's 40"), "{e}");
        let e = conv
            .generate(Segment::default(), &GenerateOptions::greedy(2), |_| {
                ControlFlow::Continue(())
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing to continue"), "{e}");
        // room is made by evicting old turns
        conv.add_segment(seg("old", &[1], 20, 1)).unwrap();
        let mut opts = GenerateOptions::greedy(30);
        opts.invalid_codes = InvalidCodes::Keep;
        let g = conv
            .generate(Segment::new("p", vec![1, 2], vec![]), &opts, |_| {
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(g.context.evicted, vec!["old".to_string()]);
    }

    #[test]
    fn many_segments_are_evicted_in_one_go() {
        let (csm, _dir) = tiny(40);
        let mut conv = Conversation::with_prefill_chunk(csm.clone(), 8);
        conv.add_segment(seg("old", &[1], 2, 1)).unwrap();
        // 10 000 turns of 4 positions each; room for 40 - 10 = 30: the newest 7 turns
        let many: Vec<Segment> = (0..10_000)
            .map(|i| seg(&format!("t{i}"), &[1 + i as u32 % 30], 2, i as u32))
            .collect();
        assert!(many.iter().all(|s| s.positions() == 4));
        let r = conv.add_segments(many.clone(), 10).unwrap();
        assert_eq!(r.evicted.len(), 1 + 10_000 - 7);
        assert_eq!(r.evicted[0], "old");
        assert_eq!(r.reprefilled_positions, 0);
        assert_eq!(r.prefilled_positions, 28);
        assert_eq!(conv.positions(), 28);
        let labels: Vec<&str> = conv.segments().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "t9993", "t9994", "t9995", "t9996", "t9997", "t9998", "t9999"
            ]
        );
        let msg = r.eviction_message().unwrap();
        assert!(msg.contains("(9990 more)") && msg.len() < 300, "{msg}");
        // the cache equals a prefill of the kept turns from scratch
        let next = seg("next", &[3], 1, 1);
        let (_, l) = conv.add_segment_with_logits(next.clone()).unwrap();
        let mut whole = many[9993].clone();
        for s in &many[9994..] {
            whole = concat(&whole, s);
        }
        let mut fresh = Conversation::new(csm.clone());
        let (_, lf) = fresh
            .add_segment_with_logits(concat(&whole, &next))
            .unwrap();
        assert!(max_err(&l, &lf[whole.positions() * V..]) < 1e-5);

        // old turns kept when the new ones fit beside them; nothing prefilled twice
        let mut conv = Conversation::new(csm.clone());
        conv.add_segment(seg("a", &[1], 2, 1)).unwrap();
        let r = conv.add_segments(many[..2].to_vec(), 20).unwrap();
        assert!(r.evicted.is_empty() && r.reprefilled_positions == 0);
        assert_eq!((r.prefilled_positions, conv.positions()), (8, 12));
        // dropping old turns re-prefills the kept old ones once
        let r = conv.add_segments(many[2..4].to_vec(), 28).unwrap();
        assert_eq!(r.evicted, ["a", "t0"]);
        assert_eq!((r.reprefilled_positions, r.prefilled_positions), (4, 8));
        assert_eq!(conv.positions(), 12);
        // a bad turn changes nothing; a reserve beyond the model is an error
        let mut bad = many[..3].to_vec();
        bad[1].codes.pop();
        assert!(conv.add_segments(bad, 0).is_err());
        assert!(conv.add_segments(vec![], 41).is_err());
        assert_eq!(conv.positions(), 12);
    }
}
