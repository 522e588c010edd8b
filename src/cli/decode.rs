//! `edgecsm decode`: Mimi codes (an int64 NumPy array `[codebooks, frames]`) to a mono WAV file
//! at the model rate.

use clap::{Args, ValueEnum};
use edgecsm::Result;
use edgecsm::audio::{SampleFormat, check_codes, read_codes, write_wav};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SampleFormatArg {
    /// 16-bit PCM (clipped to full scale).
    S16,
    /// 32-bit float (unclipped).
    F32,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Model directory (config.json + safetensors): a Mimi codec, or a CSM checkpoint (its codec).
    #[arg(long)]
    pub model: PathBuf,
    /// Input codes: int64 .npy, shape [codebooks, frames].
    #[arg(value_name = "CODES.npy")]
    pub input: PathBuf,
    /// Output WAV file (mono, model rate); written only on success.
    #[arg(long, value_name = "OUT.wav")]
    pub out: PathBuf,
    /// Sample format of the output.
    #[arg(long, value_enum, default_value = "s16")]
    pub sample_format: SampleFormatArg,
}

pub fn run(threads: usize, a: DecodeArgs) -> Result<String> {
    let cfg = super::codec_config(&a.model)?;
    let codes = read_codes(&a.input)?;
    let rows = check_codes(codes.view(), &cfg, &a.input.display().to_string())?;
    let mimi = super::load_mimi(&a.model, threads)?;
    let pcm = mimi.decode(&rows)?;
    let format = match a.sample_format {
        SampleFormatArg::S16 => SampleFormat::S16,
        SampleFormatArg::F32 => SampleFormat::F32,
    };
    write_wav(&a.out, &pcm, cfg.sampling_rate as u32, format)?;
    Ok(format!(
        "{}: {} codebooks x {} frames -> {:.2} s at {} Hz -> {}",
        a.input.display(),
        rows.len(),
        codes.ncols(),
        pcm.len() as f64 / cfg.sampling_rate as f64,
        cfg.sampling_rate,
        a.out.display()
    ))
}
