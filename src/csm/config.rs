//! CSM's `config.json`, as written by transformers 4.x (the published `sesame/csm-1b`
//! checkpoint: `rope_theta` + `rope_scaling`) or 5.x (`rope_parameters`).
//!
//! The file nests three configurations: the backbone's fields at the top level, the depth
//! decoder's under `depth_decoder_config`, and the Mimi codec's under `codec_config` (parsed by
//! [`MimiConfig`]). A missing key takes the transformers default (the csm-1b value). Keys that
//! change the maths are honoured or, for variants this crate does not implement, rejected with
//! [`Error::BadConfig`] naming the key; unknown keys are rejected unless listed as harmless.

use crate::mimi::config::json_eq;
use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

use crate::kernels::rope::Llama3Scaling;
use crate::mimi::MimiConfig;
use crate::{Error, Result};

/// Keys accepted and ignored at either level: metadata and training/initialisation settings.
pub const HARMLESS_KEYS: &[&str] = &[
    "architectures",
    "transformers_version",
    "torch_dtype", // the weights' dtype comes from the safetensors file
    "dtype",
    "_name_or_path",
    "_commit_hash",
    "initializer_range",
    "attention_dropout", // training only
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "id2label",
    "label2id",
    "problem_type",
    // The text stream's padding id (csm-1b: = audio_token_id) and the text eos: generation
    // never emits text, and a batch of one is never padded.
    "pad_token_id",
    "eos_token_id",
    // transformers mirrors `tie_codebooks_embeddings` into this key (the text embedding and
    // `lm_head` are never tied); the tie that matters is read from `tie_codebooks_embeddings`.
    "tie_word_embeddings",
];

/// One Llama-style decoder stack (the backbone or the depth decoder).
#[derive(Debug, Clone, PartialEq)]
pub struct TransformerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    /// Positions the stack was trained for (backbone 2048, depth decoder 33 in csm-1b).
    pub max_position_embeddings: usize,
    pub rope_theta: f64,
    /// Llama-3 frequency scaling; `None` for plain RoPE.
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

/// What the runtime needs to know about a CSM checkpoint, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CsmConfig {
    pub backbone: TransformerConfig,
    pub depth_decoder: DepthDecoderConfig,
    pub codec: MimiConfig,
    /// Codebooks per audio frame (32 in csm-1b).
    pub num_codebooks: usize,
    /// Ids per codebook in the embeddings and heads (`vocab_size`, 2051 in csm-1b): the codec's
    /// `codebook_size` codes plus extra ids that the codec cannot decode.
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
    /// The csm-1b backbone.
    fn csm_1b_backbone() -> Self {
        TransformerConfig {
            hidden_size: 2048,
            intermediate_size: 8192,
            num_hidden_layers: 16,
            num_attention_heads: 32,
            num_key_value_heads: 8,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 2048,
            rope_theta: 500000.0,
            rope_scaling: None,
        }
    }

    /// The csm-1b depth decoder.
    fn csm_1b_depth() -> Self {
        TransformerConfig {
            hidden_size: 1024,
            intermediate_size: 8192,
            num_hidden_layers: 4,
            num_attention_heads: 8,
            num_key_value_heads: 2,
            head_dim: 128,
            rms_norm_eps: 1e-5,
            max_position_embeddings: 33,
            rope_theta: 500000.0,
            rope_scaling: None,
        }
    }

    /// Query heads per key/value head.
    pub fn group_size(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads
    }
}

