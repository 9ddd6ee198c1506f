//! The daemon's lifecycle: how the loop ends (KILL, a signal, a hand-over), the state it
//! hands over ([`snapshot`], [`restore`]) and the registrations it keeps in systemd's fd
//! store ([`fdstore`]). The hand-over's wire protocol and document format are
//! [`crate::handover`]'s; this part maps the server to and from them.

pub mod fdstore;
pub mod restore;
pub mod snapshot;

use std::fs::File;

use mio::Token;

use fdstore::FdStore;

/// Why [`Server::run`](crate::server::Server::run) returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// A KILL_REQ was honoured: exit with status 0.
    Killed,
    /// SIGTERM or SIGINT: exit with status 0.
    Terminated(i32),
    /// SIGUSR2 or `admin upgrade`: hand the daemon over to a new process.
    HandOver(HandOverRequest),
}

/// A request to hand the daemon over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOverRequest {
    /// The admin connection that asked, to be told the outcome.
    pub requester: Option<Token>,
}

/// The lifecycle's state in the loop.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// A hand-over asked for by an admin client or SIGUSR2, acted on after the current
    /// events.
    pub handover_requested: Option<HandOverRequest>,
    /// A KILL honoured while accepting, acted on after the current events.
    pub shutdown_requested: Option<Shutdown>,
    /// The fd store, once enabled.
    pub fdstore: Option<FdStore>,
    /// The fd-store state (name, memfd) received in a hand-over, until the fd store is
    /// enabled.
    pub inherited_memfd: Option<(String, File)>,
    /// Connection fds may also be held by another process (fd store, hand-over), so they
    /// must be deregistered explicitly before they are closed.
    pub shared_fds: bool,
}

impl Lifecycle {
    /// What ends the loop after this turn's events, if anything: a KILL or a hand-over.
    pub fn take_request(&mut self) -> Option<Shutdown> {
        self.shutdown_requested
            .take()
            .or_else(|| self.handover_requested.take().map(Shutdown::HandOver))
    }
}
