//! The safetensors loader: single files and sharded directories, zero-copy views, conversions,
//! Q8 tensors, and a clear error (never a panic) for every kind of bad file or bad tensor.

use edgecsm::Error;
use edgecsm::kernels::Mat;
use edgecsm::kernels::matmul::Format;
use edgecsm::weights::{TensorFormat, Weights};
use half::{bf16, f16};
use serde_json::{Value, json};
use std::path::Path;

/// One tensor for [`write_st`]: name, dtype string, shape, raw bytes.
struct T {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn t(name: &str, dtype: &'static str, shape: &[usize], data: Vec<u8>) -> T {
    T {
        name: name.into(),
        dtype,
        shape: shape.to_vec(),
        data,
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn f16s(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect()
}
fn bf16s(v: &[f32]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
        .collect()
}
fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (i as f32 - n as f32 / 3.0) * scale)
        .collect()
}

/// Writes a safetensors file with the tensors in the given order, the header padded so that
/// the data section starts at a file offset congruent to `data_mod8` modulo 8.
fn write_st(path: &Path, tensors: &[T], meta: Option<Value>, data_mod8: usize) {
    let mut header = serde_json::Map::new();
    if let Some(m) = meta {
        header.insert("__metadata__".into(), m);
    }
    let mut off = 0;
    for x in tensors {
        header.insert(
            x.name.clone(),
            json!({"dtype": x.dtype, "shape": x.shape, "data_offsets": [off, off + x.data.len()]}),
        );
        off += x.data.len();
    }
    let mut h = serde_json::to_string(&Value::Object(header))
        .unwrap()
        .into_bytes();
    while (8 + h.len()) % 8 != data_mod8 {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    for x in tensors {
        bytes.extend_from_slice(&x.data);
    }
    std::fs::write(path, bytes).unwrap();
}

fn mat_f32_values(m: Mat) -> Vec<f32> {
    let mut out = vec![0f32; m.rows() * m.cols()];
    for r in 0..m.rows() {
        m.row_into(r, &mut out[r * m.cols()..(r + 1) * m.cols()]);
    }
    out
}

/// The address range of a mapped file, to check that a view points into it.
fn inside(w: &Weights, p: *const u8) -> bool {
    w.shards().iter().any(|s| {
        let b = s.bytes().as_ptr_range();
        b.start <= p && p < b.end
    })
}

fn err_text(r: Result<impl std::fmt::Debug, Error>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn single_file_aligned_tensors_are_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    let w32 = ramp(4 * 40, 0.01);
    let w16 = ramp(3 * 8, 0.25);
    let norm = ramp(8, 1.0);
    write_st(
        &p,
        &[
            t("lin.weight", "F32", &[4, 40], f32s(&w32)),
            t("norm.weight", "F32", &[8], f32s(&norm)),
            t("half.weight", "F16", &[3, 8], f16s(&w16)),
        ],
        Some(json!({"format": "pt"})),
        0,
    );
    for path in [dir.path(), p.as_path()] {
        let w = Weights::open(path).unwrap();
        let m = w.matrix("lin.weight", &[4, 40]).unwrap();
        assert!(m.is_mapped());
        assert_eq!((m.rows(), m.cols(), m.format()), (4, 40, Format::F32));
        let Mat::F32 { w: data, .. } = m.mat() else {
            panic!("not f32")
        };
        assert!(inside(&w, data.as_ptr().cast()));
        assert_eq!(data, &w32[..]);

        let h = w.matrix("half.weight", &[3, 8]).unwrap();
        assert!(h.is_mapped());
        let Mat::F16 { w: hd, .. } = h.mat() else {
            panic!("not f16")
        };
        assert!(inside(&w, hd.as_ptr().cast()));
        assert_eq!(mat_f32_values(h.mat()), w16);

        let v = w.vector("norm.weight", &[8]).unwrap();
        assert!(v.is_mapped());
        assert!(inside(&w, v.as_ptr().cast()));
        assert_eq!(&v[..], &norm[..]);
        // F16 as a vector converts
        let hv = w.vector("half.weight", &[3, 8]).unwrap();
        assert!(!hv.is_mapped());
        assert_eq!(hv.into_vec(), w16);

        assert!(w.contains("norm.weight") && !w.contains("nope"));
        let info = w.info("half.weight").unwrap();
        assert_eq!((info.format, info.shape), (TensorFormat::F16, vec![3, 8]));
        assert_eq!(w.names(), ["half.weight", "lin.weight", "norm.weight"]);
    }
}

#[test]
fn tensors_outlive_the_weights_handle() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.safetensors");
    write_st(
        &p,
        &[t("a", "F32", &[2, 2], f32s(&[1., 2., 3., 4.]))],
        None,
        0,
    );
    let m = {
        let w = Weights::open(&p).unwrap();
        w.matrix("a", &[2, 2]).unwrap()
    };
    assert_eq!(mat_f32_values(m.mat()), [1., 2., 3., 4.]);
}

#[test]
fn bf16_and_misaligned_data_are_converted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let a = ramp(2 * 6, 0.5);
    let b = ramp(2 * 6, 0.125);
    // data starts at an odd offset: neither f32 nor f16 can be viewed in place
    write_st(
        &p,
        &[
            t("bf.weight", "BF16", &[2, 6], bf16s(&a)),
            t("odd.weight", "F32", &[2, 6], f32s(&b)),
            t("odd16.weight", "F16", &[2, 6], f16s(&b)),
        ],
        None,
        1,
    );
    let w = Weights::open(&p).unwrap();
    let m = w.matrix("bf.weight", &[2, 6]).unwrap();
    assert_eq!(m.format(), Format::F32);
    assert!(!m.is_mapped());
    let want: Vec<f32> = a.iter().map(|v| bf16::from_f32(*v).to_f32()).collect();
    assert_eq!(mat_f32_values(m.mat()), want);
    assert_eq!(w.info("bf.weight").unwrap().format, TensorFormat::BF16);

