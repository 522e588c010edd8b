//! Which output format each tensor gets: a [`Policy`] gives each **component** of the model a
//! [`Precision`], and the tensor's role decides what that precision means for it.
//!
//! Components (by tensor name; [`component`]): `codec` (`codec_model.*` of a CSM, or every
//! tensor of a Mimi model), `heads` (CSM's `lm_head` and `depth_decoder.codebooks_head`),
//! `embeddings` (tables read a row at a time), `depth` (the rest of `depth_decoder.*`) and
//! `backbone` (everything else).
//!
//! | tensor | `f16` | `q8` | `q4` |
//! |---|---|---|---|
//! | non-float dtype (I64, U8, ...) | copied | copied | copied |
//! | codebook buffer (a `codebook` path segment, or `embed_sum`, `cluster_usage`, `initialized` in the name), 0-D / 1-D float (norms, biases) | as is | as is | as is |
//! | embedding table (`embed_tokens`, `embed_text_tokens`, `embed_audio_tokens`), >= 32 columns | F16 | Q8, row-major | Q8, row-major |
//! | depthwise conv (from the model's config) | F16 | F16 | F16 |
//! | linear product weight: 2-D `*.weight` (or a `codebooks_head` matrix), >= 32 columns, no `norm` or `scale` in the name | F16P | **Q8P** | **Q4P** |
//! | any other >= 2-D float `*.weight` (convs `[out, in, k]`, conv-transposes) | F16P | F16P | F16P |
//! | any other >= 2-D float | F16 | F16 | F16 |
//!
//! `--keep PATTERN` (a substring) puts matching tensors at the `f16` column whatever their
//! component's precision. Tables stay Q8 under `q4`: a frame reads one row of each (a few KB),
//! so 4 bits would save no time, only file size, and the tied audio table
//! (`depth_decoder.model.embed_tokens.weight`, read by both stacks) keeps 8-bit accuracy.
//! Convolutions stay F16P: their kernels take f32 activations (and Mimi's convs lost 1-9 dB of
//! decoded-audio SNR in Q8 for a 14 % gain, see the README).
//!
//! "As is" keeps F32 and F16 and turns BF16 into F32. Product weights are stored **packed**
//! ([`crate::kernels::packed`]) in the arrangement the kernels read ([`Layout`]): a conv-
//! transpose `[in, out, k]` (named by the model's config, see [`Roles`]) as `[k * out, in]`,
//! a conv `[out, in, k]` with `k > 1` as `[out, k * in]` with the taps outer ([`Layout::Conv`]),
//! CSM's `codebooks_head` `[n, hidden, vocab]` as `n` matrices `[vocab, hidden]`, everything
//! else as `[first dim, the rest]`; so loading is a zero-copy memory map and nothing is
//! rearranged at load. The codebook rule uses a path segment (not a substring) so that Mimi's
//! `...codebook.embed_sum` stays exact while CSM's `codebooks_head.weight` is a product weight.

use crate::kernels::packed::PackedFormat;
use crate::weights::{Dtype, Layout, is_float};
use std::collections::HashSet;
use std::path::Path;

/// The precision of a component (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Precision {
    F16,
    Q8,
    Q4,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F16, Precision::Q8, Precision::Q4];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F16 => "f16",
            Precision::Q8 => "q8",
            Precision::Q4 => "q4",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Precision::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// The parts of a model a policy sets apart (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Backbone,
    Depth,
    Heads,
    Embeddings,
    Codec,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Backbone,
        Component::Depth,
        Component::Heads,
        Component::Embeddings,
        Component::Codec,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Component::Backbone => "backbone",
            Component::Depth => "depth",
            Component::Heads => "heads",
            Component::Embeddings => "embeddings",
            Component::Codec => "codec",
        }
    }
}

/// A precision per component. Written `backbone=q4,depth=q8,...` (any component left out keeps
/// the base: see [`Policy::parse`]), or by a preset's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Policy {
    by: [Precision; 5],
}

