//! The admin Unix-domain socket, served by the same mio loop as epmd's TCP sockets.
//!
//! Never reachable from the network. The socket file is created with mode 0600 (0660 with
//! an admin group). A stale socket of ours left by a crash is replaced; a socket some live
//! process still answers on, or another user's, is never taken over (see
//! [`bind`](super::admin_bind::bind)). Every client's uid is read at accept
//! (`SO_PEERCRED`): the views are served to anyone who can connect, `upgrade` only to root
//! and the daemon's own user.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub use super::admin_bind::{bind, AdminSocketError};
use crate::admin::peer::peer_uid;
use crate::admin::MAX_REQUEST_LINE;

/// The most bytes a `watch` client may leave unread before it is dropped.
pub const MAX_WATCH_BACKLOG: usize = 1 << 20;

/// The most admin connections open at once (`watch` clients included); one more is closed
/// at once.
pub const MAX_ADMIN_CONNECTIONS: usize = 16;

/// How long an admin client has, from its connection, to send its request and read the
/// answer (`watch` clients excepted, as they stay by design).
pub const ADMIN_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a peer with `uid` may ask for `upgrade`: root, or the daemon's own user. The
/// admin group may only read the views.
pub fn may_upgrade(uid: Option<u32>) -> bool {
    let own = crate::admin::peer::euid();
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
    /// When the connection is closed unless it is done (`None` for a watcher).
    pub deadline: Option<std::time::Instant>,
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
            deadline: Some(std::time::Instant::now() + ADMIN_REQUEST_TIMEOUT),
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
