//! Memory-mapped safetensors weights.
//!
//! [`Weights::open`] takes a Hugging Face model directory (`model.safetensors`, or shards listed
//! by `model.safetensors.index.json`) or a single `.safetensors` file, maps every file once and
//! validates its header. Tensors are then looked up by name (under an optional prefix, see
//! [`Weights::with_prefix`]) through typed accessors that check the shape the model config
//! implies and the stored dtype:
//!
//! - [`Weights::matrix`] gives a [`WeightMatrix`] for the kernels, zero-copy when the stored
//!   layout is what they read (F32, F16 or the project's Q8, aligned inside the map) and
//!   converted otherwise (BF16 -> F32, or a misaligned tensor copied out);
//! - [`Weights::vector`] gives an [`F32Tensor`] of any shape (norms, biases, codebooks);
//! - [`Weights::info`] / [`Weights::contains`] answer "is it there, what shape, what format"
//!   for optional tensors and config cross-checks.
//!
//! # Q8 on disk
//! A Q8 matrix `NAME` of logical shape `[rows, cols...]` is stored as `NAME`, dtype I8, shape
//! `[rows, blocks(cols) * 32]` and `NAME.q8_scale`, dtype F16, shape `[rows, blocks(cols)]`
//! (see [`crate::kernels::q8`]); files written by `edgecsm quantize` also record every Q8
//! tensor's logical shape in the `q8_shapes` metadata entry, so the shape check is exact.

mod convert;
mod dir;
mod file;
mod tensor;

pub use convert::{decode_f32, float_size, is_float, push_f16_le, push_f32_le, to_f32_vec};
pub use dir::{INDEX_FILE, ModelFiles, SINGLE_FILE, ShardIndex, locate};
pub use file::{SafetensorsFile, StoredTensor};
pub use safetensors::Dtype;
pub use tensor::{F32Tensor, WeightMatrix};

use crate::kernels::packed::{self, PackedFormat};
use crate::kernels::q8::{QK, blocks};
use crate::{Error, Result};
use half::f16;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tensor::{PackedStore, Store};

/// Suffix of the scale tensor that goes with a Q8 tensor.
pub const Q8_SCALE_SUFFIX: &str = ".q8_scale";
/// Metadata key holding a JSON object `{name: [logical shape]}` for the Q8 tensors of a file.
pub const Q8_SHAPES_KEY: &str = "q8_shapes";
/// Metadata key and value marking a file written by `edgecsm quantize`.
pub const FORMAT_KEY: &str = "format";
pub const FORMAT_EDGECSM: &str = "edgecsm";
/// Metadata key holding the on-disk format number of an `edgecsm quantize` file.
pub const FORMAT_VERSION_KEY: &str = "edgecsm_version";
/// The on-disk format this build reads and writes. Bumped whenever the layout of any tensor
/// in a converted file changes; a file of another format is refused with an error that says
/// to convert the original checkpoint again.
///
/// 1: Q8 blocks + F16, every tensor in its upstream layout.
/// 2: as 1, and `depth_decoder.codebooks_head.weight` stored transposed (`[n, vocab, hidden]`,
///    the rows the kernels read), so loading it is a memory map instead of a copy.
/// 3: every matrix the kernels multiply by stored packed in panels of 8 rows (F32P, F16P, Q8P;
///    see [`crate::kernels::packed`] and [`PACKED_KEY`]), conv-transposes and the codebook
///    heads in the arrangement the kernels read ([`Layout`]); tensors start on 64-byte
///    boundaries. Tables read a row at a time (embeddings) stay row-major.
/// 4: as 3, with the 4-bit packed format Q4P ([`crate::kernels::packed`]) among them. A format-3
///    file is read as it is (it is a format-4 file without Q4P tensors).
/// 5: as 4, with the convolution weights' columns in tap-major order ([`Layout::Conv`]), so a
///    convolution reads its input windows in place, and the conv-transposes' rows too
///    ([`Layout::ConvTransposeTaps`]), so their overlap-add is contiguous. Format 3 and 4
///    files are read as they are: their weights record [`Layout::Rows`] and
///    [`Layout::ConvTranspose`] and run through the channel-major paths.
pub const FORMAT_VERSION: u32 = 5;
/// The oldest on-disk format this build reads.
pub const FORMAT_VERSION_MIN: u32 = 3;
/// Metadata key holding a JSON object `{name: PackedInfo}` for the tensors stored packed.
pub const PACKED_KEY: &str = "edgecsm_packed";

