//! Teacher-forced logits over a fixed sequence, and how far one model's logits are from
//! another's: how quantization quality is measured (`benches/formats.rs` at real size,
//! `tests/quant_quality.rs` at a size CI affords). Every model sees the same frames (the
//! reference model's greedy frames), so the numbers compare the formats, not the paths their
//! own samples would take.

use super::generate::FrameEngine;
use super::model::Csm;
use super::sampling::SamplingParams;
use crate::{Error, Result};

/// Teacher-forced logits of `frames` audio frames after a prompt.
#[derive(Clone, Debug)]
pub struct Forced {
    /// Codebook-0 logits that predict each frame, `[frames, vocab]`.
    pub codebook0: Vec<f32>,
    /// Depth-decoder logits of codebooks 1.. of each frame, `[frames, num_codebooks - 1, vocab]`.
    pub depth: Vec<f32>,
    pub vocab: usize,
}

/// `frames` frames of greedy generation after `prompt` (text ids), every code drawn among the
/// decodable ids; `[frames, num_codebooks]`. Allocates per call (a measurement helper).
pub fn greedy_frames(csm: &Csm, prompt: &[u32], frames: usize) -> Result<Vec<u32>> {
    let mut e = FrameEngine::new(csm, prompt.len().max(1));
    e.prefill(csm, prompt, &[], None, None)?;
    let limit = csm.decodable_limit() as usize;
    let mut out = Vec::with_capacity(frames * csm.num_codebooks());
    for _ in 0..frames {
        let g = SamplingParams::GREEDY;
        let f = e.next_frame(csm, limit, &g, &g)?.to_vec();
        e.feed_frame(csm, &f)?;
        out.extend(f);
    }
    Ok(out)
}

/// The logits `csm` gives for `codes` (`[frames, num_codebooks]`) after `prompt`, every
/// position fed the given codes (one prefill of the prompt and the frames' placeholders, then
/// one teacher-forced depth pass per frame on the backbone's own hidden state).
pub fn teacher_forced(csm: &Csm, prompt: &[u32], codes: &[u32]) -> Result<Forced> {
    let d = csm.dims();
    let (n, v, h) = (d.num_codebooks, d.audio_vocab, d.backbone.hidden_size);
    if prompt.is_empty() || codes.is_empty() || !codes.len().is_multiple_of(n) {
        return Err(Error::Invalid(format!(
            "teacher forcing needs a prompt and whole frames of {n} codes ({} given)",
            codes.len()
        )));
    }
    if csm.codebooks() != n {
        return Err(Error::Invalid(format!(
            "teacher forcing compares whole frames: the model is set to {} of its {n} codebooks",
            csm.codebooks()
        )));
    }
    let frames = codes.len() / n;
    let mut ids = prompt.to_vec();
    ids.extend(std::iter::repeat_n(d.audio_token_id, frames));
    let mut e = FrameEngine::new(csm, 64);
    let (mut logits, mut hidden) = (Vec::new(), Vec::new());
    e.prefill(csm, &ids, codes, Some(&mut logits), Some(&mut hidden))?;
    // position p - 1 + j (p prompt ids) is the last one before frame j
    let first = prompt.len() - 1;
    let codebook0 = logits[first * v..(first + frames) * v].to_vec();
    let mut depth = Vec::with_capacity(frames * (n - 1) * v);
    for (j, frame) in codes.chunks_exact(n).enumerate() {
        let at = (first + j) * h;
        depth.extend(e.depth_logits(csm, &hidden[at..at + h], frame)?);
    }
    Ok(Forced {
        codebook0,
        depth,
        vocab: v,
    })
}