    let o = w.matrix("odd.weight", &[2, 6]).unwrap();
    assert!(!o.is_mapped());
    assert_eq!(mat_f32_values(o.mat()), b);
    let o16 = w.matrix("odd16.weight", &[2, 6]).unwrap();
    assert!(!o16.is_mapped());
    assert_eq!(o16.format(), Format::F16);
    let want16: Vec<f32> = b.iter().map(|v| f16::from_f32(*v).to_f32()).collect();
    assert_eq!(mat_f32_values(o16.mat()), want16);
    let v = w.vector("odd.weight", &[2, 6]).unwrap();
    assert!(!v.is_mapped());
    assert_eq!(v.into_vec(), b);
}

#[test]
fn conv_weights_are_rows_by_flattened_rest() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.safetensors");
    let c = ramp(4 * 3 * 5, 0.1);
    write_st(
        &p,
        &[t("conv.weight", "F32", &[4, 3, 5], f32s(&c))],
        None,
        0,
    );
    let w = Weights::open(&p).unwrap();
    let m = w.matrix("conv.weight", &[4, 3, 5]).unwrap();
    assert_eq!((m.rows(), m.cols()), (4, 15));
    assert!(m.is_mapped());
    let e = err_text(w.matrix("conv.weight", &[4, 15]));
    assert!(e.contains("conv.weight") && e.contains("[4, 15]") && e.contains("[4, 3, 5]"));
}

fn write_sharded(dir: &Path) {
    write_st(
        &dir.join("model-00001-of-00002.safetensors"),
        &[
            t(
                "codec_model.enc.weight",
                "F32",
                &[2, 3],
                f32s(&ramp(6, 1.0)),
            ),
            t("lm.weight", "F16", &[2, 2], f16s(&[1., 2., 3., 4.])),
        ],
        None,
        0,
    );
    write_st(
        &dir.join("model-00002-of-00002.safetensors"),
        &[t("codec_model.dec.bias", "F32", &[3], f32s(&[7., 8., 9.]))],
        None,
        0,
    );
    let index = json!({
        "metadata": {"total_size": 40},
        "weight_map": {
            "codec_model.enc.weight": "model-00001-of-00002.safetensors",
            "lm.weight": "model-00001-of-00002.safetensors",
            "codec_model.dec.bias": "model-00002-of-00002.safetensors",
        }
    });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_directory_with_prefix() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path());
    let w = Weights::open(dir.path()).unwrap();
    assert_eq!(w.shards().len(), 2);
    let codec = w.with_prefix("codec_model.");
    assert_eq!(codec.prefix(), "codec_model.");
    assert_eq!(codec.names(), ["dec.bias", "enc.weight"]);
    assert_eq!(&codec.vector("dec.bias", &[3]).unwrap()[..], &[7., 8., 9.]);
    assert_eq!(
        mat_f32_values(codec.matrix("enc.weight", &[2, 3]).unwrap().mat()),
        ramp(6, 1.0)
    );
    assert!(!codec.contains("lm.weight") && w.contains("lm.weight"));
    let e = err_text(codec.matrix("lm.weight", &[2, 2]));
    assert!(
        e.contains("`codec_model.lm.weight`") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn sharded_directory_errors_name_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path());
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let e = err_text(Weights::open(dir.path()));
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("does not exist"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    write_sharded(dir.path());
    let ix = dir.path().join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&ix)
        .unwrap()
        .replace("\"lm.weight\":\"model-00001", "\"lm.weight\":\"model-00002");
    std::fs::write(&ix, text).unwrap();
    let e = err_text(Weights::open(dir.path()));
    assert!(e.contains("lm.weight") && e.contains("index"), "{e}");

    std::fs::write(&ix, "{not json").unwrap();
    let e = err_text(Weights::open(dir.path()));
    assert!(e.contains("model.safetensors.index.json"), "{e}");

    let empty = tempfile::tempdir().unwrap();
    let e = err_text(Weights::open(empty.path()));
    assert!(e.contains("no model.safetensors"), "{e}");
    let e = err_text(Weights::open(empty.path().join("absent")));
    assert!(e.contains("absent"), "{e}");
}

