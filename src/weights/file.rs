//! One memory-mapped `.safetensors` file: its header, parsed and validated once, and the byte
//! range of every tensor inside the mapping.
//!
//! The mapping is held in an `Arc`, so tensors taken from the file (see [`super::tensor`]) keep
//! it alive on their own and carry no lifetime.

use crate::{Error, Result};
use memmap2::Mmap;
use safetensors::Dtype;
use serde_json::Value;
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
    /// bad file: every problem is an [`Error::BadFile`] naming the file and, where one is at
    /// fault, the tensor.
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
        let header = parse_header(&map).map_err(|m| bad(&path, m))?;
        let base = LEN_BYTES + header.len;
        let mut tensors = HashMap::with_capacity(header.tensors.len());
        let mut order = Vec::with_capacity(header.tensors.len());
        for (name, t) in header.tensors {
            order.push(name.clone());
            tensors.insert(
                name,
                StoredTensor {
                    dtype: t.dtype,
                    shape: t.shape,
                    range: base + t.start..base + t.end,
                },
            );
        }
        Ok(SafetensorsFile {
            path,
            map: Arc::new(map),
            tensors,
            order,
            metadata: header.metadata,
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

/// Longest header accepted (as the safetensors crate: 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// A tensor entry of the header, checked on its own.
#[derive(Debug)]
struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    /// Offsets inside the data section.
    start: usize,
    end: usize,
}

/// A validated header: tensors in data order.
#[derive(Debug)]
struct Header {
    len: usize,
    tensors: Vec<(String, Entry)>,
    metadata: HashMap<String, String>,
}

/// Parses and validates the header of a whole safetensors file `b` (the error is a message
/// without the file name).
fn parse_header(b: &[u8]) -> std::result::Result<Header, String> {
    let file_len = b.len() as u64;
    let n = u64::from_le_bytes(b[..LEN_BYTES].try_into().map_err(|_| "too short")?);
    if n > file_len - LEN_BYTES as u64 || n > MAX_HEADER {
        return Err(format!(
            "the header length field says {n} bytes but the file is {file_len} bytes long \
             (truncated, or not a safetensors file)"
        ));
    }
    let len = n as usize;
    let text = std::str::from_utf8(&b[LEN_BYTES..LEN_BYTES + len])
        .map_err(|e| format!("the header is not UTF-8 text ({e})"))?;
    let json: Value =
        serde_json::from_str(text).map_err(|e| format!("the header is not valid JSON ({e})"))?;
    let Value::Object(obj) = json else {
        return Err("the header is not a JSON object".into());
    };
    let mut metadata = HashMap::new();
    let mut tensors = Vec::with_capacity(obj.len());
    for (name, v) in obj {
        if name == "__metadata__" {
            let m = v
                .as_object()
                .ok_or("`__metadata__` must be a JSON object")?;
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| {
                    format!(
                        "`__metadata__` entry `{}` must be a string",
                        k.escape_debug()
                    )
                })?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let e = entry(&v).map_err(|m| format!("tensor `{}`: {m}", name.escape_debug()))?;
        tensors.push((name, e));
    }
    tensors.sort_by_key(|(_, e)| (e.start, e.end));
    let data_len = b.len() - LEN_BYTES - len;
    let mut at = 0usize;
    let mut prev: Option<&str> = None;
    for (name, e) in &tensors {
        if e.start != at {
            let after = prev.map_or("the start of the data section".into(), |p| {
                format!("`{}`", p.escape_debug())
            });
            return Err(format!(
                "tensor `{}`: data_offsets [{}, {}] {} {after}",
                name.escape_debug(),
                e.start,
                e.end,
                if e.start < at {
                    "overlap"
                } else {
                    "leave a gap after"
                }
            ));
        }
        at = e.end;
        prev = Some(name);
    }
    if at > data_len {
        let past: Vec<String> = tensors
            .iter()
            .filter(|(_, e)| e.end > data_len)
            .map(|(n, _)| format!("`{}`", n.escape_debug()))
            .collect();
        let shown = past.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        let more = if past.len() > 3 {
            format!(" and {} more", past.len() - 3)
        } else {
            String::new()
        };
        return Err(format!(
            "truncated: {} {shown}{more} {} past the end of the file (the header describes \
             {at} bytes of data, the file holds {data_len})",
            if past.len() == 1 { "tensor" } else { "tensors" },
            if past.len() == 1 { "lies" } else { "lie" }
        ));
    }
    if at < data_len {
        return Err(format!(
            "{} bytes after the end of the last tensor's data{}",
            data_len - at,
            prev.map_or(String::new(), |p| format!(" (`{}`)", p.escape_debug()))
        ));
    }
    Ok(Header {
        len,
        tensors,
        metadata,
    })
}

/// One tensor entry: dtype, shape and offsets, with its byte size matching its offsets.
fn entry(v: &Value) -> std::result::Result<Entry, String> {
    let obj = v
        .as_object()
        .ok_or("the entry must be an object with dtype, shape and data_offsets")?;
    let dv = obj.get("dtype").ok_or("no `dtype`")?;
    let dtype: Dtype =
        serde_json::from_value(dv.clone()).map_err(|_| format!("unknown dtype {dv}"))?;
    let uints = |key: &str| -> std::result::Result<Vec<usize>, String> {
        let a = obj
            .get(key)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("`{key}` must be an array of non-negative integers"))?;
        a.iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .ok_or_else(|| format!("`{key}` holds {x}, not a non-negative integer"))
            })
            .collect()
    };
    let shape = uints("shape")?;
    let off = uints("data_offsets")?;
    let [start, end] = off[..] else {
        return Err(format!("`data_offsets` must be [start, end], got {off:?}"));
    };
    if end < start {
        return Err(format!(
            "data_offsets [{start}, {end}] end before they start"
        ));
    }
    let bits = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.bitsize()))
        .ok_or_else(|| format!("shape {shape:?} of {dtype:?} overflows"))?;
    if bits % 8 != 0 {
        return Err(format!(
            "shape {shape:?} of {dtype:?} is not a whole number of bytes"
        ));
    }
    if end - start != bits / 8 {
        return Err(format!(
            "shape {shape:?} of {dtype:?} needs {} bytes but data_offsets [{start}, {end}] \
             hold {} (a corrupt shape or dtype?)",
            bits / 8,
            end - start
        ));
    }
    Ok(Entry {
        dtype,
        shape,
        start,
        end,
    })
}
