//! An energy gate that segments the user's turns from the capture stream, one 80 ms frame at a
//! time: a frame is loud when its RMS level is at or above a threshold (dBFS); a turn starts
//! after `onset` consecutive loud frames (the frames of the onset belong to the turn) and ends
//! after `hangover` consecutive quiet frames (those trailing frames belong to it too, so short
//! pauses between words do not split a turn). Fixed state, no allocation.

use crate::{Error, Result};

/// The gate's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GateConfig {
    /// Loudness threshold: frame RMS in dB relative to full scale (1.0).
    pub threshold_dbfs: f32,
    /// Consecutive loud frames that confirm a turn (at least 1).
    pub onset: u32,
    /// Consecutive quiet frames that end a turn (at least 1).
    pub hangover: u32,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            threshold_dbfs: -40.0,
            onset: 2,
            hangover: 6,
        }
    }
}

impl GateConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.threshold_dbfs.is_finite() && self.threshold_dbfs <= 0.0) {
            return Err(Error::Invalid(format!(
                "VAD threshold {} dBFS: must be a finite level at or below 0",
                self.threshold_dbfs
            )));
        }
        if self.onset == 0 || self.hangover == 0 {
            return Err(Error::Invalid(format!(
                "VAD onset ({}) and hangover ({}) must be at least one frame each",
                self.onset, self.hangover
            )));
        }
        Ok(())
    }
}

/// What the gate decided about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vad {
    /// No turn: the frame is quiet, or a candidate onset fell back to quiet (the candidate
    /// frames so far are not speech).
    Quiet,
    /// Loud, but the onset is not confirmed yet: keep the frame tentatively.
    Candidate,
    /// The onset is confirmed with this frame: the candidate frames and this one start a turn.
    Start,
    /// Inside a turn (loud, or quiet within the hangover).
    Speech,
    /// The hangover ran out: the turn ended before this frame (which is not part of it).
    End,
}

impl Vad {
    /// Whether the frame belongs to a (possibly tentative) turn.
    pub fn keeps_frame(self) -> bool {
        matches!(self, Vad::Candidate | Vad::Start | Vad::Speech)
    }
}

/// The gate's state (see the module docs).
#[derive(Clone, Debug)]
pub struct EnergyGate {
    cfg: GateConfig,
    /// Mean square at the threshold.
    threshold_ms: f32,
    in_turn: bool,
    loud_run: u32,
    quiet_run: u32,
    /// Level of the last frame in dBFS, for status and logs.
    last_dbfs: f32,
}

impl EnergyGate {
    pub fn new(cfg: GateConfig) -> Result<EnergyGate> {
        cfg.validate()?;
        Ok(EnergyGate {
            threshold_ms: 10f32.powf(cfg.threshold_dbfs / 10.0),
            cfg,
            in_turn: false,
            loud_run: 0,
            quiet_run: 0,
            last_dbfs: f32::NEG_INFINITY,
        })
    }

    /// Whether a turn is in progress (confirmed onset, hangover not run out).
    pub fn in_turn(&self) -> bool {
        self.in_turn
    }

    pub fn last_dbfs(&self) -> f32 {
        self.last_dbfs
    }

    /// Classifies the next frame.
    pub fn push(&mut self, frame: &[f32]) -> Vad {
        let ms = if frame.is_empty() {
            0.0
        } else {
            frame.iter().map(|&x| x * x).sum::<f32>() / frame.len() as f32
        };
        self.last_dbfs = 10.0 * ms.max(1e-20).log10();
        // NaN samples count as quiet
        let loud = ms >= self.threshold_ms;
        if self.in_turn {
            if loud {
                self.quiet_run = 0;
                return Vad::Speech;
            }
            self.quiet_run += 1;
            if self.quiet_run > self.cfg.hangover {
                self.in_turn = false;
                self.quiet_run = 0;
                self.loud_run = 0;
                return Vad::End;
            }
            return Vad::Speech;
        }
        if !loud {
            self.loud_run = 0;
            return Vad::Quiet;
        }
        self.loud_run += 1;
        if self.loud_run >= self.cfg.onset {
            self.in_turn = true;
            self.quiet_run = 0;
            return Vad::Start;
        }
        Vad::Candidate
    }

