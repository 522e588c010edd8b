//! A synthetic CSM checkpoint (backbone, depth decoder, embeddings, heads, and its Mimi codec
//! under `codec_model.`) in the transformers layout, with the tokenizer of the bundled
//! `models/csm-tiny` so `say` can speak through it.
//!
//! # What makes it behave like a trained model (a proxy; state it wherever its numbers are used)
//! - **Logit spread.** Pure N(0, 0.02) weights give nearly uniform logits, where any rounding
//!   flips an argmax. Here the codebook-0 head (`lm_head`) and the depth decoder's heads are
//!   drawn so the logits over the audio vocabulary have a standard deviation of about
//!   [`LOGIT_STD`] = 3 for a unit-RMS hidden state, with a log-normal spread of 0.2 in the norm
//!   of each code's row (some codes are likelier than others, as in a trained codec LM): at
//!   temperature 1 the top-1 probability is then mostly 0.2-0.8 (median about 0.35, measured
//!   on random hidden states; `benches/csm.rs` reports what the model itself gives).
//! - **Outlier channels.** Trained Llamas carry a few residual-stream channels far larger than
//!   the rest, which is what makes int8 activation quantization hard. Every embedding row
//!   (text, and each codebook's audio rows, scaled so a 32-code frame sum has the same ratio)
//!   adds [`OUTLIER`] = 20x its per-channel standard deviation on [`outlier_channels`] (4
//!   channels); the residual stream keeps them through the layers.
//! - Everything else is variance-preserving: linear weights with variance 1/fan_in, norm
//!   weights 1 +- 0.1; the codec as in [`super::mimi`].
//!
//! The special token ids in `config.json` are the bundled tokenizer's (480..483), not
//! csm-1b's (128000..128003): the shapes (text vocabulary 128256 included) are csm-1b's, and
//! only those four ids differ.

use super::{ExtraFiles, Init, TensorSpec};
use crate::mimi::MimiConfig;

/// Standard deviation of the codebook logits for a unit-RMS hidden state.
pub const LOGIT_STD: f32 = 3.0;
/// Log standard deviation of the per-code row norms of the heads.
pub const LOGIT_SPREAD: f32 = 0.2;
/// Outlier channels' offset, in units of an embedding channel's standard deviation.
pub const OUTLIER: f32 = 20.0;

/// One Llama stack's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct StackShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub max_positions: usize,
}

/// The shape of a CSM checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct CsmShape {
    pub backbone: StackShape,
    pub depth: StackShape,
    pub text_vocab: usize,
    pub num_codebooks: usize,
    /// Ids per codebook (codec codebook size + 3).
    pub audio_vocab: usize,
    pub codec: MimiConfig,
}

impl CsmShape {
    /// `sesame/csm-1b` (transformers `CsmConfig()` defaults) with the kyutai/mimi codec.
    pub fn csm_1b() -> CsmShape {
        CsmShape {
            backbone: StackShape {
                hidden: 2048,
                layers: 16,
                heads: 32,
                kv_heads: 8,
                head_dim: 64,
                intermediate: 8192,
                max_positions: 2048,
            },
            depth: StackShape {
                hidden: 1024,
                layers: 4,
                heads: 8,
                kv_heads: 2,
                head_dim: 128,
                intermediate: 8192,
                max_positions: 33,
            },
            text_vocab: 128_256,
            num_codebooks: 32,
            audio_vocab: 2051,
            codec: MimiConfig::default(),
        }
    }

    /// A mid-size model with csm-1b's structure (32 codebooks, GQA, the full codec) at about a
    /// fiftieth of its weights: big enough for meaningful quantization statistics, small
    /// enough for a test.
    pub fn csm_mid() -> CsmShape {
        let mut s = CsmShape::csm_1b();
        s.backbone = StackShape {
            hidden: 512,
            layers: 4,
            heads: 8,
            kv_heads: 2,
            head_dim: 64,
            intermediate: 2048,
            max_positions: 512,
        };
        s.depth = StackShape {
            hidden: 256,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            intermediate: 1024,
            max_positions: 33,
        };
        s.text_vocab = 1024;
        s
    }

