//! Element-wise activations (in place) and the row softmax.

/// ELU with alpha 1: `x` if `x > 0`, else `exp(x) - 1` (PyTorch `nn.ELU()`).
///
/// Branch-free and call-free per element so the loop vectorizes (a libm `expm1f` call per
/// element was a sixth of Mimi's run time); within about 2 ulp of `expm1`.
#[inline(always)]
pub fn elu(x: &mut [f32]) {
    for v in x {
        let e = expm1_nonpos(*v);
        // NaN compares false and stays NaN
        *v = if *v <= 0.0 { e } else { *v };
    }
}

/// `exp(x) - 1` for `x <= 0` (any other input gives some finite value), without calls or
/// branches. `x = n ln2 + r` with `|r| <= ln2 / 2`; `expm1(x) = 2^n expm1(r) + (2^n - 1)`,
/// where `2^n - 1` is exact for `-43 <= n <= 0` and `expm1(r)` is a degree-7 Taylor polynomial
/// (truncation below 2e-8 relative), so there is no cancellation near 0.
#[inline(always)]
fn expm1_nonpos(x: f32) -> f32 {
    // below -30, expm1 is -1 to f32 precision (and 2^n stays a normal number)
    let x = if x < -30.0 { -30.0 } else { x };
    let (scale, p) = split_exp(x);
    scale * p + (scale - 1.0)
}

/// `exp(x)` for `x <= 0` (0 below -87.3, where it would be subnormal; any positive input gives
/// 1), without calls or branches, within about 2 ulp: `2^n + 2^n expm1(r)` as in the ELU's
/// `expm1_nonpos`.
#[inline(always)]
pub fn exp_nonpos(x: f32) -> f32 {
    let c = if x < -87.3 { -87.3 } else { x };
    let (scale, p) = split_exp(c);
    let e = scale + scale * p;
    if x < -87.3 { 0.0 } else { e }
}

/// `(2^n, expm1(r))` with `x = n ln2 + r`, `|r| <= ln2 / 2`, for `-87.3 <= x <= 0` (larger
/// inputs are taken as 0).
#[inline(always)]
fn split_exp(x: f32) -> (f32, f32) {
    let x = if x > 0.0 { 0.0 } else { x };
    // round to nearest by the 1.5 * 2^23 trick: the integer lands in the low mantissa bits
    const SHIFT: f32 = 12_582_912.0;
    let t = x * std::f32::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    // Cody-Waite: LN2_HI has few enough bits that n * LN2_HI is exact for |n| <= 128
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = r + r
        * r
        * (0.5
            + r * (1.0 / 6.0
                + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0))))));
    // 2^n from n's two's-complement bits in t (n >= -126, so the exponent stays normal)
    let ni = t.to_bits().wrapping_sub(SHIFT.to_bits());
    let scale = f32::from_bits(ni.wrapping_add(127).wrapping_shl(23));
    (scale, p)
}

/// Exact GELU, PyTorch's `gelu(approximate='none')`: `0.5 * x * (1 + erf(x / sqrt 2))`.
///
/// `1 + erf(-z) = erfc(z)` from the Chebyshev fit of Numerical Recipes' `erfcc` (relative
/// error below 1.2e-7 for every `z >= 0`), evaluated without calls or branches so the loop
/// vectorizes (libm's `erff` per element was 3 % of Mimi's streaming time).
#[inline(always)]
pub fn gelu(x: &mut [f32]) {
    for v in x {
        let z = v.abs() * std::f32::consts::FRAC_1_SQRT_2;
        let t = 1.0 / (1.0 + 0.5 * z);
        let poly = -1.265_512_2
            + t * (1.000_023_7
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_204
                                    + t * (1.488_515_9
                                        + t * (-0.822_152_23 + t * 0.170_872_77))))))));
        let erfc = t * exp_nonpos(poly - z * z);
        // 1 + erf(v / sqrt 2): erfc(z) below 0, 2 - erfc(z) above (NaN stays NaN)
        let one_plus_erf = if *v < 0.0 { erfc } else { 2.0 - erfc };
        *v = 0.5 * *v * one_plus_erf;
    }
}

/// SiLU (swish): `x * sigmoid(x) = x / (1 + exp(-x))`.
pub fn silu(x: &mut [f32]) {
    for v in x {
        *v = silu1(*v);
    }
}

/// `v * sigmoid(v)` from `e = exp(-|v|)` (no overflow, no call, no branch): `v / (1 + e)` for
/// `v >= 0`, `v e / (1 + e)` below.
#[inline(always)]
fn silu1(v: f32) -> f32 {
    let e = exp_nonpos(-v.abs());
    let num = if v < 0.0 { v * e } else { v };
    num / (1.0 + e)
}

