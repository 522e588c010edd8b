//! Helpers shared by the CSM tests: fixture paths, loading, `.npy` readers, error measures.
#![allow(dead_code)]

use edgecsm::csm::Csm;
use ndarray::ArrayD;
use ndarray_npy::read_npy;
use std::path::{Path, PathBuf};

pub fn load(dir: &Path) -> Csm {
    Csm::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

pub fn f32s(path: &Path) -> (Vec<f32>, Vec<usize>) {
    let a: ArrayD<f32> = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = a.shape().to_vec();
    (a.as_standard_layout().iter().copied().collect(), shape)
}

pub fn u32s(path: &Path) -> (Vec<u32>, Vec<usize>) {
    let a: ArrayD<i64> = read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shape = a.shape().to_vec();
    (
        a.as_standard_layout().iter().map(|&x| x as u32).collect(),
        shape,
    )
}

pub fn max_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// The CSM fixture root (`tests/fixtures/csm`, or `EDGECSM_CSM_FIXTURES` to test regenerated
/// fixtures elsewhere).
pub fn fixture_root() -> PathBuf {
    std::env::var_os("EDGECSM_CSM_FIXTURES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/csm"),
        PathBuf::from,
    )
}

/// The fixture configurations present (`a`, `b`, ...), sorted.
pub fn fixture_names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(fixture_root())
        .map(|rd| {
            rd.filter_map(|e| {
                let e = e.ok()?;
                e.path()
                    .join("config.json")
                    .exists()
                    .then(|| e.file_name().into_string().unwrap())
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
