//! Parity with the reference (transformers `CsmForConditionalGeneration`) on the tiny random
//! fixtures of `tools/make_csm_fixtures.py`: the backbone's codebook-0 logits at every context
//! position, the depth decoder's teacher-forced logits, and a greedy generation, for f32
//! weights; then the same measures for the `edgecsm quantize` outputs (f16, q8, q8 with the
//! depth decoder kept at f16), printed to decide the default quantization policy.

mod csm_common;

use csm_common::*;
use edgecsm::csm::{Conversation, Csm, GenerateOptions, InvalidCodes, Segment, StopReason};
use edgecsm::quantize::{self, Options, Policy};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

struct Fixture {
    ids: Vec<u32>,
    codes: Vec<u32>,
    logits: Vec<f32>,
    tf_hidden: Vec<f32>,
    tf_logits: Vec<f32>,
    gen_codes: Vec<u32>,
    gen_hidden: Vec<f32>,
    gen_depth: Vec<f32>,
}

fn fixture(dir: &Path) -> Fixture {
    Fixture {
        ids: u32s(&dir.join("context_input_ids.npy")).0,
        codes: u32s(&dir.join("context_audio_codes.npy")).0,
        logits: f32s(&dir.join("backbone_logits.npy")).0,
        tf_hidden: f32s(&dir.join("depth_tf_hidden.npy")).0,
        tf_logits: f32s(&dir.join("depth_tf_logits.npy")).0,
        gen_codes: u32s(&dir.join("gen_codes.npy")).0,
        gen_hidden: f32s(&dir.join("gen_backbone_hidden.npy")).0,
        gen_depth: f32s(&dir.join("gen_depth_logits.npy")).0,
    }
}

/// Errors of one model against the reference.
struct Measures {
    backbone: f32,
    depth_tf: f32,
    depth_gen: f32,
    gen_codes: Vec<u32>,
    stop: StopReason,
}

fn measure(csm: Arc<Csm>, f: &Fixture) -> Measures {
    let n = csm.num_codebooks();
    let h = csm.dims().backbone.hidden_size;
    let mut conv = Conversation::with_prefill_chunk(csm.clone(), 7);
    let seg = Segment::new("context", f.ids.clone(), f.codes.clone());
    let (_, logits) = conv.hidden_and_logits(&seg).unwrap();
    let backbone = max_err(&logits, &f.logits);
    let depth_all = |hidden: &[f32], codes: &[u32], conv: &mut Conversation| -> Vec<f32> {
        hidden
            .chunks_exact(h)
            .zip(codes.chunks_exact(n))
            .flat_map(|(hs, fr)| conv.depth_logits(hs, fr).unwrap())
            .collect()
    };
    let depth_tf = max_err(&depth_all(&f.tf_hidden, &f.codes, &mut conv), &f.tf_logits);
    let depth_gen = max_err(
        &depth_all(&f.gen_hidden, &f.gen_codes, &mut conv),
        &f.gen_depth,
    );
    let frames = f.gen_codes.len() / n;
    let mut opts = GenerateOptions::greedy(frames);
    opts.invalid_codes = InvalidCodes::Keep;
    let mut gen_codes = Vec::new();
    let g = conv
        .generate(seg, &opts, |fr| {
            gen_codes.extend_from_slice(fr);
            ControlFlow::Continue(())
        })
        .unwrap();
    Measures {
        backbone,
        depth_tf,
        depth_gen,
        gen_codes,
        stop: g.stop,
    }
}

#[test]
fn f32_matches_the_reference() {
    let names = fixture_names();
    assert!(
        !names.is_empty(),
        "no CSM fixtures under {}",
        fixture_root().display()
    );
    for name in names {
        let dir = fixture_root().join(&name);
        let f = fixture(&dir);
        let m = measure(Arc::new(load(&dir)), &f);
        println!(
            "{name} f32: backbone logits max err {:.2e}, depth teacher-forced {:.2e} \
             (context frames) {:.2e} (generated frames)",
            m.backbone, m.depth_tf, m.depth_gen
        );
        assert!(
            m.backbone < 1e-4,
            "{name}: backbone logits off by {}",
            m.backbone
        );
        assert!(
            m.depth_tf < 1e-4,
            "{name}: depth logits off by {}",
            m.depth_tf
        );
        assert!(
            m.depth_gen < 1e-4,
            "{name}: depth logits off by {}",
            m.depth_gen
        );
        assert_eq!(m.gen_codes, f.gen_codes, "{name}: greedy codes differ");
        assert_eq!(m.stop, StopReason::MaxFrames);
    }
}

