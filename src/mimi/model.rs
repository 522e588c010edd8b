//! The Mimi codec: loading and batch (whole-signal) encode and decode.
//!
//! Batch work runs the streaming pipelines (`pipeline`) over the signal in bounded chunks
//! of [`BATCH_CHUNK_FRAMES`] frames, so batch and streaming share one code path. Two things
//! are specific to batch calls, as in the reference: a partial last frame is padded on the
//! right inside each strided conv (zeros; the downsample replicates its last step), and every
//! decode call starts its transformer positions at 0.

use super::MimiConfig;
use super::pipeline::{DecodeTrace, Decoder, DecoderCore, EncodeTrace, Encoder, EncoderCore};
use super::rvq::SplitRvq;
use crate::kernels::{Kernels, Pool};
use crate::weights::Weights;
use crate::{Error, Result};
use std::path::Path;
use std::sync::Arc;

/// Frames per chunk in batch encode/decode (bounds the working memory; 16 frames = 1.28 s).
pub const BATCH_CHUNK_FRAMES: usize = 16;

/// A loaded Mimi codec (immutable; share it between streams with an `Arc`).
#[derive(Debug)]
pub struct Mimi {
    cfg: MimiConfig,
    kernels: &'static Kernels,
    pool: Arc<Pool>,
    enc: Option<Arc<Encoder>>,
    dec: Option<Arc<Decoder>>,
    rvq: SplitRvq,
}

impl Mimi {
    /// Loads `dir/config.json` and the weights of `dir` (`model.safetensors` or shards), with a
    /// one-thread compute pool (see [`Mimi::set_pool`]).
    pub fn load(dir: impl AsRef<Path>) -> Result<Mimi> {
        let dir = dir.as_ref();
        let cfg = MimiConfig::load(dir.join("config.json"))?;
        let w = Weights::open(dir)?;
        Mimi::from_weights(cfg, &w)
    }

    /// Builds the codec from `w` (already prefixed for a checkpoint that nests it, e.g.
    /// `Weights::open(csm)?.with_prefix("codec_model.")`), checking every tensor's shape
    /// against `cfg` (validated first, so a hand-built config is held to the same limits as a
    /// parsed one); an error names the tensor at fault.
    pub fn from_weights(cfg: MimiConfig, w: &Weights) -> Result<Mimi> {
        cfg.validate()?;
        let enc = cfg
            .has_encoder
            .then(|| Encoder::load(w, &cfg))
            .transpose()?;
        let dec = cfg
            .has_decoder
            .then(|| Decoder::load(w, &cfg))
            .transpose()?;
        let rvq = SplitRvq::load(w, &cfg)?;
        Ok(Mimi {
            cfg,
            kernels: Kernels::init()?,
            pool: Arc::new(Pool::new(1)),
            enc: enc.map(Arc::new),
            dec: dec.map(Arc::new),
            rvq,
        })
    }

    /// Uses `pool` for the products, attention and single-frame RVQ search.
    pub fn set_pool(&mut self, pool: Arc<Pool>) {
        self.pool = pool;
    }

    /// Multiply-adds per codebook level below which a single streaming frame's nearest
    /// neighbour search stays on the calling thread (see [`super::rvq`]).
    pub fn set_rvq_parallel_cutover(&mut self, macs: usize) {
        self.rvq.set_parallel_cutover(macs);
    }

    pub fn config(&self) -> &MimiConfig {
        &self.cfg
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub(crate) fn kernels(&self) -> &'static Kernels {
        self.kernels
    }

    /// Samples per code frame (1920 for kyutai/mimi).
    pub fn frame_size(&self) -> usize {
        self.cfg.frame_size()
    }

    pub fn num_quantizers(&self) -> usize {
        self.rvq.num_quantizers()
    }

    pub fn num_semantic_quantizers(&self) -> usize {
        self.rvq.num_semantic()
    }

    pub fn codebook_size(&self) -> usize {
        self.rvq.codebook_size()
    }

    pub(crate) fn rvq(&self) -> &SplitRvq {
        &self.rvq
    }

