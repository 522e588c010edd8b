//! Streaming encode and decode, one 80 ms frame per call, and the chunk pipelines that batch
//! calls share with them.
//!
//! [`MimiEncoderStream`]: `frame_size` samples in -> one code per codebook out.
//! [`MimiDecoderStream`]: one code per codebook in -> `frame_size` samples out.
//! Every buffer (conv histories, transposed-conv overlap tails, KV rings, activations, RVQ
//! scratch) is sized at construction; a frame allocates nothing. Transformer positions are
//! `u64` and continue across frames (RoPE angles are computed per chunk, no table), so a stream
//! can run indefinitely; the attention only ever sees the last `sliding_window` steps.
//!
//! The streaming decoder carries the transposed convs' overlap tails from frame to frame, so
//! its output equals one-shot decoding of the whole code sequence (the reference has no
//! streaming decoder; its chunk-by-chunk decode drops those tails).

use super::conv::{ConvState, ConvTransposeState};
use super::model::{DecodeTrace, EncodeTrace, Mimi};
use super::rvq::RvqScratch;
use super::seanet::{SeanetDecoderState, SeanetEncoderState};
use super::transformer::TransformerState;
use crate::kernels::conv::ConvScratch;
use crate::{Error, Result};
use std::sync::Arc;

/// Encoder pipeline state for chunks of up to `max_frames` frames: SEANet -> transformer ->
/// downsample, producing latents `[frames, hidden]`.
#[derive(Debug)]
pub(crate) struct EncoderCore {
    seanet: SeanetEncoderState,
    tr: TransformerState,
    down: ConvState,
    scratch: ConvScratch,
    lat: Vec<f32>,
    max_samples: usize,
}

impl EncoderCore {
    pub(crate) fn new(mimi: &Mimi, max_frames: usize, start_pos: u64) -> Result<Self> {
        let enc = mimi.encoder()?;
        let max_samples = max_frames * mimi.frame_size();
        let steps = enc.seanet.out_len(max_samples);
        let mut scratch = ConvScratch::new();
        let down = enc.downsample.state(steps, &mut scratch);
        Ok(EncoderCore {
            seanet: enc.seanet.state(max_samples),
            tr: enc.transformer.state(steps, start_pos),
            down,
            scratch,
            lat: vec![0.0; enc.downsample.out_len(steps) * mimi.config().hidden_size],
            max_samples,
        })
    }

    /// Runs `pcm` (at most `max_frames` frames; a partial frame only at the end of a signal)
    /// and returns its latents.
    pub(crate) fn run(
        &mut self,
        mimi: &Mimi,
        pcm: &[f32],
        mut trace: Option<&mut EncodeTrace>,
    ) -> &[f32] {
        let enc = mimi
            .enc
            .as_ref()
            .expect("EncoderCore exists only with an encoder");
        let (k, pool) = (mimi.kernels(), &**mimi.pool());
        assert!(pcm.len() <= self.max_samples, "encoder chunk too long");
        let x = enc.seanet.forward(k, pool, &mut self.seanet, pcm);
        if let Some(t) = trace.as_deref_mut() {
            t.seanet_out.extend_from_slice(x);
        }
        enc.transformer.forward(k, pool, &mut self.tr, x);
        if let Some(t) = trace {
            t.transformer_out.extend_from_slice(x);
        }
        let h = mimi.config().hidden_size;
        let n =
            enc.downsample
                .forward(k, pool, &mut self.down, x, &mut self.lat, &mut self.scratch);
        &self.lat[..n * h]
    }

    fn reset(&mut self) {
        self.seanet.reset();
        self.tr.reset();
        self.down.reset();
    }
}

/// Decoder pipeline state for chunks of up to `max_frames` frames: RVQ decode -> upsample ->
/// transformer -> SEANet decoder.
#[derive(Debug)]
pub(crate) struct DecoderCore {
    rvq: RvqScratch,
    quant: Vec<f32>,
    up_state: ConvTransposeState,
    up: Vec<f32>,
    scratch: ConvScratch,
    tr: TransformerState,
    seanet: SeanetDecoderState,
    max_frames: usize,
}

impl DecoderCore {
    pub(crate) fn new(mimi: &Mimi, max_frames: usize, start_pos: u64) -> Result<Self> {
        let dec = mimi.decoder()?;
        let h = mimi.config().hidden_size;
        let mut scratch = ConvScratch::new();
        let up_state = dec.upsample.state(max_frames, &mut scratch);
        let steps = dec.upsample.out_len(max_frames);
        Ok(DecoderCore {
            rvq: mimi.rvq.scratch(max_frames, mimi.pool().threads()),
            quant: vec![0.0; max_frames * h],
            up_state,
            up: vec![0.0; dec.upsample.work_len(max_frames) * h],
            scratch,
            tr: dec.transformer.state(steps, start_pos),
            seanet: dec.seanet.state(steps),
            max_frames,
        })
    }