/// Reads keys out of one JSON object, remembering which were looked at; errors name `prefix`.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
    prefix: &'static str,
    seen: BTreeSet<String>,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: String) -> Error {
        Error::BadConfig {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The value of `key`, or None when absent or null.
    fn get(&mut self, key: &str) -> Option<&'a Value> {
        self.seen.insert(key.to_string());
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize(&mut self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    self.err(format!(
                        "`{}` must be a non-negative integer, got {v}",
                        self.name(key)
                    ))
                }),
        }
    }

    fn positive(&mut self, key: &str, default: usize) -> Result<usize> {
        let n = self.usize(key, default)?;
        if n == 0 {
            return Err(self.err(format!("`{}` must be at least 1, got 0", self.name(key))));
        }
        Ok(n)
    }

    fn positive_f64(&mut self, key: &str, default: f64) -> Result<f64> {
        let x = match self.get(key) {
            None => default,
            Some(v) => v.as_f64().ok_or_else(|| {
                self.err(format!("`{}` must be a number, got {v}", self.name(key)))
            })?,
        };
        if !(x.is_finite() && x > 0.0) {
            return Err(self.err(format!(
                "`{}` must be a positive number, got {x}",
                self.name(key)
            )));
        }
        Ok(x)
    }

    /// Requires `key` (if present and not null) to equal `want`; `why` says what is implemented.
    fn require(&mut self, key: &str, want: &Value, why: &str) -> Result<()> {
        match self.get(key) {
            Some(v) if !json_eq(v, want) => Err(self.err(format!(
                "`{}` = {v} is not supported (only {want}: {why})",
                self.name(key)
            ))),
            _ => Ok(()),
        }
    }

    fn model_type(&mut self, want: &str) -> Result<()> {
        match self.get("model_type") {
            Some(v) if v.as_str() != Some(want) => Err(self.err(format!(
                "`{}` is {v}, expected \"{want}\"",
                self.name("model_type")
            ))),
            _ => Ok(()),
        }
    }

    /// Fails on any key that was neither read nor is harmless.
    fn finish(&self) -> Result<()> {
        for key in self.obj.keys() {
            if !self.seen.contains(key) && !HARMLESS_KEYS.contains(&key.as_str()) {
                return Err(self.err(format!(
                    "unknown key `{}`: it may change the model and is not supported",
                    self.name(key)
                )));
            }
        }
        Ok(())
    }

    /// A Llama-style stack: sizes, norm, RoPE (both key styles) and the unsupported switches.
    fn transformer(&mut self, d: &TransformerConfig) -> Result<TransformerConfig> {
        self.require("hidden_act", &Value::from("silu"), "SwiGLU with SiLU")?;
        self.require("attention_bias", &Value::from(false), "bias-free attention")?;
        self.require("mlp_bias", &Value::from(false), "bias-free MLP")?;
        self.require("pretraining_tp", &Value::from(1), "unsplit projections")?;
        let hidden_size = self.positive("hidden_size", d.hidden_size)?;
        let intermediate_size = self.positive("intermediate_size", d.intermediate_size)?;
        let num_hidden_layers = self.usize("num_hidden_layers", d.num_hidden_layers)?;
        let num_attention_heads = self.positive("num_attention_heads", d.num_attention_heads)?;
        // transformers: an absent or null `num_key_value_heads` means plain multi-head attention
        // for an explicit config; the csm-1b default applies only when the key is absent.
        let num_key_value_heads = match self.obj.get("num_key_value_heads") {
            Some(Value::Null) => num_attention_heads,
            _ => self.positive("num_key_value_heads", d.num_key_value_heads)?,
        };
        self.seen.insert("num_key_value_heads".into());
        let head_dim = self.positive("head_dim", hidden_size / num_attention_heads)?;
        let rms_norm_eps = self.positive_f64("rms_norm_eps", d.rms_norm_eps)?;
        let max_position_embeddings =
            self.positive("max_position_embeddings", d.max_position_embeddings)?;
        let (rope_theta, rope_scaling) = self.rope(d.rope_theta)?;

        if num_attention_heads % num_key_value_heads != 0 {
            return Err(self.err(format!(
                "`{}` {num_attention_heads} is not a multiple of `{}` {num_key_value_heads}",
                self.name("num_attention_heads"),
                self.name("num_key_value_heads")
            )));
        }
        if head_dim % 2 != 0 {
            return Err(self.err(format!(
                "`{}` {head_dim} must be even (RoPE rotates half-dimension pairs)",
                self.name("head_dim")
            )));
        }
        Ok(TransformerConfig {
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            max_position_embeddings,
            rope_theta,
            rope_scaling,
        })
    }

    /// RoPE: 4.x `rope_theta` + `rope_scaling` (null or a llama3 object), 5.x `rope_parameters`
    /// (`rope_type` default or llama3, with `rope_theta` inside).
    fn rope(&mut self, default_theta: f64) -> Result<(f64, Option<Llama3Scaling>)> {
        let mut theta = self.positive_f64("rope_theta", default_theta)?;
        let scaling = self.get("rope_scaling");
        let params = self.get("rope_parameters");
        let (key, obj) = match (scaling, params) {
            (Some(_), Some(_)) => {
                return Err(self.err(format!(
                    "both `{}` and `{}` are set: use one",
                    self.name("rope_scaling"),
                    self.name("rope_parameters")
                )));
            }
            (Some(v), None) => ("rope_scaling", v),
            (None, Some(v)) => ("rope_parameters", v),
            (None, None) => return Ok((theta, None)),
        };
        let obj = obj.as_object().ok_or_else(|| {
            self.err(format!("`{}` must be an object, got {obj}", self.name(key)))
        })?;
        let rope_type = obj
            .get("rope_type")
            .or_else(|| obj.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let mut nums = std::collections::BTreeMap::new();
        for (k, v) in obj {
            let field = format!("{}.{k}", self.name(key));
            match k.as_str() {
                "rope_type" | "type" => {}
                "partial_rotary_factor" if json_eq(v, &Value::from(1.0)) => {}
                "rope_theta"
                | "factor"
                | "low_freq_factor"
                | "high_freq_factor"
                | "original_max_position_embeddings" => {
                    let x = v
                        .as_f64()
                        .filter(|x| x.is_finite() && *x > 0.0)
                        .ok_or_else(|| {
                            self.err(format!("`{field}` must be a positive number, got {v}"))
                        })?;
                    nums.insert(k.as_str(), x);
                }
                _ => {
                    return Err(self.err(format!(
                        "`{field}` = {v} is not supported (only rope_type \"default\" or \
                         \"llama3\" with rope_theta, factor, low_freq_factor, high_freq_factor, \
                         original_max_position_embeddings)"
                    )));
                }
            }
        }
        if let Some(t) = nums.get("rope_theta") {
            theta = *t;
        }
        match rope_type {
            "default" => {
                if let Some(k) = ["factor", "low_freq_factor", "high_freq_factor"]
                    .iter()
                    .find(|k| nums.contains_key(**k))
                {
                    return Err(self.err(format!(
                        "`{}.{k}` is set but rope_type is \"default\"",
                        self.name(key)
                    )));
                }
                Ok((theta, None))
            }
            "llama3" => {
                let need = |k: &str| {
                    nums.get(k).copied().ok_or_else(|| {
                        self.err(format!(
                            "`{}.{k}` is required for rope_type \"llama3\"",
                            self.name(key)
                        ))
                    })
                };
                let s = Llama3Scaling {
                    factor: need("factor")?,
                    low_freq_factor: need("low_freq_factor")?,
                    high_freq_factor: need("high_freq_factor")?,
                    original_max_position_embeddings: need("original_max_position_embeddings")?,
                };
                if s.high_freq_factor <= s.low_freq_factor {
                    return Err(self.err(format!(
                        "`{}`: high_freq_factor {} must exceed low_freq_factor {}",
                        self.name(key),
                        s.high_freq_factor,
                        s.low_freq_factor
                    )));
                }
                Ok((theta, Some(s)))
            }
            other => Err(self.err(format!(
                "`{}.rope_type` = \"{other}\" is not supported (only \"default\" and \"llama3\")",
                self.name(key)
            ))),
        }
    }
}

