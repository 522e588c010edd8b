//! What the model configs ([`crate::mimi::MimiConfig`], [`crate::csm::CsmConfig`]) share:
//! a level of `config.json` checked on the parsed JSON (`prepare`: nulls, harmless keys, the
//! settings implemented in one value only) then derived into the config structs (`read`:
//! every type error and unknown key named by its path), the RoPE settings of both
//! transformers-format layouts, and the size [`limits`] every config is checked against
//! before anything is allocated.

use std::ops::RangeInclusive;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;
use crate::kernels::rope::Llama3Scaling;

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

/// One level of a config file: a JSON object.
pub(crate) type Obj = Map<String, Value>;

/// Keys accepted and ignored at every level of every config: metadata and training settings.
pub const HARMLESS_KEYS: &[&str] = &[
    "architectures",
    "transformers_version",
    "torch_dtype", // the weights' dtype comes from the safetensors file
    "dtype",
    "_name_or_path",
    "_commit_hash",
    "initializer_range", // weight init only
    "attention_dropout", // training only
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
    "id2label",
    "label2id",
    "problem_type",
];

/// Reads `path` and parses it with `from` (see [`parse`]).
pub(crate) fn load<C>(path: &Path, from: fn(Value) -> Result<C, String>) -> crate::Result<C> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path, from)
}

/// Parses `json` and builds a config from it with `from`, whose error message names the key
/// path at fault; `path` names the file in errors.
pub(crate) fn parse<C>(
    json: &str,
    path: &Path,
    from: fn(Value) -> Result<C, String>,
) -> crate::Result<C> {
    serde_json::from_str(json)
        .map_err(|e| format!("not valid JSON: {e}"))
        .and_then(from)
        .map_err(|msg| Error::BadConfig {
            path: path.to_path_buf(),
            msg,
        })
}

/// `v` as an object; `key` names it in the error ("" for the whole file).
pub(crate) fn object(v: Value, key: &str) -> Result<Obj, String> {
    match v {
        Value::Object(o) => Ok(o),
        _ if key.is_empty() => Err("expected a JSON object".into()),
        v => Err(format!("`{key}` must be a JSON object, got {v}")),
    }
}

