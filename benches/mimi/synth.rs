//! A Mimi checkpoint with deterministic random weights for any [`MimiConfig`]: `config.json`
//! plus `model.safetensors` under the upstream (transformers) tensor names and shapes, scaled
//! so activations stay in a sane range through the whole codec (weights ~ U(-a, a) with
//! variance 1/fan_in, layer scales at their 0.01 initial value, unit LayerNorms, random
//! codebooks with unit EMA usage). Used by the benchmark to build the full kyutai/mimi model at
//! run time instead of committing 300+ MB of weights.

use edgecsm::mimi::MimiConfig;
use edgecsm::mimi::layout::CheckpointLayout;
use std::path::Path;

/// How one tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Uniform in [-bound, bound].
    Uniform(f32),
    /// Every element the same.
    Const(f32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

/// Uniform bound whose variance is `1 / fan_in`.
fn scaled(fan_in: usize) -> Init {
    Init::Uniform((3.0 / fan_in as f32).sqrt())
}

const BIAS: Init = Init::Uniform(0.01);

struct Specs(Vec<TensorSpec>);

impl Specs {
    fn add(&mut self, name: String, shape: &[usize], init: Init) {
        self.0.push(TensorSpec {
            name,
            shape: shape.to_vec(),
            init,
        });
    }

    /// `{p}.conv.weight [out, in, k]` + bias.
    fn conv(&mut self, p: &str, out: usize, inp: usize, k: usize) {
        self.add(format!("{p}.conv.weight"), &[out, inp, k], scaled(inp * k));
        self.add(format!("{p}.conv.bias"), &[out], BIAS);
    }

    /// Transposed conv `{p}.conv.weight [in, out, k]` (stride `s`) + bias.
    fn conv_t(&mut self, p: &str, inp: usize, out: usize, k: usize, s: usize) {
        self.add(
            format!("{p}.conv.weight"),
            &[inp, out, k],
            scaled(inp * k / s),
        );
        self.add(format!("{p}.conv.bias"), &[out], BIAS);
    }

    fn resblock(&mut self, p: &str, ch: usize, c: &MimiConfig) {
        let mid = ch / c.compress;
        self.conv(&format!("{p}.block.1"), mid, ch, c.residual_kernel_size);
        self.conv(&format!("{p}.block.3"), ch, mid, 1);
    }

    fn transformer(&mut self, p: &str, c: &MimiConfig) {
        let h = c.hidden_size;
        let inner = c.num_attention_heads * c.head_dim;
        for l in 0..c.num_hidden_layers {
            let q = format!("{p}.layers.{l}");
            for ln in ["input_layernorm", "post_attention_layernorm"] {
                self.add(format!("{q}.{ln}.weight"), &[h], Init::Const(1.0));
                self.add(format!("{q}.{ln}.bias"), &[h], BIAS);
            }
            for proj in ["q_proj", "k_proj", "v_proj"] {
                self.add(
                    format!("{q}.self_attn.{proj}.weight"),
                    &[inner, h],
                    scaled(h),
                );
            }
            self.add(
                format!("{q}.self_attn.o_proj.weight"),
                &[h, inner],
                scaled(inner),
            );
            let ffn = c.intermediate_size;
            self.add(format!("{q}.mlp.fc1.weight"), &[ffn, h], scaled(h));
            self.add(format!("{q}.mlp.fc2.weight"), &[h, ffn], scaled(ffn));
            for ls in ["self_attn_layer_scale", "mlp_layer_scale"] {
                self.add(format!("{q}.{ls}.scale"), &[h], Init::Const(0.01));
            }
        }
    }

    fn rvq(&mut self, p: &str, levels: usize, c: &MimiConfig) {
        let (h, vqd) = (c.hidden_size, c.vector_quantization_hidden_dimension);
        if c.has_quantizer_projections() {
            self.add(format!("{p}.input_proj.weight"), &[vqd, h, 1], scaled(h));
            self.add(format!("{p}.output_proj.weight"), &[h, vqd, 1], scaled(vqd));
        }
        for l in 0..levels {
            let q = format!("{p}.layers.{l}.codebook");
            let (k, d) = (c.codebook_size, c.codebook_dim);
            self.add(format!("{q}.embed_sum"), &[k, d], Init::Uniform(1.0));
            self.add(format!("{q}.cluster_usage"), &[k], Init::Const(1.0));
            self.add(format!("{q}.initialized"), &[1], Init::Const(1.0));
        }
    }
}

/// Every tensor of a Mimi checkpoint with config `c`, in the upstream names and layouts.
pub fn tensor_specs(c: &MimiConfig) -> Vec<TensorSpec> {
    let mut s = Specs(Vec::new());
    let (f, h, st) = (c.num_filters, c.hidden_size, c.num_stages());
    let stride = c.latent_stride();

    s.conv("encoder.layers.0", f, 1, c.kernel_size);
    for stage in 0..st {
        let ch = c.encoder_stage_channels(stage);
        for j in 0..c.num_residual_layers {
            let i = c.encoder_resblock_index(stage, j);
            s.resblock(&format!("encoder.layers.{i}"), ch, c);
        }
        let r = c.encoder_ratio(stage);
        let i = c.encoder_downsample_index(stage);
        s.conv(&format!("encoder.layers.{i}"), 2 * ch, ch, 2 * r);
    }
    let i = c.encoder_final_index();
    s.conv(
        &format!("encoder.layers.{i}"),
        h,
        c.seanet_inner_channels(),
        c.last_kernel_size,
    );
    s.transformer("encoder_transformer", c);
    s.add(
        "downsample.conv.weight".into(),
        &[h, h, 2 * stride],
        scaled(h * 2 * stride),
    );

    s.rvq(
        "quantizer.semantic_residual_vector_quantizer",
        c.num_semantic_quantizers,
        c,
    );
    s.rvq(
        "quantizer.acoustic_residual_vector_quantizer",
        c.num_acoustic_quantizers(),
        c,
    );

    s.add(
        "upsample.conv.weight".into(),
        &[h, 1, 2 * stride],
        scaled(2),
    );
    s.transformer("decoder_transformer", c);
    s.conv(
        "decoder.layers.0",
        c.seanet_inner_channels(),
        h,
        c.kernel_size,
    );
    for stage in 0..st {
        let inp = c.seanet_inner_channels() >> stage;
        let out = inp / 2;
        let r = c.upsampling_ratios[stage];
        let i = c.decoder_upsample_index(stage);
        s.conv_t(&format!("decoder.layers.{i}"), inp, out, 2 * r, r);
        for j in 0..c.num_residual_layers {
            let i = c.decoder_resblock_index(stage, j);
            s.resblock(&format!("decoder.layers.{i}"), out, c);
        }
    }
    let i = c.decoder_final_index();
    s.conv(&format!("decoder.layers.{i}"), 1, f, c.last_kernel_size);
    s.0
}

/// `config.json` (transformers 5.x keys) describing `c`.
pub fn config_json(c: &MimiConfig) -> String {
    let v = serde_json::json!({
        "model_type": "mimi",
        "architectures": ["MimiModel"],
        "sampling_rate": c.sampling_rate,
        "audio_channels": 1,
        "num_filters": c.num_filters,
        "num_residual_layers": c.num_residual_layers,
        "upsampling_ratios": c.upsampling_ratios,
        "kernel_size": c.kernel_size,
        "last_kernel_size": c.last_kernel_size,
        "residual_kernel_size": c.residual_kernel_size,
        "dilation_growth_rate": c.dilation_growth_rate,
        "compress": c.compress,
        "use_causal_conv": true,
        "pad_mode": "constant",
        "trim_right_ratio": 1.0,
        "use_conv_shortcut": false,
        "hidden_size": c.hidden_size,
        "num_hidden_layers": c.num_hidden_layers,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_attention_heads,
        "head_dim": c.head_dim,
        "hidden_act": "gelu",
        "norm_eps": c.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "sliding_window": c.sliding_window,
        "attention_bias": false,
        "upsample_groups": c.hidden_size,
        "codebook_size": c.codebook_size,
        "codebook_dim": c.codebook_dim,
        "num_quantizers": c.num_quantizers,
        "num_semantic_quantizers": c.num_semantic_quantizers,
        "vector_quantization_hidden_dimension": c.vector_quantization_hidden_dimension,
    });
    serde_json::to_string_pretty(&v).expect("a JSON value serializes")
}

/// splitmix64: a tiny, fixed, platform-independent generator, so every run of the benchmark
/// builds bit-identical weights.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Writes `config.json` and `model.safetensors` for `c` into `dir` (which must exist).
pub fn write_model(dir: &Path, c: &MimiConfig, seed: u64) -> std::io::Result<()> {
    std::fs::write(dir.join("config.json"), config_json(c))?;
    let mut rng = Rng(seed);
    let specs = tensor_specs(c);
    let mut buffers = Vec::with_capacity(specs.len());
    for t in &specs {
        let n: usize = t.shape.iter().product();
        let vals: Vec<f32> = match t.init {
            Init::Const(v) => vec![v; n],
            Init::Uniform(a) => (0..n).map(|_| rng.symmetric() * a).collect(),
        };
        let mut bytes = Vec::with_capacity(4 * n);
        edgecsm::weights::push_f32_le(&vals, &mut bytes);
        buffers.push(bytes);
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = specs
        .iter()
        .zip(&buffers)
        .map(|(t, b)| {
            let v =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), b)
                    .expect("shape matches data");
            (t.name.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .map_err(std::io::Error::other)
}
