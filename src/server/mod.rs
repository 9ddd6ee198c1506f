//! The thin mio layer: one `Poll` on one thread moves bytes between sockets and the pure
//! [`protocol`](crate::protocol) and [`registry`](crate::registry).
//!
//! Every request has a total deadline measured from accept (not refreshed per byte); a
//! registration connection has none and lives until its peer closes it or sends anything.
//! Accept errors never end the process: accepting pauses briefly and resumes.

pub mod admin;
mod admin_bind;
mod admin_views;
pub mod connection;
pub mod dispatch;
pub mod fdstore;
pub mod handover;
pub mod listener;
pub mod peer;
pub mod policy;
pub mod source;
pub mod stats;
pub mod token;

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::admin::{ConfigEntry, Source as ConfigSource};
use crate::protocol::tag::FIRST_READ_BYTES;
use crate::registry::{ConnId, Limits, Registry};
use admin::{AdminConn, AdminListener};
use connection::{CloseReason, Connection, Output, Phase, ReadOutcome};
use dispatch::{After, DispatchConfig, Event, Origin};
use policy::AccessPolicy;
use stats::Stats;
use token::{listener_index, ConnTokens};

/// How long accepting pauses after an accept error such as EMFILE, unless a connection
/// closes (and frees an fd) sooner.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Settings of the daemon loop.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How requests are answered.
    pub dispatch: DispatchConfig,
    /// Total time a non-registration connection may take, from accept to reply written.
    pub packet_timeout: Duration,
    /// `-delay_accept`: a new connection is not read before this much time has passed.
    pub delay_accept: Option<Duration>,
    /// `-delay_write`: each reply waits this long before it is written (without blocking
    /// other connections, unlike the C epmd's sleep).
    pub delay_write: Option<Duration>,
    /// Registry bounds.
    pub limits: Limits,
    /// The effective configuration, for `admin config`.
    pub report: Vec<ConfigEntry>,
    /// NAMES and DUMP report the port the client connected to instead of the configured
    /// one (socket activation, where the two may differ).
    pub header_from_socket: bool,
    /// Who may send NAMES.
    pub names_policy: AccessPolicy,
    /// Who may send PORT_PLEASE2.
    pub port_please_policy: AccessPolicy,
    /// Connection caps.
    pub caps: Caps,
    /// Where the listening sockets came from, for `admin config`.
    pub listen_source: ConfigSource,
}

/// Bounds on open epmd connections (admin connections are not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most open connections in total; above it a new connection is closed at once.
    pub max_connections: usize,
    /// Most open connections from one non-local source: an IPv4 address, or an IPv6
    /// network of `ipv6_source_prefix` bits.
    pub max_per_source: usize,
    /// The prefix length that makes IPv6 addresses one source (64 by default).
    pub ipv6_source_prefix: u8,
    /// Connections kept for local peers: non-local peers are refused once
    /// `max_connections - local_reserve` connections are open, so a remote flood cannot
    /// keep local nodes from registering.
    pub local_reserve: usize,
}

/// Connections kept free of registrations, so that lookups and NAMES are answered even
/// when registrations fill every other fd.
pub const SHORT_REQUEST_RESERVE: usize = 4;

/// Spare fds beyond those open when the daemon starts serving (a log file reopened, a
/// hand-over's socket pair).
pub const FD_MARGIN: usize = 1;

