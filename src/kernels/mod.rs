//! Compute kernels.
//!
//! The hot loops (row dot products for f32, f16 and Q8 weights, and the activation quantizer)
//! live behind one table, [`Kernels`], with a scalar reference ([`scalar`]) and SIMD twins
//! (`x86` for AVX2/FMA/F16C, `neon` for aarch64, with an `sdot` variant) chosen once at start-up
//! by CPU feature detection ([`dispatch`]). Everything above that table — threading over output
//! rows ([`pool`]), matrix-vector and matrix-matrix products ([`matmul`]) and the model building
//! blocks — is written once on top of it.

pub mod act;
pub mod attention;
pub mod conv;
pub mod dispatch;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod q8;
pub mod rope;
pub mod scalar;
#[cfg(test)]
pub(crate) mod test_rand;

#[cfg(target_arch = "aarch64")]
pub mod neon;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use dispatch::{KernelSet, Kernels};
pub use matmul::{Mat, QScratch};
pub use pool::Pool;
