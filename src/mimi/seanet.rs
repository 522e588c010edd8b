//! The SEANet convolutional encoder (waveform -> 25 Hz features) and decoder (features ->
//! waveform), run chunk by chunk over token-major activations `[steps, channels]`.
//!
//! Encoder: conv(1 -> F, k7); per stage s (ratios reversed, e.g. 4, 5, 6, 8): residual blocks
//! on `F << s` channels, ELU, strided conv (k = 2r, stride r) doubling the channels; ELU, conv
//! (`F << S` -> hidden, k3). Decoder: conv(hidden -> `F << S`, k7); per stage (8, 6, 5, 4): ELU,
//! transposed conv (k = 2r, stride r) halving the channels, residual blocks; ELU, conv(F -> 1,
//! k3). Residual block: `x + conv_k1(ELU(conv_k3_dilated(ELU(x))))` through `dim / compress`
//! channels.

use super::MimiConfig;
use super::conv::{CausalConv, CausalConvTranspose, ConvState, ConvTransposeState, Pad};
use super::layout::CheckpointLayout;
use crate::Result;
use crate::kernels::conv::{ConvScratch, ConvShape};
use crate::kernels::{Kernels, Pool};
use crate::weights::Weights;

/// One residual block (see the module docs).
#[derive(Debug)]
struct ResBlock {
    conv1: CausalConv,
    conv2: CausalConv,
}

#[derive(Debug)]
struct ResState {
    s1: ConvState,
    s2: ConvState,
}

impl ResBlock {
    fn load(w: &Weights, name: &str, cfg: &MimiConfig, dim: usize, j: usize) -> Result<Self> {
        let hid = dim / cfg.compress;
        let s1 = ConvShape::new(dim, hid, cfg.residual_kernel_size, 1)
            .with_dilation(cfg.residual_dilation(j));
        Ok(ResBlock {
            conv1: CausalConv::load(w, &format!("{name}.block.1.conv"), s1, true, Pad::Zeros)?,
            conv2: CausalConv::load(
                w,
                &format!("{name}.block.3.conv"),
                ConvShape::new(hid, dim, 1, 1),
                true,
                Pad::Zeros,
            )?,
        })
    }

    fn state(&self, max_n: usize, scratch: &mut ConvScratch) -> ResState {
        ResState {
            s1: self.conv1.state(max_n, scratch),
            s2: self.conv2.state(max_n, scratch),
        }
    }

    /// `x` (`[n, dim]`) in place; `th` holds `n * dim / compress`, `td` `n * dim` values.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        k: &Kernels,
        pool: &Pool,
        st: &mut ResState,
        x: &mut [f32],
        th: &mut [f32],
        td: &mut [f32],
        scratch: &mut ConvScratch,
    ) {
        let dim = self.conv1.shape().c_in;
        let hid = self.conv1.shape().c_out;
        let n = x.len() / dim;
        let slot = self.conv1.input(&mut st.s1, n);
        slot.copy_from_slice(x);
        k.elu(slot);
        let th = &mut th[..n * hid];
        self.conv1.run(k, pool, &mut st.s1, n, th, scratch);
        k.elu(th);
        let td = &mut td[..n * dim];
        self.conv2.forward(k, pool, &mut st.s2, th, td, scratch);
        for (xv, dv) in x.iter_mut().zip(td.iter()) {
            *xv += dv;
        }
    }
}

impl ResState {
    fn reset(&mut self) {
        self.s1.reset();
        self.s2.reset();
    }
}

/// Largest `[steps, channels]` activations of a chunk, for sizing the ping-pong buffers.
#[derive(Default)]
struct Sizes {
    act: usize,
    hid: usize,
}

impl Sizes {
    fn see(&mut self, steps: usize, ch: usize) {
        self.act = self.act.max(steps * ch);
    }
}

#[derive(Debug)]
struct EncStage {
    res: Vec<ResBlock>,
    down: CausalConv,
}

/// The SEANet encoder's weights.
#[derive(Debug)]
pub struct SeanetEncoder {
    conv0: CausalConv,
    stages: Vec<EncStage>,
    last: CausalConv,
    hidden: usize,
}

/// One stream's SEANet encoder state and buffers.
#[derive(Debug)]
pub struct SeanetEncoderState {
    conv0: ConvState,
    stages: Vec<(Vec<ResState>, ConvState)>,
    last: ConvState,
    a: Vec<f32>,
    b: Vec<f32>,
    th: Vec<f32>,
    td: Vec<f32>,
    scratch: ConvScratch,
    max_samples: usize,
}