/// The named policies (`--dtype NAME`): name, policy, what it is for.
pub const PRESETS: &[(&str, Policy, &str)] = &[
    ("f16", Policy::F16, "every product weight F16"),
    ("q8", Policy::Q8, "every linear weight Q8, convs F16"),
    (
        "q4",
        Policy::Q4,
        "every linear weight Q4, tables Q8, convs F16",
    ),
    (
        "q4-q8heads",
        Policy::with(Precision::Q4, Precision::Q4, Precision::Q8, Precision::Q8),
        "backbone and depth decoder Q4; the codebook heads and codec Q8",
    ),
    (
        "q4-q8depth",
        Policy::with(Precision::Q4, Precision::Q8, Precision::Q8, Precision::Q8),
        "backbone Q4; depth decoder, heads and codec Q8",
    ),
    (
        "q4-f16codec",
        Policy::with(Precision::Q4, Precision::Q8, Precision::Q8, Precision::F16),
        "backbone Q4; depth decoder and heads Q8; codec F16",
    ),
];

impl Policy {
    pub const F16: Policy = Policy::uniform(Precision::F16);
    pub const Q8: Policy = Policy::uniform(Precision::Q8);
    pub const Q4: Policy = Policy::uniform(Precision::Q4);

    pub const fn uniform(p: Precision) -> Policy {
        Policy { by: [p; 5] }
    }

    /// Backbone, depth decoder, heads and codec; embedding tables Q8 (use [`Policy::F16`] for
    /// F16 tables).
    pub const fn with(
        backbone: Precision,
        depth: Precision,
        heads: Precision,
        codec: Precision,
    ) -> Policy {
        Policy {
            by: [backbone, depth, heads, Precision::Q8, codec],
        }
    }

    pub fn get(&self, c: Component) -> Precision {
        self.by[c as usize]
    }

    pub fn set(&mut self, c: Component, p: Precision) {
        self.by[c as usize] = p;
    }

    /// A preset's name, or `f16`, `q8`, `q4` followed by `,component=precision` changes, or
    /// changes alone (from `q8`): `q4,depth=q8,codec=f16`.
    pub fn parse(s: &str) -> Result<Policy, String> {
        if s.split(',').all(|p| p.trim().is_empty()) {
            return Err(format!(
                "empty policy: expected a preset ({}) or COMPONENT=PRECISION changes",
                PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
            ));
        }
        let mut parts = s.split(',').map(str::trim);
        let first = parts.next().unwrap_or_default();
        let (mut policy, rest): (Policy, Vec<&str>) =
            match PRESETS.iter().find(|(n, _, _)| *n == first) {
                Some((_, p, _)) => (*p, parts.collect()),
                None => (Policy::Q8, std::iter::once(first).chain(parts).collect()),
            };
        for part in rest.into_iter().filter(|p| !p.is_empty()) {
            let err = || {
                format!(
                    "`{part}` in `{s}`: expected a preset ({}) or COMPONENT=PRECISION with \
                     COMPONENT one of {} and PRECISION one of f16, q8, q4",
                    PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", "),
                    Component::ALL.map(Component::name).join(", ")
                )
            };
            let (c, p) = part.split_once('=').ok_or_else(err)?;
            let c = Component::ALL
                .into_iter()
                .find(|x| x.name() == c.trim())
                .ok_or_else(err)?;
            let p = Precision::parse(p.trim()).ok_or_else(err)?;
            policy.set(c, p);
        }
        Ok(policy)
    }

    /// The preset's name, or the full `component=precision` list.
    pub fn name(&self) -> String {
        if let Some((n, _, _)) = PRESETS.iter().find(|(_, p, _)| p == self) {
            return n.to_string();
        }
        Component::ALL
            .map(|c| format!("{}={}", c.name(), self.get(c).name()))
            .join(",")
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
            Target::Packed(PackedFormat::Q4P, _) => "Q4P",
        }
    }
}

/// What the model's config says about tensors a name cannot tell: which 3-D weights are
/// transposed or depthwise convolutions (Mimi's decoder, standalone or as CSM's codec).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub conv_transposes: HashSet<String>,
    pub depthwise: HashSet<String>,
    /// The model is a Mimi codec alone: every tensor is of the `codec` component.
    pub whole_codec: bool,
}