impl CsmConfig {
    /// Reads and validates `path` (a CSM `config.json`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates config JSON; `path` only names the source in error messages.
    pub fn parse(json: &str, path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::BadConfig {
            path: path.to_path_buf(),
            msg,
        };
        let value: Value =
            serde_json::from_str(json).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad("the top level must be a JSON object".into()))?;
        let mut r = Reader {
            obj,
            path,
            prefix: "",
            seen: BTreeSet::new(),
        };
        r.model_type("csm")?;
        let backbone = r.transformer(&TransformerConfig::csm_1b_backbone())?;
        let num_codebooks = r.positive("num_codebooks", 32)?;
        let audio_vocab_size = r.positive("vocab_size", 2051)?;
        let text_vocab_size = r.positive("text_vocab_size", 128256)?;
        let bos_token_id = r.usize("bos_token_id", 128000)?;
        let audio_token_id = r.usize("audio_token_id", 128002)?;
        let audio_eos_token_id = r.usize("audio_eos_token_id", 128003)?;
        let codebook_eos_token_id = r.usize("codebook_eos_token_id", 0)?;
        let codebook_pad_token_id = r.usize("codebook_pad_token_id", 2050)?;
        let tie_codebooks_embeddings = match r.get("tie_codebooks_embeddings") {
            None => true,
            Some(v) => v.as_bool().ok_or_else(|| {
                bad(format!(
                    "`tie_codebooks_embeddings` must be a boolean, got {v}"
                ))
            })?,
        };

