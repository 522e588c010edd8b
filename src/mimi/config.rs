//! Mimi's `config.json`, as written by transformers 4.x (the published `kyutai/mimi` checkpoint:
//! `rope_theta`, `frame_rate`) or 5.x (`rope_parameters`, `_frame_rate: null`).
//!
//! A missing key takes the transformers default, which is the kyutai/mimi value. Every key that
//! changes the model's maths is either honoured or, if this crate does not implement that
//! variant, rejected with [`Error::BadConfig`] naming the key. Unknown keys are rejected unless
//! they are on the [`HARMLESS_KEYS`] list (metadata and training/initialisation-only settings).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// Keys accepted and ignored: they cannot change inference results.
pub const HARMLESS_KEYS: &[&str] = &[
    "architectures",
    "model_type", // checked to be "mimi" when present
    "transformers_version",
    "torch_dtype", // the weights' dtype comes from the safetensors file
    "dtype",
    "_name_or_path",
    "_commit_hash",
    "initializer_range",         // weight init only
    "layer_scale_initial_scale", // init value of the stored layer-scale vectors
    "attention_dropout",         // training only
    "use_cache",                 // runtime default of the reference, not maths
    "use_streaming",             // ditto
    "max_position_embeddings",   // RoPE cache size; the default RoPE does not depend on it
    "tie_word_embeddings",       // Mimi has no word embeddings
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "id2label",
    "label2id",
    "problem_type",
];

/// What the runtime needs to know about a Mimi codec, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MimiConfig {
    pub sampling_rate: usize,
    /// SEANet channels after the first conv; stage `s` of the encoder works on
    /// `num_filters << s` channels.
    pub num_filters: usize,
    pub num_residual_layers: usize,
    /// Decoder order (kyutai/mimi: [8, 6, 5, 4]); the encoder uses them reversed.
    pub upsampling_ratios: Vec<usize>,
    pub kernel_size: usize,
    pub last_kernel_size: usize,
    pub residual_kernel_size: usize,
    pub dilation_growth_rate: usize,
    pub compress: usize,
    /// Transformer width and latent dimension.
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub head_dim: usize,
    pub norm_eps: f64,
    pub rope_theta: f64,
    /// A key at distance `q - k` is visible iff `0 <= q - k < sliding_window`.
    pub sliding_window: usize,
    pub codebook_size: usize,
    pub codebook_dim: usize,
    pub num_quantizers: usize,
    pub num_semantic_quantizers: usize,
    /// Quantizer-space dimension; `!= hidden_size` means 1x1 input/output projections exist.
    pub vector_quantization_hidden_dimension: usize,
    /// False for a checkpoint saved with `encoder_config: null` (decoder only).
    pub has_encoder: bool,
    /// False for a checkpoint saved with `decoder_config: null` (encoder only).
    pub has_decoder: bool,
}

impl Default for MimiConfig {
    /// The published kyutai/mimi configuration.
    fn default() -> Self {
        MimiConfig {
            sampling_rate: 24000,
            num_filters: 64,
            num_residual_layers: 1,
            upsampling_ratios: vec![8, 6, 5, 4],
            kernel_size: 7,
            last_kernel_size: 3,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            compress: 2,
            hidden_size: 512,
            num_hidden_layers: 8,
            intermediate_size: 2048,
            num_attention_heads: 8,
            head_dim: 64,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            sliding_window: 250,
            codebook_size: 2048,
            codebook_dim: 256,
            num_quantizers: 32,
            num_semantic_quantizers: 1,
            vector_quantization_hidden_dimension: 256,
            has_encoder: true,
            has_decoder: true,
        }
    }
}

/// Reads keys out of the JSON object, remembering which ones were looked at.
struct Reader<'a> {
    obj: &'a Map<String, Value>,
    path: &'a Path,
    seen: BTreeSet<&'static str>,
}