    /// Decodes `nf` frames (`code(q, f)`, `n_rows` codebooks, all checked) into samples.
    pub(crate) fn run(
        &mut self,
        mimi: &Mimi,
        n_rows: usize,
        code: impl Fn(usize, usize) -> u32,
        nf: usize,
        mut trace: Option<&mut DecodeTrace>,
    ) -> &[f32] {
        let dec = mimi
            .dec
            .as_ref()
            .expect("DecoderCore exists only with a decoder");
        let (k, pool) = (mimi.kernels(), &**mimi.pool());
        assert!(nf <= self.max_frames, "decoder chunk too long");
        let h = mimi.config().hidden_size;
        let q = &mut self.quant[..nf * h];
        mimi.rvq.decode(k, pool, n_rows, code, nf, q, &mut self.rvq);
        if let Some(t) = trace.as_deref_mut() {
            t.quantized.extend_from_slice(q);
        }
        let steps = dec.upsample.forward(
            k,
            pool,
            &mut self.up_state,
            q,
            &mut self.up,
            &mut self.scratch,
        );
        let x = &mut self.up[..steps * h];
        if let Some(t) = trace.as_deref_mut() {
            t.upsampled.extend_from_slice(x);
        }
        dec.transformer.forward(k, pool, &mut self.tr, x);
        if let Some(t) = trace {
            t.transformer_out.extend_from_slice(x);
        }
        dec.seanet.forward(k, pool, &mut self.seanet, x)
    }

    fn reset(&mut self) {
        self.up_state.reset();
        self.tr.reset();
        self.seanet.reset();
    }
}

/// Streaming encoder: one frame of samples in, one code per codebook out.
#[derive(Debug)]
pub struct MimiEncoderStream {
    mimi: Arc<Mimi>,
    core: EncoderCore,
    rvq: RvqScratch,
    n_q: usize,
}

impl MimiEncoderStream {
    /// A stream producing `n_q` codebooks per frame (`num_semantic <= n_q <= num_quantizers`).
    pub fn new(mimi: Arc<Mimi>, n_q: usize) -> Result<Self> {
        Self::starting_at(mimi, n_q, 0)
    }

    /// As [`MimiEncoderStream::new`] with the transformer's first position at `position`
    /// (RoPE is relative, so the codes do not depend on it; tests use it to fast-forward).
    pub fn starting_at(mimi: Arc<Mimi>, n_q: usize, position: u64) -> Result<Self> {
        mimi.rvq.check_n_q(n_q)?;
        let core = EncoderCore::new(&mimi, 1, position)?;
        let rvq = mimi.rvq.scratch(1, mimi.pool().threads());
        Ok(MimiEncoderStream {
            mimi,
            core,
            rvq,
            n_q,
        })
    }

    pub fn frame_size(&self) -> usize {
        self.mimi.frame_size()
    }

    pub fn num_codebooks(&self) -> usize {
        self.n_q
    }

    /// The transformer position of the next step (two steps per frame).
    pub fn position(&self) -> u64 {
        self.core.tr.position()
    }

    /// Encodes one frame: `pcm` is `frame_size` samples, `codes` receives `n_q` codes.
    pub fn encode_frame(&mut self, pcm: &[f32], codes: &mut [u32]) -> Result<()> {
        let frame = self.mimi.frame_size();
        if pcm.len() != frame {
            return Err(Error::Invalid(format!(
                "encoder stream: a frame is {frame} samples, got {}",
                pcm.len()
            )));
        }
        if codes.len() != self.n_q {
            return Err(Error::Invalid(format!(
                "encoder stream: codes buffer holds {}, the stream makes {} codes per frame",
                codes.len(),
                self.n_q
            )));
        }
        let mimi = &*self.mimi;
        let lat = self.core.run(mimi, pcm, None);
        mimi.rvq
            .encode_frame(mimi.kernels(), mimi.pool(), lat, codes, &mut self.rvq);
        Ok(())
    }

    /// Back to the start of a stream (position 0 or the `starting_at` position).
    pub fn reset(&mut self) {
        self.core.reset();
    }
}

/// Streaming decoder: one code per codebook in, one frame of samples out.
#[derive(Debug)]
pub struct MimiDecoderStream {
    mimi: Arc<Mimi>,
    core: DecoderCore,
}

impl MimiDecoderStream {
    pub fn new(mimi: Arc<Mimi>) -> Result<Self> {
        Self::starting_at(mimi, 0)
    }

    /// As [`MimiDecoderStream::new`] with the transformer's first position at `position`.
    pub fn starting_at(mimi: Arc<Mimi>, position: u64) -> Result<Self> {
        let core = DecoderCore::new(&mimi, 1, position)?;
        Ok(MimiDecoderStream { mimi, core })
    }

    pub fn frame_size(&self) -> usize {
        self.mimi.frame_size()
    }

    /// The transformer position of the next step (two steps per frame).
    pub fn position(&self) -> u64 {
        self.core.tr.position()
    }

    /// Decodes one frame: `codes` holds one code for each of the first `codes.len()`
    /// codebooks (1 to `num_quantizers`), `pcm` receives `frame_size` samples.
    pub fn decode_frame(&mut self, codes: &[u32], pcm: &mut [f32]) -> Result<()> {
        let mimi = &*self.mimi;
        let (nq, size, frame) = (
            mimi.num_quantizers(),
            mimi.codebook_size(),
            mimi.frame_size(),
        );
        if codes.is_empty() || codes.len() > nq {
            return Err(Error::Invalid(format!(
                "decoder stream: {} codes per frame, this codec decodes 1 to {nq}",
                codes.len()
            )));
        }
        if let Some((q, c)) = codes.iter().enumerate().find(|(_, c)| **c as usize >= size) {
            return Err(Error::Invalid(format!(
                "decoder stream: code {c} of codebook {q} is out of range (codebook size {size})"
            )));
        }
        if pcm.len() != frame {
            return Err(Error::Invalid(format!(
                "decoder stream: a frame is {frame} samples, the output buffer holds {}",
                pcm.len()
            )));
        }
        let out = self.core.run(mimi, codes.len(), |q, _| codes[q], 1, None);
        pcm.copy_from_slice(out);
        Ok(())
    }

    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.core.reset();
    }
}
