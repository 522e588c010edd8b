//! A Llama decoder stack (the shape of both CSM transformers: the backbone and the depth
//! decoder): pre-RMSNorm layers of grouped-query attention with half-split RoPE (Llama-3
//! frequency scaling optional) and a SwiGLU MLP, then a final RMSNorm.
//!
//! [`Llama`] holds the weights (immutable, shareable); [`LlamaState`] holds everything that
//! changes: one preallocated [`KvCache`] per layer sized for the configured maximum number of
//! positions, and every scratch buffer sized at construction for the largest chunk of tokens
//! it will be given. [`LlamaState::forward`] runs `n` tokens at the next positions (a prefill
//! chunk or a single decode step) and allocates nothing.
//!
//! Weights are read through [`crate::kernels::matmul::matmul`], so F32, F16 and Q8 tensors all
//! work; names follow the transformers checkpoint (`layers.{i}.self_attn.q_proj.weight`, ...)
//! under whatever prefix the [`Weights`] carry. The transformers q/k rows are already permuted
//! for the half-split RoPE form that [`Rope`] implements.

use crate::kernels::attention::{AttnScratch, KvCache};
use crate::kernels::matmul::matmul;
use crate::kernels::norm::rms_norm_to;
use crate::kernels::rope::{Llama3Scaling, Rope, RopeBuf};
use crate::kernels::{Kernels, Pool, QScratch};
use crate::weights::{F32Tensor, WeightMatrix, Weights};
use crate::{Error, Result};

/// The dimensions of one Llama stack.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    /// Positions the KV cache holds (`max_position_embeddings`).
    pub max_positions: usize,
}

impl LlamaConfig {
    /// Checks the values a stack can be built from; `what` names the stack in errors.
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |msg: String| Err(Error::Invalid(format!("{what} config: {msg}")));
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_layers),
            ("num_attention_heads", self.num_heads),
            ("num_key_value_heads", self.num_kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_positions),
        ];
        for (name, v) in sizes {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return bad(format!("bad rms_norm_eps {}", self.rms_norm_eps));
        }
        let sizes = [
            self.num_layers,
            self.max_positions,
            self.num_kv_heads,
            self.head_dim,
        ];
        crate::config::kv_cache_fits("", "max_position_embeddings", sizes).or_else(bad)?;
        Rope::new(self.head_dim, self.rope_theta, self.rope_scaling)
            .map_err(|e| Error::Invalid(format!("{what} config: {e}")))?;
        Ok(())
    }

    fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

#[derive(Debug)]
struct Layer {
    q: WeightMatrix,
    k: WeightMatrix,
    v: WeightMatrix,
    o: WeightMatrix,
    gate: WeightMatrix,
    up: WeightMatrix,
    down: WeightMatrix,
    attn_norm: F32Tensor,
    mlp_norm: F32Tensor,
}

/// The weights of a Llama stack (see the module docs).
#[derive(Debug)]
pub struct Llama {
    cfg: LlamaConfig,
    layers: Vec<Layer>,
    norm: F32Tensor,
    rope: Rope,
}

