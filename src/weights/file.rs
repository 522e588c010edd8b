//! One memory-mapped `.safetensors` file: its header, parsed and validated once, and the byte
//! range of every tensor inside the mapping.
//!
//! The mapping is held in an `Arc`, so tensors taken from the file (see [`super::tensor`]) keep
//! it alive on their own and carry no lifetime.

use crate::{Error, Result};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of the little-endian header length that starts every safetensors file.
const LEN_BYTES: usize = 8;

/// A tensor as stored: dtype, shape and the absolute byte range inside the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

/// An open, validated safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    path: PathBuf,
    map: Arc<Mmap>,
    tensors: HashMap<String, StoredTensor>,
    /// Tensor names in data order.
    order: Vec<String>,
    metadata: HashMap<String, String>,
}

impl SafetensorsFile {
    /// Maps `path` and validates its header: JSON, dtypes, shapes against byte sizes, contiguous
    /// offsets and a data section that ends exactly at the end of the file. Never panics on a
    /// bad file: every problem is an [`Error::BadFile`] naming it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < LEN_BYTES as u64 {
            return Err(bad(
                &path,
                format!("file is {len} bytes long, too short to hold a safetensors header"),
            ));
        }
        // SAFETY: the mapping is read-only and private to this process; like every mmap-based
        // loader we assume the file is not truncated or rewritten while the model is loaded.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (header_len, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| bad(&path, e.to_string()))?;
        let base = LEN_BYTES + header_len;
        let mut tensors = HashMap::new();
        let mut order: Vec<(usize, String)> = Vec::new();
        for (name, info) in meta.tensors() {
            let (s, e) = info.data_offsets;
            // read_metadata checked s <= e and that the data ends at the end of the buffer
            let range = base + s..base + e;
            if range.end > map.len() {
                return Err(bad(
                    &path,
                    format!("tensor `{name}` lies past the end of the file"),
                ));
            }
            order.push((s, name.clone()));
            tensors.insert(
                name,
                StoredTensor {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    range,
                },
            );
        }
        order.sort();
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok(SafetensorsFile {
            path,
            map: Arc::new(map),
            tensors,
            order: order.into_iter().map(|(_, n)| n).collect(),
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole mapped file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub(crate) fn map(&self) -> &Arc<Mmap> {
        &self.map
    }

    /// The `__metadata__` string map (empty when the file has none).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Tensor names in the order their data is stored.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&StoredTensor> {
        self.tensors.get(name)
    }

    /// The raw little-endian bytes of a stored tensor of this file (empty for a tensor that
    /// does not belong to it).
    pub fn data(&self, t: &StoredTensor) -> &[u8] {
        self.map.get(t.range.clone()).unwrap_or(&[])
    }
}

fn bad(path: &Path, msg: String) -> Error {
    Error::BadFile {
        path: path.to_path_buf(),
        msg,
    }
}
