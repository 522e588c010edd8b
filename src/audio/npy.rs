//! Int64 NumPy `.npy` files: Mimi code arrays `[n_q, frames]` (row q holds codebook q's index
//! for every frame, the layout `MimiModel.encode(...).audio_codes[0]` has) and token ids.
//!
//! The reader parses the header itself (format versions 1-3, either byte order, C or Fortran
//! order) and checks the declared shape against the bytes the file holds before allocating
//! anything, so a header claiming terabytes is an error, not an abort.

use super::output::write_output;
use crate::{Error, Result};
use ndarray::{Array, Array2, ArrayView2, Dimension, IxDyn, ShapeBuilder};
use ndarray_npy::WriteNpyExt;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Longest header accepted (numpy writes a few dozen bytes; its own reader stops at 10 000).
const MAX_HEADER: usize = 64 * 1024;

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

/// The header of an `.npy` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub descr: String,
    pub fortran_order: bool,
    pub shape: Vec<usize>,
    /// Offset of the data.
    pub data_offset: usize,
}

/// A value of the header's Python dict literal.
#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Bool(bool),
    Tuple(Vec<u64>),
}

/// A tiny reader of the dict literal numpy writes:
/// `{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }`.
struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// Consumes `c` (after whitespace) if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{}` at byte {}", c as char, self.i))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.skip_ws();
        let q = match self.s.get(self.i) {
            Some(&q) if q == b'\'' || q == b'"' => q,
            _ => return Err(format!("expected a string at byte {}", self.i)),
        };
        let start = self.i + 1;
        let len = self.s[start..]
            .iter()
            .position(|&c| c == q)
            .ok_or("unterminated string")?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn int(&mut self) -> Result<u64, String> {
        self.skip_ws();
        let start = self.i;
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        let v = digits
            .parse::<u64>()
            .map_err(|_| format!("expected a dimension at byte {start}"))?;
        // Python 2 headers write longs as `3L`
        let _ = self.eat(b'L');
        Ok(v)
    }

    fn value(&mut self) -> Result<Lit, String> {
        self.skip_ws();
        let rest = &self.s[self.i.min(self.s.len())..];
        for (word, v) in [("True", true), ("False", false)] {
            if rest.starts_with(word.as_bytes()) {
                self.i += word.len();
                return Ok(Lit::Bool(v));
            }
        }
        if self.eat(b'(') {
            let mut dims = Vec::new();
            while !self.eat(b')') {
                dims.push(self.int()?);
                if !self.eat(b',') {
                    self.expect(b')')?;
                    break;
                }
            }
            return Ok(Lit::Tuple(dims));
        }
        self.string().map(Lit::Str)
    }
}

