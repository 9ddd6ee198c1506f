//! Creating the admin socket file safely, even in a directory others can write:
//!
//! - an existing file is only replaced when it is a socket (by `lstat`: a symlink is never
//!   followed) owned by this user, and nobody answers on it (`ECONNREFUSED`); any other
//!   connect error leaves it alone and refuses to start;
//! - the socket is created with its final mode (0600, or 0660 with an admin group) by the
//!   umask at `bind`, so it is never `chmod`ed by path;
//! - its group is set with `lchown`, which never follows a symlink, after checking (by
//!   `lstat`) that the path still is our socket.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::admin::peer::euid;

/// Why the admin socket could not be set up.
#[derive(Debug)]
pub enum AdminSocketError {
    /// A live process answers on the socket path.
    InUse(PathBuf),
    /// The path exists and is not a socket (a symlink counts as not a socket).
    NotASocket(PathBuf),
    /// The path is a socket of another user: never removed.
    NotOurs {
        /// The socket path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// The named group does not exist.
    UnknownGroup(String),
    /// Creating, binding, checking or setting the group failed.
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
            AdminSocketError::NotOurs { path, owner } => write!(
                f,
                "admin socket path {} is a socket of uid {owner}, not ours: not replacing it",
                path.display()
            ),
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
            // Created with its mode (no chmod by path afterwards).
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io_err)?;
        }
    }
    remove_stale(path)?;
    // Create the socket file with its final mode: no group or other permissions, or
    // group read-write with an admin group.
    let mask = if gid.is_some() { 0o117 } else { 0o177 };
    // SAFETY: umask only swaps the process file mode mask; start-up is single-threaded.
    let old_mask = unsafe { libc::umask(mask) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old_mask) };
    let listener = bound.map_err(io_err)?;
    if let Some(gid) = gid {
        // The path must still be the socket we just created (ours, a socket): lchown
        // then changes it and nothing else, and never follows a symlink.
        let meta = fs::symlink_metadata(path).map_err(io_err)?;
        if !meta.file_type().is_socket() {
            return Err(AdminSocketError::NotASocket(path.to_owned()));
        }
        if meta.uid() != euid() {
            return Err(AdminSocketError::NotOurs {
                path: path.to_owned(),
                owner: meta.uid(),
            });
        }
        std::os::unix::fs::lchown(path, None, Some(gid)).map_err(io_err)?;
    }
    listener.set_nonblocking(true).map_err(io_err)?;
    Ok(listener)
}

/// Removes a stale socket file at `path` (a socket of ours that nobody answers on); fails
/// on anything else there.
fn remove_stale(path: &Path) -> Result<(), AdminSocketError> {
    let io_err = |source| AdminSocketError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(AdminSocketError::NotASocket(path.to_owned()));
    }
    if meta.uid() != euid() {
        return Err(AdminSocketError::NotOurs {
            path: path.to_owned(),
            owner: meta.uid(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(AdminSocketError::InUse(path.to_owned())),
        // Nobody listens: a stale file from a crashed daemon.
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            fs::remove_file(path).map_err(io_err)
        }
        Err(e) => Err(io_err(e)),
    }
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
