//! What the model configs ([`crate::mimi::MimiConfig`], [`crate::csm::CsmConfig`]) share:
//! JSON parsing whose errors name the key path, field types that admit the one value this
//! runtime implements, the RoPE settings of both transformers-format layouts, and the size
//! [`limits`] every config is checked against before anything is allocated.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;

use serde::de::{DeserializeOwned, Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};

use crate::kernels::rope::Llama3Scaling;
use crate::{Error, Result};

/// The largest sizes a config may declare. Each admits the published checkpoints (csm-1b with
/// the kyutai/mimi codec; their values in the comments) with a wide margin, and together they
/// keep every buffer sized from a config far from overflowing `usize`; a value past a limit is
/// an [`Error::BadConfig`] naming the key, never a panic or an abort at allocation.
pub mod limits {
    /// Transformer width (csm-1b 2048, its depth decoder 1024, Mimi 512).
    pub const HIDDEN_SIZE: usize = 1 << 14;
    /// MLP width (csm-1b 8192, Mimi 2048).
    pub const INTERMEDIATE_SIZE: usize = 1 << 16;
    /// Layers of one transformer (csm-1b 16, Mimi 8).
    pub const LAYERS: usize = 256;
    /// Attention heads, query or key/value (csm-1b 32).
    pub const HEADS: usize = 256;
    /// Width of one head (csm-1b 64 and 128, Mimi 64).
    pub const HEAD_DIM: usize = 1024;
    /// Positions of a KV cache: `max_position_embeddings` (csm-1b 2048) or Mimi's
    /// `sliding_window` (250).
    pub const POSITIONS: usize = 1 << 20;
    /// The f32 keys and values of one transformer, all layers (csm-1b backbone: 128 MiB).
    pub const KV_CACHE_BYTES: u64 = 4 << 30;
    /// Ids per codebook in the CSM heads (`vocab_size`, 2051).
    pub const AUDIO_VOCAB: usize = 1 << 17;
    /// Text vocabulary (128256).
    pub const TEXT_VOCAB: usize = 1 << 21;
    /// Codebooks per frame (32).
    pub const CODEBOOKS: usize = 256;
    /// Codewords per Mimi codebook (2048).
    pub const CODEBOOK_SIZE: usize = 1 << 16;
    /// Mimi's quantizer dimension (256).
    pub const CODEBOOK_DIM: usize = 1 << 14;
    /// Mimi's sampling rate (24000).
    pub const SAMPLING_RATE: usize = 384_000;
    /// SEANet stages (4).
    pub const STAGES: usize = 8;
    /// The ratio of one SEANet stage (8, 6, 5, 4).
    pub const RATIO: usize = 64;
    /// SEANet hop: samples per transformer step (960).
    pub const HOP: usize = 1 << 16;
    /// Channels at the SEANet's innermost end, `num_filters << stages` (1024).
    pub const SEANET_CHANNELS: usize = 1 << 16;
    /// Conv kernel sizes (7 and 3).
    pub const KERNEL: usize = 64;
    /// Residual blocks per SEANet stage (1).
    pub const RESIDUAL_LAYERS: usize = 16;
    /// Receptive span of the most dilated residual conv, in steps (3).
    pub const CONV_SPAN: usize = 1 << 12;
    /// The widest SEANet activation of one frame times the widest kernel, in values: what a
    /// frame's buffers and conv scratch grow with (kyutai/mimi: 1920 x 64 x 7).
    pub const SEANET_FRAME_VALUES: usize = 1 << 24;
}

/// Reads `path` and parses it into `C` through its raw form `R`.
pub(crate) fn load<R, C>(path: &Path) -> Result<C>
where
    R: DeserializeOwned,
    C: TryFrom<R, Error = String>,
{
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse::<R, C>(&text, path)
}

