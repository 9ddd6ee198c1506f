//! What the daemon does with one decoded request: pure, no sockets and no clock.
//!
//! [`handle`] applies a request to the registry and returns the reply bytes and what to do
//! with the connection afterwards. The server moves the bytes; everything decided here can
//! be tested and fuzzed without I/O.

use crate::protocol::response::{encode_port2, KILL_NO, KILL_OK, STOP_NOEXIST, STOP_STOPPED};
use crate::protocol::text::{
    push_dump_active_line, push_dump_old_line, push_names_line, push_port_header,
};
use crate::protocol::{Alive2Reply, NameError, Request};
use crate::registry::{ConnId, RegisterError, Registration, Registry};

/// Settings that change how requests are answered.
#[derive(Clone, Copy, Debug)]
pub struct DispatchConfig {
    /// The port NAMES and DUMP report in their header: the configured port, as the C epmd
    /// reports it (spec §3.3), even when it differs from the socket's.
    pub header_port: u32,
    /// `-relaxed_command_check`: KILL with live nodes and STOP are honoured.
    pub relaxed: bool,
}

/// The connection a request arrived on.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// Its identity in the registry.
    pub conn: ConnId,
    /// The number DUMP prints as its `fd`.
    pub fd: u32,
    /// Whether the peer is local (spec §5), decided at accept time.
    pub local: bool,
}

/// What happens to the connection once the reply (if any) is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Close it (one request per connection).
    Close,
    /// Keep it as a registration connection (after any ALIVE2 reply, success or not).
    Register,
    /// Close everything and exit with status 0 (KILL honoured).
    Exit,
}

/// The outcome of a request, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A node was registered with this 32-bit creation counter.
    Registered {
        /// The slot's creation counter.
        creation: u32,
    },
    /// ALIVE2 refused: the name is taken by a live connection.
    Duplicate,
    /// ALIVE2 refused: the registration cap is reached; closed without a reply, so that
    /// the node reports `epmd_close` rather than a misleading duplicate name.
    Full,
    /// ALIVE2 refused: the name or extra broke the rules.
    BadName(NameError),
    /// A registration whose connection was already closed by its peer was dropped to make
    /// room for this one (upstream issue #11083).
    ReplacedDeadOwner {
        /// The creation counter of the new registration.
        creation: u32,
    },
    /// PORT_PLEASE2 answered; `true` when the node was found.
    Lookup(bool),
    /// NAMES answered.
    Names,
    /// DUMP answered.
    Dump,
    /// KILL refused: nodes are registered and the command check is strict.
    KillRefused,
    /// KILL honoured.
    Killed,
    /// STOP honoured; `true` when the name was registered.
    Stopped(bool),
    /// STOP ignored: the command check is strict.
    StopIgnored,
    /// A local-only request from a non-local peer: closed silently.
    NotLocal,
}

/// The full effect of one request.
#[derive(Debug, PartialEq, Eq)]
pub struct Action {
    /// Bytes to write, in one write (empty: close without a reply).
    pub reply: Vec<u8>,
    /// What to do with the connection afterwards.
    pub after: After,
    /// Another connection to close: the registration connection of a STOPped node, or the
    /// dead owner replaced by a re-registration.
    pub close: Option<ConnId>,
    /// The registration that request removed from the registry (STOP, or a dead owner).
    pub removed: Option<Registration>,
    /// What happened.
    pub event: Event,
}

impl Action {
    fn close_silently(event: Event) -> Action {
        Action {
            reply: Vec::new(),
            after: After::Close,
            close: None,
            removed: None,
            event,
        }
    }

    fn reply(reply: Vec<u8>, after: After, event: Event) -> Action {
        Action {
            reply,
            after,
            close: None,
            removed: None,
            event,
        }
    }
}