    /// Parameters (the tied audio table counted once).
    pub fn parameters(&self) -> usize {
        tensor_specs(self).iter().map(TensorSpec::numel).sum()
    }
}

/// The channels that carry outliers in a stream of width `hidden`.
pub fn outlier_channels(hidden: usize) -> Vec<usize> {
    (0..4)
        .map(|i| (hidden * (2 * i + 1) / 8 + 5) % hidden)
        .collect()
}

fn stack(out: &mut Vec<TensorSpec>, prefix: &str, s: &StackShape) {
    let lin = |fan_in: usize| Init::Uniform {
        std: 1.0 / (fan_in as f32).sqrt(),
    };
    let norm = Init::AroundOne { std: 0.1 };
    let (h, qd, kvd, im) = (
        s.hidden,
        s.heads * s.head_dim,
        s.kv_heads * s.head_dim,
        s.intermediate,
    );
    for l in 0..s.layers {
        let p = format!("{prefix}layers.{l}.");
        let mut add = |name: &str, shape: &[usize], init: Init| {
            out.push(TensorSpec::new(format!("{p}{name}"), shape, init));
        };
        add("input_layernorm.weight", &[h], norm.clone());
        add("self_attn.q_proj.weight", &[qd, h], lin(h));
        add("self_attn.k_proj.weight", &[kvd, h], lin(h));
        add("self_attn.v_proj.weight", &[kvd, h], lin(h));
        add("self_attn.o_proj.weight", &[h, qd], lin(qd));
        add("post_attention_layernorm.weight", &[h], norm.clone());
        add("mlp.gate_proj.weight", &[im, h], lin(h));
        add("mlp.up_proj.weight", &[im, h], lin(h));
        add("mlp.down_proj.weight", &[h, im], lin(im));
    }
    out.push(TensorSpec::new(format!("{prefix}norm.weight"), &[h], norm));
}

/// Every tensor of the checkpoint (codec included), upstream names and layouts.
pub fn tensor_specs(s: &CsmShape) -> Vec<TensorSpec> {
    let (bh, dh, v, n) = (
        s.backbone.hidden,
        s.depth.hidden,
        s.audio_vocab,
        s.num_codebooks,
    );
    let head = |fan_in: usize, axis: usize| Init::Spread {
        std: LOGIT_STD / (fan_in as f32).sqrt(),
        spread: LOGIT_SPREAD,
        axis,
    };
    let mut out = vec![
        TensorSpec::new(
            "embed_text_tokens.weight",
            &[s.text_vocab, bh],
            Init::WithOutliers {
                std: 1.0,
                channels: outlier_channels(bh),
                offset: OUTLIER,
            },
        ),
        // the audio table, tied between the stacks and saved under the depth decoder's name
        TensorSpec::new(
            "depth_decoder.model.embed_tokens.weight",
            &[n * v, bh],
            Init::WithOutliers {
                std: 1.0,
                channels: outlier_channels(bh),
                offset: OUTLIER / (n as f32).sqrt(),
            },
        ),
        TensorSpec::new("lm_head.weight", &[v, bh], head(bh, 0)),
        TensorSpec::new(
            "depth_decoder.model.inputs_embeds_projector.weight",
            &[dh, bh],
            Init::Uniform {
                std: 1.0 / (bh as f32).sqrt(),
            },
        ),
        TensorSpec::new(
            "depth_decoder.codebooks_head.weight",
            &[n - 1, dh, v],
            head(dh, 1),
        ),
    ];
    stack(&mut out, "backbone_model.", &s.backbone);
    stack(&mut out, "depth_decoder.model.", &s.depth);
    out.extend(super::mimi::tensor_specs(&s.codec, "codec_model."));
    out
}

/// Special ids of the bundled tokenizer.
const BOS: usize = 480;
const AUDIO: usize = 482;
const AUDIO_EOS: usize = 483;