impl SeanetEncoder {
    pub fn load(w: &Weights, cfg: &MimiConfig) -> Result<Self> {
        let nf = cfg.num_filters;
        let conv0 = CausalConv::load(
            w,
            "encoder.layers.0.conv",
            ConvShape::new(1, nf, cfg.kernel_size, 1),
            true,
            Pad::Zeros,
        )?;
        let mut stages = Vec::new();
        for s in 0..cfg.num_stages() {
            let ch = cfg.encoder_stage_channels(s);
            let r = cfg.encoder_ratio(s);
            let res = (0..cfg.num_residual_layers)
                .map(|j| {
                    let name = format!("encoder.layers.{}", cfg.encoder_resblock_index(s, j));
                    ResBlock::load(w, &name, cfg, ch, j)
                })
                .collect::<Result<Vec<_>>>()?;
            let down = CausalConv::load(
                w,
                &format!("encoder.layers.{}.conv", cfg.encoder_downsample_index(s)),
                ConvShape::new(ch, 2 * ch, 2 * r, r),
                true,
                Pad::Zeros,
            )?;
            stages.push(EncStage { res, down });
        }
        let last = CausalConv::load(
            w,
            &format!("encoder.layers.{}.conv", cfg.encoder_final_index()),
            ConvShape::new(
                cfg.seanet_inner_channels(),
                cfg.hidden_size,
                cfg.last_kernel_size,
                1,
            ),
            true,
            Pad::Zeros,
        )?;
        Ok(SeanetEncoder {
            conv0,
            stages,
            last,
            hidden: cfg.hidden_size,
        })
    }

    /// Output steps for `n` input samples (nested ceilings of the strides).
    pub fn out_len(&self, n: usize) -> usize {
        self.stages.iter().fold(n, |t, s| s.down.out_len(t))
    }

    /// A fresh state for chunks of up to `max_samples` samples.
    pub fn state(&self, max_samples: usize) -> SeanetEncoderState {
        let mut scratch = ConvScratch::new();
        let mut sz = Sizes::default();
        let mut n = max_samples;
        let conv0 = self.conv0.state(n, &mut scratch);
        sz.see(n, self.conv0.shape().c_out);
        let mut stages = Vec::new();
        for st in &self.stages {
            let ch = st.down.shape().c_in;
            let res = st
                .res
                .iter()
                .map(|r| {
                    sz.hid = sz.hid.max(n * r.conv1.shape().c_out);
                    r.state(n, &mut scratch)
                })
                .collect();
            sz.see(n, ch);
            let down = st.down.state(n, &mut scratch);
            n = st.down.out_len(n);
            sz.see(n, st.down.shape().c_out);
            stages.push((res, down));
        }
        let last = self.last.state(n, &mut scratch);
        sz.see(n, self.hidden);
        SeanetEncoderState {
            conv0,
            stages,
            last,
            a: vec![0.0; sz.act],
            b: vec![0.0; sz.act],
            th: vec![0.0; sz.hid],
            td: vec![0.0; sz.act],
            scratch,
            max_samples,
        }
    }

    /// Encodes `pcm` (a chunk of at most `max_samples`; only the last chunk of a signal may
    /// be a partial frame) and returns the features `[steps, hidden]` (a view into `st`).
    pub fn forward<'s>(
        &self,
        k: &Kernels,
        pool: &Pool,
        st: &'s mut SeanetEncoderState,
        pcm: &[f32],
    ) -> &'s mut [f32] {
        assert!(
            pcm.len() <= st.max_samples,
            "SEANet encoder: chunk of {} samples, state sized for {}",
            pcm.len(),
            st.max_samples
        );
        let SeanetEncoderState {
            conv0,
            stages,
            last,
            a,
            b,
            th,
            td,
            scratch,
            ..
        } = st;
        let mut n = pcm.len();
        self.conv0.input(conv0, n).copy_from_slice(pcm);
        self.conv0.run(k, pool, conv0, n, a, scratch);
        let (mut x, mut y) = (a, b);
        for (stage, (rs, ds)) in self.stages.iter().zip(stages.iter_mut()) {
            let ch = stage.down.shape().c_in;
            for (blk, bs) in stage.res.iter().zip(rs.iter_mut()) {
                blk.forward(k, pool, bs, &mut x[..n * ch], th, td, scratch);
            }
            let slot = stage.down.input(ds, n);
            slot.copy_from_slice(&x[..n * ch]);
            k.elu(slot);
            n = stage.down.run(k, pool, ds, n, y, scratch);
            std::mem::swap(&mut x, &mut y);
        }
        let c = self.last.shape().c_in;
        let slot = self.last.input(last, n);
        slot.copy_from_slice(&x[..n * c]);
        k.elu(slot);
        n = self.last.run(k, pool, last, n, y, scratch);
        &mut y[..n * self.hidden]
    }
}

impl SeanetEncoderState {
    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.conv0.reset();
        for (rs, ds) in &mut self.stages {
            rs.iter_mut().for_each(ResState::reset);
            ds.reset();
        }
        self.last.reset();
    }
}

#[derive(Debug)]
struct DecStage {
    up: CausalConvTranspose,
    res: Vec<ResBlock>,
}

/// The SEANet decoder's weights.
#[derive(Debug)]
pub struct SeanetDecoder {
    conv0: CausalConv,
    stages: Vec<DecStage>,
    last: CausalConv,
}