    /// The encoder layers, or an error naming what the checkpoint lacks.
    pub(crate) fn encoder(&self) -> Result<&Arc<Encoder>> {
        self.enc.as_ref().ok_or_else(|| {
            Error::Invalid("this Mimi checkpoint has no encoder (encoder_config is null)".into())
        })
    }

    /// The decoder layers, or an error naming what the checkpoint lacks.
    pub(crate) fn decoder(&self) -> Result<&Arc<Decoder>> {
        self.dec.as_ref().ok_or_else(|| {
            Error::Invalid("this Mimi checkpoint has no decoder (decoder_config is null)".into())
        })
    }

    /// Encodes mono 24 kHz `pcm` into `n_q` rows of codes (`[n_q][frames]`, frames =
    /// ceil(samples / frame_size); a partial last frame is padded as the reference pads it).
    /// `num_semantic_quantizers <= n_q <= num_quantizers`.
    pub fn encode(&self, pcm: &[f32], n_q: usize) -> Result<Vec<Vec<u32>>> {
        self.encode_inner(pcm, n_q, None)
    }

    /// [`Mimi::encode`] keeping every intermediate tensor.
    pub fn encode_trace(&self, pcm: &[f32], n_q: usize) -> Result<EncodeTrace> {
        let mut t = EncodeTrace::default();
        t.codes = self.encode_inner(pcm, n_q, Some(&mut t))?;
        Ok(t)
    }

    fn encode_inner(
        &self,
        pcm: &[f32],
        n_q: usize,
        mut trace: Option<&mut EncodeTrace>,
    ) -> Result<Vec<Vec<u32>>> {
        let enc = self.encoder()?;
        self.rvq.check_n_q(n_q)?;
        if pcm.is_empty() {
            return Err(Error::Invalid("cannot encode an empty signal".into()));
        }
        let frame = self.frame_size();
        let frames = pcm.len().div_ceil(frame);
        let chunk = BATCH_CHUNK_FRAMES.min(frames);
        let mut core = EncoderCore::new(Arc::clone(enc), chunk, 0);
        let mut lat = Vec::with_capacity(frames * self.cfg.hidden_size);
        for c in pcm.chunks(chunk * frame) {
            lat.extend_from_slice(core.run(self.kernels, &self.pool, c, trace.as_deref_mut()));
        }
        let codes = self.rvq.encode_batch(self.kernels, &self.pool, &lat, n_q);
        if let Some(t) = trace {
            t.latents = lat;
        }
        Ok(codes)
    }

    /// Decodes codes (`rows[q][frame]`, 1 to `num_quantizers` rows of equal length, each code
    /// below the codebook size) into `frames * frame_size` samples. Positions start at 0.
    pub fn decode<R: AsRef<[u32]>>(&self, rows: &[R]) -> Result<Vec<f32>> {
        self.decode_inner(rows, None)
    }

    /// [`Mimi::decode`] keeping every intermediate tensor.
    pub fn decode_trace<R: AsRef<[u32]>>(&self, rows: &[R]) -> Result<DecodeTrace> {
        let mut t = DecodeTrace::default();
        t.pcm = self.decode_inner(rows, Some(&mut t))?;
        Ok(t)
    }

    fn decode_inner<R: AsRef<[u32]>>(
        &self,
        rows: &[R],
        mut trace: Option<&mut DecodeTrace>,
    ) -> Result<Vec<f32>> {
        let dec = self.decoder()?;
        let rows: Vec<&[u32]> = rows.iter().map(|r| r.as_ref()).collect();
        self.rvq.check_codes(&rows)?;
        let frames = rows[0].len();
        let mut out = Vec::with_capacity(frames * self.frame_size());
        if frames == 0 {
            return Ok(out);
        }
        let chunk = BATCH_CHUNK_FRAMES.min(frames);
        let mut core = DecoderCore::new(Arc::clone(dec), &self.rvq, self.pool.threads(), chunk, 0);
        let mut f0 = 0;
        while f0 < frames {
            let f1 = (f0 + chunk).min(frames);
            let pcm = core.run(
                self.kernels,
                &self.pool,
                &self.rvq,
                rows.len(),
                |q, f| rows[q][f0 + f],
                f1 - f0,
                trace.as_deref_mut(),
            );
            out.extend_from_slice(pcm);
            f0 = f1;
        }
        Ok(out)
    }
}
