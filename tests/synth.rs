//! The synthetic-checkpoint generator (`edgecsm::synth`, `edgecsm synth`) against the real
//! upstream layouts: the tiny fixtures were saved by transformers' `save_pretrained`, so a
//! synthetic model of the same configuration must have exactly their tensor names and shapes,
//! load, and be deterministic.

mod common;

use edgecsm::csm::CsmConfig;
use edgecsm::mimi::MimiConfig;
use edgecsm::synth::csm::{self, CsmShape, StackShape};
use edgecsm::synth::{self, SynthDtype, mimi};
use edgecsm::weights::Weights;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixture(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(kind)
        .join(name)
}

/// name -> shape of every tensor stored in a model directory.
fn stored(dir: &Path) -> BTreeMap<String, Vec<usize>> {
    let w = Weights::open(dir).unwrap();
    w.names()
        .into_iter()
        .map(|n| {
            let shape = w.info(&n).unwrap().shape;
            (n, shape)
        })
        .collect()
}

#[test]
fn synthetic_mimi_has_the_upstream_tensor_names_and_shapes() {
    for name in ["a", "b"] {
        let dir = fixture("mimi", name);
        let cfg = MimiConfig::load(dir.join("config.json")).unwrap();
        let got: BTreeMap<String, Vec<usize>> = mimi::tensor_specs(&cfg, "")
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        assert_eq!(got, stored(&dir), "mimi fixture {name}");
    }
}

#[test]
fn synthetic_mimi_config_json_parses_back_to_the_same_config() {
    let full = MimiConfig::default();
    let parsed = MimiConfig::parse(&mimi::config_json(&full), Path::new("synth")).unwrap();
    assert_eq!(parsed, full);
    let b = MimiConfig::load(fixture("mimi", "b").join("config.json")).unwrap();
    let parsed = MimiConfig::parse(&mimi::config_json(&b), Path::new("synth")).unwrap();
    assert_eq!(parsed, b);
}

fn stack(t: &edgecsm::csm::config::TransformerConfig) -> StackShape {
    StackShape {
        hidden: t.hidden_size,
        layers: t.num_hidden_layers,
        heads: t.num_attention_heads,
        kv_heads: t.num_key_value_heads,
        head_dim: t.head_dim,
        intermediate: t.intermediate_size,
        max_positions: t.max_position_embeddings,
    }
}

/// The shape of a CSM fixture, read from its config.
fn csm_shape(dir: &Path) -> CsmShape {
    let c = CsmConfig::load(dir.join("config.json")).unwrap();
    CsmShape {
        backbone: stack(&c.backbone),
        depth: stack(&c.depth_decoder.transformer),
        text_vocab: c.text_vocab_size,
        num_codebooks: c.num_codebooks,
        audio_vocab: c.audio_vocab_size,
        codec: c.codec.clone(),
    }
}

#[test]
fn synthetic_csm_has_the_upstream_tensor_names_and_shapes() {
    for name in ["a", "b"] {
        let dir = fixture("csm", name);
        let got: BTreeMap<String, Vec<usize>> = csm::tensor_specs(&csm_shape(&dir))
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        assert_eq!(got, stored(&dir), "csm fixture {name}");
    }
}

#[test]
fn a_synthetic_csm_loads_speaks_and_is_deterministic() {
    let mut shape = csm_shape(&fixture("csm", "a"));
    // the bundled tokenizer's ids must fit the text vocabulary
    shape.text_vocab = 488;
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("m1"), tmp.path().join("m2"));
    for d in [&d1, &d2] {
        synth::write_model(
            d,
            "test",
            &csm::config_json(&shape),
            &csm::extra_files(&shape, "test", 5),
            &csm::tensor_specs(&shape),
            5,
            SynthDtype::Q8,
        )
        .unwrap();
    }
    let m1 = std::fs::read(d1.join("model.safetensors")).unwrap();
    assert_eq!(m1, std::fs::read(d2.join("model.safetensors")).unwrap());
    assert!(d1.join("EDGECSM_TEST_MODEL").is_file());
    let out = tmp.path().join("hello.wav");
    // through the test runner (qemu in cross/test.sh)
    let o = common::edgecsm()
        .args([
            "--threads",
            "2",
            "say",
            "Hello there.",
            "--max-seconds",
            "0.4",
        ])
        .arg("--model")
        .arg(&d1)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let wav = hound::WavReader::open(&out).unwrap();
    assert_eq!(wav.duration(), 5 * 1920);
}

#[test]
fn synthetic_weights_have_their_intended_statistics() {
    let cfg = MimiConfig::load(fixture("mimi", "b").join("config.json")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("m");
    synth::write_model(
        &dir,
        "test",
        &mimi::config_json(&cfg),
        &Vec::new(),
        &mimi::tensor_specs(&cfg, ""),
        7,
        SynthDtype::F32,
    )
    .unwrap();
    let w = Weights::open(&dir).unwrap();
    let fc1 = w
        .vector("encoder_transformer.layers.0.mlp.fc1.weight", &[40, 24])
        .unwrap();
    // uniform with variance 1/fan_in: bound sqrt(3/24) = 0.354; values fill the range
    let max = fc1.as_slice().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(max > 0.3 && max <= 0.3536, "{max}");
    let usage = w
        .vector(
            "quantizer.acoustic_residual_vector_quantizer.layers.5.codebook.cluster_usage",
            &[16],
        )
        .unwrap();
    assert!(usage.as_slice().iter().all(|&u| u == 1.0));
}
