//! Mimi's `config.json`, as written by transformers 4.x (the published `kyutai/mimi` checkpoint:
//! `rope_theta`, `frame_rate`) or 5.x (`rope_parameters`, `_frame_rate: null`).
//!
//! A missing or null key takes the transformers default, which is the kyutai/mimi value. Every
//! key that changes the model's maths is either honoured or, if this crate does not implement
//! that variant, rejected with [`Error::BadConfig`] naming the key. Unknown keys are rejected
//! unless they are on the [`HARMLESS_KEYS`] list (metadata and training/initialisation-only
//! settings). Sizes are checked against [`crate::config::limits`].

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{self, ensure, limits};
use crate::{Error, Result};

/// Keys accepted and ignored besides [`crate::config::HARMLESS_KEYS`]: they cannot change
/// inference results.
pub const HARMLESS_KEYS: &[&str] = &[
    "layer_scale_initial_scale", // init value of the stored layer-scale vectors
    "use_streaming",             // a runtime default of the reference, not maths
    "max_position_embeddings",   // RoPE cache size; the default RoPE does not depend on it
    "tie_word_embeddings",       // Mimi has no word embeddings
];

/// What the runtime needs to know about a Mimi codec, validated by [`MimiConfig::parse`] (the
/// derived `Deserialize` only reads the fields, named as the keys of `config.json`; an absent
/// key takes the kyutai/mimi value).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
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
    /// Absent: `hidden_size / num_attention_heads`.
    pub head_dim: usize,
    pub norm_eps: f64,
    /// From `rope_theta` or `rope_parameters`.
    #[serde(skip)]
    pub rope_theta: f64,
    /// A key at distance `q - k` is visible iff `0 <= q - k < sliding_window` (null, unbounded
    /// attention, is not supported).
    pub sliding_window: usize,
    pub codebook_size: usize,
    /// Null: `hidden_size` (as transformers reads it).
    pub codebook_dim: usize,
    pub num_quantizers: usize,
    pub num_semantic_quantizers: usize,
    /// Quantizer-space dimension; `!= hidden_size` means 1x1 input/output projections exist.
    pub vector_quantization_hidden_dimension: usize,
    /// False for a checkpoint saved with `encoder_config: null` (decoder only).
    #[serde(skip)]
    pub has_encoder: bool,
    /// False for a checkpoint saved with `decoder_config: null` (encoder only).
    #[serde(skip)]
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

/// The keys that only have to agree with the fields.
#[derive(Deserialize)]
struct Agreeing {
    /// Only `hidden_size` (a depthwise upsample).
    upsample_groups: Option<usize>,
    /// Only `num_attention_heads` (plain multi-head attention).
    num_key_value_heads: Option<usize>,
    /// 4.x `frame_rate`, 5.x `_frame_rate`: an explicit rate sets the downsample stride in the
    /// reference; only the rate of the 2x downsample is supported.
    frame_rate: Option<f64>,
    #[serde(rename = "_frame_rate")]
    frame_rate_5x: Option<f64>,
}

