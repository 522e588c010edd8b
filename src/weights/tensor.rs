//! Owned tensor handles with no lifetime: a [`WeightMatrix`] (a kernel-ready matrix in F32, F16
//! or Q8) and an [`F32Tensor`] (norm weights, biases, codebooks). Each holds either a range of
//! the shared memory map (zero-copy, when the stored layout is what the kernels read and the
//! data is aligned) or an owned buffer (after a conversion).

use crate::kernels::Mat;
use crate::kernels::matmul::Format;
use crate::kernels::packed::PackedFormat;
use half::f16;
use memmap2::Mmap;
use std::ops::Range;
use std::sync::Arc;

/// Element types whose every bit pattern is a valid value, so a suitably aligned byte range of
/// the map can be viewed as a slice of them.
///
/// # Safety
/// Implement only for types with no padding and no invalid bit patterns.
pub(crate) unsafe trait Plain: Copy + 'static {}
// SAFETY: f32, f16 and i8 are plain numbers: every bit pattern is a value, no padding.
unsafe impl Plain for f32 {}
// SAFETY: as above.
unsafe impl Plain for f16 {}
// SAFETY: as above.
unsafe impl Plain for i8 {}
// SAFETY: as above.
unsafe impl Plain for u8 {}

/// A slice of `T` that lives either in the memory map or in an owned buffer.
#[derive(Clone, Debug)]
pub(crate) enum Store<T: Plain> {
    Mapped {
        map: Arc<Mmap>,
        /// Byte range inside `map`, aligned for `T`, a whole number of `T`.
        range: Range<usize>,
    },
    Owned(Vec<T>),
}

impl<T: Plain> Store<T> {
    /// A zero-copy view of `range`, or None when the range is misaligned for `T`, not a whole
    /// number of `T`, out of the map, or the target is big-endian (the file is little-endian).
    pub(crate) fn mapped(map: &Arc<Mmap>, range: Range<usize>) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        let bytes = map.get(range.clone())?;
        let aligned = (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>());
        (cfg!(target_endian = "little") && aligned && bytes.len().is_multiple_of(size)).then(|| {
            Store::Mapped {
                map: Arc::clone(map),
                range,
            }
        })
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        match self {
            Store::Mapped { map, range } => {
                let bytes = &map[range.clone()];
                // SAFETY: `mapped` checked that the range lies in the map, is aligned for T and
                // is a whole number of T; T is `Plain` (any bit pattern is a value, and the
                // file's little-endian order is the target's); the Arc keeps the map alive as
                // long as `self`, and the map is read-only.
                unsafe {
                    std::slice::from_raw_parts(
                        bytes.as_ptr().cast::<T>(),
                        bytes.len() / std::mem::size_of::<T>(),
                    )
                }
            }
            Store::Owned(v) => v,
        }
    }

    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self, Store::Mapped { .. })
    }
}

/// The data of a packed matrix, by element type.
#[derive(Clone, Debug)]
pub(crate) enum PackedStore {
    F32(Store<f32>),
    F16(Store<f16>),
    Q8(Store<u8>),
    Q4(Store<u8>),
}

#[derive(Clone, Debug)]
enum MatData {
    F32(Store<f32>),
    F16(Store<f16>),
    Q8 { q: Store<i8>, d: Store<f16> },
    F32P(Store<f32>),
    F16P(Store<f16>),
    Q8P(Store<u8>),
    Q4P(Store<u8>),
}

/// A weight matrix `[rows, cols]` in a kernel format, owning its data (or a share of the map).
/// A stored tensor of more than two dimensions is viewed as `[first dim, product of the rest]`.
#[derive(Clone, Debug)]
pub struct WeightMatrix {
    name: String,
    rows: usize,
    cols: usize,
    data: MatData,
}

impl WeightMatrix {
    pub(crate) fn f32(name: String, rows: usize, cols: usize, w: Store<f32>) -> Self {
        debug_assert_eq!(w.as_slice().len(), rows * cols);
        WeightMatrix {
            name,
            rows,
            cols,
            data: MatData::F32(w),
        }
    }

    pub(crate) fn f16(name: String, rows: usize, cols: usize, w: Store<f16>) -> Self {
        debug_assert_eq!(w.as_slice().len(), rows * cols);
        WeightMatrix {
            name,
            rows,
            cols,
            data: MatData::F16(w),
        }
    }

