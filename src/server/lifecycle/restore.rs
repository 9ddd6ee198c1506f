//! Rebuilding the daemon's parts from a [`State`] document and the fds passed with it, in
//! a hand-over successor or a restart from systemd's fd store. The loop assembles them
//! (it allocates the tokens and enters the connections in its poll).

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::handover::state::{from_hex, ConnState, PhaseState, State, StateError};
use crate::protocol::{NodeInfo, NodeName, NodeType};
use crate::registry::{ConnId, Limits, OldEntry, Registration, Registry};
use crate::server::connection::{Connection, Phase};
use crate::server::dispatch::After;
use crate::server::stats::Stats;

/// The sockets of a state, taken out of the passed fds by name.
#[derive(Debug)]
pub struct Sockets {
    /// The listening sockets, in order.
    pub listeners: Vec<std::net::TcpListener>,
    /// The admin socket and its path.
    pub admin: Option<(UnixListener, PathBuf)>,
    /// The fd-store state (name, memfd) passed along, until the fd store is enabled.
    pub memfd: Option<(String, File)>,
    /// The connections' streams, in the order of `state.connections`.
    pub streams: Vec<std::net::TcpStream>,
    /// The `--metrics-listen` sockets, in order.
    pub metrics: Vec<std::net::TcpListener>,
}

/// Takes every fd `state` names out of `fds`.
pub fn sockets(state: &State, mut fds: HashMap<String, OwnedFd>) -> Result<Sockets, StateError> {
    let mut take = |name: &str| {
        fds.remove(name)
            .ok_or(StateError::MissingFd(name.to_owned()))
    };
    let mut listeners = Vec::with_capacity(state.listeners.len());
    for name in &state.listeners {
        listeners.push(std::net::TcpListener::from(take(name)?));
    }
    let admin = match &state.admin {
        Some(a) => Some((UnixListener::from(take(&a.fd)?), PathBuf::from(&a.path))),
        None => None,
    };
    let memfd = match &state.fd_store {
        Some(name) => Some((name.clone(), File::from(take(name)?))),
        None => None,
    };
    let mut streams = Vec::with_capacity(state.connections.len());
    for c in &state.connections {
        streams.push(std::net::TcpStream::from(take(&c.fd)?));
    }
    let mut metrics = Vec::with_capacity(state.metrics_listeners.len());
    for name in &state.metrics_listeners {
        metrics.push(std::net::TcpListener::from(take(name)?));
    }
    Ok(Sockets {
        listeners,
        admin,
        memfd,
        streams,
        metrics,
    })
}

/// The connection `c` describes, on `stream`; `None` when its peer is already gone (the
/// connection, and its registration, end). `local` says whether the peer is local.
pub fn connection(
    c: &ConnState,
    stream: std::net::TcpStream,
    local: impl FnOnce(std::net::SocketAddr, std::net::SocketAddr) -> bool,
    now: Instant,
) -> Result<Option<Connection>, StateError> {
    let (Ok(peer), Ok(())) = (stream.peer_addr(), stream.set_nonblocking(true)) else {
        return Ok(None);
    };
    let local = stream.local_addr().is_ok_and(|l| local(peer, l));
    let phase = match c.phase {
        PhaseState::Reading => Phase::Reading,
        PhaseState::WritingThenClose => Phase::Writing(After::Close),
        PhaseState::WritingThenRegister => Phase::Writing(After::Register),
        PhaseState::WritingThenExit => Phase::Writing(After::Exit),
        PhaseState::Registered => Phase::Registered,
    };
    // A deadline too far to represent is as good as none (and must not overflow).
    let deadline = now
        .checked_add(Duration::from_millis(c.deadline_ms.unwrap_or(0)))
        .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
    let mut conn = Connection::new(
        mio::net::TcpStream::from_std(stream),
        peer,
        local,
        phase,
        deadline,
    );
    if phase == Phase::Registered {
        conn.set_deadline(None);
    }
    conn.store_name = Some(c.fd.as_str().into());
    conn.bytes_in = c.bytes_in;
    conn.bytes_out = c.bytes_out;
    conn.restore_buffers(
        from_hex(&c.rx_hex).ok_or(StateError::BadField("rx"))?,
        from_hex(&c.tx_hex).ok_or(StateError::BadField("tx"))?,
    );
    Ok(Some(conn))
}

/// The registry of `state`: registrations whose connection is in `ids` (by fd name; the
/// others ended while the daemon was handing over), and the old names.
pub fn registry(
    state: &State,
    limits: Limits,
    ids: &HashMap<String, ConnId>,
) -> Result<Registry, StateError> {
    let mut live = Vec::with_capacity(state.registrations.len());
    for r in &state.registrations {
        let Some(id) = ids.get(&r.conn) else {
            continue;
        };
        let name = NodeName::new(r.name.as_bytes()).map_err(|_| StateError::BadField("name"))?;
        live.push(Registration {
            info: NodeInfo {
                port: r.port,
                node_type: NodeType::from_byte(r.node_type),
                protocol: r.protocol,
                highest_version: r.highest_version,
                lowest_version: r.lowest_version,
                name,
                extra: from_hex(&r.extra_hex).ok_or(StateError::BadField("extra"))?,
            },
            conn: *id,
            fd: r.fd_label,
            creation: r.creation,
            registered_at: r.registered_at,
        });
    }
    let mut old = Vec::with_capacity(state.old.len());
    for o in &state.old {
        old.push(OldEntry {
            name: NodeName::new(o.name.as_bytes()).map_err(|_| StateError::BadField("name"))?,
            port: o.port,
            fd: o.fd_label,
            creation: o.creation,
        });
    }
    Registry::restore(limits, live, old).map_err(StateError::Registry)
}

/// The counters of `state`; `handover` counts one more hand-over (a live one, not a
/// restart from the fd store).
pub fn stats(state: &State, handover: bool) -> Stats {
    let mut stats = Stats::restore(
        state.stats.counters.iter().map(|(k, v)| (k.as_str(), *v)),
        state.stats.requests.iter().map(|(k, v)| (k.as_str(), *v)),
    );
    stats.handovers = state.stats.handovers.saturating_add(u64::from(handover));
    stats
}
