//! WAV files: reading any PCM integer (8..32 bit) or 32-bit float file with any channel count,
//! downmixed to mono f32 in [-1, 1]; writing mono 16-bit PCM or 32-bit float.

use super::atomic::write_atomically;
use crate::{Error, Result};
use std::io::BufWriter;
use std::path::Path;

/// A mono clip and its sample rate.
#[derive(Clone, Debug, PartialEq)]
pub struct MonoClip {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channels in the file before the downmix.
    pub channels: u16,
}

/// Sample format of a written WAV file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    /// 16-bit signed PCM; samples are clipped to [-1, 1].
    S16,
    /// 32-bit IEEE float, unclipped.
    F32,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

fn read_error(path: &Path, e: hound::Error) -> Error {
    match e {
        // The file itself opened: a read failure inside it means it ends too early.
        hound::Error::IoError(io) => bad(path, format!("not a WAV file or truncated ({io})")),
        hound::Error::FormatError(what) => bad(path, format!("not a valid WAV file ({what})")),
        hound::Error::Unsupported => bad(
            path,
            "unsupported WAV encoding (use PCM 8-32 bit or 32-bit float)",
        ),
        other => bad(path, format!("cannot read WAV data ({other})")),
    }
}

/// Reads `path` and averages its channels into one.
pub fn read_mono(path: &Path) -> Result<MonoClip> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader =
        hound::WavReader::new(std::io::BufReader::new(file)).map_err(|e| read_error(path, e))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(bad(
            path,
            format!(
                "invalid WAV header ({} channels at {} Hz)",
                spec.channels, spec.sample_rate
            ),
        ));
    }
    let channels = spec.channels as usize;
    let frames = reader.duration() as usize;
    if frames == 0 {
        return Err(bad(path, "WAV file has no audio samples"));
    }
    let mut interleaved = Vec::with_capacity(frames * channels);
    match spec.sample_format {
        hound::SampleFormat::Float => {
            if spec.bits_per_sample != 32 {
                return Err(bad(
                    path,
                    format!("unsupported {}-bit float WAV", spec.bits_per_sample),
                ));
            }
            for s in reader.samples::<f32>() {
                interleaved.push(s.map_err(|e| read_error(path, e))?);
            }
        }
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
            for s in reader.samples::<i32>() {
                interleaved.push((s.map_err(|e| read_error(path, e))? as f64 * scale) as f32);
            }
        }
    }
    // A file cut inside the last frame: keep the whole frames.
    interleaved.truncate(interleaved.len() / channels * channels);
    if interleaved.is_empty() {
        return Err(bad(path, "WAV file has no audio samples"));
    }
    let samples = if channels == 1 {
        interleaved
    } else {
        let inv = 1.0 / channels as f32;
        interleaved
            .chunks_exact(channels)
            .map(|f| f.iter().sum::<f32>() * inv)
            .collect()
    };
    Ok(MonoClip {
        samples,
        sample_rate: spec.sample_rate,
        channels: spec.channels,
    })
}

