//! The `encode` / `decode` command line end to end on the committed tiny codec
//! `tests/fixtures/mimi/b`, and the benchmark's synthetic-checkpoint generator checked against
//! the fixture's real upstream tensor list.

#[path = "../benches/mimi/synth.rs"]
mod synth;

use edgecsm::mimi::MimiConfig;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mimi")
        .join(name)
}

#[test]
fn synthetic_checkpoint_has_the_upstream_tensor_names_and_shapes() {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("summary.json")).unwrap()).unwrap();
    for name in ["a", "b"] {
        let cfg = MimiConfig::load(fixture(name).join("config.json")).unwrap();
        let want = summary["configs"][name]["tensors"].as_object().unwrap();
        let got = synth::tensor_specs(&cfg);
        assert_eq!(got.len(), want.len(), "{name}: tensor count");
        for t in &got {
            let shape = want
                .get(&t.name)
                .unwrap_or_else(|| panic!("{name}: upstream has no tensor {}", t.name));
            let shape: Vec<usize> = shape
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(t.shape, shape, "{name}: {}", t.name);
        }
    }
}

#[test]
fn synthetic_config_json_parses_back_to_the_same_config() {
    let full = MimiConfig::default();
    let parsed = MimiConfig::parse(&synth::config_json(&full), Path::new("synth")).unwrap();
    assert_eq!(parsed, full);
    let b = MimiConfig::load(fixture("b").join("config.json")).unwrap();
    let parsed = MimiConfig::parse(&synth::config_json(&b), Path::new("synth")).unwrap();
    assert_eq!(parsed, b);
}

#[test]
fn synthetic_checkpoint_loads_and_is_deterministic() {
    let cfg = MimiConfig::load(fixture("b").join("config.json")).unwrap();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    synth::write_model(d1.path(), &cfg, 7).unwrap();
    synth::write_model(d2.path(), &cfg, 7).unwrap();
    let m1 = std::fs::read(d1.path().join("model.safetensors")).unwrap();
    assert_eq!(
        m1,
        std::fs::read(d2.path().join("model.safetensors")).unwrap()
    );
    let w = edgecsm::weights::Weights::open(d1.path()).unwrap();
    assert_eq!(w.names().len(), synth::tensor_specs(&cfg).len());
    let fc1 = w
        .vector("encoder_transformer.layers.0.mlp.fc1.weight", &[40, 24])
        .unwrap();
    // U(-a, a) with variance 1/fan_in: a = sqrt(3/24) = 0.354; values fill the range.
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
