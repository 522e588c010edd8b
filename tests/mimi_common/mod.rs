//! Helpers shared by the Mimi tests: fixture paths, `.npy` readers, error measures.
#![allow(dead_code)]

use ndarray::{ArrayD, IxDyn};
use ndarray_npy::read_npy;
use std::path::PathBuf;

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mimi")
        .join(name)
}

/// Input names of a fixture (`<name>.input.npy`), sorted.
pub fn inputs(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".input.npy").map(str::to_string)
        })
        .collect();
    v.sort();
    v
}

/// An f32 array and its shape.
pub fn f32s(dir: &std::path::Path, file: &str) -> (Vec<f32>, Vec<usize>) {
    let a: ArrayD<f32> = read_npy(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let shape = a.shape().to_vec();
    (a.as_standard_layout().iter().copied().collect(), shape)
}

/// An i64 `[n_q, frames]` code array as rows of u32.
pub fn codes(dir: &std::path::Path, file: &str) -> Vec<Vec<u32>> {
    let a: ArrayD<i64> = read_npy(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let a = a.into_dimensionality::<ndarray::Ix2>().unwrap();
    a.rows()
        .into_iter()
        .map(|r| r.iter().map(|&c| c as u32).collect())
        .collect()
}

/// `[c, t]` channel-major -> `[t, c]` token-major.
pub fn transpose(x: &[f32], shape: &[usize]) -> Vec<f32> {
    let (c, t) = (shape[0], shape[1]);
    let a = ArrayD::from_shape_vec(IxDyn(&[c, t]), x.to_vec()).unwrap();
    a.t().as_standard_layout().iter().copied().collect()
}

pub fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |m, v| m.max(v.abs()))
}

pub fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Signal-to-noise ratio of `got` against `want` in dB.
pub fn snr_db(want: &[f32], got: &[f32]) -> f64 {
    let s: f64 = want.iter().map(|v| (*v as f64).powi(2)).sum();
    let n: f64 = want
        .iter()
        .zip(got)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    10.0 * (s / n.max(1e-300)).log10()
}
