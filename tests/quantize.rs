//! `quantize`: the policy on a tiny model, products of the converted weights against the f32
//! ones within the error each format implies, metadata, layout, atomicity, and the CLI.

mod common;
use edgecsm::kernels::matmul::{Format, matmul};
use edgecsm::kernels::packed::{PackedFormat, q4p_scale, q8p_scale};
use edgecsm::kernels::q8::QK;
use edgecsm::kernels::{Kernels, Mat, Pool, QScratch};
use edgecsm::quantize::{Options, Policy, Target, quantize};
use edgecsm::weights::{Layout, TensorFormat, Weights};
use half::{bf16, f16};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct T {
    name: &'static str,
    dtype: &'static str,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn encode(dtype: &str, v: &[f32]) -> Vec<u8> {
    match dtype {
        "F32" => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        "BF16" => v
            .iter()
            .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
            .collect(),
        "F16" => v
            .iter()
            .flat_map(|x| f16::from_f32(*x).to_le_bytes())
            .collect(),
        "I64" => v.iter().flat_map(|x| (*x as i64).to_le_bytes()).collect(),
        _ => unreachable!(),
    }
}

/// The value a source tensor holds once decoded (BF16 rounding applied).
fn stored(t: &T) -> Vec<f32> {
    match t.dtype {
        "BF16" => t
            .values
            .iter()
            .map(|v| bf16::from_f32(*v).to_f32())
            .collect(),
        _ => t.values.clone(),
    }
}

fn write_st(path: &Path, tensors: &[&T]) {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut off = 0;
    let mut data = Vec::new();
    for t in tensors {
        let b = encode(t.dtype, &t.values);
        header.insert(
            t.name.into(),
            json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [off, off + b.len()]}),
        );
        off += b.len();
        data.extend(b);
    }
    let mut h = serde_json::to_string(&Value::Object(header))
        .unwrap()
        .into_bytes();
    // deliberately misaligned source (data at an offset of 2 mod 8)
    while (8 + h.len()) % 8 != 2 {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend(h);
    bytes.extend(data);
    std::fs::write(path, bytes).unwrap();
}

fn t(name: &'static str, dtype: &'static str, shape: &[usize], seed: u64) -> T {
    let n = shape.iter().product();
    let mut values = common::rand_vec(n, seed);
    if dtype == "I64" {
        values = (0..n).map(|i| i as f32).collect();
    }
    T {
        name,
        dtype,
        shape: shape.to_vec(),
        values,
    }
}

const Q8P: Target = Target::Packed(PackedFormat::Q8P, Layout::Rows);
const F16P: Target = Target::Packed(PackedFormat::F16P, Layout::Rows);
const Q4P: Target = Target::Packed(PackedFormat::Q4P, Layout::Rows);
/// A conv weight `[out, in, k]`: its columns stored taps outer.
const F16P_CONV: Target = Target::Packed(PackedFormat::F16P, Layout::Conv);

/// The tiny model and what the q8 policy (with `--keep depth_decoder.`) must do with it.
fn tiny_model() -> Vec<(T, Target)> {
    vec![
        (t("model.layers.0.mlp.fc1.weight", "F32", &[48, 64], 1), Q8P),
        (
            t("model.layers.0.mlp.fc2.weight", "BF16", &[64, 48], 2),
            Q8P,
        ),
        (
            t("model.embed_tokens.weight", "F32", &[20, 40], 3),
            Target::Q8,
        ),
        (t("model.small.weight", "F32", &[8, 16], 4), F16P),
        (t("encoder.conv.weight", "F32", &[16, 8, 3], 5), F16P_CONV),
        (t("model.norm.weight", "F32", &[64], 6), Target::F32),
        (
            t("model.layers.0.mlp.fc1.bias", "BF16", &[48], 7),
            Target::F32,
        ),
        (t("model.layer_scale.scale", "F16", &[64], 8), Target::F16),
        (
            t("q.layers.0.codebook.embed_sum", "F32", &[16, 40], 9),
            Target::F32,
        ),
        (
            t("q.layers.0.codebook.cluster_usage", "F32", &[16], 10),
            Target::F32,
        ),
        (t("position_ids", "I64", &[1, 4], 11), Target::Copy),
        (t("depth_decoder.proj.weight", "F32", &[32, 64], 12), F16P),
    ]
}