impl MimiConfig {
    /// Reads and validates `path` (a Mimi `config.json`).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        config::load(path.as_ref(), Self::from_json)
    }

    /// Parses and validates config JSON; `path` only names the source in error messages.
    pub fn parse(json: &str, path: &Path) -> Result<Self> {
        config::parse(json, path, Self::from_json)
    }

    /// A parsed `config.json` (or CSM's `codec_config`) checked into a config: the error names
    /// the key at fault.
    pub(crate) fn from_json(v: Value) -> std::result::Result<Self, String> {
        let mut o = config::object(v, "")?;
        ensure!(
            o.get("sliding_window") != Some(&Value::Null),
            "`sliding_window` null (unbounded attention) is not supported"
        );
        let null_codebook_dim = o.get("codebook_dim") == Some(&Value::Null);
        // Null drops that half; an object is not supported.
        let mut half = |k: &str| match o.remove(k) {
            None => Ok(true),
            Some(Value::Null) => Ok(false),
            Some(v) => Err(format!(
                "`{k}` must be absent or null (the halves share the top-level keys), got {v}"
            )),
        };
        let (has_encoder, has_decoder) = (half("encoder_config")?, half("decoder_config")?);
        let harmless = [config::HARMLESS_KEYS, HARMLESS_KEYS];
        let one_value = [
            ("model_type", json!("mimi")),
            ("audio_channels", json!(1)),
            ("use_causal_conv", json!(true)),
            ("pad_mode", json!("constant")),     // zero left padding
            ("trim_right_ratio", json!(1)),      // all the trimming on the right
            ("use_conv_shortcut", json!(false)), // identity skips in the residual blocks
            ("hidden_act", json!("gelu")),       // the exact (erf) GELU
            ("attention_bias", json!(false)),
        ];
        config::prepare(&mut o, "", &harmless, &one_value)?;
        let d = MimiConfig::default();
        let (rope_theta, scaling) = config::rope(&mut o, "", d.rope_theta)?;
        ensure!(
            scaling.is_none(),
            "RoPE scaling (rope_type \"llama3\") is not supported for Mimi"
        );
        let head_dim_set = o.contains_key("head_dim");
        let (mut c, a): (MimiConfig, Agreeing) = config::read(o, "")?;
        if !head_dim_set {
            c.head_dim = c
                .hidden_size
                .checked_div(c.num_attention_heads)
                .unwrap_or(0);
        }
        if null_codebook_dim {
            c.codebook_dim = c.hidden_size;
        }
        (c.rope_theta, c.has_encoder, c.has_decoder) = (rope_theta, has_encoder, has_decoder);
        c.check()?;
        let (hidden, heads) = (c.hidden_size, c.num_attention_heads);
        let groups = a.upsample_groups.unwrap_or(hidden);
        ensure!(
            groups == hidden,
            "`upsample_groups` {groups} is not supported (only depthwise: `hidden_size` {hidden})"
        );
        let kv_heads = a.num_key_value_heads.unwrap_or(heads);
        ensure!(
            kv_heads == heads,
            "`num_key_value_heads` {kv_heads} is not supported (only `num_attention_heads` \
             {heads}, plain multi-head attention)"
        );
        let want = c.frame_rate();
        for (key, rate) in [
            ("frame_rate", a.frame_rate),
            ("_frame_rate", a.frame_rate_5x),
        ] {
            ensure!(
                rate.is_none_or(|r| (r - want).abs() <= 1e-9 * want),
                "`{key}` {} disagrees with sampling_rate / frame size = {want} (only the 2x \
                 downsample of the reference is supported)",
                rate.unwrap_or_default()
            );
        }
        Ok(c)
    }

    /// The checks that hold for every usable configuration (sizes within
    /// [`crate::config::limits`] first, so that no derived size can overflow, then the
    /// relations between fields); [`crate::mimi::Mimi::from_weights`] runs them too.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|msg| Error::Invalid(format!("Mimi config: {msg}")))
    }

    fn check(&self) -> std::result::Result<(), String> {
        use limits::*;
        let stages = self.upsampling_ratios.len();
        config::fields_in_ranges!(
            self,
            "",
            sampling_rate: 1..=SAMPLING_RATE,
            num_filters: 1..=SEANET_CHANNELS,
            num_residual_layers: 0..=RESIDUAL_LAYERS,
            kernel_size: 1..=KERNEL,
            last_kernel_size: 1..=KERNEL,
            residual_kernel_size: 1..=KERNEL,
            dilation_growth_rate: 1..=CONV_SPAN,
            compress: 1..=SEANET_CHANNELS,
            hidden_size: 1..=HIDDEN_SIZE,
            num_hidden_layers: 0..=LAYERS,
            intermediate_size: 1..=INTERMEDIATE_SIZE,
            num_attention_heads: 1..=HEADS,
            head_dim: 1..=HEAD_DIM,
            sliding_window: 1..=POSITIONS,
            codebook_size: 1..=CODEBOOK_SIZE,
            codebook_dim: 1..=CODEBOOK_DIM,
            num_quantizers: 1..=CODEBOOKS,
            num_semantic_quantizers: 1..=CODEBOOKS,
        )?;
        let (ratios, filters) = (&self.upsampling_ratios, self.num_filters);
        let hop = ratios.iter().try_fold(1usize, |acc, &r| acc.checked_mul(r));
        let hop = hop.filter(|&h| h <= HOP && (1..=STAGES).contains(&stages));
        let Some(hop) = hop.filter(|_| ratios.iter().all(|r| (1..=RATIO).contains(r))) else {
            return Err(format!(
                "`upsampling_ratios` {ratios:?} must be 1 to {STAGES} ratios of 1 to {RATIO} whose \
                 product (the hop) is at most {HOP}"
            ));
        };
        ensure!(
            self.compress <= filters,
            "`compress` {} leaves the residual blocks of `num_filters` {filters} channels none",
            self.compress
        );
        // Below the limits, the shifts and products here cannot overflow 64 bits.
        ensure!(
            self.seanet_inner_channels() <= SEANET_CHANNELS,
            "`num_filters` {filters} << {stages} stages is above this runtime's limit of \
             {SEANET_CHANNELS} channels"
        );
        let (rate, blocks, kernel) = (
            self.dilation_growth_rate,
            self.num_residual_layers,
            self.residual_kernel_size,
        );
        let span = (rate as u64)
            .checked_pow(blocks.saturating_sub(1) as u32)
            .and_then(|d| d.checked_mul(kernel as u64 - 1));
        ensure!(
            span.is_some_and(|s| s < CONV_SPAN as u64),
            "`dilation_growth_rate` {rate} over {blocks} residual blocks of \
             `residual_kernel_size` {kernel} spans more than this runtime's limit of {CONV_SPAN} \
             steps"
        );
        let widest = self.kernel_size.max(self.last_kernel_size).max(kernel);
        let per_frame = self.seanet_peak() * widest as u64;
        ensure!(
            per_frame <= SEANET_FRAME_VALUES as u64,
            "`upsampling_ratios` {ratios:?} with `num_filters` {filters} make SEANet buffers of \
             {per_frame} values a frame, above this runtime's limit of {SEANET_FRAME_VALUES}"
        );
        let (hidden, heads, head_dim) = (self.hidden_size, self.num_attention_heads, self.head_dim);
        let sizes = [self.num_hidden_layers, self.sliding_window, heads, head_dim];
        config::kv_cache_fits("", "sliding_window", sizes)?;
        ensure!(
            self.sampling_rate.is_multiple_of(hop),
            "`sampling_rate` {} is not a multiple of the SEANet hop {hop} (product of \
             `upsampling_ratios`): the latent stride would not be 2",
            self.sampling_rate
        );
        ensure!(
            hidden.is_multiple_of(heads),
            "`hidden_size` {hidden} is not divisible by `num_attention_heads` {heads}"
        );
        ensure!(
            head_dim.is_multiple_of(2),
            "`head_dim` {head_dim} must be even (RoPE rotates half-dimension pairs)"
        );
        let (semantic, quantizers) = (self.num_semantic_quantizers, self.num_quantizers);
        ensure!(
            semantic < quantizers,
            "`num_semantic_quantizers` {semantic} must be below `num_quantizers` {quantizers}"
        );
        ensure!(
            self.codebook_size.is_power_of_two(),
            "`codebook_size` {} must be a power of two",
            self.codebook_size
        );
        let (dim, vq_dim) = (self.codebook_dim, self.vector_quantization_hidden_dimension);
        ensure!(
            dim == vq_dim,
            "`codebook_dim` {dim} must equal `vector_quantization_hidden_dimension` {vq_dim} (the \
             codewords live in the projected space)"
        );
        let (eps, theta) = (self.norm_eps, self.rope_theta);
        ensure!(
            eps > 0.0 && eps.is_finite(),
            "`norm_eps` must be positive, got {eps}"
        );
        ensure!(
            theta > 1.0 && theta.is_finite(),
            "RoPE theta must be a finite number above 1, got {theta}"
        );
        ensure!(
            self.has_encoder || self.has_decoder,
            "both `encoder_config` and `decoder_config` are null: no codec left"
        );
        Ok(())
    }

    /// The widest SEANet activation of one frame, in values: `steps x channels` at the
    /// encoder stage where it peaks (the decoder mirrors the encoder).
    fn seanet_peak(&self) -> u64 {
        let mut steps = self.frame_size() as u64;
        let mut peak = steps * self.num_filters as u64;
        for s in 0..self.num_stages() {
            steps = steps.div_ceil(self.encoder_ratio(s) as u64);
            peak = peak.max(steps * self.encoder_stage_channels(s + 1) as u64);
        }
        peak
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
}

