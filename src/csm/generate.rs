//! The per-frame machinery: feeding token rows to the backbone (prefill in chunks, or one
//! audio frame), and producing the next frame (backbone hidden -> codebook-0 head -> sample c0
//! -> depth decoder -> c1..cN-1).
//!
//! Input sequences use the upstream layout: text ids, with `audio_token_id` placeholders each
//! taking the next frame of the accompanying codes (frames-major, [`Csm::codebooks`] per
//! frame) and `audio_eos_token_id` placeholders embedding the all-`codebook_eos` frame (all
//! the model's codebooks, whatever the number in use: see [`super::model`]).
//!
//! End of speech follows the reference generator: a frame of N codebooks whose codebooks
//! `0..N-1` (all but the last) equal `codebook_eos_token_id` ends generation and is not kept.
//! With all the model's codebooks that is the reference's rule exactly; with fewer it is the
//! same rule over the codes generated. With one codebook (nothing but the backbone's code)
//! "all but the last" would be no code at all, so the frame ends speech when its one code is
//! `codebook_eos_token_id`: the backbone's own end-of-speech signal, as it is the first code
//! of the reference's end frame.
//!
//! [`FrameEngine`] is sized at construction; [`FrameEngine::next_frame`] and
//! [`FrameEngine::feed_frame`] allocate nothing.

use super::depth::DepthState;
use super::llama::LlamaState;
use super::model::Csm;
use super::sampling::{Sampler, SamplingParams};
use crate::kernels::QScratch;
use crate::kernels::matmul::matmul;
use crate::{Error, Result};
use std::time::Instant;

/// Backbone tokens per prefill chunk by default.
pub const DEFAULT_PREFILL_CHUNK: usize = 64;

/// What to do when a generated frame holds a code the codec cannot decode (at or above its
/// codebook size: csm-1b's extra ids 2048..2050, or anything a random model picks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidCodes {
    /// End generation before that frame ([`StopReason::InvalidCode`]).
    Stop,
    /// Fail with an error naming the code.
    Error,
    /// Keep the frame (the reference does; for parity runs that only compare codes).
    Keep,
    /// Never draw such a code: codebook 0 and the depth decoder sample only among the codes
    /// the codec can decode (the logits of the extra ids are ignored). Greedy results differ
    /// from the reference only where it would have produced an undecodable frame.
    Mask,
}

impl InvalidCodes {
    /// How many leading logits a sampler may draw from, for an audio vocabulary of `vocab`
    /// ids of which the codec decodes the first `decodable`.
    pub fn sample_limit(self, vocab: usize, decodable: usize) -> usize {
        match self {
            InvalidCodes::Mask => decodable.min(vocab),
            _ => vocab,
        }
    }
}

/// How to generate one turn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GenerateOptions {
    /// At most this many frames (80 ms each in csm-1b).
    pub max_frames: usize,
    /// Sampling of codebook 0 (backbone).
    pub backbone: SamplingParams,
    /// Sampling of codebooks 1.. (depth decoder).
    pub depth: SamplingParams,
    /// The RNG is reseeded with this at the start of the turn.
    pub seed: u64,
    pub invalid_codes: InvalidCodes,
}

impl GenerateOptions {
    /// Greedy decoding of up to `max_frames` frames (invalid codes stop generation).
    pub fn greedy(max_frames: usize) -> Self {
        GenerateOptions {
            max_frames,
            backbone: SamplingParams::GREEDY,
            depth: SamplingParams::GREEDY,
            seed: 0,
            invalid_codes: InvalidCodes::Stop,
        }
    }

    /// The original generator's sampling (temperature 0.9, top-k 50) with `seed`.
    pub fn sampled(max_frames: usize, seed: u64) -> Self {
        GenerateOptions {
            max_frames,
            backbone: SamplingParams::CSM_DEFAULT,
            depth: SamplingParams::CSM_DEFAULT,
            seed,
            invalid_codes: InvalidCodes::Stop,
        }
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced the end-of-speech frame.
    EndOfSpeech,
    /// `max_frames` frames were produced.
    MaxFrames,
    /// A frame held `code` (codebook `codebook`), which the codec cannot decode.
    InvalidCode { codebook: usize, code: u32 },
    /// The frame callback asked to stop.
    Stopped,
}

/// What a frame is, as [`FrameEngine::classify`] sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameKind {
    Speech,
    EndOfSpeech,
    Invalid { codebook: usize, code: u32 },
}