#[test]
fn tensor_errors_name_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    write_st(
        &p,
        &[
            t("a.weight", "F32", &[2, 3], f32s(&ramp(6, 1.0))),
            t("ids", "I32", &[2], vec![0; 8]),
        ],
        None,
        0,
    );
    let w = Weights::open(&p).unwrap();
    let e = err_text(w.matrix("b.weight", &[2, 3]));
    assert!(e.contains("`b.weight`") && e.contains("missing"), "{e}");
    let e = err_text(w.matrix("a.weight", &[3, 2]));
    assert!(
        e.contains("`a.weight`") && e.contains("expected shape [3, 2], found [2, 3]"),
        "{e}"
    );
    let e = err_text(w.vector("a.weight", &[6]));
    assert!(e.contains("expected shape [6], found [2, 3]"), "{e}");
    let e = err_text(w.matrix("ids", &[2]));
    assert!(
        e.contains("`ids`") && e.contains("unsupported dtype I32"),
        "{e}"
    );
    let e = err_text(w.vector("ids", &[2]));
    assert!(e.contains("unsupported dtype"), "{e}");
    let e = err_text(w.matrix("a.weight", &[]));
    assert!(e.contains("a.weight"), "{e}");
    assert_eq!(
        w.info("ids").unwrap().format,
        TensorFormat::Other(edgecsm::weights::Dtype::I32)
    );
    let e = err_text(w.require_info("zzz"));
    assert!(e.contains("zzz"), "{e}");
}

