//! Synthetic checkpoints at the published sizes: deterministic random weights under the
//! upstream (transformers) tensor names, shapes and `config.json` layout, so every benchmark,
//! smoke test and board measurement runs at real size without a download (real weights never
//! reach this project's machines) and without committing gigabytes.
//!
//! - [`mimi`]: any [`crate::mimi::MimiConfig`], the kyutai/mimi shape by default.
//! - [`csm`]: CSM with its Mimi codec inside, the `sesame/csm-1b` shape (transformers
//!   `CsmConfig()` defaults, 1.65 B parameters) or a smaller preset, with a tokenizer `say` can
//!   use.
//!
//! Weights are drawn so that the model behaves like a trained one where that matters for
//! speed and quantization measurements (see [`csm`] for what was chosen: logit spread, outlier
//! channels); they are a proxy, not a model. Every value comes from a splitmix64 stream seeded
//! by the model seed, the tensor name and the row block, so the files are bit-identical
//! whatever the thread count, and the whole f32 csm-1b (6.6 GB) is written in seconds.
//!
//! [`write_model`] writes F32 and converts to F16 or Q8 with [`crate::quantize`], exactly as a
//! user converts a real checkpoint.

pub mod csm;
pub mod mimi;

/// The generator's version: bumped whenever the weights it draws change, so that cached
/// synthetic models (`benches/common/models.rs`, `tools/bench-real.sh`) are remade.
pub const VERSION: u32 = 1;

/// The seed `edgecsm synth` and the benchmarks use: any value, fixed so that every run makes
/// the same model.
pub const DEFAULT_SEED: u64 = 0x00c5_3b1b;

use crate::quantize::writer::{OutTensor, StreamWriter};
use crate::quantize::{self, Policy};
use crate::weights::Dtype;
use crate::{Error, Result};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// How one tensor's values are drawn. Every random value is uniform with the given standard
/// deviation (uniform, not Gaussian: cheap, and a product over thousands of them is Gaussian
/// anyway).
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// Uniform with standard deviation `std`.
    Uniform { std: f32 },
    /// Every element the same.
    Const(f32),
    /// `1 + Uniform(std)`: norm weights.
    AroundOne { std: f32 },
    /// Uniform with standard deviation `std`, plus `offset` on the listed channels (the last
    /// index): embedding tables that put a few outlier channels into the residual stream.
    WithOutliers {
        std: f32,
        channels: Vec<usize>,
        offset: f32,
    },
    /// Uniform with standard deviation `std * g(c)`, where `g` is a log-normal factor (log
    /// standard deviation `spread`, mean square 1) per index `c` along `axis` (0: rows, 1: the
    /// last dimension): output heads whose codes are not all equally likely.
    Spread { std: f32, spread: f32, axis: usize },
}

/// One tensor of a synthetic checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub init: Init,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, shape: &[usize], init: Init) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            init,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// splitmix64: tiny, fixed and platform-independent.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn symmetric(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Standard normal (Box-Muller; for the few per-row factors, not per weight).
    pub fn normal(&mut self) -> f64 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A seed for `name` under the model seed `seed` (FNV-1a of the name, mixed).
fn name_seed(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    Rng::new(seed ^ h).next_u64()
}

/// sqrt(3): a uniform in [-1, 1) scaled by this has unit variance.
const UNIT: f32 = 1.732_050_8;

/// Values per independently seeded block of a tensor (the unit of parallel generation).
const BLOCK: usize = 1 << 16;

/// Fills `out` (element `start..start + out.len()` of tensor `t`) with its values. `factors`
/// holds the per-index factors of an [`Init::Spread`] tensor.
fn fill(t: &TensorSpec, seed: u64, start: usize, out: &mut [f32], factors: &[f32]) {
    let last = *t.shape.last().unwrap_or(&1);
    let cols: usize = t.shape.iter().skip(1).product::<usize>().max(1);
    let mut rng = Rng::new(seed ^ (start / BLOCK) as u64);
    for (i, o) in out.iter_mut().enumerate() {
        let idx = start + i;
        *o = match &t.init {
            Init::Const(v) => *v,
            Init::Uniform { std } => rng.symmetric() * UNIT * std,
            Init::AroundOne { std } => 1.0 + rng.symmetric() * UNIT * std,
            Init::WithOutliers {
                std,
                channels,
                offset,
            } => {
                let v = rng.symmetric() * UNIT * std;
                if channels.contains(&(idx % last)) {
                    v + offset
                } else {
                    v
                }
            }
            Init::Spread { std, axis, .. } => {
                let c = if *axis == 0 { idx / cols } else { idx % last };
                rng.symmetric() * UNIT * std * factors[c]
            }
        };
    }
}

