//! Streaming causal convolutions, the one code path for batch and streaming use.
//!
//! [`CausalConv`] is Mimi's `MimiConv1d` in causal mode: it pads `span - stride` steps on the
//! left (zeros, or copies of the first step for the replicate-padded downsample conv). Run
//! chunk by chunk, it keeps those last `span - stride` inputs as history, so feeding a signal
//! in any split into chunks (each a whole number of strides) gives the one-shot output. A chunk
//! that is not a whole number of strides is padded on the right as the reference pads the end
//! of a signal (zeros, or copies of the last step): that is only meaningful for the last chunk.
//!
//! [`CausalConvTranspose`] is `MimiConvTranspose1d` with `trim_right_ratio = 1`: the reference
//! computes the full transposed convolution and trims `span - stride` steps on the right. Chunk
//! by chunk, those trimmed steps are the overlap tail that belongs to the next chunk's first
//! outputs, so the layer carries the tail (without its bias) and adds it into the next chunk.
//!
//! The weights are immutable and shared; the per-stream history lives in a [`ConvState`] /
//! [`ConvTransposeState`] sized once for the largest chunk.

use crate::kernels::Kernels;
use crate::kernels::Pool;
use crate::kernels::conv::{
    ColumnOrder, ConvScratch, ConvShape, conv_transpose1d, conv1d, repack_depthwise,
};
use crate::weights::{F32Tensor, Layout, WeightMatrix, Weights};
use crate::{Error, Result};

/// How the left history (and the right end of a signal) is padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pad {
    Zeros,
    /// Copies of the first (left) or last (right) step: Mimi's downsample conv.
    Replicate,
}

/// A causal 1-D convolution layer (see the module docs).
#[derive(Debug)]
pub struct CausalConv {
    shape: ConvShape,
    w: WeightMatrix,
    b: Option<F32Tensor>,
    /// Left context: `span - stride` steps.
    hist: usize,
    pad: Pad,
}

/// The streaming state of one [`CausalConv`]: `[hist + max_in + stride - 1, c_in]`, the history
/// in the first `hist` steps followed by the new input (and any right padding).
#[derive(Debug)]
pub struct ConvState {
    buf: Vec<f32>,
    max_in: usize,
    started: bool,
}

impl ConvState {
    /// Back to the start of a stream (zero history).
    pub fn reset(&mut self) {
        self.buf.fill(0.0);
        self.started = false;
    }
}

impl CausalConv {
    /// Loads `{name}.weight` (`[c_out, c_in / groups, k]`; packed for the products, or an F32
    /// table when depthwise) and, if `bias`, `{name}.bias`. The product's columns are in
    /// tap-major order ([`Layout::Conv`]), except in a file of format 3 or 4 that stores them
    /// packed in PyTorch's order ([`Layout::Rows`]); `shape.order` is replaced by the one found.
    pub fn load(w: &Weights, name: &str, shape: ConvShape, bias: bool, pad: Pad) -> Result<Self> {
        let wname = format!("{name}.weight");
        let wshape = [shape.c_out, shape.c_in / shape.groups, shape.k];
        let (weight, shape) = if shape.is_depthwise() {
            let v = w.vector(&wname, &wshape)?;
            let m = depthwise_taps(w, &wname, shape, &v);
            (m, shape.with_order(ColumnOrder::TapMajor))
        } else if w.packed_layout(&wname) == Some(Layout::Rows) {
            let m = w.linear(&wname, &wshape)?;
            (m, shape.with_order(ColumnOrder::ChannelMajor))
        } else {
            let m = w
                .packed_matrices(&wname, &wshape, Layout::Conv)?
                .pop()
                .ok_or_else(|| Error::bad_tensor(&wname, "no matrix"))?;
            (m, shape.with_order(ColumnOrder::TapMajor))
        };
        let b = if bias {
            Some(w.vector(&format!("{name}.bias"), &[shape.c_out])?)
        } else {
            None
        };
        Self::new(shape, weight, b, pad)
    }

    /// A layer from a weight matrix `[c_out, (c_in / groups) * k]` and an optional bias.
    pub fn new(shape: ConvShape, w: WeightMatrix, b: Option<F32Tensor>, pad: Pad) -> Result<Self> {
        if shape.span() < shape.stride {
            return Err(Error::Invalid(format!(
                "conv `{}`: stride {} larger than the kernel span {} is not causal-streamable",
                w.name(),
                shape.stride,
                shape.span()
            )));
        }
        if shape.groups != 1 {
            return Err(Error::Invalid(format!(
                "conv `{}`: grouped convolutions are not used by Mimi",
                w.name()
            )));
        }
        Ok(CausalConv {
            shape,
            hist: shape.span() - shape.stride,
            w,
            b,
            pad,
        })
    }

