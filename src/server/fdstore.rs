//! Keeping registrations alive across `systemctl restart` and crashes with systemd's
//! file-descriptor store: every registration connection is stored (`FDSTORE=1`,
//! `FDNAME=conn-…`) and the daemon state is kept in memfds stored as `state-<n>`. A new
//! process gets them back in `LISTEN_FDS` / `LISTEN_FDNAMES` and rebuilds the registry
//! from them (see `daemon.rs`).
//!
//! A stored state is never changed: each rewrite goes to a NEW sealed memfd, stored under
//! the next name (`state-<n+1>`); only once that store has been sent is the previous one
//! removed (`FDSTOREREMOVE=1`). A crash at any point leaves the old document, the new one,
//! or both, each whole; a restart takes the newest that can be restored.
//!
//! Ordering: a new registration connection is stored only after a state that lists it has
//! been written; a closed one is removed from the store at once (`FDSTOREREMOVE=1`), so
//! that systemd's copy never keeps a connection open that the daemon closed (STOP).
//!
//! Delivery: notifications go out on a non-blocking socket. One that does not fit
//! (`EAGAIN`: the service manager has not read yet) waits in a queue, in order, and is
//! sent again on later loop turns (the loop wakes for it with a growing delay); one that
//! fails otherwise is counted as failed and logged. `admin stats` shows the counts.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::Token;

use super::connection::Phase;
use super::Server;

/// The fd-name prefix of the state memfds (`state-<n>`); a store written by an older
/// build holds one `state`.
pub const STATE_PREFIX: &str = "state-";

/// The shortest time between two state rewrites; grows with the time a rewrite takes.
pub const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// The first delay before sending queued notifications again; it doubles up to
/// [`MAX_RETRY_DELAY`] while the socket stays full.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(2);

/// The longest delay between two attempts at sending queued notifications.
pub const MAX_RETRY_DELAY: Duration = Duration::from_millis(50);

/// The most notifications kept waiting; more are counted as failed (a service manager
/// that reads nothing for this long is not coming back).
pub const MAX_QUEUED: usize = 65_536;

/// The fd name of state number `n`.
pub fn state_name(n: u64) -> String {
    format!("{STATE_PREFIX}{n}")
}

/// The number of a state fd name: `n` for `state-<n>`, 0 for an older build's `state`.
pub fn state_number(name: &str) -> Option<u64> {
    if name == "state" {
        return Some(0);
    }
    name.strip_prefix(STATE_PREFIX)?.parse().ok()
}

/// This process's incarnation id: 64 random bits, drawn once. Connection fd names carry
/// it (`conn-<id>-<token>`), so that names made by different processes never collide,
/// even when every process has the same pid (pid 1 in a container, pid reuse).
pub fn incarnation() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(random_u64)
}

/// 64 bits from the kernel's random source (`getrandom`, else `/dev/urandom`); if both
/// fail, the time in nanoseconds mixed with the pid, which still differs between two
/// processes started one after the other.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize
        || File::open("/dev/urandom")
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut buf))
            .is_ok()
    {
        return u64::from_ne_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A notification for the store.
#[derive(Debug)]
enum Outgoing {
    /// A new state document (`FDSTORE=1`); once sent, the previous one is removed.
    State { name: String, memfd: File },
    /// A registration connection (`FDSTORE=1`), looked up when sent.
    Conn { token: Token, name: String },
    /// `FDSTOREREMOVE=1` of a name.
    Remove { name: String },
}

/// What happened to the store's notifications, for `admin stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdStoreCounts {
    /// Fds handed to the store (states and connections).
    pub stored: u64,
    /// Names removed from the store.
    pub removed: u64,
    /// Notifications waiting for the service manager to read.
    pub pending: u64,
    /// Notifications that could not be sent (an error other than a full socket, or the
    /// queue was full).
    pub failed: u64,
}

/// The store's bookkeeping.
#[derive(Debug)]
pub struct FdStore {
    /// The newest state confirmed sent to the store: its name and memfd.
    stored: Option<(String, File)>,
    /// The number of the next state name.
    next_number: u64,
    /// Notifications not sent yet, oldest first.
    queue: VecDeque<Outgoing>,
    /// When to try the queue again, and the delay after that.
    retry: Option<(Instant, Duration)>,
    /// Registration connections stored since the last rewrite or waiting for one.
    pending: Vec<Token>,
    dirty: bool,
    next_flush: Option<Instant>,
    interval: Duration,
    counts: FdStoreCounts,
}

impl FdStore {
    /// The newest stored state's name and fd (passed along in a hand-over).
    pub fn stored_state(&self) -> Option<(&str, RawFd)> {
        self.stored
            .as_ref()
            .map(|(name, f)| (name.as_str(), f.as_raw_fd()))
    }

