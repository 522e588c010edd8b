//! `edgecsm quantize`: converts a model directory (config + safetensors shards + tokenizer and
//! other files) into a new directory whose tensors are stored in the layouts the kernels read
//! (Q8 blocks and F16, see [`policy`]), so loading it is a zero-copy memory map.
//!
//! The conversion is atomic: it is built in a sibling directory `OUT.partial-<pid>` that is
//! renamed to `OUT` only when complete, and removed on any error. An existing `OUT` is refused
//! unless `force` is set (then it is replaced after the new one is complete).

pub mod policy;
pub mod report;
mod shard;
pub mod writer;

pub use policy::{Mode, Target, plan};
pub use report::{Summary, TensorReport};

use crate::weights::{FORMAT_EDGECSM, FORMAT_KEY, INDEX_FILE, Weights};
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
    pub mode: Mode,
    /// Substrings of tensor names kept at F16 instead of Q8.
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
    let out = &opts.out;
    if std::fs::symlink_metadata(out).is_ok() {
        if !opts.force {
            return Err(Error::Invalid(format!(
                "output {} already exists (use --force to replace it)",
                out.display()
            )));
        }
        if same_path(out, model) {
            return Err(Error::Invalid(format!(
                "output {} is the model directory itself",
                out.display()
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

    let partial = partial_path(out)?;
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
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
        let done = shard::convert_shard(
            shard,
            &partial.join(file_name),
            opts.mode,
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

    if std::fs::symlink_metadata(out).is_ok() {
        // only reached with --force (checked above)
        let r = if out.is_dir() {
            std::fs::remove_dir_all(out)
        } else {
            std::fs::remove_file(out)
        };
        r.map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&partial, out).map_err(|e| Error::io(out, e))?;
    guard.armed = false;
    Ok(summary)
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

fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
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
