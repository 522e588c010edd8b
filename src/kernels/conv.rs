//! 1-D convolutions over time, token-major: activations are `[t, channels]` row-major.
//!
//! [`conv1d`] is a *valid* (unpadded) convolution: padding and streaming history are the model's
//! business (it keeps a history buffer and passes history + new input). Dense and grouped
//! convolutions go through the threaded [`matmul`]: with the weights' columns in tap-major
//! order ([`ColumnOrder::TapMajor`], what `quantize` stores) and no dilation, each output
//! step's input window is a contiguous run of the input, multiplied in place as overlapping
//! rows; otherwise the windows are gathered into scratch first (im2col). A depthwise
//! convolution is a direct loop.
//!
//! [`conv_transpose1d`] produces the full output `(t_in - 1) * stride + dilation * (k - 1) + 1`
//! steps long (the model trims the tail or keeps it as overlap for the next chunk). The dense
//! case multiplies every input step by a repacked weight ([`repack_conv_transpose`]) and then
//! overlap-adds the per-step columns into the output (col2im); depthwise is a direct loop.
//!
//! Nothing here allocates: a [`ConvScratch`] is sized once, at model construction, by a
//! `reserve_*` call per layer.

use super::dispatch::Kernels;
use super::matmul::{Mat, QScratch, matmul, matmul_strided};
use super::pool::Pool;
use super::q8::{QK, blocks};

/// The order of the columns of a [`conv1d`] weight row, `(c_in / groups) * k` of them. The same
/// choice orders the rows of a dense [`conv_transpose1d`] weight (`j * c_out + o` tap-major,
/// `o * k + j` channel-major, see [`repack_conv_transpose`]) and a depthwise layer's F32 table
/// (`[k, c]` tap-major, PyTorch's `[c, k]` channel-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnOrder {
    /// Column `i * k + j` holds input channel `i` at tap `j`: PyTorch's `[c_out, c_in, k]`
    /// flattened (what a transformers checkpoint stores, and `edgecsm` files before format 5).
    ChannelMajor,
    /// Column `j * (c_in / groups) + i`: the taps one after the other, each a whole step of
    /// input channels ([`crate::weights::Layout::Conv`]). A window of the input is then a
    /// contiguous run of `[t, c_in]` activations, read in place.
    TapMajor,
}

/// The shape of a convolution layer (PyTorch's `Conv1d` / `ConvTranspose1d` arguments) and the
/// column order of its [`conv1d`] weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub c_in: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub dilation: usize,
    pub groups: usize,
    pub order: ColumnOrder,
}

impl ConvShape {
    /// A dense convolution (dilation 1, one group).
    pub fn new(c_in: usize, c_out: usize, k: usize, stride: usize) -> Self {
        ConvShape {
            c_in,
            c_out,
            k,
            stride,
            dilation: 1,
            groups: 1,
            order: ColumnOrder::ChannelMajor,
        }
    }

    pub fn with_order(self, order: ColumnOrder) -> Self {
        ConvShape { order, ..self }
    }

    /// Whether [`conv1d`] reads the input windows in place: dense, tap-major, undilated (or
    /// one tap at stride 1, where the input already is the column matrix).
    fn reads_in_place(&self) -> bool {
        self.groups == 1
            && ((self.order == ColumnOrder::TapMajor && self.dilation == 1)
                || (self.k == 1 && self.stride == 1))
    }

    pub fn with_dilation(self, dilation: usize) -> Self {
        ConvShape { dilation, ..self }
    }

    pub fn with_groups(self, groups: usize) -> Self {
        ConvShape { groups, ..self }
    }

    /// The span of input steps one output step reads: `dilation * (k - 1) + 1`.
    pub fn span(&self) -> usize {
        self.dilation * (self.k - 1) + 1
    }

    /// Output steps of a valid [`conv1d`] over `t_in` input steps (0 if the input is shorter
    /// than the kernel span).
    pub fn conv_out_len(&self, t_in: usize) -> usize {
        if t_in < self.span() {
            0
        } else {
            (t_in - self.span()) / self.stride + 1
        }
    }