/// Writes mono `samples` at `sample_rate` to `path` atomically (no file on failure).
pub fn write_wav(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    format: SampleFormat,
) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: match format {
            SampleFormat::S16 => 16,
            SampleFormat::F32 => 32,
        },
        sample_format: match format {
            SampleFormat::S16 => hound::SampleFormat::Int,
            SampleFormat::F32 => hound::SampleFormat::Float,
        },
    };
    let werr = |e: hound::Error| match e {
        hound::Error::IoError(io) => Error::io(path, io),
        other => bad(path, format!("cannot write WAV ({other})")),
    };
    write_atomically(path, |file| {
        let mut w = hound::WavWriter::new(BufWriter::new(file), spec).map_err(werr)?;
        match format {
            SampleFormat::S16 => {
                for &x in samples {
                    // Full scale is 32768 as when reading; `as` saturates at 32767 and sends
                    // NaN to zero.
                    w.write_sample((x.clamp(-1.0, 1.0) * 32768.0).round() as i16)
                        .map_err(werr)?;
                }
            }
            SampleFormat::F32 => {
                for &x in samples {
                    w.write_sample(x).map_err(werr)?;
                }
            }
        }
        w.finalize().map_err(werr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_raw(
        path: &Path,
        spec: hound::WavSpec,
        f: impl FnOnce(&mut hound::WavWriter<std::io::BufWriter<std::fs::File>>),
    ) {
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        f(&mut w);
        w.finalize().unwrap();
    }

    fn spec(channels: u16, rate: u32, bits: u16, fmt: hound::SampleFormat) -> hound::WavSpec {
        hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: bits,
            sample_format: fmt,
        }
    }

    fn err_of(path: &Path) -> String {
        read_mono(path).unwrap_err().to_string()
    }

    #[test]
    fn integer_formats_are_scaled_and_channels_averaged() {
        let d = tempfile::tempdir().unwrap();
        for bits in [8u16, 16, 24, 32] {
            let p = d.path().join(format!("i{bits}.wav"));
            let full = (1i64 << (bits - 1)) as f64;
            write_raw(&p, spec(2, 44100, bits, hound::SampleFormat::Int), |w| {
                // frame 0: (half, -half) -> 0; frame 1: (half, half) -> 0.5; frame 2: (-full, 0)
                for v in [0.5, -0.5, 0.5, 0.5, -1.0, 0.0] {
                    w.write_sample((v * full) as i32).unwrap();
                }
            });
            let c = read_mono(&p).unwrap();
            assert_eq!((c.sample_rate, c.channels), (44100, 2), "{bits} bit");
            assert_eq!(c.samples, [0.0, 0.5, -0.5], "{bits} bit");
        }
    }

    #[test]
    fn float_and_multichannel() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.wav");
        write_raw(&p, spec(3, 16000, 32, hound::SampleFormat::Float), |w| {
            for v in [0.3f32, 0.6, 0.9, -0.3, -0.3, 0.0] {
                w.write_sample(v).unwrap();
            }
        });
        let c = read_mono(&p).unwrap();
        assert_eq!((c.sample_rate, c.channels), (16000, 3));
        assert!((c.samples[0] - 0.6).abs() < 1e-6 && (c.samples[1] + 0.2).abs() < 1e-6);
    }

    #[test]
    fn round_trip_s16_and_f32() {
        let d = tempfile::tempdir().unwrap();
        let x: Vec<f32> = (0..500).map(|i| ((i as f32) * 0.05).sin() * 0.9).collect();
        let p = d.path().join("f32.wav");
        write_wav(&p, &x, 24000, SampleFormat::F32).unwrap();
        let c = read_mono(&p).unwrap();
        assert_eq!((c.sample_rate, c.channels), (24000, 1));
        assert_eq!(c.samples, x);
        let p = d.path().join("s16.wav");
        let mut y = x.clone();
        y.extend([2.0, -3.0, f32::NAN]); // clipped, clipped, zero
        write_wav(&p, &y, 24000, SampleFormat::S16).unwrap();
        let r = hound::WavReader::open(&p).unwrap().spec();
        assert_eq!(
            (r.bits_per_sample, r.sample_format),
            (16, hound::SampleFormat::Int)
        );
        let c = read_mono(&p).unwrap();
        for (a, b) in c.samples.iter().zip(&x) {
            assert!((a - b).abs() <= 0.5 / 32768.0 + 1e-7, "{a} vs {b}");
        }
        assert_eq!(&c.samples[500..], [32767.0 / 32768.0, -1.0, 0.0]);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let d = tempfile::tempdir().unwrap();
        let text = d.path().join("text.wav");
        std::fs::write(&text, b"this is not audio at all, just some text").unwrap();
        assert!(
            err_of(&text).contains("not a valid WAV"),
            "{}",
            err_of(&text)
        );
        let empty_file = d.path().join("zero.wav");
        std::fs::write(&empty_file, b"").unwrap();
        assert!(
            err_of(&empty_file).contains("zero.wav"),
            "{}",
            err_of(&empty_file)
        );
        let missing = d.path().join("missing.wav");
        assert!(err_of(&missing).contains("missing.wav"));
        let silent = d.path().join("empty.wav");
        write_raw(
            &silent,
            spec(1, 24000, 16, hound::SampleFormat::Int),
            |_| {},
        );
        assert!(
            err_of(&silent).contains("no audio samples"),
            "{}",
            err_of(&silent)
        );
        // A file cut in the middle of its data chunk.
        let full = d.path().join("full.wav");
        write_wav(&full, &[0.1; 100], 24000, SampleFormat::S16).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let cut = d.path().join("cut.wav");
        std::fs::write(&cut, &bytes[..bytes.len() - 51]).unwrap();
        let e = err_of(&cut);
        assert!(e.contains("cut.wav") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn failed_write_leaves_no_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nodir/out.wav");
        assert!(write_wav(&p, &[0.0; 10], 24000, SampleFormat::S16).is_err());
        assert!(!p.exists());
    }
}
