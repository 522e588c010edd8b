//! A loaded CSM: backbone, depth decoder, embeddings, codebook-0 head and (optionally) the
//! Mimi codec stored under `codec_model.` in the same checkpoint.
//!
//! Every tensor is looked up by its transformers-format name and checked against the
//! dimensions in [`CsmDims`]; an error names the tensor at fault. The model itself is
//! immutable (share it with an `Arc`); conversations ([`super::context::Conversation`]) hold
//! the mutable state.
//!
//! # Fewer codebooks ([`Csm::set_codebooks`])
//! A model predicts `num_codebooks` codebooks per frame (32 in csm-1b); Mimi decodes any
//! prefix of them. With `codebooks` set to N, every frame the model generates or reads holds
//! the codes of codebooks `0..N`: the depth decoder runs N-1 steps instead of
//! `num_codebooks - 1`, an audio position of the backbone embeds the sum of its N codes, the
//! codec decodes N. The backbone was trained on frames of all codebooks, so N below the
//! model's count is an approximation (fewer weight bytes per frame, less acoustic detail);
//! the default is all of them, bit for bit today's behaviour.
//!
//! Context audio is truncated to the same N codebooks (the caller passes the first N of each
//! frame, e.g. Mimi encoding with N quantizers, which gives exactly the leading N codes of
//! a full encode): the model then sees its own generated turns and the voice it is given in
//! the same form, and a conversation holds one frame width. The `audio_eos` placeholder that
//! closes an audio segment keeps embedding the full all-`codebook_eos` frame: it is a fixed
//! marker, not audio, and no generated code takes part in it.
//!
//! Buffers stay sized for all the model's codebooks; N only shortens loops.

use super::config::{CsmConfig, TransformerConfig};
use super::depth::DepthDecoder;
use super::embed::Embeddings;
use super::llama::{Llama, LlamaConfig};
use crate::kernels::{Kernels, Pool};
use crate::mimi::{Mimi, MimiConfig};
use crate::weights::{WeightMatrix, Weights};
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

pub const BACKBONE_PREFIX: &str = "backbone_model.";
pub const LM_HEAD: &str = "lm_head.weight";
pub const CODEC_PREFIX: &str = "codec_model.";

/// The dimensions and special ids the runtime needs (filled from `config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct CsmDims {
    pub backbone: LlamaConfig,
    pub depth: LlamaConfig,
    pub num_codebooks: usize,
    /// Ids per codebook (`vocab_size`, 2051 for csm-1b: 2048 Mimi codes + 3 extra).
    pub audio_vocab: usize,
    pub text_vocab: usize,
    /// Text-stream placeholder for one audio frame (`<|AUDIO|>`).
    pub audio_token_id: u32,
    /// Text-stream placeholder for the all-`codebook_eos` frame that closes an audio segment.
    pub audio_eos_token_id: u32,
    /// The code that marks end of speech (0 in csm-1b).
    pub codebook_eos_token_id: u32,
}

impl CsmDims {
    /// The dimensions of a parsed `config.json`.
    pub fn from_config(c: &CsmConfig) -> Result<CsmDims> {
        let id = |name: &str, v: usize| {
            u32::try_from(v).map_err(|_| {
                Error::Invalid(format!("CSM config: {name} {v} does not fit in 32 bits"))
            })
        };
        Ok(CsmDims {
            backbone: llama_config(&c.backbone),
            depth: llama_config(&c.depth_decoder.transformer),
            num_codebooks: c.num_codebooks,
            audio_vocab: c.audio_vocab_size,
            text_vocab: c.text_vocab_size,
            audio_token_id: id("audio_token_id", c.audio_token_id)?,
            audio_eos_token_id: id("audio_eos_token_id", c.audio_eos_token_id)?,
            codebook_eos_token_id: id("codebook_eos_token_id", c.codebook_eos_token_id)?,
        })
    }

    pub fn validate(&self) -> Result<()> {
        self.backbone.validate("backbone")?;
        self.depth.validate("depth decoder")?;
        if self.num_codebooks < 2 || self.audio_vocab == 0 || self.text_vocab == 0 {
            return Err(Error::Invalid(format!(
                "CSM config: need num_codebooks >= 2 and positive vocabularies, got \
                 num_codebooks {}, vocab_size {}, text_vocab_size {}",
                self.num_codebooks, self.audio_vocab, self.text_vocab
            )));
        }
        if self.codebook_eos_token_id as usize >= self.audio_vocab {
            return Err(Error::Invalid(format!(
                "CSM config: codebook_eos_token_id {} is outside the audio vocabulary ({})",
                self.codebook_eos_token_id, self.audio_vocab
            )));
        }
        if self.audio_token_id == self.audio_eos_token_id {
            return Err(Error::Invalid(
                "CSM config: audio_token_id and audio_eos_token_id are equal".into(),
            ));
        }
        Ok(())
    }
}