/// SwiGLU with separate products: `gate[i] = silu(gate[i]) * up[i]` in place.
#[inline(always)]
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul: gate and up lengths differ");
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu1(*g) * u;
    }
}

/// SwiGLU from one fused product: `gate_up` is `[t, 2 * hidden]` with each row `[gate(hidden),
/// up(hidden)]` (the gate and up projections stacked as one `[2 * hidden, d]` weight), and
/// `out` is `[t, hidden]` with `out[t, i] = silu(gate[t, i]) * up[t, i]`.
pub fn swiglu(gate_up: &[f32], hidden: usize, out: &mut [f32]) {
    assert!(hidden > 0, "swiglu: zero hidden size");
    assert!(
        gate_up.len().is_multiple_of(2 * hidden) && out.len() * 2 == gate_up.len(),
        "swiglu: gate_up ({}) must be [t, 2 * {hidden}] and out ({}) [t, {hidden}]",
        gate_up.len(),
        out.len()
    );
    for (row, o) in gate_up
        .chunks_exact(2 * hidden)
        .zip(out.chunks_exact_mut(hidden))
    {
        let (g, u) = row.split_at(hidden);
        for ((ov, gv), uv) in o.iter_mut().zip(g).zip(u) {
            *ov = silu1(*gv) * uv;
        }
    }
}

