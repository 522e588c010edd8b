//! Mimi's streaming transformer (one before the downsample, one after the upsample).
//!
//! Pre-LayerNorm layers (weight + bias), no final norm:
//! `h = x + ls_attn * o_proj(attn(LN1(x)))`, `out = h + ls_mlp * fc2(gelu(fc1(LN2(h))))`, no
//! biases in the linears. Attention is causal over a sliding window (a key at distance
//! `q - k < window` is visible), with half-split RoPE applied to q and k. The KV cache of each
//! layer is a ring of `window + max_chunk` steps, and positions are `u64` with the angles
//! computed per chunk (no table), so a stream never runs out.

use super::MimiConfig;
use crate::Result;
use crate::kernels::attention::{AttnScratch, KvCache};
use crate::kernels::matmul::{QScratch, matmul};
use crate::kernels::norm::layer_norm_to;
use crate::kernels::rope::{Rope, RopeBuf};
use crate::kernels::{Kernels, Pool};
use crate::weights::{F32Tensor, WeightMatrix, Weights};

#[derive(Debug)]
struct Layer {
    ln1_w: F32Tensor,
    ln1_b: F32Tensor,
    q: WeightMatrix,
    k: WeightMatrix,
    v: WeightMatrix,
    o: WeightMatrix,
    ls_attn: F32Tensor,
    ln2_w: F32Tensor,
    ln2_b: F32Tensor,
    fc1: WeightMatrix,
    fc2: WeightMatrix,
    ls_mlp: F32Tensor,
}

/// The weights of one Mimi transformer.
#[derive(Debug)]
pub struct Transformer {
    layers: Vec<Layer>,
    rope: Rope,
    hidden: usize,
    heads: usize,
    head_dim: usize,
    ffn: usize,
    window: usize,
    eps: f32,
}

/// One stream's transformer state: a KV ring per layer, the next position and the buffers.
#[derive(Debug)]
pub struct TransformerState {
    caches: Vec<KvCache>,
    attn: AttnScratch,
    rope: RopeBuf,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    ff: Vec<f32>,
    qs: QScratch,
    max_n: usize,
    start: u64,
    pos: u64,
}

impl TransformerState {
    /// Position of the next step.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Back to the start position of this state, caches emptied.
    pub fn reset(&mut self) {
        self.caches.iter_mut().for_each(KvCache::reset);
        self.pos = self.start;
    }
}

