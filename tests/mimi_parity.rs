//! Parity with the reference (transformers' MimiModel) on the committed tiny fixtures: codes,
//! every intermediate tensor, decoded audio; and the effect of F16 / Q8 weights (printed).

mod mimi_common;

use edgecsm::mimi::Mimi;
use edgecsm::quantize::{Options, Policy, quantize};
use mimi_common::*;
use std::path::Path;

/// Max abs error of `got` against `want`, asserted within `rel` of `want`'s peak.
fn check_close(what: &str, got: &[f32], want: &[f32], rel: f32) -> f32 {
    let err = max_err(got, want);
    let peak = max_abs(want);
    println!(
        "  {what}: max err {err:.3e} (peak {peak:.3e}, relative {:.3e})",
        err / peak
    );
    assert!(
        err <= rel * peak,
        "{what}: max err {err} > {rel} x peak {peak}"
    );
    err / peak
}

fn check_fixture(name: &str) {
    let dir = fixture_dir(name);
    let mimi = Mimi::load(&dir).unwrap();
    let nq = mimi.num_quantizers();
    for input in inputs(&dir) {
        println!("fixture {name}/{input}:");
        let (pcm, _) = f32s(&dir, &format!("{input}.input.npy"));
        let t = mimi.encode_trace(&pcm, nq).unwrap();
        let (s, sh) = f32s(&dir, &format!("{input}.seanet_out.npy"));
        check_close("seanet_out", &t.seanet_out, &transpose(&s, &sh), 1e-4);
        let (s, _) = f32s(&dir, &format!("{input}.encoder_transformer_out.npy"));
        check_close("encoder_transformer_out", &t.transformer_out, &s, 1e-4);
        let (s, sh) = f32s(&dir, &format!("{input}.latents.npy"));
        check_close("latents", &t.latents, &transpose(&s, &sh), 1e-4);

        let want = codes(&dir, &format!("{input}.codes.npy"));
        let (margins, _) = f32s(&dir, &format!("{input}.margins.npy"));
        assert_eq!(t.codes.len(), want.len());
        let frames = want[0].len();
        let mut mismatches = 0;
        for (q, (g, w)) in t.codes.iter().zip(&want).enumerate() {
            assert_eq!(g.len(), frames);
            for f in 0..frames {
                if g[f] != w[f] {
                    mismatches += 1;
                    let m = margins[q * frames + f];
                    assert!(
                        m < 1e-3,
                        "code [{q}, {f}]: {} vs {} with margin {m}",
                        g[f],
                        w[f]
                    );
                }
            }
        }
        println!("  codes: {} of {} differ", mismatches, want.len() * frames);

        let d = mimi.decode_trace(&want).unwrap();
        let (s, sh) = f32s(&dir, &format!("{input}.quantized.npy"));
        check_close("quantized", &d.quantized, &transpose(&s, &sh), 1e-4);
        let (s, sh) = f32s(&dir, &format!("{input}.upsampled.npy"));
        check_close("upsampled", &d.upsampled, &transpose(&s, &sh), 1e-4);
        let (s, _) = f32s(&dir, &format!("{input}.decoder_transformer_out.npy"));
        check_close("decoder_transformer_out", &d.transformer_out, &s, 1e-4);
        let (s, _) = f32s(&dir, &format!("{input}.decoded.npy"));
        assert_eq!(d.pcm.len(), frames * mimi.frame_size());
        check_close("decoded", &d.pcm, &s, 1e-4);
    }
}

fn check_random_decode(name: &str) {
    let dir = fixture_dir(name);
    let mimi = Mimi::load(&dir).unwrap();
    println!("fixture {name}/random:");
    let c = codes(&dir, "random.codes.npy");
    let d = mimi.decode_trace(&c).unwrap();
    let (s, sh) = f32s(&dir, "random.quantized.npy");
    check_close("quantized", &d.quantized, &transpose(&s, &sh), 1e-4);
    let (s, _) = f32s(&dir, "random.decoded.npy");
    check_close("decoded", &d.pcm, &s, 1e-4);
    let k = mimi.num_semantic_quantizers() + 1;
    let first: Vec<Vec<u32>> = c[..k].iter().map(|r| r[..6].to_vec()).collect();
    let (s, _) = f32s(&dir, &format!("random.decoded_first{k}.npy"));
    check_close(
        &format!("decoded_first{k}"),
        &mimi.decode(&first).unwrap(),
        &s,
        1e-4,
    );
}

#[test]
fn fixture_a_matches_reference() {
    check_fixture("a");
    check_random_decode("a");
}

#[test]
fn fixture_b_matches_reference() {
    check_fixture("b");
    check_random_decode("b");
}

/// Encodes and decodes every input with converted weights; prints the decoded-audio SNR
/// against the reference decode of the reference codes, and the code agreement.
fn quantized_report(name: &str, mode: Policy) {
    let dir = fixture_dir(name);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    quantize(
        &Options {
            model: dir.clone(),
            out: out.clone(),
            policy: mode,
            keep: vec![],
            force: false,
        },
        &mut std::io::sink(),
    )
    .unwrap();
    let mimi = Mimi::load(&out).unwrap();
    report(name, mode, &dir, &mimi);
}

