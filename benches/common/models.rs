//! The synthetic full-size models the benchmarks run on, made on demand (never committed)
//! under `target/real/` (or `$EDGECSM_REAL_MODELS`) with the same generator as
//! `edgecsm synth`, so `tools/bench-real.sh` and the benches share them. A model is remade when
//! the generator's or the on-disk format's version changed since it was written.

use edgecsm::mimi::MimiConfig;
use edgecsm::quantize;
use edgecsm::synth::csm::{self, CsmShape};
use edgecsm::synth::{self, DEFAULT_SEED as SEED, STAMP_FILE, SynthDtype, mimi, stamp};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the models live.
pub fn root() -> PathBuf {
    match std::env::var_os("EDGECSM_REAL_MODELS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/real"),
    }
}

/// The directory of `preset` (`csm-1b`, `csm-mid`, `mimi`) in `dtype`, made if missing or stale.
pub fn ensure(preset: &str, dtype: SynthDtype) -> PathBuf {
    let dir = root().join(format!("{preset}-{}", dtype.name()));
    let want = stamp(preset, dtype, SEED);
    if std::fs::read_to_string(dir.join(STAMP_FILE))
        .ok()
        .as_deref()
        == Some(want.as_str())
    {
        return dir;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("removing a stale synthetic model");
    }
    std::fs::create_dir_all(root()).expect("creating the model directory");
    let t = Instant::now();
    let f32_dir = root().join(format!("{preset}-f32"));
    let f32_ok = std::fs::read_to_string(f32_dir.join(STAMP_FILE)).ok()
        == Some(stamp(preset, SynthDtype::F32, SEED));
    if let (SynthDtype::Quantized(policy), true) = (dtype, f32_ok) {
        // convert the f32 model already there, as `edgecsm synth` would have
        let opts = quantize::Options {
            model: f32_dir,
            out: dir.clone(),
            policy,
            keep: Vec::new(),
            force: false,
        };
        quantize::quantize(&opts, &mut std::io::sink()).expect("quantize");
        std::fs::write(dir.join(STAMP_FILE), want).expect("writing the stamp");
    } else {
        let r = match preset {
            "csm-1b" | "csm-mid" => {
                let shape = if preset == "csm-1b" {
                    CsmShape::csm_1b()
                } else {
                    CsmShape::csm_mid()
                };
                synth::write_model(
                    &dir,
                    preset,
                    &csm::config_json(&shape),
                    &csm::extra_files(&shape, preset, SEED),
                    &csm::tensor_specs(&shape),
                    SEED,
                    dtype,
                )
            }
            "mimi" => {
                let c = MimiConfig::default();
                synth::write_model(
                    &dir,
                    preset,
                    &mimi::config_json(&c),
                    &Vec::new(),
                    &mimi::tensor_specs(&c, ""),
                    SEED,
                    dtype,
                )
            }
            other => panic!("unknown preset {other}"),
        };
        r.unwrap_or_else(|e| panic!("making {}: {e}", dir.display()));
    }
    eprintln!(
        "made the synthetic {preset} ({}) in {} ({:.0} s)",
        dtype.name(),
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    dir
}

/// Bytes one streaming Mimi decode of a frame reads from a CSM model in `dir`: every
/// decoder-side weight of its codec once.
pub fn codec_decoder_bytes(dir: &Path) -> usize {
    let w = edgecsm::weights::Weights::open(dir)
        .expect("weights")
        .with_prefix("codec_model.");
    w.names()
        .iter()
        .filter(|n| {
            n.starts_with("decoder.")
                || n.starts_with("decoder_transformer.")
                || n.starts_with("upsample.")
                || n.contains("output_proj")
        })
        .map(|n| w.stored_bytes(n))
        .sum()
}
