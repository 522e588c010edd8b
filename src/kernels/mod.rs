//! Compute kernels.
//!
//! The hot loops live behind one table, [`Kernels`], chosen once at start-up by CPU feature
//! detection ([`dispatch`]): a register-tile microkernel per packed weight format ([`packed`]:
//! F32P, F16P, Q8P, Q4P, each defined once) registered with its tile shape in [`gemm`], with scalar
//! references and SIMD twins (AVX2, AVX-512 VNNI, NEON, NEON `sdot`), and the activation
//! quantizer ([`scalar`], `x86`, `neon`), and the row operations outside the products (`vector`:
//! activations, softmax, attention's inner loops). Everything above that table — threading over output
//! rows ([`pool`]), matrix-vector and matrix-matrix products ([`matmul`]) and the model building
//! blocks — is written once on top of it.

pub mod act;
pub mod attention;
pub mod conv;
pub mod dispatch;
pub mod gemm;
pub mod matmul;
pub mod norm;
pub mod packed;
pub mod pool;
pub mod q4;
pub mod q8;
pub mod rope;
pub mod scalar;
#[cfg(test)]
pub(crate) mod test_rand;
pub(crate) mod vector;

#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use dispatch::{KernelSet, Kernels};
pub use matmul::{Mat, QScratch};
pub use pool::Pool;
