//! Converting one safetensors shard into its output file, tensor by tensor and row by row, so
//! memory stays bounded by one row of the largest tensor.

use super::policy::{Policy, Roles, Target, plan};
use super::report::{SnrAcc, TensorReport};
use super::writer::{OutTensor, StreamWriter};
use crate::kernels::packed::{self, PackedFormat};
use crate::kernels::q4;
use crate::kernels::q8::{QK, blocks, dequantize_row, quantize_matrix, quantize_weight_row};
use crate::weights::{
    Dtype, FORMAT_EDGECSM, FORMAT_KEY, FORMAT_VERSION, FORMAT_VERSION_KEY, PACKED_KEY, PackedInfo,
    Q8_SHAPES_KEY, SafetensorsFile, decode_f32, float_size, scale_name,
};
use crate::{Error, Result};
use half::f16;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What one shard turned into.
#[derive(Debug, Default)]
pub struct ShardOutput {
    /// Output tensor names (Q8 scales included), for the shard index.
    pub names: Vec<String>,
    pub data_bytes_in: u64,
    pub data_bytes_out: u64,
    pub reports: Vec<TensorReport>,
}

/// Which output tensor of a source tensor is being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Whole,
    Q8Ints,
    Q8Scales,
}

/// `(rows, cols)` of a stored shape: first dim and product of the rest (a scalar is 1 x 1).
fn row_split(shape: &[usize]) -> (usize, usize) {
    match shape.split_first() {
        None => (1, 1),
        Some((&r, rest)) => (r, rest.iter().product()),
    }
}

