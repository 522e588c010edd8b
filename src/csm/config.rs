//! CSM's `config.json`, as written by transformers 4.x (the published `sesame/csm-1b`
//! checkpoint: `rope_theta` + `rope_scaling`) or 5.x (`rope_parameters`).
//!
//! The file nests three configurations: the backbone's fields at the top level, the depth
//! decoder's under `depth_decoder_config`, and the Mimi codec's under `codec_config` (parsed by
//! [`MimiConfig`]). A missing or null key takes the transformers default (the csm-1b value).
//! Keys that change the maths are honoured or, for variants this crate does not implement,
//! rejected with [`crate::Error::BadConfig`] naming the key; unknown keys are rejected unless
//! listed as harmless. Sizes are checked against [`crate::config::limits`].

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Result;
use crate::config::{self, Obj, ensure, limits};
use crate::kernels::rope::Llama3Scaling;
use crate::mimi::MimiConfig;

/// Keys accepted and ignored at either level besides [`crate::config::HARMLESS_KEYS`].
pub const HARMLESS_KEYS: &[&str] = &[
    // The text stream's padding id (csm-1b: = audio_token_id) and the text eos: generation
    // never emits text, and a batch of one is never padded.
    "pad_token_id",
    "eos_token_id",
    // transformers mirrors `tie_codebooks_embeddings` into this key (the text embedding and
    // `lm_head` are never tied); the tie that matters is read from `tie_codebooks_embeddings`.
    "tie_word_embeddings",
];

/// One Llama-style decoder stack (the backbone or the depth decoder); the field names are the
/// keys of `config.json`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct TransformerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Null: `num_attention_heads` (plain multi-head attention).
    pub num_key_value_heads: usize,
    /// Absent: `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Positions the stack was trained for (backbone 2048, depth decoder 33 in csm-1b).
    pub max_position_embeddings: usize,
    /// From `rope_theta` or `rope_parameters`.
    #[serde(skip)]
    pub rope_theta: f64,
    /// Llama-3 frequency scaling (`rope_scaling` or `rope_parameters`); `None` for plain RoPE.
    #[serde(skip)]
    pub rope_scaling: Option<Llama3Scaling>,
}

/// The depth decoder: a [`TransformerConfig`] plus its input projection and heads.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthDecoderConfig {
    pub transformer: TransformerConfig,
    /// Width of the backbone hidden state and of the (shared) codebook embeddings that the
    /// `inputs_embeds_projector` maps down to `transformer.hidden_size`.
    pub backbone_hidden_size: usize,
}

/// What the runtime needs to know about a CSM checkpoint, validated by [`CsmConfig::parse`]
/// (the derived `Deserialize` only reads its own fields from the top-level keys of the same
/// names; an absent key takes the csm-1b value).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CsmConfig {
    /// The top level's Llama stack.
    #[serde(skip)]
    pub backbone: TransformerConfig,
    /// `depth_decoder_config`.
    #[serde(skip)]
    pub depth_decoder: DepthDecoderConfig,
    /// `codec_config`.
    #[serde(skip)]
    pub codec: MimiConfig,
    /// Codebooks per audio frame (32 in csm-1b).
    pub num_codebooks: usize,
    /// Ids per codebook in the embeddings and heads (`vocab_size`, 2051 in csm-1b): the codec's
    /// `codebook_size` codes plus extra ids that the codec cannot decode.
    #[serde(rename = "vocab_size")]
    pub audio_vocab_size: usize,
    pub text_vocab_size: usize,
    /// `<|begin_of_text|>` (128000).
    pub bos_token_id: usize,
    /// The per-frame audio placeholder `<|AUDIO|>` in the text stream (128002).
    pub audio_token_id: usize,
    /// The end-of-audio placeholder `<|audio_eos|>` (128003): embedded as an all-eos frame.
    pub audio_eos_token_id: usize,
    /// Code that ends an utterance when a whole frame is made of it (0).
    pub codebook_eos_token_id: usize,
    /// Code used for padding finished sequences in a batch (2050).
    pub codebook_pad_token_id: usize,
    /// The backbone's audio embedding is the depth decoder's `embed_tokens` (stored once).
    pub tie_codebooks_embeddings: bool,
}