    pub fn shape(&self) -> ConvShape {
        self.shape
    }

    /// Output steps for `n_in` input steps (the end padded to whole strides).
    pub fn out_len(&self, n_in: usize) -> usize {
        n_in.div_ceil(self.shape.stride)
    }

    /// A fresh state for chunks of up to `max_in` steps, reserving `scratch` for them.
    pub fn state(&self, max_in: usize, scratch: &mut ConvScratch) -> ConvState {
        let s = self.shape;
        let steps = self.hist + max_in + s.stride - 1;
        scratch.reserve_conv1d(s, s.conv_out_len(steps).max(1));
        ConvState {
            buf: vec![0.0; steps * s.c_in],
            max_in,
            started: false,
        }
    }

    /// The slot for `n` new input steps (`[n, c_in]`) inside `st`: fill it, then [`Self::run`].
    pub fn input<'s>(&self, st: &'s mut ConvState, n: usize) -> &'s mut [f32] {
        assert!(
            n <= st.max_in,
            "conv: {n} steps but the state holds {}",
            st.max_in
        );
        let c = self.shape.c_in;
        &mut st.buf[self.hist * c..(self.hist + n) * c]
    }

    /// Convolves the history and the `n` steps just written by [`Self::input`] into
    /// `y[..out_len(n) * c_out]`; returns the number of output steps.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        k: &Kernels,
        pool: &Pool,
        st: &mut ConvState,
        n: usize,
        y: &mut [f32],
        scratch: &mut ConvScratch,
    ) -> usize {
        assert!(
            n <= st.max_in,
            "conv: {n} steps but the state holds {}",
            st.max_in
        );
        if n == 0 {
            return 0;
        }
        let (c, h, s) = (self.shape.c_in, self.hist, self.shape.stride);
        if !st.started {
            st.started = true;
            if self.pad == Pad::Replicate {
                let (head, rest) = st.buf.split_at_mut(h * c);
                for step in head.chunks_exact_mut(c) {
                    step.copy_from_slice(&rest[..c]);
                }
            }
        }
        let extra = n.next_multiple_of(s) - n;
        if extra > 0 {
            let end = (h + n) * c;
            let (body, tail) = st.buf.split_at_mut(end);
            let tail = &mut tail[..extra * c];
            match self.pad {
                Pad::Zeros => tail.fill(0.0),
                Pad::Replicate => {
                    for step in tail.chunks_exact_mut(c) {
                        step.copy_from_slice(&body[end - c..]);
                    }
                }
            }
        }
        let total = h + n + extra;
        let t_out = (n + extra) / s;
        let c_out = self.shape.c_out;
        conv1d(
            k,
            pool,
            self.shape,
            &self.w.mat(),
            self.b.as_deref(),
            &st.buf[..total * c],
            &mut y[..t_out * c_out],
            scratch,
        );
        st.buf.copy_within((total - h) * c..total * c, 0);
        t_out
    }

    /// [`Self::input`] + [`Self::run`] for an input that is already in a buffer; a pointwise
    /// (k = 1, stride 1) layer reads `x` directly without the copy.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        k: &Kernels,
        pool: &Pool,
        st: &mut ConvState,
        x: &[f32],
        y: &mut [f32],
        scratch: &mut ConvScratch,
    ) -> usize {
        let c = self.shape.c_in;
        let n = x.len() / c;
        if self.hist == 0 && self.shape.stride == 1 {
            let c_out = self.shape.c_out;
            conv1d(
                k,
                pool,
                self.shape,
                &self.w.mat(),
                self.b.as_deref(),
                x,
                &mut y[..n * c_out],
                scratch,
            );
            return n;
        }
        self.input(st, n).copy_from_slice(x);
        self.run(k, pool, st, n, y, scratch)
    }
}

/// A causal transposed 1-D convolution, dense or depthwise (see the module docs).
#[derive(Debug)]
pub struct CausalConvTranspose {
    shape: ConvShape,
    /// Dense: the repacked `[c_out * k, c_in]` matrix; depthwise: F32 `[c, k]`.
    w: WeightMatrix,
    b: Option<F32Tensor>,
}

/// The overlap tail of one [`CausalConvTranspose`]: `[span - stride, c_out]`, bias excluded.
#[derive(Debug)]
pub struct ConvTransposeState {
    tail: Vec<f32>,
    max_in: usize,
}

impl ConvTransposeState {
    /// Back to the start of a stream (no overlap).
    pub fn reset(&mut self) {
        self.tail.fill(0.0);
    }
}

