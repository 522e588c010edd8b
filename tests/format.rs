//! The on-disk format of `edgecsm quantize` outputs: every matrix a frame multiplies by (the
//! codebook heads included) is stored packed in the layout the kernels read, so loading is a
//! memory map, not a copy; and a file written in another format number is refused with an
//! error that says to convert again.

mod csm_common;

use csm_common::*;
use edgecsm::quantize::{self, Options, Policy};
use edgecsm::weights::{FORMAT_VERSION, FORMAT_VERSION_KEY, FORMAT_VERSION_MIN, Weights};
use std::path::Path;

fn convert(src: &Path, out: &Path, mode: Policy) {
    quantize::quantize(
        &Options {
            model: src.to_path_buf(),
            out: out.to_path_buf(),
            policy: mode,
            keep: Vec::new(),
            force: false,
        },
        &mut std::io::sink(),
    )
    .unwrap();
}

#[test]
fn converted_models_map_every_matrix_of_a_frame_including_the_codebook_heads() {
    let src = fixture_root().join("a");
    let tmp = tempfile::tempdir().unwrap();
    for mode in [Policy::F16, Policy::Q8] {
        let out = tmp.path().join(mode.name());
        convert(&src, &out, mode);
        let w = Weights::open(&out).unwrap();
        let info = w
            .packed_info("depth_decoder.codebooks_head.weight")
            .unwrap();
        assert_eq!(info.layout, edgecsm::weights::Layout::Transposed);
        let csm = load(&out);
        for (part, m) in csm.frame_products() {
            assert!(m.is_mapped(), "{mode:?} {part:?} {} is a copy", m.name());
        }
    }
    // an upstream checkpoint's heads are transposed at load (copies)
    let csm = load(&src);
    let heads: Vec<_> = csm
        .frame_products()
        .into_iter()
        .filter(|(p, _)| *p == edgecsm::csm::model::FramePart::DepthHeads)
        .collect();
    assert!(!heads.is_empty() && heads.iter().all(|(_, m)| !m.is_mapped()));
}

/// Rewrites one metadata value of a safetensors file in place (same header length).
fn set_metadata(file: &Path, key: &str, value: &str) {
    let mut bytes = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"][key] = value.into();
    let mut text = serde_json::to_vec(&header).unwrap();
    assert!(text.len() <= n, "the new header must not be longer");
    text.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&text);
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_file_of_another_format_number_is_refused_with_a_way_out() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q8");
    convert(&fixture_root().join("a"), &out, Policy::Q8);
    assert!(Weights::open(&out).is_ok());
    set_metadata(&out.join("model.safetensors"), FORMAT_VERSION_KEY, "1");
    let e = Weights::open(&out).unwrap_err().to_string();
    assert!(
        e.contains("format 1")
            && e.contains(&format!("formats {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"))
            && e.contains("edgecsm quantize"),
        "{e}"
    );
    assert!(edgecsm::csm::Csm::load(&out).is_err());
    // A newer file is refused the same way; the oldest layout still read is accepted.
    let newer = (FORMAT_VERSION + 1).to_string();
    set_metadata(&out.join("model.safetensors"), FORMAT_VERSION_KEY, &newer);
    let e = Weights::open(&out).unwrap_err().to_string();
    assert!(e.contains(&format!("format {newer}")), "{e}");
    let oldest = FORMAT_VERSION_MIN.to_string();
    set_metadata(&out.join("model.safetensors"), FORMAT_VERSION_KEY, &oldest);
    assert!(Weights::open(&out).is_ok());
}