/// Converts `src` into a new file `dst` under `mode` (see [`super::policy`]).
pub fn convert_shard(
    src: &SafetensorsFile,
    dst: &Path,
    policy: &Policy,
    keep: &[String],
    roles: &Roles,
) -> Result<ShardOutput> {
    let names: Vec<String> = src.names().map(str::to_string).collect();
    let mut outs = Vec::new();
    let mut jobs: HashMap<String, (usize, Part)> = HashMap::new();
    let mut targets = Vec::with_capacity(names.len());
    let mut q8_shapes = BTreeMap::new();
    let mut packed_infos = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let Some(t) = src.get(name) else { continue };
        let target = plan(policy, name, t.dtype, &t.shape, keep, roles);
        targets.push(target);
        let mut add = |name: String, dtype: Dtype, shape: Vec<usize>, part: Part| {
            jobs.insert(name.clone(), (i, part));
            outs.push(OutTensor { name, dtype, shape });
        };
        match target {
            Target::Q8 => {
                let (rows, cols) = row_split(&t.shape);
                let nb = blocks(cols);
                add(name.clone(), Dtype::I8, vec![rows, nb * QK], Part::Q8Ints);
                add(scale_name(name), Dtype::F16, vec![rows, nb], Part::Q8Scales);
                q8_shapes.insert(name.clone(), t.shape.clone());
            }
            Target::F16 => add(name.clone(), Dtype::F16, t.shape.clone(), Part::Whole),
            Target::F32 => add(name.clone(), Dtype::F32, t.shape.clone(), Part::Whole),
            Target::Packed(format, layout) => {
                let len = packed_len(format, layout, &t.shape).ok_or_else(|| {
                    Error::bad_tensor(
                        name,
                        format!("shape {:?} cannot be packed as {layout:?}", t.shape),
                    )
                })?;
                let dtype = match format {
                    PackedFormat::F32P => Dtype::F32,
                    PackedFormat::F16P => Dtype::F16,
                    PackedFormat::Q8P | PackedFormat::Q4P => Dtype::U8,
                };
                packed_infos.insert(
                    name.clone(),
                    PackedInfo {
                        format: format.name().to_string(),
                        layout,
                        shape: t.shape.clone(),
                    },
                );
                add(name.clone(), dtype, vec![len], Part::Whole)
            }
            Target::Copy => add(name.clone(), t.dtype, t.shape.clone(), Part::Whole),
        }
    }
    if jobs.len() != outs.len() {
        return Err(Error::BadFile {
            path: src.path().to_path_buf(),
            msg: format!(
                "an output name collides with a source tensor (a source tensor ends in `{}`?)",
                crate::weights::Q8_SCALE_SUFFIX
            ),
        });
    }

    let mut meta = BTreeMap::new();
    meta.insert(FORMAT_KEY.to_string(), FORMAT_EDGECSM.to_string());
    meta.insert(FORMAT_VERSION_KEY.into(), FORMAT_VERSION.to_string());
    meta.insert("dtype".into(), policy.name());
    meta.insert("source_sha256".into(), sha256_hex(src.bytes()));
    let file_name = src
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    meta.insert("source_file".into(), file_name.unwrap_or_default());
    if !packed_infos.is_empty() {
        let text = serde_json::to_string(&packed_infos)
            .map_err(|e| Error::Invalid(format!("packed tensors: {e}")))?;
        meta.insert(PACKED_KEY.into(), text);
    }
    if !q8_shapes.is_empty() {
        let text = serde_json::to_string(&q8_shapes)
            .map_err(|e| Error::Invalid(format!("q8 shapes: {e}")))?;
        meta.insert(Q8_SHAPES_KEY.into(), text);
    }

    let mut w = StreamWriter::create(dst, outs, meta)?;
    let mut snr = vec![SnrAcc::default(); names.len()];
    let mut bufs = RowBufs::default();
    let order = w.order();
    for out_name in &order {
        let Some(&(i, part)) = jobs.get(out_name) else {
            continue;
        };
        let Some(t) = src.get(&names[i]) else {
            continue;
        };
        w.begin(out_name)?;
        let bytes = src.data(t);
        let (rows, cols) = row_split(&t.shape);
        let bad = || Error::bad_tensor(&names[i], "stored data does not match its dtype");
        if let Target::Packed(format, layout) = targets[i] {
            let size = float_size(t.dtype).ok_or_else(bad)?;
            let n: usize = t.shape.iter().product();
            bufs.slab.resize(n, 0.0);
            if bytes.len() != n * size || !decode_f32(t.dtype, bytes, &mut bufs.slab) {
                return Err(bad());
            }
            let arranged = layout.arrange(&t.shape, &bufs.slab);
            let (count, rows, cols) = layout.matrices(&t.shape).ok_or_else(bad)?;
            for m in arranged.chunks_exact((rows * cols).max(1)).take(count) {
                let out = bufs.pack(format, m, rows, cols, &mut snr[i]);
                w.write(out)?;
            }
            continue;
        }
        match (targets[i], part) {
            (Target::Copy, _) => w.write(bytes)?,
            (Target::F32, _) if t.dtype == Dtype::F32 => w.write(bytes)?,
            (Target::F16, _) if t.dtype == Dtype::F16 => w.write(bytes)?,
            (target, part) => {
                let size = float_size(t.dtype).ok_or_else(bad)?;
                if cols == 0 {
                    continue;
                }
                for row in bytes.chunks_exact(cols * size).take(rows) {
                    bufs.load(t.dtype, row, cols)
                        .then_some(())
                        .ok_or_else(bad)?;
                    let out = bufs.convert(target, part, &mut snr[i]);
                    w.write(out)?;
                }
            }
        }
    }
    let data_bytes_out = w.finish()?;

    let mut reports = Vec::with_capacity(names.len());
    let mut data_bytes_in = 0u64;
    for (i, name) in names.iter().enumerate() {
        let Some(t) = src.get(name) else { continue };
        let target = targets[i];
        let lossy = match target {
            Target::Q8 | Target::Packed(PackedFormat::Q8P | PackedFormat::Q4P, _) => true,
            Target::F16 | Target::Packed(PackedFormat::F16P, _) => t.dtype != Dtype::F16,
            _ => false,
        };
        let bytes_in = t.range.len();
        let (rows, cols) = row_split(&t.shape);
        let bytes_out = match target {
            Target::Q8 => rows * blocks(cols) * (QK + 2),
            Target::F16 => rows * cols * 2,
            Target::F32 => rows * cols * 4,
            Target::Copy => bytes_in,
            Target::Packed(format, layout) => {
                let (count, r, c) = layout.matrices(&t.shape).unwrap_or((0, 0, 0));
                count * format.bytes(r, c)
            }
        };
        data_bytes_in += bytes_in as u64;
        reports.push(TensorReport {
            name: name.clone(),
            source_dtype: t.dtype,
            shape: t.shape.clone(),
            target,
            snr_db: lossy.then(|| snr[i].db()),
            bytes_in,
            bytes_out,
        });
    }
    Ok(ShardOutput {
        names: order,
        data_bytes_in,
        data_bytes_out,
        reports,
    })
}