/// How the matrices the kernels multiply by are made from an upstream tensor of shape `shape`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One matrix `[shape[0], product of the rest]` (linear layers, conv weights
    /// `[out, in, k]` as `[out, in * k]`).
    Rows,
    /// `shape = [n, a, b]`: `n` matrices `[b, a]`, each the transpose of a slice (CSM's
    /// `codebooks_head`, applied as `h @ W[i]`).
    Transposed,
    /// `shape = [in, out, k]` (`ConvTranspose1d`): one matrix `[out * k, in]`, row `o * k + j`
    /// column `i` = `w[i, o, j]` (see [`crate::kernels::conv::repack_conv_transpose`]).
    ConvTranspose,
    /// `shape = [in, out, k]` (`ConvTranspose1d`): one matrix `[k * out, in]`, row `j * out + o`
    /// column `i` = `w[i, o, j]` (the taps one after the other:
    /// [`crate::kernels::conv::ColumnOrder::TapMajor`]; format 5).
    ConvTransposeTaps,
    /// `shape = [out, in, k]` (`Conv1d`, `in` per group): one matrix `[out, k * in]`, row `o`
    /// column `j * in + i` = `w[o, i, j]` (the taps one after the other:
    /// [`crate::kernels::conv::ColumnOrder::TapMajor`]).
    Conv,
}

impl Layout {
    /// `(count, rows, cols)` of the matrices made from `shape`.
    pub fn matrices(self, shape: &[usize]) -> Option<(usize, usize, usize)> {
        let prod = |s: &[usize]| s.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        match (self, shape) {
            (Layout::Rows, [rows, rest @ ..]) => Some((1, *rows, prod(rest)?)),
            (Layout::Transposed, [n, a, b]) => Some((*n, *b, *a)),
            (Layout::Transposed, [a, b]) => Some((1, *b, *a)),
            (Layout::ConvTranspose | Layout::ConvTransposeTaps, [i, o, k]) => {
                Some((1, o.checked_mul(*k)?, *i))
            }
            (Layout::Conv, [o, i, k]) => Some((1, *o, i.checked_mul(*k)?)),
            _ => None,
        }
    }

    /// Row-major matrices (`count * rows * cols` values) from the upstream values.
    pub fn arrange<T: Copy + Default>(self, shape: &[usize], v: &[T]) -> Vec<T> {
        match (self, shape) {
            (Layout::Rows, _) => v.to_vec(),
            (Layout::Transposed, _) => {
                let (n, rows, cols) = self.matrices(shape).unwrap_or((0, 0, 0));
                let mut out = Vec::with_capacity(v.len());
                for m in 0..n {
                    let src = &v[m * rows * cols..(m + 1) * rows * cols];
                    out.extend((0..rows * cols).map(|e| src[(e % cols) * rows + e / cols]));
                }
                out
            }
            (Layout::ConvTranspose, &[i, o, k]) => {
                let order = crate::kernels::conv::ColumnOrder::ChannelMajor;
                crate::kernels::conv::repack_conv_transpose(v, i, o, k, order)
            }
            (Layout::ConvTransposeTaps, &[i, o, k]) => {
                let order = crate::kernels::conv::ColumnOrder::TapMajor;
                crate::kernels::conv::repack_conv_transpose(v, i, o, k, order)
            }
            (Layout::Conv, &[_, i, k]) => {
                let mut out = v.to_vec();
                for (orow, vrow) in out.chunks_exact_mut(i * k).zip(v.chunks_exact(i * k)) {
                    for (c, &x) in vrow.iter().enumerate() {
                        orow[(c % k) * i + c / k] = x;
                    }
                }
                out
            }
            _ => Vec::new(),
        }
    }
}

/// What the `edgecsm_packed` metadata records for a packed tensor: its format, the layout of
/// its matrices and the upstream shape they were made from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackedInfo {
    pub format: String,
    pub layout: Layout,
    pub shape: Vec<usize>,
}