/// Where the time of generated frames went (nanoseconds, accumulated since the last
/// [`FrameEngine::reset_profile`]): a few clock reads per step, cheap next to the work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameProfile {
    /// Frames produced by [`FrameEngine::next_frame`].
    pub frames: u64,
    /// Backbone steps of one audio frame each ([`FrameEngine::feed_frame`]) and their time.
    pub backbone_steps: u64,
    pub backbone_ns: u64,
    /// Prompt positions prefilled and their time (backbone only).
    pub prefill_tokens: u64,
    pub prefill_ns: u64,
    /// The codebook-0 head.
    pub head0_ns: u64,
    /// Depth-decoder steps (one per codebook after codebook 0: N-1 per frame of N codebooks).
    pub depth_steps: u64,
    /// Depth-decoder passes (input projection + stack), all codebooks.
    pub depth_ns: u64,
    /// Depth-decoder codebook heads.
    pub depth_heads_ns: u64,
    /// Sampling (codebook 0 and the depth codebooks).
    pub sampling_ns: u64,
}

impl FrameProfile {
    /// Time of the frame work proper (backbone step, heads, depth decoder, sampling).
    pub fn frame_ns(&self) -> u64 {
        self.backbone_ns + self.head0_ns + self.depth_ns + self.depth_heads_ns + self.sampling_ns
    }
}

pub(crate) fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos() as u64
}

/// Backbone and depth-decoder state plus every buffer a frame needs (see the module docs).
#[derive(Debug)]
pub struct FrameEngine {
    pub(crate) backbone: LlamaState,
    depth: DepthState,
    /// Last backbone hidden state (after the final norm).
    hidden: Vec<f32>,
    has_hidden: bool,
    logits: Vec<f32>,
    tmp: Vec<f32>,
    eos_frame: Vec<u32>,
    frame: Vec<u32>,
    sampler: Sampler,
    qs: QScratch,
    profile: FrameProfile,
}

/// An error when a codebook's logits hold a NaN or an infinity: the weights (or what was fed
/// in) are not finite, and sampling from them would be meaningless.
pub(crate) fn check_logits(logits: &[f32], codebook: usize) -> Result<()> {
    match logits.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::Invalid(format!(
            "the model produced a non-finite logit ({} for code {i} of codebook {codebook}): \
             its weights hold NaN or infinite values (a corrupt or badly converted checkpoint?)",
            logits[i]
        ))),
    }
}

impl FrameEngine {
    /// State for `csm` with backbone prefill chunks of `prefill_chunk` tokens.
    pub fn new(csm: &Csm, prefill_chunk: usize) -> FrameEngine {
        let d = csm.dims();
        let h = d.backbone.hidden_size;
        FrameEngine {
            backbone: LlamaState::new(&csm.backbone, prefill_chunk),
            depth: DepthState::new(&csm.depth),
            hidden: vec![0.0; h],
            has_hidden: false,
            logits: vec![0.0; d.audio_vocab],
            tmp: vec![0.0; h],
            eos_frame: vec![d.codebook_eos_token_id; d.num_codebooks],
            // sized for all the model's codebooks: fewer in use only use a prefix
            frame: vec![0; d.num_codebooks],
            sampler: Sampler::new(0, d.audio_vocab),
            qs: QScratch::new(prefill_chunk.max(1), h),
            profile: FrameProfile::default(),
        }
    }

    /// Where the time of the frames so far went.
    pub fn profile(&self) -> &FrameProfile {
        &self.profile
    }

    pub fn reset_profile(&mut self) {
        self.profile = FrameProfile::default();
    }

    /// Forgets every position.
    pub fn reset(&mut self) {
        self.backbone.reset();
        self.has_hidden = false;
    }

    /// Positions held by the backbone.
    pub fn positions(&self) -> usize {
        self.backbone.len()
    }

    pub fn reseed(&mut self, seed: u64) {
        self.sampler.reseed(seed);
    }

