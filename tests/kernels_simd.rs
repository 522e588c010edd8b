//! Every SIMD kernel set this CPU supports against the scalar reference, on random inputs of
//! awkward sizes (not multiples of the block or vector width, size 1, empty), plus a check that
//! the set detection picks what the CPU (or the emulated CPU under qemu) offers.

use edgecsm::kernels::matmul::matmul;
use edgecsm::kernels::packed::{pack_float, pack_q8};
use edgecsm::kernels::q8::{QK, blocks, quantize_matrix};
use edgecsm::kernels::{KernelSet, Kernels, Mat, Pool, QScratch};
use half::f16;
use proptest::prelude::*;

fn simd_sets() -> Vec<Kernels> {
    KernelSet::available()
        .into_iter()
        .filter(|&s| s != KernelSet::Scalar)
        .map(|s| Kernels::new(s).unwrap())
        .collect()
}

fn scalar() -> Kernels {
    Kernels::new(KernelSet::Scalar).unwrap()
}

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (x, y)) in got.iter().zip(want).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs reference {y}"
        );
    }
}

/// Values over several magnitudes (so blocks get different scales), with exact zeros.
fn value() -> impl Strategy<Value = f32> {
    prop_oneof![-1.0f32..1.0, -100.0f32..100.0, Just(0.0f32)]
}

/// (rows, cols, tokens, weights, activations): odd sizes, empty, size 1, and some long rows.
fn problem() -> impl Strategy<Value = (usize, usize, usize, Vec<f32>, Vec<f32>)> {
    (
        0usize..19,
        prop_oneof![0usize..70, 250usize..300],
        0usize..6,
    )
        .prop_flat_map(|(rows, cols, n)| {
            (
                Just(rows),
                Just(cols),
                Just(n),
                prop::collection::vec(value(), rows * cols),
                prop::collection::vec(value(), n * cols),
            )
        })
}

/// Quantizes `n` activation vectors with kernel set `k`.
fn quantize_acts(k: &Kernels, x: &[f32], n: usize, cols: usize) -> (Vec<i8>, Vec<f32>) {
    let nb = blocks(cols);
    let mut q = vec![0i8; n * nb * QK];
    let mut d = vec![0f32; n * nb];
    for t in 0..n {
        k.quantize_q8(
            &x[t * cols..(t + 1) * cols],
            &mut q[t * nb * QK..(t + 1) * nb * QK],
            &mut d[t * nb..(t + 1) * nb],
        );
    }
    (q, d)
}

/// `y = w x` through the full driver (tiles, edges, blocking) with kernel set `k`.
fn product(k: &Kernels, m: &Mat, x: &[f32], n: usize) -> Vec<f32> {
    let pool = Pool::new(1);
    let mut y = vec![f32::NAN; n * m.rows()];
    let mut s = QScratch::new(n, m.cols().max(1));
    matmul(k, &pool, m, x, &mut y, &mut s);
    y
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn f32_and_f16_products_match_scalar((rows, cols, n, w, x) in problem()) {
        prop_assume!(cols > 0);
        let wp = pack_float(&w, rows, cols, 0.0);
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let hp = pack_float(&wh, rows, cols, f16::ZERO);
        let f32m = Mat::F32P { w: &wp, rows, cols };
        let f16m = Mat::F16P { w: &hp, rows, cols };
        let (want32, want16) = (product(&scalar(), &f32m, &x, n), product(&scalar(), &f16m, &x, n));
        for k in simd_sets() {
            // fused multiply-adds differ from the reference's separate ones by rounding only
            close(&product(&k, &f32m, &x, n), &want32, 2e-5 * (cols as f32).max(1.0), k.set().name());
            close(&product(&k, &f16m, &x, n), &want16, 2e-5 * (cols as f32).max(1.0), k.set().name());
        }
    }

    #[test]
    fn quantize_q8_is_bit_exact((_rows, cols, n, _w, x) in problem()) {
        let (wq, wd) = quantize_acts(&scalar(), &x, n, cols);
        for k in simd_sets() {
            let (q, d) = quantize_acts(&k, &x, n, cols);
            prop_assert_eq!(&q, &wq, "{} int8", k.set().name());
            prop_assert_eq!(&d, &wd, "{} scales", k.set().name());
        }
    }

    #[test]
    fn q8_products_are_bit_exact((rows, cols, n, w, x) in problem()) {
        prop_assume!(cols > 0);
        let (wq, wd) = quantize_matrix(&w, rows, cols);
        let wp = pack_q8(&wq, &wd, rows, cols);
        let m = Mat::Q8P { w: &wp, rows, cols };
        let want = product(&scalar(), &m, &x, n);
        for k in simd_sets() {
            let got = product(&k, &m, &x, n);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got), bits(&want), "{}", k.set().name());
        }
    }
}

/// Under `cross/test.sh` each emulated board states the set it must get; elsewhere the best
/// set must be at least as good as what the compile target implies.
#[test]
fn detection_picks_the_expected_set() {
    let detected = KernelSet::detect();
    if let Ok(want) = std::env::var("EDGECSM_EXPECT_KERNELS") {
        assert_eq!(detected.name(), want, "kernel set detected for this CPU");
    }
    #[cfg(target_arch = "aarch64")]
    assert_ne!(detected, KernelSet::Scalar, "every aarch64 CPU has NEON");
    assert!(detected.supported());
    assert_eq!(Kernels::new(detected).unwrap().set(), detected);
}

#[test]
fn unknown_or_unsupported_sets_are_errors() {
    assert!(KernelSet::parse("sse9").is_err());
    for s in KernelSet::ALL {
        assert_eq!(KernelSet::parse(s.name()).unwrap(), s);
        assert_eq!(Kernels::new(s).is_ok(), s.supported());
    }
}