impl Transformer {
    /// Loads `{prefix}.layers.{l}.*` for every layer of `cfg`.
    pub fn load(w: &Weights, prefix: &str, cfg: &MimiConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let qd = cfg.num_attention_heads * cfg.head_dim;
        let ffn = cfg.intermediate_size;
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| {
                let p = format!("{prefix}.layers.{l}");
                let vec = |n: &str| w.vector(&format!("{p}.{n}"), &[h]);
                let mat = |n: &str, r: usize, c: usize| w.linear(&format!("{p}.{n}"), &[r, c]);
                Ok(Layer {
                    ln1_w: vec("input_layernorm.weight")?,
                    ln1_b: vec("input_layernorm.bias")?,
                    q: mat("self_attn.q_proj.weight", qd, h)?,
                    k: mat("self_attn.k_proj.weight", qd, h)?,
                    v: mat("self_attn.v_proj.weight", qd, h)?,
                    o: mat("self_attn.o_proj.weight", h, qd)?,
                    ls_attn: vec("self_attn_layer_scale.scale")?,
                    ln2_w: vec("post_attention_layernorm.weight")?,
                    ln2_b: vec("post_attention_layernorm.bias")?,
                    fc1: mat("mlp.fc1.weight", ffn, h)?,
                    fc2: mat("mlp.fc2.weight", h, ffn)?,
                    ls_mlp: vec("mlp_layer_scale.scale")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            layers,
            rope: Rope::new(cfg.head_dim, cfg.rope_theta, None)?,
            hidden: h,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim,
            ffn,
            window: cfg.sliding_window,
            eps: cfg.norm_eps as f32,
        })
    }

    /// A fresh state processing up to `max_n` steps per call, the first at position `start`.
    pub fn state(&self, max_n: usize, start: u64) -> TransformerState {
        let qd = self.heads * self.head_dim;
        let cap = self.window + max_n;
        TransformerState {
            caches: (0..self.layers.len())
                .map(|_| KvCache::new(cap, self.heads, self.head_dim))
                .collect(),
            attn: AttnScratch::new(self.heads, cap),
            rope: RopeBuf::new(&self.rope, max_n),
            xn: vec![0.0; max_n * self.hidden],
            q: vec![0.0; max_n * qd],
            k: vec![0.0; max_n * qd],
            v: vec![0.0; max_n * qd],
            att: vec![0.0; max_n * qd],
            o: vec![0.0; max_n * self.hidden],
            ff: vec![0.0; max_n * self.ffn],
            qs: QScratch::new(max_n, self.hidden.max(self.ffn).max(qd)),
            max_n,
            start,
            pos: start,
        }
    }

    /// Runs `x` (`[n, hidden]`, the next `n` steps of the stream) through every layer in
    /// place, in sub-chunks of at most the state's `max_n` steps.
    pub fn forward(&self, k: &Kernels, pool: &Pool, st: &mut TransformerState, x: &mut [f32]) {
        let h = self.hidden;
        assert!(
            x.len().is_multiple_of(h),
            "transformer: input is not whole steps of {h}"
        );
        for chunk in x.chunks_mut(st.max_n * h) {
            self.forward_chunk(k, pool, st, chunk);
        }
    }

    fn forward_chunk(&self, kn: &Kernels, pool: &Pool, st: &mut TransformerState, x: &mut [f32]) {
        let h = self.hidden;
        let n = x.len() / h;
        let qd = self.heads * self.head_dim;
        let p0 = st.pos;
        st.rope.set(&self.rope, p0, n);
        let (xn, q, kk, v) = (
            &mut st.xn[..n * h],
            &mut st.q[..n * qd],
            &mut st.k[..n * qd],
            &mut st.v[..n * qd],
        );
        let (att, o, ff) = (
            &mut st.att[..n * qd],
            &mut st.o[..n * h],
            &mut st.ff[..n * self.ffn],
        );
        for (layer, cache) in self.layers.iter().zip(&mut st.caches) {
            layer_norm_to(x, xn, &layer.ln1_w, Some(&layer.ln1_b), self.eps);
            matmul(kn, pool, &layer.q.mat(), xn, q, &mut st.qs);
            matmul(kn, pool, &layer.k.mat(), xn, kk, &mut st.qs);
            matmul(kn, pool, &layer.v.mat(), xn, v, &mut st.qs);
            st.rope.apply(&self.rope, q);
            st.rope.apply(&self.rope, kk);
            cache.append(kk, v, p0);
            cache.attend(kn, pool, q, p0, Some(self.window), att, &mut st.attn);
            matmul(kn, pool, &layer.o.mat(), att, o, &mut st.qs);
            add_scaled(x, o, &layer.ls_attn);
            layer_norm_to(x, xn, &layer.ln2_w, Some(&layer.ln2_b), self.eps);
            matmul(kn, pool, &layer.fc1.mat(), xn, ff, &mut st.qs);
            kn.gelu(ff);
            matmul(kn, pool, &layer.fc2.mat(), ff, o, &mut st.qs);
            add_scaled(x, o, &layer.ls_mlp);
        }
        st.pos += n as u64;
    }
}

/// `x[t, c] += scale[c] * y[t, c]`.
fn add_scaled(x: &mut [f32], y: &[f32], scale: &[f32]) {
    for (xr, yr) in x
        .chunks_exact_mut(scale.len())
        .zip(y.chunks_exact(scale.len()))
    {
        for ((xv, yv), s) in xr.iter_mut().zip(yr).zip(scale) {
            *xv += s * yv;
        }
    }
}
