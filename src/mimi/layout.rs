//! Where a transformers Mimi checkpoint keeps the SEANet layers. `encoder.layers.N` and
//! `decoder.layers.N` number every module of the reference's `nn.Sequential` stacks, ELUs
//! included, so a layer's index follows from the number of stages and of residual blocks per
//! stage. That numbering belongs to the file, not to the model that [`MimiConfig`] describes.
//!
//! Encoder: 0 the first conv; per stage `s` the residual blocks, an ELU and the strided conv;
//! then an ELU and the last conv. Decoder: 0 the first conv; per stage an ELU, the transposed
//! conv and the residual blocks; then an ELU and the last conv.

use super::MimiConfig;

/// Tensor indices of the SEANet layers (`encoder.layers.{N}.conv.weight`, ...).
pub trait CheckpointLayout {
    /// Index in `encoder.layers.N` of residual block `j` of encoder stage `stage`.
    fn encoder_resblock_index(&self, stage: usize, j: usize) -> usize;
    /// Index in `encoder.layers.N` of the strided conv of encoder stage `stage`.
    fn encoder_downsample_index(&self, stage: usize) -> usize;
    /// Index in `encoder.layers.N` of the last conv (inner channels -> hidden_size).
    fn encoder_final_index(&self) -> usize;
    /// Index in `decoder.layers.N` of the transposed conv of decoder stage `stage`.
    fn decoder_upsample_index(&self, stage: usize) -> usize;
    /// Index in `decoder.layers.N` of residual block `j` of decoder stage `stage`.
    fn decoder_resblock_index(&self, stage: usize, j: usize) -> usize;
    /// Index in `decoder.layers.N` of the last conv (num_filters -> 1 channel).
    fn decoder_final_index(&self) -> usize;
}

impl CheckpointLayout for MimiConfig {
    fn encoder_resblock_index(&self, stage: usize, j: usize) -> usize {
        1 + stage * (self.num_residual_layers + 2) + j
    }

    fn encoder_downsample_index(&self, stage: usize) -> usize {
        self.encoder_resblock_index(stage, self.num_residual_layers) + 1
    }

    fn encoder_final_index(&self) -> usize {
        2 + self.num_stages() * (self.num_residual_layers + 2)
    }

    fn decoder_upsample_index(&self, stage: usize) -> usize {
        2 + stage * (self.num_residual_layers + 2)
    }

    fn decoder_resblock_index(&self, stage: usize, j: usize) -> usize {
        self.decoder_upsample_index(stage) + 1 + j
    }

    fn decoder_final_index(&self) -> usize {
        self.encoder_final_index()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mimi::config::tests::fixture;
    use serde_json::Value;
    use std::path::Path;

    #[test]
    fn kyutai_mimi_indices() {
        let c = MimiConfig::default();
        assert_eq!(c.encoder_downsample_index(0), 3);
        assert_eq!(c.encoder_downsample_index(3), 12);
        assert_eq!(c.encoder_final_index(), 14);
        assert_eq!(c.decoder_upsample_index(0), 2);
        assert_eq!(c.decoder_resblock_index(3, 0), 12);
        assert_eq!(c.decoder_final_index(), 14);
        // fixture b: two residual blocks per stage shift the indices
        let b = fixture("b");
        assert_eq!(b.encoder_resblock_index(0, 1), 2);
        assert_eq!(b.encoder_downsample_index(0), 4);
        assert_eq!(b.encoder_final_index(), 18);
        assert_eq!(b.decoder_upsample_index(1), 6);
        assert_eq!(b.decoder_final_index(), 18);
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
}