impl TransformerConfig {
    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }

    /// Sizes within [`crate::config::limits`], then the head layout; `prefix` places the stack's
    /// keys in the file.
    fn check(&self, prefix: &str) -> std::result::Result<(), String> {
        use limits::*;
        config::fields_in_ranges!(
            self,
            prefix,
            hidden_size: 1..=HIDDEN_SIZE,
            intermediate_size: 1..=INTERMEDIATE_SIZE,
            num_hidden_layers: 0..=LAYERS,
            num_attention_heads: 1..=HEADS,
            num_key_value_heads: 1..=HEADS,
            head_dim: 1..=HEAD_DIM,
            max_position_embeddings: 1..=POSITIONS,
        )?;
        let t = self;
        ensure!(
            t.num_attention_heads.is_multiple_of(t.num_key_value_heads),
            "`{prefix}num_attention_heads` {} is not a multiple of `{prefix}num_key_value_heads` {}",
            t.num_attention_heads,
            t.num_key_value_heads
        );
        ensure!(
            t.head_dim.is_multiple_of(2),
            "`{prefix}head_dim` {} must be even (RoPE rotates half-dimension pairs)",
            t.head_dim
        );
        ensure!(
            t.rms_norm_eps > 0.0,
            "`{prefix}rms_norm_eps`: must be a positive number, got {}",
            t.rms_norm_eps
        );
        let (layers, positions) = (t.num_hidden_layers, t.max_position_embeddings);
        let sizes = [layers, positions, t.num_key_value_heads, t.head_dim];
        config::kv_cache_fits(prefix, "max_position_embeddings", sizes)
    }
}

impl Default for CsmConfig {
    /// sesame/csm-1b as transformers builds it from an empty config: plain RoPE (csm-1b's
    /// `config.json` adds Llama-3 scaling) and the kyutai/mimi codec.
    fn default() -> Self {
        let stack = |hidden_size, num_hidden_layers, heads, kv_heads, head_dim, positions| {
            TransformerConfig {
                hidden_size,
                intermediate_size: 8192,
                num_hidden_layers,
                num_attention_heads: heads,
                num_key_value_heads: kv_heads,
                head_dim,
                rms_norm_eps: 1e-5,
                max_position_embeddings: positions,
                rope_theta: 500000.0,
                rope_scaling: None,
            }
        };
        CsmConfig {
            backbone: stack(2048, 16, 32, 8, 64, 2048),
            depth_decoder: DepthDecoderConfig {
                transformer: stack(1024, 4, 8, 2, 128, 33),
                backbone_hidden_size: 2048,
            },
            codec: MimiConfig::default(),
            num_codebooks: 32,
            audio_vocab_size: 2051,
            text_vocab_size: 128256,
            bos_token_id: 128000,
            audio_token_id: 128002,
            audio_eos_token_id: 128003,
            codebook_eos_token_id: 0,
            codebook_pad_token_id: 2050,
            tie_codebooks_embeddings: true,
        }
    }
}

const DEPTH: &str = "depth_decoder_config.";

/// The depth level's keys besides its Llama stack.
#[derive(Deserialize)]
struct DepthKeys {
    backbone_hidden_size: Option<usize>,
    /// Both levels have these; they must agree.
    num_codebooks: Option<usize>,
    vocab_size: Option<usize>,
    /// The depth decoder never sees text.
    #[serde(rename = "bos_token_id")]
    _bos_token_id: Option<usize>,
}

