//! `edgecsm synth`: writes a random-weight model of a published shape (see `edgecsm::synth`),
//! so benchmarks, smoke tests and a new board can be measured at real size without the real
//! weights.

use clap::{Args, ValueEnum};
use edgecsm::Result;
use edgecsm::mimi::MimiConfig;
use edgecsm::synth::csm::{self, CsmShape};
use edgecsm::synth::{SynthDtype, mimi, write_model};
use std::path::PathBuf;
use std::time::Instant;

use edgecsm::synth::DEFAULT_SEED;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// sesame/csm-1b's shape with its Mimi codec (1.65 B parameters).
    #[value(name = "csm-1b")]
    Csm1b,
    /// csm-1b's structure at about 1/50 of its weights (full codec).
    #[value(name = "csm-mid")]
    CsmMid,
    /// kyutai/mimi's shape (the codec alone).
    Mimi,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Which shape.
    #[arg(value_enum)]
    pub preset: Preset,
    /// Weight format: f32 as generated, or any `quantize --dtype` value (f16, q8, q4, a
    /// preset or a per-component policy), converted from f32 by `quantize` as real weights
    /// are.
    #[arg(long, default_value = "q8", value_parser = SynthDtype::parse)]
    pub dtype: SynthDtype,
    /// Output directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the weights.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
}

pub fn run(a: SynthArgs) -> Result<String> {
    let t0 = Instant::now();
    let dtype = a.dtype;
    let (name, params) = match a.preset {
        Preset::Csm1b | Preset::CsmMid => {
            let name = name_of(a.preset);
            let shape = if a.preset == Preset::Csm1b {
                CsmShape::csm_1b()
            } else {
                CsmShape::csm_mid()
            };
            let specs = csm::tensor_specs(&shape);
            let params = specs.iter().map(|t| t.numel()).sum::<usize>();
            write_model(
                &a.out,
                name,
                &csm::config_json(&shape),
                &csm::extra_files(&shape, name, a.seed),
                &specs,
                a.seed,
                dtype,
            )?;
            (name, params)
        }
        Preset::Mimi => {
            let c = MimiConfig::default();
            let specs = mimi::tensor_specs(&c, "");
            let params = specs.iter().map(|t| t.numel()).sum::<usize>();
            write_model(
                &a.out,
                "mimi",
                &mimi::config_json(&c),
                &Vec::new(),
                &specs,
                a.seed,
                dtype,
            )?;
            (name_of(a.preset), params)
        }
    };
    Ok(format!(
        "{}: synthetic {name} ({:.3} B parameters, {}, seed {}) in {:.1} s",
        a.out.display(),
        params as f64 * 1e-9,
        dtype.name(),
        a.seed,
        t0.elapsed().as_secs_f64()
    ))
}

fn name_of(p: Preset) -> &'static str {
    match p {
        Preset::Csm1b => "csm-1b",
        Preset::CsmMid => "csm-mid",
        Preset::Mimi => "mimi",
    }
}
