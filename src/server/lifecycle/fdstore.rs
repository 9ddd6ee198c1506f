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

use crate::handover::state::{PhaseState, State};
use crate::systemd::Notifier;

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

/// Where the store finds a registration connection's fd: its fd name and fd while it is
/// still open and registered, `None` once it is gone.
pub type ConnFd<'a> = &'a dyn Fn(Token) -> Option<(String, RawFd)>;

impl FdStore {
    /// Starts keeping state in systemd's fd store. `stored` is the state the store holds
    /// now (restored from it, or passed along in a hand-over), by name, if any; it is
    /// removed once a newer one has been stored. `at_least` is a lower bound for the next
    /// state number (above every state name seen in the store). `registered` are the
    /// registration connections, stored again behind the first state (systemd ignores fds
    /// it already holds).
    pub fn new(stored: Option<(String, File)>, at_least: u64, registered: Vec<Token>) -> FdStore {
        let next_number = stored
            .as_ref()
            .and_then(|(name, _)| state_number(name))
            .map_or(1, |n| n.saturating_add(1))
            .max(at_least);
        FdStore {
            stored,
            next_number,
            queue: VecDeque::new(),
            retry: None,
            pending: registered,
            dirty: true,
            next_flush: Some(Instant::now()),
            interval: MIN_FLUSH_INTERVAL,
            counts: FdStoreCounts::default(),
        }
    }

    /// Removes a fd name from the store (a connection that is gone, or a stored fd that
    /// was not restored), queued behind earlier notifications.
    pub fn remove(&mut self, name: &str, notifier: &Notifier, conn_fd: ConnFd<'_>) {
        push(
            self,
            Outgoing::Remove {
                name: name.to_owned(),
            },
        );
        self.send_queue(notifier, conn_fd);
    }

    /// Notes that the registrations changed; `registered` is a connection that just
    /// became a registration.
    pub fn changed(&mut self, registered: Option<Token>) {
        if let Some(t) = registered {
            self.pending.push(t);
        }
        self.dirty = true;
        if self.next_flush.is_none() {
            self.next_flush = Some(Instant::now() + self.interval);
        }
    }

    /// A connection closed: drop it from the store at once if it is there (and from the
    /// queue if it was still waiting to be stored).
    pub fn closed(
        &mut self,
        token: Token,
        name: &str,
        was_registered: bool,
        notifier: &Notifier,
        conn_fd: ConnFd<'_>,
    ) {
        self.pending.retain(|t| *t != token);
        self.queue
            .retain(|o| !matches!(o, Outgoing::Conn { token: t, .. } if *t == token));
        if was_registered {
            self.remove(name, notifier, conn_fd);
            self.changed(None);
        }
    }

    /// Whether a state rewrite is due at `now`.
    pub fn rewrite_due(&self, now: Instant) -> bool {
        self.dirty && self.next_flush.is_some_and(|t| t <= now)
    }

    /// Writes `state`, when given (the caller found [`FdStore::rewrite_due`]), to a new
    /// memfd queued for the store, then queues the registration connections it lists;
    /// then sends what is queued, if a state was written or the retry time has come.
    pub fn flush(&mut self, notifier: &Notifier, state: Option<State>, conn_fd: ConnFd<'_>) {
        let written = state.is_some();
        if let Some(state) = state {
            self.write_state(state, conn_fd);
        }
        let retry_due = self.retry.is_some_and(|(t, _)| t <= Instant::now());
        if written || retry_due {
            self.send_queue(notifier, conn_fd);
        }
    }

    /// Writes `state` (its registration connections only) to a new memfd and queues it,
    /// then the registration connections waiting for it.
    fn write_state(&mut self, mut state: State, conn_fd: ConnFd<'_>) {
        let started = Instant::now();
        // Listeners come back from the socket unit and the admin socket is bound anew;
        // only registration connections are kept.
        state.listeners.clear();
        state.metrics_listeners.clear();
        state.admin = None;
        state.fd_store = None;
        state
            .connections
            .retain(|c| c.phase == PhaseState::Registered);
        let doc = state.encode();
        let written = sealed_memfd(&doc);
        self.dirty = false;
        self.interval = (started.elapsed() * 10).max(MIN_FLUSH_INTERVAL);
        self.next_flush = None;
        let memfd = match written {
            Ok(m) => m,
            Err(e) => {
                warn!("cannot write the state for the fd store: {e}");
                self.counts.failed += 1;
                // Connections wait for a state that lists them; try again later.
                self.dirty = true;
                self.next_flush = Some(Instant::now() + self.interval);
                return;
            }
        };
        let name = state_name(self.next_number);
        self.next_number = self.next_number.saturating_add(1);
        // A newer state takes the place of one still waiting (the older one need never be
        // stored): connections queued behind it stay behind a state that lists them.
        let waiting = self
            .queue
            .iter_mut()
            .find(|o| matches!(o, Outgoing::State { .. }));
        match waiting {
            Some(slot) => *slot = Outgoing::State { name, memfd },
            None => push(self, Outgoing::State { name, memfd }),
        }
        let pending = std::mem::take(&mut self.pending);
        for token in pending {
            if let Some((name, _)) = conn_fd(token) {
                push(self, Outgoing::Conn { token, name });
            }
        }
    }

    /// Sends queued notifications in order until the socket is full (then a retry is
    /// scheduled) or the queue is empty.
    fn send_queue(&mut self, notifier: &Notifier, conn_fd: ConnFd<'_>) {
        while let Some(next) = self.queue.front() {
            let result = match next {
                Outgoing::State { name, memfd } => notifier
                    .notify_with_fds(&format!("FDSTORE=1\nFDNAME={name}"), &[memfd.as_raw_fd()]),
                Outgoing::Conn { token, name } => match conn_fd(*token) {
                    Some((_, fd)) => {
                        notifier.notify_with_fds(&format!("FDSTORE=1\nFDNAME={name}"), &[fd])
                    }
                    // Closed meanwhile: nothing to store.
                    None => {
                        self.queue.pop_front();
                        continue;
                    }
                },
                Outgoing::Remove { name } => {
                    notifier.notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}"))
                }
            };
            match result {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let delay = self
                        .retry
                        .map_or(FIRST_RETRY_DELAY, |(_, d)| (d * 2).min(MAX_RETRY_DELAY));
                    self.retry = Some((Instant::now() + delay, delay));
                    debug!(
                        "fd store: the notification socket is full, {} waiting",
                        self.queue.len()
                    );
                    return;
                }
                Err(e) => {
                    let sent = self.queue.pop_front();
                    self.counts.failed += 1;
                    warn!("fd store: cannot send {}: {e}", describe(sent.as_ref()));
                }
                Ok(()) => match self.queue.pop_front() {
                    Some(Outgoing::State { name, memfd }) => {
                        self.counts.stored += 1;
                        // The new state is stored: the previous one can go.
                        if let Some((old, _)) = self.stored.replace((name, memfd)) {
                            self.queue.push_front(Outgoing::Remove { name: old });
                        }
                    }
                    Some(Outgoing::Conn { .. }) => self.counts.stored += 1,
                    Some(Outgoing::Remove { .. }) => self.counts.removed += 1,
                    None => {}
                },
            }
        }
        self.retry = None;
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
