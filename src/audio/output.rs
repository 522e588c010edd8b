//! Where a command's output goes, by one policy for every command that writes a file:
//!
//! - `-` is standard output (refused when it is a terminal: the output is binary);
//! - a new path, or an existing regular file, is written **atomically**: the content goes to a
//!   temporary file in the same directory (same file system, so the final rename is atomic),
//!   renamed over the path only when complete, and removed on any error or interruption (see
//!   [`super::cleanup`]). A replaced file keeps its permission bits;
//! - an existing FIFO or character device (`/dev/null`, `/dev/stdout`, a named pipe) is
//!   **written in place**, never replaced;
//! - any other existing file (a directory, a block device, a socket) is refused;
//! - a symbolic link is **followed**: the policy applies to what it points to (a link to a
//!   regular file replaces that file and keeps the link); a dangling link is refused.
//!
//! Outputs that are not regular files are *streams* (no seeking back): a WAV written to one
//! has the "unknown size" header of pipes (see [`super::wav`]).

use super::cleanup;
use crate::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, IsTerminal, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

/// The argument that means standard output.
pub const STDOUT: &str = "-";

/// Whether `path` is the `-` that means standard output.
pub fn is_stdout(path: &Path) -> bool {
    path.as_os_str() == STDOUT
}

/// What the policy decided for a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output.
    Stdout,
    /// A regular file (existing or not) replaced atomically; the path is the resolved one
    /// (symlinks followed).
    Replace(PathBuf),
    /// An existing FIFO or character device written in place (symlinks followed).
    InPlace(PathBuf),
}

fn refuse(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("output {}: {why}", path.display()))
}

/// Applies the policy (see the module docs) to `path` without opening anything.
pub fn resolve(path: &Path) -> Result<Target> {
    if is_stdout(path) {
        return Ok(Target::Stdout);
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if path.file_name().is_none() {
                return Err(refuse(path, "not a file name"));
            }
            return Ok(Target::Replace(path.to_path_buf()));
        }
        Err(e) => return Err(Error::io(path, e)),
    };
    let (resolved, meta) = if meta.file_type().is_symlink() {
        // stat follows the link (also the /proc/self/fd links of `/dev/stdout`, which name
        // no path); only a regular file needs the real path, to put its temporary file beside
        let m = std::fs::metadata(path).map_err(|e| {
            refuse(
                path,
                format!(
                    "is a symbolic link that cannot be followed ({e}); refusing to write through it"
                ),
            )
        })?;
        let target = if m.is_file() {
            std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?
        } else {
            path.to_path_buf()
        };
        (target, m)
    } else {
        (path.to_path_buf(), meta)
    };
    let ft = meta.file_type();
    if ft.is_file() {
        Ok(Target::Replace(resolved))
    } else if ft.is_fifo() || ft.is_char_device() {
        Ok(Target::InPlace(resolved))
    } else if ft.is_dir() {
        Err(refuse(path, "is a directory"))
    } else {
        let kind = if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        Err(refuse(
            path,
            format!("is {kind} (refusing to write to it or replace it)"),
        ))
    }
}

/// An open output (see the module docs): write through [`Write`], then [`Output::commit`].
/// Dropped without a commit, a temporary file is removed and the path is left as it was.
pub struct Output {
    /// The path as given (`standard output` for `-`), for messages.
    shown: PathBuf,
    sink: Sink,
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    InPlace(BufWriter<File>),
    Temp {
        w: BufWriter<File>,
        tmp: tempfile::TempPath,
        dest: PathBuf,
        guard: cleanup::Guard,
    },
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("path", &self.shown)
            .field("stream", &self.is_stream())
            .finish()
    }
}

impl Output {
    /// Opens `path` under the policy: creates the temporary file (which shows early that the
    /// directory is writable), opens the FIFO or device, or takes standard output.
    pub fn create(path: &Path) -> Result<Output> {
        let shown = if is_stdout(path) {
            PathBuf::from("standard output")
        } else {
            path.to_path_buf()
        };
        let sink = match resolve(path)? {
            Target::Stdout => {
                let out = std::io::stdout();
                if out.is_terminal() {
                    return Err(Error::Invalid(
                        "refusing to write binary output to a terminal: redirect standard \
                         output (`--out - > file` or `| aplay`) or give a file name"
                            .into(),
                    ));
                }
                Sink::Stdout(BufWriter::new(out))
            }
            Target::InPlace(p) => {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map_err(|e| Error::io(&p, e))?;
                Sink::InPlace(BufWriter::new(f))
            }
            Target::Replace(dest) => {
                let (file, tmp, guard) = temp_beside(&dest)?;
                Sink::Temp {
                    w: BufWriter::new(file),
                    tmp,
                    dest,
                    guard,
                }
            }
        };
        Ok(Output { shown, sink })
    }

    /// The path as given (`standard output` for `-`), for messages.
    pub fn path(&self) -> &Path {
        &self.shown
    }

    /// True for standard output, FIFOs and devices (no seeking back to patch a header).
    pub fn is_stream(&self) -> bool {
        !matches!(self.sink, Sink::Temp { .. })
    }

    /// True for standard output.
    pub fn is_stdout(&self) -> bool {
        matches!(self.sink, Sink::Stdout(_))
    }