/// How a tensor is stored, as the loader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorFormat {
    F32,
    F16,
    BF16,
    /// int8 blocks + f16 scales (the tensor and its `.q8_scale` companion).
    Q8,
    /// Packed for the kernels (see [`PACKED_KEY`]); read with [`Weights::linear`] or
    /// [`Weights::packed_matrices`].
    Packed(PackedFormat),
    /// Any other safetensors dtype (not readable as weights).
    Other(Dtype),
}

/// The format and logical shape of a stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub format: TensorFormat,
    /// The logical shape (for Q8: the shape before padding when the file records it, else the
    /// padded int8 shape).
    pub shape: Vec<usize>,
}

#[derive(Debug)]
struct Inner {
    files: ModelFiles,
    shards: Vec<SafetensorsFile>,
    /// Full tensor name -> index into `shards`.
    index: HashMap<String, usize>,
    /// Logical shapes of Q8 tensors recorded in the files' metadata.
    q8_shapes: HashMap<String, Vec<usize>>,
    /// Tensors stored packed (files' metadata).
    packed: HashMap<String, PackedInfo>,
}

/// An open model: every shard mapped, every header validated. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Weights {
    inner: Arc<Inner>,
    prefix: String,
}

impl Weights {
    /// Opens a model directory or a single `.safetensors` file (see the module docs).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let files = locate(path.as_ref())?;
        let mut shards = Vec::with_capacity(files.shards.len());
        for p in &files.shards {
            shards.push(SafetensorsFile::open(p)?);
        }
        let mut index = HashMap::new();
        let mut q8_shapes = HashMap::new();
        let mut packed = HashMap::new();
        for (i, shard) in shards.iter().enumerate() {
            check_format(shard)?;
            if let Some(text) = shard.metadata().get(PACKED_KEY) {
                let infos: HashMap<String, PackedInfo> =
                    serde_json::from_str(text).map_err(|e| Error::BadFile {
                        path: shard.path().to_path_buf(),
                        msg: format!("bad `{PACKED_KEY}` metadata: {e}"),
                    })?;
                packed.extend(infos);
            }
            for name in shard.names() {
                if let Some(prev) = index.insert(name.to_string(), i) {
                    return Err(Error::BadFile {
                        path: shard.path().to_path_buf(),
                        msg: format!(
                            "tensor `{}` is also stored in {}",
                            name.escape_debug(),
                            shards[prev].path().display()
                        ),
                    });
                }
            }
            if let Some(text) = shard.metadata().get(Q8_SHAPES_KEY) {
                let shapes: HashMap<String, Vec<usize>> =
                    serde_json::from_str(text).map_err(|e| Error::BadFile {
                        path: shard.path().to_path_buf(),
                        msg: format!("bad `{Q8_SHAPES_KEY}` metadata: {e}"),
                    })?;
                q8_shapes.extend(shapes);
            }
        }
        if let Some(ix) = &files.index {
            for (name, shard_name) in &ix.weight_map {
                let found = index.get(name).map(|&i| shards[i].path());
                if found.and_then(|p| p.file_name()) != Some(shard_name.as_ref()) {
                    return Err(dir::bad_index(
                        &ix.path,
                        format!(
                            "tensor `{}` is not in its shard `{}`",
                            name.escape_debug(),
                            shard_name.escape_debug()
                        ),
                    ));
                }
            }
        }
        Ok(Weights {
            inner: Arc::new(Inner {
                files,
                shards,
                index,
                q8_shapes,
                packed,
            }),
            prefix: String::new(),
        })
    }

    /// The same weights with `prefix` appended to the current prefix: `w.with_prefix("codec_model.")`
    /// makes `matrix("encoder.layers.0.conv.weight", ..)` read `codec_model.encoder...`.
    pub fn with_prefix(&self, prefix: &str) -> Weights {
        Weights {
            inner: Arc::clone(&self.inner),
            prefix: format!("{}{prefix}", self.prefix),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The files this model was loaded from.
    pub fn files(&self) -> &ModelFiles {
        &self.inner.files
    }

    /// The open shards.
    pub fn shards(&self) -> &[SafetensorsFile] {
        &self.inner.shards
    }

    /// Names under the current prefix (prefix stripped), sorted, Q8 scale companions left out.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .inner
            .index
            .keys()
            .filter_map(|n| n.strip_prefix(self.prefix.as_str()))
            .filter(|n| !self.is_q8_scale(&format!("{}{n}", self.prefix)))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// The packing of tensor `name` (under the prefix), when the file stores it packed.
    pub fn packed_info(&self, name: &str) -> Option<&PackedInfo> {
        self.inner.packed.get(&self.full(name))
    }

    /// The matrix of a linear layer or conv, `[shape[0], product of the rest]`, packed: see
    /// [`Weights::packed_matrices`] ([`Layout::Rows`]).
    /// The layout tensor `name` is stored packed in, if the file stores it packed.
    pub fn packed_layout(&self, name: &str) -> Option<Layout> {
        self.inner.packed.get(&self.full(name)).map(|i| i.layout)
    }

    pub fn linear(&self, name: &str, shape: &[usize]) -> Result<WeightMatrix> {
        let mut v = self.packed_matrices(name, shape, Layout::Rows)?;
        v.pop()
            .ok_or_else(|| Error::bad_tensor(self.full(name), "no matrix"))
    }

    /// The matrices the kernels multiply by, made from tensor `name` of upstream shape `shape`
    /// with `layout` (see [`Layout`]), packed ([`crate::kernels::packed`]): a view of the map
    /// when the file stores them packed (what `edgecsm quantize` writes), else packed here from
    /// the stored values (a copy; F16 tensors become F16P, every other float F32P).
    pub fn packed_matrices(
        &self,
        name: &str,
        shape: &[usize],
        layout: Layout,
    ) -> Result<Vec<WeightMatrix>> {
        let full = self.full(name);
        let (count, rows, cols) = layout
            .matrices(shape)
            .filter(|&(n, r, c)| n.checked_mul(r).and_then(|v| v.checked_mul(c)).is_some())
            .ok_or_else(|| {
                Error::bad_tensor(
                    &full,
                    format!("shape {shape:?} does not fit layout {layout:?}"),
                )
            })?;
        let Some(info) = self.inner.packed.get(&full) else {
            return self.pack_here(&full, name, shape, layout, count, rows, cols);
        };
        if info.layout != layout || info.shape != shape {
            return Err(Error::bad_tensor(
                &full,
                format!(
                    "expected shape {shape:?} as {layout:?}, found {:?} as {:?} (packed)",
                    info.shape, info.layout
                ),
            ));
        }
        let format = PackedFormat::ALL
            .into_iter()
            .find(|f| f.name() == info.format)
            .ok_or_else(|| {
                Error::bad_tensor(&full, format!("unknown packed format `{}`", info.format))
            })?;
        let (file, t) = self.find(&full)?;
        let (want_dtype, size) = match format {
            PackedFormat::F32P => (Dtype::F32, 4),
            PackedFormat::F16P => (Dtype::F16, 2),
            PackedFormat::Q8P | PackedFormat::Q4P => (Dtype::U8, 1),
        };
        let each = format.len(rows, cols);
        if t.dtype != want_dtype || t.range.len() != count * each * size {
            return Err(Error::bad_tensor(
                &full,
                format!(
                    "packed {} of {count} x [{rows}, {cols}] needs {} bytes of {want_dtype:?}, \
                     found {} bytes of {:?}",
                    info.format,
                    count * each * size,
                    t.range.len(),
                    t.dtype
                ),
            ));
        }
        (0..count)
            .map(|m| {
                let r = t.range.start + m * each * size..t.range.start + (m + 1) * each * size;
                let mname = if count == 1 {
                    full.clone()
                } else {
                    format!("{full}[{m}]")
                };
                let misaligned =
                    || Error::bad_tensor(&full, "packed data is misaligned in the file");
                let data = match format {
                    PackedFormat::F32P => {
                        PackedStore::F32(Store::mapped(file.map(), r).ok_or_else(misaligned)?)
                    }
                    PackedFormat::F16P => {
                        PackedStore::F16(Store::mapped(file.map(), r).ok_or_else(misaligned)?)
                    }
                    PackedFormat::Q8P => {
                        PackedStore::Q8(Store::mapped(file.map(), r).ok_or_else(misaligned)?)
                    }
                    PackedFormat::Q4P => {
                        PackedStore::Q4(Store::mapped(file.map(), r).ok_or_else(misaligned)?)
                    }
                };
                Ok(WeightMatrix::packed(mname, rows, cols, data))
            })
            .collect()
    }

    /// [`Weights::linear`] of a tensor stored unpacked: read, arranged and packed here.
    #[allow(clippy::too_many_arguments)]
    fn pack_here(
        &self,
        full: &str,
        name: &str,
        shape: &[usize],
        layout: Layout,
        count: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Vec<WeightMatrix>> {
        let info = self.require_info(name)?;
        let values = self.vector(name, shape)?;
        let arranged = layout.arrange(shape, values.as_slice());
        let each = rows * cols;
        (0..count)
            .map(|m| {
                let src = &arranged[m * each..(m + 1) * each];
                let mname = if count == 1 {
                    full.to_string()
                } else {
                    format!("{full}[{m}]")
                };
                let data = if info.format == TensorFormat::F16 {
                    let h: Vec<f16> = src.iter().map(|&v| f16::from_f32(v)).collect();
                    PackedStore::F16(Store::Owned(packed::pack_float(&h, rows, cols, f16::ZERO)))
                } else {
                    PackedStore::F32(Store::Owned(packed::pack_float(src, rows, cols, 0.0)))
                };
                Ok(WeightMatrix::packed(mname, rows, cols, data))
            })
            .collect()
    }

    /// Whether tensor `name` (under the prefix) is stored.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.index.contains_key(&self.full(name))
    }

    /// Format and logical shape of tensor `name`, or None when it is absent.
    pub fn info(&self, name: &str) -> Option<TensorInfo> {
        let full = self.full(name);
        let (_, t) = self.find(&full).ok()?;
        if let Some(p) = self.inner.packed.get(&full) {
            let format = PackedFormat::ALL
                .into_iter()
                .find(|f| f.name() == p.format)
                .map_or(TensorFormat::Other(t.dtype), TensorFormat::Packed);
            return Some(TensorInfo {
                format,
                shape: p.shape.clone(),
            });
        }
        let format = match t.dtype {
            Dtype::F32 => TensorFormat::F32,
            Dtype::F16 => TensorFormat::F16,
            Dtype::BF16 => TensorFormat::BF16,
            Dtype::I8 if self.find(&scale_name(&full)).is_ok() => TensorFormat::Q8,
            d => TensorFormat::Other(d),
        };
        let shape = match (format, self.inner.q8_shapes.get(&full)) {
            (TensorFormat::Q8, Some(s)) => s.clone(),
            _ => t.shape.clone(),
        };
        Some(TensorInfo { format, shape })
    }

    /// Bytes tensor `name` takes in its file (a Q8 tensor's scales included).
    pub fn stored_bytes(&self, name: &str) -> usize {
        let full = self.full(name);
        let bytes = |n: &str| self.find(n).map_or(0, |(_, t)| t.range.len());
        match self.info(name).map(|i| i.format) {
            Some(TensorFormat::Q8) => bytes(&full) + bytes(&scale_name(&full)),
            Some(_) => bytes(&full),
            None => 0,
        }
    }

    /// Like [`Weights::info`] but a missing tensor is an error naming it.
    pub fn require_info(&self, name: &str) -> Result<TensorInfo> {
        self.info(name).ok_or_else(|| Error::MissingTensor {
            name: self.full(name),
        })
    }

    /// Matrix `name` with expected shape `shape` (rows = first dim, cols = product of the
    /// rest), in the stored format: F32/F16/Q8 zero-copy when aligned, BF16 converted to F32.
    pub fn matrix(&self, name: &str, shape: &[usize]) -> Result<WeightMatrix> {
        let full = self.full(name);
        let (rows, cols) = mat_dims(&full, shape)?;
        let (file, t) = self.find(&full)?;
        match t.dtype {
            Dtype::I8 => return self.q8_matrix(full, file, t, shape, rows, cols),
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => {}
            d => return Err(unsupported(&full, d)),
        }
        check_shape(&full, shape, &t.shape)?;
        let bytes = file.data(t);
        Ok(match t.dtype {
            Dtype::F32 => {
                let w = match Store::mapped(file.map(), t.range.clone()) {
                    Some(s) => s,
                    None => Store::Owned(decode(&full, t.dtype, bytes)?),
                };
                WeightMatrix::f32(full, rows, cols, w)
            }
            Dtype::F16 => {
                let w = match Store::mapped(file.map(), t.range.clone()) {
                    Some(s) => s,
                    None => {
                        let v = convert::to_f16_vec(bytes).ok_or_else(|| truncated(&full))?;
                        check_finite_f16(&full, &v)?;
                        Store::Owned(v)
                    }
                };
                WeightMatrix::f16(full, rows, cols, w)
            }
            _ => {
                let w = decode(&full, t.dtype, bytes)?;
                WeightMatrix::f32(full, rows, cols, Store::Owned(w))
            }
        })
    }

    /// Tensor `name` as f32 values with expected shape `shape` (any rank): F32 zero-copy when
    /// aligned; F16, BF16 and Q8 converted.
    pub fn vector(&self, name: &str, shape: &[usize]) -> Result<F32Tensor> {
        let full = self.full(name);
        let (file, t) = self.find(&full)?;
        match t.dtype {
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
                check_shape(&full, shape, &t.shape)?;
                let data = match Store::mapped(file.map(), t.range.clone()) {
                    Some(s) if t.dtype == Dtype::F32 => s,
                    _ => Store::Owned(decode(&full, t.dtype, file.data(t))?),
                };
                // a converted tensor was checked by `decode`; a mapped one is scanned when it
                // is a vector (norms, biases, scales: cheap), not when it is a large table
                if data.is_mapped() && shape.len() <= 1 {
                    check_finite(&full, data.as_slice())?;
                }
                Ok(F32Tensor::new(full, shape.to_vec(), data))
            }
            Dtype::I8 => {
                let (rows, cols) = mat_dims(&full, shape)?;
                let m = self.q8_matrix(full.clone(), file, t, shape, rows, cols)?;
                let mut out = vec![0f32; rows * cols];
                if cols > 0 {
                    for (r, o) in out.chunks_exact_mut(cols).enumerate() {
                        m.mat().row_into(r, o);
                    }
                }
                check_finite(&full, &out)?;
                Ok(F32Tensor::new(full, shape.to_vec(), Store::Owned(out)))
            }
            d => Err(unsupported(&full, d)),
        }
    }

    /// Tensor `name` as f32 values in whatever shape the file holds (its logical shape).
    pub fn vector_as_stored(&self, name: &str) -> Result<F32Tensor> {
        let info = self.require_info(name)?;
        self.vector(name, &info.shape)
    }

    fn q8_matrix(
        &self,
        full: String,
        file: &SafetensorsFile,
        t: &StoredTensor,
        shape: &[usize],
        rows: usize,
        cols: usize,
    ) -> Result<WeightMatrix> {
        let sname = scale_name(&full);
        let (sfile, st) = self.find(&sname).map_err(|_| {
            Error::bad_tensor(
                &full,
                format!("stored as int8 but its Q8 scales `{sname}` are missing"),
            )
        })?;
        if st.dtype != Dtype::F16 {
            return Err(Error::bad_tensor(
                &sname,
                format!("Q8 scales must be F16, found {:?}", st.dtype),
            ));
        }
        let nb = blocks(cols);
        if t.shape != [rows, nb * QK] || st.shape != [rows, nb] {
            return Err(Error::bad_tensor(
                &full,
                format!(
                    "expected shape {shape:?} (Q8: int8 [{rows}, {}] + scales [{rows}, {nb}]), \
                     found int8 {:?} + scales {:?}",
                    nb * QK,
                    t.shape,
                    st.shape
                ),
            ));
        }
        if let Some(logical) = self.inner.q8_shapes.get(&full)
            && logical.as_slice() != shape
        {
            return Err(Error::bad_tensor(
                &full,
                format!("expected shape {shape:?}, found {logical:?} (Q8)"),
            ));
        }
        let q = match Store::mapped(file.map(), t.range.clone()) {
            Some(s) => s,
            None => Store::Owned(file.data(t).iter().map(|&b| b as i8).collect()),
        };
        let d = match Store::mapped(sfile.map(), st.range.clone()) {
            Some(s) => s,
            None => {
                Store::Owned(convert::to_f16_vec(sfile.data(st)).ok_or_else(|| truncated(&sname))?)
            }
        };
        Ok(WeightMatrix::q8(full, rows, cols, q, d))
    }

    fn full(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn find(&self, full: &str) -> Result<(&SafetensorsFile, &StoredTensor)> {
        let missing = || Error::MissingTensor {
            name: full.to_string(),
        };
        let &i = self.inner.index.get(full).ok_or_else(missing)?;
        let file = &self.inner.shards[i];
        Ok((file, file.get(full).ok_or_else(missing)?))
    }

    fn is_q8_scale(&self, full: &str) -> bool {
        full.strip_suffix(Q8_SCALE_SUFFIX)
            .and_then(|base| self.find(base).ok())
            .is_some_and(|(_, t)| t.dtype == Dtype::I8)
    }
}

/// Refuses a file converted by `edgecsm quantize` in another on-disk format.
fn check_format(shard: &SafetensorsFile) -> Result<()> {
    let meta = shard.metadata();
    if meta.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT_EDGECSM) {
        return Ok(());
    }
    let found = meta.get(FORMAT_VERSION_KEY).map_or("none", String::as_str);
    if found
        .parse::<u32>()
        .is_ok_and(|v| (FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&v))
    {
        return Ok(());
    }
    Err(Error::BadFile {
        path: shard.path().to_path_buf(),
        msg: format!(
            "converted by `edgecsm quantize` in on-disk format {found}, but this edgecsm reads \
             formats {FORMAT_VERSION_MIN} to {FORMAT_VERSION}: convert the original checkpoint again with `edgecsm \
             quantize`"
        ),
    })
}

