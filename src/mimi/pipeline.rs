//! The encoder and decoder pipelines that batch calls ([`super::model`]) and streams
//! ([`super::stream`]) share: the layer stacks ([`Encoder`], [`Decoder`]) and their
//! chunk-by-chunk state ([`EncoderCore`], [`DecoderCore`]).
//!
//! A core owns a handle to its stack, so it can only ever run the layers it was sized for, and
//! every buffer it needs for chunks of up to `max_frames` frames (conv histories, transposed-conv
//! overlap tails, KV rings, activations, RVQ scratch); a run allocates nothing.

use super::MimiConfig;
use super::conv::{CausalConv, CausalConvTranspose, ConvState, ConvTransposeState, Pad};
use super::rvq::{RvqScratch, SplitRvq};
use super::seanet::{SeanetDecoder, SeanetDecoderState, SeanetEncoder, SeanetEncoderState};
use super::transformer::{Transformer, TransformerState};
use crate::Result;
use crate::kernels::conv::{ConvScratch, ConvShape};
use crate::kernels::{Kernels, Pool};
use crate::weights::Weights;
use std::sync::Arc;

/// Intermediate tensors of a batch encode (token-major `[steps, hidden]`), for parity tests.
#[derive(Clone, Debug, Default)]
pub struct EncodeTrace {
    /// SEANet encoder output, `[T25, hidden]`.
    pub seanet_out: Vec<f32>,
    /// Encoder transformer output, `[T25, hidden]`.
    pub transformer_out: Vec<f32>,
    /// Downsample output (quantizer input), `[frames, hidden]`.
    pub latents: Vec<f32>,
    /// `[n_q][frames]`.
    pub codes: Vec<Vec<u32>>,
}

/// Intermediate tensors of a batch decode (token-major), for parity tests.
#[derive(Clone, Debug, Default)]
pub struct DecodeTrace {
    /// Dequantized latents, `[frames, hidden]`.
    pub quantized: Vec<f32>,
    /// Upsample output, `[T25, hidden]`.
    pub upsampled: Vec<f32>,
    /// Decoder transformer output, `[T25, hidden]`.
    pub transformer_out: Vec<f32>,
    /// `frames * frame_size` samples.
    pub pcm: Vec<f32>,
}

/// Encoder-side layers: SEANet encoder, encoder transformer, stride-2 downsample conv.
#[derive(Debug)]
pub(crate) struct Encoder {
    seanet: SeanetEncoder,
    transformer: Transformer,
    downsample: CausalConv,
    frame_size: usize,
    hidden: usize,
}

impl Encoder {
    pub(crate) fn load(w: &Weights, cfg: &MimiConfig) -> Result<Self> {
        let (h, stride) = (cfg.hidden_size, cfg.latent_stride());
        Ok(Encoder {
            seanet: SeanetEncoder::load(w, cfg)?,
            transformer: Transformer::load(w, "encoder_transformer", cfg)?,
            downsample: CausalConv::load(
                w,
                "downsample.conv",
                ConvShape::new(h, h, 2 * stride, stride),
                false,
                Pad::Replicate,
            )?,
            frame_size: cfg.frame_size(),
            hidden: h,
        })
    }
}

/// Decoder-side layers: depthwise stride-2 upsample, decoder transformer, SEANet decoder.
#[derive(Debug)]
pub(crate) struct Decoder {
    upsample: CausalConvTranspose,
    transformer: Transformer,
    seanet: SeanetDecoder,
    hidden: usize,
}

impl Decoder {
    pub(crate) fn load(w: &Weights, cfg: &MimiConfig) -> Result<Self> {
        let (h, stride) = (cfg.hidden_size, cfg.latent_stride());
        Ok(Decoder {
            upsample: CausalConvTranspose::load_depthwise(
                w,
                "upsample.conv",
                ConvShape::new(h, h, 2 * stride, stride).with_groups(h),
            )?,
            transformer: Transformer::load(w, "decoder_transformer", cfg)?,
            seanet: SeanetDecoder::load(w, cfg)?,
            hidden: h,
        })
    }
}

/// The encoder stack and its state for chunks of up to `max_frames` frames: SEANet ->
/// transformer -> downsample, producing latents `[frames, hidden]`.
#[derive(Debug)]
pub(crate) struct EncoderCore {
    enc: Arc<Encoder>,
    seanet: SeanetEncoderState,
    tr: TransformerState,
    down: ConvState,
    scratch: ConvScratch,
    lat: Vec<f32>,
    max_samples: usize,
}

