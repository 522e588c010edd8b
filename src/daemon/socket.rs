//! The control socket: a Unix domain socket created with mode 0600 (only the owning user may
//! connect), serving any number of clients up to [`MAX_CLIENTS`] at once, each on its own
//! reader and writer thread.
//!
//! At start a leftover socket file is removed only if nothing answers on it (a daemon that
//! died without cleaning up); if a daemon listens there, or the path is not a socket, start-up
//! fails. The file is removed again when the [`ControlSocket`] is dropped (if it is still the
//! one this daemon created).

use super::protocol::{self, Line, LineReader};
use super::session::{Dispatcher, Outbox};
use crate::{Error, Result};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::sync_channel;
use std::thread;
use std::time::Duration;

/// Clients served at once; more are told so and closed.
pub const MAX_CLIENTS: usize = 16;

/// Lines waiting to be written to one client.
pub const CLIENT_QUEUE: usize = 64;

/// A bound control socket (see the module docs).
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created.
    id: (u64, u64),
}

impl ControlSocket {
    /// Binds `path` with mode 0600.
    pub fn bind(path: &Path) -> Result<ControlSocket> {
        let err = |msg: String| Error::Invalid(format!("socket {}: {msg}", path.display()));
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(err(
                        "in use: another daemon is listening on it (stop it first, or choose \
                         another --socket)"
                            .into(),
                    ));
                }
                Err(_) => {
                    std::fs::remove_file(path)
                        .map_err(|e| err(format!("cannot remove the stale socket file: {e}")))?;
                    log::info!("removed a stale socket file at {}", path.display());
                }
            },
            Ok(_) => {
                return Err(err(
                    "exists and is not a socket (refusing to replace it)".into()
                ));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(err(format!("cannot check the path: {e}"))),
        }
        // bind under a umask that leaves the socket 0600 from its first moment, so no other
        // user can connect in the window before a chmod
        // SAFETY: umask only swaps the process's file mode mask; it is restored right after
        // (start-up runs before the daemon's other threads, which create no files anyway).
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| err(format!("cannot bind: {e}")))?;
        let m = std::fs::metadata(path).map_err(|e| err(format!("cannot stat: {e}")))?;
        if m.permissions().mode() & 0o777 != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(format!("cannot set mode 0600: {e}")))?;
        }
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            id: (m.dev(), m.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts the accept thread; it serves clients until `stop` is raised.
    pub fn serve(&self, dispatcher: Arc<Dispatcher>, stop: Arc<AtomicBool>) -> Result<()> {
        let listener = self
            .listener
            .try_clone()
            .map_err(|e| Error::Invalid(format!("control socket: {e}")))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::Invalid(format!("control socket: {e}")))?;
        let clients = Arc::new(AtomicUsize::new(0));
        thread::Builder::new()
            .name("edgecsm-accept".into())
            .spawn(move || accept_loop(&listener, &dispatcher, &stop, &clients))
            .map_err(|e| Error::Invalid(format!("cannot start the accept thread: {e}")))?;
        Ok(())
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        // remove the file only if it is still ours (not replaced by someone else meanwhile)
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn accept_loop(
    listener: &UnixListener,
    dispatcher: &Arc<Dispatcher>,
    stop: &AtomicBool,
    clients: &Arc<AtomicUsize>,
) {
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                if clients.fetch_add(1, Relaxed) >= MAX_CLIENTS {
                    clients.fetch_sub(1, Relaxed);
                    let mut s = stream;
                    let line =
                        protocol::error(&format!("too many clients ({MAX_CLIENTS} connected)"));
                    let _ = writeln!(s, "{line}");
                    continue;
                }
                let (d, c) = (dispatcher.clone(), clients.clone());
                let spawned =
                    thread::Builder::new()
                        .name("edgecsm-client".into())
                        .spawn(move || {
                            // a bug in one client's handling ends that connection, not the daemon,
                            // and its slot is given back either way
                            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                client(stream, &d)
                            }));
                            if r.is_err() {
                                log::error!("internal error in a client thread; connection closed");
                            }
                            c.fetch_sub(1, Relaxed);
                        });
                if spawned.is_err() {
                    clients.fetch_sub(1, Relaxed);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Serves one client: reads requests, dispatches them; a writer thread sends the replies and
/// events queued for it, in order.
fn client(stream: UnixStream, dispatcher: &Dispatcher) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let (out, rx) = sync_channel::<String>(CLIENT_QUEUE);
    let writer = thread::Builder::new()
        .name("edgecsm-client-w".into())
        .spawn(move || {
            let mut w = write_half;
            while let Ok(mut line) = rx.recv() {
                line.push('\n');
                if w.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        });
    if writer.is_err() {
        return;
    }
    let mut lines = LineReader::new(&stream);
    loop {
        let line = match lines.next_line() {
            Ok(Line::Text(t)) => t,
            Ok(Line::TooLong) => {
                send(
                    &out,
                    protocol::error(&format!(
                        "request line longer than {} bytes (skipped)",
                        protocol::MAX_LINE
                    )),
                );
                continue;
            }
            Ok(Line::Eof) | Err(_) => break,
        };
        // a blank line gets its error reply too: a client waiting for one never blocks
        match protocol::parse(line) {
            Ok(req) => {
                if let Err(e) = dispatcher.dispatch(req, &out) {
                    send(&out, protocol::error(&e.to_string()));
                }
            }
            Err(msg) => send(&out, protocol::error(&msg)),
        }
    }
    // the writer ends once every sender (ours and any queued request's) is gone
    let _ = stream.shutdown(std::net::Shutdown::Read);
}

fn send(out: &Outbox, line: String) {
    let _ = out.send(line);
}
