//! A streaming safetensors writer: the header is computed up front from the known output
//! tensors, then the data is written tensor by tensor in the writer's order, so memory stays
//! bounded by what the caller converts at a time.
//!
//! Tensors are laid out by element size, largest first, and the header is padded with spaces
//! to a multiple of 8 bytes; every tensor's data therefore starts at a file offset that is a
//! multiple of its element size, and a page-aligned memory map of the file can be viewed
//! in place.

use crate::weights::Dtype;
use crate::{Error, Result};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// One tensor of the output file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

impl OutTensor {
    /// Bytes of data (None on overflow or a bit count that is not whole bytes).
    pub fn nbytes(&self) -> Option<usize> {
        let n = self
            .shape
            .iter()
            .try_fold(1usize, |a, &b| a.checked_mul(b))?;
        let bits = n.checked_mul(self.dtype.bitsize())?;
        bits.is_multiple_of(8).then_some(bits / 8)
    }

    fn align(&self) -> usize {
        (self.dtype.bitsize() / 8).max(1)
    }
}

/// Writes one safetensors file (see the module docs).
pub struct StreamWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// (name, byte length) in data order.
    order: Vec<(String, usize)>,
    /// Index in `order` of the tensor being written (or to be begun).
    current: usize,
    /// Bytes still to write for the current tensor (None before its `begin`).
    left: Option<usize>,
    data_bytes: u64,
}

impl StreamWriter {
    /// Creates `path` and writes its header for `tensors` and the `metadata` string map.
    pub fn create(
        path: &Path,
        tensors: Vec<OutTensor>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self> {
        let invalid = |msg: String| Error::Invalid(format!("{}: {msg}", path.display()));
        let mut indexed: Vec<(usize, OutTensor)> = tensors.into_iter().enumerate().collect();
        // largest element first, then in the caller's order
        indexed.sort_by_key(|(i, t)| (std::cmp::Reverse(t.align()), *i));
        let mut header = Map::new();
        header.insert("__metadata__".into(), json!(metadata));
        let mut order = Vec::with_capacity(indexed.len());
        let mut offset = 0usize;
        for (_, t) in indexed {
            let n = t
                .nbytes()
                .ok_or_else(|| invalid(format!("tensor `{}` has an impossible size", t.name)))?;
            debug_assert!(offset.is_multiple_of(t.align()));
            let entry = json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + n],
            });
            if header.insert(t.name.clone(), entry).is_some() || t.name == "__metadata__" {
                return Err(invalid(format!("tensor `{}` is written twice", t.name)));
            }
            offset += n;
            order.push((t.name, n));
        }
        let mut text = serde_json::to_string(&Value::Object(header))
            .map_err(|e| invalid(format!("header: {e}")))?
            .into_bytes();
        while !text.len().is_multiple_of(8) {
            text.push(b' ');
        }
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let io = |e| Error::io(path, e);
        out.write_all(&(text.len() as u64).to_le_bytes())
            .map_err(io)?;
        out.write_all(&text).map_err(io)?;
        Ok(StreamWriter {
            path: path.to_path_buf(),
            out,
            order,
            current: 0,
            left: None,
            data_bytes: offset as u64,
        })
    }

    /// Tensor names in the order their data must be written.
    pub fn order(&self) -> Vec<String> {
        self.order.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Starts the data of `name`, which must be the next tensor in [`StreamWriter::order`].
    pub fn begin(&mut self, name: &str) -> Result<()> {
        self.end_current()?;
        match self.order.get(self.current) {
            Some((n, len)) if n == name => {
                self.left = Some(*len);
                Ok(())
            }
            _ => Err(self.invalid(format!("tensor `{name}` written out of order"))),
        }
    }

    /// Appends bytes to the current tensor (never past its size).
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self.left {
            Some(left) if bytes.len() <= left => {
                self.left = Some(left - bytes.len());
                self.out
                    .write_all(bytes)
                    .map_err(|e| Error::io(&self.path, e))
            }
            _ => Err(self.invalid("more data than the header announced".into())),
        }
    }

    /// Checks that every tensor was written in full, flushes and syncs the file. Returns the
    /// number of data bytes.
    pub fn finish(mut self) -> Result<u64> {
        self.end_current()?;
        if self.current != self.order.len() {
            let name = self.order[self.current].0.clone();
            return Err(self.invalid(format!("tensor `{name}` was never written")));
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.data_bytes)
    }

    fn end_current(&mut self) -> Result<()> {
        match self.left.take() {
            None => Ok(()),
            Some(0) => {
                self.current += 1;
                Ok(())
            }
            Some(n) => {
                let name = self.order[self.current].0.clone();
                Err(self.invalid(format!("tensor `{name}` is {n} bytes short")))
            }
        }
    }

    fn invalid(&self, msg: String) -> Error {
        Error::Invalid(format!("{}: {msg}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    fn tensors() -> Vec<OutTensor> {
        let t = |name: &str, dtype, shape: &[usize]| OutTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        };
        vec![
            t("q", Dtype::I8, &[3]),
            t("h", Dtype::F16, &[3]),
            t("f", Dtype::F32, &[1]),
            t("l", Dtype::I64, &[1]),
        ]
    }

    #[test]
    fn layout_is_aligned_and_readable_by_the_reference_parser() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let meta = BTreeMap::from([("format".to_string(), "edgecsm".to_string())]);
        let mut w = StreamWriter::create(&p, tensors(), meta).unwrap();
        assert_eq!(w.order(), ["l", "f", "h", "q"]);
        for (name, len) in [("l", 8), ("f", 4), ("h", 6), ("q", 3)] {
            w.begin(name).unwrap();
            // in two pieces: the writer streams
            w.write(&vec![len as u8; len - 1]).unwrap();
            w.write(&[len as u8]).unwrap();
        }
        assert_eq!(w.finish().unwrap(), 21);
        let bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("h").unwrap().data(), &[6u8; 6]);
        assert_eq!(st.tensor("q").unwrap().dtype(), Dtype::I8);
        let base = bytes.as_ptr() as usize;
        for (name, align) in [("l", 8), ("f", 4), ("h", 2)] {
            let at = st.tensor(name).unwrap().data().as_ptr() as usize - base;
            assert_eq!(at % align, 0, "{name}");
        }
    }

    #[test]
    fn misuse_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.safetensors");
        let mut w = StreamWriter::create(&p, tensors(), BTreeMap::new()).unwrap();
        assert!(w.begin("q").is_err());
        assert!(w.write(&[0]).is_err());
        w.begin("l").unwrap();
        assert!(w.write(&[0; 9]).is_err());
        w.write(&[0; 7]).unwrap();
        assert!(
            w.begin("f")
                .unwrap_err()
                .to_string()
                .contains("`l` is 1 bytes short")
        );
        let w = StreamWriter::create(&p, tensors(), BTreeMap::new()).unwrap();
        assert!(
            w.finish()
                .unwrap_err()
                .to_string()
                .contains("never written")
        );
        let mut dup = tensors();
        dup.push(dup[0].clone());
        assert!(StreamWriter::create(&p, dup, BTreeMap::new()).is_err());
    }
}