#[test]
fn q8_tensors_are_validated_and_mapped() {
    use edgecsm::kernels::q8::{blocks, quantize_weight_row};
    let (rows, cols) = (3, 40);
    let nb = blocks(cols);
    let x = ramp(rows * cols, 0.05);
    let mut q = vec![0i8; rows * nb * 32];
    let mut d = vec![f16::ZERO; rows * nb];
    for r in 0..rows {
        quantize_weight_row(
            &x[r * cols..(r + 1) * cols],
            &mut q[r * nb * 32..(r + 1) * nb * 32],
            &mut d[r * nb..(r + 1) * nb],
        );
    }
    let qb: Vec<u8> = q.iter().map(|&v| v as u8).collect();
    let db: Vec<u8> = d.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.safetensors");
    let meta = json!({
        "format": "edgecsm",
        "edgecsm_version": edgecsm::weights::FORMAT_VERSION.to_string(),
        "q8_shapes": json!({"w": [rows, cols]}).to_string()
    });
    write_st(
        &p,
        &[
            t("w.q8_scale", "F16", &[rows, nb], db.clone()),
            t("w", "I8", &[rows, nb * 32], qb.clone()),
            t("lonely", "I8", &[rows, nb * 32], qb.clone()),
        ],
        Some(meta),
        0,
    );
    let w = Weights::open(&p).unwrap();
    let m = w.matrix("w", &[rows, cols]).unwrap();
    assert_eq!(m.format(), Format::Q8);
    assert!(m.is_mapped());
    let Mat::Q8 { q: mq, d: md, .. } = m.mat() else {
        panic!("not q8")
    };
    assert_eq!(mq, &q[..]);
    assert_eq!(md, &d[..]);
    assert!(inside(&w, mq.as_ptr().cast()) && inside(&w, md.as_ptr().cast()));
    let info = w.info("w").unwrap();
    assert_eq!(
        (info.format, info.shape),
        (TensorFormat::Q8, vec![rows, cols])
    );
    assert_eq!(w.names(), ["lonely", "w"]);
    // dequantized vector: within half a step of the original
    let v = w.vector("w", &[rows, cols]).unwrap();
    for (i, (a, b)) in x.iter().zip(v.iter()).enumerate() {
        let step = d[(i / cols) * nb + (i % cols) / 32].to_f32();
        assert!((a - b).abs() <= 0.5 * step + 1e-7);
    }
    // same padded storage but a different logical shape: caught through the metadata
    let e = err_text(w.matrix("w", &[rows, cols - 1]));
    assert!(
        e.contains("`w`") && e.contains("[3, 39]") && e.contains("[3, 40]"),
        "{e}"
    );
    let e = err_text(w.matrix("w", &[rows + 1, cols]));
    assert!(
        e.contains("`w`") && e.contains("expected shape [4, 40]"),
        "{e}"
    );
    let e = err_text(w.matrix("lonely", &[rows, cols]));
    assert!(
        e.contains("`lonely`") && e.contains("lonely.q8_scale"),
        "{e}"
    );

    // scales of the wrong dtype
    let p2 = dir.path().join("q2.safetensors");
    write_st(
        &p2,
        &[
            t("w.q8_scale", "BF16", &[rows, nb], db),
            t("w", "I8", &[rows, nb * 32], qb),
        ],
        None,
        0,
    );
    let w2 = Weights::open(&p2).unwrap();
    let e = err_text(w2.matrix("w", &[rows, cols]));
    assert!(e.contains("w.q8_scale") && e.contains("F16"), "{e}");
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.safetensors");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("zero-length", vec![]),
        ("short", vec![1, 2, 3]),
        ("header length past the end", {
            let mut b = 1000u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("garbage json", {
            let mut b = 8u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{garbage");
            b
        }),
        ("not utf-8", {
            let mut b = 4u64.to_le_bytes().to_vec();
            b.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc]);
            b
        }),
        ("offsets past the end", {
            let h = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h);
            b.extend_from_slice(&[0; 8]);
            b
        }),
        ("shape does not match offsets", {
            let h = br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}"#;
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h);
            b.extend_from_slice(&[0; 16]);
            b
        }),
        ("huge header length", u64::MAX.to_le_bytes().to_vec()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&p, &bytes).unwrap();
        let e = err_text(Weights::open(&p));
        assert!(e.contains("bad.safetensors"), "{what}: {e}");
    }
}

/// Every truncation and many byte corruptions of a valid file: open and read without panics.
#[test]
fn corrupted_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    write_st(
        &good,
        &[
            t("a", "F32", &[2, 3], f32s(&ramp(6, 1.0))),
            t("b", "F16", &[4], f16s(&ramp(4, 1.0))),
            t("c", "BF16", &[2], bf16s(&[1.0, 2.0])),
        ],
        Some(json!({"q8_shapes": "{}"})),
        0,
    );
    let bytes = std::fs::read(&good).unwrap();
    let p = dir.path().join("x.safetensors");
    let try_all = |w: &Weights| {
        for n in w.names() {
            let shape = w.info(&n).map(|i| i.shape).unwrap_or_default();
            let _ = w.matrix(&n, &shape).map(|m| mat_f32_values(m.mat()));
            let _ = w.vector(&n, &shape);
        }
    };
    for len in 0..bytes.len() {
        std::fs::write(&p, &bytes[..len]).unwrap();
        assert!(
            Weights::open(&p).is_err(),
            "truncated to {len} bytes opened"
        );
    }
    let mut seed = 12345u64;
    let mut opened = 0;
    for _ in 0..600 {
        let mut b = bytes.clone();
        for _ in 0..3 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let i = (seed >> 33) as usize % b.len();
            b[i] = (seed >> 20) as u8;
        }
        std::fs::write(&p, &b).unwrap();
        if let Ok(w) = Weights::open(&p) {
            opened += 1;
            try_all(&w);
        }
    }
    // some corruptions only touch data bytes and still open
    assert!(opened > 0);
}
