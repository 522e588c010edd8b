//! The boards' recorded memory bandwidth (`cross/boards.json`) and the frame-time projection
//! made from it: a frame that reads `bytes` of weights takes at least `bytes / stream_gbs` on a
//! board whose caches are far smaller than the weights (every target board: 1-4 MB of L2/L3).
//! A projection is a floor from bytes, not a measurement: no Pi speed comes from an x86 run.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Board {
    pub name: String,
    pub cpu: String,
    pub kernels: String,
    pub dram: String,
    pub copy_1t_gbs: f64,
    pub stream_gbs: f64,
    pub basis: String,
    /// int8 multiply-adds per second of all cores, G (an issue-rate estimate).
    pub int8_gmacs: f64,
    pub int8_basis: String,
    pub sources: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct File {
    #[allow(dead_code)]
    about: String,
    boards: Vec<Board>,
}

/// The boards of `cross/boards.json`.
pub fn load() -> Vec<Board> {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/cross/boards.json");
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p}: {e}"));
    let f: File = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"));
    f.boards
}

/// Projected time (seconds) of work that streams `bytes` from DRAM on `b`.
pub fn seconds(b: &Board, bytes: f64) -> f64 {
    bytes / (b.stream_gbs * 1e9)
}

/// One line per board: projected time per frame and real-time factor for `bytes` per frame of
/// `frame_secs` of audio.
pub fn print_projection(what: &str, bytes: f64, frame_secs: f64) {
    for b in load() {
        let t = seconds(&b, bytes);
        println!(
            "  {what:<28} {:<18} {:>7.1} ms/frame  RTF {:>5.2}  ({:.1} GB/s{})",
            b.name,
            t * 1e3,
            t / frame_secs,
            b.stream_gbs,
            if b.basis.starts_with("ESTIMATE") {
                ", estimated"
            } else {
                ""
            }
        );
    }
}

/// One line per board: the time to first frame projected as the prompt's `prefill_macs` at the
/// board's int8 peak (a prefill is compute-bound) plus one frame's `frame_bytes` at its
/// streaming bandwidth: a floor, not a measurement.
pub fn print_first_frame(prefill_macs: f64, frame_bytes: f64) {
    for b in load() {
        let prefill = prefill_macs / (b.int8_gmacs * 1e9);
        let frame = seconds(&b, frame_bytes);
        println!(
            "  {:<18} {:>7.0} ms (prefill {:.0} ms at {:.0} G int8 MAC/s, estimated peak; first \
             frame {:.0} ms)",
            b.name,
            (prefill + frame) * 1e3,
            prefill * 1e3,
            b.int8_gmacs,
            frame * 1e3
        );
    }
}