/// Parses `json` into its raw form `R` (an error names the key path inside the file for a
/// value of the wrong type or an unsupported setting), then converts and checks it into `C`;
/// `path` names the file in errors.
pub(crate) fn parse<R, C>(json: &str, path: &Path) -> Result<C>
where
    R: DeserializeOwned,
    C: TryFrom<R, Error = String>,
{
    let mut de = serde_json::Deserializer::from_str(json);
    let raw = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| {
            let key = e.path().to_string();
            let e = e.into_inner();
            match e.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    format!("not valid JSON: {e}")
                }
                _ if key == "." => e.to_string(),
                _ => format!("`{key}`: {e}"),
            }
        })
        .and_then(|v| {
            de.end()
                .map(|()| v)
                .map_err(|e| format!("not valid JSON: {e}"))
        });
    raw.and_then(C::try_from).map_err(|msg| bad(path, msg))
}

fn bad(path: &Path, msg: String) -> Error {
    Error::BadConfig {
        path: path.to_path_buf(),
        msg,
    }
}

/// For a field where an explicit null means something else than an absent key
/// (`#[serde(default, deserialize_with = "nullable")]`): `Some(None)` is the null.
pub(crate) fn nullable<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Fails on the first key of `other` (those a raw config does not declare) that is not in
/// `harmless`; `prefix` places it in the file.
pub(crate) fn only_harmless(
    other: &BTreeMap<String, IgnoredAny>,
    harmless: &[&str],
    prefix: &str,
) -> std::result::Result<(), String> {
    match other.keys().find(|k| !harmless.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unknown key `{prefix}{k}`: it may change the model and is not supported"
        )),
        None => Ok(()),
    }
}

/// `fields_in_ranges!(config, prefix, field: range, ...)`: [`in_ranges`] on fields whose names
/// are their keys in the file (so a message cannot name the wrong key).
macro_rules! fields_in_ranges {
    ($c:expr, $prefix:expr, $($field:ident: $range:expr),+ $(,)?) => {
        $crate::config::in_ranges($prefix, &[$((stringify!($field), $c.$field, $range)),+])
    };
}
pub(crate) use fields_in_ranges;

/// Fails on the first `(key, value, range)` whose value is outside its range; `prefix` places
/// the keys in the file.
pub(crate) fn in_ranges(
    prefix: &str,
    sizes: &[(&str, usize, RangeInclusive<usize>)],
) -> std::result::Result<(), String> {
    match sizes.iter().find(|(_, v, r)| !r.contains(v)) {
        Some((key, v, r)) if v < r.start() => Err(format!(
            "`{prefix}{key}` must be at least {}, got {v}",
            r.start()
        )),
        Some((key, v, r)) => Err(format!(
            "`{prefix}{key}` {v} is above this runtime's limit of {}",
            r.end()
        )),
        None => Ok(()),
    }
}

/// Checks that an f32 KV cache of `layers` x `positions` x `kv_heads` x `head_dim` keys and
/// values fits [`limits::KV_CACHE_BYTES`]; `positions_key` names the positions' key and
/// `prefix` places both keys in the file.
pub(crate) fn kv_cache_fits(
    prefix: &str,
    positions_key: &str,
    [layers, positions, kv_heads, head_dim]: [usize; 4],
) -> std::result::Result<(), String> {
    let bytes = [layers, positions, kv_heads, head_dim, 2 * 4]
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64));
    match bytes {
        Some(b) if b <= limits::KV_CACHE_BYTES => Ok(()),
        _ => Err(format!(
            "a KV cache for `{prefix}{positions_key}` {positions} x `{prefix}num_hidden_layers` \
             {layers} x {kv_heads} heads x {head_dim} is above this runtime's limit of {} GiB",
            limits::KV_CACHE_BYTES >> 30
        )),
    }
}

/// A boolean field this runtime implements in one setting only (`Is<false>` for
/// `attention_bias`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Is<const B: bool>;

impl<'de, const B: bool> Deserialize<'de> for Is<B> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match bool::deserialize(d)? {
            v if v == B => Ok(Is),
            v => Err(D::Error::custom(format!("{v} is not supported (only {B})"))),
        }
    }
}

