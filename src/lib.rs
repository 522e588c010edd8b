//! edgecsm: a CPU-only, allocation-conscious runtime for Kyutai's Mimi codec and Sesame's CSM.
//!
//! Modules follow the data flow: [`kernels`] (matmul, conv and the small building blocks, with
//! scalar references and SIMD twins chosen at start-up) -> [`weights`] (memory-mapped
//! safetensors, validation, quantization) -> model code -> streaming -> CLI/daemon.

pub mod audio;
pub mod config;
pub mod csm;
pub mod daemon;
pub mod error;
pub mod kernels;
pub mod mimi;
pub mod quantize;
pub mod stream;
pub mod synth;
pub mod weights;

pub use error::{Error, Result};
