//! The crate's error type: every failure a user can cause (bad file, bad tensor, bad option)
//! ends up here with a message that names the thing at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid safetensors file: {msg}")]
    BadFile { path: PathBuf, msg: String },
    #[error("tensor `{name}` is missing from the model")]
    MissingTensor { name: String },
    #[error("tensor `{name}`: {msg}")]
    BadTensor { name: String, msg: String },
    #[error("{path}: invalid config: {msg}")]
    BadConfig { path: PathBuf, msg: String },
    #[error("kernel selection: {0}")]
    Kernels(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn bad_tensor(name: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::BadTensor {
            name: name.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
