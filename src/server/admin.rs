//! The admin Unix-domain socket, served by the same mio loop as epmd's TCP sockets.
//!
//! Never reachable from the network. The socket file is created with mode 0600 (0660 with
//! an admin group). A stale file left by a crash is replaced; a socket some live process
//! still answers on is never taken over.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::admin::MAX_REQUEST_LINE;

/// The most bytes a `watch` client may leave unread before it is dropped.
pub const MAX_WATCH_BACKLOG: usize = 1 << 20;

/// Why the admin socket could not be set up.
#[derive(Debug)]
pub enum AdminSocketError {
    /// A live process answers on the socket path.
    InUse(PathBuf),
    /// The path exists and is not a socket.
    NotASocket(PathBuf),
    /// The named group does not exist.
    UnknownGroup(String),
    /// Creating, binding or setting permissions failed.
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for AdminSocketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminSocketError::InUse(p) => write!(
                f,
                "admin socket {} is in use by another running daemon",
                p.display()
            ),
            AdminSocketError::NotASocket(p) => {
                write!(
                    f,
                    "admin socket path {} exists and is not a socket",
                    p.display()
                )
            }
            AdminSocketError::UnknownGroup(g) => write!(f, "unknown admin group {g}"),
            AdminSocketError::Io { path, source } => {
                write!(f, "cannot create admin socket {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for AdminSocketError {}

/// Creates the admin socket at `path` (mode 0600, or 0660 owned by `group`).
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, AdminSocketError> {
    let io_err = |source| AdminSocketError::Io {
        path: path.to_owned(),
        source,
    };
    let gid = group.map(group_id).transpose()?;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            fs::create_dir_all(dir).map_err(io_err)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(io_err)?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(AdminSocketError::NotASocket(path.to_owned()))
        }
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => return Err(AdminSocketError::InUse(path.to_owned())),
            // Nobody listens: a stale file from a crashed daemon.
            Err(_) => fs::remove_file(path).map_err(io_err)?,
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    // Create the socket file without group or other permissions from the start.
    // SAFETY: umask only swaps the process file mode mask; start-up is single-threaded.
    let old_mask = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old_mask) };
    let listener = bound.map_err(io_err)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    } else {
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(listener)
}

fn group_id(name: &str) -> Result<u32, AdminSocketError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    let mut c_name = name.as_bytes().to_vec();
    c_name.push(0);
    if c_name[..c_name.len() - 1].contains(&0) {
        return Err(AdminSocketError::UnknownGroup(name.to_owned()));
    }
    // SAFETY: c_name is NUL-terminated; getgrnam returns NULL or a pointer to static data
    // that we read immediately, before any other call could overwrite it.
    let gr = unsafe { libc::getgrnam(c_name.as_ptr().cast()) };
    if gr.is_null() {
        return Err(AdminSocketError::UnknownGroup(name.to_owned()));
    }
    // SAFETY: gr is non-null and points at a valid struct group.
    Ok(unsafe { (*gr).gr_gid })
}

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED`: the
/// credentials it had when it connected).
pub fn peer_uid(fd: &impl std::os::fd::AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred as SO_PEERCRED
    // expects, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Whether a peer with `uid` may ask for `upgrade`: root, or the daemon's own user. The
/// admin group may only read the views.
pub fn may_upgrade(uid: Option<u32>) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    uid.is_some_and(|u| u == 0 || u == own)
}

/// One admin client connection.
#[derive(Debug)]
pub struct AdminConn {
    /// The socket.
    pub stream: mio::net::UnixStream,
    /// The client's uid (`SO_PEERCRED`), `None` if it could not be read.
    pub peer_uid: Option<u32>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_pos: usize,
    /// A `watch` client: stays open and receives events.
    pub watching: bool,
    /// Close once the output is flushed.
    pub close_after_flush: bool,
}

/// What reading an admin connection produced.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminRead {
    /// Nothing complete yet.
    Pending,
    /// A request line (without the newline).
    Line(String),
    /// Close the connection (EOF, error, or an overlong line).
    Close,
}

impl AdminConn {
    /// Wraps an accepted stream.
    pub fn new(stream: mio::net::UnixStream) -> AdminConn {
        AdminConn {
            peer_uid: peer_uid(&stream).ok(),
            stream,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            watching: false,
            close_after_flush: false,
        }
    }

    /// Reads until a full line, `WouldBlock`, or the end.
    pub fn read_line(&mut self) -> AdminRead {
        let mut buf = [0u8; MAX_REQUEST_LINE];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return AdminRead::Close,
                Ok(n) => {
                    if self.watching {
                        continue; // a watcher has nothing more to say; ignore it
                    }
                    self.rx.extend_from_slice(&buf[..n]);
                    if let Some(end) = self.rx.iter().position(|&b| b == b'\n') {
                        let line = String::from_utf8_lossy(&self.rx[..end]).trim().to_owned();
                        self.rx.clear();
                        return AdminRead::Line(line);
                    }
                    if self.rx.len() > MAX_REQUEST_LINE {
                        return AdminRead::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return AdminRead::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return AdminRead::Close,
            }
        }
    }

    /// Queues bytes; false when a watcher's backlog would exceed [`MAX_WATCH_BACKLOG`].
    /// A one-shot reply is never cut: it is one document the client reads to the end,
    /// whatever its size.
    pub fn queue(&mut self, bytes: &[u8]) -> bool {
        if self.watching && self.tx.len() - self.tx_pos + bytes.len() > MAX_WATCH_BACKLOG {
            return false;
        }
        if self.tx_pos > 0 {
            self.tx.drain(..self.tx_pos);
            self.tx_pos = 0;
        }
        self.tx.extend_from_slice(bytes);
        true
    }

    /// Writes queued bytes: `Ok(true)` when everything is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.tx_pos < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.tx.clear();
        self.tx_pos = 0;
        Ok(true)
    }

    /// True while output waits.
    pub fn has_pending_output(&self) -> bool {
        self.tx_pos < self.tx.len()
    }
}

/// The admin listener and the path it removes on drop.
#[derive(Debug)]
pub struct AdminListener {
    /// The listening socket.
    pub listener: mio::net::UnixListener,
    /// Its path.
    pub path: PathBuf,
    /// Whether dropping it removes the file. False in a hand-over successor until the old
    /// process has confirmed the hand-over (`GO`): a successor that gives up must leave the
    /// file to the old process, which still serves on it.
    pub unlink_on_drop: bool,
}

impl AdminListener {
    /// A listener at `path` that removes its file when dropped.
    pub fn new(listener: mio::net::UnixListener, path: PathBuf) -> AdminListener {
        AdminListener {
            listener,
            path,
            unlink_on_drop: true,
        }
    }
}

impl Drop for AdminListener {
    fn drop(&mut self) {
        if !self.unlink_on_drop {
            return;
        }
        // Remove the file only if our socket is bound at that path.
        let ours = self
            .listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| p.as_os_str().as_bytes().to_vec()));
        if ours.as_deref() == Some(self.path.as_os_str().as_bytes()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}