impl Llama {
    /// Loads `layers.{i}.*` and `norm.weight` from `w` (already prefixed, e.g.
    /// `backbone_model.`), checking every shape against `cfg`; errors name the tensor.
    pub fn load(w: &Weights, cfg: &LlamaConfig, what: &str) -> Result<Llama> {
        cfg.validate(what)?;
        let (h, qd, kvd, im) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("layers.{i}.");
            let m = |name: &str, shape: &[usize]| w.linear(&format!("{p}{name}"), shape);
            layers.push(Layer {
                q: m("self_attn.q_proj.weight", &[qd, h])?,
                k: m("self_attn.k_proj.weight", &[kvd, h])?,
                v: m("self_attn.v_proj.weight", &[kvd, h])?,
                o: m("self_attn.o_proj.weight", &[h, qd])?,
                gate: m("mlp.gate_proj.weight", &[im, h])?,
                up: m("mlp.up_proj.weight", &[im, h])?,
                down: m("mlp.down_proj.weight", &[h, im])?,
                attn_norm: w.vector(&format!("{p}input_layernorm.weight"), &[h])?,
                mlp_norm: w.vector(&format!("{p}post_attention_layernorm.weight"), &[h])?,
            });
        }
        let norm = w.vector("norm.weight", &[h])?;
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, cfg.rope_scaling)?;
        Ok(Llama {
            cfg: cfg.clone(),
            layers,
            norm,
            rope,
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The weight matrices of one forward pass, in the order it multiplies by them.
    pub fn matrices(&self) -> impl Iterator<Item = &WeightMatrix> {
        self.layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
    }

    /// Bytes of weights one forward pass reads (matrices only).
    pub fn weight_bytes(&self) -> usize {
        self.matrices().map(|m| m.mat().bytes()).sum()
    }
}

/// The mutable side of a [`Llama`]: KV caches, positions and scratch (see the module docs).
#[derive(Debug)]
pub struct LlamaState {
    max_chunk: usize,
    caches: Vec<KvCache>,
    attn: AttnScratch,
    rope: RopeBuf,
    /// Residual stream, `[max_chunk, hidden]`; the input rows are written here.
    x: Vec<f32>,
    /// Normed activations / sublayer outputs, `[max_chunk, hidden]`.
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    qs: QScratch,
    next_pos: u64,
}

impl LlamaState {
    /// State for `model` taking chunks of up to `max_chunk` tokens, with KV caches for
    /// `max_positions` positions.
    pub fn new(model: &Llama, max_chunk: usize) -> LlamaState {
        let c = &model.cfg;
        let n = max_chunk.max(1);
        let cap = c.max_positions;
        let widest = c.hidden_size.max(c.q_dim()).max(c.intermediate_size);
        LlamaState {
            max_chunk: n,
            caches: (0..c.num_layers)
                .map(|_| KvCache::new(cap, c.num_kv_heads, c.head_dim))
                .collect(),
            attn: AttnScratch::new(c.num_heads, cap),
            rope: RopeBuf::new(&model.rope, n),
            x: vec![0.0; n * c.hidden_size],
            xn: vec![0.0; n * c.hidden_size],
            q: vec![0.0; n * c.q_dim()],
            k: vec![0.0; n * c.kv_dim()],
            v: vec![0.0; n * c.kv_dim()],
            att: vec![0.0; n * c.q_dim()],
            gate: vec![0.0; n * c.intermediate_size],
            up: vec![0.0; n * c.intermediate_size],
            qs: QScratch::new(n, widest),
            next_pos: 0,
        }
    }

    /// The largest number of tokens one [`LlamaState::forward`] takes.
    pub fn max_chunk(&self) -> usize {
        self.max_chunk
    }

    /// Positions held in the KV cache (= the position of the next token).
    pub fn len(&self) -> usize {
        self.next_pos as usize
    }

    pub fn is_empty(&self) -> bool {
        self.next_pos == 0
    }

    /// Positions still free in the KV cache.
    pub fn remaining(&self) -> usize {
        self.caches
            .first()
            .map_or(0, |c| c.capacity() - self.next_pos as usize)
    }

    /// Forgets every position (the memory is kept).
    pub fn reset(&mut self) {
        for c in &mut self.caches {
            c.reset();
        }
        self.next_pos = 0;
    }

    /// The input rows of the next [`LlamaState::forward`] of `n` tokens, `[n, hidden]`.
    pub fn input_mut(&mut self, n: usize) -> &mut [f32] {
        let h = self.x.len() / self.max_chunk;
        &mut self.x[..n.min(self.max_chunk) * h]
    }

    /// Runs the `n` tokens whose input rows were written by [`LlamaState::input_mut`] at the
    /// next `n` positions and returns their final-normed hidden states, `[n, hidden]`.
    /// Errors (leaving the state unchanged) when `n` exceeds the chunk size or the cache.
    pub fn forward(&mut self, model: &Llama, k: &Kernels, pool: &Pool, n: usize) -> Result<&[f32]> {
        let c = &model.cfg;
        if n == 0 || n > self.max_chunk {
            return Err(Error::Invalid(format!(
                "llama forward: {n} tokens, the state takes 1 to {} at a time",
                self.max_chunk
            )));
        }
        if n > self.remaining() {
            return Err(Error::Invalid(format!(
                "llama forward: {n} more tokens exceed the {} positions of the KV cache ({} used)",
                c.max_positions, self.next_pos
            )));
        }
        let (h, qd, kvd, im) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let pos = self.next_pos;
        self.rope.set(&model.rope, pos, n);
        let x = &mut self.x[..n * h];
        let xn = &mut self.xn[..n * h];
        let q = &mut self.q[..n * qd];
        let kk = &mut self.k[..n * kvd];
        let v = &mut self.v[..n * kvd];
        let att = &mut self.att[..n * qd];
        let gate = &mut self.gate[..n * im];
        let up = &mut self.up[..n * im];
        let qs = &mut self.qs;
        for (layer, cache) in model.layers.iter().zip(&mut self.caches) {
            rms_norm_to(x, xn, &layer.attn_norm, c.rms_norm_eps);
            matmul(k, pool, &layer.q.mat(), xn, q, qs);
            matmul(k, pool, &layer.k.mat(), xn, kk, qs);
            matmul(k, pool, &layer.v.mat(), xn, v, qs);
            self.rope.apply(&model.rope, q);
            self.rope.apply(&model.rope, kk);
            cache.append(kk, v, pos);
            cache.attend(k, pool, q, pos, None, att, &mut self.attn);
            matmul(k, pool, &layer.o.mat(), att, xn, qs);
            add(x, xn);
            rms_norm_to(x, xn, &layer.mlp_norm, c.rms_norm_eps);
            matmul(k, pool, &layer.gate.mat(), xn, gate, qs);
            matmul(k, pool, &layer.up.mat(), xn, up, qs);
            k.silu_mul(gate, up);
            matmul(k, pool, &layer.down.mat(), gate, xn, qs);
            add(x, xn);
        }
        rms_norm_to(x, xn, &model.norm, c.rms_norm_eps);
        self.next_pos += n as u64;
        Ok(&self.xn[..n * h])
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::rope::Llama3Scaling;
    use std::collections::BTreeMap;
    use std::path::Path;

    pub(crate) fn rand_vec(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut v = crate::kernels::test_rand::rand_vec(n, seed);
        v.iter_mut().for_each(|x| *x *= scale);
        v
    }

    /// Writes `tensors` (name -> (shape, f32 data)) as one safetensors file in `dir`.
    pub(crate) fn write_safetensors(
        dir: &Path,
        tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, (s, d))| {
                (
                    n.clone(),
                    s.clone(),
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.clone(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    }

    pub(crate) fn tiny_cfg() -> LlamaConfig {
        LlamaConfig {
            hidden_size: 24,
            num_layers: 2,
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 6,
            intermediate_size: 40,
            rms_norm_eps: 1e-5,
            rope_theta: 500000.0,
            rope_scaling: Some(Llama3Scaling {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 16.0,
            }),
            max_positions: 40,
        }
    }

    /// Random Llama tensors under `prefix`.
    pub(crate) fn llama_tensors(
        cfg: &LlamaConfig,
        prefix: &str,
        seed: u64,
        t: &mut BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    ) {
        let (h, qd, kvd, im) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let mut s = seed;
        let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
            s += 1;
            let n = shape.iter().product();
            let d = rand_vec(n, s, scale).iter().map(|v| v + offset).collect();
            t.insert(name, (shape, d));
        };
        for i in 0..cfg.num_layers {
            let p = format!("{prefix}layers.{i}.");
            let sc = |c: usize| 1.0 / (c as f32).sqrt() * 1.7;
            add(
                format!("{p}self_attn.q_proj.weight"),
                vec![qd, h],
                sc(h),
                0.0,
            );
            add(
                format!("{p}self_attn.k_proj.weight"),
                vec![kvd, h],
                sc(h),
                0.0,
            );
            add(
                format!("{p}self_attn.v_proj.weight"),
                vec![kvd, h],
                sc(h),
                0.0,
            );
            add(
                format!("{p}self_attn.o_proj.weight"),
                vec![h, qd],
                sc(qd),
                0.0,
            );
            add(format!("{p}mlp.gate_proj.weight"), vec![im, h], sc(h), 0.0);
            add(format!("{p}mlp.up_proj.weight"), vec![im, h], sc(h), 0.0);
            add(format!("{p}mlp.down_proj.weight"), vec![h, im], sc(im), 0.0);
            add(format!("{p}input_layernorm.weight"), vec![h], 0.2, 1.0);
            add(
                format!("{p}post_attention_layernorm.weight"),
                vec![h],
                0.2,
                1.0,
            );
        }
        add(format!("{prefix}norm.weight"), vec![h], 0.2, 1.0);
    }

    /// Whole-sequence reference forward in f64 from the raw tensors.
    fn naive(
        cfg: &LlamaConfig,
        t: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
        input: &[f32],
    ) -> Vec<f32> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim);
        let n = input.len() / h;
        let get = |name: &str| &t[name].1;
        let lin = |w: &[f32], x: &[f64], rows: usize| -> Vec<f64> {
            let cols = x.len() / n;
            let mut y = vec![0f64; n * rows];
            for tt in 0..n {
                for r in 0..rows {
                    y[tt * rows + r] = (0..cols)
                        .map(|cc| w[r * cols + cc] as f64 * x[tt * cols + cc])
                        .sum();
                }
            }
            y
        };
        let norm = |x: &[f64], w: &[f32]| -> Vec<f64> {
            let mut y = x.to_vec();
            for row in y.chunks_mut(h) {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / h as f64;
                let s = 1.0 / (ms + cfg.rms_norm_eps as f64).sqrt();
                for (v, wi) in row.iter_mut().zip(w) {
                    *v *= s * *wi as f64;
                }
            }
            y
        };
        let rope = Rope::new(hd, cfg.rope_theta, cfg.rope_scaling).unwrap();
        let inv = rope.inv_freq();
        let rot = |x: &mut [f64], heads: usize| {
            for tt in 0..n {
                for hh in 0..heads {
                    let base = (tt * heads + hh) * hd;
                    for i in 0..hd / 2 {
                        let a = tt as f64 * inv[i];
                        let (u, v) = (x[base + i], x[base + i + hd / 2]);
                        x[base + i] = u * a.cos() - v * a.sin();
                        x[base + i + hd / 2] = v * a.cos() + u * a.sin();
                    }
                }
            }
        };
        let mut x: Vec<f64> = input.iter().map(|&v| v as f64).collect();
        let (nh, nkv) = (cfg.num_heads, cfg.num_kv_heads);
        for l in 0..cfg.num_layers {
            let p = format!("layers.{l}.");
            let xn = norm(&x, get(&format!("{p}input_layernorm.weight")));
            let mut q = lin(get(&format!("{p}self_attn.q_proj.weight")), &xn, nh * hd);
            let mut k = lin(get(&format!("{p}self_attn.k_proj.weight")), &xn, nkv * hd);
            let v = lin(get(&format!("{p}self_attn.v_proj.weight")), &xn, nkv * hd);
            rot(&mut q, nh);
            rot(&mut k, nkv);
            let mut att = vec![0f64; n * nh * hd];
            for tt in 0..n {
                for hh in 0..nh {
                    let g = hh / (nh / nkv);
                    let sc: Vec<f64> = (0..=tt)
                        .map(|s| {
                            (0..hd)
                                .map(|d| q[(tt * nh + hh) * hd + d] * k[(s * nkv + g) * hd + d])
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = sc.iter().map(|s| (s - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for d in 0..hd {
                        att[(tt * nh + hh) * hd + d] =
                            (0..=tt).map(|s| e[s] / z * v[(s * nkv + g) * hd + d]).sum();
                    }
                }
            }
            let o = lin(get(&format!("{p}self_attn.o_proj.weight")), &att, h);
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
            let xn = norm(&x, get(&format!("{p}post_attention_layernorm.weight")));
            let im = cfg.intermediate_size;
            let g = lin(get(&format!("{p}mlp.gate_proj.weight")), &xn, im);
            let u = lin(get(&format!("{p}mlp.up_proj.weight")), &xn, im);
            let gu: Vec<f64> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let d = lin(get(&format!("{p}mlp.down_proj.weight")), &gu, h);
            for (a, b) in x.iter_mut().zip(&d) {
                *a += b;
            }
        }
        norm(&x, get("norm.weight"))
            .iter()
            .map(|&v| v as f32)
            .collect()
    }

    #[test]
    fn chunked_and_stepped_forward_match_a_naive_whole_sequence_pass() {
        let cfg = tiny_cfg();
        let mut t = BTreeMap::new();
        llama_tensors(&cfg, "", 7, &mut t);
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(dir.path(), &t);
        let w = Weights::open(dir.path()).unwrap();
        let model = Llama::load(&w, &cfg, "test").unwrap();
        let n = 23;
        let input = rand_vec(n * cfg.hidden_size, 99, 1.0);
        let want = naive(&cfg, &t, &input);
        let k = Kernels::get();
        for threads in [1, 2] {
            let pool = Pool::new(threads);
            for chunk in [1, 5, 23] {
                let mut st = LlamaState::new(&model, chunk);
                let h = cfg.hidden_size;
                let mut t0 = 0;
                while t0 < n {
                    let t1 = (t0 + chunk).min(n);
                    st.input_mut(t1 - t0)
                        .copy_from_slice(&input[t0 * h..t1 * h]);
                    let out = st.forward(&model, k, &pool, t1 - t0).unwrap();
                    for (i, (a, b)) in out.iter().zip(&want[t0 * h..t1 * h]).enumerate() {
                        assert!(
                            (a - b).abs() < 1e-4 * (1.0 + b.abs()),
                            "chunk {chunk} threads {threads} row {} [{i}]: {a} vs {b}",
                            t0
                        );
                    }
                    t0 = t1;
                }
                assert_eq!(st.len(), n);
            }
        }
    }

    #[test]
    fn bad_shapes_and_overflow_are_errors() {
        let cfg = tiny_cfg();
        let mut t = BTreeMap::new();
        llama_tensors(&cfg, "", 7, &mut t);
        let dir = tempfile::tempdir().unwrap();
        write_safetensors(dir.path(), &t);
        let w = Weights::open(dir.path()).unwrap();
        let mut wrong = cfg.clone();
        wrong.intermediate_size = 41;
        let e = Llama::load(&w, &wrong, "test").unwrap_err().to_string();
        assert!(e.contains("layers.0.mlp.gate_proj.weight"), "{e}");
        let mut wrong = cfg.clone();
        wrong.num_kv_heads = 3;
        assert!(Llama::load(&w, &wrong, "test").is_err());
        // a KV cache past the limit is refused before any state is built (it used to panic
        // with a capacity overflow in KvCache::new)
        let mut wrong = cfg.clone();
        wrong.max_positions = 1 << 62;
        let e = Llama::load(&w, &wrong, "test").unwrap_err().to_string();
        assert!(
            e.contains("max_position_embeddings") && e.contains("limit"),
            "{e}"
        );
        let model = Llama::load(&w, &cfg, "test").unwrap();
        let pool = Pool::new(1);
        let mut st = LlamaState::new(&model, 8);
        assert!(st.forward(&model, Kernels::get(), &pool, 9).is_err());
        for _ in 0..5 {
            st.forward(&model, Kernels::get(), &pool, 8).unwrap();
        }
        assert_eq!(st.remaining(), 0);
        assert!(st.forward(&model, Kernels::get(), &pool, 1).is_err());
        st.reset();
        assert!(st.forward(&model, Kernels::get(), &pool, 1).is_ok());
    }
}