/// One level of `config.json` (`prefix` places it): its Llama stack, absent keys taken from
/// `d`, and its other keys `K`. A key of the other level is unknown here.
fn level<K: DeserializeOwned>(
    mut o: Obj,
    prefix: &str,
    d: &TransformerConfig,
) -> std::result::Result<(TransformerConfig, K), String> {
    let mha = o.get("num_key_value_heads") == Some(&Value::Null);
    let model_type = if prefix.is_empty() {
        "csm"
    } else {
        "csm_depth_decoder_model"
    };
    let one_value = [
        ("model_type", json!(model_type)),
        ("hidden_act", json!("silu")), // SwiGLU with SiLU
        ("attention_bias", json!(false)),
        ("mlp_bias", json!(false)),
        ("pretraining_tp", json!(1)), // unsplit projections
    ];
    config::prepare(
        &mut o,
        prefix,
        &[config::HARMLESS_KEYS, HARMLESS_KEYS],
        &one_value,
    )?;
    let (rope_theta, rope_scaling) = config::rope(&mut o, prefix, d.rope_theta)?;
    let head_dim_set = o.contains_key("head_dim");
    config::fill(&mut o, d);
    let (mut t, k): (TransformerConfig, K) = config::read(o, prefix)?;
    (t.rope_theta, t.rope_scaling) = (rope_theta, rope_scaling);
    if mha {
        t.num_key_value_heads = t.num_attention_heads;
    }
    if !head_dim_set {
        t.head_dim = t
            .hidden_size
            .checked_div(t.num_attention_heads)
            .unwrap_or(0);
    }
    t.check(prefix)?;
    Ok((t, k))
}

