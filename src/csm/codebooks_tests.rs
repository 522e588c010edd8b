//! Generation with fewer codebooks than the model predicts ([`Csm::set_codebooks`]), on random
//! tiny models of 6 codebooks: frame width, depth-decoder steps, which weights a frame can
//! reach, the end-of-speech rule over the generated codes, and the default being unchanged.

use super::tests::{AUDIO, Tensors, V, tiny_with};
use super::*;
use crate::csm::generate::FrameKind;
use crate::csm::llama::tests::rand_vec;

/// Codebooks of the test models.
const M: usize = 6;
const DEPTH_HIDDEN: usize = 16;

/// A prompt of text ids and `frames` audio frames of `n` codes (no audio-eos placeholder,
/// which embeds all the model's codebooks); frame `f`'s codes are the first `n` of the same
/// `M`-code frame for every `n`.
fn prompt(frames: usize, n: usize) -> Segment {
    let mut ids = vec![1, 2, 3];
    ids.extend(std::iter::repeat_n(AUDIO, frames));
    ids.push(4);
    let codes = (0..frames)
        .flat_map(|f| (0..n).map(move |q| ((f * M + q) as u32 * 7 + 3) % (V as u32 - 1) + 1))
        .collect();
    Segment::new("p", ids, codes)
}

/// Generates up to `max` frames after `prompt` with `opts`: the frames (each as handed out),
/// the outcome and the profile.
fn generate(
    csm: &Arc<Csm>,
    prompt: Segment,
    opts: &GenerateOptions,
) -> (Vec<Vec<u32>>, Generated, crate::csm::FrameProfile) {
    let mut conv = Conversation::new(csm.clone());
    let mut frames = Vec::new();
    let g = conv
        .generate(prompt, opts, |f| {
            frames.push(f.to_vec());
            ControlFlow::Continue(())
        })
        .unwrap();
    (frames, g, *conv.profile())
}

fn with_codebooks(mut csm: Csm, n: Option<usize>) -> Arc<Csm> {
    if let Some(n) = n {
        csm.set_codebooks(n).unwrap();
    }
    Arc::new(csm)
}

fn sampled(frames: usize) -> GenerateOptions {
    let mut o = GenerateOptions::sampled(frames, 99);
    o.invalid_codes = InvalidCodes::Keep;
    o
}

#[test]
fn all_codebooks_is_the_default_bit_for_bit() {
    let (a, _d1) = tiny_with(60, M, |_| {});
    let (b, _d2) = tiny_with(60, M, |_| {});
    let (default, all) = (with_codebooks(a, None), with_codebooks(b, Some(M)));
    assert_eq!(default.codebooks(), M);
    let (fa, ga, pa) = generate(&default, prompt(4, M), &sampled(10));
    let (fb, gb, pb) = generate(&all, prompt(4, M), &sampled(10));
    assert_eq!((fa, ga), (fb, gb));
    assert!(pa.frames >= 1);
    assert_eq!(pa.depth_steps, pa.frames * (M as u64 - 1));
    assert_eq!(pb.depth_steps, pa.depth_steps);
    let logits = |csm: &Arc<Csm>| {
        Conversation::new(csm.clone())
            .add_segment_with_logits(prompt(4, M))
            .unwrap()
            .1
    };
    assert_eq!(logits(&default), logits(&all));
    assert_eq!(default.frame_bytes(), all.frame_bytes());
}

#[test]
fn fewer_codebooks_shorten_the_frames_and_the_depth_decoder() {
    let full = tiny_with(60, M, |_| {}).0.frame_bytes();
    for n in [1, 2, 4, M] {
        let (csm, _dir) = tiny_with(60, M, |_| {});
        let csm = with_codebooks(csm, Some(n));
        let (frames, g, p) = generate(&csm, prompt(3, n), &sampled(8));
        assert_eq!(frames.len(), g.frames);
        assert!(frames.iter().all(|f| f.len() == n), "{n}: {frames:?}");
        assert!(p.frames >= 1);
        // N-1 depth-decoder steps per frame produced (the end-of-speech frame included)
        assert_eq!(p.depth_steps, p.frames * (n as u64 - 1), "{n}");
        // the committed turn holds n codes per frame
        let bytes = csm.frame_bytes();
        assert_eq!(bytes, csm.frame_bytes_with(n));
        assert_eq!(
            (bytes.backbone, bytes.head0),
            (full.backbone, full.head0),
            "{n}"
        );
        assert_eq!(bytes.depth * (M - 1), full.depth * (n - 1), "{n}");
        assert_eq!(
            bytes.depth_heads * (M - 1),
            full.depth_heads * (n - 1),
            "{n}"
        );
        let depth_products = csm
            .frame_products()
            .iter()
            .filter(|(p, _)| *p == crate::csm::model::FramePart::DepthHeads)
            .count();
        assert_eq!(depth_products, n - 1);
    }
}

/// The tensors a frame of 3 codebooks never reads, redrawn: the audio-embedding rows of
/// codebooks 3.. (every code, the end-of-speech code 0 included) and the depth heads of
/// codebooks 3...
fn redraw_past_three(t: &mut Tensors) {
    let (shape, emb) = t
        .get_mut("depth_decoder.model.embed_tokens.weight")
        .unwrap();
    let h = shape[1];
    let new = rand_vec(emb.len(), 77, 1.0);
    emb[3 * V * h..].copy_from_slice(&new[3 * V * h..]);
    let (_, heads) = t.get_mut("depth_decoder.codebooks_head.weight").unwrap();
    let per = DEPTH_HIDDEN * V;
    let new = rand_vec(heads.len(), 78, 1.0);
    heads[2 * per..].copy_from_slice(&new[2 * per..]);
}

