//! Streaming encode and decode, one 80 ms frame per call, over the pipelines
//! (`pipeline`) that batch calls share.
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

use super::model::Mimi;
use super::pipeline::{DecoderCore, EncoderCore};
use super::rvq::RvqScratch;
use crate::{Error, Result};
use std::sync::Arc;

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
        mimi.rvq().check_n_q(n_q)?;
        let core = EncoderCore::new(Arc::clone(mimi.encoder()?), 1, position);
        let rvq = mimi.rvq().scratch(1, mimi.pool().threads());
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
        self.core.position()
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
        let lat = self.core.run(mimi.kernels(), mimi.pool(), pcm, None);
        mimi.rvq()
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
        let dec = Arc::clone(mimi.decoder()?);
        let core = DecoderCore::new(dec, mimi.rvq(), mimi.pool().threads(), 1, position);
        Ok(MimiDecoderStream { mimi, core })
    }

    pub fn frame_size(&self) -> usize {
        self.mimi.frame_size()
    }

    /// The transformer position of the next step (two steps per frame).
    pub fn position(&self) -> u64 {
        self.core.position()
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
        let (k, pool, rvq) = (mimi.kernels(), &**mimi.pool(), mimi.rvq());
        let out = self
            .core
            .run(k, pool, rvq, codes.len(), |q, _| codes[q], 1, None);
        pcm.copy_from_slice(out);
        Ok(())
    }

    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.core.reset();
    }
}