fn stack_config(s: &StackShape) -> serde_json::Map<String, serde_json::Value> {
    let v = serde_json::json!({
        "attention_bias": false,
        "attention_dropout": 0.0,
        "head_dim": s.head_dim,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "initializer_range": 0.02,
        "intermediate_size": s.intermediate,
        "max_position_embeddings": s.max_positions,
        "mlp_bias": false,
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "num_key_value_heads": s.kv_heads,
        "rms_norm_eps": 1e-05,
        "use_cache": true,
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

/// `config.json` (transformers 5.x layout, as `save_pretrained` writes it for csm-1b).
pub fn config_json(s: &CsmShape) -> String {
    let mut depth = stack_config(&s.depth);
    depth.extend(
        serde_json::json!({
            "backbone_hidden_size": s.backbone.hidden,
            "bos_token_id": null,
            "eos_token_id": null,
            "model_type": "csm_depth_decoder_model",
            "num_codebooks": s.num_codebooks,
            "pad_token_id": null,
            "rope_parameters": {
                "factor": 32.0, "high_freq_factor": 0.0078125, "low_freq_factor": 0.001953125,
                "original_max_position_embeddings": 16, "rope_theta": 500000.0,
                "rope_type": "llama3"
            },
            "vocab_size": s.audio_vocab,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    let mut top = stack_config(&s.backbone);
    top.extend(
        serde_json::json!({
            "architectures": ["CsmForConditionalGeneration"],
            "audio_eos_token_id": AUDIO_EOS,
            "audio_token_id": AUDIO,
            "bos_token_id": BOS,
            "codebook_eos_token_id": 0,
            "codebook_pad_token_id": s.audio_vocab - 1,
            "codec_config": super::mimi::config_value(&s.codec),
            "depth_decoder_config": depth,
            "dtype": "float32",
            "eos_token_id": null,
            "model_type": "csm",
            "num_codebooks": s.num_codebooks,
            "pad_token_id": AUDIO,
            "rope_parameters": {
                "factor": 32.0, "high_freq_factor": 0.5, "low_freq_factor": 0.125,
                "original_max_position_embeddings": 1024, "rope_theta": 500000.0,
                "rope_type": "llama3"
            },
            "text_vocab_size": s.text_vocab,
            "tie_codebooks_embeddings": true,
            "tie_word_embeddings": true,
            "vocab_size": s.audio_vocab,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    serde_json::to_string_pretty(&serde_json::Value::Object(top)).expect("serializes")
}

/// The files besides `config.json` and the weights: the bundled tokenizer, a generation
/// config with csm-1b's defaults, a marker that this is a test model, and a README.
pub fn extra_files(s: &CsmShape, preset: &str, seed: u64) -> ExtraFiles {
    let mut files: ExtraFiles = vec![
        ("tokenizer.json".into(), TOKENIZER.into()),
        ("tokenizer_config.json".into(), TOKENIZER_CONFIG.into()),
        (
            "generation_config.json".into(),
            serde_json::to_string_pretty(&serde_json::json!({
                "bos_token_id": BOS,
                "depth_decoder_do_sample": true,
                "depth_decoder_temperature": 0.9,
                "depth_decoder_top_k": 50,
                "do_sample": true,
                "max_new_tokens": 125,
                "pad_token_id": AUDIO,
                "temperature": 0.9,
                "top_k": 50,
            }))
            .expect("serializes"),
        ),
        (
            "EDGECSM_TEST_MODEL".into(),
            format!("synthetic random-weight model ({preset}, seed {seed}): not speech\n"),
        ),
        (
            "README.md".into(),
            format!(
                "# Synthetic {preset} (random weights)\n\nMade by `edgecsm synth {preset}` (seed \
                 {seed}): the published shapes ({} parameters) with deterministic random \
                 weights, for benchmarks and tests. It produces no speech. See \
                 `src/synth/csm.rs` for how the weights are drawn.\n",
                s.parameters()
            ),
        ),
    ];
    files.sort();
    files
}

/// The bundled `models/csm-tiny` tokenizer (a Llama-3-style byte-level BPE, specials 480..487).
const TOKENIZER: &str = include_str!("../../models/csm-tiny/tokenizer.json");
const TOKENIZER_CONFIG: &str = include_str!("../../models/csm-tiny/tokenizer_config.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csm_1b_has_the_published_parameter_count() {
        // 1.65 B with the codec (realsize.md; transformers counts the same tensors)
        let p = CsmShape::csm_1b().parameters();
        assert!((1_600_000_000..1_700_000_000).contains(&p), "{p}");
    }
}
