//! Row normalizations over token-major activations `[t, c]` (`c` = the weight's length).

fn check_rows(len: usize, c: usize, what: &str) {
    assert!(c > 0, "{what}: empty weight");
    assert!(
        len.is_multiple_of(c),
        "{what}: activations ({len}) are not whole rows of {c}"
    );
}

/// Mean and `1 / sqrt(biased variance + eps)` of one row (two passes, f32 like PyTorch's CPU
/// kernel but without its blocked summation order).
fn mean_rstd(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = row.iter().sum::<f32>() / n;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

fn rms_scale(row: &[f32], eps: f32) -> f32 {
    let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// LayerNorm in place over each row of `x`: `(x - mean) / sqrt(var + eps) * weight + bias` with
/// the biased variance (PyTorch `nn.LayerNorm`). `bias` `None` means no bias.
pub fn layer_norm(x: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    let c = weight.len();
    check_rows(x.len(), c, "layer_norm");
    if let Some(b) = bias {
        assert_eq!(b.len(), c, "layer_norm: bias and weight lengths differ");
    }
    for row in x.chunks_exact_mut(c) {
        let (mean, rstd) = mean_rstd(row, eps);
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * rstd * weight[i] + bias.map_or(0.0, |b| b[i]);
        }
    }
}

/// [`layer_norm`] of `src` written to `dst` (same shape), leaving `src` (the residual) intact.
pub fn layer_norm_to(src: &[f32], dst: &mut [f32], weight: &[f32], bias: Option<&[f32]>, eps: f32) {
    assert_eq!(
        src.len(),
        dst.len(),
        "layer_norm_to: src and dst lengths differ"
    );
    dst.copy_from_slice(src);
    layer_norm(dst, weight, bias, eps);
}

/// RMSNorm in place over each row of `x` (Llama): `x / sqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(x: &mut [f32], weight: &[f32], eps: f32) {
    let c = weight.len();
    check_rows(x.len(), c, "rms_norm");
    for row in x.chunks_exact_mut(c) {
        let s = rms_scale(row, eps);
        for (v, w) in row.iter_mut().zip(weight) {
            *v = *v * s * w;
        }
    }
}

/// [`rms_norm`] of `src` written to `dst` (same shape), leaving `src` (the residual) intact.
pub fn rms_norm_to(src: &[f32], dst: &mut [f32], weight: &[f32], eps: f32) {
    assert_eq!(
        src.len(),
        dst.len(),
        "rms_norm_to: src and dst lengths differ"
    );
    dst.copy_from_slice(src);
    rms_norm(dst, weight, eps);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed).wrapping_mul(2654435761) >> 8;
                // an offset mean, as real activations have
                (h as f32 / (1 << 24) as f32) * 6.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn layer_norm_matches_f64() {
        for &(t, c) in &[(1, 1), (3, 7), (5, 512)] {
            let x = data(t * c, 1);
            let w = data(c, 2);
            let b = data(c, 3);
            for bias in [None, Some(&b[..])] {
                let mut y = x.clone();
                layer_norm(&mut y, &w, bias, 1e-5);
                let mut z = vec![0f32; x.len()];
                layer_norm_to(&x, &mut z, &w, bias, 1e-5);
                assert_eq!(y, z);
                for r in 0..t {
                    let row: Vec<f64> = x[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
                    let mean = row.iter().sum::<f64>() / c as f64;
                    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
                    for i in 0..c {
                        let want = (row[i] - mean) / (var + 1e-5).sqrt() * w[i] as f64
                            + bias.map_or(0.0, |b| b[i] as f64);
                        let got = y[r * c + i] as f64;
                        assert!(
                            (got - want).abs() < 2e-5 * (1.0 + want.abs()),
                            "{got} {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rms_norm_matches_f64() {
        for &(t, c) in &[(1, 1), (2, 9), (4, 2048)] {
            let x = data(t * c, 4);
            let w = data(c, 5);
            let mut y = x.clone();
            rms_norm(&mut y, &w, 1e-5);
            let mut z = vec![0f32; x.len()];
            rms_norm_to(&x, &mut z, &w, 1e-5);
            assert_eq!(y, z);
            for r in 0..t {
                let row: Vec<f64> = x[r * c..(r + 1) * c].iter().map(|&v| v as f64).collect();
                let ms = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
                for i in 0..c {
                    let want = row[i] / (ms + 1e-5).sqrt() * w[i] as f64;
                    let got = y[r * c + i] as f64;
                    assert!(
                        (got - want).abs() < 2e-5 * (1.0 + want.abs()),
                        "{got} {want}"
                    );
                }
            }
        }
    }
}
