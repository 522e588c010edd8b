//! WAV files: reading any PCM integer (8..32 bit) or float (32/64 bit) file with any channel
//! count, downmixed to mono f32 in [-1, 1]; writing mono 16-bit PCM or 32-bit float, as a
//! file or as a stream.
//!
//! The reader parses the RIFF chunks itself from the bytes of the file, so every size in the
//! header is checked against what the file holds before anything is allocated, and a stream
//! whose sizes say "unknown" (0xFFFFFFFF, as written for pipes by sox, ffmpeg and
//! [`WavWriter`]) is read to its end. Every sample must be finite and of a plausible size: a
//! NaN or an infinity is an error naming its position, not a panic deep inside a model.
//!
//! The writer puts a header with "unknown" sizes first, then the samples as they come; on a
//! regular file the sizes are patched at the end (see [`super::output::Output::patch`]), on
//! a stream they stay unknown. `raw` writes the samples alone.

use super::output::{Output, write_output};
use super::sample::{SampleFormat, f32_to_s16};
use crate::{Error, Result};
use std::io::Write;
use std::path::Path;

/// A mono clip and its sample rate.
#[derive(Clone, Debug, PartialEq)]
pub struct MonoClip {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    /// Channels in the file before the downmix.
    pub channels: u16,
}

/// Sample rates accepted on input.
pub const RATES: std::ops::RangeInclusive<u32> = 1000..=1_000_000;
/// Largest magnitude accepted for a float sample (full scale is 1; some tools write float
/// WAVs at the 16-bit scale, 32768): anything beyond is not audio.
pub const MAX_FLOAT_SAMPLE: f64 = 1e6;
/// A size field that means "unknown: up to the end of the file" (streams).
const UNKNOWN_SIZES: [u32; 3] = [0xFFFF_FFFF, 0x7FFF_FFFF, 0x7FFF_F000];

const PCM: u16 = 1;
const IEEE_FLOAT: u16 = 3;
const EXTENSIBLE: u16 = 0xFFFE;
/// The 14 bytes after the format tag in the `KSDATAFORMAT_SUBTYPE_*` GUIDs.
const GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

/// Reads `path` (a file, or a FIFO read to its end) and averages its channels into one.
pub fn read_mono(path: &Path) -> Result<MonoClip> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_mono(&bytes).map_err(|msg| bad(path, msg))
}