const EXTRA_FILES: [(&str, &str); 3] = [
    ("config.json", r#"{"model_type": "tiny"}"#),
    ("tokenizer.json", r#"{"version": "1.0"}"#),
    ("generation_config.json", "{}"),
];

fn write_model(dir: &Path, sharded: bool) -> Vec<(T, Target)> {
    std::fs::create_dir_all(dir).unwrap();
    let model = tiny_model();
    if sharded {
        let (a, b) = model.split_at(5);
        let names = [
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
        ];
        let mut map = serde_json::Map::new();
        for (part, name) in [a, b].iter().zip(names) {
            write_st(
                &dir.join(name),
                &part.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            );
            for (t, _) in part.iter() {
                map.insert(t.name.into(), json!(name));
            }
        }
        let index = json!({"metadata": {"total_size": 1}, "weight_map": map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    } else {
        let all: Vec<&T> = model.iter().map(|(t, _)| t).collect();
        write_st(&dir.join("model.safetensors"), &all);
    }
    for (name, text) in EXTRA_FILES {
        std::fs::write(dir.join(name), text).unwrap();
    }
    model
}

fn opts(model: &Path, out: &Path, mode: Policy) -> Options {
    Options {
        model: model.to_path_buf(),
        out: out.to_path_buf(),
        policy: mode,
        keep: vec!["depth_decoder.".into()],
        force: false,
    }
}

/// Leftover `*.partial-*` directories next to `out`.
fn partials(out: &Path) -> Vec<PathBuf> {
    let parent = out.parent().unwrap();
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".partial-"))
        .collect()
}

/// Checks a product of converted weights (matrices made with `layout`) against the f32 one
/// within the format's error bound.
fn check_products(t: &T, layout: Layout, m: &Mat) {
    let k = Kernels::get();
    let pool = Pool::new(2);
    let (rows, cols) = (m.rows(), m.cols());
    let w = layout.arrange(&t.shape, &stored(t));
    let n = 3;
    let x = common::rand_vec(n * cols, 99);
    let mut y = vec![0f32; n * rows];
    let mut s = QScratch::new(n, cols);
    matmul(k, &pool, m, &x, &mut y, &mut s);
    for tok in 0..n {
        let xt = &x[tok * cols..(tok + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let exact: f64 = wr.iter().zip(xt).map(|(a, b)| *a as f64 * *b as f64).sum();
            let bound: f64 = match *m {
                Mat::F16 { .. } | Mat::F16P { .. } => {
                    wr.iter()
                        .zip(xt)
                        .map(|(a, b)| (a * b).abs() as f64)
                        .sum::<f64>()
                        / 2048.0
                }
                Mat::Q8P { w: packed, .. } | Mat::Q4P { w: packed, .. } => {
                    let mut b = 0f64;
                    for (blk, xb) in xt.chunks(QK).enumerate() {
                        let d = match *m {
                            Mat::Q8P { .. } => q8p_scale(packed, cols, r, blk),
                            _ => q4p_scale(packed, cols, r, blk),
                        };
                        let ew = 0.5 * d.to_f32().abs() as f64;
                        let ex = 0.5 * xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 127.0;
                        for (c, xv) in xb.iter().enumerate() {
                            let wv = wr[blk * QK + c] as f64;
                            b += wv.abs() * ex + (*xv as f64).abs() * ew + ew * ex;
                        }
                    }
                    b
                }
                _ => 0.0,
            };
            let got = y[tok * rows + r] as f64;
            assert!(
                (got - exact).abs() <= bound + 1e-4 * (1.0 + exact.abs()),
                "{}: row {r} token {tok}: {got} vs {exact} (bound {bound})",
                t.name
            );
        }
    }
}

#[test]
fn q8_conversion_follows_the_policy_and_loads_zero_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    let model = write_model(&src, false);
    let mut log = Vec::new();
    let summary = quantize(&opts(&src, &out, Policy::Q8), &mut log).unwrap();
    let log = String::from_utf8(log).unwrap();
    assert!(partials(&out).is_empty());

    // per-tensor report lines and the summary
    assert_eq!(summary.tensors.len(), model.len());
    for (t, want) in &model {
        let r = summary.tensors.iter().find(|r| r.name == t.name).unwrap();
        assert_eq!(r.target, *want, "{}", t.name);
        let line = log.lines().find(|l| l.starts_with(t.name)).unwrap();
        assert!(line.contains(want.name()), "{line}");
        if *want == Target::Q8 || *want == Q8P {
            let snr = r.snr_db.unwrap();
            assert!(snr > 35.0 && line.contains("SNR"), "{line}");
        }
    }
    let counts = summary.counts();
    assert_eq!(counts[&Target::Q8], 1);
    assert_eq!(counts[&Q8P], 2);
    assert_eq!(counts[&F16P], 2);
    assert_eq!(counts[&F16P_CONV], 1);
    assert!(summary.bytes_after < summary.bytes_before);
    let text = summary.to_string();
    assert!(
        text.contains("2 Q8P") && text.contains("1 Q8,") && text.contains("Q8 SNR: min"),
        "{text}"
    );

    // other files copied byte for byte
    for (name, content) in EXTRA_FILES {
        assert_eq!(std::fs::read_to_string(out.join(name)).unwrap(), content);
    }

    // metadata
    let w = Weights::open(&out).unwrap();
    let meta = w.shards()[0].metadata();
    let src_bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let sha: String = Sha256::digest(&src_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(meta["format"], "edgecsm");
    assert_eq!(
        meta["edgecsm_version"],
        edgecsm::weights::FORMAT_VERSION.to_string()
    );
    assert_eq!(meta["dtype"], "q8");
    assert_eq!(meta["source_file"], "model.safetensors");
    assert_eq!(meta["source_sha256"], sha);

    // every tensor starts at a file offset aligned to its element size
    let shard = &w.shards()[0];
    for name in shard.names() {
        let st = shard.get(name).unwrap();
        let align = (st.dtype.bitsize() / 8).max(1);
        assert_eq!(st.range.start % align, 0, "{name}");
    }

    check_loaded(&w, &model);
}

/// Loads every tensor of the converted model and checks format, mapping and values.
fn check_loaded(w: &Weights, model: &[(T, Target)]) {
    for (t, want) in model {
        let info = w.info(t.name).unwrap();
        assert_eq!(info.shape, t.shape, "{}", t.name);
        let fmt = match want {
            Target::Q8 => TensorFormat::Q8,
            Target::F16 => TensorFormat::F16,
            Target::F32 => TensorFormat::F32,
            Target::Packed(f, _) => TensorFormat::Packed(*f),
            Target::Copy => continue,
        };
        assert_eq!(info.format, fmt, "{}", t.name);
        let orig = stored(t);
        if let Target::Packed(f, layout) = *want {
            // a product weight: mapped packed panels, products within the format's bound
            let m = w.packed_matrices(t.name, &t.shape, layout).unwrap();
            let [m] = &m[..] else {
                panic!("{}: one matrix", t.name)
            };
            assert!(m.is_mapped(), "{} was copied", t.name);
            assert_eq!(m.format(), Format::Packed(f));
            check_products(t, layout, &m.mat());
            continue;
        }
        let v = w.vector(t.name, &t.shape).unwrap();
        match want {
            Target::F32 => {
                assert!(v.is_mapped(), "{}", t.name);
                assert_eq!(&v[..], &orig[..], "{}", t.name);
            }
            Target::F16 => {
                for (a, b) in orig.iter().zip(v.iter()) {
                    assert_eq!(f16::from_f32(*a).to_f32(), *b, "{}", t.name);
                }
            }
            _ => {}
        }
        if t.shape.len() >= 2 && *want != Target::F32 {
            // a table: mapped rows
            let m = w.matrix(t.name, &t.shape).unwrap();
            assert!(m.is_mapped(), "{} was copied", t.name);
            let expect_fmt = if *want == Target::Q8 {
                Format::Q8
            } else {
                Format::F16
            };
            assert_eq!(m.format(), expect_fmt);
            if let Mat::Q8 { d, .. } = m.mat() {
                // per value: at most half a block step
                let cols = m.cols();
                let nb = cols.div_ceil(QK);
                for (i, (a, b)) in orig.iter().zip(v.iter()).enumerate() {
                    let step = d[(i / cols) * nb + (i % cols) / QK].to_f32();
                    assert!((a - b).abs() <= 0.5 * step + 1e-7, "{} [{i}]", t.name);
                }
            }
        }
    }
    // the I64 buffer is copied unchanged
    let ids = w
        .shards()
        .iter()
        .find_map(|s| s.get("position_ids").map(|t| s.data(t).to_vec()));
    assert_eq!(ids.unwrap(), encode("I64", &[0., 1., 2., 3.]));
}

#[test]
fn sharded_model_keeps_its_shards_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    let model = write_model(&src, true);
    quantize(&opts(&src, &out, Policy::Q8), &mut std::io::sink()).unwrap();
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let map = index["weight_map"].as_object().unwrap();
    assert_eq!(
        map["model.embed_tokens.weight.q8_scale"],
        "model-00001-of-00002.safetensors"
    );
    assert_eq!(map["position_ids"], "model-00002-of-00002.safetensors");
    assert!(index["metadata"]["total_size"].as_u64().unwrap() > 1);
    let w = Weights::open(&out).unwrap();
    assert_eq!(w.shards().len(), 2);
    let by_file: HashMap<String, String> = w
        .shards()
        .iter()
        .map(|s| {
            (
                s.metadata()["source_file"].clone(),
                s.path().file_name().unwrap().to_string_lossy().into_owned(),
            )
        })
        .collect();
    for (k, v) in by_file {
        assert_eq!(k, v);
    }
    check_loaded(&w, &model);
}

#[test]
fn f16_mode_converts_every_matrix_but_codebooks() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    let model: Vec<(T, Target)> = write_model(&src, false)
        .into_iter()
        .map(|(t, want)| {
            let want = match want {
                Target::Q8 => Target::F16,
                Q8P => F16P,
                w => w,
            };
            (t, want)
        })
        .collect();
    let mut o = opts(&src, &out, Policy::F16);
    o.keep.clear();
    let s = quantize(&o, &mut std::io::sink()).unwrap();
    assert!(!s.counts().contains_key(&Target::Q8));
    assert!(!s.counts().contains_key(&Q8P));
    let w = Weights::open(&out).unwrap();
    assert_eq!(w.shards()[0].metadata()["dtype"], "f16");
    check_loaded(&w, &model);
}

#[test]
fn q4_and_mixed_policies_pick_each_components_format() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_model(&src, false);
    // (policy, the depth decoder's product weight, the backbone's, report name)
    for (spec, depth, backbone, name) in [
        ("q4", Q4P, Q4P, "q4"),
        ("q4-q8depth", Q8P, Q4P, "q4-q8depth"),
        (
            "q8,depth=q4",
            Q4P,
            Q8P,
            "backbone=q8,depth=q4,heads=q8,embeddings=q8,codec=q8",
        ),
        (
            "q4,depth=f16",
            F16P,
            Q4P,
            "backbone=q4,depth=f16,heads=q4,embeddings=q4,codec=q4",
        ),
    ] {
        let policy = Policy::parse(spec).unwrap();
        let model: Vec<(T, Target)> = tiny_model()
            .into_iter()
            .map(|(t, want)| {
                let want = match (t.name, want) {
                    ("depth_decoder.proj.weight", _) => depth,
                    (_, Q8P) => backbone,
                    (_, w) => w,
                };
                (t, want)
            })
            .collect();
        let out = tmp.path().join(spec);
        let mut o = opts(&src, &out, policy);
        o.keep.clear();
        let summary = quantize(&o, &mut std::io::sink()).unwrap().to_string();
        if backbone == Q4P {
            assert!(summary.contains("Q4P SNR: min"), "{summary}");
        }
        let w = Weights::open(&out).unwrap();
        assert_eq!(w.shards()[0].metadata()["dtype"], name, "{spec}");
        check_loaded(&w, &model);
    }
}

