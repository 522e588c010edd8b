//! Writing a file so that it either appears complete or not at all: the content goes to a
//! temporary file in the destination's directory (same file system, so the final rename is
//! atomic), which is removed if anything fails before [`write_atomically`] renames it.

use crate::{Error, Result};
use std::fs::File;
use std::path::Path;

/// Creates `path` with the content `fill` writes into the given file. On any error (from `fill`
/// or from the file system) the temporary file is deleted and `path` is left untouched.
pub fn write_atomically(path: &Path, fill: impl FnOnce(&File) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("output {} is not a file name", path.display())))?;
    if path.is_dir() {
        return Err(Error::Invalid(format!(
            "output {} is a directory",
            path.display()
        )));
    }
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    // A temporary file is private (0600) by default; the output should get the permissions
    // any new file gets (0666 less the umask), as with `File::create`.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder
        .prefix(&prefix)
        .suffix(".partial")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    fill(tmp.as_file())?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn success_renames_into_place() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        write_atomically(&p, |mut f| {
            f.write_all(b"hello").map_err(|e| Error::io("x", e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"hello");
        assert_eq!(entries(d.path()), ["out.bin"]);
    }

    #[cfg(unix)]
    #[test]
    fn output_gets_the_permissions_of_a_plainly_created_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let plain = d.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let p = d.path().join("out.bin");
        write_atomically(&p, |_| Ok(())).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&plain));
    }

    #[test]
    fn failure_leaves_nothing_and_keeps_an_old_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.bin");
        let e = write_atomically(&p, |mut f| {
            f.write_all(b"half").unwrap();
            Err(Error::Invalid("boom".into()))
        })
        .unwrap_err();
        assert!(e.to_string().contains("boom"));
        assert!(entries(d.path()).is_empty());

        std::fs::write(&p, b"old").unwrap();
        write_atomically(&p, |_| Err(Error::Invalid("boom".into()))).unwrap_err();
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(entries(d.path()), ["out.bin"]);
    }

    #[test]
    fn missing_directory_and_directory_target_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = write_atomically(&d.path().join("no/such/x.bin"), |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("no/such"), "{e}");
        let e = write_atomically(d.path(), |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
    }
}