impl Roles {
    /// The roles of the model in `dir` from its `config.json` (Mimi, or CSM with its codec
    /// under `codec_model.`); none for other or unreadable configs (then every 3-D weight is
    /// treated as a plain conv, which is right for anything but a Mimi decoder).
    pub fn of_model_dir(dir: &Path) -> Roles {
        let path = dir.join("config.json");
        match crate::csm::CsmConfig::load(&path) {
            Ok(c) => Roles::of_mimi(&c.codec, "codec_model."),
            Err(_) => match crate::mimi::MimiConfig::load(&path) {
                Ok(c) => Roles {
                    whole_codec: true,
                    ..Roles::of_mimi(&c, "")
                },
                Err(_) => Roles::default(),
            },
        }
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

/// The component tensor `name` belongs to (see the module docs).
pub fn component(name: &str, roles: &Roles) -> Component {
    if roles.whole_codec || name.starts_with("codec_model.") {
        Component::Codec
    } else if is_table(name) {
        Component::Embeddings
    } else if name.ends_with("codebooks_head.weight") || name == "lm_head.weight" {
        Component::Heads
    } else if name.starts_with("depth_decoder.") {
        Component::Depth
    } else {
        Component::Backbone
    }
}

/// The output format of tensor `name` (stored as `dtype` with `shape`) under `policy`, with
/// the `keep` substrings forcing F16 (see the table in the module docs).
pub fn plan(
    policy: &Policy,
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
    let precision = if keep.iter().any(|k| name.contains(k.as_str())) {
        Precision::F16
    } else {
        policy.get(component(name, roles))
    };
    if is_table(name) {
        return if precision != Precision::F16 && shape.len() == 2 && shape[1] >= 32 {
            Target::Q8
        } else {
            Target::F16
        };
    }
    if roles.depthwise.contains(name) || !name.ends_with(".weight") {
        return Target::F16;
    }
    let layout = if roles.conv_transposes.contains(name) && shape.len() == 3 {
        Layout::ConvTransposeTaps
    } else if name.ends_with("codebooks_head.weight") && shape.len() == 3 {
        Layout::Transposed
    } else if shape.len() == 3 && shape[2] > 1 {
        // a convolution (with one tap the two orders are the same matrix: stored as Rows)
        Layout::Conv
    } else {
        Layout::Rows
    };
    // the matrices the kernels multiply by: [rows, cols] with cols the input width
    let linear = match layout {
        Layout::Rows => shape.len() == 2 && shape[1] >= 32,
        Layout::Transposed => shape[1] >= 32,
        Layout::ConvTranspose | Layout::ConvTransposeTaps | Layout::Conv => false,
    } && !name.contains("norm")
        && !name.contains("scale");
    let format = match precision {
        Precision::Q8 if linear => PackedFormat::Q8P,
        Precision::Q4 if linear => PackedFormat::Q4P,
        _ => PackedFormat::F16P,
    };
    Target::Packed(format, layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q8(name: &str, dtype: Dtype, shape: &[usize]) -> Target {
        plan(&Policy::Q8, name, dtype, shape, &[], &Roles::default())
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
        assert_eq!(
            q8("decoder.layers.0.conv.weight", f, &[64, 32, 7]),
            Target::Packed(PackedFormat::F16P, Layout::Conv)
        );
        assert_eq!(q8("decoder.layers.1.conv.weight", f, &[64, 32, 1]), F16P);
        assert_eq!(
            q8("depth_decoder.codebooks_head.weight", f, &[3, 64, 100]),
            Target::Packed(PackedFormat::Q8P, Layout::Transposed)
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
    fn components_take_their_own_precision() {
        let none = Roles::default();
        let p = Policy::parse("q4,depth=q8,codec=f16").unwrap();
        let at = |name: &str, shape: &[usize]| plan(&p, name, Dtype::F32, shape, &[], &none);
        let q4p = Target::Packed(PackedFormat::Q4P, Layout::Rows);
        assert_eq!(
            at("backbone_model.layers.0.mlp.up_proj.weight", &[64, 64]),
            q4p
        );
        assert_eq!(at("lm_head.weight", &[64, 64]), q4p);
        assert_eq!(
            at("depth_decoder.codebooks_head.weight", &[3, 64, 100]),
            Target::Packed(PackedFormat::Q4P, Layout::Transposed)
        );
        assert_eq!(
            at("depth_decoder.model.layers.0.mlp.up_proj.weight", &[64, 64]),
            Q8P
        );
        assert_eq!(
            at(
                "codec_model.encoder_transformer.layers.0.mlp.fc1.weight",
                &[64, 64]
            ),
            F16P
        );
        // tables stay Q8 under q4; a keep pattern means F16 under any precision
        assert_eq!(
            at("depth_decoder.model.embed_tokens.weight", &[100, 64]),
            Target::Q8
        );
        let keep = vec!["up_proj".to_string()];
        let kept = plan(
            &p,
            "backbone_model.layers.0.mlp.up_proj.weight",
            Dtype::F32,
            &[64, 64],
            &keep,
            &none,
        );
        assert_eq!(kept, F16P);
        // a Mimi model alone is all codec
        let mimi = Roles {
            whole_codec: true,
            ..Roles::default()
        };
        assert_eq!(
            component("encoder_transformer.layers.0.mlp.fc1.weight", &mimi),
            Component::Codec
        );
        assert_eq!(
            plan(
                &Policy::Q4,
                "x.fc1.weight",
                Dtype::F32,
                &[64, 64],
                &[],
                &mimi
            ),
            q4p
        );
        // names, presets and errors
        assert_eq!(Policy::parse("q4-q8depth").unwrap().name(), "q4-q8depth");
        assert!(Policy::parse("").is_err() && Policy::parse(" , ").is_err());
        assert_eq!(
            p.name(),
            "backbone=q4,depth=q8,heads=q4,embeddings=q4,codec=f16"
        );
        assert_eq!(Policy::parse(&p.name()).unwrap(), p);
        assert_eq!(
            Policy::parse("depth=f16").unwrap().get(Component::Backbone),
            Precision::Q8
        );
        let e = Policy::parse("q4,deep=q8").unwrap_err();
        assert!(
            e.contains("`deep=q8`") && e.contains("backbone, depth"),
            "{e}"
        );
        assert!(Policy::parse("q5").is_err());
    }

    #[test]
    fn keep_patterns_f16_mode_and_config_roles() {
        let keep = vec!["depth_decoder.".to_string()];
        let none = Roles::default();
        let name = "depth_decoder.layers.0.mlp.up.weight";
        assert_eq!(
            plan(&Policy::Q8, name, Dtype::F32, &[64, 64], &keep, &none),
            F16P
        );
        assert_eq!(
            plan(&Policy::Q8, name, Dtype::F32, &[64], &keep, &none),
            Target::F32
        );
        assert_eq!(
            plan(&Policy::F16, name, Dtype::F32, &[64, 64], &[], &none),
            F16P
        );
        assert_eq!(
            plan(&Policy::F16, "x.bias", Dtype::BF16, &[4], &[], &none),
            Target::F32
        );
        assert_eq!(
            plan(
                &Policy::F16,
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
            plan(
                &Policy::Q8,
                convtr,
                Dtype::F32,
                &[512, 256, 16],
                &[],
                &roles
            ),
            Target::Packed(PackedFormat::F16P, Layout::ConvTransposeTaps)
        );
        let dw = "codec_model.upsample.conv.weight";
        assert_eq!(
            plan(&Policy::Q8, dw, Dtype::F32, &[512, 1, 4], &[], &roles),
            Target::F16
        );
        // a plain conv of the decoder is a conv, taps outer
        let conv = "codec_model.decoder.layers.3.block.1.conv.weight";
        assert_eq!(
            plan(&Policy::Q8, conv, Dtype::F32, &[128, 256, 3], &[], &roles),
            Target::Packed(PackedFormat::F16P, Layout::Conv)
        );
    }
}