/// Softmax of one row in place: `exp(x - max) / sum`. `-inf` entries become 0. A row with no
/// finite maximum (all `-inf`, a NaN or a `+inf` in the wrong place) has no distribution and
/// becomes all NaN, as PyTorch's softmax gives: NaN propagates to the model's output, where
/// it is reported as an error (a corrupt model or input), instead of a panic here.
#[inline(always)]
pub fn softmax(x: &mut [f32]) {
    // f32::max ignores NaN; a NaN anywhere makes the sum NaN below
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        x.fill(f32::NAN);
        return;
    }
    for v in x.iter_mut() {
        *v = exp_nonpos(*v - max);
    }
    // eight partial sums, so the loop vectorizes
    let mut part = [0f32; 8];
    let (body, rest) = x.split_at(x.len() / 8 * 8);
    for c in body.chunks_exact(8) {
        for (p, v) in part.iter_mut().zip(c) {
            *p += v;
        }
    }
    let sum: f32 = part.iter().sum::<f32>() + rest.iter().sum::<f32>();
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: fn(&mut [f32]), cases: &[(f64, f64)], tol: f64, name: &str) {
        let mut x: Vec<f32> = cases.iter().map(|c| c.0 as f32).collect();
        f(&mut x);
        for (got, &(inp, want)) in x.iter().zip(cases) {
            assert!(
                (*got as f64 - want).abs() <= tol * (1.0 + want.abs()),
                "{name}({inp}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn gelu_matches_the_erf_form() {
        // 0.5 x (1 + erf(x / sqrt 2)), from high-precision references
        check(
            gelu,
            &[
                (0.0, 0.0),
                (1.0, 0.8413447460685429),
                (-2.0, -0.04550026389635842),
                (0.5, 0.34573123063700656),
                (-0.5, -0.15426876936299344),
                (3.0, 2.99595030590511),
                (-6.0, -5.919525869479969e-09),
                (10.0, 10.0),
            ],
            2e-7,
            "gelu",
        );
    }

    #[test]
    fn elu_and_silu_known_values() {
        check(
            elu,
            &[
                (1.5, 1.5),
                (0.0, 0.0),
                (-1.0, -0.6321205588285577),
                (-1e-4, -9.999500016666251e-05),
                (-20.0, -0.9999999979388464),
            ],
            2e-7,
            "elu",
        );
        check(
            silu,
            &[
                (0.0, 0.0),
                (1.0, 0.7310585786300049),
                (-1.0, -0.2689414213699951),
                (5.0, 4.966535745378576),
                (-100.0, -3.720075976020836e-42),
            ],
            2e-7,
            "silu",
        );
    }

    #[test]
    fn elu_tracks_expm1_over_its_whole_range() {
        // dense sweep of the negative axis plus the rounding boundaries of n
        let mut xs: Vec<f32> = (0..200_000).map(|i| -(i as f32) * 2e-4).collect();
        xs.extend((0..2000).map(|i| -(i as f32) * 0.02));
        let half_ln2 = -std::f32::consts::LN_2 / 2.0;
        xs.extend([
            -1e-30,
            -1e-8,
            half_ln2,
            f32::from_bits(half_ln2.to_bits() + 1),
            f32::from_bits(half_ln2.to_bits() - 1),
            -87.0,
            -1e30,
            f32::NEG_INFINITY,
        ]);
        let mut y = xs.clone();
        elu(&mut y);
        let mut worst = 0f64;
        for (&x, &got) in xs.iter().zip(&y) {
            let want = (x as f64).exp_m1();
            let err = (got as f64 - want).abs() / want.abs().max(f64::MIN_POSITIVE);
            assert!(
                err <= 3e-7 || got as f64 == want,
                "elu({x}) = {got}, want {want}"
            );
            worst = worst.max(if want == 0.0 { 0.0 } else { err });
        }
        assert!(worst > 0.0, "the sweep compared nothing");
        let mut pos = [0.5f32, 3.0, f32::MAX, f32::INFINITY, f32::NAN];
        elu(&mut pos);
        assert_eq!(&pos[..4], &[0.5, 3.0, f32::MAX, f32::INFINITY]);
        assert!(pos[4].is_nan());
    }

    #[test]
    fn exp_and_gelu_track_f64_over_their_whole_range() {
        let xs: Vec<f32> = (0..400_000).map(|i| -(i as f32) * 2.5e-4).collect();
        for &x in &xs {
            let (got, want) = (exp_nonpos(x) as f64, (x as f64).exp());
            let subnormal = x < -87.3;
            assert!(
                (got - want).abs() <= 2.5e-7 * want || (subnormal && got == 0.0),
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_nonpos(0.0), 1.0);
        assert_eq!(exp_nonpos(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpos(f32::NAN).is_nan());
        // GELU on both sides: relative to its value, or absolutely near its zero crossing
        let mut g: Vec<f32> = (-60_000..60_000).map(|i| i as f32 * 2e-4).collect();
        let xs = g.clone();
        gelu(&mut g);
        let mut worst = [0f64; 2];
        for (&x, &got) in xs.iter().zip(&g) {
            let x64 = x as f64;
            let want = 0.5 * x64 * libm::erfc(-x64 * std::f64::consts::FRAC_1_SQRT_2);
            // f32 rounding of the exponent `-z^2 + ...` (18 at x = -6) costs relative accuracy
            // in the far negative tail, where the values are below 1e-6 (and below 1e-12 an
            // absolute error of 1e-12 is nothing to a model)
            let main = x >= -2.0;
            let tol = if main { 6e-7 } else { 5e-6 };
            let err = (got as f64 - want).abs();
            assert!(
                err <= tol * want.abs() || (!main && err <= 1e-12),
                "gelu({x}) = {got}, want {want}"
            );
            if want.abs() > 1e-12 {
                worst[main as usize] = worst[main as usize].max(err / want.abs());
            }
        }
        println!("gelu worst relative error: {worst:?} (x < -2, x >= -2)");
        let mut edge = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        gelu(&mut edge);
        assert_eq!(edge[0], f32::INFINITY);
        assert!(edge[1] == 0.0 || edge[1].is_nan(), "{}", edge[1]);
        assert!(edge[2].is_nan());
    }

    #[test]
    fn swiglu_forms_agree() {
        let gate_up: Vec<f32> = (0..12).map(|i| i as f32 * 0.37 - 2.0).collect();
        let mut out = vec![0f32; 6];
        swiglu(&gate_up, 3, &mut out);
        for t in 0..2 {
            let mut g = gate_up[t * 6..t * 6 + 3].to_vec();
            silu_mul(&mut g, &gate_up[t * 6 + 3..t * 6 + 6]);
            for i in 0..3 {
                let x = gate_up[t * 6 + i] as f64;
                let want = x / (1.0 + (-x).exp()) * gate_up[t * 6 + 3 + i] as f64;
                assert!((out[t * 3 + i] as f64 - want).abs() < 1e-6, "{t} {i}");
                assert_eq!(g[i], out[t * 3 + i]);
            }
        }
    }

    #[test]
    fn softmax_is_stable_and_normalized() {
        let mut x = vec![1000.0f32, 1001.0, f32::NEG_INFINITY, 999.0];
        softmax(&mut x);
        let e = [(-1f64).exp(), 1.0, 0.0, (-2f64).exp()];
        let s: f64 = e.iter().sum();
        for (g, w) in x.iter().zip(e) {
            assert!((*g as f64 - w / s).abs() < 1e-6, "{g} vs {}", w / s);
        }
        assert_eq!(x[2], 0.0);
    }

    #[test]
    fn softmax_of_rows_without_a_distribution_is_nan_not_a_panic() {
        for row in [
            vec![f32::NEG_INFINITY; 3],
            vec![f32::NAN; 4],
            vec![1.0, f32::NAN, 2.0],
            vec![f32::INFINITY, 0.0],
        ] {
            let mut x = row.clone();
            softmax(&mut x);
            assert!(x.iter().all(|v| v.is_nan()), "{row:?} -> {x:?}");
        }
        let mut empty: [f32; 0] = [];
        softmax(&mut empty);
    }
}
