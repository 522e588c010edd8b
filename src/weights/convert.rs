//! Conversions between the little-endian float encodings a safetensors file may hold and the
//! in-memory `f32`/`f16` values the kernels read.

use half::{bf16, f16};
use safetensors::Dtype;

/// Whether `dtype` is one of the float encodings this crate reads as values.
pub fn is_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// Bytes per element of a float encoding (None for other dtypes).
pub fn float_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F32 => Some(4),
        Dtype::F16 | Dtype::BF16 => Some(2),
        _ => None,
    }
}

/// Decodes `out.len()` values of `dtype` from `bytes` into `out`. Returns false (leaving `out`
/// unspecified) when `dtype` is not a float encoding or `bytes` has the wrong length.
pub fn decode_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) -> bool {
    let Some(size) = float_size(dtype) else {
        return false;
    };
    if bytes.len() != out.len() * size {
        return false;
    }
    match dtype {
        Dtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Dtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
    }
    true
}

/// Decodes a whole float tensor into a new `Vec<f32>` (None as for [`decode_f32`]).
pub fn to_f32_vec(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let n = bytes.len() / float_size(dtype)?;
    let mut v = vec![0f32; n];
    decode_f32(dtype, bytes, &mut v).then_some(v)
}

/// Decodes little-endian f16 bytes (None when the length is odd).
pub fn to_f16_vec(bytes: &[u8]) -> Option<Vec<f16>> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect(),
    )
}

/// Appends the little-endian encoding of `x` as f32 values.
pub fn push_f32_le(x: &[f32], out: &mut Vec<u8>) {
    for v in x {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends the little-endian encoding of `x` rounded to f16.
pub fn push_f16_le(x: &[f32], out: &mut Vec<u8>) {
    for v in x {
        out.extend_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_each_float_encoding() {
        let x = [1.5f32, -2.25, 0.0, 65504.0];
        let mut b = Vec::new();
        push_f32_le(&x, &mut b);
        assert_eq!(to_f32_vec(Dtype::F32, &b).unwrap(), x);
        b.clear();
        push_f16_le(&x, &mut b);
        assert_eq!(to_f32_vec(Dtype::F16, &b).unwrap(), x);
        let bb: Vec<u8> = x
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(
            to_f32_vec(Dtype::BF16, &bb).unwrap(),
            [1.5, -2.25, 0.0, 65536.0]
        );
        assert!(to_f32_vec(Dtype::I8, &bb).is_none());
        let mut out = [0f32; 3];
        assert!(!decode_f32(Dtype::F32, &[0u8; 8], &mut out));
    }
}