    /// The backbone's last hidden state, if any position has been run.
    pub fn last_hidden(&self) -> Option<&[f32]> {
        self.has_hidden.then_some(&self.hidden[..])
    }

    /// Checks that `ids`/`codes` form a valid input (see the module docs) without running
    /// anything; returns the number of positions.
    pub fn check_input(csm: &Csm, ids: &[u32], codes: &[u32]) -> Result<usize> {
        let d = csm.dims();
        let n = csm.codebooks();
        let audio = ids.iter().filter(|&&i| i == d.audio_token_id).count();
        if codes.len() != audio * n {
            return Err(Error::Invalid(format!(
                "the input has {audio} audio placeholders (id {}) but {} codes were given \
                 ({} frames of {n})",
                d.audio_token_id,
                codes.len(),
                codes.len() as f64 / n as f64
            )));
        }
        for &id in ids {
            if id != d.audio_token_id && id != d.audio_eos_token_id && id as usize >= d.text_vocab {
                return Err(Error::Invalid(format!(
                    "text token id {id} is outside the text vocabulary ({} ids)",
                    d.text_vocab
                )));
            }
        }
        if let Some((i, &c)) = codes
            .iter()
            .enumerate()
            .find(|&(_, &c)| c as usize >= d.audio_vocab)
        {
            return Err(Error::Invalid(format!(
                "audio code {c} (frame {}, codebook {}) is outside the model's vocabulary of {} ids",
                i / n,
                i % n,
                d.audio_vocab
            )));
        }
        Ok(ids.len())
    }

    /// Runs `ids` (with `codes` filling the audio placeholders) through the backbone at the
    /// next positions, in chunks. With `logits` given, the codebook-0 logits of every position
    /// are appended to it (`[ids.len(), audio_vocab]`); with `hidden` given, the final hidden
    /// states (`[ids.len(), hidden]`). The input is checked before anything runs.
    pub fn prefill(
        &mut self,
        csm: &Csm,
        ids: &[u32],
        codes: &[u32],
        mut logits: Option<&mut Vec<f32>>,
        mut hidden: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        Self::check_input(csm, ids, codes)?;
        if ids.len() > self.backbone.remaining() {
            return Err(Error::Invalid(format!(
                "{} positions do not fit: the backbone holds {} of {}",
                ids.len(),
                self.backbone.len(),
                csm.dims().backbone.max_positions
            )));
        }
        let d = csm.dims();
        let (h, n, v) = (d.backbone.hidden_size, csm.codebooks(), d.audio_vocab);
        let (k, pool) = (csm.kernels(), csm.pool());
        let mut frames = codes.chunks_exact(n);
        for chunk in ids.chunks(self.backbone.max_chunk()) {
            let rows = self.backbone.input_mut(chunk.len());
            for (&id, row) in chunk.iter().zip(rows.chunks_exact_mut(h)) {
                if id == d.audio_token_id {
                    let f = frames.next().expect("checked: one frame per placeholder");
                    csm.embed.frame_into(f, row, &mut self.tmp)?;
                } else if id == d.audio_eos_token_id {
                    csm.embed.frame_into(&self.eos_frame, row, &mut self.tmp)?;
                } else {
                    csm.embed.text_into(id, row)?;
                }
            }
            let t0 = Instant::now();
            let out = self.backbone.forward(&csm.backbone, k, pool, chunk.len())?;
            self.profile.prefill_ns += elapsed_ns(t0);
            self.profile.prefill_tokens += chunk.len() as u64;
            let t = chunk.len();
            self.hidden.copy_from_slice(&out[(t - 1) * h..t * h]);
            self.has_hidden = true;
            if let Some(hs) = hidden.as_deref_mut() {
                hs.extend_from_slice(out);
            }
            if let Some(l) = logits.as_deref_mut() {
                let start = l.len();
                l.resize(start + t * v, 0.0);
                let mut qs = QScratch::new(t, h);
                matmul(k, pool, &csm.lm_head.mat(), out, &mut l[start..], &mut qs);
            }
        }
        Ok(())
    }