impl CausalConvTranspose {
    /// Loads a dense `ConvTranspose1d` `{name}.weight` (`[c_in, c_out, k]`, as the packed
    /// `[c_out * k, c_in]` matrix the product reads: taps outer, [`Layout::ConvTransposeTaps`],
    /// or in a file of format 3 or 4 [`Layout::ConvTranspose`]; `shape.order` is replaced by
    /// the one found) and, if `bias`, `{name}.bias`.
    pub fn load_dense(w: &Weights, name: &str, shape: ConvShape, bias: bool) -> Result<Self> {
        let wname = format!("{name}.weight");
        let (c_in, c_out, k) = (shape.c_in, shape.c_out, shape.k);
        let (layout, order) = if w.packed_layout(&wname) == Some(Layout::ConvTranspose) {
            (Layout::ConvTranspose, ColumnOrder::ChannelMajor)
        } else {
            (Layout::ConvTransposeTaps, ColumnOrder::TapMajor)
        };
        let shape = shape.with_order(order);
        let mat = w
            .packed_matrices(&wname, &[c_in, c_out, k], layout)?
            .pop()
            .ok_or_else(|| Error::bad_tensor(&wname, "no matrix"))?;
        let b = if bias {
            Some(w.vector(&format!("{name}.bias"), &[c_out])?)
        } else {
            None
        };
        Self::new(shape, mat, b)
    }

    /// Loads a depthwise `ConvTranspose1d` `{name}.weight` (`[c, 1, k]`, kept F32, taps outer),
    /// no bias.
    pub fn load_depthwise(w: &Weights, name: &str, shape: ConvShape) -> Result<Self> {
        let wname = format!("{name}.weight");
        let (c, k) = (shape.c_in, shape.k);
        let stored = w.vector(&wname, &[c, 1, k])?;
        let mat = depthwise_taps(w, &wname, shape, &stored);
        Self::new(shape.with_order(ColumnOrder::TapMajor), mat, None)
    }

    fn new(shape: ConvShape, w: WeightMatrix, b: Option<F32Tensor>) -> Result<Self> {
        if shape.span() < shape.stride {
            return Err(Error::Invalid(format!(
                "transposed conv `{}`: stride {} larger than the kernel span {}",
                w.name(),
                shape.stride,
                shape.span()
            )));
        }
        Ok(CausalConvTranspose { shape, w, b })
    }

    pub fn shape(&self) -> ConvShape {
        self.shape
    }

    /// Output steps for `n_in` input steps: `n_in * stride`.
    pub fn out_len(&self, n_in: usize) -> usize {
        n_in * self.shape.stride
    }

    /// Steps of output buffer [`Self::forward`] needs for `n_in` input steps (the full
    /// transposed-conv length, tail included).
    pub fn work_len(&self, n_in: usize) -> usize {
        self.shape.transpose_out_len(n_in.max(1))
    }

    /// A fresh state for chunks of up to `max_in` steps, reserving `scratch` for them.
    pub fn state(&self, max_in: usize, scratch: &mut ConvScratch) -> ConvTransposeState {
        let s = self.shape;
        scratch.reserve_conv_transpose1d(s, max_in);
        ConvTransposeState {
            tail: vec![0.0; (s.span() - s.stride) * s.c_out],
            max_in,
        }
    }

    /// `x` is `[n, c_in]`; writes `n * stride` output steps to the front of `y`, which must
    /// hold [`Self::work_len`]`(n) * c_out` values. Returns the output steps.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        k: &Kernels,
        pool: &Pool,
        st: &mut ConvTransposeState,
        x: &[f32],
        y: &mut [f32],
        scratch: &mut ConvScratch,
    ) -> usize {
        let s = self.shape;
        let n = x.len() / s.c_in;
        assert!(
            n <= st.max_in,
            "conv transpose: {n} steps but the state holds {}",
            st.max_in
        );
        if n == 0 {
            return 0;
        }
        let full = s.transpose_out_len(n) * s.c_out;
        let keep = n * s.stride * s.c_out;
        let y = &mut y[..full];
        conv_transpose1d(k, pool, s, &self.w.mat(), None, x, y, scratch);
        for (yv, tv) in y.iter_mut().zip(&st.tail) {
            *yv += tv;
        }
        st.tail.copy_from_slice(&y[keep..]);
        if let Some(b) = &self.b {
            for row in y[..keep].chunks_exact_mut(s.c_out) {
                for (v, bv) in row.iter_mut().zip(b.as_slice()) {
                    *v += bv;
                }
            }
        }
        n * s.stride
    }
}

/// A depthwise layer's `[c, 1, k]` weights `v` as the F32 `[k, c]` table the tap-major loop
/// reads ([`repack_depthwise`]).
fn depthwise_taps(w: &Weights, wname: &str, shape: ConvShape, v: &[f32]) -> WeightMatrix {
    let (c, k) = (shape.c_out, shape.k);
    let full = format!("{}{wname}", w.prefix());
    WeightMatrix::from_f32(full, k, c, repack_depthwise(v, c, k))
        .expect("[c, 1, k] has c * k values")
}