#[test]
fn codes_past_n_never_reach_the_model() {
    // two models equal but for what codebooks 3.. would read
    let run = |n: usize, edit: bool| {
        let (csm, _dir) = tiny_with(60, M, |t| {
            if edit {
                redraw_past_three(t)
            }
        });
        let csm = with_codebooks(csm, Some(n));
        let (frames, g, _) = generate(&csm, prompt(4, n), &sampled(12));
        let logits = Conversation::new(csm.clone())
            .add_segment_with_logits(prompt(4, n))
            .unwrap()
            .1;
        (frames, g.frames, logits)
    };
    let (a, b) = (run(3, false), run(3, true));
    assert!(a.1 >= 3, "only {} frames", a.1);
    assert_eq!(a, b, "with 3 codebooks a frame reached codebooks past 3");
    // the same change is seen when those codebooks are in use: the test can fail
    let (a, b) = (run(M, false), run(M, true));
    assert_ne!(
        a.2, b.2,
        "the redrawn rows do not change the prompt's logits"
    );
    assert_ne!(a.0, b.0, "the redrawn tensors do not change generation");
}

/// A model whose every code is 0 (end of speech) except codebook 2's, which is 3 or 4: the
/// codebook-0 head and the depth heads but codebook 2's are zero (greedy picks the first of
/// equal logits), and the depth decoder's output is its channel 0 alone, which codebook 2's
/// head maps to +x for code 3 and -x for code 4.
fn codebook_two_speaks(t: &mut Tensors) {
    let (_, head0) = t.get_mut("lm_head.weight").unwrap();
    head0.fill(0.0);
    let (_, norm) = t.get_mut("depth_decoder.model.norm.weight").unwrap();
    norm.fill(0.0);
    norm[0] = 1.0;
    let (_, heads) = t.get_mut("depth_decoder.codebooks_head.weight").unwrap();
    heads.fill(0.0);
    // head 1 gives codebook 2: [hidden, vocab], entry (channel 0, code c)
    let head = 1;
    heads[head * DEPTH_HIDDEN * V + 3] = 1.0;
    heads[head * DEPTH_HIDDEN * V + 4] = -1.0;
}

#[test]
fn end_of_speech_is_judged_on_the_generated_codes() {
    for (n, ends) in [(1, true), (2, true), (3, true), (4, false), (M, false)] {
        let (csm, _dir) = tiny_with(60, M, codebook_two_speaks);
        let csm = with_codebooks(csm, Some(n));
        let mut opts = GenerateOptions::greedy(4);
        opts.invalid_codes = InvalidCodes::Keep;
        let (frames, g, p) = generate(&csm, prompt(2, n), &opts);
        if ends {
            // codes 0..n-1 are all 0 (code 0 alone for one codebook): not kept
            assert_eq!((g.frames, g.stop), (0, StopReason::EndOfSpeech), "{n}");
            assert_eq!(p.frames, 1);
        } else {
            assert_eq!((g.frames, g.stop), (4, StopReason::MaxFrames), "{n}");
            for f in &frames {
                assert!(f[2] == 3 || f[2] == 4, "{n}: {f:?}");
                assert!(f.iter().enumerate().all(|(q, &c)| q == 2 || c == 0));
            }
        }
    }
}

#[test]
fn the_end_of_speech_rule_for_each_frame_width() {
    let (csm, _dir) = tiny_with(40, M, |_| {});
    let kind = |f: &[u32]| FrameEngine::classify(&csm, f);
    let eos = FrameKind::EndOfSpeech;
    // all but the last code are 0, whatever the last
    assert_eq!(kind(&[0, 0, 0, 0, 0, 7]), eos);
    assert_eq!(kind(&[0, 0, 0, 0, 0, 0]), eos);
    assert_eq!(kind(&[0, 0, 5]), eos);
    assert_eq!(kind(&[0, 9]), eos);
    assert_eq!(kind(&[0, 0, 0, 0, 1, 0]), FrameKind::Speech);
    assert_eq!(kind(&[0, 5, 0]), FrameKind::Speech);
    assert_eq!(kind(&[3, 0]), FrameKind::Speech);
    // one codebook: its code decides
    assert_eq!(kind(&[0]), eos);
    assert_eq!(kind(&[5]), FrameKind::Speech);
}

#[test]
fn a_bad_codebook_count_or_frame_width_is_an_error() {
    let (mut csm, _dir) = tiny_with(40, M, |_| {});
    for bad in [0, M + 1] {
        let e = csm.set_codebooks(bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{bad} codebooks")) && e.contains("1 to 6"),
            "{e}"
        );
    }
    assert_eq!(csm.codebooks(), M);
    csm.set_codebooks(3).unwrap();
    let csm = Arc::new(csm);
    let mut conv = Conversation::new(csm.clone());
    // frames of all the model's codebooks are not frames of the 3 in use
    let e = conv.add_segment(prompt(2, M)).unwrap_err().to_string();
    assert!(e.contains("frames of 3"), "{e}");
    conv.add_segment(prompt(2, 3)).unwrap();
}