        let depth_obj = match r.get("depth_decoder_config") {
            None => None,
            Some(v) => Some(v.as_object().ok_or_else(|| {
                bad(format!("`depth_decoder_config` must be an object, got {v}"))
            })?),
        };
        let empty = Map::new();
        let mut dr = Reader {
            obj: depth_obj.unwrap_or(&empty),
            path,
            prefix: "depth_decoder_config.",
            seen: BTreeSet::new(),
        };
        dr.model_type("csm_depth_decoder_model")?;
        let depth = dr.transformer(&TransformerConfig::csm_1b_depth())?;
        let depth_codebooks = dr.positive("num_codebooks", 32)?;
        let depth_vocab = dr.positive("vocab_size", 2051)?;
        let backbone_hidden_size = dr.positive("backbone_hidden_size", 2048)?;
        // The depth decoder never sees text: its special token ids are meaningless.
        for key in ["bos_token_id", "eos_token_id", "pad_token_id"] {
            dr.get(key);
        }
        dr.finish()?;
        if depth_codebooks != num_codebooks {
            return Err(bad(format!(
                "`depth_decoder_config.num_codebooks` {depth_codebooks} != `num_codebooks` \
                 {num_codebooks}"
            )));
        }
        if depth_vocab != audio_vocab_size {
            return Err(bad(format!(
                "`depth_decoder_config.vocab_size` {depth_vocab} != `vocab_size` {audio_vocab_size}"
            )));
        }

        let codec = match r.get("codec_config") {
            // transformers would build the default kyutai/mimi codec.
            None => MimiConfig::default(),
            Some(v) => {
                if !v.is_object() {
                    return Err(bad(format!("`codec_config` must be an object, got {v}")));
                }
                MimiConfig::parse(&v.to_string(), path).map_err(|e| match e {
                    Error::BadConfig { msg, .. } => bad(format!("in `codec_config`: {msg}")),
                    other => other,
                })?
            }
        };
        r.finish()?;

        let cfg = CsmConfig {
            backbone,
            depth_decoder: DepthDecoderConfig {
                transformer: depth,
                backbone_hidden_size,
            },
            codec,
            num_codebooks,
            audio_vocab_size,
            text_vocab_size,
            bos_token_id,
            audio_token_id,
            audio_eos_token_id,
            codebook_eos_token_id,
            codebook_pad_token_id,
            tie_codebooks_embeddings,
        };
        cfg.check().map_err(bad)?;
        Ok(cfg)
    }

    /// Cross-field consistency; the message names the fields at fault.
    fn check(&self) -> std::result::Result<(), String> {
        let n = self.num_codebooks;
        let dd = &self.depth_decoder;
        if n < 2 {
            return Err(format!(
                "`num_codebooks` {n} must be at least 2 (codebook 0 from the backbone, the rest \
                 from the depth decoder)"
            ));
        }
        if dd.backbone_hidden_size != self.backbone.hidden_size {
            return Err(format!(
                "`depth_decoder_config.backbone_hidden_size` {} != `hidden_size` {}",
                dd.backbone_hidden_size, self.backbone.hidden_size
            ));
        }
        if self.codec.num_quantizers != n {
            return Err(format!(
                "`codec_config.num_quantizers` {} != `num_codebooks` {n}",
                self.codec.num_quantizers
            ));
        }
        if self.audio_vocab_size < self.codec.codebook_size {
            return Err(format!(
                "`vocab_size` {} is below `codec_config.codebook_size` {}",
                self.audio_vocab_size, self.codec.codebook_size
            ));
        }
        // The depth decoder sees the backbone hidden state and codebooks 0..n-2.
        if dd.transformer.max_position_embeddings < n {
            return Err(format!(
                "`depth_decoder_config.max_position_embeddings` {} is below `num_codebooks` {n}",
                dd.transformer.max_position_embeddings
            ));
        }
        for (key, id) in [
            ("bos_token_id", self.bos_token_id),
            ("audio_token_id", self.audio_token_id),
            ("audio_eos_token_id", self.audio_eos_token_id),
        ] {
            if id >= self.text_vocab_size {
                return Err(format!(
                    "`{key}` {id} is outside the text vocabulary (`text_vocab_size` {})",
                    self.text_vocab_size
                ));
            }
        }
        if self.audio_token_id == self.audio_eos_token_id {
            return Err(format!(
                "`audio_token_id` and `audio_eos_token_id` are both {}",
                self.audio_token_id
            ));
        }
        for (key, id) in [
            ("codebook_eos_token_id", self.codebook_eos_token_id),
            ("codebook_pad_token_id", self.codebook_pad_token_id),
        ] {
            if id >= self.audio_vocab_size {
                return Err(format!(
                    "`{key}` {id} is outside the audio vocabulary (`vocab_size` {})",
                    self.audio_vocab_size
                ));
            }
        }
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
    use crate::kernels::rope::Rope;

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
                "`rope_scaling.rope_type` = \"yarn\"",
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
                "in `codec_config`: `pad_mode`",
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
                "`rms_norm_eps` must be a positive number",
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
                "`tie_codebooks_embeddings` must be a boolean",
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
