//! `edgecsm quantize`: converts a model directory (config + safetensors shards + tokenizer and
//! other files) into a new directory whose tensors are stored in the layouts the kernels read
//! (packed Q4/Q8/F16 panels and tables, see [`policy`]), so loading it is a zero-copy memory map.
//!
//! The conversion is atomic: it is built in a sibling directory `OUT.partial-<pid>` that is
//! renamed to `OUT` only when complete, and removed on any error or interruption (SIGINT,
//! SIGTERM: see [`crate::audio::cleanup`]). An existing `OUT` is refused unless `force` is set,
//! and even then it is replaced (after the new one is complete) only when it is an earlier
//! output of `quantize` or an empty directory. `OUT` may not be, contain or lie inside the
//! model directory: `--force` never deletes the source. A symlink at `OUT` is followed; a
//! device, FIFO or socket is never replaced. Every float value of the source is checked to be
//! finite.

pub mod policy;
pub mod report;
mod shard;
pub mod writer;

pub use policy::{Component, Policy, Precision, Target, plan};
pub use report::{Summary, TensorReport};

use crate::audio::cleanup;
use crate::weights::{
    FORMAT_EDGECSM, FORMAT_KEY, INDEX_FILE, SafetensorsFile, Weights, decode_f32, float_size,
};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What to convert and how.
#[derive(Clone, Debug)]
pub struct Options {
    /// The source model directory.
    pub model: PathBuf,
    /// The output directory (must not exist unless `force`).
    pub out: PathBuf,
    /// The precision of each component (see [`policy`]).
    pub policy: Policy,
    /// Substrings of tensor names kept at F16.
    pub keep: Vec<String>,
    /// Replace an existing output directory.
    pub force: bool,
}

/// Removes the partial output directory when dropped, unless disarmed.
struct PartialDir {
    path: PathBuf,
    armed: bool,
}

impl Drop for PartialDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Runs the conversion, writing one line per tensor to `log`, and returns the summary.
pub fn quantize(opts: &Options, log: &mut dyn Write) -> Result<Summary> {
    let model = &opts.model;
    match std::fs::metadata(model) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::Invalid(format!(
                "model {} is not a directory",
                model.display()
            )));
        }
        Err(_) => {
            return Err(Error::Invalid(format!(
                "model directory {} does not exist",
                model.display()
            )));
        }
    }
    let weights = Weights::open(model)?;
    for shard in weights.shards() {
        if shard.metadata().get(FORMAT_KEY).map(String::as_str) == Some(FORMAT_EDGECSM) {
            return Err(Error::Invalid(format!(
                "{} was already converted by edgecsm quantize; convert the original checkpoint",
                shard.path().display()
            )));
        }
    }
    let out = &check_output(opts, &weights)?;

    let partial = partial_path(out)?;
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    let interrupt = cleanup::register_dir(&partial);
    std::fs::create_dir(&partial).map_err(|e| Error::io(&partial, e))?;
    let mut guard = PartialDir {
        path: partial.clone(),
        armed: true,
    };

    let roles = policy::Roles::of_model_dir(model);
    let mut summary = Summary::default();
    let mut weight_map = BTreeMap::new();
    let mut shard_files = Vec::new();
    for shard in weights.shards() {
        let file_name = shard
            .path()
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: no file name", shard.path().display())))?;
        shard_files.push(shard.path().to_path_buf());
        check_finite(shard)?;
        let done = shard::convert_shard(
            shard,
            &partial.join(file_name),
            &opts.policy,
            &opts.keep,
            &roles,
        )?;
        for r in &done.reports {
            writeln!(log, "{r}").map_err(|e| Error::io("<log>", e))?;
        }
        let fname = file_name.to_string_lossy().into_owned();
        for n in done.names {
            weight_map.insert(n, fname.clone());
        }
        summary.bytes_before += done.data_bytes_in;
        summary.bytes_after += done.data_bytes_out;
        summary.tensors.extend(done.reports);
    }

    if let Some(ix) = &weights.files().index {
        let mut metadata = ix.metadata.clone();
        metadata.insert("total_size".into(), summary.bytes_after.into());
        let index = serde_json::json!({ "metadata": metadata, "weight_map": weight_map });
        let text = serde_json::to_string_pretty(&index)
            .map_err(|e| Error::Invalid(format!("index: {e}")))?;
        let p = partial.join(INDEX_FILE);
        std::fs::write(&p, text + "\n").map_err(|e| Error::io(&p, e))?;
        shard_files.push(ix.path.clone());
    }

    summary.copied = copy_other_files(model, &partial, &shard_files)?;

    interrupt.finish(|| -> Result<()> {
        if std::fs::symlink_metadata(out).is_ok() {
            // only reached with --force, for an earlier output (checked above)
            std::fs::remove_dir_all(out).map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&partial, out).map_err(|e| Error::io(out, e))
    })?;
    guard.armed = false;
    Ok(summary)
}