/// Rearranges an F16P matrix `[rows, cols]` stored in `data` in place: element `(r, c)` of the
/// result is element `from(r, c)` of the stored one.
fn rearrange_f16p(
    data: &mut [u8],
    rows: usize,
    cols: usize,
    from: impl Fn(usize, usize) -> (usize, usize),
) {
    use edgecsm::kernels::packed::{float_at, pack_float};
    let stored: Vec<u16> = data
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut out = vec![0u16; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let (sr, sc) = from(r, c);
            out[r * cols + c] = float_at(&stored, cols, sr, sc);
        }
    }
    for (d, v) in data
        .chunks_exact_mut(2)
        .zip(pack_float(&out, rows, cols, 0u16))
    {
        d.copy_from_slice(&v.to_le_bytes());
    }
}

/// A format-4 file stores its conv weights packed in PyTorch's column order ([`Layout::Rows`])
/// and its conv-transposes' rows channel-major ([`Layout::ConvTranspose`]); format 5 stores both
/// taps outer ([`Layout::Conv`], [`Layout::ConvTransposeTaps`]). Rewriting a converted Mimi back into
/// format 4 must still load, detect the old order, and encode the same audio.
#[test]
fn a_format_4_file_with_conv_weights_in_rows_still_codes_the_same() {
    use edgecsm::weights::Layout;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mimi/a");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f16");
    convert(&dir, &out, Policy::F16);
    let pcm: Vec<f32> = (0..3840).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
    let new = edgecsm::mimi::Mimi::load(&out).unwrap();
    let want = new.encode_trace(&pcm, 1).unwrap().seanet_out;
    let codes = new.encode(&pcm, new.num_quantizers()).unwrap();
    let want_pcm = new.decode(&codes).unwrap();

    let file = out.join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let packed = header["__metadata__"]["edgecsm_packed"].as_str().unwrap();
    let mut packed: serde_json::Value = serde_json::from_str(packed).unwrap();
    let (mut convs, mut transposes) = (0, 0);
    for (name, info) in packed.as_object_mut().unwrap() {
        let layout: Layout = serde_json::from_value(info["layout"].clone()).unwrap();
        if !matches!(layout, Layout::Conv | Layout::ConvTransposeTaps) {
            continue;
        }
        assert_eq!(info["format"], "f16p", "{name}");
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone()).unwrap();
        let offs: Vec<usize> =
            serde_json::from_value(header[name]["data_offsets"].clone()).unwrap();
        let data = &mut bytes[8 + n + offs[0]..8 + n + offs[1]];
        if layout == Layout::Conv {
            // column i * k + j from the stored j * in + i
            let (rows, c_in, k) = (shape[0], shape[1], shape[2]);
            rearrange_f16p(data, rows, c_in * k, |r, c| (r, (c % k) * c_in + c / k));
            info["layout"] = serde_json::to_value(Layout::Rows).unwrap();
            convs += 1;
        } else {
            // row o * k + j from the stored j * out + o
            let (c_in, c_out, k) = (shape[0], shape[1], shape[2]);
            rearrange_f16p(data, c_out * k, c_in, |r, c| ((r % k) * c_out + r / k, c));
            info["layout"] = serde_json::to_value(Layout::ConvTranspose).unwrap();
            transposes += 1;
        }
    }
    assert!(
        convs > 0 && transposes > 0,
        "the converted Mimi has conv and conv-transpose weights stored taps outer"
    );
    header["__metadata__"]["edgecsm_packed"] = packed.to_string().into();
    header["__metadata__"][FORMAT_VERSION_KEY] = "4".into();
    let mut text = serde_json::to_vec(&header).unwrap();
    assert!(text.len() <= n, "the new header must not be longer");
    text.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&text);
    std::fs::write(&file, bytes).unwrap();

    let old = edgecsm::mimi::Mimi::load(&out).unwrap();
    let got = old.encode_trace(&pcm, 1).unwrap().seanet_out;
    let got_pcm = old.decode(&codes).unwrap();
    for (what, got, want) in [("encoder", &got, &want), ("decoder", &got_pcm, &want_pcm)] {
        let peak = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(
            got.len() == want.len() && err <= 1e-5 * peak,
            "{what}: max error {err} against a peak of {peak}"
        );
    }
}
