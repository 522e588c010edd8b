//! A synthetic Mimi checkpoint for any [`MimiConfig`] (kyutai/mimi by default): weights with
//! variance 1/fan_in, layer scales at their 0.01 initial value, unit LayerNorms, random
//! codebooks with unit EMA usage, so activations stay in a sane range through the whole codec.

use super::{Init, TensorSpec};
use crate::mimi::MimiConfig;
use crate::mimi::layout::CheckpointLayout;

/// Variance `1 / fan_in`.
fn scaled(fan_in: usize) -> Init {
    Init::Uniform {
        std: 1.0 / (fan_in as f32).sqrt(),
    }
}

const BIAS: Init = Init::Uniform { std: 0.006 };

struct Specs<'a> {
    prefix: &'a str,
    out: Vec<TensorSpec>,
}

impl Specs<'_> {
    fn add(&mut self, name: String, shape: &[usize], init: Init) {
        self.out.push(TensorSpec::new(
            format!("{}{name}", self.prefix),
            shape,
            init,
        ));
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
            self.add(
                format!("{q}.embed_sum"),
                &[k, d],
                Init::Uniform { std: 0.577 },
            );
            self.add(format!("{q}.cluster_usage"), &[k], Init::Const(1.0));
            self.add(format!("{q}.initialized"), &[1], Init::Const(1.0));
        }
    }
}

/// Every tensor of a Mimi checkpoint with config `c`, in the upstream names and layouts, each
/// name prefixed with `prefix` (`codec_model.` inside a CSM checkpoint).
pub fn tensor_specs(c: &MimiConfig, prefix: &str) -> Vec<TensorSpec> {
    let mut s = Specs {
        prefix,
        out: Vec::new(),
    };
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
    s.out
}

/// `config.json` (transformers 5.x keys) describing `c`, as a JSON value (a CSM config nests
/// it as `codec_config`).
pub fn config_value(c: &MimiConfig) -> serde_json::Value {
    serde_json::json!({
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
    })
}

/// `config.json` text for a Mimi checkpoint.
pub fn config_json(c: &MimiConfig) -> String {
    serde_json::to_string_pretty(&config_value(c)).expect("a JSON value serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mimi::Mimi;
    use crate::synth::{SynthDtype, write_model};

    #[test]
    fn a_small_synthetic_mimi_loads_and_round_trips_whole_frames() {
        let c = MimiConfig {
            num_filters: 4,
            hidden_size: 16,
            intermediate_size: 32,
            num_attention_heads: 2,
            head_dim: 8,
            num_hidden_layers: 1,
            codebook_size: 16,
            codebook_dim: 8,
            vector_quantization_hidden_dimension: 8,
            num_quantizers: 4,
            ..MimiConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        write_model(
            &out,
            "test",
            &config_json(&c),
            &Vec::new(),
            &tensor_specs(&c, ""),
            3,
            SynthDtype::Q8,
        )
        .unwrap();
        let m = Mimi::load(&out).unwrap();
        let pcm: Vec<f32> = (0..2 * c.frame_size())
            .map(|i| (i as f32 * 0.01).sin() * 0.3)
            .collect();
        let codes = m.encode(&pcm, 4).unwrap();
        assert_eq!(codes.len(), 4);
        let back = m.decode(&codes).unwrap();
        assert_eq!(back.len(), pcm.len());
        assert!(back.iter().all(|v| v.is_finite()));
        assert!(!dir.path().join("m.partial").exists());
        assert!(!dir.path().join("m.f32-partial").exists());
    }
}