#[cfg(test)]
pub(crate) mod tests {
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

    pub(crate) fn fixture(name: &str) -> MimiConfig {
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
    fn absurd_sizes_are_errors_naming_the_key() {
        let big = Value::from(1u64 << 40);
        let cases: &[(&str, Value, &str)] = &[
            (
                "sampling_rate",
                big.clone(),
                "`sampling_rate` 1099511627776 is above",
            ),
            (
                "hidden_size",
                big.clone(),
                "`hidden_size` 1099511627776 is above",
            ),
            (
                "intermediate_size",
                big.clone(),
                "`intermediate_size` 1099511627776",
            ),
            (
                "num_hidden_layers",
                big.clone(),
                "`num_hidden_layers` 1099511627776",
            ),
            (
                "num_attention_heads",
                big.clone(),
                "`num_attention_heads` 1099511627776",
            ),
            ("head_dim", big.clone(), "`head_dim` 1099511627776 is above"),
            (
                "sliding_window",
                (1u64 << 62).into(),
                "`sliding_window` 4611686018427387904",
            ),
            (
                "codebook_size",
                big.clone(),
                "`codebook_size` 1099511627776 is above",
            ),
            (
                "codebook_dim",
                big.clone(),
                "`codebook_dim` 1099511627776 is above",
            ),
            (
                "num_quantizers",
                big.clone(),
                "`num_quantizers` 1099511627776 is above",
            ),
            (
                "num_filters",
                big.clone(),
                "`num_filters` 1099511627776 is above",
            ),
            (
                "num_filters",
                8192.into(),
                "`num_filters` 8192 << 4 stages is above",
            ),
            (
                "kernel_size",
                big.clone(),
                "`kernel_size` 1099511627776 is above",
            ),
            (
                "num_residual_layers",
                40.into(),
                "`num_residual_layers` 40 is above",
            ),
            (
                "dilation_growth_rate",
                100_000.into(),
                "`dilation_growth_rate` 100000 is above",
            ),
            (
                "upsampling_ratios",
                serde_json::json!([1u64 << 40, 2]),
                "`upsampling_ratios`",
            ),
            (
                "upsampling_ratios",
                serde_json::json!([64, 64, 64]),
                "hop) is at most 65536",
            ),
            (
                "upsampling_ratios",
                serde_json::json!([1, 1, 1, 1, 1, 1, 1, 1, 1]),
                "1 to 8 ratios",
            ),
            ("compress", 128.into(), "`compress` 128 leaves"),
        ];
        for (key, value, needle) in cases {
            rejected(&with(KYUTAI_MIMI_4X, key, Some(value.clone())), needle);
        }
        // within each limit, but the products are not: a dilation span, the SEANet buffers of a
        // frame, a KV cache
        let j = with(KYUTAI_MIMI_4X, "num_residual_layers", Some(14.into()));
        rejected(&j, "spans more than this runtime's limit of 4096 steps");
        let j = with(KYUTAI_MIMI_5X, "num_filters", Some(4096.into()));
        rejected(&j, "SEANet buffers of");
        let j = with(KYUTAI_MIMI_4X, "sliding_window", Some((1u64 << 20).into()));
        let j = with(&j, "num_hidden_layers", Some(64.into()));
        rejected(
            &j,
            "a KV cache for `sliding_window` 1048576 x `num_hidden_layers` 64",
        );
        // and a hand-built config is held to the same limits
        let c = MimiConfig {
            sliding_window: 1 << 62,
            ..MimiConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("`sliding_window`") && e.contains("limit"), "{e}");
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