    /// Runs one audio frame (the codes of its first 1 to `num_codebooks` codebooks, normally
    /// [`Csm::codebooks`]) through the backbone at the next position.
    pub fn feed_frame(&mut self, csm: &Csm, frame: &[u32]) -> Result<()> {
        let h = csm.dims().backbone.hidden_size;
        if self.backbone.remaining() == 0 {
            return Err(Error::Invalid(format!(
                "the backbone's {} positions are full",
                csm.dims().backbone.max_positions
            )));
        }
        let t0 = Instant::now();
        let row = &mut self.backbone.input_mut(1)[..h];
        csm.embed.frame_into(frame, row, &mut self.tmp)?;
        let out = self
            .backbone
            .forward(&csm.backbone, csm.kernels(), csm.pool(), 1)?;
        self.hidden.copy_from_slice(out);
        self.has_hidden = true;
        self.profile.backbone_ns += elapsed_ns(t0);
        self.profile.backbone_steps += 1;
        Ok(())
    }

    /// Runs the all-`codebook_eos` frame (what an `audio_eos` placeholder embeds).
    pub fn feed_eos_frame(&mut self, csm: &Csm) -> Result<()> {
        let eos = std::mem::take(&mut self.eos_frame);
        let r = self.feed_frame(csm, &eos);
        self.eos_frame = eos;
        r
    }

    /// Produces the frame that follows the current position, [`Csm::codebooks`] codes
    /// (nothing is fed back: see [`FrameEngine::feed_frame`]), drawing every code among the
    /// first `limit` ids (see [`InvalidCodes::sample_limit`]). Allocates nothing.
    pub fn next_frame(
        &mut self,
        csm: &Csm,
        limit: usize,
        backbone: &SamplingParams,
        depth: &SamplingParams,
    ) -> Result<&[u32]> {
        if !self.has_hidden {
            return Err(Error::Invalid(
                "nothing to continue: prefill a prompt before generating".into(),
            ));
        }
        let (k, pool) = (csm.kernels(), csm.pool());
        let t0 = Instant::now();
        matmul(
            k,
            pool,
            &csm.lm_head.mat(),
            &self.hidden,
            &mut self.logits,
            &mut self.qs,
        );
        let t1 = Instant::now();
        let limit = limit.clamp(1, self.logits.len());
        check_logits(&self.logits[..limit], 0)?;
        self.frame[0] = self.sampler.sample(&self.logits[..limit], backbone);
        self.profile.head0_ns += (t1 - t0).as_nanos() as u64;
        self.profile.sampling_ns += elapsed_ns(t1);
        self.profile.frames += 1;
        let frame = &mut self.frame[..csm.codebooks()];
        csm.depth.complete_frame(
            k,
            pool,
            &csm.embed,
            &mut self.depth,
            &self.hidden,
            frame,
            &mut self.sampler,
            depth,
            limit,
            &mut self.profile,
        )?;
        Ok(frame)
    }

    /// Depth-decoder teacher-forced logits for `frame` after the current last hidden state
    /// (`[num_codebooks - 1, audio_vocab]`, for parity tests).
    pub fn depth_logits(&mut self, csm: &Csm, hidden: &[f32], frame: &[u32]) -> Result<Vec<f32>> {
        csm.depth.teacher_forced_logits(
            csm.kernels(),
            csm.pool(),
            &csm.embed,
            &mut self.depth,
            hidden,
            frame,
        )
    }

    /// Whether `frame` (1 or more codes) is speech, the end-of-speech frame (see the module
    /// docs: all codes but the last are `codebook_eos`, or the only one for a frame of one
    /// codebook), or holds an undecodable code.
    pub(crate) fn classify(csm: &Csm, frame: &[u32]) -> FrameKind {
        let eos = csm.dims().codebook_eos_token_id;
        let judged = frame.len().saturating_sub(1).max(1);
        if frame[..judged].iter().all(|&c| c == eos) {
            return FrameKind::EndOfSpeech;
        }
        let limit = csm.decodable_limit();
        match frame.iter().enumerate().find(|&(_, &c)| c >= limit) {
            Some((codebook, &code)) => FrameKind::Invalid { codebook, code },
            None => FrameKind::Speech,
        }
    }
}
