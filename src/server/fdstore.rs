//! Keeping registrations alive across `systemctl restart` and crashes with systemd's
//! file-descriptor store: every registration connection is stored (`FDSTORE=1`,
//! `FDNAME=conn-…`) and the daemon state is kept in a memfd stored as `state`, rewritten
//! after changes. A new process gets them back in `LISTEN_FDS` / `LISTEN_FDNAMES` and
//! rebuilds the registry from them (see `daemon.rs`).
//!
//! Ordering: a new registration connection is stored only after a state that lists it has
//! been written; a closed one is removed from the store at once (`FDSTOREREMOVE=1`), so
//! that systemd's copy never keeps a connection open that the daemon closed (STOP).

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use log::warn;
use mio::Token;

use super::connection::Phase;
use super::Server;

/// The fd name of the state memfd.
pub const STATE_NAME: &str = "state";

/// The shortest time between two state rewrites; grows with the time a rewrite takes.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// The store's bookkeeping.
#[derive(Debug)]
pub struct FdStore {
    memfd: File,
    /// Registration connections stored since the last rewrite or waiting for one.
    pending: Vec<Token>,
    dirty: bool,
    next_flush: Option<Instant>,
    interval: Duration,
}

impl FdStore {
    /// The memfd's fd (passed along in a hand-over).
    pub fn memfd_fd(&self) -> std::os::fd::RawFd {
        self.memfd.as_raw_fd()
    }

    /// When the next rewrite is due, if one is.
    pub fn next_flush(&self) -> Option<Instant> {
        self.next_flush
    }
}

/// Creates an anonymous memory file for the state.
pub fn create_memfd() -> io::Result<File> {
    // SAFETY: the name is NUL-terminated; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"epmd-rs-state".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

impl Server {
    /// Starts keeping state in systemd's fd store, with `memfd` (one passed back by
    /// systemd, or `None` for a new one). Every registration connection is stored again:
    /// systemd ignores fds it already holds.
    pub fn enable_fd_store(&mut self, memfd: Option<File>) -> io::Result<()> {
        let Some(notifier) = &self.notifier else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no NOTIFY_SOCKET"));
        };
        let memfd = memfd.or_else(|| self.inherited_memfd.take());
        let reuse = memfd.is_some();
        let memfd = match memfd {
            Some(f) => f,
            None => create_memfd()?,
        };
        if !reuse {
            notifier.notify_with_fds(
                &format!("FDSTORE=1\nFDNAME={STATE_NAME}"),
                &[memfd.as_raw_fd()],
            )?;
        }
        let pending = self
            .conns
            .iter()
            .filter(|(t, c)| {
                c.phase == Phase::Registered && self.registry.by_conn(super::conn_id(**t)).is_some()
            })
            .map(|(t, _)| *t)
            .collect();
        self.shared_fds = true;
        self.fdstore = Some(FdStore {
            memfd,
            pending,
            dirty: true,
            next_flush: Some(Instant::now()),
            interval: MIN_FLUSH_INTERVAL,
        });
        self.flush_fd_store();
        Ok(())
    }

    /// Removes a fd name from the store (a connection that is gone).
    pub fn fd_store_remove(&self, name: &str) {
        self.notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"));
    }

    /// Notes that the registrations changed; `registered` is a connection that just
    /// became a registration.
    pub(super) fn fd_store_changed(&mut self, registered: Option<Token>) {
        let Some(store) = self.fdstore.as_mut() else {
            return;
        };
        if let Some(t) = registered {
            store.pending.push(t);
        }
        store.dirty = true;
        if store.next_flush.is_none() {
            store.next_flush = Some(Instant::now() + store.interval);
        }
    }

    /// A connection closed: drop it from the store at once if it is there.
    pub(super) fn fd_store_closed(&mut self, token: Token, name: &str, was_registered: bool) {
        let Some(store) = self.fdstore.as_mut() else {
            return;
        };
        store.pending.retain(|t| *t != token);
        if was_registered {
            self.fd_store_remove(name);
            self.fd_store_changed(None);
        }
    }

    /// Rewrites the state if it changed and its time has come, then stores the
    /// registration connections it lists.
    pub(super) fn flush_fd_store(&mut self) {
        let due = self
            .fdstore
            .as_ref()
            .is_some_and(|s| s.dirty && s.next_flush.is_some_and(|t| t <= Instant::now()));
        if !due {
            return;
        }
        let started = Instant::now();
        let (mut state, _) = self.snapshot();
        // Listeners come back from the socket unit and the admin socket is bound anew;
        // only registration connections are kept.
        state.listeners.clear();
        state.admin = None;
        state.fd_store = None;
        state
            .connections
            .retain(|c| c.phase == crate::handover::state::PhaseState::Registered);
        let doc = state.encode();
        let Some(store) = self.fdstore.as_mut() else {
            return;
        };
        let written = store
            .memfd
            .set_len(0)
            .and_then(|_| store.memfd.seek(SeekFrom::Start(0)))
            .and_then(|_| store.memfd.write_all(&doc));
        if let Err(e) = written {
            warn!("cannot write the state for the fd store: {e}");
        }
        store.dirty = false;
        store.interval = (started.elapsed() * 10).max(MIN_FLUSH_INTERVAL);
        store.next_flush = None;
        let pending = std::mem::take(&mut store.pending);
        for token in pending {
            let Some(conn) = self.conns.get(&token) else {
                continue;
            };
            if conn.phase != Phase::Registered {
                continue;
            }
            let name = conn.fd_name(token);
            if let Some(n) = &self.notifier {
                if let Err(e) = n.notify_with_fds(
                    &format!("FDSTORE=1\nFDNAME={name}"),
                    &[conn.stream.as_raw_fd()],
                ) {
                    warn!("cannot store connection {name}: {e}");
                }
            }
        }
    }
}