fn llama_config(t: &TransformerConfig) -> LlamaConfig {
    LlamaConfig {
        hidden_size: t.hidden_size,
        num_layers: t.num_hidden_layers,
        num_heads: t.num_attention_heads,
        num_kv_heads: t.num_key_value_heads,
        head_dim: t.head_dim,
        intermediate_size: t.intermediate_size,
        // the reference adds eps to an f32 mean
        rms_norm_eps: t.rms_norm_eps as f32,
        rope_theta: t.rope_theta,
        rope_scaling: t.rope_scaling,
        max_positions: t.max_position_embeddings,
    }
}

/// The components of a generated frame's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FramePart {
    /// One backbone step (the frame fed back).
    Backbone,
    /// The codebook-0 head.
    Head0,
    /// The depth decoder's N-1 passes (input projection + stack).
    Depth,
    /// The depth decoder's codebook heads.
    DepthHeads,
}

/// Weight bytes one generated frame reads, by component.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameBytes {
    pub backbone: usize,
    pub head0: usize,
    pub depth: usize,
    pub depth_heads: usize,
}

impl FrameBytes {
    pub fn total(&self) -> usize {
        self.backbone + self.head0 + self.depth + self.depth_heads
    }
}

/// A loaded CSM (see the module docs).
#[derive(Debug)]
pub struct Csm {
    dims: CsmDims,
    pub(crate) embed: Embeddings,
    pub(crate) backbone: Llama,
    pub(crate) lm_head: WeightMatrix,
    pub(crate) depth: DepthDecoder,
    codec: Option<Arc<Mimi>>,
    kernels: &'static Kernels,
    pool: Arc<Pool>,
    /// Codebooks generated and read per frame (see the module docs).
    codebooks: usize,
}

impl Csm {
    /// Loads `dir/config.json` and the weights of `dir` (transformers-format f32/bf16
    /// safetensors, or the output of `edgecsm quantize`), codec included.
    pub fn load(dir: impl AsRef<Path>) -> Result<Csm> {
        let dir = dir.as_ref();
        let cfg = CsmConfig::load(dir.join("config.json"))?;
        let w = Weights::open(dir)?;
        if cfg.depth_decoder.backbone_hidden_size != cfg.backbone.hidden_size {
            return Err(Error::BadConfig {
                path: dir.join("config.json"),
                msg: format!(
                    "depth_decoder_config.backbone_hidden_size {} differs from hidden_size {}",
                    cfg.depth_decoder.backbone_hidden_size, cfg.backbone.hidden_size
                ),
            });
        }
        Csm::from_weights(CsmDims::from_config(&cfg)?, &w, Some(cfg.codec.clone()))
    }

    /// Builds the model from an open checkpoint. With `codec` given, the Mimi codec is loaded
    /// from the `codec_model.` tensors too. Uses a one-thread pool (see [`Csm::set_pool`]).
    pub fn from_weights(dims: CsmDims, w: &Weights, codec: Option<MimiConfig>) -> Result<Csm> {
        dims.validate()?;
        let h = dims.backbone.hidden_size;
        let embed = Embeddings::load(w, dims.text_vocab, dims.num_codebooks, dims.audio_vocab, h)?;
        let backbone = Llama::load(&w.with_prefix(BACKBONE_PREFIX), &dims.backbone, "backbone")?;
        let lm_head = w.linear(LM_HEAD, &[dims.audio_vocab, h])?;
        let depth = DepthDecoder::load(w, &dims.depth, h, dims.num_codebooks, dims.audio_vocab)?;
        let codec = match codec {
            Some(cfg) => {
                let m = Mimi::from_weights(cfg, &w.with_prefix(CODEC_PREFIX))?;
                if m.num_quantizers() < dims.num_codebooks {
                    return Err(Error::Invalid(format!(
                        "the codec has {} codebooks, the model generates {}",
                        m.num_quantizers(),
                        dims.num_codebooks
                    )));
                }
                Some(Arc::new(m))
            }
            None => None,
        };
        Ok(Csm {
            embed,
            backbone,
            lm_head,
            depth,
            codec,
            kernels: Kernels::init()?,
            pool: Arc::new(Pool::new(1)),
            codebooks: dims.num_codebooks,
            dims,
        })
    }

