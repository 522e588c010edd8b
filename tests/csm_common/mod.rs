//! Helpers shared by the CSM tests: reading a model's dimensions from `config.json`, `.npy`
//! readers, error measures.
#![allow(dead_code)]

use edgecsm::csm::{Csm, CsmDims, LlamaConfig};
use edgecsm::kernels::rope::Llama3Scaling;
use edgecsm::mimi::MimiConfig;
use edgecsm::weights::Weights;
use ndarray::ArrayD;
use ndarray_npy::read_npy;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn llama(v: &Value) -> LlamaConfig {
    let u = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("config {k}")) as usize;
    let hidden = u("hidden_size");
    let heads = u("num_attention_heads");
    let rp = &v["rope_parameters"];
    let scaling = (rp["rope_type"] == "llama3").then(|| Llama3Scaling {
        factor: rp["factor"].as_f64().unwrap(),
        low_freq_factor: rp["low_freq_factor"].as_f64().unwrap(),
        high_freq_factor: rp["high_freq_factor"].as_f64().unwrap(),
        original_max_position_embeddings: rp["original_max_position_embeddings"].as_f64().unwrap(),
    });
    LlamaConfig {
        hidden_size: hidden,
        num_layers: u("num_hidden_layers"),
        num_heads: heads,
        num_kv_heads: u("num_key_value_heads"),
        head_dim: v["head_dim"]
            .as_u64()
            .map_or(hidden / heads, |x| x as usize),
        intermediate_size: u("intermediate_size"),
        rms_norm_eps: v["rms_norm_eps"].as_f64().unwrap() as f32,
        rope_theta: rp["rope_theta"].as_f64().unwrap(),
        rope_scaling: scaling,
        max_positions: u("max_position_embeddings"),
    }
}

/// The dimensions and codec config of a transformers-format CSM directory (test-side reader of
/// the transformers 5 `config.json`).
pub fn dims(dir: &Path) -> (CsmDims, MimiConfig) {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let id = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("config {k}")) as u32;
    let d = CsmDims {
        backbone: llama(&v),
        depth: llama(&v["depth_decoder_config"]),
        num_codebooks: v["num_codebooks"].as_u64().unwrap() as usize,
        audio_vocab: v["vocab_size"].as_u64().unwrap() as usize,
        text_vocab: v["text_vocab_size"].as_u64().unwrap() as usize,
        audio_token_id: id("audio_token_id"),
        audio_eos_token_id: id("audio_eos_token_id"),
        codebook_eos_token_id: id("codebook_eos_token_id"),
    };
    let codec =
        MimiConfig::parse(&v["codec_config"].to_string(), &dir.join("config.json")).unwrap();
    (d, codec)
}

pub fn load(dir: &Path) -> Csm {
    let (d, codec) = dims(dir);
    Csm::from_weights(d, &Weights::open(dir).unwrap(), Some(codec)).unwrap()
}

pub fn f32s(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let a: ArrayD<f32> = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = a.shape().to_vec();
    (a.as_standard_layout().iter().copied().collect(), shape)
}

pub fn u32s(path: &Path) -> (Vec<u32>, Vec<usize>) {
    let a: ArrayD<i64> = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = a.shape().to_vec();
    (
        a.as_standard_layout().iter().map(|&x| x as u32).collect(),
        shape,
    )
}

pub fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

pub fn dev_dir() -> Option<PathBuf> {
    std::env::var_os("EDGECSM_CSM_DEV").map(PathBuf::from)
}
