//! Sesame's CSM (Conversational Speech Model): a Llama backbone over interleaved text and audio
//! frames predicts codebook 0 of the next 80 ms frame; a small depth decoder predicts the other
//! codebooks of that frame one after another; Mimi turns frames into sound.
//!
//! [`llama`] is the decoder stack both transformers use, [`embed`] the text and audio-frame
//! embeddings, [`depth`] the depth decoder, [`sampling`] temperature/top-k sampling with a
//! seeded RNG, [`generate`] the per-frame loop, [`context`] the conversation (segments, KV cache
//! kept across turns, eviction), [`model`] loading.

pub mod embed;
pub mod llama;
pub mod sampling;