fn report(name: &str, mode: Policy, dir: &Path, mimi: &Mimi) {
    let nq = mimi.num_quantizers();
    for input in inputs(dir) {
        let (pcm, _) = f32s(dir, &format!("{input}.input.npy"));
        let want = codes(dir, &format!("{input}.codes.npy"));
        let got = mimi.encode(&pcm, nq).unwrap();
        let total = want.len() * want[0].len();
        let same: usize = got
            .iter()
            .zip(&want)
            .map(|(g, w)| g.iter().zip(w).filter(|(a, b)| a == b).count())
            .sum();
        let sem_same = got[0].iter().zip(&want[0]).filter(|(a, b)| a == b).count();
        let (dec, _) = f32s(dir, &format!("{input}.decoded.npy"));
        let pcm_q = mimi.decode(&want).unwrap();
        let snr = snr_db(&dec, &pcm_q);
        println!(
            "{} {name}/{input}: codes agree {same}/{total} ({:.1}%), semantic {sem_same}/{}, \
             decode SNR {snr:.1} dB",
            mode.name(),
            100.0 * same as f64 / total as f64,
            want[0].len()
        );
        assert!(
            snr > 10.0,
            "{} {name}/{input}: decode SNR {snr} dB",
            mode.name()
        );
        assert!(
            same * 4 >= total,
            "{} {name}/{input}: only {same}/{total} codes agree",
            mode.name()
        );
    }
}

#[test]
fn f16_and_q8_weights_report_snr_and_code_agreement() {
    for name in ["a", "b"] {
        for mode in [Policy::F16, Policy::Q8] {
            quantized_report(name, mode);
        }
    }
}

#[test]
fn loads_from_a_prefixed_checkpoint_and_names_bad_tensors() {
    use edgecsm::mimi::MimiConfig;
    use edgecsm::weights::Weights;
    use safetensors::tensor::{Dtype, TensorView, serialize_to_file};
    let dir = fixture_dir("a");
    // a CSM-style file: every codec tensor under `codec_model.`, plus an unrelated one
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (format!("codec_model.{n}"), v))
        .collect();
    let other = [0u8; 8];
    views.push((
        "backbone.norm.weight".into(),
        TensorView::new(Dtype::F32, vec![2], &other).unwrap(),
    ));
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("model.safetensors");
    serialize_to_file(views, None, &file).unwrap();
    let cfg = MimiConfig::load(dir.join("config.json")).unwrap();
    let w = Weights::open(&file).unwrap().with_prefix("codec_model.");
    let nested = Mimi::from_weights(cfg.clone(), &w).unwrap();
    let plain = Mimi::load(&dir).unwrap();
    let (pcm, _) = f32s(&dir, "chirp.input.npy");
    let c = nested.encode(&pcm, 4).unwrap();
    assert_eq!(c, plain.encode(&pcm, 4).unwrap());
    assert_eq!(nested.decode(&c).unwrap(), plain.decode(&c).unwrap());

    // the wrong config for these weights: the error names the first tensor that disagrees
    let cfg_b = MimiConfig::load(fixture_dir("b").join("config.json")).unwrap();
    let e = Mimi::from_weights(cfg_b, &Weights::open(&dir).unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("encoder.layers.0.conv.weight"), "{e}");
    // a missing tensor is named with its prefix
    let e = Mimi::from_weights(
        cfg,
        &Weights::open(&dir).unwrap().with_prefix("codec_model."),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("codec_model.encoder.layers.0.conv.weight"),
        "{e}"
    );
}

#[test]
fn bad_requests_are_errors() {
    use edgecsm::mimi::{MimiDecoderStream, MimiEncoderStream};
    use std::sync::Arc;
    let mimi = Arc::new(Mimi::load(fixture_dir("b")).unwrap());
    let pcm = vec![0.1f32; 4000];
    // b has 2 semantic + 6 acoustic codebooks of 16 entries
    assert!(mimi.encode(&pcm, 1).is_err());
    assert!(mimi.encode(&pcm, 9).is_err());
    assert!(mimi.encode(&[], 8).is_err());
    assert_eq!(mimi.encode(&pcm, 2).unwrap().len(), 2);
    assert!(mimi.decode(&[vec![16u32]]).is_err());
    assert!(mimi.decode(&vec![vec![0u32]; 9]).is_err());
    assert!(mimi.decode(&[vec![0u32, 1], vec![0u32]]).is_err());
    let e = mimi.decode(&[vec![3u32, 99]]).unwrap_err().to_string();
    assert!(e.contains("99") && e.contains("frame 1"), "{e}");
    let mut enc = MimiEncoderStream::new(mimi.clone(), 8).unwrap();
    let mut codes = vec![0u32; 8];
    assert!(enc.encode_frame(&pcm[..100], &mut codes).is_err());
    assert!(enc.encode_frame(&pcm[..1920], &mut codes[..3]).is_err());
    assert!(MimiEncoderStream::new(mimi.clone(), 1).is_err());
    let mut dec = MimiDecoderStream::new(mimi.clone()).unwrap();
    let mut out = vec![0f32; 1920];
    assert!(dec.decode_frame(&[16], &mut out).is_err());
    assert!(dec.decode_frame(&[], &mut out).is_err());
    assert!(dec.decode_frame(&[1], &mut out[..10]).is_err());
    dec.decode_frame(&[1, 2, 3], &mut out).unwrap();
}
