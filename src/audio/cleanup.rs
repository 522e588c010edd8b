//! Removing partial outputs when the process is interrupted (SIGINT, SIGTERM, SIGHUP).
//!
//! A command registers each temporary path it creates (a file being written atomically, or
//! `quantize`'s `OUT.partial-<pid>` directory) and drops the registration once the path is
//! renamed into place or removed. [`install`] sets up the signal side: the signal handler
//! itself only records the signal number and writes a byte to a socket (both async-signal-
//! safe, via `signal-hook`'s self-pipe); a watcher thread wakes on that byte, takes the
//! registry lock (so a rename in progress finishes first), removes every registered path and
//! then ends the process the way the signal's default action would (so the parent sees
//! "killed by SIGINT", as for any other program). Without [`install`] registrations cost a
//! lock and a `Vec` push, and nothing happens on signals.

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

/// The signals that remove partial outputs before ending the process.
pub const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// A registered path: a file or a directory tree.
struct Entry {
    id: u64,
    path: PathBuf,
    dir: bool,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The last signal received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Set by the watcher once it starts cleaning up: the process is about to end.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn registry() -> MutexGuard<'static, Vec<Entry>> {
    // a panic while holding the lock leaves the list itself consistent
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a path registered for removal on interruption until dropped or [`Guard::finish`]ed.
#[derive(Debug)]
#[must_use = "the path is unregistered when the guard is dropped"]
pub struct Guard {
    id: u64,
}

/// Registers the file `path` for removal if the process is interrupted.
pub fn register_file(path: impl Into<PathBuf>) -> Guard {
    register(path.into(), false)
}

/// Creates a file with `create` and registers the path `path_of` gives it, both under the
/// registry lock: an interruption arriving between the two waits for the registration (the
/// watcher takes the same lock), so the new file is removed too. (Registering after creating
/// left the file behind when a signal fell in between: a window of microseconds natively,
/// milliseconds under qemu, where `tests/signals.rs` caught it.)
/// `create` and `path_of` run with the registry locked: they must not register or drop a
/// [`Guard`] themselves (the lock is not reentrant).
pub fn create_file<T>(
    create: impl FnOnce() -> std::io::Result<T>,
    path_of: impl FnOnce(&T) -> PathBuf,
) -> std::io::Result<(T, Guard)> {
    let mut reg = registry();
    let made = create()?;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    reg.push(Entry {
        id,
        path: path_of(&made),
        dir: false,
    });
    Ok((made, Guard { id }))
}

/// Registers the directory tree `path` for removal if the process is interrupted.
pub fn register_dir(path: impl Into<PathBuf>) -> Guard {
    register(path.into(), true)
}

fn register(path: PathBuf, dir: bool) -> Guard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().push(Entry { id, path, dir });
    Guard { id }
}

impl Guard {
    /// Runs `commit` (typically the rename that puts the path into place) while no
    /// interruption can remove the path, then unregisters it.
    pub fn finish<T>(self, commit: impl FnOnce() -> T) -> T {
        let mut reg = registry();
        let out = commit();
        reg.retain(|e| e.id != self.id);
        drop(reg);
        std::mem::forget(self);
        out
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        registry().retain(|e| e.id != self.id);
    }
}

/// Whether an interruption is being handled (the process is about to end): a command that
/// fails because its partial output vanished should then stay quiet.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Installs the handlers for [`SIGNALS`] and starts the watcher thread (once per process;
/// later calls do nothing). Errors are reported, not fatal: without handlers an interruption
/// just leaves the partial output behind, as before.
pub fn install() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| result = install_once());
    result
}

fn install_once() -> std::io::Result<()> {
    let (mut rx, tx) = UnixStream::pair()?;
    for sig in SIGNALS {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || SIGNAL.store(sig, Ordering::SeqCst))
        }?;
        signal_hook::low_level::pipe::register(sig, tx.try_clone()?)?;
    }
    std::thread::Builder::new()
        .name("edgecsm-cleanup".into())
        .spawn(move || {
            use std::io::Read;
            let mut byte = [0u8; 1];
            loop {
                match rx.read(&mut byte) {
                    Ok(1..) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // the write side lives as long as the handlers: never reached
                    _ => return,
                }
            }
            clean_up_and_die(SIGNAL.load(Ordering::SeqCst));
        })?;
    Ok(())
}

/// Removes every registered path and ends the process as `sig`'s default action would.
fn clean_up_and_die(sig: i32) -> ! {
    INTERRUPTED.store(true, Ordering::SeqCst);
    // holding the lock to the end: no commit can start after this point
    let reg = registry();
    for e in reg.iter() {
        remove(e);
    }
    if sig != 0 {
        let _ = signal_hook::low_level::emulate_default_handler(sig);
    }
    // a signal whose default is not to terminate, or no signal number recorded
    // SAFETY: `_exit` ends the process at once; nothing is required of other threads.
    unsafe { libc::_exit(128 + sig.max(1)) }
}

fn remove(e: &Entry) {
    if !e.dir {
        let _ = std::fs::remove_file(&e.path);
        return;
    }
    // the interrupted work may still be creating files in the directory: try a few times
    for _ in 0..20 {
        match std::fs::remove_dir_all(&e.path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered(path: &std::path::Path) -> bool {
        registry().iter().any(|e| e.path == path)
    }

    #[test]
    fn guards_unregister_on_drop_and_on_finish() {
        let a = PathBuf::from("/nonexistent/edgecsm-cleanup-a");
        let b = PathBuf::from("/nonexistent/edgecsm-cleanup-b");
        let g = register_file(&a);
        let h = register_dir(&b);
        assert!(registered(&a) && registered(&b));
        drop(g);
        assert!(!registered(&a) && registered(&b));
        assert_eq!(h.finish(|| 7), 7);
        assert!(!registered(&b));
        assert!(!interrupted());
    }

    #[test]
    fn a_file_is_created_and_registered_under_one_hold_of_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("made");
        let (_, g) = create_file(
            || {
                // the watcher could not clean up between the creation and the registration
                assert!(
                    REGISTRY.try_lock().is_err(),
                    "created outside the registry lock"
                );
                std::fs::File::create(&p)
            },
            |_| p.clone(),
        )
        .unwrap();
        assert!(registered(&p));
        drop(g);
        assert!(!registered(&p));
        let e = create_file(
            || std::fs::File::open(d.path().join("missing")),
            |_| p.clone(),
        );
        assert!(e.is_err() && !registered(&p));
    }

    #[test]
    fn remove_deletes_files_and_trees() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("sub")).unwrap();
        std::fs::write(t.join("sub/x"), b"x").unwrap();
        remove(&Entry {
            id: 0,
            path: f.clone(),
            dir: false,
        });
        remove(&Entry {
            id: 0,
            path: t.clone(),
            dir: true,
        });
        assert!(!f.exists() && !t.exists());
        // missing paths are fine
        remove(&Entry {
            id: 0,
            path: t,
            dir: true,
        });
    }
}
