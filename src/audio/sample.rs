//! The two sample formats edgecsm writes and plays (WAV files, ALSA devices) and the one
//! conversion between f32 and 16-bit PCM that both use.

/// A sample format of a written WAV file or an ALSA device (the models work in `f32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    /// 16-bit signed little-endian PCM (`S16_LE`, the format every device offers); samples are
    /// clipped to full scale (see [`f32_to_s16`]).
    S16,
    /// 32-bit IEEE float little-endian (`FLOAT_LE`), unclipped.
    F32,
}

impl SampleFormat {
    /// Bytes per sample.
    pub fn bytes(self) -> usize {
        match self {
            SampleFormat::S16 => 2,
            SampleFormat::F32 => 4,
        }
    }

    /// ALSA's name of the format, for messages.
    pub fn alsa_name(self) -> &'static str {
        match self {
            SampleFormat::S16 => "S16_LE",
            SampleFormat::F32 => "FLOAT_LE",
        }
    }
}

/// One sample to 16-bit PCM: full scale is 32768 (as [`s16_to_f32`] reads it), rounded to
/// nearest, clipped to [-32768, 32767]; NaN becomes 0.
pub fn f32_to_s16(x: f32) -> i16 {
    (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16
}

/// One 16-bit PCM sample to f32 in [-1, 1).
pub fn s16_to_f32(x: i16) -> f32 {
    x as f32 / 32768.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s16_round_trips_and_clips() {
        for x in [i16::MIN, -12345, -1, 0, 1, 12345, i16::MAX] {
            assert_eq!(f32_to_s16(s16_to_f32(x)), x);
        }
        assert_eq!(f32_to_s16(1.0), i16::MAX);
        assert_eq!(f32_to_s16(7.5), i16::MAX);
        assert_eq!(f32_to_s16(-1.5), i16::MIN);
        assert_eq!(f32_to_s16(f32::NAN), 0);
        assert_eq!(f32_to_s16(0.5 / 32768.0), 1); // rounds half away from zero
    }
}