/// How samples are stored.
#[derive(Clone, Copy, Debug)]
struct Format {
    float: bool,
    channels: u16,
    rate: u32,
    /// Bytes per sample of one channel.
    container: usize,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn parse_fmt(c: &[u8]) -> Result<Format, String> {
    let short = || "not a valid WAV file (fmt chunk too short)".to_string();
    let tag = u16_at(c, 0).ok_or_else(short)?;
    let channels = u16_at(c, 2).ok_or_else(short)?;
    let rate = u32_at(c, 4).ok_or_else(short)?;
    let block_align = u16_at(c, 12).ok_or_else(short)? as usize;
    let bits = u16_at(c, 14).ok_or_else(short)? as usize;
    let tag = if tag == EXTENSIBLE {
        let guid = c.get(24..40).ok_or_else(short)?;
        if guid[2..] != GUID_TAIL {
            return Err("unsupported WAV encoding (use PCM 8-32 bit or float)".into());
        }
        u16::from_le_bytes([guid[0], guid[1]])
    } else {
        tag
    };
    let float = match tag {
        PCM => false,
        IEEE_FLOAT => true,
        t => {
            return Err(format!(
                "unsupported WAV encoding (format tag {t:#x}; use PCM 8-32 bit or float)"
            ));
        }
    };
    if channels == 0 {
        return Err("invalid WAV header (0 channels)".into());
    }
    if !RATES.contains(&rate) {
        return Err(format!(
            "invalid WAV header (sample rate {rate} Hz; accepted: {} to {} Hz)",
            RATES.start(),
            RATES.end()
        ));
    }
    let container = block_align / channels as usize;
    let ok = block_align == container * channels as usize
        && bits > 0
        && bits <= container * 8
        && if float {
            container == 4 || container == 8
        } else {
            (1..=4).contains(&container)
        };
    if !ok {
        return Err(format!(
            "unsupported WAV layout ({bits}-bit {} samples in blocks of {block_align} bytes for \
             {channels} channel(s))",
            if float { "float" } else { "integer" }
        ));
    }
    Ok(Format {
        float,
        channels,
        rate,
        container,
    })
}

/// The fmt and the data bytes of a WAV file.
fn chunks(b: &[u8]) -> Result<(Format, &[u8]), String> {
    if b.len() < 12 || &b[..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        let what = if b.starts_with(b"RF64") || b.starts_with(b"RIFX") {
            "an RF64 or big-endian RIFX file, not supported"
        } else {
            "no RIFF/WAVE header"
        };
        return Err(format!("not a valid WAV file ({what})"));
    }
    let mut pos = 12;
    let mut fmt = None;
    loop {
        let (Some(id), Some(size)) = (b.get(pos..pos + 4), u32_at(b, pos + 4)) else {
            return Err(if fmt.is_some() {
                "not a valid WAV file (no data chunk) or truncated".into()
            } else {
                "not a valid WAV file (no fmt chunk) or truncated".into()
            });
        };
        let start = pos + 8;
        let left = b.len() - start;
        if id == b"data" {
            let fmt = fmt.ok_or("not a valid WAV file (data before the fmt chunk)")?;
            let data = if (size as usize) <= left {
                &b[start..start + size as usize]
            } else if UNKNOWN_SIZES.contains(&size) {
                &b[start..]
            } else {
                return Err(format!(
                    "truncated: the data chunk declares {size} bytes but the file holds {left}"
                ));
            };
            return Ok((fmt, data));
        }
        if size as usize > left {
            return Err(format!(
                "truncated or not a WAV file: chunk {:?} declares {size} bytes but the file \
                 holds {left}",
                String::from_utf8_lossy(id)
            ));
        }
        if id == b"fmt " {
            fmt = Some(parse_fmt(&b[start..start + size as usize])?);
        }
        // chunks are padded to an even size
        pos = start + size as usize + (size as usize & 1);
    }
}

/// Parses a whole WAV file held in memory (see [`read_mono`]); the error is a message
/// without the file name.
pub fn parse_mono(bytes: &[u8]) -> Result<MonoClip, String> {
    let (f, data) = chunks(bytes)?;
    let channels = f.channels as usize;
    let block = f.container * channels;
    let frames = data.len() / block;
    if frames == 0 {
        return Err("WAV file has no audio samples".into());
    }
    let mut samples = Vec::with_capacity(frames);
    let inv = 1.0 / channels as f64;
    for (t, frame) in data.chunks_exact(block).enumerate() {
        let mut sum = 0f64;
        for (c, s) in frame.chunks_exact(f.container).enumerate() {
            let v = decode(s, f.float);
            if !v.is_finite() || v.abs() > MAX_FLOAT_SAMPLE {
                let at = if channels > 1 {
                    format!("sample {t} (channel {c})")
                } else {
                    format!("sample {t}")
                };
                return Err(format!(
                    "{at}, at {:.3} s, is {v}: audio samples must be finite numbers (full \
                     scale is 1)",
                    t as f64 / f.rate as f64
                ));
            }
            sum += v;
        }
        samples.push((sum * inv) as f32);
    }
    Ok(MonoClip {
        samples,
        sample_rate: f.rate,
        channels: f.channels,
    })
}

/// One sample of `s.len()` bytes as a value with full scale 1.
#[inline]
fn decode(s: &[u8], float: bool) -> f64 {
    match (float, s.len()) {
        (true, 4) => f32::from_le_bytes([s[0], s[1], s[2], s[3]]) as f64,
        (true, _) => f64::from_le_bytes(s.try_into().unwrap_or([0; 8])),
        // 8-bit WAV is unsigned
        (false, 1) => (s[0] as f64 - 128.0) / 128.0,
        (false, n) => {
            // sign-extend the little-endian integer from its top byte
            let mut v = (s[n - 1] as i8) as i64;
            for &b in s[..n - 1].iter().rev() {
                v = (v << 8) | b as i64;
            }
            v as f64 / (1u64 << (8 * n - 1)) as f64
        }
    }
}

/// Writes mono samples to an [`Output`] as WAV (or raw samples), frame by frame.
#[derive(Debug)]
pub struct WavWriter {
    format: SampleFormat,
    raw: bool,
    /// Bytes of sample data written.
    data_bytes: u64,
    /// Offset of the data chunk's size field.
    data_size_at: u64,
    buf: Vec<u8>,
}

impl WavWriter {
    /// Writes the header (sizes unknown until [`WavWriter::finish`]) unless `raw`.
    pub fn start(out: &mut Output, rate: u32, format: SampleFormat, raw: bool) -> Result<Self> {
        let mut h = Vec::with_capacity(64);
        let data_size_at = if raw {
            0
        } else {
            let bytes = format.bytes() as u32;
            h.extend_from_slice(b"RIFF");
            h.extend_from_slice(&u32::MAX.to_le_bytes());
            h.extend_from_slice(b"WAVE");
            h.extend_from_slice(b"fmt ");
            let (tag, fmt_len) = match format {
                SampleFormat::S16 => (PCM, 16u32),
                SampleFormat::F32 => (IEEE_FLOAT, 18),
            };
            h.extend_from_slice(&fmt_len.to_le_bytes());
            h.extend_from_slice(&tag.to_le_bytes());
            h.extend_from_slice(&1u16.to_le_bytes());
            h.extend_from_slice(&rate.to_le_bytes());
            h.extend_from_slice(&rate.saturating_mul(bytes).to_le_bytes());
            h.extend_from_slice(&(bytes as u16).to_le_bytes());
            h.extend_from_slice(&(bytes as u16 * 8).to_le_bytes());
            if format == SampleFormat::F32 {
                // cbSize, then the fact chunk non-PCM formats carry (frames, unknown yet)
                h.extend_from_slice(&0u16.to_le_bytes());
                h.extend_from_slice(b"fact");
                h.extend_from_slice(&4u32.to_le_bytes());
                h.extend_from_slice(&u32::MAX.to_le_bytes());
            }
            h.extend_from_slice(b"data");
            h.extend_from_slice(&u32::MAX.to_le_bytes());
            h.len() as u64 - 4
        };
        out.write_all(&h).map_err(|e| Error::io(out.path(), e))?;
        Ok(WavWriter {
            format,
            raw,
            data_bytes: 0,
            data_size_at,
            buf: Vec::new(),
        })
    }

