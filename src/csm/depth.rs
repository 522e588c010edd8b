//! The depth decoder: a small Llama that, given the backbone's last hidden state and codebook
//! 0 of a frame, predicts codebooks 1..N-1 of that frame one after another.
//!
//! Its sequence per frame (the KV cache starts empty every frame): position 0 is the backbone
//! hidden state, position `p >= 1` is the embedding of code `c[p-1]` of codebook `p-1` (row
//! `(p-1) * vocab + c` of the shared audio table, `backbone_hidden` wide); every input goes
//! through `inputs_embeds_projector` (`[hidden, backbone_hidden]`). The hidden state at position
//! `p >= 1` gives the logits of codebook `p` through `codebooks_head[p-1]`.
//!
//! `codebooks_head.weight` is stored `[N-1, hidden, vocab]` upstream (the product is
//! `h @ W[i]`); the kernels read `[rows = vocab, cols = hidden]`. `edgecsm quantize` stores the
//! heads that way, packed ([`Layout::Transposed`]), so they are views of the memory map; an
//! upstream checkpoint's heads are transposed and packed at load time.

use super::embed::Embeddings;
use super::generate::{FrameProfile, elapsed_ns};
use super::llama::{Llama, LlamaConfig, LlamaState};
use super::sampling::{Sampler, SamplingParams};
use crate::kernels::matmul::matmul;
use crate::kernels::{Kernels, Pool, QScratch};
use crate::weights::{Layout, WeightMatrix, Weights};
use crate::{Error, Result};
use std::time::Instant;

pub const PREFIX: &str = "depth_decoder.model.";
pub const PROJECTOR: &str = "depth_decoder.model.inputs_embeds_projector.weight";
pub const CODEBOOKS_HEAD: &str = "depth_decoder.codebooks_head.weight";

/// Depth-decoder weights.
#[derive(Debug)]
pub struct DepthDecoder {
    llama: Llama,
    proj: WeightMatrix,
    /// `heads[i]`: `[vocab, hidden]`, the logits of codebook `i + 1`.
    heads: Vec<WeightMatrix>,
    num_codebooks: usize,
    vocab: usize,
    backbone_hidden: usize,
}

impl DepthDecoder {
    /// Loads the depth decoder from the root of a CSM checkpoint.
    pub fn load(
        w: &Weights,
        cfg: &LlamaConfig,
        backbone_hidden: usize,
        num_codebooks: usize,
        vocab: usize,
    ) -> Result<DepthDecoder> {
        if num_codebooks < 2 {
            return Err(Error::Invalid(format!(
                "CSM needs at least 2 codebooks, the config has {num_codebooks}"
            )));
        }
        if cfg.max_positions < num_codebooks {
            return Err(Error::Invalid(format!(
                "depth decoder max_position_embeddings ({}) is below num_codebooks ({num_codebooks})",
                cfg.max_positions
            )));
        }
        let llama = Llama::load(&w.with_prefix(PREFIX), cfg, "depth decoder")?;
        let h = cfg.hidden_size;
        let proj = w.linear(PROJECTOR, &[h, backbone_hidden])?;
        // upstream `[n - 1, hidden, vocab]` (applied as `h @ W[i]`): the kernels read each
        // head transposed, `[vocab, hidden]`
        let heads = w.packed_matrices(
            CODEBOOKS_HEAD,
            &[num_codebooks - 1, h, vocab],
            Layout::Transposed,
        )?;
        Ok(DepthDecoder {
            llama,
            proj,
            heads,
            num_codebooks,
            vocab,
            backbone_hidden,
        })
    }

    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    pub fn num_codebooks(&self) -> usize {
        self.num_codebooks
    }

    /// Bytes of weights one frame of `codebooks` codebooks (1 to `num_codebooks`) reads in
    /// the depth decoder's passes (`codebooks - 1` of the projector and the stack) and in its
    /// heads (one per pass).
    pub fn frame_weight_bytes(&self, codebooks: usize) -> (usize, usize) {
        let steps = codebooks.clamp(1, self.num_codebooks) - 1;
        let pass = self.llama.weight_bytes() + self.proj.mat().bytes();
        (
            steps * pass,
            self.heads[..steps]
                .iter()
                .map(|m| m.mat().bytes())
                .sum::<usize>(),
        )
    }

    /// The projector and the stack's matrices (one pass).
    pub fn pass_matrices(&self) -> impl Iterator<Item = &WeightMatrix> {
        std::iter::once(&self.proj).chain(self.llama.matrices())
    }

    /// The codebook heads, `heads[i]` giving codebook `i + 1`.
    pub fn heads(&self) -> &[WeightMatrix] {
        &self.heads
    }