    /// Uses `pool` for every product and attention of the model and of its codec: one compute
    /// budget per process. Call it right after loading, before the codec is shared.
    pub fn set_pool(&mut self, pool: Arc<Pool>) -> Result<()> {
        if let Some(c) = &mut self.codec {
            Arc::get_mut(c)
                .ok_or_else(|| {
                    Error::Invalid("set_pool: the codec is already shared with a stream".into())
                })?
                .set_pool(pool.clone());
        }
        self.pool = pool;
        Ok(())
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub(crate) fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    pub fn dims(&self) -> &CsmDims {
        &self.dims
    }

    /// Codebooks the model predicts per frame (its configuration's `num_codebooks`).
    pub fn num_codebooks(&self) -> usize {
        self.dims.num_codebooks
    }

    /// Codebooks generated and read per frame: every frame handed out or taken in holds this
    /// many codes (all of the model's unless [`Csm::set_codebooks`] chose fewer).
    pub fn codebooks(&self) -> usize {
        self.codebooks
    }

    /// Generates and reads only codebooks `0..n` of each frame (see the module docs); `n` is
    /// 1 to [`Csm::num_codebooks`]. Call it right after loading, like [`Csm::set_pool`].
    pub fn set_codebooks(&mut self, n: usize) -> Result<()> {
        let max = self.dims.num_codebooks;
        if !(1..=max).contains(&n) {
            return Err(Error::Invalid(format!(
                "{n} codebooks asked for: this model generates 1 to {max} per frame"
            )));
        }
        self.codebooks = n;
        Ok(())
    }

    /// The Mimi codec, when loaded.
    pub fn codec(&self) -> Option<&Arc<Mimi>> {
        self.codec.as_ref()
    }

    /// Codes at or above this cannot be decoded to sound: the codec's codebook size when the
    /// codec is loaded, else the model's audio vocabulary.
    pub fn decodable_limit(&self) -> u32 {
        self.codec
            .as_ref()
            .map_or(self.dims.audio_vocab, |m| m.codebook_size()) as u32
    }

    /// Decodes frames (`[frames][codebooks]`, frames-major as generation yields them) to
    /// 24 kHz samples with the codec.
    pub fn decode_frames(&self, frames: &[u32]) -> Result<Vec<f32>> {
        let mimi = self.codec.as_ref().ok_or_else(|| {
            Error::Invalid("this CSM was loaded without its codec (codec_model.)".into())
        })?;
        let n = self.codebooks;
        if !frames.len().is_multiple_of(n) {
            return Err(Error::Invalid(format!(
                "{} codes are not whole frames of {n}",
                frames.len()
            )));
        }
        let rows: Vec<Vec<u32>> = (0..n)
            .map(|q| frames.iter().skip(q).step_by(n).copied().collect())
            .collect();
        mimi.decode(&rows)
    }

    /// Weight bytes read per generated frame, by component, with the codebooks in use.
    pub fn frame_bytes(&self) -> FrameBytes {
        self.frame_bytes_with(self.codebooks)
    }

    /// Weight bytes read per generated frame of `codebooks` codebooks (1 to the model's
    /// count), by component: the depth decoder's share shrinks with each codebook fewer.
    pub fn frame_bytes_with(&self, codebooks: usize) -> FrameBytes {
        let (depth, depth_heads) = self.depth.frame_weight_bytes(codebooks);
        FrameBytes {
            backbone: self.backbone.weight_bytes(),
            head0: self.lm_head.mat().bytes(),
            depth,
            depth_heads,
        }
    }

    /// Weight bytes read per generated frame: one backbone step, the codebook-0 head and the
    /// depth decoder's N-1 passes with their heads (N = the codebooks in use).
    pub fn frame_weight_bytes(&self) -> usize {
        self.frame_bytes().total()
    }

    /// The matrix-vector products of one generated frame (with the codebooks in use), in
    /// order: (component, matrix).
    pub fn frame_products(&self) -> Vec<(FramePart, &WeightMatrix)> {
        let mut v: Vec<(FramePart, &WeightMatrix)> = vec![(FramePart::Head0, &self.lm_head)];
        for head in &self.depth.heads()[..self.codebooks - 1] {
            v.extend(self.depth.pass_matrices().map(|m| (FramePart::Depth, m)));
            v.push((FramePart::DepthHeads, head));
        }
        v.extend(self.backbone.matrices().map(|m| (FramePart::Backbone, m)));
        v
    }
}