/// Applies `request` from `origin`.
///
/// `owner_gone(conn)` must tell whether a registration connection has already been closed
/// (or has sent data) by its peer without the server having processed it yet: such a
/// registration is dropped so that a restarting node is not refused because of its own
/// dying registration. A live owner still makes the new registration a duplicate.
pub fn handle(
    request: Request,
    origin: Origin,
    config: &DispatchConfig,
    registry: &mut Registry,
    now_unix: u64,
    mut owner_gone: impl FnMut(ConnId) -> bool,
) -> Action {
    let local_only = matches!(
        request,
        Request::Alive2(_) | Request::Dump | Request::Kill | Request::Stop(_)
    );
    if local_only && !origin.local {
        return Action::close_silently(Event::NotLocal);
    }
    match request {
        Request::Alive2(req) => {
            let high = req.highest_version;
            let mut reply = Vec::with_capacity(6);
            let mut close = None;
            let mut removed = None;
            let (outcome, event) = match req.to_node_info() {
                Err(e) => (Err(()), Event::BadName(e)),
                Ok(info) => {
                    match registry.register(origin.conn, origin.fd, info.clone(), now_unix) {
                        Ok(cr) => (Ok(cr), Event::Registered { creation: cr }),
                        Err(RegisterError::Duplicate { owner }) if owner_gone(owner) => {
                            removed = registry.unregister_conn(owner);
                            close = Some(owner);
                            match registry.register(origin.conn, origin.fd, info, now_unix) {
                                Ok(cr) => (Ok(cr), Event::ReplacedDeadOwner { creation: cr }),
                                Err(_) => (Err(()), Event::Duplicate),
                            }
                        }
                        Err(RegisterError::Full) => {
                            return Action::close_silently(Event::Full);
                        }
                        Err(_) => (Err(()), Event::Duplicate),
                    }
                }
            };
            Alive2Reply::new(high, outcome).encode(&mut reply);
            Action {
                reply,
                after: After::Register,
                close,
                removed,
                event,
            }
        }
        Request::PortPlease2(name) => {
            let found = registry.lookup(&name).map(|r| &r.info);
            let mut reply = Vec::with_capacity(16 + name.as_bytes().len());
            encode_port2(found, &mut reply);
            Action::reply(reply, After::Close, Event::Lookup(found.is_some()))
        }
        Request::Names => Action::reply(
            names_reply(registry, config.header_port),
            After::Close,
            Event::Names,
        ),
        Request::Dump => {
            let mut reply = Vec::with_capacity(4 + 48 * (registry.len() + registry.old_len()));
            push_port_header(config.header_port, &mut reply);
            for r in registry.newest_first() {
                push_dump_active_line(r.info.name.as_bytes(), r.info.port, r.fd, &mut reply);
            }
            for o in registry.old_entries() {
                push_dump_old_line(o.name.as_bytes(), o.port, o.fd, &mut reply);
            }
            Action::reply(reply, After::Close, Event::Dump)
        }
        Request::Kill => {
            if !config.relaxed && !registry.is_empty() {
                Action::reply(KILL_NO.to_vec(), After::Close, Event::KillRefused)
            } else {
                Action::reply(KILL_OK.to_vec(), After::Exit, Event::Killed)
            }
        }
        Request::Stop(name) => {
            if !config.relaxed {
                return Action::close_silently(Event::StopIgnored);
            }
            match registry.unregister_name(&name) {
                Some(reg) => Action {
                    reply: STOP_STOPPED.to_vec(),
                    after: After::Close,
                    close: Some(reg.conn),
                    removed: Some(reg),
                    event: Event::Stopped(true),
                },
                None => Action::reply(STOP_NOEXIST.to_vec(), After::Close, Event::Stopped(false)),
            }
        }
    }
}

/// The NAMES reply: the header, then one line per registration, newest first.
pub fn names_reply(registry: &Registry, header_port: u32) -> Vec<u8> {
    let mut reply = Vec::with_capacity(4 + 32 * registry.len());
    push_port_header(header_port, &mut reply);
    for r in registry.newest_first() {
        push_names_line(r.info.name.as_bytes(), r.info.port, &mut reply);
    }
    reply
}

#[cfg(test)]
mod tests;