/// Prepares one level of a file (`prefix` places it) for [`read`]: a null is the same as an
/// absent key (the caller first takes out those where it means something), `harmless` keys
/// are dropped, and each `(key, value)` of `one_value` (a setting this runtime implements in
/// one value only; 1 and 1.0 are the same) must be absent or that value.
pub(crate) fn prepare(
    o: &mut Obj,
    prefix: &str,
    harmless: &[&[&str]],
    one_value: &[(&str, Value)],
) -> Result<(), String> {
    o.retain(|k, v| !v.is_null() && !harmless.iter().any(|h| h.contains(&k.as_str())));
    for (k, want) in one_value {
        match o.remove(*k) {
            Some(v) if v != *want && v.as_f64().is_none_or(|x| Some(x) != want.as_f64()) => {
                return Err(format!("`{prefix}{k}` {v} is not supported (only {want})"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Deserialises one prepared level into `A` and `B`, each taking the keys it declares (absent
/// ones take its `#[serde(default)]`): a value of the wrong type is an error naming its key
/// path, and so is a key that neither declares.
pub(crate) fn read<A: DeserializeOwned, B: DeserializeOwned>(
    o: Obj,
    prefix: &str,
) -> Result<(A, B), String> {
    fn de<T: DeserializeOwned>(v: &Value, prefix: &str) -> Result<(T, Vec<String>), String> {
        let mut ignored = Vec::new();
        let mut note = |p: serde_ignored::Path| ignored.push(p.to_string());
        let t = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(v, &mut note))
            .map_err(|e| format!("`{prefix}{}`: {}", e.path(), e.inner()))?;
        Ok((t, ignored))
    }
    let v = Value::Object(o);
    let ((a, ia), (b, ib)) = (de(&v, prefix)?, de(&v, prefix)?);
    match ia.iter().find(|k| ib.contains(k)) {
        Some(k) => Err(unknown(prefix, k)),
        None => Ok((a, b)),
    }
}

fn unknown(prefix: &str, key: &str) -> String {
    format!("unknown key `{prefix}{key}`: it may change the model and is not supported")
}

/// Adds the keys of `defaults` (serialised) that `o` lacks.
pub(crate) fn fill(o: &mut Obj, defaults: &impl Serialize) {
    if let Ok(Value::Object(d)) = serde_json::to_value(defaults) {
        for (k, v) in d {
            o.entry(k).or_insert(v);
        }
    }
}

/// `ensure!(condition, "format", args...)`: an `Err` with the formatted message unless the
/// condition holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        let holds: bool = $cond;
        if !holds {
            return Err(format!($($msg)+));
        }
    };
}
pub(crate) use ensure;

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
) -> Result<(), String> {
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
) -> Result<(), String> {
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

/// Takes the RoPE keys out of one level (`prefix` places it): theta (`rope_theta` beside a
/// 4.x `rope_scaling`, or inside a 5.x `rope_parameters`; `theta` if neither sets it) and the
/// Llama-3 scaling, if any.
pub(crate) fn rope(
    o: &mut Obj,
    prefix: &str,
    theta: f64,
) -> Result<(f64, Option<Llama3Scaling>), String> {
    let positive = |key: &str, v: Option<Value>| match v {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(x) if x.is_finite() && x > 0.0 => Ok(Some(x)),
            _ => Err(format!("`{key}`: must be a positive number, got {v}")),
        },
    };
    let theta = positive(&format!("{prefix}rope_theta"), o.remove("rope_theta"))?.unwrap_or(theta);
    let (key, r) = match (o.remove("rope_scaling"), o.remove("rope_parameters")) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "both `{prefix}rope_scaling` and `{prefix}rope_parameters` are set: use one"
            ));
        }
        (Some(r), None) => (format!("{prefix}rope_scaling"), r),
        (None, Some(r)) => (format!("{prefix}rope_parameters"), r),
        (None, None) => return Ok((theta, None)),
    };
    let mut r = object(r, &key)?;
    let p = format!("{key}.");
    prepare(&mut r, &p, &[], &[("partial_rotary_factor", 1.into())])?;
    // "type" is the older spelling of "rope_type" (transformers may write both)
    let kind = match (r.remove("rope_type"), r.remove("type")) {
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => "default".into(),
    };
    let mut take = |k: &str| positive(&format!("{p}{k}"), r.remove(k));
    let theta = take("rope_theta")?.unwrap_or(theta);
    let keys = [
        "factor",
        "low_freq_factor",
        "high_freq_factor",
        "original_max_position_embeddings",
    ];
    let [a, b, c, d] = keys.map(&mut take);
    let values = [a?, b?, c?, d?];
    if let Some(k) = r.keys().next() {
        return Err(unknown(&p, k));
    }
    match kind.as_str() {
        Some("default") => match values[..3].iter().position(Option::is_some) {
            Some(i) => Err(format!(
                "`{p}{}` is set but rope_type is \"default\"",
                keys[i]
            )),
            None => Ok((theta, None)),
        },
        Some("llama3") => {
            if let Some(i) = values.iter().position(Option::is_none) {
                return Err(format!(
                    "`{p}{}` is required for rope_type \"llama3\"",
                    keys[i]
                ));
            }
            let [
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            ] = values.map(Option::unwrap_or_default);
            ensure!(
                high_freq_factor > low_freq_factor,
                "`{key}`: high_freq_factor {high_freq_factor} must exceed low_freq_factor \
                 {low_freq_factor}"
            );
            let s = Llama3Scaling {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            };
            Ok((theta, Some(s)))
        }
        _ => Err(format!(
            "`{p}rope_type` {kind} is not supported (only \"default\" or \"llama3\")"
        )),
    }
}
