//! Which output format each tensor gets.
//!
//! | tensor | `q8` mode | `f16` mode |
//! |---|---|---|
//! | non-float dtype (I64, U8, ...) | copied unchanged | copied unchanged |
//! | codebook buffer: a name with a `codebook` path segment, or containing `embed_sum`, `cluster_usage` or `initialized` | as is (F32, F16; BF16 -> F32) | as is |
//! | 0-D / 1-D float (norm weights, biases, scales) | as is | as is |
//! | embedding table (`embed_tokens`, `embed_text_tokens`, `embed_audio_tokens` in the name), >= 32 columns | Q8, row-major | F16, row-major |
//! | depthwise conv (from the model's config) | F16, row-major | F16, row-major |
//! | matches a `--keep` pattern (substring), >= 2-D | F16 (packed when a product weight) | F16 |
//! | 2-D `*.weight`, >= 32 columns, no `norm` or `scale` in the name (linear layers, heads) | **Q8P** | F16P |
//! | any other >= 2-D float `*.weight` (conv weights `[out, in, k]`, conv-transposes, CSM's `codebooks_head`) | F16P | F16P |
//! | any other >= 2-D float | F16, row-major | F16, row-major |
//!
//! "As is" keeps F32 and F16 and turns BF16 into F32. Product weights are stored **packed**
//! ([`crate::kernels::packed`]) in the arrangement the kernels read ([`Layout`]): a conv-
//! transpose `[in, out, k]` (named by the model's config, see [`Roles`]) as `[out * k, in]`,
//! CSM's `codebooks_head` `[n, hidden, vocab]` as `n` matrices `[vocab, hidden]`, everything
//! else as `[first dim, the rest]`; so loading is a zero-copy memory map and nothing is
//! rearranged at load. Tables read a row at a time (embeddings) stay row-major. The codebook
//! rule uses a path segment (not a substring) so that Mimi's `...codebook.embed_sum` stays
//! exact while CSM's `codebooks_head.weight` is a product weight.

use crate::kernels::packed::PackedFormat;
use crate::weights::{Dtype, Layout, is_float};
use std::collections::HashSet;
use std::path::Path;

/// The conversion mode chosen on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Q8,
    F16,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Q8 => "q8",
            Mode::F16 => "f16",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "q8" => Some(Mode::Q8),
            "f16" => Some(Mode::F16),
            _ => None,
        }
    }
}

/// The output format of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Row-major int8 blocks + f16 scales (tables).
    Q8,
    /// Row-major f16.
    F16,
    /// Row-major f32.
    F32,
    /// The stored bytes, unchanged (non-float dtypes).
    Copy,
    /// Packed for the kernels, in the given arrangement.
    Packed(PackedFormat, Layout),
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Q8 => "Q8",
            Target::F16 => "F16",
            Target::F32 => "F32",
            Target::Copy => "copy",
            Target::Packed(PackedFormat::Q8P, _) => "Q8P",
            Target::Packed(PackedFormat::F16P, _) => "F16P",
            Target::Packed(PackedFormat::F32P, _) => "F32P",
        }
    }
}

/// What the model's config says about tensors a name cannot tell: which 3-D weights are
/// transposed or depthwise convolutions (Mimi's decoder, standalone or as CSM's codec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub conv_transposes: HashSet<String>,
    pub depthwise: HashSet<String>,
}

impl Roles {
    /// The roles of the model in `dir` from its `config.json` (Mimi, or CSM with its codec
    /// under `codec_model.`); none for other or unreadable configs (then every 3-D weight is
    /// treated as a plain conv, which is right for anything but a Mimi decoder).
    pub fn of_model_dir(dir: &Path) -> Roles {
        let path = dir.join("config.json");
        let (cfg, prefix) = match crate::csm::CsmConfig::load(&path) {
            Ok(c) => (c.codec, "codec_model."),
            Err(_) => match crate::mimi::MimiConfig::load(&path) {
                Ok(c) => (c, ""),
                Err(_) => return Roles::default(),
            },
        };
        Roles::of_mimi(&cfg, prefix)
    }

    /// The roles of a Mimi codec's tensors under `prefix`.
    pub fn of_mimi(cfg: &crate::mimi::MimiConfig, prefix: &str) -> Roles {
        use crate::mimi::layout::CheckpointLayout;
        let mut r = Roles::default();
        if cfg.has_decoder {
            for stage in 0..cfg.num_stages() {
                let i = cfg.decoder_upsample_index(stage);
                r.conv_transposes
                    .insert(format!("{prefix}decoder.layers.{i}.conv.weight"));
            }
            r.depthwise.insert(format!("{prefix}upsample.conv.weight"));
        }
        r
    }
}

/// Whether `name` is one of Mimi's codebook buffers (see the module docs).
pub fn is_codebook_buffer(name: &str) -> bool {
    name.split('.').any(|seg| seg == "codebook")
        || ["embed_sum", "cluster_usage", "initialized"]
            .iter()
            .any(|p| name.contains(p))
}

/// Whether `name` is an embedding table (read a row at a time, never multiplied by).
pub fn is_table(name: &str) -> bool {
    ["embed_tokens", "embed_text_tokens", "embed_audio_tokens"]
        .iter()
        .any(|p| name.contains(p))
}

