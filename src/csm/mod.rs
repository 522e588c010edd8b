//! Sesame's CSM: a Llama-style backbone over interleaved text and Mimi audio frames predicts
//! codebook 0 of the next frame; a small depth decoder predicts the remaining codebooks.
//!
//! [`config`] reads and validates `config.json`; [`prompt`] turns conversation turns into the
//! token layout of the upstream processor.

pub mod config;
pub mod prompt;

pub use config::CsmConfig;