/// Applies the output policy to `opts.out` (a directory): `-` and special files are refused,
/// symlinks followed; the output may neither be, contain, nor lie inside the model directory
/// (nor contain any file the model's files link to); an existing output is replaced only with
/// `force`, and only when it is an earlier `quantize` output or an empty directory. Returns
/// the resolved output path.
fn check_output(opts: &Options, weights: &Weights) -> Result<PathBuf> {
    let given = &opts.out;
    let refuse = |why: String| Error::Invalid(format!("output {}: {why}", given.display()));
    if crate::audio::output::is_stdout(given) {
        return Err(refuse(
            "quantize writes a model directory, not a stream: give a directory name".into(),
        ));
    }
    let exists = std::fs::symlink_metadata(given).is_ok();
    let out = if exists {
        let m = std::fs::metadata(given)
            .map_err(|e| refuse(format!("a symbolic link that cannot be followed ({e})")))?;
        let ft = m.file_type();
        if !ft.is_dir() && !ft.is_file() {
            return Err(refuse(
                "exists and is not a directory (a device, FIFO or socket is never replaced)".into(),
            ));
        }
        std::fs::canonicalize(given).map_err(|e| Error::io(given, e))?
    } else {
        let name = given
            .file_name()
            .ok_or_else(|| refuse("has no directory name".into()))?;
        let parent = match given.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        std::fs::canonicalize(parent)
            .map_err(|e| Error::io(parent, e))?
            .join(name)
    };
    let model = std::fs::canonicalize(&opts.model).map_err(|e| Error::io(&opts.model, e))?;
    if out == model {
        return Err(refuse("is the model directory itself".into()));
    }
    if model.starts_with(&out) {
        return Err(refuse(format!(
            "contains the model directory {} (replacing it would delete the source)",
            opts.model.display()
        )));
    }
    if out.starts_with(&model) {
        return Err(refuse(format!(
            "is inside the model directory {}",
            opts.model.display()
        )));
    }
    // the model's files may be links into another tree (a Hugging Face cache snapshot)
    let mut sources: Vec<PathBuf> = weights.shards().iter().map(|s| s.path().into()).collect();
    if let Ok(entries) = std::fs::read_dir(&opts.model) {
        sources.extend(entries.flatten().map(|e| e.path()));
    }
    for src in sources {
        if let Ok(real) = std::fs::canonicalize(&src)
            && real.starts_with(&out)
        {
            return Err(refuse(format!(
                "contains {}, which the model's {} points to (replacing it would delete the \
                 source)",
                real.display(),
                src.display()
            )));
        }
    }
    if exists {
        if !opts.force {
            return Err(refuse("already exists (use --force to replace it)".into()));
        }
        if !replaceable(&out) {
            return Err(refuse(
                "exists and is not an earlier edgecsm quantize output or an empty directory: \
                 not replaced, even with --force (remove it yourself if it should go)"
                    .into(),
            ));
        }
    }
    Ok(out)
}

/// Whether `dir` may be replaced by `--force`: an empty directory, or one holding a model
/// written by `quantize` (its safetensors say `format=edgecsm`).
fn replaceable(dir: &Path) -> bool {
    if !dir.is_dir() {
        return false;
    }
    if std::fs::read_dir(dir).is_ok_and(|mut e| e.next().is_none()) {
        return true;
    }
    crate::weights::locate(dir).is_ok_and(|files| {
        files.shards.iter().all(|p| {
            crate::weights::SafetensorsFile::open(p).is_ok_and(|f| {
                f.metadata().get(FORMAT_KEY).map(String::as_str) == Some(FORMAT_EDGECSM)
            })
        })
    })
}

/// Every float value of `shard` is finite (quantizing NaN or Inf would carry it silently into
/// the output): an error names the first tensor and element that is not.
fn check_finite(shard: &SafetensorsFile) -> Result<()> {
    const CHUNK: usize = 64 * 1024;
    let mut buf = vec![0f32; CHUNK];
    for name in shard.names() {
        let Some(t) = shard.get(name) else { continue };
        let Some(size) = float_size(t.dtype) else {
            continue;
        };
        let bytes = shard.data(t);
        for (c, chunk) in bytes.chunks(CHUNK * size).enumerate() {
            let vals = &mut buf[..chunk.len() / size];
            if !decode_f32(t.dtype, chunk, vals) {
                return Err(Error::bad_tensor(
                    name,
                    "stored data does not match its dtype",
                ));
            }
            if let Some(i) = vals.iter().position(|v| !v.is_finite()) {
                return Err(Error::bad_tensor(
                    name,
                    format!(
                        "holds {} at element {} in {}: weights must be finite (a corrupt \
                         checkpoint?)",
                        vals[i],
                        c * CHUNK + i,
                        shard.path().display()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `OUT.partial-<pid>` next to `OUT`.
fn partial_path(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("output {} has no directory name", out.display())))?;
    let mut name = name.to_os_string();
    name.push(format!(".partial-{}", std::process::id()));
    Ok(out.with_file_name(name))
}

/// Copies every regular file of `model` (following symlinks, as in a Hugging Face cache
/// snapshot) except the converted ones into `dst`; returns the copied file names, sorted.
fn copy_other_files(model: &Path, dst: &Path, converted: &[PathBuf]) -> Result<Vec<String>> {
    let mut copied = Vec::new();
    let entries = std::fs::read_dir(model).map_err(|e| Error::io(model, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(model, e))?;
        let path = entry.path();
        if !path.is_file() || converted.iter().any(|c| c == &path) {
            continue;
        }
        let to = dst.join(entry.file_name());
        std::fs::copy(&path, &to).map_err(|e| Error::io(&path, e))?;
        copied.push(entry.file_name().to_string_lossy().into_owned());
    }
    copied.sort();
    Ok(copied)
}