    /// When the loop must wake up next for the store: a rewrite or a retry.
    pub fn next_wakeup(&self) -> Option<Instant> {
        match (self.next_flush, self.retry.map(|(t, _)| t)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The counters.
    pub fn counts(&self) -> FdStoreCounts {
        FdStoreCounts {
            pending: self.queue.len() as u64,
            ..self.counts
        }
    }
}

/// Creates an anonymous memory file for a state, sealable.
pub fn create_memfd() -> io::Result<File> {
    // SAFETY: the name is NUL-terminated; memfd_create returns a new fd or -1.
    let fd = unsafe {
        libc::memfd_create(
            c"epmd-rs-state".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A new memfd holding `doc`, sealed against every change (so the stored copy stays
/// exactly what was written).
pub fn sealed_memfd(doc: &[u8]) -> io::Result<File> {
    let mut memfd = create_memfd()?;
    memfd.write_all(doc)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS on a memfd created with MFD_ALLOW_SEALING; no mapping exists.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(memfd)
}

impl Server {
    /// Starts keeping state in systemd's fd store. `stored` is the state the store holds
    /// now (restored from it, or passed along in a hand-over), by name, if any; it is
    /// removed once a newer one has been stored. `at_least` is a lower bound for the next
    /// state number (above every state name seen in the store). Every registration
    /// connection is stored again: systemd ignores fds it already holds.
    pub fn enable_fd_store(
        &mut self,
        stored: Option<(String, File)>,
        at_least: u64,
    ) -> io::Result<()> {
        if self.notifier.is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no NOTIFY_SOCKET"));
        }
        let stored = stored.or_else(|| self.inherited_memfd.take());
        let next_number = stored
            .as_ref()
            .and_then(|(name, _)| state_number(name))
            .map_or(1, |n| n.saturating_add(1))
            .max(at_least);
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
            stored,
            next_number,
            queue: VecDeque::new(),
            retry: None,
            pending,
            dirty: true,
            next_flush: Some(Instant::now()),
            interval: MIN_FLUSH_INTERVAL,
            counts: FdStoreCounts::default(),
        });
        self.flush_fd_store();
        Ok(())
    }

    /// Removes a fd name from the store (a connection that is gone, or a stored fd that
    /// was not restored). Queued behind earlier notifications when the fd store is in use.
    pub fn fd_store_remove(&mut self, name: &str) {
        match self.fdstore.as_mut() {
            Some(store) => {
                push(
                    store,
                    Outgoing::Remove {
                        name: name.to_owned(),
                    },
                );
                self.send_fd_store_queue();
            }
            None => {
                if let Some(n) = &self.notifier {
                    if let Err(e) = n.notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}")) {
                        warn!("cannot remove {name} from the fd store: {e}");
                    }
                }
            }
        }
    }

    /// The fd-store counters, if the store is in use.
    pub fn fd_store_counts(&self) -> Option<FdStoreCounts> {
        self.fdstore.as_ref().map(FdStore::counts)
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

    /// A connection closed: drop it from the store at once if it is there (and from the
    /// queue if it was still waiting to be stored).
    pub(super) fn fd_store_closed(&mut self, token: Token, name: &str, was_registered: bool) {
        let Some(store) = self.fdstore.as_mut() else {
            return;
        };
        store.pending.retain(|t| *t != token);
        store
            .queue
            .retain(|o| !matches!(o, Outgoing::Conn { token: t, .. } if *t == token));
        if was_registered {
            self.fd_store_remove(name);
            self.fd_store_changed(None);
        }
    }

    /// Rewrites the state if it changed and its time has come (into a new memfd, queued
    /// for the store), then queues the registration connections it lists; then sends
    /// what is queued, if the retry time has come.
    pub(super) fn flush_fd_store(&mut self) {
        let now = Instant::now();
        let due = self
            .fdstore
            .as_ref()
            .is_some_and(|s| s.dirty && s.next_flush.is_some_and(|t| t <= now));
        if due {
            self.write_state();
        }
        let retry_due = self
            .fdstore
            .as_ref()
            .is_some_and(|s| s.retry.is_some_and(|(t, _)| t <= now));
        if due || retry_due {
            self.send_fd_store_queue();
        }
    }

    /// Writes the state to a new memfd and queues it, then the registration connections
    /// waiting for it.
    fn write_state(&mut self) {
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
        let written = sealed_memfd(&doc);
        let Some(store) = self.fdstore.as_mut() else {
            return;
        };
        store.dirty = false;
        store.interval = (started.elapsed() * 10).max(MIN_FLUSH_INTERVAL);
        store.next_flush = None;
        let memfd = match written {
            Ok(m) => m,
            Err(e) => {
                warn!("cannot write the state for the fd store: {e}");
                store.counts.failed += 1;
                // Connections wait for a state that lists them; try again later.
                store.dirty = true;
                store.next_flush = Some(Instant::now() + store.interval);
                return;
            }
        };
        let name = state_name(store.next_number);
        store.next_number = store.next_number.saturating_add(1);
        // A newer state takes the place of one still waiting (the older one need never be
        // stored): connections queued behind it stay behind a state that lists them.
        let waiting = store
            .queue
            .iter_mut()
            .find(|o| matches!(o, Outgoing::State { .. }));
        match waiting {
            Some(slot) => *slot = Outgoing::State { name, memfd },
            None => push(store, Outgoing::State { name, memfd }),
        }
        let pending = std::mem::take(&mut store.pending);
        for token in pending {
            let Some(conn) = self.conns.get(&token) else {
                continue;
            };
            if conn.phase != Phase::Registered {
                continue;
            }
            let name = conn.fd_name(token);
            if let Some(store) = self.fdstore.as_mut() {
                push(store, Outgoing::Conn { token, name });
            }
        }
    }

    /// Sends queued notifications in order until the socket is full (then a retry is
    /// scheduled) or the queue is empty.
    pub(super) fn send_fd_store_queue(&mut self) {
        let Some(store) = self.fdstore.as_mut() else {
            return;
        };
        let Some(notifier) = &self.notifier else {
            return;
        };
        while let Some(next) = store.queue.front() {
            let result = match next {
                Outgoing::State { name, memfd } => notifier
                    .notify_with_fds(&format!("FDSTORE=1\nFDNAME={name}"), &[memfd.as_raw_fd()]),
                Outgoing::Conn { token, name } => match self.conns.get(token) {
                    Some(conn) if conn.phase == Phase::Registered => notifier.notify_with_fds(
                        &format!("FDSTORE=1\nFDNAME={name}"),
                        &[conn.stream.as_raw_fd()],
                    ),
                    // Closed meanwhile: nothing to store.
                    _ => {
                        store.queue.pop_front();
                        continue;
                    }
                },
                Outgoing::Remove { name } => {
                    notifier.notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"))
                }
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let delay = store
                        .retry
                        .map_or(FIRST_RETRY_DELAY, |(_, d)| (d * 2).min(MAX_RETRY_DELAY));
                    store.retry = Some((Instant::now() + delay, delay));
                    debug!(
                        "fd store: the notification socket is full, {} waiting",
                        store.queue.len()
                    );
                    return;
                }
                Err(e) => {
                    let sent = store.queue.pop_front();
                    store.counts.failed += 1;
                    warn!("fd store: cannot send {}: {e}", describe(sent.as_ref()));
                }
                Ok(()) => match store.queue.pop_front() {
                    Some(Outgoing::State { name, memfd }) => {
                        store.counts.stored += 1;
                        // The new state is stored: the previous one can go.
                        if let Some((old, _)) = store.stored.replace((name, memfd)) {
                            store.queue.push_front(Outgoing::Remove { name: old });
                        }
                    }
                    Some(Outgoing::Conn { .. }) => store.counts.stored += 1,
                    Some(Outgoing::Remove { .. }) => store.counts.removed += 1,
                    None => {}
                },
            }
        }
        store.retry = None;
    }
}

/// Queues `o` unless the queue is full (then it is counted as failed).
fn push(store: &mut FdStore, o: Outgoing) {
    if store.queue.len() >= MAX_QUEUED {
        store.counts.failed += 1;
        warn!(
            "fd store: {} dropped, the queue is full",
            describe(Some(&o))
        );
        return;
    }
    store.queue.push_back(o);
}

/// What a notification does, for messages.
fn describe(o: Option<&Outgoing>) -> String {
    match o {
        Some(Outgoing::State { name, .. }) | Some(Outgoing::Conn { name, .. }) => {
            format!("FDSTORE of {name}")
        }
        Some(Outgoing::Remove { name }) => format!("FDSTOREREMOVE of {name}"),
        None => "a notification".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn incarnation_ids_are_stable_in_a_process_and_random() {
        assert_eq!(incarnation(), incarnation());
        let drawn: std::collections::HashSet<u64> = (0..64).map(|_| random_u64()).collect();
        assert_eq!(drawn.len(), 64, "64 draws of 64 random bits repeated");
    }

    #[test]
    fn state_names_number_in_order() {
        assert_eq!(state_name(7), "state-7");
        assert_eq!(state_number("state-7"), Some(7));
        assert_eq!(state_number("state"), Some(0));
        assert_eq!(state_number("state-x"), None);
        assert_eq!(state_number("conn-1-64"), None);
    }

    #[test]
    fn a_stored_state_cannot_be_changed() {
        let mut memfd = sealed_memfd(b"{\"doc\":1}").unwrap();
        assert!(memfd.write_all(b"x").is_err(), "write after sealing");
        assert!(memfd.set_len(0).is_err(), "truncate after sealing");
        let mut back = String::new();
        use std::io::Seek;
        memfd.seek(io::SeekFrom::Start(0)).unwrap();
        memfd.read_to_string(&mut back).unwrap();
        assert_eq!(back, "{\"doc\":1}");
    }
}