/// Parses the magic, version and header dict of an `.npy` file (without checking the data).
pub fn parse_header(b: &[u8]) -> Result<NpyHeader, String> {
    if !b.starts_with(MAGIC) || b.len() < 10 {
        return Err("not a NumPy .npy file or truncated".into());
    }
    let (len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            let l = b.get(8..12).ok_or("not a NumPy .npy file or truncated")?;
            (u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    if len > MAX_HEADER {
        return Err(format!("not a valid NumPy .npy file (a {len}-byte header)"));
    }
    let text = b
        .get(start..start + len)
        .ok_or("not a NumPy .npy file or truncated (header cut short)")?;
    let invalid = |m: String| format!("not a valid NumPy .npy file ({m})");
    let mut lx = Lexer { s: text, i: 0 };
    lx.expect(b'{').map_err(invalid)?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    while !lx.eat(b'}') {
        let key = lx.string().map_err(invalid)?;
        lx.expect(b':').map_err(invalid)?;
        let v = lx.value().map_err(invalid)?;
        match (key.as_str(), v) {
            ("descr", Lit::Str(s)) => descr = Some(s),
            ("fortran_order", Lit::Bool(f)) => fortran = Some(f),
            ("shape", Lit::Tuple(t)) => shape = Some(t),
            (k, v) => return Err(invalid(format!("unexpected {k:?}: {v:?}"))),
        }
        if !lx.eat(b',') {
            lx.expect(b'}').map_err(invalid)?;
            break;
        }
    }
    let missing = |k: &str| invalid(format!("no `{k}` in the header"));
    let shape = shape.ok_or_else(|| missing("shape"))?;
    Ok(NpyHeader {
        descr: descr.ok_or_else(|| missing("descr"))?,
        fortran_order: fortran.ok_or_else(|| missing("fortran_order"))?,
        shape: shape
            .into_iter()
            .map(|d| usize::try_from(d).map_err(|_| invalid(format!("dimension {d} too large"))))
            .collect::<Result<_, _>>()?,
        data_offset: start + len,
    })
}

/// Parses a whole int64 `.npy` file held in memory into a C-order array of any rank; the
/// error is a message without the file name. `what` names the array ("codes").
pub fn parse_i64(b: &[u8], what: &str) -> Result<Array<i64, IxDyn>, String> {
    let h = parse_header(b)?;
    let big_endian = match h.descr.as_str() {
        "<i8" => false,
        ">i8" => true,
        d => return Err(format!("{what} must be an int64 array, found dtype {d:?}")),
    };
    let data = &b[h.data_offset.min(b.len())..];
    let n = h
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| n.checked_mul(8).is_some())
        .ok_or_else(|| format!("the header declares an impossible shape {:?}", h.shape))?;
    if n * 8 > data.len() {
        return Err(format!(
            "file is shorter than its header says (truncated): shape {:?} needs {} bytes of \
             data, the file holds {}",
            h.shape,
            n * 8,
            data.len()
        ));
    }
    if n * 8 < data.len() {
        return Err(format!(
            "{} unexpected bytes after the data",
            data.len() - n * 8
        ));
    }
    let values: Vec<i64> = data
        .chunks_exact(8)
        .map(|c| {
            let a = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
            if big_endian {
                i64::from_be_bytes(a)
            } else {
                i64::from_le_bytes(a)
            }
        })
        .collect();
    let shape = IxDyn(&h.shape);
    let a = if h.fortran_order {
        Array::from_shape_vec(shape.f(), values).map(|a| a.as_standard_layout().into_owned())
    } else {
        Array::from_shape_vec(shape, values)
    };
    a.map_err(|e| format!("cannot shape the data: {e}"))
}

/// Reads an int64 array of `D`'s dimensionality (any byte order, C or Fortran order); `what`
/// names it in errors ("codes") and `layout` gives its expected shape ("[codebooks, frames]").
pub fn read_i64<D: Dimension>(path: &Path, what: &str, layout: &str) -> Result<Array<i64, D>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if let (Some(want), Ok(h)) = (D::NDIM, parse_header(&bytes))
        && h.shape.len() != want
    {
        return Err(bad(
            path,
            format!(
                "{what} must be a {layout} array, found {} dimension(s)",
                h.shape.len()
            ),
        ));
    }
    parse_i64(&bytes, what)
        .map_err(|m| bad(path, m))?
        .into_dimensionality::<D>()
        .map_err(|e| bad(path, format!("{what} must be a {layout} array ({e})")))
}

/// Reads an int64 `[n_q, frames]` code array.
pub fn read_codes(path: &Path) -> Result<Array2<i64>> {
    read_i64(path, "codes", "2-D [codebooks, frames]")
}