    /// Projects input rows `inp` (`[n, backbone_hidden]`) and runs them at the next positions;
    /// returns the hidden states `[n, hidden]`.
    fn run<'s>(
        &self,
        k: &Kernels,
        pool: &Pool,
        llama: &'s mut LlamaState,
        inp: &[f32],
        qs: &mut QScratch,
        n: usize,
    ) -> Result<&'s [f32]> {
        let bh = self.backbone_hidden;
        matmul(
            k,
            pool,
            &self.proj.mat(),
            &inp[..n * bh],
            llama.input_mut(n),
            qs,
        );
        llama.forward(&self.llama, k, pool, n)
    }

    /// Completes `frame` (1 to `num_codebooks` codes, `frame[0]` = codebook 0 already chosen)
    /// with codebooks `1..frame.len()` drawn from `sampler` under `params`, given the
    /// backbone's last hidden state `hidden` (`backbone_hidden` long), each drawn among the
    /// first `limit` ids of the audio vocabulary: `frame.len() - 1` steps, none for a frame of
    /// one codebook. Allocates nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn complete_frame(
        &self,
        k: &Kernels,
        pool: &Pool,
        emb: &Embeddings,
        st: &mut DepthState,
        hidden: &[f32],
        frame: &mut [u32],
        sampler: &mut Sampler,
        params: &SamplingParams,
        limit: usize,
        profile: &mut FrameProfile,
    ) -> Result<()> {
        let (n, bh, h) = (
            frame.len(),
            self.backbone_hidden,
            self.llama.config().hidden_size,
        );
        check_len("backbone hidden state", hidden.len(), bh)?;
        if !(1..=self.num_codebooks).contains(&n) {
            return Err(Error::Invalid(format!(
                "depth decoder: a frame of {n} codebooks, the model has 1 to {}",
                self.num_codebooks
            )));
        }
        if n == 1 {
            return Ok(());
        }
        st.llama.reset();
        st.inp[..bh].copy_from_slice(hidden);
        emb.code_into(0, frame[0], &mut st.inp[bh..2 * bh])?;
        let mut rows = 2;
        for (cb, head) in (1..n).zip(&self.heads) {
            let t0 = Instant::now();
            let out = self.run(k, pool, &mut st.llama, &st.inp, &mut st.qs, rows)?;
            let last = &out[(rows - 1) * h..rows * h];
            let t1 = Instant::now();
            matmul(k, pool, &head.mat(), last, &mut st.logits, &mut st.qs);
            let t2 = Instant::now();
            let logits = &st.logits[..limit.clamp(1, st.logits.len())];
            super::generate::check_logits(logits, cb)?;
            let code = sampler.sample(logits, params);
            profile.depth_ns += (t1 - t0).as_nanos() as u64;
            profile.depth_heads_ns += (t2 - t1).as_nanos() as u64;
            profile.sampling_ns += elapsed_ns(t2);
            profile.depth_steps += 1;
            frame[cb] = code;
            if cb + 1 < n {
                emb.code_into(cb, code, &mut st.inp[..bh])?;
                rows = 1;
            }
        }
        Ok(())
    }

    /// Teacher-forced logits of codebooks 1..N-1 (`[N-1, vocab]`) for `frame` (its codes
    /// 0..N-2 are the inputs) after the backbone hidden state `hidden`: one pass over all N
    /// positions, as the reference computes them in training.
    pub fn teacher_forced_logits(
        &self,
        k: &Kernels,
        pool: &Pool,
        emb: &Embeddings,
        st: &mut DepthState,
        hidden: &[f32],
        frame: &[u32],
    ) -> Result<Vec<f32>> {
        let (n, bh, h, v) = (
            self.num_codebooks,
            self.backbone_hidden,
            self.llama.config().hidden_size,
            self.vocab,
        );
        check_len("backbone hidden state", hidden.len(), bh)?;
        check_len("frame", frame.len(), n)?;
        st.llama.reset();
        st.inp[..bh].copy_from_slice(hidden);
        for p in 1..n {
            emb.code_into(p - 1, frame[p - 1], &mut st.inp[p * bh..(p + 1) * bh])?;
        }
        let out = self
            .run(k, pool, &mut st.llama, &st.inp, &mut st.qs, n)?
            .to_vec();
        let mut logits = vec![0f32; (n - 1) * v];
        for p in 1..n {
            matmul(
                k,
                pool,
                &self.heads[p - 1].mat(),
                &out[p * h..(p + 1) * h],
                &mut logits[(p - 1) * v..p * v],
                &mut st.qs,
            );
        }
        Ok(logits)
    }
}

/// The mutable side of a [`DepthDecoder`].
#[derive(Debug)]
pub struct DepthState {
    llama: LlamaState,
    /// Input rows before projection, `[num_codebooks, backbone_hidden]`.
    inp: Vec<f32>,
    logits: Vec<f32>,
    qs: QScratch,
}

impl DepthState {
    pub fn new(d: &DepthDecoder) -> DepthState {
        let n = d.num_codebooks;
        let widest = d.backbone_hidden.max(d.llama.config().hidden_size);
        DepthState {
            llama: LlamaState::new(&d.llama, n),
            inp: vec![0.0; n * d.backbone_hidden],
            logits: vec![0.0; d.vocab],
            qs: QScratch::new(n, widest),
        }
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "depth decoder: {what} has {got} values, expected {want}"
        )))
    }
}
