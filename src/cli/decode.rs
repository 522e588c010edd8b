//! `edgecsm decode`: Mimi codes (an int64 NumPy array `[codebooks, frames]`) to a mono WAV file
//! at the model rate (or raw samples; `--out -` writes to standard output).

use super::audio::FormatArg;
use clap::Args;
use edgecsm::audio::{Output, SampleFormat, WavWriter, check_codes, read_codes};
use edgecsm::{Error, Result};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Model directory (config.json + safetensors): a Mimi codec, or a CSM checkpoint (its codec).
    #[arg(long)]
    pub model: PathBuf,
    /// Input codes: int64 .npy, shape [codebooks, frames].
    #[arg(value_name = "CODES.npy")]
    pub input: PathBuf,
    /// Output WAV file (mono, model rate); a regular file is written only on success; `-` is
    /// standard output.
    #[arg(long, value_name = "OUT.wav")]
    pub out: PathBuf,
    /// Sample format of the output.
    #[arg(long, value_enum, default_value = "s16")]
    pub sample_format: FormatArg,
    /// Write raw little-endian samples in --sample-format, without a WAV header.
    #[arg(long)]
    pub raw: bool,
}

pub fn run(threads: usize, a: DecodeArgs) -> Result<String> {
    // the output first: an unwritable --out fails before any work
    let mut out = Output::create(&a.out)?;
    let cfg = super::codec_config(&a.model)?;
    let codes = read_codes(&a.input)?;
    let rows = check_codes(codes.view(), &cfg, &a.input.display().to_string())?;
    let format: SampleFormat = a.sample_format.into();
    // decoding is in memory: refuse what no WAV file could hold (4 GiB of samples) up front
    let bytes = (codes.ncols() as u64)
        .saturating_mul(cfg.frame_size() as u64)
        .saturating_mul(format.bytes() as u64);
    if bytes > u32::MAX as u64 {
        return Err(Error::Invalid(format!(
            "{}: {} frames decode to {:.1} GiB of audio, more than a WAV file holds (4 GiB): \
             decode it in parts",
            a.input.display(),
            codes.ncols(),
            bytes as f64 / (1u64 << 30) as f64
        )));
    }
    let mimi = super::load_mimi(&a.model, threads)?;
    let pcm = mimi.decode(&rows)?;
    if let Some(i) = pcm.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "the codec produced a non-finite sample ({}) at sample {i}: its weights hold NaN or \
             infinite values (a corrupt or badly converted checkpoint?)",
            pcm[i]
        )));
    }
    let mut wav = WavWriter::start(&mut out, cfg.sampling_rate as u32, format, a.raw)?;
    wav.write(&mut out, &pcm)?;
    wav.finish(&mut out)?;
    out.commit()?;
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
