//! `edgecsm encode`: a WAV file (any common rate, channel count and sample format) to Mimi
//! codes, an int64 NumPy array `[codebooks, frames]` (`--out -` writes it to standard output).

use clap::Args;
use edgecsm::Error;
use edgecsm::Result;
use edgecsm::audio::codes::{check_num_codebooks, to_array};
use edgecsm::audio::{Output, read_mono, resample};
use ndarray_npy::WriteNpyExt;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// Model directory (config.json + safetensors): a Mimi codec, or a CSM checkpoint (its codec).
    #[arg(long)]
    pub model: PathBuf,
    /// Input WAV file; resampled to the model rate and downmixed to mono.
    #[arg(value_name = "IN.wav")]
    pub input: PathBuf,
    /// Output .npy file (int64 [codebooks, frames]); a regular file is written only on
    /// success; `-` is standard output.
    #[arg(long, value_name = "CODES.npy")]
    pub out: PathBuf,
    /// Codebooks per frame (default: all of the model's).
    #[arg(long, value_name = "N")]
    pub codebooks: Option<usize>,
}

pub fn run(threads: usize, a: EncodeArgs) -> Result<String> {
    // the output first (an unwritable --out fails before any work), then the cheap checks:
    // the config, the codebook count and the input, then the weights
    let mut out = Output::create(&a.out)?;
    let cfg = super::codec_config(&a.model)?;
    let n_q = a.codebooks.unwrap_or(cfg.num_quantizers);
    check_num_codebooks(n_q, &cfg)?;
    let clip = read_mono(&a.input)?;
    let pcm = resample(&clip.samples, clip.sample_rate, cfg.sampling_rate as u32)?;
    let mimi = super::load_mimi(&a.model, threads)?;
    let codes = mimi.encode(&pcm, n_q)?;
    let array = to_array(&codes)?;
    array
        .write_npy(&mut out)
        .map_err(|e| Error::Invalid(format!("{}: cannot write codes ({e})", a.out.display())))?;
    out.commit()?;
    Ok(format!(
        "{}: {:.2} s ({} Hz, {} channel(s)) -> {} codebooks x {} frames -> {}",
        a.input.display(),
        clip.samples.len() as f64 / clip.sample_rate as f64,
        clip.sample_rate,
        clip.channels,
        array.nrows(),
        array.ncols(),
        a.out.display()
    ))
}