/// The per-index factors of a [`Init::Spread`] tensor (empty for other inits).
fn spread_factors(t: &TensorSpec, seed: u64) -> Vec<f32> {
    let Init::Spread { spread, axis, .. } = t.init else {
        return Vec::new();
    };
    let n = if axis == 0 {
        t.shape[0]
    } else {
        *t.shape.last().unwrap_or(&1)
    };
    let mut rng = Rng::new(seed.rotate_left(17) ^ 0x5eed);
    let g: Vec<f64> = (0..n)
        .map(|_| (spread as f64 * rng.normal()).exp())
        .collect();
    let rms = (g.iter().map(|v| v * v).sum::<f64>() / n.max(1) as f64).sqrt();
    g.iter().map(|v| (v / rms) as f32).collect()
}

/// Writes `specs` as one F32 safetensors file at `path`, generating values in parallel
/// blocks (bit-identical for any thread count).
pub fn write_safetensors(path: &Path, specs: &[TensorSpec], seed: u64) -> Result<()> {
    let outs = specs
        .iter()
        .map(|t| OutTensor {
            name: t.name.clone(),
            dtype: Dtype::F32,
            shape: t.shape.clone(),
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".into(), "pt".into());
    meta.insert("edgecsm_synthetic_seed".into(), seed.to_string());
    let mut w = StreamWriter::create(path, outs, meta)?;
    let by_name: BTreeMap<&str, &TensorSpec> = specs.iter().map(|t| (t.name.as_str(), t)).collect();
    // a few MB generated at a time, in parallel, then written in order
    const CHUNK: usize = 64 * BLOCK;
    let mut vals = vec![0f32; CHUNK];
    let mut bytes = Vec::with_capacity(CHUNK * 4);
    for name in w.order() {
        let t = by_name[name.as_str()];
        let tseed = name_seed(seed, &t.name);
        let factors = spread_factors(t, tseed);
        w.begin(&name)?;
        let n = t.numel();
        let mut start = 0;
        while start < n {
            let len = CHUNK.min(n - start);
            vals[..len]
                .par_chunks_mut(BLOCK)
                .enumerate()
                .for_each(|(b, out)| fill(t, tseed, start + b * BLOCK, out, &factors));
            bytes.clear();
            crate::weights::push_f32_le(&vals[..len], &mut bytes);
            w.write(&bytes)?;
            start += len;
        }
    }
    w.finish()?;
    Ok(())
}

/// The values of one tensor (for tests and small models).
pub fn tensor_values(t: &TensorSpec, seed: u64) -> Vec<f32> {
    let tseed = name_seed(seed, &t.name);
    let factors = spread_factors(t, tseed);
    let mut v = vec![0f32; t.numel()];
    for (b, out) in v.chunks_mut(BLOCK).enumerate() {
        fill(t, tseed, b * BLOCK, out, &factors);
    }
    v
}

/// Weight format of a synthetic model: F32 as generated, or converted by `quantize` with a
/// policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SynthDtype {
    F32,
    Quantized(Policy),
}

impl SynthDtype {
    pub const F16: SynthDtype = SynthDtype::Quantized(Policy::F16);
    pub const Q8: SynthDtype = SynthDtype::Quantized(Policy::Q8);
    pub const Q4: SynthDtype = SynthDtype::Quantized(Policy::Q4);

    /// `f32`, or a quantization policy's name (its preset name, or the component list).
    pub fn name(self) -> String {
        match self {
            SynthDtype::F32 => "f32".into(),
            SynthDtype::Quantized(p) => p.name(),
        }
    }

    /// `f32` or anything [`Policy::parse`] takes.
    pub fn parse(s: &str) -> std::result::Result<SynthDtype, String> {
        if s == "f32" {
            Ok(SynthDtype::F32)
        } else {
            Policy::parse(s).map(SynthDtype::Quantized)
        }
    }
}

/// A model directory's files besides the weights: name -> content.
pub type ExtraFiles = Vec<(String, String)>;

/// The file in a synthetic model directory that says what made it.
pub const STAMP_FILE: &str = "synth.stamp";

/// What a synthetic model directory was made from: a cached copy is current only when its
/// stamp equals this (the generator's [`VERSION`] and the on-disk format are in it).
pub fn stamp(preset: &str, dtype: SynthDtype, seed: u64) -> String {
    format!(
        "preset {preset}, dtype {}, seed {seed}, generator {VERSION}, format {}\n",
        dtype.name(),
        crate::weights::FORMAT_VERSION
    )
}

/// Writes a model directory `out` (which must not exist): `config.json`, `extra` files,
/// `model.safetensors` with `specs`, in `dtype` (F16/Q8 through [`crate::quantize`], as a user
/// converts a real checkpoint), and its [`stamp`] for `preset`. Built in a sibling `.partial`
/// directory and renamed when complete.
pub fn write_model(
    out: &Path,
    preset: &str,
    config_json: &str,
    extra: &ExtraFiles,
    specs: &[TensorSpec],
    seed: u64,
    dtype: SynthDtype,
) -> Result<()> {
    if std::fs::symlink_metadata(out).is_ok() {
        return Err(Error::Invalid(format!(
            "output {} already exists",
            out.display()
        )));
    }
    let partial = sibling(out, ".partial")?;
    let f32_dir = sibling(out, ".f32-partial")?;
    for d in [&partial, &f32_dir] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    let result = (|| {
        let src = if dtype == SynthDtype::F32 {
            &partial
        } else {
            &f32_dir
        };
        std::fs::create_dir_all(src).map_err(|e| Error::io(src, e))?;
        let cfg = src.join("config.json");
        std::fs::write(&cfg, config_json).map_err(|e| Error::io(&cfg, e))?;
        for (name, text) in extra {
            let p = src.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        }
        write_safetensors(&src.join("model.safetensors"), specs, seed)?;
        if let SynthDtype::Quantized(policy) = dtype {
            let opts = quantize::Options {
                model: f32_dir.clone(),
                out: partial.clone(),
                policy,
                keep: Vec::new(),
                force: false,
            };
            quantize::quantize(&opts, &mut std::io::sink())?;
        }
        let p = partial.join(STAMP_FILE);
        std::fs::write(&p, stamp(preset, dtype, seed)).map_err(|e| Error::io(&p, e))
    })();
    let _ = std::fs::remove_dir_all(&f32_dir);
    match result {
        Ok(()) => std::fs::rename(&partial, out).map_err(|e| Error::io(out, e)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn sibling(out: &Path, suffix: &str) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("output {} has no directory name", out.display())))?;
    let mut n = name.to_os_string();
    n.push(suffix);
    Ok(out.with_file_name(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_do_not_depend_on_how_they_are_generated() {
        let t = TensorSpec::new(
            "a.weight",
            &[3, 5, 40_000],
            Init::Spread {
                std: 0.5,
                spread: 0.3,
                axis: 1,
            },
        );
        let whole = tensor_values(&t, 7);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        write_safetensors(&p, std::slice::from_ref(&t), 7).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let data = st.tensor("a.weight").unwrap();
        let back: Vec<f32> = data
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, whole);
        assert_ne!(tensor_values(&t, 8), whole, "the seed matters");
    }

    #[test]
    fn inits_have_their_statistics() {
        let stats = |init: Init, shape: &[usize]| {
            let t = TensorSpec::new("x", shape, init);
            let v = tensor_values(&t, 1);
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            (v, mean, var.sqrt())
        };
        let (_, m, s) = stats(Init::Uniform { std: 0.25 }, &[100, 1000]);
        assert!(m.abs() < 0.01 && (s - 0.25).abs() < 0.01, "{m} {s}");
        let (_, m, s) = stats(Init::AroundOne { std: 0.1 }, &[1000]);
        assert!((m - 1.0).abs() < 0.02 && (s - 0.1).abs() < 0.01, "{m} {s}");
        let (v, _, _) = stats(
            Init::WithOutliers {
                std: 1.0,
                channels: vec![3],
                offset: 20.0,
            },
            &[50, 8],
        );
        let ch3 = v.iter().skip(3).step_by(8).map(|&x| x as f64).sum::<f64>() / 50.0;
        assert!((ch3 - 20.0).abs() < 1.0, "{ch3}");
        // per-row factors: the rows' RMS differ, the overall RMS is kept
        let (v, _, s) = stats(
            Init::Spread {
                std: 1.0,
                spread: 0.5,
                axis: 0,
            },
            &[200, 2000],
        );
        assert!((s - 1.0).abs() < 0.1, "{s}");
        let rms: Vec<f64> = v
            .chunks(2000)
            .map(|r| (r.iter().map(|&x| (x * x) as f64).sum::<f64>() / 2000.0).sqrt())
            .collect();
        let lo = rms.iter().cloned().fold(f64::MAX, f64::min);
        let hi = rms.iter().cloned().fold(0.0, f64::max);
        assert!(hi / lo > 3.0, "row norms spread: {lo} .. {hi}");
    }
}
