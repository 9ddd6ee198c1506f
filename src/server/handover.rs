//! The server's side of a hand-over: writing its whole state (with the fds to pass) and
//! rebuilding a server from such a state in the successor process.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::Token;

use super::connection::{Connection, Phase};
use super::dispatch::After;
use super::stats::Stats;
use super::{conn_id, Server, ServerConfig};
use crate::handover::state::{
    from_hex, to_hex, AdminState, ConnState, OldState, PhaseState, RegState, State, StateError,
    StatsState, FORMAT, VERSION,
};
use crate::protocol::{NodeInfo, NodeName, NodeType};
use crate::registry::{OldEntry, Registration, Registry};

impl Server {
    /// The whole state, and the fds to pass in the order of [`State::fd_names`].
    ///
    /// Delayed phases are handed over without their delay (a hand-over ends any
    /// `-delay_accept` / `-delay_write` wait early).
    pub fn snapshot(&self) -> (State, Vec<RawFd>) {
        let now = Instant::now();
        let mut fds = Vec::new();
        let mut listeners = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            listeners.push(format!("listen-{i}"));
            fds.push(l.as_raw_fd());
        }
        let admin = self.admin.as_ref().map(|a| {
            fds.push(a.listener.as_raw_fd());
            AdminState {
                fd: "admin".to_owned(),
                path: a.path.display().to_string(),
            }
        });
        // The order of `fds` must be that of `State::fd_names`: listeners, admin, the
        // fd-store memfd, connections.
        let fd_store = self
            .fdstore
            .as_ref()
            .and_then(|s| s.stored_state())
            .map(|(name, fd)| {
                fds.push(fd);
                name.to_owned()
            });
        let mut tokens: Vec<&Token> = self.conns.keys().collect();
        tokens.sort();
        let mut connections = Vec::with_capacity(tokens.len());
        for token in tokens {
            let c = &self.conns[token];
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
        let registrations = self
            .registry
            .oldest_first()
            .map(|r| RegState {
                conn: {
                    let token = Token(r.conn.0 as usize);
                    self.conns
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
        let old = self
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
            requests: self
                .stats
                .requests
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            counters: self
                .stats
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            handovers: self.stats.handovers,
        };
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
            uptime_secs: self.started.elapsed().as_secs(),
        };
        (state, fds)
    }

    /// Rebuilds a server from `state` and the fds passed with it (by name). Connections
    /// whose peer is already gone are dropped with their registrations; the successor's
    /// poll reports every connection that became readable meanwhile.
    ///
    /// `handover` is true for a live hand-over (counted in `handovers`), false for a
    /// restart from systemd's fd store.
    pub fn from_state(
        state: State,
        mut fds: HashMap<String, OwnedFd>,
        config: ServerConfig,
        handover: bool,
    ) -> Result<Server, StateError> {
        let mut take = |name: &str| {
            fds.remove(name)
                .ok_or(StateError::MissingFd(name.to_owned()))
        };
        let mut listeners = Vec::with_capacity(state.listeners.len());
        for name in &state.listeners {
            listeners.push(std::net::TcpListener::from(take(name)?));
        }
        let admin = match &state.admin {
            Some(a) => Some((
                std::os::unix::net::UnixListener::from(take(&a.fd)?),
                PathBuf::from(&a.path),
            )),
            None => None,
        };
        let inherited_memfd = match &state.fd_store {
            Some(name) => Some((name.clone(), std::fs::File::from(take(name)?))),
            None => None,
        };
        let mut streams = Vec::with_capacity(state.connections.len());
        for c in &state.connections {
            streams.push(std::net::TcpStream::from(take(&c.fd)?));
        }
        let limits = config.limits;
        let mut server = Server::new(listeners, admin, config)
            .map_err(|_| StateError::BadField("listening socket"))?;
        if handover {
            // The old process still serves on the admin socket until it says GO.
            server.keep_admin_socket_file(true);
        }
        let now = Instant::now();
        let mut ids = HashMap::new();
        for (c, stream) in state.connections.iter().zip(streams) {
            let (Ok(peer), Ok(())) = (stream.peer_addr(), stream.set_nonblocking(true)) else {
                continue; // the peer is gone: the connection (and its registration) ends
            };
            let local = stream
                .local_addr()
                .is_ok_and(|l| super::peer::is_local(peer, l));
            let token = server.tokens.allocate();
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
            conn.may_list = server.config.names_policy.allows(peer, conn.local);
            conn.may_lookup = server.config.port_please_policy.allows(peer, conn.local);
            conn.restore_buffers(
                from_hex(&c.rx_hex).ok_or(StateError::BadField("rx"))?,
                from_hex(&c.tx_hex).ok_or(StateError::BadField("tx"))?,
            );
            let interest = conn.wanted_interest();
            server
                .poll
                .registry()
                .register(&mut conn.stream, token, interest)
                .map_err(|_| StateError::BadField("connection"))?;
            conn.interest = interest;
            conn.in_poll = true;
            if !conn.local {
                let prefix = server.config.caps.ipv6_source_prefix;
                let source = super::source::source_key(peer.ip(), prefix);
                *server.per_source.entry(source).or_insert(0) += 1;
            }
            server.conns.insert(token, Box::new(conn));
            server.rearm(token);
            ids.insert(c.fd.clone(), token);
        }
        let mut live = Vec::with_capacity(state.registrations.len());
        for r in &state.registrations {
            let Some(token) = ids.get(&r.conn) else {
                continue; // its connection ended while the daemon was handing over
            };
            let name =
                NodeName::new(r.name.as_bytes()).map_err(|_| StateError::BadField("name"))?;
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
                conn: conn_id(*token),
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
        server.registry = Registry::restore(limits, live, old).map_err(StateError::Registry)?;
        server.stats = Stats::restore(
            state.stats.counters.iter().map(|(k, v)| (k.as_str(), *v)),
            state.stats.requests.iter().map(|(k, v)| (k.as_str(), *v)),
        );
        server.stats.handovers = state.stats.handovers.saturating_add(u64::from(handover));
        server.inherited_memfd = inherited_memfd;
        server.shared_fds = true;
        server.started = now
            .checked_sub(Duration::from_secs(state.uptime_secs))
            .unwrap_or(now);
        // Registration connections whose peer closed during the hand-over: the poll reports
        // them readable; ones already at EOF are found here too.
        let registered: Vec<Token> = server
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::Registered)
            .map(|(t, _)| *t)
            .collect();
        for t in registered {
            server.check_registration(t);
        }
        Ok(server)
    }

    /// The fd names of the connections restored from a saved state.
    pub fn store_names(&self) -> std::collections::HashSet<String> {
        self.conns
            .values()
            .filter_map(|c| c.store_name.as_deref().map(str::to_owned))
            .collect()
    }

    /// Whether the admin socket file stays when this server is dropped: true in a
    /// hand-over successor until the hand-over is confirmed, false once it is (the file
    /// is then this process's to remove).
    pub fn keep_admin_socket_file(&mut self, keep: bool) {
        if let Some(a) = self.admin.as_mut() {
            a.unlink_on_drop = !keep;
        }
    }

    /// Leaves the admin socket file in place when this process exits (its successor owns
    /// it now).
    pub fn disown_admin_socket(&mut self) {
        if let Some(a) = self.admin.as_mut() {
            a.path = PathBuf::new();
        }
    }
}

/// The default fd name of the connection with `token`: unique across processes (a restored
/// connection keeps its name while tokens start again), through this process's random
/// incarnation id rather than its pid, which repeats (pid 1 in every container start).
pub fn conn_name(token: Token) -> String {
    format!("conn-{:016x}-{}", super::fdstore::incarnation(), token.0)
}