    /// Forgets any turn in progress.
    pub fn reset(&mut self) {
        self.in_turn = false;
        self.loud_run = 0;
        self.quiet_run = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: usize = 1920;

    fn tone(amp: f32, k: usize) -> Vec<f32> {
        (0..N)
            .map(|i| amp * (2.0 * std::f32::consts::PI * 440.0 * (i + k * N) as f32 / 24e3).sin())
            .collect()
    }

    /// Deterministic white-ish noise of RMS about `amp / sqrt(3)`.
    fn noise(amp: f32, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..N)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                amp * ((s >> 8) as f32 / (1u32 << 23) as f32 - 1.0)
            })
            .collect()
    }

    fn run(gate: &mut EnergyGate, frames: &[Vec<f32>]) -> Vec<Vad> {
        frames.iter().map(|f| gate.push(f)).collect()
    }

    #[test]
    fn silence_and_quiet_noise_never_start_a_turn() {
        let mut g = EnergyGate::new(GateConfig::default()).unwrap();
        let mut frames: Vec<Vec<f32>> = (0..20).map(|_| vec![0.0; N]).collect();
        // -60 dBFS-ish noise, well under the -40 dBFS threshold
        frames.extend((0..20).map(|k| noise(0.0017, k)));
        assert!(run(&mut g, &frames).iter().all(|&v| v == Vad::Quiet));
        assert!(!g.in_turn());
        assert!(g.last_dbfs() < -55.0, "{}", g.last_dbfs());
    }

    #[test]
    fn a_burst_is_one_turn_with_onset_and_hangover() {
        let cfg = GateConfig {
            threshold_dbfs: -30.0,
            onset: 2,
            hangover: 3,
        };
        let mut g = EnergyGate::new(cfg).unwrap();
        let mut frames = vec![vec![0.0; N]; 3];
        frames.extend((0..5).map(|k| tone(0.3, k))); // about -13 dBFS
        frames.extend(vec![vec![0.0; N]; 6]);
        let v = run(&mut g, &frames);
        use Vad::*;
        assert_eq!(
            v,
            [
                Quiet, Quiet, Quiet, Candidate, Start, Speech, Speech, Speech, Speech, Speech,
                Speech, End, Quiet, Quiet
            ]
        );
        // frames kept for the turn: 5 loud + 3 hangover
        assert_eq!(v.iter().filter(|x| x.keeps_frame()).count(), 8);
    }

    #[test]
    fn a_short_click_is_not_a_turn_and_pauses_do_not_split() {
        let cfg = GateConfig {
            threshold_dbfs: -30.0,
            onset: 3,
            hangover: 4,
        };
        let mut g = EnergyGate::new(cfg).unwrap();
        // two loud frames (shorter than the onset), then quiet: candidates that fall back
        let frames = vec![tone(0.5, 0), tone(0.5, 1), vec![0.0; N], vec![0.0; N]];
        use Vad::*;
        assert_eq!(run(&mut g, &frames), [Candidate, Candidate, Quiet, Quiet]);
        // speech, a 3-frame pause (inside the hangover), speech: one turn
        let mut frames: Vec<Vec<f32>> = (0..4).map(|k| noise(0.5, k)).collect();
        frames.extend(vec![vec![0.0; N]; 3]);
        frames.extend((0..3).map(|k| noise(0.5, 10 + k)));
        frames.extend(vec![vec![0.0; N]; 5]);
        let v = run(&mut g, &frames);
        assert_eq!(v.iter().filter(|&&x| x == Start).count(), 1, "{v:?}");
        assert_eq!(v.iter().filter(|&&x| x == End).count(), 1, "{v:?}");
        assert_eq!(*v.last().unwrap(), End);
        // a 5-frame pause (past the hangover) splits into two turns
        g.reset();
        let mut frames: Vec<Vec<f32>> = (0..4).map(|k| noise(0.5, k)).collect();
        frames.extend(vec![vec![0.0; N]; 5]);
        frames.extend((0..4).map(|k| noise(0.5, 20 + k)));
        frames.extend(vec![vec![0.0; N]; 5]);
        let v = run(&mut g, &frames);
        assert_eq!(v.iter().filter(|&&x| x == Start).count(), 2, "{v:?}");
        assert_eq!(v.iter().filter(|&&x| x == End).count(), 2, "{v:?}");
    }

    #[test]
    fn threshold_is_in_dbfs_and_bad_settings_are_refused() {
        // a full-scale sine is -3 dBFS: loud at -4, quiet at -2
        let mut loud = EnergyGate::new(GateConfig {
            threshold_dbfs: -4.0,
            onset: 1,
            hangover: 1,
        })
        .unwrap();
        assert_eq!(loud.push(&tone(1.0, 0)), Vad::Start);
        assert!(
            (loud.last_dbfs() + 3.01).abs() < 0.05,
            "{}",
            loud.last_dbfs()
        );
        let mut quiet = EnergyGate::new(GateConfig {
            threshold_dbfs: -2.0,
            onset: 1,
            hangover: 1,
        })
        .unwrap();
        assert_eq!(quiet.push(&tone(1.0, 0)), Vad::Quiet);
        // NaN input is quiet, not a turn
        assert_eq!(quiet.push(&vec![f32::NAN; N]), Vad::Quiet);
        for bad in [
            GateConfig {
                threshold_dbfs: 3.0,
                ..GateConfig::default()
            },
            GateConfig {
                threshold_dbfs: f32::NAN,
                ..GateConfig::default()
            },
            GateConfig {
                onset: 0,
                ..GateConfig::default()
            },
            GateConfig {
                hangover: 0,
                ..GateConfig::default()
            },
        ] {
            assert!(EnergyGate::new(bad).is_err(), "{bad:?}");
        }
    }
}