/// The output format of tensor `name` (stored as `dtype` with `shape`) under `mode`, with the
/// `keep` substrings forcing F16 instead of Q8 (see the table in the module docs).
pub fn plan(
    mode: Mode,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    keep: &[String],
    roles: &Roles,
) -> Target {
    if !is_float(dtype) {
        return Target::Copy;
    }
    let as_is = if dtype == Dtype::F16 {
        Target::F16
    } else {
        Target::F32
    };
    if is_codebook_buffer(name) || shape.len() < 2 {
        return as_is;
    }
    let kept = mode == Mode::F16 || keep.iter().any(|k| name.contains(k.as_str()));
    if is_table(name) {
        return if !kept && shape.len() == 2 && shape[1] >= 32 {
            Target::Q8
        } else {
            Target::F16
        };
    }
    if roles.depthwise.contains(name) || !name.ends_with(".weight") {
        return Target::F16;
    }
    let layout = if roles.conv_transposes.contains(name) && shape.len() == 3 {
        Layout::ConvTranspose
    } else if name.ends_with("codebooks_head.weight") && shape.len() == 3 {
        Layout::Transposed
    } else {
        Layout::Rows
    };
    let linear = layout == Layout::Rows
        && shape.len() == 2
        && shape[1] >= 32
        && !name.contains("norm")
        && !name.contains("scale");
    if linear && !kept {
        Target::Packed(PackedFormat::Q8P, layout)
    } else {
        Target::Packed(PackedFormat::F16P, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q8(name: &str, dtype: Dtype, shape: &[usize]) -> Target {
        plan(Mode::Q8, name, dtype, shape, &[], &Roles::default())
    }

    const Q8P: Target = Target::Packed(PackedFormat::Q8P, Layout::Rows);
    const F16P: Target = Target::Packed(PackedFormat::F16P, Layout::Rows);

    #[test]
    fn q8_mode_follows_the_table() {
        let f = Dtype::F32;
        assert_eq!(q8("layers.0.mlp.fc1.weight", f, &[64, 32]), Q8P);
        assert_eq!(
            q8("embed_tokens.weight", Dtype::BF16, &[100, 64]),
            Target::Q8
        );
        assert_eq!(q8("embed_text_tokens.weight", f, &[100, 16]), Target::F16);
        assert_eq!(q8("lm_head.weight", f, &[100, 64]), Q8P);
        assert_eq!(q8("small.weight", f, &[64, 31]), F16P);
        assert_eq!(q8("layers.0.input_layernorm.weight", f, &[64, 64]), F16P);
        assert_eq!(q8("layer_scale_1.scale", f, &[64, 64]), Target::F16);
        assert_eq!(q8("decoder.layers.0.conv.weight", f, &[64, 32, 7]), F16P);
        assert_eq!(
            q8("depth_decoder.codebooks_head.weight", f, &[3, 64, 100]),
            Target::Packed(PackedFormat::F16P, Layout::Transposed)
        );
        assert_eq!(q8("proj.bias", f, &[64, 64]), Target::F16);
        assert_eq!(q8("norm.weight", f, &[64]), Target::F32);
        assert_eq!(q8("norm.weight", Dtype::BF16, &[64]), Target::F32);
        assert_eq!(q8("norm.weight", Dtype::F16, &[64]), Target::F16);
        assert_eq!(
            q8("q.layers.0.codebook.embed_sum", f, &[2048, 256]),
            Target::F32
        );
        assert_eq!(
            q8("q.layers.0.codebook.cluster_usage", f, &[2048]),
            Target::F32
        );
        assert_eq!(q8("position_ids", Dtype::I64, &[1, 512]), Target::Copy);
    }

    #[test]
    fn keep_patterns_f16_mode_and_config_roles() {
        let keep = vec!["depth_decoder.".to_string()];
        let none = Roles::default();
        let name = "depth_decoder.layers.0.mlp.up.weight";
        assert_eq!(
            plan(Mode::Q8, name, Dtype::F32, &[64, 64], &keep, &none),
            F16P
        );
        assert_eq!(
            plan(Mode::Q8, name, Dtype::F32, &[64], &keep, &none),
            Target::F32
        );
        assert_eq!(
            plan(Mode::F16, name, Dtype::F32, &[64, 64], &[], &none),
            F16P
        );
        assert_eq!(
            plan(Mode::F16, "x.bias", Dtype::BF16, &[4], &[], &none),
            Target::F32
        );
        assert_eq!(
            plan(
                Mode::F16,
                "a.codebook.embed_sum",
                Dtype::F32,
                &[8, 4],
                &[],
                &none
            ),
            Target::F32
        );
        // a Mimi decoder's conv-transposes and depthwise upsample come from its config
        let roles = Roles::of_mimi(&crate::mimi::MimiConfig::default(), "codec_model.");
        let convtr = "codec_model.decoder.layers.2.conv.weight";
        assert_eq!(
            plan(Mode::Q8, convtr, Dtype::F32, &[512, 256, 16], &[], &roles),
            Target::Packed(PackedFormat::F16P, Layout::ConvTranspose)
        );
        let dw = "codec_model.upsample.conv.weight";
        assert_eq!(
            plan(Mode::Q8, dw, Dtype::F32, &[512, 1, 4], &[], &roles),
            Target::F16
        );
        // a plain conv of the decoder stays in rows
        let conv = "codec_model.decoder.layers.3.block.1.conv.weight";
        assert_eq!(
            plan(Mode::Q8, conv, Dtype::F32, &[128, 256, 3], &[], &roles),
            F16P
        );
    }
}