/// Writes `codes` as a little-endian C-order int64 `.npy` file under the output policy
/// (atomically for a regular file).
pub fn write_codes(path: &Path, codes: ArrayView2<'_, i64>) -> Result<()> {
    write_output(path, |out| {
        codes
            .write_npy(out)
            .map_err(|e| bad(path, format!("cannot write codes ({e})")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array3, ShapeBuilder, array};

    fn err_of(path: &Path) -> String {
        read_codes(path).unwrap_err().to_string()
    }

    #[test]
    fn round_trip_and_numpy_header() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.npy");
        let a: Array2<i64> = array![[0, 2047, 5], [1, 2, 3]];
        write_codes(&p, a.view()).unwrap();
        assert_eq!(read_codes(&p).unwrap(), a);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[..6], b"\x93NUMPY");
        let header = String::from_utf8_lossy(&bytes[10..80]);
        assert!(header.contains("'descr': '<i8'"), "{header}");
        assert!(header.contains("'fortran_order': False"), "{header}");
        assert!(header.contains("'shape': (2, 3)"), "{header}");
    }

    #[test]
    fn reads_the_python_written_fixture() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mimi/b/chirp.codes.npy");
        let c = read_codes(&p).unwrap();
        assert_eq!(c.dim(), (8, 7));
        assert!(c.iter().all(|&v| (0..16).contains(&v)));
    }

    #[test]
    fn fortran_order_reads_as_the_same_array() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.npy");
        let a: Array2<i64> = array![[1, 2, 3], [4, 5, 6]];
        let f = Array2::from_shape_vec((2, 3).f(), vec![1i64, 4, 2, 5, 3, 6]).unwrap();
        assert!(!f.is_standard_layout());
        f.write_npy(std::fs::File::create(&p).unwrap()).unwrap();
        assert_eq!(read_codes(&p).unwrap(), a);
    }

    #[test]
    fn wrong_dtype_ndim_and_garbage_are_named() {
        let d = tempfile::tempdir().unwrap();
        let f32s = d.path().join("f32.npy");
        array![[1.0f32, 2.0]]
            .write_npy(std::fs::File::create(&f32s).unwrap())
            .unwrap();
        assert!(
            err_of(&f32s).contains("int64") && err_of(&f32s).contains("f4"),
            "{}",
            err_of(&f32s)
        );
        let i32s = d.path().join("i32.npy");
        array![[1i32, 2]]
            .write_npy(std::fs::File::create(&i32s).unwrap())
            .unwrap();
        assert!(err_of(&i32s).contains("int64"), "{}", err_of(&i32s));
        let one = d.path().join("1d.npy");
        Array1::<i64>::zeros(4)
            .write_npy(std::fs::File::create(&one).unwrap())
            .unwrap();
        assert!(
            err_of(&one).contains("found 1 dimension"),
            "{}",
            err_of(&one)
        );
        let three = d.path().join("3d.npy");
        Array3::<i64>::zeros((1, 2, 3))
            .write_npy(std::fs::File::create(&three).unwrap())
            .unwrap();
        assert!(
            err_of(&three).contains("found 3 dimension"),
            "{}",
            err_of(&three)
        );
        let text = d.path().join("text.npy");
        std::fs::write(&text, b"hello, this is not numpy").unwrap();
        assert!(
            err_of(&text).contains("text.npy: not a"),
            "{}",
            err_of(&text)
        );
        let cut = d.path().join("cut.npy");
        let full = d.path().join("full.npy");
        write_codes(&full, array![[1i64, 2, 3, 4]].view()).unwrap();
        let bytes = std::fs::read(&full).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
        assert!(err_of(&cut).contains("truncated"), "{}", err_of(&cut));
        let missing = d.path().join("missing.npy");
        assert!(err_of(&missing).contains("missing.npy"));
    }

    fn npy(header: &str, version: u8, data: &[u8]) -> Vec<u8> {
        let mut v = b"\x93NUMPY".to_vec();
        v.push(version);
        v.push(0);
        if version == 1 {
            v.extend((header.len() as u16).to_le_bytes());
        } else {
            v.extend((header.len() as u32).to_le_bytes());
        }
        v.extend(header.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn declared_sizes_are_checked_before_allocating() {
        for shape in [
            "(4, 2000000000000)",
            "(18446744073709551615,)",
            "(4294967296, 4294967296)",
        ] {
            let h = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': {shape}, }}\n");
            let e = parse_i64(&npy(&h, 1, &[0; 64]), "codes").unwrap_err();
            assert!(
                e.contains("truncated") || e.contains("impossible"),
                "{shape}: {e}"
            );
        }
        // a header length beyond the file, in each version
        for v in [1u8, 2, 3] {
            let mut b = npy(
                "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }",
                v,
                &[0; 8],
            );
            b[8] = 0xFF;
            b[9] = 0xFF;
            assert!(parse_i64(&b, "codes").is_err());
        }
    }

    #[test]
    fn versions_byte_orders_and_python2_headers() {
        let data: Vec<u8> = [1i64, -2, 3].iter().flat_map(|v| v.to_be_bytes()).collect();
        let h = "{'descr': '>i8', 'fortran_order': False, 'shape': (3L,), }";
        for v in [1, 2, 3] {
            let a = parse_i64(&npy(h, v, &data), "ids").unwrap();
            assert_eq!(a.as_slice().unwrap(), [1, -2, 3]);
        }
        let e = parse_i64(&npy(h, 4, &data), "ids").unwrap_err();
        assert!(e.contains("version 4"), "{e}");
        for (h, want) in [
            ("{'descr': '<i8', 'shape': (3,), }", "fortran_order"),
            (
                "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), 'x': 1}",
                "not a valid",
            ),
            (
                "{'descr': '<i8', 'fortran_order': Maybe, 'shape': (3,)}",
                "not a valid",
            ),
            (
                "{'descr': '<i8', 'fortran_order': False, 'shape': (3",
                "not a valid",
            ),
            (
                "{'descr': '<i4', 'fortran_order': False, 'shape': (3,)}",
                "int64",
            ),
        ] {
            let e = parse_i64(&npy(h, 1, &data), "ids").unwrap_err();
            assert!(e.contains(want), "{h}: {e}");
        }
    }
}