#[test]
fn quantized_agreement_is_reported() {
    for name in fixture_names() {
        let dir = fixture_root().join(&name);
        let f = fixture(&dir);
        let variants: [(&str, Policy, &[&str]); 4] = [
            ("f16", Policy::F16, &[]),
            ("q8", Policy::Q8, &[]),
            ("q8 --keep depth_decoder.", Policy::Q8, &["depth_decoder."]),
            ("q8 --keep embed", Policy::Q8, &["embed"]),
        ];
        for (label, mode, keep) in variants {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("q");
            quantize::quantize(
                &Options {
                    model: dir.clone(),
                    out: out.clone(),
                    policy: mode,
                    keep: keep.iter().map(|s| s.to_string()).collect(),
                    force: false,
                },
                &mut std::io::sink(),
            )
            .unwrap();
            let m = measure(Arc::new(load(&out)), &f);
            let agree = m
                .gen_codes
                .iter()
                .zip(&f.gen_codes)
                .filter(|(a, b)| a == b)
                .count();
            let n = load(&out).num_codebooks();
            let frames_equal = m
                .gen_codes
                .chunks(n)
                .zip(f.gen_codes.chunks(n))
                .take_while(|(a, b)| a == b)
                .count();
            println!(
                "{name} {label}: backbone logits max err {:.2e}, depth teacher-forced {:.2e} / \
                 {:.2e}, greedy codes {agree}/{} equal, first {frames_equal} frames identical",
                m.backbone,
                m.depth_tf,
                m.depth_gen,
                f.gen_codes.len()
            );
            // a loose sanity bound: quantization noise, not a broken load
            assert!(
                m.backbone.is_finite() && m.backbone < 5.0,
                "{name} {label}: {}",
                m.backbone
            );
        }
    }
}

#[test]
fn loading_checks_every_shape_and_names_the_tensor() {
    use edgecsm::csm::{CsmConfig, CsmDims};
    use edgecsm::weights::Weights;
    let dir = fixture_root().join("a");
    let cfg = CsmConfig::load(dir.join("config.json")).unwrap();
    let w = Weights::open(&dir).unwrap();
    let good = CsmDims::from_config(&cfg).unwrap();
    type Edit = fn(&mut CsmDims);
    let cases: [(&str, Edit); 4] = [
        ("embed_text_tokens.weight", |d| d.text_vocab += 1),
        ("backbone_model.layers.0.mlp.gate_proj.weight", |d| {
            d.backbone.intermediate_size += 1
        }),
        (
            "depth_decoder.model.layers.0.self_attn.k_proj.weight",
            |d| d.depth.num_kv_heads = d.depth.num_heads,
        ),
        ("depth_decoder.model.embed_tokens.weight", |d| {
            d.audio_vocab += 1
        }),
    ];
    for (tensor, edit) in cases {
        let mut d = good.clone();
        edit(&mut d);
        let e = Csm::from_weights(d, &w, None).unwrap_err().to_string();
        assert!(
            e.contains(tensor),
            "expected an error naming {tensor}, got: {e}"
        );
    }
    assert!(Csm::from_weights(good, &w, Some(cfg.codec.clone())).is_ok());
}

#[test]
fn bundled_tiny_model_generates_decodable_frames() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/csm-tiny");
    let csm = Arc::new(load(&dir));
    let ids = u32s(&fixture_root().join("a/context_input_ids.npy")).0;
    let codes = u32s(&fixture_root().join("a/context_audio_codes.npy")).0;
    let mut conv = Conversation::new(csm.clone());
    let mut frames = Vec::new();
    let g = conv
        .generate(
            Segment::new("ctx", ids, codes),
            &GenerateOptions::sampled(4, 1),
            |f| {
                frames.extend_from_slice(f);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert!(g.frames >= 1, "{:?}", g.stop);
    assert_eq!(frames.len(), g.frames * csm.num_codebooks());
    assert!(frames.iter().all(|&c| c < csm.decodable_limit()));
    let pcm = csm.decode_frames(&frames).unwrap();
    let fs = csm.codec().unwrap().frame_size();
    assert_eq!(pcm.len(), g.frames * fs);
    assert!(pcm.iter().all(|v| v.is_finite()));
}
