//! Finding the safetensors files of a model: a single `.safetensors` file, a directory with
//! `model.safetensors`, or a sharded directory whose `model.safetensors.index.json` maps every
//! tensor to its shard.

use crate::{Error, Result};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The name of the single-file checkpoint in a model directory.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The name of the shard index in a sharded model directory.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The files that make up a model.
#[derive(Clone, Debug)]
pub struct ModelFiles {
    /// The directory (or the file itself for a single-file path).
    pub root: PathBuf,
    /// Shard paths, sorted.
    pub shards: Vec<PathBuf>,
    /// The parsed index of a sharded model.
    pub index: Option<ShardIndex>,
}

/// `model.safetensors.index.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct ShardIndex {
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Tensor name -> shard file name (relative to the directory).
    pub weight_map: HashMap<String, String>,
}

/// Locates the safetensors files under `path` and checks that every shard the index names
/// exists (without opening them).
pub fn locate(path: &Path) -> Result<ModelFiles> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(ModelFiles {
            root: path.to_path_buf(),
            shards: vec![path.to_path_buf()],
            index: None,
        });
    }
    let index_path = path.join(INDEX_FILE);
    if index_path.is_file() {
        let index = read_index(&index_path)?;
        let names: BTreeSet<&str> = index.weight_map.values().map(String::as_str).collect();
        let mut shards = Vec::with_capacity(names.len());
        for name in names {
            if !is_plain_file_name(name) {
                return Err(bad_index(
                    &index_path,
                    format!(
                        "shard name `{}` is not a plain file name",
                        name.escape_debug()
                    ),
                ));
            }
            let shard = path.join(name);
            if !shard.is_file() {
                return Err(bad_index(
                    &index_path,
                    format!(
                        "shard `{}` does not exist in {}",
                        name.escape_debug(),
                        path.display()
                    ),
                ));
            }
            shards.push(shard);
        }
        if shards.is_empty() {
            return Err(bad_index(&index_path, "the weight_map is empty".into()));
        }
        return Ok(ModelFiles {
            root: path.to_path_buf(),
            shards,
            index: Some(index),
        });
    }
    let single = path.join(SINGLE_FILE);
    if single.is_file() {
        return Ok(ModelFiles {
            root: path.to_path_buf(),
            shards: vec![single],
            index: None,
        });
    }
    Err(Error::Invalid(format!(
        "{}: no {SINGLE_FILE} or {INDEX_FILE} in this directory",
        path.display()
    )))
}

fn read_index(path: &Path) -> Result<ShardIndex> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut index: ShardIndex =
        serde_json::from_str(&text).map_err(|e| bad_index(path, e.to_string()))?;
    index.path = path.to_path_buf();
    Ok(index)
}

fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\\')
}

pub(crate) fn bad_index(path: &Path, msg: String) -> Error {
    Error::Invalid(format!("{}: invalid shard index: {msg}", path.display()))
}