    pub(crate) fn q8(name: String, rows: usize, cols: usize, q: Store<i8>, d: Store<f16>) -> Self {
        WeightMatrix {
            name,
            rows,
            cols,
            data: MatData::Q8 { q, d },
        }
    }

    /// An owned f32 matrix built by a model (e.g. a repacked conv-transpose weight). Returns
    /// None when `w.len() != rows * cols`.
    pub fn from_f32(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        w: Vec<f32>,
    ) -> Option<Self> {
        (rows.checked_mul(cols) == Some(w.len()))
            .then(|| Self::f32(name.into(), rows, cols, Store::Owned(w)))
    }

    /// An owned f16 matrix built by a model (None when `w.len() != rows * cols`).
    pub fn from_f16(
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        w: Vec<f16>,
    ) -> Option<Self> {
        (rows.checked_mul(cols) == Some(w.len()))
            .then(|| Self::f16(name.into(), rows, cols, Store::Owned(w)))
    }

    /// The borrowed kernel view.
    pub fn mat(&self) -> Mat<'_> {
        let (rows, cols) = (self.rows, self.cols);
        match &self.data {
            MatData::F32(w) => Mat::F32 {
                w: w.as_slice(),
                rows,
                cols,
            },
            MatData::F16(w) => Mat::F16 {
                w: w.as_slice(),
                rows,
                cols,
            },
            MatData::Q8 { q, d } => Mat::Q8 {
                q: q.as_slice(),
                d: d.as_slice(),
                rows,
                cols,
            },
            MatData::F32P(w) => Mat::F32P {
                w: w.as_slice(),
                rows,
                cols,
            },
            MatData::F16P(w) => Mat::F16P {
                w: w.as_slice(),
                rows,
                cols,
            },
            MatData::Q8P(w) => Mat::Q8P {
                w: w.as_slice(),
                rows,
                cols,
            },
            MatData::Q4P(w) => Mat::Q4P {
                w: w.as_slice(),
                rows,
                cols,
            },
        }
    }

    /// The full tensor name (prefix included).
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn format(&self) -> Format {
        match self.data {
            MatData::F32(_) => Format::F32,
            MatData::F16(_) => Format::F16,
            MatData::Q8 { .. } => Format::Q8,
            MatData::F32P(_) => Format::Packed(PackedFormat::F32P),
            MatData::F16P(_) => Format::Packed(PackedFormat::F16P),
            MatData::Q8P(_) => Format::Packed(PackedFormat::Q8P),
            MatData::Q4P(_) => Format::Packed(PackedFormat::Q4P),
        }
    }

    /// A packed matrix (`format.len(rows, cols)` elements of its type in `data`, checked by
    /// the caller).
    pub(crate) fn packed(name: String, rows: usize, cols: usize, data: PackedStore) -> Self {
        let data = match data {
            PackedStore::F32(w) => MatData::F32P(w),
            PackedStore::F16(w) => MatData::F16P(w),
            PackedStore::Q8(w) => MatData::Q8P(w),
            PackedStore::Q4(w) => MatData::Q4P(w),
        };
        WeightMatrix {
            name,
            rows,
            cols,
            data,
        }
    }

    /// True when every part of the matrix is read straight from the memory map (no copy).
    pub fn is_mapped(&self) -> bool {
        match &self.data {
            MatData::F32(w) => w.is_mapped(),
            MatData::F16(w) => w.is_mapped(),
            MatData::Q8 { q, d } => q.is_mapped() && d.is_mapped(),
            MatData::F32P(w) => w.is_mapped(),
            MatData::F16P(w) => w.is_mapped(),
            MatData::Q8P(w) | MatData::Q4P(w) => w.is_mapped(),
        }
    }
}

/// A tensor of f32 values of any shape (norm weights, biases, codebooks), mapped or owned.
#[derive(Clone, Debug)]
pub struct F32Tensor {
    name: String,
    shape: Vec<usize>,
    data: Store<f32>,
}

impl F32Tensor {
    pub(crate) fn new(name: String, shape: Vec<usize>, data: Store<f32>) -> Self {
        F32Tensor { name, shape, data }
    }

    pub fn as_slice(&self) -> &[f32] {
        self.data.as_slice()
    }

    /// The values as an owned vector (a copy when mapped).
    pub fn into_vec(self) -> Vec<f32> {
        match self.data {
            Store::Owned(v) => v,
            m => m.as_slice().to_vec(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
    pub fn is_mapped(&self) -> bool {
        self.data.is_mapped()
    }
}

impl std::ops::Deref for F32Tensor {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        self.as_slice()
    }
}
