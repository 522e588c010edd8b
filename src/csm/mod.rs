//! Sesame's CSM (Conversational Speech Model): a Llama backbone over interleaved text and audio
//! frames predicts codebook 0 of the next 80 ms frame; a small depth decoder predicts the other
//! codebooks of that frame one after another; Mimi turns frames into sound.
//!
//! [`config`] reads and validates `config.json`; [`prompt`] turns conversation turns into the
//! token layout of the upstream processor. [`llama`] is the decoder stack both transformers
//! use, [`embed`] the text and audio-frame embeddings, [`depth`] the depth decoder,
//! [`sampling`] temperature/top-k sampling with a seeded RNG, [`generate`] the per-frame
//! machinery, [`context`] the conversation (segments, KV cache kept across turns, eviction),
//! [`model`] loading.
//!
//! Typical use: [`Csm::load`] a model directory, wrap it in an `Arc`, open a [`Conversation`],
//! add earlier turns with [`Conversation::add_segment`] (prompt ids + Mimi codes), then
//! [`Conversation::generate`] a new turn, receiving each frame in a callback (decode it with a
//! [`crate::mimi::MimiDecoderStream`] over [`Csm::codec`] for playback as it arrives).

pub mod config;
pub mod context;
pub mod context_file;
pub mod depth;
pub mod embed;
pub mod generate;
pub mod llama;
pub mod model;
pub mod prompt;
pub mod sampling;
pub mod teacher;

pub use config::CsmConfig;
pub use context::{ContextReport, Conversation, Generated, Segment};
pub use generate::{FrameEngine, FrameProfile, GenerateOptions, InvalidCodes, StopReason};
pub use llama::LlamaConfig;
pub use model::{Csm, CsmDims};
pub use sampling::SamplingParams;