/// A numeric field this runtime implements for one value only (`Only<1>` for
/// `audio_channels`); 1 and 1.0 are the same value.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Only<const N: u64>;

impl<'de, const N: u64> Deserialize<'de> for Only<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match f64::deserialize(d)? {
            v if v == N as f64 => Ok(Only),
            v => Err(D::Error::custom(format!("{v} is not supported (only {N})"))),
        }
    }
}

/// A finite number above zero.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Positive(pub f64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match f64::deserialize(d)? {
            v if v.is_finite() && v > 0.0 => Ok(Positive(v)),
            v => Err(D::Error::custom(format!(
                "must be a positive number, got {v}"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RopeType {
    Default,
    Llama3,
}

/// One RoPE settings object: `rope_scaling` (transformers 4.x, theta beside it) or
/// `rope_parameters` (5.x, theta inside).
#[allow(dead_code)] // the one-value switches are checked as they are read, never used
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRope {
    rope_type: Option<RopeType>,
    /// The older spelling of `rope_type` (transformers may keep both).
    #[serde(rename = "type")]
    legacy_type: Option<RopeType>,
    /// The rotated part of each head: all of it.
    partial_rotary_factor: Option<Only<1>>,
    rope_theta: Option<Positive>,
    factor: Option<Positive>,
    low_freq_factor: Option<Positive>,
    high_freq_factor: Option<Positive>,
    original_max_position_embeddings: Option<Positive>,
}

/// RoPE of one config level: theta (`rope_theta` beside a 4.x `rope_scaling`, or inside a 5.x
/// `rope_parameters`, else `default_theta`) and the Llama-3 scaling, if any. `prefix` places
/// the level in the file.
pub(crate) fn rope(
    prefix: &str,
    theta: Option<Positive>,
    scaling: Option<&RawRope>,
    parameters: Option<&RawRope>,
    default_theta: f64,
) -> std::result::Result<(f64, Option<Llama3Scaling>), String> {
    let (key, r) = match (scaling, parameters) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "both `{prefix}rope_scaling` and `{prefix}rope_parameters` are set: use one"
            ));
        }
        (Some(r), None) => ("rope_scaling", r),
        (None, Some(r)) => ("rope_parameters", r),
        (None, None) => return Ok((theta.map_or(default_theta, |t| t.0), None)),
    };
    let theta = r.rope_theta.or(theta).map_or(default_theta, |t| t.0);
    let need = |k: &str, v: Option<Positive>| {
        v.map(|p| p.0)
            .ok_or_else(|| format!("`{prefix}{key}.{k}` is required for rope_type \"llama3\""))
    };
    match r.rope_type.or(r.legacy_type).unwrap_or(RopeType::Default) {
        RopeType::Default => {
            let set = [
                ("factor", r.factor),
                ("low_freq_factor", r.low_freq_factor),
                ("high_freq_factor", r.high_freq_factor),
            ];
            match set.iter().find(|(_, v)| v.is_some()) {
                Some((k, _)) => Err(format!(
                    "`{prefix}{key}.{k}` is set but rope_type is \"default\""
                )),
                None => Ok((theta, None)),
            }
        }
        RopeType::Llama3 => {
            let s = Llama3Scaling {
                factor: need("factor", r.factor)?,
                low_freq_factor: need("low_freq_factor", r.low_freq_factor)?,
                high_freq_factor: need("high_freq_factor", r.high_freq_factor)?,
                original_max_position_embeddings: need(
                    "original_max_position_embeddings",
                    r.original_max_position_embeddings,
                )?,
            };
            if s.high_freq_factor <= s.low_freq_factor {
                return Err(format!(
                    "`{prefix}{key}`: high_freq_factor {} must exceed low_freq_factor {}",
                    s.high_freq_factor, s.low_freq_factor
                ));
            }
            Ok((theta, Some(s)))
        }
    }
}
