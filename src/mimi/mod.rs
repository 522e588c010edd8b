//! Kyutai's Mimi codec: 24 kHz mono audio <-> 12.5 Hz frames of split-RVQ codes.
//!
//! [`config`] reads and validates `config.json`, [`layout`] numbers the SEANet layers as a
//! checkpoint stores them; [`conv`] holds the streaming causal (transposed) convolutions,
//! [`seanet`] the convolutional encoder/decoder, [`transformer`] the sliding-window
//! transformers, [`rvq`] the split residual vector quantizer, `pipeline` the encoder and
//! decoder stacks with their chunk-by-chunk state, [`model`] loading and batch encode/decode
//! over them, [`stream`] the frame-by-frame encoder and decoder streams.

pub mod config;
pub mod conv;
pub mod layout;
pub mod model;
mod pipeline;
pub mod rvq;
pub mod seanet;
pub mod stream;
pub mod transformer;

pub use config::MimiConfig;
pub use model::Mimi;
pub use pipeline::{DecodeTrace, EncodeTrace};
pub use stream::{MimiDecoderStream, MimiEncoderStream};