impl EncoderCore {
    /// A core whose transformer starts at position `start_pos`.
    pub(crate) fn new(enc: Arc<Encoder>, max_frames: usize, start_pos: u64) -> Self {
        let max_samples = max_frames * enc.frame_size;
        let steps = enc.seanet.out_len(max_samples);
        let mut scratch = ConvScratch::new();
        let down = enc.downsample.state(steps, &mut scratch);
        EncoderCore {
            seanet: enc.seanet.state(max_samples),
            tr: enc.transformer.state(steps, start_pos),
            down,
            scratch,
            lat: vec![0.0; enc.downsample.out_len(steps) * enc.hidden],
            max_samples,
            enc,
        }
    }

    /// Runs `pcm` (at most `max_frames` frames; a partial frame only at the end of a signal)
    /// and returns its latents.
    pub(crate) fn run(
        &mut self,
        k: &Kernels,
        pool: &Pool,
        pcm: &[f32],
        mut trace: Option<&mut EncodeTrace>,
    ) -> &[f32] {
        let enc = &*self.enc;
        assert!(pcm.len() <= self.max_samples, "encoder chunk too long");
        let x = enc.seanet.forward(k, pool, &mut self.seanet, pcm);
        if let Some(t) = trace.as_deref_mut() {
            t.seanet_out.extend_from_slice(x);
        }
        enc.transformer.forward(k, pool, &mut self.tr, x);
        if let Some(t) = trace {
            t.transformer_out.extend_from_slice(x);
        }
        let n =
            enc.downsample
                .forward(k, pool, &mut self.down, x, &mut self.lat, &mut self.scratch);
        &self.lat[..n * enc.hidden]
    }

    /// The transformer position of the next step.
    pub(crate) fn position(&self) -> u64 {
        self.tr.position()
    }

    /// Back to the start position, every history emptied.
    pub(crate) fn reset(&mut self) {
        self.seanet.reset();
        self.tr.reset();
        self.down.reset();
    }
}

/// The decoder stack and its state for chunks of up to `max_frames` frames: RVQ decode ->
/// upsample -> transformer -> SEANet decoder.
#[derive(Debug)]
pub(crate) struct DecoderCore {
    dec: Arc<Decoder>,
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
    /// A core decoding with `rvq` (split over up to `threads` threads) whose transformer starts
    /// at position `start_pos`.
    pub(crate) fn new(
        dec: Arc<Decoder>,
        rvq: &SplitRvq,
        threads: usize,
        max_frames: usize,
        start_pos: u64,
    ) -> Self {
        let h = dec.hidden;
        let mut scratch = ConvScratch::new();
        let up_state = dec.upsample.state(max_frames, &mut scratch);
        let steps = dec.upsample.out_len(max_frames);
        DecoderCore {
            rvq: rvq.scratch(max_frames, threads),
            quant: vec![0.0; max_frames * h],
            up_state,
            up: vec![0.0; dec.upsample.work_len(max_frames) * h],
            scratch,
            tr: dec.transformer.state(steps, start_pos),
            seanet: dec.seanet.state(steps),
            max_frames,
            dec,
        }
    }

    /// Decodes `nf` frames (`code(q, f)`, `n_rows` codebooks, all checked against `rvq`, the
    /// quantizer this core was made with) into samples.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run(
        &mut self,
        k: &Kernels,
        pool: &Pool,
        rvq: &SplitRvq,
        n_rows: usize,
        code: impl Fn(usize, usize) -> u32,
        nf: usize,
        mut trace: Option<&mut DecodeTrace>,
    ) -> &[f32] {
        let dec = &*self.dec;
        assert!(nf <= self.max_frames, "decoder chunk too long");
        let h = dec.hidden;
        let q = &mut self.quant[..nf * h];
        rvq.decode(k, pool, n_rows, code, nf, q, &mut self.rvq);
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

    /// The transformer position of the next step.
    pub(crate) fn position(&self) -> u64 {
        self.tr.position()
    }

    /// Back to the start position, every history and overlap tail emptied.
    pub(crate) fn reset(&mut self) {
        self.up_state.reset();
        self.tr.reset();
        self.seanet.reset();
    }
}