/// The name of the scale tensor of Q8 tensor `name`.
pub fn scale_name(name: &str) -> String {
    format!("{name}{Q8_SCALE_SUFFIX}")
}

/// `(rows, cols)` of an expected shape: first dim, product of the rest.
fn mat_dims(name: &str, shape: &[usize]) -> Result<(usize, usize)> {
    let (&rows, rest) = shape.split_first().ok_or_else(|| {
        Error::bad_tensor(
            name,
            "a matrix needs an expected shape of at least one dimension",
        )
    })?;
    let cols = rest
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .filter(|&c| c.checked_mul(rows).is_some())
        .ok_or_else(|| Error::bad_tensor(name, format!("expected shape {shape:?} overflows")))?;
    Ok((rows, cols))
}

fn check_shape(name: &str, want: &[usize], found: &[usize]) -> Result<()> {
    if want == found {
        Ok(())
    } else {
        Err(Error::bad_tensor(
            name,
            format!("expected shape {want:?}, found {found:?}"),
        ))
    }
}

fn unsupported(name: &str, d: Dtype) -> Error {
    Error::bad_tensor(
        name,
        format!("unsupported dtype {d:?} (readable: F32, F16, BF16, Q8)"),
    )
}

fn truncated(name: &str) -> Error {
    Error::bad_tensor(name, "stored data does not match its dtype and shape")
}

/// Decodes a tensor into f32 values, checking that every value is finite (the conversion
/// reads every value anyway).
fn decode(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let v = to_f32_vec(dtype, bytes).ok_or_else(|| truncated(name))?;
    check_finite(name, &v)?;
    Ok(v)
}

/// An error naming tensor `name` and the position of its first NaN or infinity.
pub fn check_finite(name: &str, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(non_finite(name, i, v[i])),
    }
}

fn check_finite_f16(name: &str, v: &[half::f16]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(non_finite(name, i, v[i].to_f32())),
    }
}

fn non_finite(name: &str, i: usize, v: f32) -> Error {
    Error::bad_tensor(
        name,
        format!(
            "holds {v} at element {i}: weights must be finite (a corrupt or badly converted checkpoint?)"
        ),
    )
}