#[test]
fn refuses_to_overwrite_and_to_reconvert() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    write_model(&src, false);
    let mut o = opts(&src, &out, Policy::Q8);
    quantize(&o, &mut std::io::sink()).unwrap();
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    let e = quantize(&o, &mut std::io::sink()).unwrap_err().to_string();
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert_eq!(
        std::fs::read(out.join("model.safetensors")).unwrap(),
        before
    );

    o.force = true;
    o.keep.clear();
    quantize(&o, &mut std::io::sink()).unwrap();
    let w = Weights::open(&out).unwrap();
    assert_eq!(
        w.info("depth_decoder.proj.weight").unwrap().format,
        TensorFormat::Packed(PackedFormat::Q8P)
    );
    assert!(partials(&out).is_empty());

    // an edgecsm output is not a source
    let again = tmp.path().join("again");
    let e = quantize(&opts(&out, &again, Policy::F16), &mut std::io::sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("already converted"), "{e}");
    assert!(!again.exists());

    // --force never deletes the source
    let mut same = opts(&src, &src, Policy::Q8);
    same.force = true;
    let e = quantize(&same, &mut std::io::sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model directory itself"), "{e}");
    assert!(src.join("model.safetensors").exists());
}

#[test]
fn a_corrupt_source_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    write_model(&src, true);
    let shard = src.join("model-00002-of-00002.safetensors");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 3]).unwrap();
    let e = quantize(&opts(&src, &out, Policy::Q8), &mut std::io::sink())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model-00002-of-00002.safetensors"), "{e}");
    assert!(!out.exists());
    assert!(partials(&out).is_empty());

    // a name clash found after the first shard was written: the partial directory goes too
    std::fs::write(&shard, &bytes).unwrap();
    // (a Q8 table's scales are a tensor of their own, `NAME.q8_scale`)
    let clash = T {
        name: "model.lin.embed_tokens.weight.q8_scale",
        dtype: "F32",
        shape: vec![2],
        values: vec![1.0, 2.0],
    };
    let lin = t("model.lin.embed_tokens.weight", "F32", &[2, 64], 3);
    write_st(&shard, &[&lin, &clash]);
    let ix = src.join("model.safetensors.index.json");
    let mut index: Value = serde_json::from_str(&std::fs::read_to_string(&ix).unwrap()).unwrap();
    let map = index["weight_map"].as_object_mut().unwrap();
    map.retain(|_, v| v != "model-00002-of-00002.safetensors");
    map.insert(
        "model.lin.embed_tokens.weight".into(),
        json!("model-00002-of-00002.safetensors"),
    );
    map.insert(clash.name.into(), json!("model-00002-of-00002.safetensors"));
    std::fs::write(&ix, index.to_string()).unwrap();
    let mut o = opts(&src, &out, Policy::Q8);
    o.keep.clear();
    let e = quantize(&o, &mut std::io::sink()).unwrap_err().to_string();
    assert!(e.contains("collides"), "{e}");
    assert!(!out.exists());
    assert!(partials(&out).is_empty());
}

