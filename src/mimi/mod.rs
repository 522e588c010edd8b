//! Kyutai's Mimi codec: configuration (and, later, the SEANet/transformer/RVQ model code).

pub mod config;

pub use config::MimiConfig;
