//! Checking a code array against the codec that is to decode it: how many codebooks
//! (at least the semantic ones, at most all), and every index inside its codebook.

use crate::mimi::MimiConfig;
use crate::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// Whether a codec with `cfg` can produce or consume `n_q` codebooks.
pub fn check_num_codebooks(n_q: usize, cfg: &MimiConfig) -> Result<()> {
    if n_q > cfg.num_quantizers {
        return Err(Error::Invalid(format!(
            "{n_q} codebooks requested but the model has only {}",
            cfg.num_quantizers
        )));
    }
    if n_q < cfg.num_semantic_quantizers || n_q == 0 {
        return Err(Error::Invalid(format!(
            "{n_q} codebooks is too few: the model needs at least its {} semantic codebook(s)",
            cfg.num_semantic_quantizers.max(1)
        )));
    }
    Ok(())
}

/// `codes` (`[n_q, frames]`, int64 as stored) as per-codebook rows of indices, after checking
/// the codebook count, that there is at least one frame, and every index is in
/// `0..codebook_size`. `what` names the source in error messages.
pub fn check_codes(
    codes: ArrayView2<'_, i64>,
    cfg: &MimiConfig,
    what: &str,
) -> Result<Vec<Vec<u32>>> {
    let (n_q, frames) = codes.dim();
    check_num_codebooks(n_q, cfg).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
    if frames == 0 {
        return Err(Error::Invalid(format!(
            "{what}: the code array has no frames"
        )));
    }
    let k = cfg.codebook_size;
    let mut rows = Vec::with_capacity(n_q);
    for (q, row) in codes.outer_iter().enumerate() {
        let mut out = Vec::with_capacity(frames);
        for (t, &v) in row.iter().enumerate() {
            if v < 0 || v as u64 >= k as u64 {
                return Err(Error::Invalid(format!(
                    "{what}: code {v} at codebook {q}, frame {t} is outside 0..{k}"
                )));
            }
            out.push(v as u32);
        }
        rows.push(out);
    }
    Ok(rows)
}

/// Per-codebook rows (all the same length) as an `[n_q, frames]` int64 array.
pub fn to_array<T: Copy + Into<i64>>(rows: &[impl AsRef<[T]>]) -> Result<Array2<i64>> {
    let frames = rows.first().map_or(0, |r| r.as_ref().len());
    if let Some(q) = rows.iter().position(|r| r.as_ref().len() != frames) {
        return Err(Error::Invalid(format!(
            "codebook {q} has {} frames, codebook 0 has {frames}",
            rows[q].as_ref().len()
        )));
    }
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| r.as_ref().iter().map(|&v| v.into()))
        .collect();
    Array2::from_shape_vec((rows.len(), frames), flat)
        .map_err(|e| Error::Invalid(format!("code array: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn cfg() -> MimiConfig {
        MimiConfig {
            num_quantizers: 4,
            num_semantic_quantizers: 2,
            codebook_size: 16,
            ..MimiConfig::default()
        }
    }

    #[test]
    fn valid_codes_pass_through() {
        let a = array![[0i64, 15, 3], [1, 2, 3], [4, 5, 6]];
        let rows = check_codes(a.view(), &cfg(), "c.npy").unwrap();
        assert_eq!(rows, [vec![0, 15, 3], vec![1, 2, 3], vec![4, 5, 6]]);
        assert_eq!(to_array(&rows).unwrap(), a);
    }

    #[test]
    fn out_of_range_codes_are_located() {
        for (v, q, t) in [
            (16i64, 1, 2),
            (-1, 0, 0),
            (i64::MAX, 2, 1),
            (i64::MIN, 1, 0),
        ] {
            let mut a = Array2::<i64>::zeros((3, 3));
            a[[q, t]] = v;
            let e = check_codes(a.view(), &cfg(), "c.npy")
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                format!("c.npy: code {v} at codebook {q}, frame {t} is outside 0..16")
            );
        }
    }

    #[test]
    fn codebook_count_and_empty_arrays() {
        let e = check_codes(Array2::zeros((5, 2)).view(), &cfg(), "c.npy").unwrap_err();
        assert!(
            e.to_string()
                .contains("5 codebooks requested but the model has only 4"),
            "{e}"
        );
        let e = check_codes(Array2::zeros((1, 2)).view(), &cfg(), "c.npy").unwrap_err();
        assert!(e.to_string().contains("at least its 2 semantic"), "{e}");
        let e = check_codes(Array2::zeros((0, 2)).view(), &cfg(), "c.npy").unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
        let e = check_codes(Array2::zeros((2, 0)).view(), &cfg(), "c.npy").unwrap_err();
        assert!(e.to_string().contains("no frames"), "{e}");
        assert!(check_num_codebooks(4, &cfg()).is_ok());
        assert!(check_num_codebooks(2, &cfg()).is_ok());
    }

    #[test]
    fn ragged_rows_are_rejected() {
        let e = to_array(&[vec![1u32, 2], vec![3]]).unwrap_err();
        assert!(e.to_string().contains("codebook 1 has 1 frames"), "{e}");
    }
}