    /// Output steps of a full [`conv_transpose1d`] over `t_in` input steps (0 for no input).
    pub fn transpose_out_len(&self, t_in: usize) -> usize {
        if t_in == 0 {
            0
        } else {
            (t_in - 1) * self.stride + self.span()
        }
    }

    /// Whether this is a depthwise convolution (one group per channel, one output per group).
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c_in && self.groups == self.c_out
    }

    fn check(&self, what: &str) {
        let s = self;
        assert!(
            s.c_in > 0 && s.c_out > 0 && s.k > 0 && s.stride > 0 && s.dilation > 0 && s.groups > 0,
            "{what}: zero in shape {s:?}"
        );
        assert!(
            s.c_in.is_multiple_of(s.groups) && s.c_out.is_multiple_of(s.groups),
            "{what}: channels not divisible by groups in {s:?}"
        );
    }
}

/// Scratch for the convolutions of one model: an f32 work area (im2col columns, per-step
/// transposed-conv columns) and the Q8 activation scratch of the products. Create it empty and
/// call a `reserve_*` method for every layer at construction; a call that needs more than was
/// reserved panics (a programming error).
#[derive(Debug, Default)]
pub struct ConvScratch {
    buf: Vec<f32>,
    q: QScratch,
    /// Q8 blocks `q` has room for.
    q_blocks: usize,
}

impl ConvScratch {
    pub fn new() -> Self {
        Self::default()
    }

    fn reserve(&mut self, floats: usize, q_blocks: usize) {
        if floats > self.buf.len() {
            self.buf.resize(floats, 0.0);
        }
        if q_blocks > self.q_blocks {
            self.q_blocks = q_blocks;
            self.q = QScratch::new(1, q_blocks * QK);
        }
    }

    /// Makes room for [`conv1d`] with shape `s` producing up to `max_t_out` steps per call.
    pub fn reserve_conv1d(&mut self, s: ConvShape, max_t_out: usize) {
        s.check("reserve_conv1d");
        if s.is_depthwise() {
            return;
        }
        let cig = s.c_in / s.groups;
        let cog = s.c_out / s.groups;
        let cols = cig * s.k;
        let floats = if s.reads_in_place() {
            0
        } else if s.groups == 1 {
            max_t_out * cols
        } else {
            max_t_out * (cols + cog)
        };
        self.reserve(floats, max_t_out * blocks(cols));
    }

    /// Makes room for [`conv_transpose1d`] with shape `s` over up to `max_t_in` input steps.
    pub fn reserve_conv_transpose1d(&mut self, s: ConvShape, max_t_in: usize) {
        s.check("reserve_conv_transpose1d");
        if s.is_depthwise() {
            return;
        }
        self.reserve(max_t_in * s.c_out * s.k, max_t_in * blocks(s.c_in));
    }

    fn take(&mut self, floats: usize, q_blocks: usize, what: &str) -> (&mut [f32], &mut QScratch) {
        assert!(
            floats <= self.buf.len() && q_blocks <= self.q_blocks,
            "{what}: ConvScratch too small (needs {floats} floats and {q_blocks} Q8 blocks, \
             has {} and {}): reserve it for this layer and length at construction",
            self.buf.len(),
            self.q_blocks
        );
        (&mut self.buf[..floats], &mut self.q)
    }
}

/// The `(rows, cols)` of a depthwise layer's F32 table: `[c, k]` channel-major (PyTorch's
/// `[c, 1, k]`), `[k, c]` tap-major (each tap's weights contiguous, as the loop reads them);
/// `None` for other layers.
fn depthwise_table(s: ConvShape) -> Option<(usize, usize)> {
    s.is_depthwise().then_some(match s.order {
        ColumnOrder::ChannelMajor => (s.c_out, s.k),
        ColumnOrder::TapMajor => (s.k, s.c_out),
    })
}

