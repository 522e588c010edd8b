//! Which output format each tensor gets.
//!
//! | tensor | `q8` mode | `f16` mode |
//! |---|---|---|
//! | non-float dtype (I64, U8, ...) | copied unchanged | copied unchanged |
//! | codebook buffer: a name with a `codebook` path segment, or containing `embed_sum`, `cluster_usage` or `initialized` | as is (F32, F16; BF16 -> F32) | as is |
//! | 0-D / 1-D float (norm weights, biases, scales) | as is | as is |
//! | matches a `--keep` pattern (substring), >= 2-D | F16 | F16 |
//! | 2-D, named `*.weight`, >= 32 columns, name without `norm` or `scale` | **Q8** | F16 |
//! | any other >= 2-D float (conv weights, small matrices, `*scale*`, `*norm*`) | F16 | F16 |
//!
//! "As is" keeps F32 and F16 and turns BF16 into F32, so every float tensor the runtime reads
//! is F32, F16 or Q8 and can be mapped without conversion. Conv weights (3-D) stay F16 rather
//! than Q8 because the conv-transpose layout is repacked by the loader, so its rows are not the
//! output rows a Q8 block scale should follow. The codebook rule uses a path segment (not a
//! substring) so that CSM's `codebook0_head.weight` (a linear head) is quantized and its 3-D
//! `codebooks_head.weight` becomes F16, while Mimi's `...codebook.embed_sum` stays exact.

use crate::weights::{Dtype, is_float};

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
    /// int8 blocks + f16 scales.
    Q8,
    F16,
    F32,
    /// The stored bytes, unchanged (non-float dtypes).
    Copy,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Q8 => "Q8",
            Target::F16 => "F16",
            Target::F32 => "F32",
            Target::Copy => "copy",
        }
    }
}

/// Whether `name` is one of Mimi's codebook buffers (see the module docs).
pub fn is_codebook_buffer(name: &str) -> bool {
    name.split('.').any(|seg| seg == "codebook")
        || ["embed_sum", "cluster_usage", "initialized"]
            .iter()
            .any(|p| name.contains(p))
}

/// The output format of tensor `name` (stored as `dtype` with `shape`) under `mode`, with the
/// `keep` substrings forcing F16 instead of Q8 (see the table in the module docs).
pub fn plan(mode: Mode, name: &str, dtype: Dtype, shape: &[usize], keep: &[String]) -> Target {
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
    if mode == Mode::F16 || keep.iter().any(|k| name.contains(k.as_str())) {
        return Target::F16;
    }
    let linear = shape.len() == 2
        && shape[1] >= 32
        && name.ends_with(".weight")
        && !name.contains("norm")
        && !name.contains("scale");
    if linear { Target::Q8 } else { Target::F16 }
}

/// Whether `name` (stored with `shape`) is written with its last two dimensions swapped, in
/// the layout the kernels read: CSM's `codebooks_head.weight` (`[n, hidden, vocab]`, applied as
/// `h @ W[i]`) becomes `[n, vocab, hidden]`, one row per output. Only F16/F32 targets are
/// transposed (see [`crate::weights::TRANSPOSED_KEY`]).
pub fn stored_transposed(name: &str, shape: &[usize], target: Target) -> bool {
    shape.len() == 3
        && name.ends_with("codebooks_head.weight")
        && matches!(target, Target::F16 | Target::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q8(name: &str, dtype: Dtype, shape: &[usize]) -> Target {
        plan(Mode::Q8, name, dtype, shape, &[])
    }

    #[test]
    fn q8_mode_follows_the_table() {
        let f = Dtype::F32;
        assert_eq!(q8("layers.0.mlp.fc1.weight", f, &[64, 32]), Target::Q8);
        assert_eq!(
            q8("embed_tokens.weight", Dtype::BF16, &[100, 64]),
            Target::Q8
        );
        assert_eq!(q8("codebook0_head.weight", f, &[100, 64]), Target::Q8);
        assert_eq!(q8("small.weight", f, &[64, 31]), Target::F16);
        assert_eq!(
            q8("layers.0.input_layernorm.weight", f, &[64, 64]),
            Target::F16
        );
        assert_eq!(q8("layer_scale_1.scale", f, &[64, 64]), Target::F16);
        assert_eq!(
            q8("decoder.layers.0.conv.weight", f, &[64, 32, 7]),
            Target::F16
        );
        assert_eq!(q8("codebooks_head.weight", f, &[3, 64, 100]), Target::F16);
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
    fn keep_patterns_and_f16_mode() {
        let keep = vec!["depth_decoder.".to_string()];
        let name = "depth_decoder.layers.0.mlp.up.weight";
        assert_eq!(
            plan(Mode::Q8, name, Dtype::F32, &[64, 64], &keep),
            Target::F16
        );
        assert_eq!(plan(Mode::Q8, name, Dtype::F32, &[64], &keep), Target::F32);
        assert_eq!(
            plan(Mode::F16, name, Dtype::F32, &[64, 64], &[]),
            Target::F16
        );
        assert_eq!(
            plan(Mode::F16, "x.conv.weight", Dtype::BF16, &[4, 4, 3], &[]),
            Target::F16
        );
        assert_eq!(
            plan(Mode::F16, "x.bias", Dtype::BF16, &[4], &[]),
            Target::F32
        );
        assert_eq!(
            plan(Mode::F16, "a.codebook.embed_sum", Dtype::F32, &[8, 4], &[]),
            Target::F32
        );
    }
}