impl CsmConfig {
    /// Reads and validates `path` (a CSM `config.json`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        config::load(path.as_ref(), Self::from_json)
    }

    /// Parses and validates config JSON; `path` only names the source in error messages.
    pub fn parse(json: &str, path: &Path) -> Result<Self> {
        config::parse(json, path, Self::from_json)
    }

    /// A parsed `config.json` checked into a config: the error names the key at fault.
    fn from_json(v: Value) -> std::result::Result<Self, String> {
        let mut top = config::object(v, "")?;
        let depth = match top.remove("depth_decoder_config") {
            None | Some(Value::Null) => Obj::new(),
            Some(v) => config::object(v, "depth_decoder_config")?,
        };
        let codec = match top.remove("codec_config") {
            None | Some(Value::Null) => MimiConfig::default(),
            Some(v) => MimiConfig::from_json(v).map_err(|m| format!("in `codec_config`: {m}"))?,
        };
        let d = CsmConfig::default();
        let (backbone, mut c): (_, CsmConfig) = level(top, "", &d.backbone)?;
        let (transformer, k): (_, DepthKeys) = level(depth, DEPTH, &d.depth_decoder.transformer)?;
        let backbone_hidden_size = k
            .backbone_hidden_size
            .unwrap_or(d.depth_decoder.backbone_hidden_size);
        (c.backbone, c.codec) = (backbone, codec);
        c.depth_decoder = DepthDecoderConfig {
            transformer,
            backbone_hidden_size,
        };
        let (n, depth_n) = (c.num_codebooks, k.num_codebooks.unwrap_or(d.num_codebooks));
        ensure!(
            depth_n == n,
            "`{DEPTH}num_codebooks` {depth_n} != `num_codebooks` {n}"
        );
        let (vocab, depth_vocab) = (
            c.audio_vocab_size,
            k.vocab_size.unwrap_or(d.audio_vocab_size),
        );
        ensure!(
            depth_vocab == vocab,
            "`{DEPTH}vocab_size` {depth_vocab} != `vocab_size` {vocab}"
        );
        c.check()?;
        Ok(c)
    }

    /// Cross-field consistency and the model-level limits; the message names the fields at
    /// fault.
    fn check(&self) -> std::result::Result<(), String> {
        let (n, vocab) = (self.num_codebooks, self.audio_vocab_size);
        let text = self.text_vocab_size;
        let (dd, codec) = (&self.depth_decoder, &self.codec);
        ensure!(
            n >= 2,
            "`num_codebooks` {n} must be at least 2 (codebook 0 from the backbone, the rest from \
             the depth decoder)"
        );
        use limits::*;
        config::in_ranges(
            "",
            &[
                ("num_codebooks", n, 2..=CODEBOOKS),
                ("vocab_size", vocab, 1..=AUDIO_VOCAB),
                ("text_vocab_size", text, 1..=TEXT_VOCAB),
            ],
        )?;
        let hidden = self.backbone.hidden_size;
        ensure!(
            dd.backbone_hidden_size == hidden,
            "`{DEPTH}backbone_hidden_size` {} != `hidden_size` {hidden}",
            dd.backbone_hidden_size
        );
        ensure!(
            codec.num_quantizers == n,
            "`codec_config.num_quantizers` {} != `num_codebooks` {n}",
            codec.num_quantizers
        );
        ensure!(
            vocab >= codec.codebook_size,
            "`vocab_size` {vocab} is below `codec_config.codebook_size` {}",
            codec.codebook_size
        );
        // The depth decoder sees the backbone hidden state and codebooks 0..n-2.
        let positions = dd.transformer.max_position_embeddings;
        ensure!(
            positions >= n,
            "`{DEPTH}max_position_embeddings` {positions} is below `num_codebooks` {n}"
        );
        let (audio, eos) = (self.audio_token_id, self.audio_eos_token_id);
        for (key, id, of, size) in [
            ("bos_token_id", self.bos_token_id, "text", text),
            ("audio_token_id", audio, "text", text),
            ("audio_eos_token_id", eos, "text", text),
            (
                "codebook_eos_token_id",
                self.codebook_eos_token_id,
                "audio",
                vocab,
            ),
            (
                "codebook_pad_token_id",
                self.codebook_pad_token_id,
                "audio",
                vocab,
            ),
        ] {
            let size_key = if of == "text" {
                "text_vocab_size"
            } else {
                "vocab_size"
            };
            ensure!(
                id < size,
                "`{key}` {id} is outside the {of} vocabulary (`{size_key}` {size})"
            );
        }
        ensure!(
            audio != eos,
            "`audio_token_id` and `audio_eos_token_id` are both {audio}"
        );
        Ok(())
    }

    /// Codes the codec can decode per codebook (2048 in csm-1b); ids from here up to
    /// `audio_vocab_size` exist in the heads but are not audio.
    pub fn codebook_size(&self) -> usize {
        self.codec.codebook_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::kernels::rope::Rope;
    use serde_json::{Map, Value};

    /// sesame/csm-1b's config.json in the transformers 4.x layout, reconstructed from
    /// configuration_csm.py's defaults and transformers' convert_csm.py (which writes the
    /// Llama-3 RoPE scaling in these rescaled-but-equivalent values), with kyutai/mimi as codec.
    const CSM_1B_4X: &str = r#"{
  "architectures": ["CsmForConditionalGeneration"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "audio_eos_token_id": 128003,
  "audio_token_id": 128002,
  "bos_token_id": 128000,
  "codebook_eos_token_id": 0,
  "codebook_pad_token_id": 2050,
  "codec_config": {
    "attention_bias": false, "attention_dropout": 0.0, "audio_channels": 1,
    "codebook_dim": 256, "codebook_size": 2048, "compress": 2, "dilation_growth_rate": 2,
    "frame_rate": 12.5, "head_dim": 64, "hidden_act": "gelu", "hidden_size": 512,
    "initializer_range": 0.02, "intermediate_size": 2048, "kernel_size": 7,
    "last_kernel_size": 3, "layer_scale_initial_scale": 0.01, "max_position_embeddings": 8000,
    "model_type": "mimi", "norm_eps": 1e-05, "num_attention_heads": 8, "num_filters": 64,
    "num_hidden_layers": 8, "num_key_value_heads": 8, "num_quantizers": 32,
    "num_residual_layers": 1, "num_semantic_quantizers": 1, "pad_mode": "constant",
    "residual_kernel_size": 3, "rope_scaling": null, "rope_theta": 10000.0,
    "sampling_rate": 24000, "sliding_window": 250, "trim_right_ratio": 1.0,
    "upsample_groups": 512, "upsampling_ratios": [8, 6, 5, 4], "use_cache": false,
    "use_causal_conv": true, "use_conv_shortcut": false,
    "vector_quantization_hidden_dimension": 256
  },
  "depth_decoder_config": {
    "attention_bias": false,
    "attention_dropout": 0.0,
    "backbone_hidden_size": 2048,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 1024,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 33,
    "mlp_bias": false,
    "model_type": "csm_depth_decoder_model",
    "num_attention_heads": 8,
    "num_codebooks": 32,
    "num_hidden_layers": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
      "factor": 32.0,
      "high_freq_factor": 0.0078125,
      "low_freq_factor": 0.001953125,
      "original_max_position_embeddings": 16,
      "rope_type": "llama3"
    },
    "rope_theta": 500000,
    "use_cache": true,
    "vocab_size": 2051
  },
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 8192,
  "max_position_embeddings": 2048,
  "mlp_bias": false,
  "model_type": "csm",
  "num_attention_heads": 32,
  "num_codebooks": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pad_token_id": 128002,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 32.0,
    "high_freq_factor": 0.5,
    "low_freq_factor": 0.125,
    "original_max_position_embeddings": 1024,
    "rope_type": "llama3"
  },
  "rope_theta": 500000,
  "text_vocab_size": 128256,
  "tie_codebooks_embeddings": true,
  "tie_word_embeddings": false,
  "torch_dtype": "float32",
  "transformers_version": "4.52.0.dev0",
  "use_cache": true,
  "vocab_size": 2051
}"#;

    fn parse(json: &str) -> Result<CsmConfig> {
        CsmConfig::parse(json, Path::new("config.json"))
    }

    /// CSM_1B_4X with `edit` applied to its JSON object.
    fn edited(edit: impl FnOnce(&mut Map<String, Value>)) -> Result<CsmConfig> {
        let mut v: Value = serde_json::from_str(CSM_1B_4X).unwrap();
        edit(v.as_object_mut().unwrap());
        parse(&v.to_string())
    }

    fn depth_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
        obj.get_mut("depth_decoder_config")
            .unwrap()
            .as_object_mut()
            .unwrap()
    }

    /// An edit of the csm-1b JSON object and a fragment its error message must contain.
    type Case = (Box<dyn FnOnce(&mut Map<String, Value>)>, &'static str);

    fn err_msg(r: Result<CsmConfig>) -> String {
        match r {
            Err(Error::BadConfig { msg, .. }) => msg,
            other => panic!("expected BadConfig, got {other:?}"),
        }
    }

    fn fixture_config(name: &str) -> CsmConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/csm")
            .join(name)
            .join("config.json");
        CsmConfig::load(&path).unwrap()
    }

    #[test]
    fn csm_1b_4x_config() {
        let c = parse(CSM_1B_4X).unwrap();
        let b = &c.backbone;
        assert_eq!(
            (b.hidden_size, b.intermediate_size, b.num_hidden_layers),
            (2048, 8192, 16)
        );
        assert_eq!(
            (b.num_attention_heads, b.num_key_value_heads, b.head_dim),
            (32, 8, 64)
        );
        assert_eq!(b.group_size(), 4);
        assert_eq!((b.rms_norm_eps, b.max_position_embeddings), (1e-5, 2048));
        assert_eq!(b.rope_theta, 500000.0);
        assert_eq!(
            b.rope_scaling,
            Some(Llama3Scaling {
                factor: 32.0,
                low_freq_factor: 0.125,
                high_freq_factor: 0.5,
                original_max_position_embeddings: 1024.0,
            })
        );
        let d = &c.depth_decoder;
        assert_eq!(d.backbone_hidden_size, 2048);
        let t = &d.transformer;
        assert_eq!(
            (t.hidden_size, t.intermediate_size, t.num_hidden_layers),
            (1024, 8192, 4)
        );
        assert_eq!(
            (t.num_attention_heads, t.num_key_value_heads, t.head_dim),
            (8, 2, 128)
        );
        assert_eq!(t.max_position_embeddings, 33);
        assert_eq!(
            t.rope_scaling.unwrap().original_max_position_embeddings,
            16.0
        );
        assert_eq!(
            (c.num_codebooks, c.audio_vocab_size, c.codebook_size()),
            (32, 2051, 2048)
        );
        assert_eq!(c.text_vocab_size, 128256);
        assert_eq!(
            (c.bos_token_id, c.audio_token_id, c.audio_eos_token_id),
            (128000, 128002, 128003)
        );
        assert_eq!(
            (c.codebook_eos_token_id, c.codebook_pad_token_id),
            (0, 2050)
        );
        assert!(c.tie_codebooks_embeddings);
        assert_eq!(c.codec, MimiConfig::default());
    }

    #[test]
    fn missing_keys_take_the_csm_1b_defaults() {
        let c = parse(r#"{"model_type": "csm"}"#).unwrap();
        let full = parse(CSM_1B_4X).unwrap();
        // transformers' defaults have plain RoPE; everything else is csm-1b.
        let mut b = full.backbone.clone();
        b.rope_scaling = None;
        assert_eq!(c.backbone, b);
        let mut d = full.depth_decoder.clone();
        d.transformer.rope_scaling = None;
        assert_eq!(c.depth_decoder, d);
        assert_eq!(c.codec, full.codec);
        assert_eq!(c.num_codebooks, 32);
    }

    /// The three spellings of csm-1b's Llama-3 scaling (original Sesame/torchtune values, the
    /// backbone's and the depth decoder's rescaled config.json values) give the same RoPE.
    #[test]
    fn equivalent_llama3_scalings_give_equal_frequencies() {
        let s = |low, high, orig| {
            Some(Llama3Scaling {
                factor: 32.0,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: orig,
            })
        };
        for head_dim in [64, 128, 8] {
            let torchtune = Rope::new(head_dim, 500000.0, s(1.0, 4.0, 8192.0)).unwrap();
            let backbone = Rope::new(head_dim, 500000.0, s(0.125, 0.5, 1024.0)).unwrap();
            let depth = Rope::new(head_dim, 500000.0, s(0.001953125, 0.0078125, 16.0)).unwrap();
            let plain = Rope::new(head_dim, 500000.0, None).unwrap();
            for (i, f) in torchtune.inv_freq().iter().enumerate() {
                for other in [&backbone, &depth] {
                    let g = other.inv_freq()[i];
                    assert!(
                        (f - g).abs() <= 1e-6 * f,
                        "dim {head_dim} i {i}: {f} vs {g}"
                    );
                }
            }
            assert_ne!(torchtune.inv_freq(), plain.inv_freq());
        }
    }

    #[test]
    fn parses_the_5x_fixture_configs() {
        let a = fixture_config("a");
        assert_eq!(a.num_codebooks, 4);
        assert_eq!(
            (
                a.backbone.num_attention_heads,
                a.backbone.num_key_value_heads
            ),
            (4, 2)
        );
        assert_eq!(a.backbone.head_dim, 8);
        assert_eq!(a.backbone.rope_scaling.unwrap().low_freq_factor, 0.125);
        assert_eq!(a.depth_decoder.transformer.hidden_size, 24);
        assert_eq!(a.depth_decoder.backbone_hidden_size, 32);
        assert_eq!((a.audio_vocab_size, a.codebook_size()), (67, 64));
        assert_eq!(a.codec.num_quantizers, 4);
        assert_eq!(a.codec.frame_size(), 1920);
        let b = fixture_config("b");
        assert_eq!(b.num_codebooks, 8);
        assert_eq!(b.depth_decoder.transformer.num_key_value_heads, 1);
        assert_eq!(b.depth_decoder.transformer.group_size(), 4);
        assert_eq!(b.backbone.num_hidden_layers, 3);
        assert_eq!(
            b.depth_decoder
                .transformer
                .rope_scaling
                .unwrap()
                .original_max_position_embeddings,
            16.0
        );
    }

    #[test]
    fn rope_parameters_5x_and_rope_scaling_4x_agree() {
        let c4 = parse(CSM_1B_4X).unwrap();
        let c5 = edited(|o| {
            o.remove("rope_theta");
            let mut p = o.remove("rope_scaling").unwrap();
            p.as_object_mut()
                .unwrap()
                .insert("rope_theta".into(), Value::from(500000.0));
            o.insert("rope_parameters".into(), p);
        })
        .unwrap();
        assert_eq!(c4, c5);
        // the legacy "type" key is accepted for "rope_type"
        let legacy = edited(|o| {
            let s = o.get_mut("rope_scaling").unwrap().as_object_mut().unwrap();
            let t = s.remove("rope_type").unwrap();
            s.insert("type".into(), t);
        })
        .unwrap();
        assert_eq!(legacy, c4);
        let plain = edited(|o| {
            o.remove("rope_scaling");
            o.insert(
                "rope_parameters".into(),
                serde_json::json!({"rope_type": "default", "rope_theta": 10000.0}),
            );
        })
        .unwrap();
        assert_eq!(plain.backbone.rope_scaling, None);
        assert_eq!(plain.backbone.rope_theta, 10000.0);
    }

    #[test]
    fn rejects_unsupported_fields_by_name() {
        let cases: Vec<Case> = vec![
            (
                Box::new(|o| {
                    o.insert("sliding_window".into(), Value::from(128));
                }),
                "unknown key `sliding_window`",
            ),
            (
                Box::new(|o| {
                    depth_mut(o).insert("qk_norm".into(), Value::from(true));
                }),
                "unknown key `depth_decoder_config.qk_norm`",
            ),
            (
                Box::new(|o| {
                    o.insert("hidden_act".into(), Value::from("gelu"));
                }),
                "`hidden_act`",
            ),
            (
                Box::new(|o| {
                    depth_mut(o).insert("attention_bias".into(), Value::from(true));
                }),
                "`depth_decoder_config.attention_bias`",
            ),
            (
                Box::new(|o| {
                    o.insert("mlp_bias".into(), Value::from(true));
                }),
                "`mlp_bias`",
            ),
            (
                Box::new(|o| {
                    o.insert(
                        "rope_scaling".into(),
                        serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
                    );
                }),
                "`rope_scaling.rope_type` \"yarn\" is not supported",
            ),
            (
                Box::new(|o| {
                    o.insert(
                        "rope_parameters".into(),
                        serde_json::json!({"rope_type": "default", "rope_theta": 1e4}),
                    );
                }),
                "both `rope_scaling` and `rope_parameters`",
            ),
            (
                Box::new(|o| {
                    depth_mut(o)
                        .get_mut("rope_scaling")
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .remove("factor");
                }),
                "`depth_decoder_config.rope_scaling.factor` is required",
            ),
            (
                Box::new(|o| {
                    o.get_mut("rope_scaling")
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .insert("mrope_section".into(), Value::from(2));
                }),
                "`rope_scaling.mrope_section`",
            ),
            (
                Box::new(|o| {
                    o.insert("num_key_value_heads".into(), Value::from(5));
                }),
                "not a multiple of `num_key_value_heads` 5",
            ),
            (
                Box::new(|o| {
                    depth_mut(o).insert("backbone_hidden_size".into(), Value::from(1024));
                }),
                "`depth_decoder_config.backbone_hidden_size` 1024",
            ),
            (
                Box::new(|o| {
                    depth_mut(o).insert("num_codebooks".into(), Value::from(16));
                }),
                "`depth_decoder_config.num_codebooks` 16",
            ),
            (
                Box::new(|o| {
                    depth_mut(o).insert("vocab_size".into(), Value::from(2048));
                }),
                "`depth_decoder_config.vocab_size` 2048",
            ),
            (
                Box::new(|o| {
                    depth_mut(o).insert("max_position_embeddings".into(), Value::from(16));
                }),
                "`depth_decoder_config.max_position_embeddings` 16",
            ),
            (
                Box::new(|o| {
                    depth_mut(o).insert("model_type".into(), Value::from("llama"));
                }),
                "`depth_decoder_config.model_type`",
            ),
            (
                Box::new(|o| {
                    o.get_mut("codec_config")
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .insert("num_quantizers".into(), Value::from(16));
                }),
                "`codec_config.num_quantizers` 16",
            ),
            (
                Box::new(|o| {
                    o.get_mut("codec_config")
                        .unwrap()
                        .as_object_mut()
                        .unwrap()
                        .insert("pad_mode".into(), Value::from("reflect"));
                }),
                "in `codec_config`: `pad_mode` \"reflect\" is not supported",
            ),
            (
                Box::new(|o| {
                    o.insert("audio_token_id".into(), Value::from(128256));
                }),
                "`audio_token_id` 128256 is outside the text vocabulary",
            ),
            (
                Box::new(|o| {
                    o.insert("audio_eos_token_id".into(), Value::from(128002));
                }),
                "both 128002",
            ),
            (
                Box::new(|o| {
                    o.insert("codebook_pad_token_id".into(), Value::from(2051));
                }),
                "`codebook_pad_token_id` 2051",
            ),
            (
                Box::new(|o| {
                    o.insert("vocab_size".into(), Value::from(1000));
                    depth_mut(o).insert("vocab_size".into(), Value::from(1000));
                }),
                "`vocab_size` 1000 is below `codec_config.codebook_size` 2048",
            ),
            (
                Box::new(|o| {
                    o.insert("head_dim".into(), Value::from(63));
                }),
                "`head_dim` 63 must be even",
            ),
            (
                Box::new(|o| {
                    o.insert("rms_norm_eps".into(), Value::from(-1.0));
                }),
                "`rms_norm_eps`: must be a positive number, got -1",
            ),
            (
                Box::new(|o| {
                    o.insert("model_type".into(), Value::from("llama"));
                }),
                "`model_type`",
            ),
            (
                Box::new(|o| {
                    o.insert("tie_codebooks_embeddings".into(), Value::from("yes"));
                }),
                "`tie_codebooks_embeddings`: invalid type: string \"yes\", expected a boolean",
            ),
        ];
        for (edit, want) in cases {
            let msg = err_msg(edited(edit));
            assert!(
                msg.contains(want),
                "message {msg:?} does not contain {want:?}"
            );
        }
    }

    #[test]
    fn absurd_sizes_are_errors_naming_the_key() {
        let big = 1u64 << 40;
        let cases: &[(&[&str], u64, &str)] = &[
            (
                &["max_position_embeddings"],
                1 << 62,
                "`max_position_embeddings` 4611686018427387904 is above this runtime's limit",
            ),
            (
                &["max_position_embeddings"],
                1 << 20,
                "a KV cache for `max_position_embeddings` 1048576 x `num_hidden_layers` 16",
            ),
            (
                &["depth_decoder_config.num_hidden_layers"],
                big,
                "`depth_decoder_config.num_hidden_layers` 1099511627776 is above",
            ),
            (
                &["hidden_size"],
                big,
                "`hidden_size` 1099511627776 is above",
            ),
            (
                &["intermediate_size"],
                big,
                "`intermediate_size` 1099511627776",
            ),
            (
                &["num_attention_heads"],
                big,
                "`num_attention_heads` 1099511627776",
            ),
            (
                &["depth_decoder_config.head_dim"],
                big,
                "`depth_decoder_config.head_dim` 1099511627776 is above",
            ),
            (
                &["text_vocab_size"],
                big,
                "`text_vocab_size` 1099511627776 is above",
            ),
            (
                &["vocab_size", "depth_decoder_config.vocab_size"],
                big,
                "`vocab_size` 1099511627776 is above",
            ),
            (
                &[
                    "num_codebooks",
                    "depth_decoder_config.num_codebooks",
                    "depth_decoder_config.max_position_embeddings",
                ],
                big,
                "`depth_decoder_config.max_position_embeddings` 1099511627776 is above",
            ),
            (
                &["codec_config.codebook_size"],
                big,
                "in `codec_config`: `codebook_size` 1099511627776 is above",
            ),
        ];
        for (keys, value, want) in cases {
            let msg = err_msg(edited(|o| {
                for key in *keys {
                    let (obj, k) = match key.split_once('.') {
                        Some((nested, k)) => (o[nested].as_object_mut().unwrap(), k),
                        None => (&mut *o, *key),
                    };
                    obj.insert(k.into(), Value::from(*value));
                }
            }));
            assert!(
                msg.contains(want),
                "message {msg:?} does not contain {want:?}"
            );
        }
    }

    #[test]
    fn harmless_keys_and_bad_json() {
        let c = edited(|o| {
            o.insert("eos_token_id".into(), Value::from(128001));
            o.insert("_name_or_path".into(), Value::from("sesame/csm-1b"));
            depth_mut(o).insert("pad_token_id".into(), Value::Null);
        })
        .unwrap();
        assert_eq!(c, parse(CSM_1B_4X).unwrap());
        assert!(err_msg(parse("[1, 2]")).contains("JSON object"));
        assert!(err_msg(parse("{")).contains("not valid JSON"));
        let io = CsmConfig::load("/nonexistent/edgecsm/config.json");
        assert!(matches!(io, Err(Error::Io { .. })));
    }
}