/// Per-row working buffers, grown to the widest row once and reused.
#[derive(Default)]
struct RowBufs {
    /// A whole tensor being packed.
    slab: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    q: Vec<i8>,
    d: Vec<f16>,
    out: Vec<u8>,
}

impl RowBufs {
    /// Decodes one source row of `cols` values.
    fn load(&mut self, dtype: Dtype, row: &[u8], cols: usize) -> bool {
        self.x.resize(cols, 0.0);
        decode_f32(dtype, row, &mut self.x)
    }

    /// Packs one row-major matrix `m` (`[rows, cols]`) into `format`, accumulating its
    /// reconstruction error; returns the bytes.
    fn pack(
        &mut self,
        format: PackedFormat,
        m: &[f32],
        rows: usize,
        cols: usize,
        snr: &mut SnrAcc,
    ) -> &[u8] {
        self.out.clear();
        match format {
            PackedFormat::F32P => {
                for v in packed::pack_float(m, rows, cols, 0.0) {
                    self.out.extend_from_slice(&v.to_le_bytes());
                }
            }
            PackedFormat::F16P => {
                let h: Vec<f16> = m.iter().map(|&v| f16::from_f32(v)).collect();
                self.y.clear();
                self.y.extend(h.iter().map(|v| v.to_f32()));
                snr.add(m, &self.y);
                for v in packed::pack_float(&h, rows, cols, f16::ZERO) {
                    self.out.extend_from_slice(&v.to_le_bytes());
                }
            }
            PackedFormat::Q8P => {
                let (q, d) = quantize_matrix(m, rows, cols);
                let nb = blocks(cols);
                self.y.resize(cols, 0.0);
                for r in 0..rows {
                    dequantize_row(&q[r * nb * QK..], &d[r * nb..(r + 1) * nb], &mut self.y);
                    snr.add(&m[r * cols..(r + 1) * cols], &self.y);
                }
                self.out = packed::pack_q8(&q, &d, rows, cols);
            }
            PackedFormat::Q4P => {
                let (q, d) = q4::quantize_matrix(m, rows, cols);
                let nb = blocks(cols);
                self.y.resize(cols, 0.0);
                for r in 0..rows {
                    for (k, y) in self.y.iter_mut().enumerate() {
                        *y = q4::value(q[r * nb * QK + k], d[r * nb + k / QK]);
                    }
                    snr.add(&m[r * cols..(r + 1) * cols], &self.y);
                }
                self.out = packed::pack_q4(&q, &d, rows, cols);
            }
        }
        &self.out
    }

    /// Encodes the loaded row as `part` of `target`, accumulating the reconstruction error
    /// where the part determines it (F16, and the Q8 scale pass).
    fn convert(&mut self, target: Target, part: Part, snr: &mut SnrAcc) -> &[u8] {
        self.out.clear();
        let x = &self.x;
        match (target, part) {
            (Target::Q8, _) => {
                let nb = blocks(x.len());
                self.q.resize(nb * QK, 0);
                self.d.resize(nb, f16::ZERO);
                quantize_weight_row(x, &mut self.q, &mut self.d);
                if part == Part::Q8Ints {
                    self.out.extend(self.q.iter().map(|&v| v as u8));
                } else {
                    self.y.resize(x.len(), 0.0);
                    dequantize_row(&self.q, &self.d, &mut self.y);
                    snr.add(x, &self.y);
                    for d in &self.d {
                        self.out.extend_from_slice(&d.to_le_bytes());
                    }
                }
            }
            (Target::F16, _) => {
                self.y.clear();
                for &v in x {
                    let h = f16::from_f32(v);
                    self.y.push(h.to_f32());
                    self.out.extend_from_slice(&h.to_le_bytes());
                }
                snr.add(x, &self.y);
            }
            _ => {
                for v in x {
                    self.out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
        &self.out
    }
}

/// Elements of the packed tensor for `shape` under `layout`.
fn packed_len(
    format: PackedFormat,
    layout: crate::weights::Layout,
    shape: &[usize],
) -> Option<usize> {
    let (count, rows, cols) = layout.matrices(shape)?;
    count.checked_mul(format.len(rows, cols))
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}
