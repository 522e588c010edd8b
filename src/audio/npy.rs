//! Mimi code arrays as NumPy `.npy` files: int64, shape `[n_q, frames]` (row q holds codebook
//! q's index for every frame), the layout `MimiModel.encode(...).audio_codes[0]` has.

use super::atomic::write_atomically;
use crate::{Error, Result};
use ndarray::{Array, Array2, ArrayView2, Dimension};
use ndarray_npy::{ReadNpyError, ReadNpyExt, WriteNpyExt};
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: {msg}", path.display()))
}

/// Reads an int64 array of `D`'s dimensionality (any byte order, C or Fortran order); `what`
/// names it in errors ("codes") and `layout` gives its expected shape ("[codebooks, frames]").
pub fn read_i64<D: Dimension>(path: &Path, what: &str, layout: &str) -> Result<Array<i64, D>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Array::<i64, D>::read_npy(BufReader::new(file)).map_err(|e| match e {
        ReadNpyError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            bad(path, "not a NumPy .npy file or truncated")
        }
        ReadNpyError::Io(io) => Error::io(path, io),
        ReadNpyError::ParseHeader(h) => bad(path, format!("not a valid NumPy .npy file ({h})")),
        ReadNpyError::WrongNdim(_, n) => bad(
            path,
            format!("{what} must be a {layout} array, found {n} dimension(s)"),
        ),
        ReadNpyError::WrongDescriptor(d) => bad(
            path,
            format!("{what} must be an int64 array, found dtype {d}"),
        ),
        ReadNpyError::MissingData => bad(path, "file is shorter than its header says (truncated)"),
        ReadNpyError::ExtraBytes(n) => bad(path, format!("{n} unexpected bytes after the data")),
        other => bad(path, format!("cannot read {what} ({other})")),
    })
}

/// Reads an int64 `[n_q, frames]` code array.
pub fn read_codes(path: &Path) -> Result<Array2<i64>> {
    read_i64(path, "codes", "2-D [codebooks, frames]")
}

/// Writes `codes` as a little-endian C-order int64 `.npy` file, atomically.
pub fn write_codes(path: &Path, codes: ArrayView2<'_, i64>) -> Result<()> {
    write_atomically(path, |file| {
        let mut w = BufWriter::new(file);
        codes
            .write_npy(&mut w)
            .map_err(|e| bad(path, format!("cannot write codes ({e})")))?;
        w.flush().map_err(|e| Error::io(path, e))
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
}
