//! Writing the daemon's whole state as a [`State`] document, with the fds to pass, for a
//! hand-over or systemd's fd store.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Instant;

use mio::Token;

use crate::handover::state::{
    to_hex, AdminState, ConnState, OldState, PhaseState, RegState, State, StatsState, FORMAT,
    VERSION,
};
use crate::registry::Registry;
use crate::server::connection::{Connection, Phase};
use crate::server::dispatch::After;
use crate::server::fd_name::conn_name;
use crate::server::stats::Stats;
use crate::server::token::TokenMap;

/// What a snapshot is taken of: the loop lends its parts.
#[derive(Debug)]
pub struct Parts<'a> {
    /// The listening sockets, in order.
    pub listeners: Vec<RawFd>,
    /// The admin socket and its path.
    pub admin: Option<(RawFd, &'a Path)>,
    /// The newest state in systemd's fd store: its name and memfd.
    pub fd_store: Option<(&'a str, RawFd)>,
    /// The epmd connections.
    pub conns: &'a TokenMap<Box<Connection>>,
    /// The registry.
    pub registry: &'a Registry,
    /// The counters.
    pub stats: &'a Stats,
    /// Seconds since the first daemon of this lineage started.
    pub uptime_secs: u64,
    /// The `--metrics-listen` sockets, in order.
    pub metrics_listeners: Vec<RawFd>,
}

/// The whole state, and the fds to pass in the order of [`State::fd_names`].
///
/// Delayed phases are handed over without their delay (a hand-over ends any
/// `-delay_accept` / `-delay_write` wait early).
pub fn capture(parts: Parts<'_>) -> (State, Vec<RawFd>) {
    let now = Instant::now();
    let mut fds = Vec::new();
    let mut listeners = Vec::new();
    for (i, fd) in parts.listeners.iter().enumerate() {
        listeners.push(format!("listen-{i}"));
        fds.push(*fd);
    }
    let admin = parts.admin.map(|(fd, path)| {
        fds.push(fd);
        AdminState {
            fd: "admin".to_owned(),
            path: path.display().to_string(),
        }
    });
    // The order of `fds` must be that of `State::fd_names`: listeners, admin, the
    // fd-store memfd, connections.
    let fd_store = parts.fd_store.map(|(name, fd)| {
        fds.push(fd);
        name.to_owned()
    });
    let mut tokens: Vec<&Token> = parts.conns.keys().collect();
    tokens.sort();
    let mut connections = Vec::with_capacity(tokens.len());
    for token in tokens {
        let c = &parts.conns[token];
        fds.push(c.stream.as_raw_fd());
        let phase = match c.phase {
            Phase::AcceptDelay | Phase::Reading => PhaseState::Reading,
            Phase::WriteDelay(after) | Phase::Writing(after) => match after {
                After::Close => PhaseState::WritingThenClose,
                After::Register => PhaseState::WritingThenRegister,
                After::Exit => PhaseState::WritingThenExit,
            },
            Phase::Registered => PhaseState::Registered,
        };
        connections.push(ConnState {
            fd: c.fd_name(*token),
            phase,
            rx_hex: to_hex(c.pending_rx()),
            tx_hex: to_hex(c.pending_tx()),
            deadline_ms: c
                .deadline()
                .map(|d| d.saturating_duration_since(now).as_millis() as u64),
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        });
    }
    let registrations = parts
        .registry
        .oldest_first()
        .map(|r| RegState {
            conn: {
                let token = Token(r.conn.0 as usize);
                parts
                    .conns
                    .get(&token)
                    .map_or_else(|| conn_name(token), |c| c.fd_name(token))
            },
            name: r.info.name.as_str().to_owned(),
            port: r.info.port,
            node_type: r.info.node_type.to_byte(),
            protocol: r.info.protocol,
            highest_version: r.info.highest_version,
            lowest_version: r.info.lowest_version,
            extra_hex: to_hex(&r.info.extra),
            creation: r.creation,
            registered_at: r.registered_at,
            fd_label: r.fd,
        })
        .collect();
    let old = parts
        .registry
        .old_entries()
        .map(|o| OldState {
            name: o.name.as_str().to_owned(),
            port: o.port,
            fd_label: o.fd,
            creation: o.creation,
        })
        .collect();
    let stats = StatsState {
        requests: parts
            .stats
            .requests
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        counters: parts
            .stats
            .counters()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        handovers: parts.stats.handovers,
    };
    let mut metrics_listeners = Vec::with_capacity(parts.metrics_listeners.len());
    for (i, fd) in parts.metrics_listeners.iter().enumerate() {
        metrics_listeners.push(format!("metrics-{i}"));
        fds.push(*fd);
    }
    let state = State {
        format: FORMAT.to_owned(),
        version: VERSION,
        fd_store,
        writer_pid: std::process::id(),
        listeners,
        admin,
        connections,
        registrations,
        old,
        stats,
        uptime_secs: parts.uptime_secs,
        metrics_listeners,
    };
    (state, fds)
}