/// How far a model's logits are from the reference's, over rows of one vocabulary (only the
/// first `limit` ids of each row count: the ids generation may draw).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Agreement {
    pub rows: usize,
    /// Rows whose argmax is the reference's (fraction).
    pub top1: f64,
    /// Mean KL divergence of the model's softmax from the reference's (nats).
    pub kl_mean: f64,
    /// The largest KL divergence of a row (nats).
    pub kl_max: f64,
    /// Mean relative L2 error of a row's logits, `|l - l_ref| / |l_ref|`.
    pub rel_err: f64,
}

fn log_softmax(row: &[f32], out: &mut Vec<f64>) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z = row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln() + m;
    out.clear();
    out.extend(row.iter().map(|&x| x as f64 - z));
}

fn argmax(row: &[f32]) -> usize {
    // first maximum, as the greedy sampler picks
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Compares `other` with `reference`, both `[rows, vocab]` (whole rows of a non-empty
/// vocabulary, the same number of them).
pub fn compare(reference: &[f32], other: &[f32], vocab: usize, limit: usize) -> Result<Agreement> {
    if vocab == 0 || reference.len() != other.len() || !reference.len().is_multiple_of(vocab) {
        return Err(Error::Invalid(format!(
            "logits to compare are not the same whole rows of {vocab} ({} and {} values)",
            reference.len(),
            other.len()
        )));
    }
    let limit = limit.clamp(1, vocab);
    let (mut lr, mut lo) = (Vec::new(), Vec::new());
    let mut a = Agreement::default();
    for (r, o) in reference.chunks_exact(vocab).zip(other.chunks_exact(vocab)) {
        let (r, o) = (&r[..limit], &o[..limit]);
        a.rows += 1;
        if argmax(r) == argmax(o) {
            a.top1 += 1.0;
        }
        log_softmax(r, &mut lr);
        log_softmax(o, &mut lo);
        let kl: f64 = lr.iter().zip(&lo).map(|(p, q)| p.exp() * (p - q)).sum();
        a.kl_mean += kl;
        a.kl_max = a.kl_max.max(kl);
        let diff: f64 = r
            .iter()
            .zip(o)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum();
        let norm: f64 = r.iter().map(|x| (*x as f64).powi(2)).sum();
        a.rel_err += (diff / norm.max(f64::MIN_POSITIVE)).sqrt();
    }
    let rows = a.rows.max(1) as f64;
    a.top1 /= rows;
    a.kl_mean /= rows;
    a.rel_err /= rows;
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_logits_agree_fully_and_a_swapped_maximum_is_seen() {
        let r = [1.0f32, 3.0, 2.0, 0.0, 5.0, 1.0];
        let same = compare(&r, &r, 3, 3).unwrap();
        assert_eq!((same.rows, same.top1, same.rel_err), (2, 1.0, 0.0));
        assert!(same.kl_mean.abs() < 1e-12);
        let o = [1.0f32, 2.0, 3.0, 0.0, 5.0, 1.0];
        let a = compare(&r, &o, 3, 3).unwrap();
        assert_eq!(a.top1, 0.5);
        assert!(a.kl_max > 0.1 && a.kl_mean > 0.0 && a.rel_err > 0.0);
        // ids past the limit do not count
        let o2 = [1.0f32, 3.0, 9.0, 0.0, 5.0, 9.0];
        assert_eq!(compare(&r, &o2, 3, 2).unwrap().top1, 1.0);
        // partial rows, an empty vocabulary and different lengths are errors
        assert!(compare(&r, &o, 4, 4).is_err());
        assert!(compare(&r, &o, 0, 1).is_err());
        assert!(compare(&r, &o[..3], 3, 3).is_err());
    }

    #[test]
    fn kl_matches_a_hand_computed_value() {
        // p = softmax(0, ln 3) = (1/4, 3/4), q = (1/2, 1/2)
        let r = [0.0f32, 3f32.ln()];
        let o = [0.0f32, 0.0];
        let kl = 0.25 * (0.5f64).ln() + 0.75 * (1.5f64).ln();
        assert!((compare(&r, &o, 2, 2).unwrap().kl_mean - kl).abs() < 1e-6);
    }
}