/// `y[c] += w[c, tap j] * x[c]` for every channel of a depthwise layer.
#[inline]
fn depthwise_tap(s: ConvShape, wf: &[f32], j: usize, x: &[f32], y: &mut [f32]) {
    match s.order {
        ColumnOrder::TapMajor => {
            let wj = &wf[j * y.len()..(j + 1) * y.len()];
            for ((yv, xv), wv) in y.iter_mut().zip(x).zip(wj) {
                *yv += wv * xv;
            }
        }
        ColumnOrder::ChannelMajor => {
            for (c, (yv, xv)) in y.iter_mut().zip(x).enumerate() {
                *yv += wf[c * s.k + j] * xv;
            }
        }
    }
}

fn f32_weights<'a>(w: &Mat<'a>, what: &str) -> &'a [f32] {
    match *w {
        Mat::F32 { w, .. } => w,
        _ => panic!("{what}: depthwise weights must be F32 (keep them unquantized at load)"),
    }
}

fn add_bias(y: &mut [f32], bias: Option<&[f32]>, c: usize, what: &str) {
    if let Some(b) = bias {
        assert_eq!(b.len(), c, "{what}: bias length {} != {c}", b.len());
        for row in y.chunks_exact_mut(c) {
            for (v, bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
}

/// Valid 1-D convolution: `x` is `[t_in, c_in]`, `y` is `[s.conv_out_len(t_in), c_out]`.
///
/// `y[t, o] = bias[o] + sum_{i, j} w[o, i, j] * x[t * stride + j * dilation, g * c_in/groups + i]`
/// where `g` is the group of output channel `o`. Weights are PyTorch's `[c_out, c_in/groups, k]`
/// flattened to a `Mat` of `[c_out, (c_in/groups) * k]` (any format; F32 for depthwise).
#[allow(clippy::too_many_arguments)]
pub fn conv1d(
    k: &Kernels,
    pool: &Pool,
    s: ConvShape,
    w: &Mat,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut ConvScratch,
) {
    s.check("conv1d");
    let cig = s.c_in / s.groups;
    let cog = s.c_out / s.groups;
    let cols = cig * s.k;
    let (wr, wc) = depthwise_table(s).unwrap_or((s.c_out, cols));
    assert!(
        w.rows() == wr && w.cols() == wc,
        "conv1d: weight is [{}, {}], shape {s:?} needs [{wr}, {wc}]",
        w.rows(),
        w.cols(),
    );
    assert!(
        x.len().is_multiple_of(s.c_in),
        "conv1d: input is not whole steps of {} channels",
        s.c_in
    );
    let t_in = x.len() / s.c_in;
    let t_out = s.conv_out_len(t_in);
    assert_eq!(
        y.len(),
        t_out * s.c_out,
        "conv1d: output must be [{t_out}, {}] for {t_in} input steps",
        s.c_out
    );
    if t_out == 0 {
        return;
    }
    let (c_in, kk, stride, dil) = (s.c_in, s.k, s.stride, s.dilation);
    if s.is_depthwise() {
        let wf = f32_weights(w, "conv1d");
        for (t, yrow) in y.chunks_exact_mut(c_in).enumerate() {
            yrow.fill(0.0);
            for j in 0..kk {
                let xrow = &x[(t * stride + j * dil) * c_in..][..c_in];
                depthwise_tap(s, wf, j, xrow, yrow);
            }
        }
    } else if s.reads_in_place() {
        // output step t reads the `cols` values from input step t * stride on: overlapping
        // rows of x (or, one tap at stride 1, exactly its rows)
        let (_, q) = scratch.take(0, t_out * blocks(cols), "conv1d");
        let ld = stride * c_in;
        matmul_strided(k, pool, w, &x[..(t_out - 1) * ld + cols], ld, y, q);
    } else if s.groups == 1 {
        let (col, q) = scratch.take(t_out * cols, t_out * blocks(cols), "conv1d");
        im2col(s, x, 0, col);
        matmul(k, pool, w, col, y, q);
    } else {
        let (buf, q) = scratch.take(t_out * (cols + cog), t_out * blocks(cols), "conv1d");
        let (col, tmp) = buf.split_at_mut(t_out * cols);
        for g in 0..s.groups {
            im2col(s, x, g, col);
            // packed weights are sliced in whole panels: each group's rows start on one
            matmul(k, pool, &w.slice_rows(g * cog, (g + 1) * cog), col, tmp, q);
            for (yrow, trow) in y.chunks_exact_mut(s.c_out).zip(tmp.chunks_exact(cog)) {
                yrow[g * cog..(g + 1) * cog].copy_from_slice(trow);
            }
        }
    }
    add_bias(y, bias, s.c_out, "conv1d");
}

/// Gathers the input windows of group `g` into `col` (`[t_out, (c_in / groups) * k]`) in the
/// weights' column order.
fn im2col(s: ConvShape, x: &[f32], g: usize, col: &mut [f32]) {
    let cig = s.c_in / s.groups;
    let (kk, c_in) = (s.k, s.c_in);
    for (t, crow) in col.chunks_exact_mut(cig * kk).enumerate() {
        for j in 0..kk {
            let xrow = &x[(t * s.stride + j * s.dilation) * c_in + g * cig..][..cig];
            match s.order {
                ColumnOrder::TapMajor => crow[j * cig..(j + 1) * cig].copy_from_slice(xrow),
                ColumnOrder::ChannelMajor => {
                    for (i, xv) in xrow.iter().enumerate() {
                        crow[i * kk + j] = *xv;
                    }
                }
            }
        }
    }
}

/// Rearranges a depthwise layer's PyTorch weights `[c, 1, k]` into the `[k, c]` table a
/// [`ColumnOrder::TapMajor`] depthwise [`conv1d`] or [`conv_transpose1d`] reads (each tap's
/// weights contiguous); done at load, the tables are a few KB.
pub fn repack_depthwise(w: &[f32], c: usize, k: usize) -> Vec<f32> {
    assert_eq!(
        w.len(),
        c * k,
        "repack_depthwise: {} values for [{c}, 1, {k}]",
        w.len()
    );
    let mut t = vec![0f32; c * k];
    for (ch, row) in w.chunks_exact(k).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            t[j * c + ch] = x;
        }
    }
    t
}

/// Rearranges a dense PyTorch `ConvTranspose1d` weight `[c_in, c_out, k]` into the `[c_out *
/// k, c_in]` matrix [`conv_transpose1d`] multiplies by, column `i`: row `j * c_out + o` in
/// [`ColumnOrder::TapMajor`] (what `quantize` stores, [`crate::weights::Layout::ConvTransposeTaps`]),
/// row `o * k + j` in [`ColumnOrder::ChannelMajor`] (format 3 and 4 files,
/// [`crate::weights::Layout::ConvTranspose`]).
pub fn repack_conv_transpose<T: Copy + Default>(
    w: &[T],
    c_in: usize,
    c_out: usize,
    k: usize,
    order: ColumnOrder,
) -> Vec<T> {
    assert_eq!(
        w.len(),
        c_in * c_out * k,
        "repack_conv_transpose: weight is not [{c_in}, {c_out}, {k}]"
    );
    let mut out = vec![T::default(); w.len()];
    for i in 0..c_in {
        for o in 0..c_out {
            for j in 0..k {
                let row = match order {
                    ColumnOrder::TapMajor => j * c_out + o,
                    ColumnOrder::ChannelMajor => o * k + j,
                };
                out[row * c_in + i] = w[(i * c_out + o) * k + j];
            }
        }
    }
    out
}

/// Full transposed 1-D convolution: `x` is `[t_in, c_in]`, `y` is
/// `[s.transpose_out_len(t_in), c_out]`:
/// `y[t * stride + j * dilation, o] += w[i, o, j] * x[t, i]`, plus `bias[o]` once per output step.
///
/// Dense (`groups == 1`): `w` is the [`repack_conv_transpose`] matrix `[c_out * k, c_in]` (any
/// format) in `s.order`; tap-major, each input step's products are `k` whole output steps,
/// added contiguously. Depthwise (`groups == c_in == c_out`): `w` is PyTorch's `[c, 1, k]` as an F32 `Mat`
/// of `[c, k]`. Other group counts are not supported (no model here uses them) and panic.
#[allow(clippy::too_many_arguments)]
pub fn conv_transpose1d(
    k: &Kernels,
    pool: &Pool,
    s: ConvShape,
    w: &Mat,
    bias: Option<&[f32]>,
    x: &[f32],
    y: &mut [f32],
    scratch: &mut ConvScratch,
) {
    s.check("conv_transpose1d");
    assert!(
        s.groups == 1 || s.is_depthwise(),
        "conv_transpose1d: only dense or depthwise, not {s:?}"
    );
    let (c_in, c_out, kk, stride, dil) = (s.c_in, s.c_out, s.k, s.stride, s.dilation);
    let (wr, wc) = depthwise_table(s).unwrap_or((c_out * kk, c_in));
    assert!(
        w.rows() == wr && w.cols() == wc,
        "conv_transpose1d: weight is [{}, {}], shape {s:?} needs [{wr}, {wc}]",
        w.rows(),
        w.cols()
    );
    assert!(
        x.len().is_multiple_of(c_in),
        "conv_transpose1d: input is not whole steps of {c_in} channels"
    );
    let t_in = x.len() / c_in;
    let t_out = s.transpose_out_len(t_in);
    assert_eq!(
        y.len(),
        t_out * c_out,
        "conv_transpose1d: output must be [{t_out}, {c_out}] for {t_in} input steps"
    );
    if t_in == 0 {
        return;
    }
    y.fill(0.0);
    if s.is_depthwise() {
        let wf = f32_weights(w, "conv_transpose1d");
        for (t, xrow) in x.chunks_exact(c_in).enumerate() {
            for j in 0..kk {
                let yrow = &mut y[(t * stride + j * dil) * c_out..][..c_out];
                depthwise_tap(s, wf, j, xrow, yrow);
            }
        }
    } else {
        let zc = c_out * kk;
        let (z, q) = scratch.take(t_in * zc, t_in * blocks(c_in), "conv_transpose1d");
        matmul(k, pool, w, x, z, q);
        for (t, zrow) in z.chunks_exact(zc).enumerate() {
            for j in 0..kk {
                let yrow = &mut y[(t * stride + j * dil) * c_out..][..c_out];
                match s.order {
                    ColumnOrder::TapMajor => {
                        for (yv, zv) in yrow.iter_mut().zip(&zrow[j * c_out..(j + 1) * c_out]) {
                            *yv += zv;
                        }
                    }
                    ColumnOrder::ChannelMajor => {
                        for (o, yv) in yrow.iter_mut().enumerate() {
                            *yv += zrow[o * kk + j];
                        }
                    }
                }
            }
        }
    }
    add_bias(y, bias, c_out, "conv_transpose1d");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::packed::pack_float;
    use half::f16;

    use crate::kernels::test_rand::rand_vec;

    /// Direct PyTorch-layout convolution: `w` is `[c_out, c_in/groups, k]`.
    fn naive_conv(s: ConvShape, w: &[f32], b: Option<&[f32]>, x: &[f32]) -> Vec<f32> {
        let t_in = x.len() / s.c_in;
        let t_out = s.conv_out_len(t_in);
        let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
        let mut y = vec![0f32; t_out * s.c_out];
        for t in 0..t_out {
            for o in 0..s.c_out {
                let g = o / cog;
                let mut acc = b.map_or(0.0, |b| b[o] as f64);
                for i in 0..cig {
                    for j in 0..s.k {
                        let xi = (t * s.stride + j * s.dilation) * s.c_in + g * cig + i;
                        acc += (w[(o * cig + i) * s.k + j] * x[xi]) as f64;
                    }
                }
                y[t * s.c_out + o] = acc as f32;
            }
        }
        y
    }

    /// Direct transposed convolution: `w` is `[c_in, c_out/groups, k]`.
    fn naive_transpose(s: ConvShape, w: &[f32], b: Option<&[f32]>, x: &[f32]) -> Vec<f32> {
        let t_in = x.len() / s.c_in;
        let t_out = s.transpose_out_len(t_in);
        let (cig, cog) = (s.c_in / s.groups, s.c_out / s.groups);
        let mut y = vec![0f64; t_out * s.c_out];
        for t in 0..t_in {
            for i in 0..s.c_in {
                let g = i / cig;
                for ol in 0..cog {
                    let o = g * cog + ol;
                    for j in 0..s.k {
                        y[(t * s.stride + j * s.dilation) * s.c_out + o] +=
                            (w[(i * cog + ol) * s.k + j] * x[t * s.c_in + i]) as f64;
                    }
                }
            }
        }
        for (idx, v) in y.iter_mut().enumerate() {
            *v += b.map_or(0.0, |b| b[idx % s.c_out] as f64);
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}: [{i}] {x} vs {y}"
            );
        }
    }

    #[test]
    fn conv1d_matches_direct_convolution() {
        let k = Kernels::get();
        let shapes = [
            ConvShape::new(3, 5, 7, 1),
            ConvShape::new(4, 6, 4, 2),
            ConvShape::new(8, 4, 3, 1).with_dilation(3),
            ConvShape::new(6, 6, 3, 2).with_dilation(2),
            ConvShape::new(5, 7, 1, 1),
            ConvShape::new(5, 7, 1, 3),
            ConvShape::new(6, 6, 3, 1).with_groups(6),
            ConvShape::new(6, 6, 4, 2).with_dilation(2).with_groups(6),
            // grouped: each group's rows are whole panels of 8
            ConvShape::new(4, 16, 3, 1).with_groups(2),
            ConvShape::new(6, 16, 2, 2).with_dilation(3).with_groups(2),
            ConvShape::new(4, 32, 3, 1).with_groups(4),
        ];
        let orders = [ColumnOrder::ChannelMajor, ColumnOrder::TapMajor];
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            for (n, s) in shapes.iter().enumerate() {
                for s in orders.map(|o| s.with_order(o)) {
                    let cols = s.c_in / s.groups * s.k;
                    // `w` in PyTorch's order for the reference, `wo` in the shape's order
                    let w = rand_vec(s.c_out * cols, n as u64 + 1);
                    let wo = in_order(s, &w);
                    let wd = if s.is_depthwise() {
                        depthwise_in_order(s, &w)
                    } else {
                        Vec::new()
                    };
                    let b = rand_vec(s.c_out, n as u64 + 100);
                    let mut scratch = ConvScratch::new();
                    scratch.reserve_conv1d(s, 40);
                    for t_in in [0, 1, s.span() - 1, s.span(), s.span() + 1, 23, 40] {
                        let x = rand_vec(t_in * s.c_in, (n * 1000 + t_in) as u64);
                        let t_out = s.conv_out_len(t_in);
                        if t_in < s.span() {
                            assert_eq!(t_out, 0);
                        }
                        let mut y = vec![f32::NAN; t_out * s.c_out];
                        let packed = pack_float(&wo, s.c_out, cols, 0.0);
                        let m = if s.is_depthwise() {
                            let (rows, cols) = depthwise_table(s).unwrap();
                            Mat::F32 { w: &wd, rows, cols }
                        } else {
                            Mat::F32P {
                                w: &packed,
                                rows: s.c_out,
                                cols,
                            }
                        };
                        for bias in [None, Some(&b[..])] {
                            let want = naive_conv(s, &w, bias, &x);
                            conv1d(k, &pool, s, &m, bias, &x, &mut y, &mut scratch);
                            close(&y, &want, 1e-5, &format!("{s:?} t_in {t_in}"));
                        }
                        if !s.is_depthwise() {
                            // any weight format goes through the same path
                            let wr: Vec<f32> =
                                w.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
                            let wh: Vec<f16> =
                                in_order(s, &wr).into_iter().map(f16::from_f32).collect();
                            let want = naive_conv(s, &wr, None, &x);
                            let hp = pack_float(&wh, s.c_out, cols, f16::ZERO);
                            let m = Mat::F16P {
                                w: &hp,
                                rows: s.c_out,
                                cols,
                            };
                            conv1d(k, &pool, s, &m, None, &x, &mut y, &mut scratch);
                            close(&y, &want, 1e-5, &format!("f16 {s:?} t_in {t_in}"));
                        }
                    }
                }
            }
        }
    }

    /// A depthwise layer's PyTorch-order weights `[c, k]` as its table in `s.order`.
    fn depthwise_in_order(s: ConvShape, w: &[f32]) -> Vec<f32> {
        match s.order {
            ColumnOrder::ChannelMajor => w.to_vec(),
            ColumnOrder::TapMajor => repack_depthwise(w, s.c_out, s.k),
        }
    }

    /// PyTorch-order conv weights `[c_out, cig * k]` rearranged into `s.order`.
    fn in_order(s: ConvShape, w: &[f32]) -> Vec<f32> {
        let (cig, k) = (s.c_in / s.groups, s.k);
        match s.order {
            ColumnOrder::ChannelMajor => w.to_vec(),
            ColumnOrder::TapMajor => {
                let mut out = vec![0.0; w.len()];
                for (orow, wrow) in out.chunks_exact_mut(cig * k).zip(w.chunks_exact(cig * k)) {
                    for i in 0..cig {
                        for j in 0..k {
                            orow[j * cig + i] = wrow[i * k + j];
                        }
                    }
                }
                out
            }
        }
    }

    #[test]
    fn conv_transpose1d_matches_direct_transposed_convolution() {
        let k = Kernels::get();
        let shapes = [
            ConvShape::new(3, 5, 4, 2),
            ConvShape::new(6, 4, 10, 5),
            ConvShape::new(4, 4, 3, 1),
            ConvShape::new(5, 3, 1, 1),
            ConvShape::new(5, 3, 1, 3),
            ConvShape::new(4, 6, 3, 2).with_dilation(2),
            ConvShape::new(2, 3, 2, 4),
            ConvShape::new(6, 6, 4, 2).with_groups(6),
            ConvShape::new(5, 5, 3, 1).with_dilation(2).with_groups(5),
        ];
        let orders = [ColumnOrder::ChannelMajor, ColumnOrder::TapMajor];
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            for (n, s) in shapes.iter().enumerate() {
                for s in orders.map(|o| s.with_order(o)) {
                    let cog = s.c_out / s.groups;
                    let w = rand_vec(s.c_in * cog * s.k, n as u64 + 7);
                    let wd = if s.is_depthwise() {
                        depthwise_in_order(s, &w)
                    } else {
                        Vec::new()
                    };
                    let b = rand_vec(s.c_out, n as u64 + 70);
                    let packed;
                    let m = if s.is_depthwise() {
                        let (rows, cols) = depthwise_table(s).unwrap();
                        Mat::F32 { w: &wd, rows, cols }
                    } else {
                        let r = repack_conv_transpose(&w, s.c_in, s.c_out, s.k, s.order);
                        packed = pack_float(&r, s.c_out * s.k, s.c_in, 0.0);
                        Mat::F32P {
                            w: &packed,
                            rows: s.c_out * s.k,
                            cols: s.c_in,
                        }
                    };
                    let mut scratch = ConvScratch::new();
                    scratch.reserve_conv_transpose1d(s, 17);
                    for t_in in [0, 1, 2, 9, 17] {
                        let x = rand_vec(t_in * s.c_in, (n * 100 + t_in) as u64);
                        let t_out = s.transpose_out_len(t_in);
                        let mut y = vec![f32::NAN; t_out * s.c_out];
                        for bias in [None, Some(&b[..])] {
                            let want = naive_transpose(s, &w, bias, &x);
                            conv_transpose1d(k, &pool, s, &m, bias, &x, &mut y, &mut scratch);
                            close(&y, &want, 1e-5, &format!("{s:?} t_in {t_in}"));
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "ConvScratch too small")]
    fn a_call_longer_than_reserved_panics_clearly() {
        let k = Kernels::get();
        let pool = Pool::new(1);
        let s = ConvShape::new(2, 2, 3, 1);
        let w = pack_float(&[0.5f32; 12], 2, 6, 0.0);
        let m = Mat::F32P {
            w: &w,
            rows: 2,
            cols: 6,
        };
        let mut scratch = ConvScratch::new();
        scratch.reserve_conv1d(s, 4);
        let x = vec![1f32; 2 * 10];
        let mut y = vec![0f32; 2 * 8];
        conv1d(k, &pool, s, &m, None, &x, &mut y, &mut scratch);
    }
}