impl<'a> Reader<'a> {
    fn err(&self, msg: String) -> Error {
        Error::BadConfig {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    /// The value of `key`, or None when absent or null.
    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.seen.insert(key);
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn usize(&mut self, key: &'static str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    self.err(format!("`{key}` must be a non-negative integer, got {v}"))
                }),
        }
    }

    fn positive(&mut self, key: &'static str, default: usize) -> Result<usize> {
        let n = self.usize(key, default)?;
        if n == 0 {
            return Err(self.err(format!("`{key}` must be at least 1, got 0")));
        }
        Ok(n)
    }

    fn f64(&mut self, key: &'static str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("`{key}` must be a number, got {v}"))),
        }
    }

    /// Requires `key` (if present) to equal `want`; `why` says what the port implements.
    fn require(&mut self, key: &'static str, want: &Value, why: &str) -> Result<()> {
        match self.get(key) {
            Some(v) if !json_eq(v, want) => Err(self.err(format!(
                "`{key}` = {v} is not supported (only {want}: {why})"
            ))),
            _ => Ok(()),
        }
    }
}

/// JSON equality where 1 and 1.0 are the same number (shared with the CSM config).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

impl MimiConfig {
    /// Reads and validates `path` (a Mimi `config.json`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and validates config JSON; `path` only names the source in error messages.
    pub fn parse(json: &str, path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::BadConfig {
            path: PathBuf::from(path),
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
            seen: BTreeSet::new(),
        };
        let d = MimiConfig::default();

        if let Some(v) = r.get("model_type")
            && v.as_str() != Some("mimi")
        {
            return Err(bad(format!("`model_type` is {v}, expected \"mimi\"")));
        }

        // Behaviour switches this crate implements only in their kyutai/mimi setting.
        r.require("audio_channels", &Value::from(1), "mono audio")?;
        r.require("use_causal_conv", &Value::from(true), "causal convolutions")?;
        r.require("pad_mode", &Value::from("constant"), "zero left padding")?;
        r.require(
            "trim_right_ratio",
            &Value::from(1.0),
            "trim all on the right",
        )?;
        r.require("use_conv_shortcut", &Value::from(false), "identity skips")?;
        r.require("hidden_act", &Value::from("gelu"), "exact erf GELU")?;
        r.require("attention_bias", &Value::from(false), "bias-free attention")?;
        r.require("rope_scaling", &Value::Null, "plain RoPE")?;

        let sampling_rate = r.positive("sampling_rate", d.sampling_rate)?;
        let hidden_size = r.positive("hidden_size", d.hidden_size)?;
        let num_filters = r.positive("num_filters", d.num_filters)?;
        let num_residual_layers = r.usize("num_residual_layers", d.num_residual_layers)?;
        let upsampling_ratios = match r.get("upsampling_ratios") {
            None => d.upsampling_ratios.clone(),
            Some(v) => {
                let list = v.as_array().filter(|a| !a.is_empty());
                let ratios: Option<Vec<usize>> = list.and_then(|a| {
                    a.iter()
                        .map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()))
                        .filter(|n| *n != Some(0))
                        .collect::<Option<Vec<usize>>>()
                        .filter(|ns| ns.len() == a.len())
                });
                ratios.ok_or_else(|| {
                    bad(format!(
                        "`upsampling_ratios` must be a non-empty list of positive integers, got {v}"
                    ))
                })?
            }
        };
        let kernel_size = r.positive("kernel_size", d.kernel_size)?;
        let last_kernel_size = r.positive("last_kernel_size", d.last_kernel_size)?;
        let residual_kernel_size = r.positive("residual_kernel_size", d.residual_kernel_size)?;
        let dilation_growth_rate = r.positive("dilation_growth_rate", d.dilation_growth_rate)?;
        let compress = r.positive("compress", d.compress)?;
        let codebook_size = r.positive("codebook_size", d.codebook_size)?;
        let vq_dim = r.positive(
            "vector_quantization_hidden_dimension",
            d.vector_quantization_hidden_dimension,
        )?;
        // transformers: an absent `codebook_dim` is 256, an explicit null means hidden_size.
        let codebook_dim = match obj.get("codebook_dim") {
            Some(Value::Null) => hidden_size,
            _ => r.positive("codebook_dim", d.codebook_dim)?,
        };
        r.seen.insert("codebook_dim");
        let num_quantizers = r.positive("num_quantizers", d.num_quantizers)?;
        let num_semantic_quantizers =
            r.positive("num_semantic_quantizers", d.num_semantic_quantizers)?;
        let upsample_groups = r.positive("upsample_groups", d.hidden_size)?;
        let num_hidden_layers = r.usize("num_hidden_layers", d.num_hidden_layers)?;
        let intermediate_size = r.positive("intermediate_size", d.intermediate_size)?;
        let num_attention_heads = r.positive("num_attention_heads", d.num_attention_heads)?;
        let num_key_value_heads = r.positive("num_key_value_heads", d.num_attention_heads)?;
        let head_dim = r.positive("head_dim", hidden_size / num_attention_heads)?;
        let norm_eps = r.f64("norm_eps", d.norm_eps)?;
        let sliding_window = match r.get("sliding_window") {
            None if obj.contains_key("sliding_window") => {
                return Err(bad(
                    "`sliding_window` = null (unbounded attention) is not supported".into(),
                ));
            }
            _ => r.positive("sliding_window", d.sliding_window)?,
        };

        // RoPE: 4.x `rope_theta` (+ `rope_scaling: null`), 5.x `rope_parameters`.
        let top_theta = r.f64("rope_theta", d.rope_theta)?;
        let rope_theta = match r.get("rope_parameters") {
            None => top_theta,
            Some(p) => {
                let p = p
                    .as_object()
                    .ok_or_else(|| bad(format!("`rope_parameters` must be an object, got {p}")))?;
                let mut theta = top_theta;
                for (k, v) in p {
                    match k.as_str() {
                        "rope_type" if v.as_str() == Some("default") => {}
                        "rope_theta" => {
                            theta = v.as_f64().ok_or_else(|| {
                                bad(format!(
                                    "`rope_parameters.rope_theta` must be a number, got {v}"
                                ))
                            })?
                        }
                        _ => {
                            return Err(bad(format!(
                                "`rope_parameters.{k}` = {v} is not supported (only rope_type \
                                 \"default\" and rope_theta)"
                            )));
                        }
                    }
                }
                theta
            }
        };

        let has_encoder = !matches!(obj.get("encoder_config"), Some(Value::Null));
        let has_decoder = !matches!(obj.get("decoder_config"), Some(Value::Null));
        for key in ["encoder_config", "decoder_config"] {
            r.seen.insert(key);
            if let Some(v) = obj.get(key)
                && !v.is_null()
            {
                return Err(bad(format!(
                    "`{key}` must be absent or null (the halves share the top-level fields), \
                     got {v}"
                )));
            }
        }
        if !has_encoder && !has_decoder {
            return Err(bad(
                "both `encoder_config` and `decoder_config` are null: no codec left".into(),
            ));
        }

        // 4.x `frame_rate` / 5.x `_frame_rate`: an explicit frame rate overrides the derived
        // one in the reference and sets the downsample stride; only the consistent value is
        // supported.
        let explicit_rate = [r.get("frame_rate"), r.get("_frame_rate")];

        for key in obj.keys() {
            if !r.seen.contains(key.as_str()) && !HARMLESS_KEYS.contains(&key.as_str()) {
                return Err(bad(format!(
                    "unknown key `{key}`: it may change the model and is not supported"
                )));
            }
        }

        let cfg = MimiConfig {
            sampling_rate,
            num_filters,
            num_residual_layers,
            upsampling_ratios,
            kernel_size,
            last_kernel_size,
            residual_kernel_size,
            dilation_growth_rate,
            compress,
            hidden_size,
            num_hidden_layers,
            intermediate_size,
            num_attention_heads,
            head_dim,
            norm_eps,
            rope_theta,
            sliding_window,
            codebook_size,
            codebook_dim,
            num_quantizers,
            num_semantic_quantizers,
            vector_quantization_hidden_dimension: vq_dim,
            has_encoder,
            has_decoder,
        };

        // Cross-field checks. Sizes first, so that the derived quantities cannot overflow.
        let hop = cfg
            .upsampling_ratios
            .iter()
            .try_fold(1usize, |acc, &r| acc.checked_mul(r))
            .filter(|h| h.checked_mul(2).is_some())
            .ok_or_else(|| bad("`upsampling_ratios` multiply to an absurd hop length".into()))?;
        let inner = u32::try_from(cfg.upsampling_ratios.len())
            .ok()
            .and_then(|s| 1usize.checked_shl(s))
            .and_then(|m| num_filters.checked_mul(m));
        if inner.is_none_or(|c| c > 1 << 20) {
            return Err(bad(format!(
                "`num_filters` {num_filters} << {} stages is too many channels",
                cfg.upsampling_ratios.len()
            )));
        }
        if sampling_rate % hop != 0 {
            return Err(bad(format!(
                "`sampling_rate` {sampling_rate} is not a multiple of the SEANet hop {hop} \
                 (product of `upsampling_ratios`): the latent stride would not be 2"
            )));
        }
        for (key, v) in ["frame_rate", "_frame_rate"].iter().zip(explicit_rate) {
            if let Some(v) = v {
                let rate = v
                    .as_f64()
                    .ok_or_else(|| bad(format!("`{key}` must be a number or null, got {v}")))?;
                let want = cfg.frame_rate();
                if (rate - want).abs() > 1e-9 * want {
                    return Err(bad(format!(
                        "`{key}` = {rate} disagrees with sampling_rate / frame size = {want} \
                         (only the 2x downsample of the reference is supported)"
                    )));
                }
            }
        }
        if upsample_groups != hidden_size {
            return Err(bad(format!(
                "`upsample_groups` = {upsample_groups} is not supported (only depthwise: \
                 hidden_size = {hidden_size})"
            )));
        }
        if num_key_value_heads != num_attention_heads {
            return Err(bad(format!(
                "`num_key_value_heads` = {num_key_value_heads} is not supported (only \
                 `num_attention_heads` = {num_attention_heads}, plain multi-head attention)"
            )));
        }
        if hidden_size % num_attention_heads != 0 {
            return Err(bad(format!(
                "`hidden_size` {hidden_size} is not divisible by `num_attention_heads` \
                 {num_attention_heads}"
            )));
        }
        if head_dim % 2 != 0 {
            return Err(bad(format!(
                "`head_dim` {head_dim} must be even (RoPE rotates half-dimension pairs)"
            )));
        }
        if num_semantic_quantizers >= num_quantizers {
            return Err(bad(format!(
                "`num_semantic_quantizers` {num_semantic_quantizers} must be below \
                 `num_quantizers` {num_quantizers}"
            )));
        }
        if !codebook_size.is_power_of_two() {
            return Err(bad(format!(
                "`codebook_size` {codebook_size} must be a power of two"
            )));
        }
        if codebook_dim != vq_dim {
            return Err(bad(format!(
                "`codebook_dim` {codebook_dim} must equal `vector_quantization_hidden_dimension` \
                 {vq_dim} (the codewords live in the projected space)"
            )));
        }
        if !(norm_eps > 0.0 && norm_eps.is_finite()) {
            return Err(bad(format!("`norm_eps` must be positive, got {norm_eps}")));
        }
        if !(rope_theta > 1.0 && rope_theta.is_finite()) {
            return Err(bad(format!(
                "RoPE theta must be a finite number above 1, got {rope_theta}"
            )));
        }
        Ok(cfg)
    }

    /// SEANet hop: input samples per transformer step (product of the ratios; 960).
    pub fn hop_length(&self) -> usize {
        self.upsampling_ratios.iter().product()
    }

    /// Stride of the learnt downsample conv (and of the upsample transposed conv): always 2.
    pub fn latent_stride(&self) -> usize {
        2
    }

    /// Input samples per code frame (1920 for kyutai/mimi).
    pub fn frame_size(&self) -> usize {
        self.hop_length() * self.latent_stride()
    }

    /// Transformer steps per second (25 Hz for kyutai/mimi).
    pub fn encoder_frame_rate(&self) -> f64 {
        self.sampling_rate as f64 / self.hop_length() as f64
    }

    /// Code frames per second (12.5 Hz for kyutai/mimi).
    pub fn frame_rate(&self) -> f64 {
        self.sampling_rate as f64 / self.frame_size() as f64
    }

    pub fn num_acoustic_quantizers(&self) -> usize {
        self.num_quantizers - self.num_semantic_quantizers
    }

    /// Whether the two RVQ groups have 1x1 `input_proj` / `output_proj` convs.
    pub fn has_quantizer_projections(&self) -> bool {
        self.vector_quantization_hidden_dimension != self.hidden_size
    }

    /// Number of SEANet stages (4 for kyutai/mimi).
    pub fn num_stages(&self) -> usize {
        self.upsampling_ratios.len()
    }

    /// Encoder stage `s` (0-based, in data order) downsamples by this ratio (4, 5, 6, 8).
    pub fn encoder_ratio(&self, stage: usize) -> usize {
        self.upsampling_ratios[self.num_stages() - 1 - stage]
    }

    /// Channels entering encoder stage `s` (`num_filters << s`); the stage's strided conv
    /// doubles them. The decoder mirrors: decoder stage `s` goes from
    /// `num_filters << (stages - s)` to half that.
    pub fn encoder_stage_channels(&self, stage: usize) -> usize {
        self.num_filters << stage
    }

    /// Channels of the SEANet's innermost end (`num_filters << stages`; 1024).
    pub fn seanet_inner_channels(&self) -> usize {
        self.num_filters << self.num_stages()
    }

    /// Dilation of the k=`residual_kernel_size` conv in residual block `j` of a stage.
    pub fn residual_dilation(&self, j: usize) -> usize {
        self.dilation_growth_rate.pow(j as u32)
    }

    /// Index in `encoder.layers.N` of residual block `j` of encoder stage `s`.
    pub fn encoder_resblock_index(&self, stage: usize, j: usize) -> usize {
        1 + stage * (self.num_residual_layers + 2) + j
    }

    /// Index in `encoder.layers.N` of the strided conv of encoder stage `s`.
    pub fn encoder_downsample_index(&self, stage: usize) -> usize {
        1 + stage * (self.num_residual_layers + 2) + self.num_residual_layers + 1
    }

    /// Index in `encoder.layers.N` of the last conv (inner channels -> hidden_size).
    pub fn encoder_final_index(&self) -> usize {
        2 + self.num_stages() * (self.num_residual_layers + 2)
    }

    /// Index in `decoder.layers.N` of the transposed conv of decoder stage `s`.
    pub fn decoder_upsample_index(&self, stage: usize) -> usize {
        2 + stage * (self.num_residual_layers + 2)
    }

    /// Index in `decoder.layers.N` of residual block `j` of decoder stage `s`.
    pub fn decoder_resblock_index(&self, stage: usize, j: usize) -> usize {
        3 + stage * (self.num_residual_layers + 2) + j
    }

    /// Index in `decoder.layers.N` of the last conv (num_filters -> 1 channel).
    pub fn decoder_final_index(&self) -> usize {
        2 + self.num_stages() * (self.num_residual_layers + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kyutai/mimi's config.json as transformers 4.x serializes it.
    const KYUTAI_MIMI_4X: &str = r#"{
  "architectures": ["MimiModel"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "audio_channels": 1,
  "codebook_dim": 256,
  "codebook_size": 2048,
  "compress": 2,
  "dilation_growth_rate": 2,
  "frame_rate": 12.5,
  "head_dim": 64,
  "hidden_act": "gelu",
  "hidden_size": 512,
  "initializer_range": 0.02,
  "intermediate_size": 2048,
  "kernel_size": 7,
  "last_kernel_size": 3,
  "layer_scale_initial_scale": 0.01,
  "max_position_embeddings": 8000,
  "model_type": "mimi",
  "norm_eps": 1e-05,
  "num_attention_heads": 8,
  "num_filters": 64,
  "num_hidden_layers": 8,
  "num_key_value_heads": 8,
  "num_quantizers": 32,
  "num_residual_layers": 1,
  "num_semantic_quantizers": 1,
  "pad_mode": "constant",
  "residual_kernel_size": 3,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "sampling_rate": 24000,
  "sliding_window": 250,
  "torch_dtype": "float32",
  "transformers_version": "4.45.0.dev0",
  "trim_right_ratio": 1.0,
  "upsample_groups": 512,
  "upsampling_ratios": [8, 6, 5, 4],
  "use_cache": false,
  "use_causal_conv": true,
  "use_conv_shortcut": false,
  "vector_quantization_hidden_dimension": 256
}"#;

    /// The same model as transformers 5.x writes it.
    const KYUTAI_MIMI_5X: &str = r#"{
  "_frame_rate": null,
  "architectures": ["MimiModel"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "audio_channels": 1,
  "codebook_dim": 256,
  "codebook_size": 2048,
  "compress": 2,
  "dilation_growth_rate": 2,
  "dtype": "float32",
  "head_dim": 64,
  "hidden_act": "gelu",
  "hidden_size": 512,
  "initializer_range": 0.02,
  "intermediate_size": 2048,
  "kernel_size": 7,
  "last_kernel_size": 3,
  "layer_scale_initial_scale": 0.01,
  "max_position_embeddings": 8000,
  "model_type": "mimi",
  "norm_eps": 1e-05,
  "num_attention_heads": 8,
  "num_filters": 64,
  "num_hidden_layers": 8,
  "num_key_value_heads": 8,
  "num_quantizers": 32,
  "num_residual_layers": 1,
  "num_semantic_quantizers": 1,
  "pad_mode": "constant",
  "residual_kernel_size": 3,
  "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
  "sampling_rate": 24000,
  "sliding_window": 250,
  "tie_word_embeddings": true,
  "transformers_version": "5.24.0",
  "trim_right_ratio": 1.0,
  "upsample_groups": 512,
  "upsampling_ratios": [8, 6, 5, 4],
  "use_cache": false,
  "use_causal_conv": true,
  "use_conv_shortcut": false,
  "use_streaming": false,
  "vector_quantization_hidden_dimension": 256
}"#;

    fn parse(json: &str) -> Result<MimiConfig> {
        MimiConfig::parse(json, Path::new("test/config.json"))
    }

    /// Replaces (or, with `None`, removes) one top-level key of `base`.
    fn with(base: &str, key: &str, value: Option<Value>) -> String {
        let mut v: Value = serde_json::from_str(base).unwrap();
        let obj = v.as_object_mut().unwrap();
        match value {
            Some(x) => obj.insert(key.to_string(), x),
            None => obj.remove(key),
        };
        v.to_string()
    }

    fn rejected(json: &str, needle: &str) {
        match parse(json) {
            Err(Error::BadConfig { path, msg }) => {
                assert_eq!(path, Path::new("test/config.json"));
                assert!(
                    msg.contains(needle),
                    "message {msg:?} does not name {needle:?}"
                );
            }
            other => panic!("expected a BadConfig naming {needle:?}, got {other:?}"),
        }
    }

    fn fixture(name: &str) -> MimiConfig {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mimi")
            .join(name)
            .join("config.json");
        MimiConfig::load(&path).unwrap()
    }

    #[test]
    fn kyutai_mimi_4x() {
        let c = parse(KYUTAI_MIMI_4X).unwrap();
        assert_eq!(c, MimiConfig::default());
        assert_eq!(c.hop_length(), 960);
        assert_eq!(c.frame_size(), 1920);
        assert_eq!(c.encoder_frame_rate(), 25.0);
        assert_eq!(c.frame_rate(), 12.5);
        assert_eq!(c.num_semantic_quantizers, 1);
        assert_eq!(c.num_acoustic_quantizers(), 31);
        assert!(c.has_quantizer_projections());
        assert_eq!(c.seanet_inner_channels(), 1024);
        assert_eq!(
            (0..4).map(|s| c.encoder_ratio(s)).collect::<Vec<_>>(),
            [4, 5, 6, 8]
        );
        assert_eq!(c.encoder_stage_channels(3), 512);
        assert_eq!(c.encoder_downsample_index(0), 3);
        assert_eq!(c.encoder_downsample_index(3), 12);
        assert_eq!(c.encoder_final_index(), 14);
        assert_eq!(c.decoder_upsample_index(0), 2);
        assert_eq!(c.decoder_resblock_index(3, 0), 12);
        assert_eq!(c.decoder_final_index(), 14);
    }

    #[test]
    fn kyutai_mimi_5x_and_empty_object_are_the_same_model() {
        assert_eq!(parse(KYUTAI_MIMI_5X).unwrap(), MimiConfig::default());
        assert_eq!(parse("{}").unwrap(), MimiConfig::default());
    }

    #[test]
    fn null_codebook_dim_means_hidden_size() {
        let j = with(KYUTAI_MIMI_4X, "codebook_dim", Some(Value::Null));
        let j = with(&j, "vector_quantization_hidden_dimension", Some(512.into()));
        let c = parse(&j).unwrap();
        assert_eq!(c.codebook_dim, 512);
        assert!(!c.has_quantizer_projections());
    }

    #[test]
    fn rope_theta_from_either_format() {
        let c = parse(&with(KYUTAI_MIMI_4X, "rope_theta", Some(500.0.into()))).unwrap();
        assert_eq!(c.rope_theta, 500.0);
        let p = serde_json::json!({"rope_type": "default", "rope_theta": 20000});
        let c = parse(&with(KYUTAI_MIMI_5X, "rope_parameters", Some(p))).unwrap();
        assert_eq!(c.rope_theta, 20000.0);
    }

    #[test]
    fn fixture_a() {
        let c = fixture("a");
        assert_eq!(c.upsampling_ratios, [4, 3, 2, 2]);
        assert_eq!(c.hop_length(), 48);
        assert_eq!(c.frame_size(), 96);
        assert_eq!(c.frame_rate(), 250.0);
        assert_eq!(c.encoder_frame_rate(), 500.0);
        assert_eq!(
            (c.hidden_size, c.num_attention_heads, c.head_dim),
            (32, 4, 8)
        );
        assert_eq!((c.num_hidden_layers, c.sliding_window), (2, 8));
        assert_eq!(
            (c.num_semantic_quantizers, c.num_acoustic_quantizers()),
            (1, 3)
        );
        assert_eq!((c.codebook_size, c.codebook_dim), (64, 16));
        assert_eq!(c.seanet_inner_channels(), 64);
        assert_eq!(c.encoder_final_index(), 14);
    }

    #[test]
    fn fixture_b() {
        let c = fixture("b");
        assert_eq!(c.frame_size(), 1920);
        assert_eq!(c.num_residual_layers, 2);
        assert_eq!(c.residual_dilation(1), 2);
        assert_eq!(
            (c.hidden_size, c.num_attention_heads, c.head_dim),
            (24, 2, 12)
        );
        assert_eq!(
            (c.num_semantic_quantizers, c.num_acoustic_quantizers()),
            (2, 6)
        );
        assert_eq!(c.seanet_inner_channels(), 48);
        // Two residual blocks per stage: the layer indices shift.
        assert_eq!(c.encoder_resblock_index(0, 1), 2);
        assert_eq!(c.encoder_downsample_index(0), 4);
        assert_eq!(c.encoder_final_index(), 18);
        assert_eq!(c.decoder_upsample_index(1), 6);
        assert_eq!(c.decoder_final_index(), 18);
    }

    #[test]
    fn fixture_tensor_indices_match_the_checkpoint() {
        // The layer-index helpers must name tensors that exist in the saved fixtures.
        for name in ["a", "b"] {
            let c = fixture(name);
            let summary = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mimi/summary.json"),
            )
            .unwrap();
            let v: Value = serde_json::from_str(&summary).unwrap();
            let tensors = v["configs"][name]["tensors"].as_object().unwrap();
            let has = |t: String| assert!(tensors.contains_key(&t), "{name}: no tensor {t}");
            for s in 0..c.num_stages() {
                has(format!(
                    "encoder.layers.{}.conv.weight",
                    c.encoder_downsample_index(s)
                ));
                has(format!(
                    "decoder.layers.{}.conv.weight",
                    c.decoder_upsample_index(s)
                ));
                for j in 0..c.num_residual_layers {
                    let e = c.encoder_resblock_index(s, j);
                    let d = c.decoder_resblock_index(s, j);
                    has(format!("encoder.layers.{e}.block.1.conv.weight"));
                    has(format!("decoder.layers.{d}.block.3.conv.weight"));
                }
            }
            has(format!(
                "encoder.layers.{}.conv.weight",
                c.encoder_final_index()
            ));
            has(format!(
                "decoder.layers.{}.conv.weight",
                c.decoder_final_index()
            ));
        }
    }

    #[test]
    fn unsupported_behaviour_is_rejected_by_name() {
        let cases: &[(&str, Value)] = &[
            ("pad_mode", "reflect".into()),
            ("use_causal_conv", false.into()),
            ("use_conv_shortcut", true.into()),
            ("trim_right_ratio", 0.5.into()),
            ("hidden_act", "gelu_pytorch_tanh".into()),
            ("audio_channels", 2.into()),
            ("attention_bias", true.into()),
            (
                "rope_scaling",
                serde_json::json!({"rope_type": "linear", "factor": 2.0}),
            ),
            ("upsample_groups", 1.into()),
            ("num_key_value_heads", 4.into()),
            ("frame_rate", 25.0.into()),
            ("sliding_window", Value::Null),
            ("num_semantic_quantizers", 32.into()),
            ("codebook_size", 2000.into()),
            ("codebook_dim", 128.into()),
            ("sampling_rate", 16000.into()),
            ("upsampling_ratios", serde_json::json!([8, 0, 5])),
            ("kernel_size", "7".into()),
            ("norm_type", "rms_norm".into()),
            ("model_type", "encodec".into()),
            ("encoder_config", serde_json::json!({"hidden_size": 8})),
        ];
        for (key, value) in cases {
            rejected(&with(KYUTAI_MIMI_4X, key, Some(value.clone())), key);
        }
        let p = serde_json::json!({"rope_type": "dynamic", "rope_theta": 10000.0});
        rejected(
            &with(KYUTAI_MIMI_5X, "rope_parameters", Some(p)),
            "rope_type",
        );
        let p = serde_json::json!({"rope_type": "default", "rope_theta": 1e4, "factor": 2});
        rejected(
            &with(KYUTAI_MIMI_5X, "rope_parameters", Some(p)),
            "rope_parameters.factor",
        );
        rejected(
            &with(KYUTAI_MIMI_5X, "_frame_rate", Some(10.0.into())),
            "_frame_rate",
        );
        rejected("[1, 2]", "JSON object");
        rejected("{", "not valid JSON");
    }

    #[test]
    fn dropped_halves_are_reported_not_rejected() {
        let c = parse(&with(KYUTAI_MIMI_5X, "encoder_config", Some(Value::Null))).unwrap();
        assert!(!c.has_encoder && c.has_decoder);
        let both = with(
            &with(KYUTAI_MIMI_5X, "encoder_config", Some(Value::Null)),
            "decoder_config",
            Some(Value::Null),
        );
        rejected(&both, "no codec left");
    }

    #[test]
    fn harmless_keys_are_ignored() {
        let j = with(KYUTAI_MIMI_4X, "initializer_range", Some(1.0.into()));
        let j = with(&j, "layer_scale_initial_scale", Some(0.5.into()));
        let j = with(&j, "_name_or_path", Some("kyutai/mimi".into()));
        assert_eq!(parse(&j).unwrap(), MimiConfig::default());
    }

    #[test]
    fn missing_file_is_an_io_error() {
        let e = MimiConfig::load("/nonexistent/config.json").unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e:?}");
    }
}