/// One stream's SEANet decoder state and buffers.
#[derive(Debug)]
pub struct SeanetDecoderState {
    conv0: ConvState,
    stages: Vec<(ConvTransposeState, Vec<ResState>)>,
    last: ConvState,
    a: Vec<f32>,
    b: Vec<f32>,
    th: Vec<f32>,
    td: Vec<f32>,
    scratch: ConvScratch,
    max_steps: usize,
}

impl SeanetDecoder {
    pub fn load(w: &Weights, cfg: &MimiConfig) -> Result<Self> {
        let inner = cfg.seanet_inner_channels();
        let conv0 = CausalConv::load(
            w,
            "decoder.layers.0.conv",
            ConvShape::new(cfg.hidden_size, inner, cfg.kernel_size, 1),
            true,
            Pad::Zeros,
        )?;
        let mut stages = Vec::new();
        for s in 0..cfg.num_stages() {
            let ch = inner >> s;
            let r = cfg.upsampling_ratios[s];
            let up = CausalConvTranspose::load_dense(
                w,
                &format!("decoder.layers.{}.conv", cfg.decoder_upsample_index(s)),
                ConvShape::new(ch, ch / 2, 2 * r, r),
                true,
            )?;
            let res = (0..cfg.num_residual_layers)
                .map(|j| {
                    let name = format!("decoder.layers.{}", cfg.decoder_resblock_index(s, j));
                    ResBlock::load(w, &name, cfg, ch / 2, j)
                })
                .collect::<Result<Vec<_>>>()?;
            stages.push(DecStage { up, res });
        }
        let last = CausalConv::load(
            w,
            &format!("decoder.layers.{}.conv", cfg.decoder_final_index()),
            ConvShape::new(cfg.num_filters, 1, cfg.last_kernel_size, 1),
            true,
            Pad::Zeros,
        )?;
        Ok(SeanetDecoder {
            conv0,
            stages,
            last,
        })
    }

    /// Output samples for `steps` input steps.
    pub fn out_len(&self, steps: usize) -> usize {
        self.stages.iter().fold(steps, |t, s| s.up.out_len(t))
    }

    /// A fresh state for chunks of up to `max_steps` feature steps.
    pub fn state(&self, max_steps: usize) -> SeanetDecoderState {
        let mut scratch = ConvScratch::new();
        let mut sz = Sizes::default();
        let mut n = max_steps;
        let conv0 = self.conv0.state(n, &mut scratch);
        sz.see(n, self.conv0.shape().c_out);
        let mut stages = Vec::new();
        for st in &self.stages {
            let up = st.up.state(n, &mut scratch);
            let c_out = st.up.shape().c_out;
            sz.see(st.up.work_len(n), c_out);
            n = st.up.out_len(n);
            let res = st
                .res
                .iter()
                .map(|r| {
                    sz.hid = sz.hid.max(n * r.conv1.shape().c_out);
                    r.state(n, &mut scratch)
                })
                .collect();
            stages.push((up, res));
        }
        let last = self.last.state(n, &mut scratch);
        sz.see(n, 1);
        SeanetDecoderState {
            conv0,
            stages,
            last,
            a: vec![0.0; sz.act],
            b: vec![0.0; sz.act],
            th: vec![0.0; sz.hid],
            td: vec![0.0; sz.act],
            scratch,
            max_steps,
        }
    }

    /// Decodes features `x` (`[steps, hidden]`, at most `max_steps`) into samples (a view into
    /// `st`).
    pub fn forward<'s>(
        &self,
        k: &Kernels,
        pool: &Pool,
        st: &'s mut SeanetDecoderState,
        x: &[f32],
    ) -> &'s [f32] {
        let c0 = self.conv0.shape().c_in;
        let mut n = x.len() / c0;
        assert!(
            n <= st.max_steps,
            "SEANet decoder: chunk of {n} steps, state sized for {}",
            st.max_steps
        );
        let SeanetDecoderState {
            conv0,
            stages,
            last,
            a,
            b,
            th,
            td,
            scratch,
            ..
        } = st;
        self.conv0.forward(k, pool, conv0, x, a, scratch);
        let (mut x, mut y) = (a, b);
        for (stage, (us, rs)) in self.stages.iter().zip(stages.iter_mut()) {
            let ch = stage.up.shape().c_in;
            let xin = &mut x[..n * ch];
            k.elu(xin);
            n = stage.up.forward(k, pool, us, xin, y, scratch);
            std::mem::swap(&mut x, &mut y);
            let c = stage.up.shape().c_out;
            for (blk, bs) in stage.res.iter().zip(rs.iter_mut()) {
                blk.forward(k, pool, bs, &mut x[..n * c], th, td, scratch);
            }
        }
        let c = self.last.shape().c_in;
        let slot = self.last.input(last, n);
        slot.copy_from_slice(&x[..n * c]);
        k.elu(slot);
        n = self.last.run(k, pool, last, n, y, scratch);
        &y[..n]
    }
}

impl SeanetDecoderState {
    /// Back to the start of a stream.
    pub fn reset(&mut self) {
        self.conv0.reset();
        for (us, rs) in &mut self.stages {
            us.reset();
            rs.iter_mut().for_each(ResState::reset);
        }
        self.last.reset();
    }
}
