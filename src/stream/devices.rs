//! Lists the PCMs that ALSA's configuration knows (the device name hints API).

use crate::{Error, Result};
use alsa::Direction;
use alsa::device_name::HintIter;

/// One PCM hint: its name (usable as `--capture`/`--playback`), description and directions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcmHint {
    pub name: String,
    /// ALSA's description, lines joined with " - ".
    pub description: String,
    pub capture: bool,
    pub playback: bool,
}

/// All PCM hints, in ALSA's order.
pub fn list_pcms() -> Result<Vec<PcmHint>> {
    let hints = HintIter::new_str(None, "pcm")
        .map_err(|e| Error::Invalid(format!("cannot list ALSA PCMs: {e}")))?;
    Ok(hints
        .filter_map(|h| {
            let name = h.name?;
            let description = h
                .desc
                .unwrap_or_default()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" - ");
            // no direction in the hint means both
            let (capture, playback) = match h.direction {
                Some(Direction::Capture) => (true, false),
                Some(Direction::Playback) => (false, true),
                None => (true, true),
            };
            Some(PcmHint {
                name,
                description,
                capture,
                playback,
            })
        })
        .collect())
}