    /// Overwrites `bytes` at `offset` from the start of the output, for headers whose sizes
    /// are known only at the end. Returns false (writing nothing) on a stream.
    pub fn patch(&mut self, offset: u64, bytes: &[u8]) -> Result<bool> {
        let shown = self.shown.clone();
        match &mut self.sink {
            Sink::Temp { w, .. } => {
                w.flush().map_err(|e| Error::io(&shown, e))?;
                w.get_ref()
                    .write_all_at(bytes, offset)
                    .map_err(|e| Error::io(&shown, e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Flushes everything and, for a regular file, syncs it and renames it into place.
    pub fn commit(self) -> Result<()> {
        let shown = self.shown;
        let io = |e: std::io::Error| Error::io(&shown, e);
        match self.sink {
            Sink::Stdout(mut w) => w.flush().map_err(io),
            Sink::InPlace(mut w) => w.flush().map_err(io),
            Sink::Temp {
                w,
                tmp,
                dest,
                guard,
                ..
            } => {
                let file = w.into_inner().map_err(|e| io(e.into_error()))?;
                file.sync_all().map_err(io)?;
                drop(file);
                guard
                    .finish(|| tmp.persist(&dest))
                    .map_err(|e| Error::io(&dest, e.error))
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.sink {
            Sink::Stdout(w) => w.write(buf),
            Sink::InPlace(w) => w.write(buf),
            Sink::Temp { w, .. } => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(w) => w.write_all(buf),
            Sink::InPlace(w) => w.write_all(buf),
            Sink::Temp { w, .. } => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(w) => w.flush(),
            Sink::InPlace(w) => w.flush(),
            Sink::Temp { w, .. } => w.flush(),
        }
    }
}

/// A new temporary file `.NAME.XXXXXX.partial` beside `dest`, registered for removal on
/// interruption, with the permissions a replaced `dest` had (else those of a new file).
fn temp_beside(dest: &Path) -> Result<(File, tempfile::TempPath, cleanup::Guard)> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = dest
        .file_name()
        .ok_or_else(|| refuse(dest, "not a file name"))?;
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mode = std::fs::metadata(dest)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        // a temporary file is private (0600) by default; a new output gets what any new
        // file gets (0666 less the umask), as with `File::create`
        .unwrap_or(0o666);
    let mut builder = tempfile::Builder::new();
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(mode));
    let (tmp, guard) = cleanup::create_file(
        || builder.prefix(&prefix).suffix(".partial").tempfile_in(dir),
        |t| t.path().to_path_buf(),
    )
    .map_err(|e| Error::io(dir, e))?;
    let (file, path) = tmp.into_parts();
    Ok((file, path, guard))
}

/// Writes a whole output with `fill` and commits it: nothing is left at a regular-file path
/// if `fill` fails.
pub fn write_output(path: &Path, fill: impl FnOnce(&mut Output) -> Result<()>) -> Result<()> {
    let mut out = Output::create(path)?;
    fill(&mut out)?;
    out.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn write(p: &Path, bytes: &[u8]) -> Result<()> {
        write_output(p, |o| o.write_all(bytes).map_err(|e| Error::io(p, e)))
    }

    #[test]
    fn success_renames_into_place_and_failure_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write(&p, b"hello").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert_eq!(entries(d.path()), ["out.bin"]);
        let e = write_output(&p, |o| {
            o.write_all(b"half").unwrap();
            Err(Error::Invalid("boom".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("boom"));
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert_eq!(entries(d.path()), ["out.bin"]);
    }

    #[test]
    fn permissions_new_and_replaced() {
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let p = d.path().join("new");
        write(&p, b"").unwrap();
        assert_eq!(mode(&p), mode(&plain));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, b"again").unwrap();
        assert_eq!(mode(&p), 0o640);
    }

    #[test]
    fn the_policy_per_file_kind() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let link = d.path().join("link");
        symlink(&f, &link).unwrap();
        let null = d.path().join("null");
        symlink("/dev/null", &null).unwrap();
        let dangling = d.path().join("dangling");
        symlink(d.path().join("nowhere"), &dangling).unwrap();
        let canon = f.canonicalize().unwrap();
        assert_eq!(resolve(Path::new("-")).unwrap(), Target::Stdout);
        assert_eq!(resolve(&f).unwrap(), Target::Replace(f.clone()));
        assert_eq!(resolve(&link).unwrap(), Target::Replace(canon.clone()));
        assert_eq!(
            resolve(Path::new("/dev/null")).unwrap(),
            Target::InPlace("/dev/null".into())
        );
        assert_eq!(resolve(&null).unwrap(), Target::InPlace(null.clone()));
        let new = d.path().join("new");
        assert_eq!(resolve(&new).unwrap(), Target::Replace(new));
        for (p, want) in [
            (dangling.as_path(), "symbolic link"),
            (d.path(), "directory"),
        ] {
            let e = resolve(p).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(&*p.to_string_lossy()), "{e}");
        }
        // a link to a file: the file is replaced, the link stays
        write(&link, b"new").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
        // /dev/null through a link: written in place
        let mut o = Output::create(&null).unwrap();
        assert!(o.is_stream());
        o.write_all(b"gone").unwrap();
        assert!(!o.patch(0, b"x").unwrap());
        o.commit().unwrap();
        assert!(
            std::fs::metadata("/dev/null")
                .unwrap()
                .file_type()
                .is_char_device()
        );
    }

    #[test]
    fn patch_rewrites_a_header_of_a_regular_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        let mut o = Output::create(&p).unwrap();
        assert!(!o.is_stream());
        o.write_all(b"????data").unwrap();
        assert!(o.patch(0, b"HEAD").unwrap());
        o.write_all(b"more").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"HEADdatamore");
    }

    #[test]
    fn missing_directory_is_an_error_at_create() {
        let d = tempfile::tempdir().unwrap();
        let e = Output::create(&d.path().join("no/such/x.bin")).unwrap_err();
        assert!(e.to_string().contains("no/such"), "{e}");
    }
}