    /// Appends samples (s16: clipped to [-1, 1], NaN as 0).
    pub fn write(&mut self, out: &mut Output, samples: &[f32]) -> Result<()> {
        self.buf.clear();
        match self.format {
            SampleFormat::S16 => {
                for &x in samples {
                    self.buf.extend_from_slice(&f32_to_s16(x).to_le_bytes());
                }
            }
            SampleFormat::F32 => {
                for &x in samples {
                    self.buf.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        out.write_all(&self.buf)
            .map_err(|e| Error::io(out.path(), e))?;
        self.data_bytes += self.buf.len() as u64;
        Ok(())
    }

    /// Samples written so far.
    pub fn samples(&self) -> u64 {
        self.data_bytes / self.format.bytes() as u64
    }

    /// Patches the sizes where the output allows it (a regular file up to 4 GiB) and flushes.
    pub fn finish(self, out: &mut Output) -> Result<()> {
        if !self.raw && !out.is_stream() {
            let size = |n: u64| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
            let riff = self.data_size_at + 4 + self.data_bytes - 8;
            out.patch(4, &size(riff))?;
            out.patch(self.data_size_at, &size(self.data_bytes))?;
            if self.format == SampleFormat::F32 {
                // the fact chunk's frame count, 12 bytes before the data chunk's size
                out.patch(self.data_size_at - 8, &size(self.samples()))?;
            }
        }
        out.flush().map_err(|e| Error::io(out.path(), e))
    }
}

/// Writes mono `samples` at `sample_rate` to `path` under the output policy (atomically for
/// a regular file: no file on failure).
pub fn write_wav(
    path: &Path,
    samples: &[f32],
    sample_rate: u32,
    format: SampleFormat,
) -> Result<()> {
    write_output(path, |out| {
        let mut w = WavWriter::start(out, sample_rate, format, false)?;
        w.write(out, samples)?;
        w.finish(out)
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
    fn round_trip_s16_and_f32_readable_by_hound() {
        let d = tempfile::tempdir().unwrap();
        let x: Vec<f32> = (0..500).map(|i| ((i as f32) * 0.05).sin() * 0.9).collect();
        let p = d.path().join("f32.wav");
        write_wav(&p, &x, 24000, SampleFormat::F32).unwrap();
        let c = read_mono(&p).unwrap();
        assert_eq!((c.sample_rate, c.channels), (24000, 1));
        assert_eq!(c.samples, x);
        let mut h = hound::WavReader::open(&p).unwrap();
        assert_eq!(h.len(), 500);
        let hs: Vec<f32> = h.samples::<f32>().map(|s| s.unwrap()).collect();
        assert_eq!(hs, x);
        let p = d.path().join("s16.wav");
        let mut y = x.clone();
        y.extend([2.0, -3.0, f32::NAN]); // clipped, clipped, zero
        write_wav(&p, &y, 24000, SampleFormat::S16).unwrap();
        let r = hound::WavReader::open(&p).unwrap();
        assert_eq!(
            (r.spec().bits_per_sample, r.spec().sample_format, r.len()),
            (16, hound::SampleFormat::Int, 503)
        );
        let c = read_mono(&p).unwrap();
        for (a, b) in c.samples.iter().zip(&x) {
            assert!((a - b).abs() <= 0.5 / 32768.0 + 1e-7, "{a} vs {b}");
        }
        assert_eq!(&c.samples[500..], [32767.0 / 32768.0, -1.0, 0.0]);
    }

    #[test]
    fn a_streamed_wav_has_unknown_sizes_and_reads_to_its_end() {
        let x: Vec<f32> = (0..300).map(|i| (i as f32 * 0.1).sin() * 0.5).collect();
        for (fmt, name) in [(SampleFormat::S16, "s16"), (SampleFormat::F32, "f32")] {
            // a pipe, written through its /proc/self/fd link (as `--out /dev/stdout` would)
            let mut fds = [0i32; 2];
            // SAFETY: `fds` has room for the two descriptors pipe() returns.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            use std::os::fd::FromRawFd;
            // SAFETY: both descriptors were just created and are owned here alone.
            let (mut rx, tx) = unsafe {
                (
                    std::fs::File::from_raw_fd(fds[0]),
                    std::fs::File::from_raw_fd(fds[1]),
                )
            };
            let reader = std::thread::spawn(move || {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut rx, &mut v).unwrap();
                v
            });
            let path = std::path::PathBuf::from(format!("/proc/self/fd/{}", fds[1]));
            let mut out = Output::create(&path).unwrap();
            assert!(out.is_stream(), "{name}");
            let mut w = WavWriter::start(&mut out, 24000, fmt, false).unwrap();
            w.write(&mut out, &x[..100]).unwrap();
            w.write(&mut out, &x[100..]).unwrap();
            w.finish(&mut out).unwrap();
            out.commit().unwrap();
            drop(tx);
            let bytes = reader.join().unwrap();
            assert_eq!(&bytes[4..8], &[0xFF; 4]);
            let c = parse_mono(&bytes).unwrap();
            assert_eq!(c.samples.len(), 300);
            if fmt == SampleFormat::F32 {
                assert_eq!(c.samples, x);
            }
        }
    }

    #[test]
    fn raw_output_is_samples_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("raw");
        write_output(&p, |out| {
            let mut w = WavWriter::start(out, 24000, SampleFormat::S16, true)?;
            w.write(out, &[0.5, -0.5])?;
            w.finish(out)
        })
        .unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            [0x00, 0x40, 0x00, 0xC0].to_vec()
        );
    }

    #[test]
    fn non_finite_and_absurd_samples_are_located() {
        let d = tempfile::tempdir().unwrap();
        for (i, v, ch) in [
            (5usize, f32::NAN, 1u16),
            (9, f32::INFINITY, 2),
            (0, 3e38, 1),
        ] {
            let p = d.path().join("bad.wav");
            write_raw(&p, spec(ch, 8000, 32, hound::SampleFormat::Float), |w| {
                for k in 0..20 * ch as usize {
                    w.write_sample(if k == i { v } else { 0.1 }).unwrap();
                }
            });
            let e = err_of(&p);
            let want = if ch == 1 {
                format!("sample {i},")
            } else {
                format!("sample {} (channel {})", i / 2, i % 2)
            };
            assert!(e.contains("bad.wav") && e.contains(&want), "{e}");
        }
        // values at the 16-bit scale are accepted
        let p = d.path().join("loud.wav");
        write_raw(&p, spec(1, 8000, 32, hound::SampleFormat::Float), |w| {
            w.write_sample(32767.0f32).unwrap();
        });
        assert_eq!(read_mono(&p).unwrap().samples, [32767.0]);
    }

    #[test]
    fn sizes_are_checked_against_the_file() {
        let d = tempfile::tempdir().unwrap();
        let full = d.path().join("full.wav");
        write_wav(&full, &[0.1; 100], 24000, SampleFormat::S16).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        let data = bytes.windows(4).position(|w| w == b"data").unwrap();
        // a data size beyond the file (not an "unknown" marker)
        let mut b = bytes.clone();
        b[data + 4..data + 8].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        let e = parse_mono(&b).unwrap_err();
        assert!(e.contains("truncated") && e.contains("4294967040"), "{e}");
        // an unknown chunk larger than the file
        let mut b = bytes[..12].to_vec();
        b.extend_from_slice(b"LIST");
        b.extend_from_slice(&0x7000_0000u32.to_le_bytes());
        b.extend_from_slice(&bytes[12..]);
        assert!(parse_mono(&b).unwrap_err().contains("LIST"));
        // an odd-sized chunk before fmt is skipped with its pad byte
        let mut b = bytes[..12].to_vec();
        b.extend_from_slice(b"junk");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&[1, 2, 3, 0]);
        b.extend_from_slice(&bytes[12..]);
        assert_eq!(parse_mono(&b).unwrap().samples.len(), 100);
        // odd rates and layouts
        let fmt = bytes.windows(4).position(|w| w == b"fmt ").unwrap();
        for (at, val, want) in [
            (fmt + 12, 0u32, "sample rate 0"),
            (fmt + 12, 4_000_000_000, "sample rate"),
        ] {
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&val.to_le_bytes());
            assert!(parse_mono(&b).unwrap_err().contains(want));
        }
        let mut b = bytes.clone();
        b[fmt + 10..fmt + 12].copy_from_slice(&0u16.to_le_bytes());
        assert!(parse_mono(&b).unwrap_err().contains("0 channels"));
        let mut b = bytes.clone();
        b[fmt + 8..fmt + 10].copy_from_slice(&2u16.to_le_bytes()); // ADPCM
        assert!(parse_mono(&b).unwrap_err().contains("unsupported"));
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