fn cli(args: &[&str]) -> std::process::Output {
    common::edgecsm().args(args).output().unwrap()
}

#[test]
fn cli_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let out = tmp.path().join("out");
    write_model(&src, false);
    let (s, o) = (src.to_str().unwrap(), out.to_str().unwrap());
    let args = [
        "--threads",
        "1",
        "quantize",
        "--model",
        s,
        "--dtype",
        "q8",
        "--out",
        o,
        "--keep",
        "depth_decoder.",
    ];
    let r = cli(&args);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(
        stdout.contains("model.layers.0.mlp.fc1.weight  F32[48, 64] -> Q8P  SNR"),
        "{stdout}"
    );
    assert!(
        stdout.contains("12 tensors: 1 Q8, 1 F16, 4 F32, 1 copy, 3 F16P, 2 Q8P"),
        "{stdout}"
    );
    assert!(out.join("tokenizer.json").exists());
    let w = Weights::open(&out).unwrap();
    assert_eq!(
        w.info("depth_decoder.proj.weight").unwrap().format,
        TensorFormat::Packed(PackedFormat::F16P)
    );

    // again: refused, clear one-line error, non-zero exit
    let r = cli(&args);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.starts_with("error: ") && stderr.contains("already exists"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    // missing model directory
    let missing = tmp.path().join("no-such-model");
    let r = cli(&[
        "quantize",
        "--model",
        missing.to_str().unwrap(),
        "--dtype",
        "f16",
        "--out",
        tmp.path().join("o2").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.starts_with("error: model directory") && stderr.contains("no-such-model"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));
    assert!(!tmp.path().join("o2").exists());

    // a bad option value is a usage error, not a panic
    for bad in ["q3", "q4,depth=q9", "q4,voice=q8"] {
        let r = cli(&["quantize", "--model", s, "--dtype", bad, "--out", o]);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success());
        assert!(
            stderr.starts_with("error:") && stderr.contains(bad) && stderr.contains("q4-q8depth"),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    // a bad kernel override is one clear line
    let r = common::edgecsm()
        .args(["quantize", "--model", s, "--dtype", "q8", "--out", o])
        .env("EDGECSM_KERNELS", "bogus")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success());
    assert!(
        stderr.starts_with("error: kernel selection: unknown kernel set `bogus`"),
        "{stderr}"
    );
}
