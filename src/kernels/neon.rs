//! NEON twins of the scalar kernels (placeholder: forwards to scalar until the SIMD kernels land).
pub use super::scalar::gemm_q8 as gemm_q8_sdot;
pub use super::scalar::{gemm_f16, gemm_f32, gemm_q8, quantize_q8};