impl Caps {
    /// Caps for a process allowed `fd_limit` open files of which `fds_in_use` are taken by
    /// listeners, the poll, signals, logging and the admin socket; a tenth (at least 16)
    /// reserved for local peers; 1024 per remote source.
    pub fn for_fd_limit(fd_limit: u64, fds_in_use: usize) -> Caps {
        let max = usize::try_from(fd_limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(fds_in_use + FD_MARGIN)
            .max(64);
        Caps {
            max_connections: max,
            max_per_source: 1024,
            ipv6_source_prefix: source::DEFAULT_IPV6_SOURCE_PREFIX,
            local_reserve: (max / 10).max(16),
        }
    }
}

/// Why [`Server::run`] returned.
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

/// How often at most `STATUS=` is sent to systemd while registrations change.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The daemon: listeners, connections, timers and the registry.
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// Boxed: a registration connection lives as long as its node, and the map's spare
    /// capacity then costs a pointer per slot rather than a whole connection.
    conns: token::TokenMap<Box<Connection>>,
    tokens: ConnTokens,
    /// `(when, connection)`: one entry per connection with a deadline or delay.
    timers: BTreeSet<(Instant, Token)>,
    registry: Registry,
    config: ServerConfig,
    accept_paused_until: Option<Instant>,
    scratch: Box<[u8]>,
    admin: Option<AdminListener>,
    admin_conns: token::TokenMap<AdminConn>,
    stats: Stats,
    started: Instant,
    signals: signal_hook_mio::v1_0::Signals,
    notifier: Option<crate::systemd::Notifier>,
    /// Watchdog interval and the next ping.
    watchdog: Option<(Duration, Instant)>,
    /// The next time `STATUS=` may be sent, while the registration count has changed.
    status_due: Option<Instant>,
    last_status_count: Option<usize>,
    /// Open connections per non-local source ([`source::source_key`]).
    per_source: HashMap<std::net::IpAddr, usize>,
    /// The NAMES reply for (registry generation, header port), shared by every reader.
    names_cache: Option<(u64, u32, std::rc::Rc<Vec<u8>>)>,
    /// A hand-over asked for by an admin client, acted on after the current events.
    handover_requested: Option<HandOverRequest>,
    /// A KILL honoured while accepting, acted on after the current events.
    shutdown_requested: Option<Shutdown>,
    ready_sent: bool,
    fdstore: Option<fdstore::FdStore>,
    /// The fd-store state (name, memfd) received in a hand-over, until the fd store is
    /// enabled.
    inherited_memfd: Option<(String, std::fs::File)>,
    /// Connection fds may also be held by another process (fd store, hand-over), so they
    /// must be deregistered explicitly before they are closed.
    shared_fds: bool,
}

