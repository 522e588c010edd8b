//! Sample-rate conversion of a whole mono clip with rubato's synchronous FFT resampler
//! (band-limited, so downsampling removes what would alias), delay-compensated so the output
//! lines up with the input and has `ceil(len * to / from)` samples.

use crate::{Error, Result};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// Input chunk the FFT resampler works in; any size works, this one keeps its delay short.
const CHUNK: usize = 1024;

/// `samples` at `from` Hz resampled to `to` Hz (a copy when the rates are equal).
pub fn resample(samples: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    if from == 0 || to == 0 {
        return Err(Error::Invalid(format!(
            "cannot resample from {from} Hz to {to} Hz"
        )));
    }
    if from == to || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    let fail = |what: String| Error::Invalid(format!("resampling {from} Hz -> {to} Hz: {what}"));
    let mut r = Fft::<f32>::new(from as usize, to as usize, CHUNK, 1, FixedSync::Both)
        .map_err(|e| fail(e.to_string()))?;
    let input =
        InterleavedSlice::new(samples, 1, samples.len()).map_err(|e| fail(e.to_string()))?;
    let out = r
        .process_all(&input, samples.len(), None)
        .map_err(|e| fail(e.to_string()))?;
    // rubato rounds the float ratio up; the exact length is the rational one.
    let len = (samples.len() as u64 * to as u64).div_ceil(from as u64) as usize;
    let mut y = out.take_data();
    y.resize(len, 0.0);
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn sine(freq: f64, rate: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (2.0 * PI * freq * i as f64 / rate as f64).sin() as f32 * 0.5)
            .collect()
    }

    /// Smallest max abs difference, away from the clip edges (where the band-limited filter
    /// rings), between `y` and the 24 kHz sine delayed by some shift within one sample
    /// (rubato trims its delay in whole output samples, leaving a fixed sub-sample offset:
    /// -0.55 samples from 22.05 kHz, -0.25 from 44.1 kHz, 0 for integer ratios).
    fn best_shift_err(y: &[f32], freq: f64) -> (f64, f32) {
        let margin = 500;
        let mut best = (0.0, f32::MAX);
        for k in -20..=20 {
            let shift = k as f64 * 0.05;
            let err = (margin..y.len() - margin)
                .map(|i| {
                    let t = (i as f64 - shift) / 24000.0;
                    (y[i] - (2.0 * PI * freq * t).sin() as f32 * 0.5).abs()
                })
                .fold(0.0, f32::max);
            if err < best.1 {
                best = (shift, err);
            }
        }
        best
    }

    #[test]
    fn common_rates_keep_an_in_band_tone_in_phase() {
        for from in [8000u32, 16000, 22050, 44100, 48000, 96000] {
            let len = from as usize / 2; // 0.5 s
            let x = sine(440.0, from, len);
            let y = resample(&x, from, 24000).unwrap();
            assert_eq!(y.len(), (len as u64 * 24000).div_ceil(from as u64) as usize);
            let (shift, err) = best_shift_err(&y, 440.0);
            assert!(err < 2e-3, "{from} Hz: max error {err} at shift {shift}");
            if 24000 % from == 0 || from % 24000 == 0 {
                assert_eq!(shift, 0.0, "{from} Hz: integer ratios need no offset");
            }
        }
    }

    #[test]
    fn downsampling_removes_what_would_alias() {
        // 15 kHz is above the 12 kHz Nyquist limit of 24 kHz audio: it must be filtered out,
        // not folded back to 9 kHz.
        let x = sine(15000.0, 48000, 48000);
        let y = resample(&x, 48000, 24000).unwrap();
        let rms = (y[1000..y.len() - 1000].iter().map(|v| v * v).sum::<f32>()
            / (y.len() - 2000) as f32)
            .sqrt();
        assert!(rms < 1e-3, "residual rms {rms}");
    }

    #[test]
    fn equal_rates_and_empty_input_are_copies() {
        let x = sine(100.0, 24000, 1000);
        assert_eq!(resample(&x, 24000, 24000).unwrap(), x);
        assert!(resample(&[], 44100, 24000).unwrap().is_empty());
        assert!(resample(&x, 0, 24000).is_err());
    }
}