impl Server {
    /// A server on already bound, non-blocking listening sockets, with an optional admin
    /// socket (already bound) and its path.
    pub fn new(
        listeners: Vec<std::net::TcpListener>,
        admin: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
        config: ServerConfig,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, token::listener(i), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        let admin = match admin {
            Some((l, path)) => {
                l.set_nonblocking(true)?;
                let mut listener = mio::net::UnixListener::from_std(l);
                poll.registry()
                    .register(&mut listener, token::ADMIN, Interest::READABLE)?;
                Some(AdminListener::new(listener, path))
            }
            None => None,
        };
        let mut signals = signal_hook_mio::v1_0::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGUSR2,
        ])?;
        poll.registry()
            .register(&mut signals, token::SIGNALS, Interest::READABLE)?;
        Ok(Server {
            signals,
            notifier: None,
            watchdog: None,
            status_due: None,
            last_status_count: None,
            per_source: HashMap::new(),
            names_cache: None,
            handover_requested: None,
            shutdown_requested: None,
            ready_sent: false,
            fdstore: None,
            inherited_memfd: None,
            shared_fds: false,
            poll,
            listeners: mio_listeners,
            conns: token::TokenMap::default(),
            tokens: ConnTokens::new(),
            timers: BTreeSet::new(),
            registry: Registry::new(config.limits),
            config,
            accept_paused_until: None,
            scratch: vec![0u8; FIRST_READ_BYTES].into_boxed_slice(),
            admin,
            admin_conns: token::TokenMap::default(),
            stats: Stats::default(),
            started: Instant::now(),
        })
    }

    /// The addresses the daemon listens on.
    pub fn local_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Open epmd connections.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// The registry (read-only).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Sets the connection caps, and the registration cap a few connections below them.
    pub fn set_caps(&mut self, caps: Caps) {
        let recount = caps.ipv6_source_prefix != self.config.caps.ipv6_source_prefix;
        self.config.caps = caps;
        if recount {
            // The open connections' sources, counted with the new prefix.
            self.per_source.clear();
            for c in self.conns.values().filter(|c| !c.local) {
                let source = source::source_key(c.peer.ip(), caps.ipv6_source_prefix);
                *self.per_source.entry(source).or_insert(0) += 1;
            }
        }
        self.registry
            .set_max_registrations(caps.max_connections.saturating_sub(SHORT_REQUEST_RESERVE));
    }

    /// Sends sd_notify messages to `notifier` (READY, STATUS, STOPPING) and pings the
    /// watchdog every `watchdog` when set.
    pub fn set_notifier(
        &mut self,
        notifier: Option<crate::systemd::Notifier>,
        watchdog: Option<Duration>,
    ) {
        self.notifier = notifier;
        self.watchdog = watchdog.map(|d| (d, Instant::now()));
    }

    fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            if let Err(e) = n.notify(state) {
                debug!("sd_notify {state:?} failed: {e}");
            }
        }
    }

    fn send_status(&mut self) {
        let count = self.registry.len();
        if self.last_status_count != Some(count) {
            self.notify(&format!(
                "STATUS=Processing port mapping requests; {count} nodes registered"
            ));
            self.last_status_count = Some(count);
        }
        self.status_due = None;
    }

    /// Tells systemd the daemon is stopping.
    pub fn notify_stopping(&self) {
        self.notify("STOPPING=1");
    }

    /// Tells systemd that `pid` is the service's main process from now on.
    pub fn notify_main_pid(&self, pid: u32) {
        self.notify(&format!("MAINPID={pid}"));
    }

    /// Runs the loop until a KILL is honoured, a signal asks to stop or to hand over, an
    /// admin client asks for an upgrade, or polling fails. It may be called again after a
    /// failed hand-over: the loop resumes where it was.
    pub fn run(&mut self) -> io::Result<Shutdown> {
        let mut events = Events::with_capacity(1024);
        if !self.ready_sent {
            self.notify(&format!("READY=1\nMAINPID={}", std::process::id()));
            self.ready_sent = true;
        }
        self.send_status();
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                let token = event.token();
                if let Some(i) = listener_index(token) {
                    if self.accept_paused_until.is_none() {
                        self.accept_from(i);
                    }
                } else if token == token::SIGNALS {
                    if let Some(shutdown) = self.handle_signals() {
                        return Ok(shutdown);
                    }
                } else if token == token::ADMIN {
                    self.accept_admin();
                } else if self.admin_conns.contains_key(&token) {
                    self.admin_ready(token);
                } else if let Some(shutdown) = self.connection_ready(token) {
                    return Ok(shutdown);
                }
            }
            if let Some(shutdown) = self.handle_timers(Instant::now()) {
                return Ok(shutdown);
            }
            if let Some(shutdown) = self.shutdown_requested.take() {
                return Ok(shutdown);
            }
            if let Some(request) = self.handover_requested.take() {
                return Ok(Shutdown::HandOver(request));
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        [
            self.timers.first().map(|(t, _)| *t),
            self.accept_paused_until,
            self.watchdog.map(|(_, next)| next),
            self.status_due,
            self.fdstore.as_ref().and_then(|s| s.next_wakeup()),
            self.next_admin_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|t| t.saturating_duration_since(now))
    }

    fn handle_signals(&mut self) -> Option<Shutdown> {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            match sig {
                signal_hook::consts::SIGHUP => {
                    info!("SIGHUP: reopening the log file");
                    crate::logging::reopen();
                }
                signal_hook::consts::SIGUSR2 => {
                    info!("SIGUSR2: handing over to a new process");
                    // Acted on after this batch of events, so none of them is lost if the
                    // hand-over fails.
                    self.handover_requested = Some(HandOverRequest { requester: None });
                }
                other => {
                    info!("signal {other}: shutting down");
                    return Some(Shutdown::Terminated(other));
                }
            }
        }
        None
    }

    fn accept_from(&mut self, index: usize) {
        // Only the first connection of this readiness event is answered at once: later
        // ones may have arrived after other connections' bytes that this batch of events
        // does not hold yet, and answering them first would reorder what the C epmd does
        // in order (it reads a new connection one select pass after accepting it).
        let mut answer_now = true;
        loop {
            let accepted = match self.listeners.get(index) {
                Some(l) => l.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.admit(stream, peer, answer_now);
                    answer_now = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    self.stats.accept_errors += 1;
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM...: never fatal (CVE-2026-42792).
                    // The pending connection stays in the backlog; with edge-triggered
                    // readiness no event repeats, so there is no busy loop.
                    warn!("error in accept: {e}; pausing accept");
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    fn resume_accept(&mut self) {
        self.accept_paused_until = None;
        for i in 0..self.listeners.len() {
            if self.accept_paused_until.is_some() {
                break;
            }
            self.accept_from(i);
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: std::net::SocketAddr, answer_now: bool) {
        // A loopback peer is local whatever the local address: skip getsockname then.
        let is_local = peer::is_local_loopback(peer)
            || stream.local_addr().is_ok_and(|l| peer::is_local(peer, l));
        let caps = self.config.caps;
        let open = self.conns.len();
        let source = source::source_key(peer.ip(), caps.ipv6_source_prefix);
        let from_source = if is_local {
            0
        } else {
            self.per_source.get(&source).copied().unwrap_or(0)
        };
        let refused = if open >= caps.max_connections {
            Some("connection cap")
        } else if !is_local && open >= caps.max_connections.saturating_sub(caps.local_reserve) {
            Some("connection cap (room reserved for local peers)")
        } else if !is_local && from_source >= caps.max_per_source {
            Some("per-source connection cap")
        } else {
            None
        };
        if let Some(why) = refused {
            // Dropping the stream closes it at once: the client sees EOF, as the C epmd's
            // "slots full" path does.
            self.stats.capped += 1;
            debug!("refusing {peer}: {why}");
            return;
        }
        let token = self.tokens.allocate();
        let now = Instant::now();
        let mut conn = Connection::new(
            stream,
            peer,
            is_local,
            Phase::Reading,
            now + self.config.packet_timeout,
        );
        if let Some(d) = self.config.delay_accept {
            conn.delay(Phase::AcceptDelay, now + d);
        }
        trace!("accepted {peer} (local: {}) as {token:?}", conn.local);
        conn.may_list = self.config.names_policy.allows(peer, conn.local);
        conn.may_lookup = self.config.port_please_policy.allows(peer, conn.local);
        if !conn.local {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
        self.conns.insert(token, Box::new(conn));
        self.stats.accepted += 1;
        self.stats.observe(self.conns.len(), self.registry.len());
        self.rearm(token);
        if self.config.delay_accept.is_none() && answer_now {
            // On loopback the request usually arrives before the accept: read and answer
            // it now. A lookup answered at once is closed without ever entering the poll
            // (no epoll_ctl, no poll round trip); a miss costs one EAGAIN read.
            if let Some(shutdown) = self.read_and_dispatch(token) {
                self.shutdown_requested = Some(shutdown);
            }
        }
        self.enter_poll(token);
    }

    /// Registers a connection that is still open with the poll, with the interest its
    /// state needs; one that cannot be registered is closed.
    fn enter_poll(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.in_poll {
            return;
        }
        let wanted = conn.wanted_interest();
        match self
            .poll
            .registry()
            .register(&mut conn.stream, token, wanted)
        {
            Ok(()) => {
                conn.in_poll = true;
                conn.interest = wanted;
            }
            Err(e) => {
                warn!("{token:?}: cannot register the connection: {e}");
                self.close(token);
            }
        }
    }

    /// Handles readiness of a connection. Events may be spurious: every syscall result is
    /// checked and `WouldBlock` is the normal end of a turn.
    fn connection_ready(&mut self, token: Token) -> Option<Shutdown> {
        let conn = self.conns.get_mut(&token)?;
        match conn.phase {
            Phase::AcceptDelay | Phase::WriteDelay(_) => None,
            Phase::Reading => self.read_and_dispatch(token),
            Phase::Writing(after) => self.continue_writing(token, after),
            Phase::Registered => {
                if conn.has_pending_output() {
                    if let Err(e) = conn.flush() {
                        debug!("write to registration connection failed: {e}");
                        self.close(token);
                        return None;
                    }
                    self.update_interest(token);
                }
                self.check_registration(token);
                None
            }
        }
    }

    fn read_and_dispatch(&mut self, token: Token) -> Option<Shutdown> {
        let conn = self.conns.get_mut(&token)?;
        match conn.read_request(&mut self.scratch) {
            ReadOutcome::Pending => None,
            ReadOutcome::Close(reason) => {
                log_close(token, reason);
                self.stats.count_close(reason);
                self.close(token);
                None
            }
            ReadOutcome::Request(request) => {
                trace!("{token:?}: {request:?}");
                self.dispatch(token, request)
            }
        }
    }

    fn dispatch(&mut self, token: Token, request: crate::protocol::Request) -> Option<Shutdown> {
        let conn = self.conns.get(&token)?;
        let refused = match request {
            crate::protocol::Request::Names => !conn.may_list,
            crate::protocol::Request::PortPlease2(_) => !conn.may_lookup,
            _ => false,
        };
        if refused {
            debug!("{token:?}: refused by the access policy");
            self.stats.policy_refusals += 1;
            self.close(token);
            return None;
        }
        if request == crate::protocol::Request::Names {
            let header_port = self.header_port_for(conn);
            let reply = self.cached_names(header_port);
            self.stats.count_event(&Event::Names);
            return self.send(token, Output::Shared(reply), After::Close);
        }
        let origin = Origin {
            conn: conn_id(token),
            fd: u32::try_from(conn.stream.as_raw_fd()).unwrap_or(0),
            local: conn.local,
        };
        let mut dispatch_config = self.config.dispatch;
        dispatch_config.header_port = self.header_port_for(conn);
        let conns = &self.conns;
        let action = dispatch::handle(
            request,
            origin,
            &dispatch_config,
            &mut self.registry,
            unix_now(),
            |owner| {
                conns
                    .get(&Token(owner.0 as usize))
                    .is_none_or(|c| c.peer_gone())
            },
        );
        log_event(token, &action.event);
        self.stats.count_event(&action.event);
        if let Some(removed) = &action.removed {
            self.emit("unregister", removed);
        }
        if matches!(
            action.event,
            Event::Registered { .. } | Event::ReplacedDeadOwner { .. }
        ) {
            if let Some(reg) = self.registry.by_conn(conn_id(token)).cloned() {
                self.emit("register", &reg);
                self.fd_store_changed(Some(token));
            }
            self.stats.observe(self.conns.len(), self.registry.len());
        }
        if let Some(other) = action.close {
            self.close(Token(other.0 as usize));
        }
        if action.reply.is_empty() {
            self.close(token);
            return None;
        }
        self.send(token, Output::Owned(action.reply), action.after)
    }

    fn send(&mut self, token: Token, reply: Output, after: After) -> Option<Shutdown> {
        let conn = self.conns.get_mut(&token)?;
        conn.queue(reply);
        match self.config.delay_write {
            Some(d) => {
                conn.delay(Phase::WriteDelay(after), Instant::now() + d);
                self.rearm(token);
                None
            }
            None => {
                conn.phase = Phase::Writing(after);
                self.continue_writing(token, after)
            }
        }
    }

    /// The port NAMES and DUMP report to `conn`: the configured one, or under socket
    /// activation the one the client connected to.
    fn header_port_for(&self, conn: &Connection) -> u32 {
        if !self.config.header_from_socket {
            return self.config.dispatch.header_port;
        }
        conn.local_addr()
            .map_or(self.config.dispatch.header_port, |local| {
                u32::from(local.port())
            })
    }

    /// The NAMES reply, rendered once per change of the registry and header port.
    fn cached_names(&mut self, header_port: u32) -> std::rc::Rc<Vec<u8>> {
        let generation = self.registry.generation();
        if let Some((g, p, reply)) = &self.names_cache {
            if *g == generation && *p == header_port {
                return reply.clone();
            }
        }
        let reply = std::rc::Rc::new(dispatch::names_reply(&self.registry, header_port));
        self.names_cache = Some((generation, header_port, reply.clone()));
        reply
    }

    fn continue_writing(&mut self, token: Token, after: After) -> Option<Shutdown> {
        let conn = self.conns.get_mut(&token)?;
        match conn.flush() {
            Ok(true) => self.finish_reply(token, after),
            Ok(false) => {
                if after == After::Register {
                    // The registration stands while its reply waits for buffer space.
                    self.become_registration(token);
                } else {
                    self.update_interest(token);
                }
                None
            }
            Err(e) => {
                debug!("{token:?}: write failed: {e}");
                // A failed ALIVE2 reply unregisters the name again (close does that).
                self.close(token);
                None
            }
        }
    }

    fn finish_reply(&mut self, token: Token, after: After) -> Option<Shutdown> {
        match after {
            After::Close => {
                self.close(token);
                None
            }
            After::Register => {
                self.become_registration(token);
                None
            }
            After::Exit => Some(Shutdown::Killed),
        }
    }

    fn become_registration(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        conn.phase = Phase::Registered;
        conn.set_deadline(None);
        self.rearm(token);
        self.update_interest(token);
        // Bytes that arrived behind the request (or an EOF) are already waiting and will
        // produce no new edge: look now, as the C epmd's next select would.
        self.check_registration(token);
    }

    fn check_registration(&mut self, token: Token) {
        let ended = match self.conns.get_mut(&token) {
            Some(conn) => conn.registration_ended(),
            None => return,
        };
        if ended {
            self.close(token);
        }
    }

    fn update_interest(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let wanted = conn.wanted_interest();
        // Not in the poll yet (answered right after accept): enter_poll sets the interest.
        if conn.in_poll && wanted != conn.interest {
            match self
                .poll
                .registry()
                .reregister(&mut conn.stream, token, wanted)
            {
                Ok(()) => conn.interest = wanted,
                Err(e) => warn!("{token:?}: cannot change interest: {e}"),
            }
        }
    }

    /// Puts the connection's timer entry where its phase needs it.
    fn rearm(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let next = conn.next_timer();
        let old = conn.timer();
        if next == old {
            return;
        }
        if let Some(old) = old {
            self.timers.remove(&(old, token));
        }
        if let Some(t) = next {
            self.timers.insert((t, token));
        }
        conn.set_timer(next);
    }

    fn handle_timers(&mut self, now: Instant) -> Option<Shutdown> {
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.resume_accept();
        }
        if let Some((every, next)) = self.watchdog {
            if next <= now {
                self.notify("WATCHDOG=1");
                self.watchdog = Some((every, now + every));
            }
        }
        if self.status_due.is_some_and(|t| t <= now) {
            self.send_status();
        }
        self.flush_fd_store();
        self.expire_admin(now);
        if self.notifier.is_some()
            && self.status_due.is_none()
            && self.last_status_count != Some(self.registry.len())
        {
            self.status_due = Some(now + STATUS_INTERVAL);
        }
        while let Some(&(when, token)) = self.timers.first() {
            if when > now {
                break;
            }
            self.timers.pop_first();
            let Some(conn) = self.conns.get_mut(&token) else {
                continue;
            };
            conn.set_timer(None);
            if conn.deadline().is_some_and(|d| d <= now) {
                debug!("{token:?}: packet timeout");
                self.stats.deadline_expiries += 1;
                self.close(token);
                continue;
            }
            match conn.phase {
                Phase::AcceptDelay if conn.delay_until().is_some_and(|t| t <= now) => {
                    conn.end_delay(Phase::Reading);
                    self.rearm(token);
                    if let Some(s) = self.read_and_dispatch(token) {
                        return Some(s);
                    }
                }
                Phase::WriteDelay(after) if conn.delay_until().is_some_and(|t| t <= now) => {
                    conn.end_delay(Phase::Writing(after));
                    self.rearm(token);
                    if let Some(s) = self.continue_writing(token, after) {
                        return Some(s);
                    }
                }
                _ => self.rearm(token),
            }
        }
        None
    }

    /// Closes a connection: its registration (if any) moves to the old list, its timer and
    /// poll registration go, and the socket is closed.
    fn close(&mut self, token: Token) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        if let Some(t) = conn.timer() {
            self.timers.remove(&(t, token));
        }
        let registered = conn.phase == Phase::Registered;
        if let Some(reg) = self.registry.unregister_conn(conn_id(token)) {
            info!("unregistering '{}'", reg.info.name);
            self.emit("unregister", &reg);
        }
        if self.fdstore.is_some() {
            let name = conn.fd_name(token);
            self.fd_store_closed(token, &name, registered);
        }
        self.stats.bytes_in = self.stats.bytes_in.saturating_add(conn.bytes_in);
        self.stats.bytes_out = self.stats.bytes_out.saturating_add(conn.bytes_out);
        if !conn.local {
            let source = source::source_key(conn.peer.ip(), self.config.caps.ipv6_source_prefix);
            if let Some(n) = self.per_source.get_mut(&source) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&source);
                }
            }
        }
        if self.shared_fds && conn.in_poll {
            // Another process may hold this socket too (systemd's fd store, a previous
            // daemon): closing our fd would not remove it from our poll.
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
        // Otherwise closing the only fd removes it from the poll: one syscall less.
        drop(conn);
        if self.accept_paused_until.is_some() {
            // An fd was freed: try accepting again at once.
            self.resume_accept();
        }
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listeners", &self.listeners.len())
            .field("connections", &self.conns.len())
            .field("registrations", &self.registry.len())
            .finish_non_exhaustive()
    }
}

fn conn_id(token: Token) -> ConnId {
    ConnId(token.0 as u64)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn log_close(token: Token, reason: CloseReason) {
    match reason {
        CloseReason::PeerClosed | CloseReason::IoError => {
            debug!("{token:?}: closed before a complete request ({reason:?})")
        }
        CloseReason::Frame(e) => info!("{e}"),
        CloseReason::Request(e) => info!("{e}"),
    }
}

fn log_event(token: Token, event: &Event) {
    match event {
        Event::Registered { creation } | Event::ReplacedDeadOwner { creation } => {
            debug!("{token:?}: registered, creation {creation}")
        }
        Event::Duplicate => info!("node name already occupied"),
        Event::Full => warn!("registration refused: the registration cap is reached"),
        Event::BadName(e) => info!("{e}"),
        Event::NotLocal => info!("non-local peer sent a local-only request"),
        other => debug!("{token:?}: {other:?}"),
    }
}
