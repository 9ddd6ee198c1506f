//! The thin mio layer: one `Poll` on one thread moves bytes between sockets and the pure
//! [`protocol`](crate::protocol) and [`registry`](crate::registry).
//!
//! Every request has a total deadline measured from accept (not refreshed per byte); a
//! registration connection has none and lives until its peer closes it or sends anything.
//! Accept errors never end the process: accepting pauses briefly and resumes.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{debug, info, trace, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::admin::{ConfigEntry, Source as ConfigSource, View};
use crate::handover::state::{State, StateError};
use crate::protocol::tag::FIRST_READ_BYTES;
use crate::registry::{ConnId, Registration, Registry};
use crate::server::admin::AdminListener;
use crate::server::admin_views::{self, Sources};
use crate::server::admission::{Admission, Refusal};
use crate::server::config::{Caps, ServerConfig, SHORT_REQUEST_RESERVE};
use crate::server::connection::{CloseReason, Connection, Output, Phase, ReadOutcome};
use crate::server::dispatch::{self, After, Event, Origin};
use crate::server::events::{self, UnregisterReason};
use crate::server::http::{Route, Status};
use crate::server::http_plane::HttpPlane;
use crate::server::lifecycle::fdstore::{FdStore, FdStoreCounts};
use crate::server::lifecycle::snapshot::{self, Parts};
use crate::server::lifecycle::{restore, HandOverRequest, Lifecycle, Shutdown};
use crate::server::listener::listen_report;
use crate::server::metrics::{self, Format, ProcessFigures};
use crate::server::operator::{AdminRequest, OperatorPlane};
use crate::server::peer;
use crate::server::stats::Stats;
use crate::server::supervision::Supervisor;
use crate::server::token::{self, listener_index, ConnTokens, TokenMap};

/// How long accepting pauses after an accept error such as EMFILE, unless a connection
/// closes (and frees an fd) sooner.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The daemon: the loop, its listeners, connections, timers and registry, and the parts
/// it hands events to (admission, the operator plane, supervision, the lifecycle).
pub struct Server {
    poll: Poll,
    listeners: Vec<TcpListener>,
    /// Boxed: a registration connection lives as long as its node, and the map's spare
    /// capacity then costs a pointer per slot rather than a whole connection.
    conns: TokenMap<Box<Connection>>,
    tokens: ConnTokens,
    /// `(when, connection)`: one entry per connection with a deadline or delay.
    timers: BTreeSet<(Instant, Token)>,
    registry: Registry,
    config: ServerConfig,
    accept_paused_until: Option<Instant>,
    scratch: Box<[u8]>,
    stats: Stats,
    started: Instant,
    signals: signal_hook_mio::v1_0::Signals,
    /// The NAMES reply for (registry generation, header port), shared by every reader.
    names_cache: Option<(u64, u32, std::rc::Rc<Vec<u8>>)>,
    admission: Admission,
    operator: OperatorPlane,
    /// The operator plane's HTTP side (`--metrics-listen`).
    http: HttpPlane,
    supervisor: Supervisor,
    lifecycle: Lifecycle,
    /// When this process started serving, in seconds since the Unix epoch.
    process_started: f64,
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
            names_cache: None,
            admission: Admission::new(
                config.caps,
                config.names_policy.clone(),
                config.port_please_policy.clone(),
            ),
            operator: OperatorPlane::new(admin),
            http: HttpPlane::default(),
            process_started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            supervisor: Supervisor::default(),
            lifecycle: Lifecycle::default(),
            poll,
            listeners: mio_listeners,
            conns: TokenMap::default(),
            tokens: ConnTokens::new(),
            timers: BTreeSet::new(),
            registry: Registry::new(config.limits),
            config,
            accept_paused_until: None,
            scratch: vec![0u8; FIRST_READ_BYTES].into_boxed_slice(),
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

    /// Serves `/metrics`, `/livez` and `/readyz` on these bound listening sockets.
    pub fn serve_metrics(&mut self, listeners: Vec<std::net::TcpListener>) -> io::Result<()> {
        self.http = HttpPlane::new(listeners, self.poll.registry())?;
        Ok(())
    }

    /// The addresses `/metrics` is served on.
    pub fn metrics_addrs(&self) -> Vec<std::net::SocketAddr> {
        self.http.local_addrs()
    }

    /// Sets the connection caps, and the registration cap a few connections below them.
    pub fn set_caps(&mut self, caps: Caps) {
        self.config.caps = caps;
        self.admission
            .set_caps(caps, self.conns.values().map(|c| (c.peer, c.local)));
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
        self.supervisor.set_notifier(notifier, watchdog);
    }

    /// Tells systemd the daemon is stopping.
    pub fn notify_stopping(&self) {
        self.supervisor.notify("STOPPING=1");
    }

    /// Tells systemd that `pid` is the service's main process from now on.
    pub fn notify_main_pid(&self, pid: u32) {
        self.supervisor.notify(&format!("MAINPID={pid}"));
    }

    /// Where the listening sockets came from: the service manager, or bound as `-address`
    /// (flag or environment) or the default asked.
    pub fn listen_source(&self) -> ConfigSource {
        self.config.listen_source
    }

    /// The effective configuration for `admin config`: the settings as configured, plus
    /// `listen`, the sockets actually listened on and where they came from. Under socket
    /// activation `address` names the addresses of the passed sockets (source `systemd`),
    /// since `-address` was not used.
    pub fn config_report(&self) -> Vec<ConfigEntry> {
        listen_report(
            &self.config.report,
            &self.local_addrs(),
            self.config.listen_source,
        )
    }

    /// Runs the loop until a KILL is honoured, a signal asks to stop or to hand over, an
    /// admin client asks for an upgrade, or polling fails. It may be called again after a
    /// failed hand-over: the loop resumes where it was.
    pub fn run(&mut self) -> io::Result<Shutdown> {
        let mut events = Events::with_capacity(1024);
        self.supervisor.serving(self.registry.len());
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
                    let capped = self.operator.accept(self.poll.registry(), &mut self.tokens);
                    self.stats.admin_capped += capped;
                } else if self.operator.has(token) {
                    self.admin_ready(token);
                } else if let Some(i) = token::metrics_listener_index(token) {
                    let accepted = self.http.accept(i, self.poll.registry(), &mut self.tokens);
                    self.stats.http_capped += accepted.capped;
                } else if self.http.has(token) {
                    self.http_ready(token);
                } else if let Some(shutdown) = self.connection_ready(token) {
                    return Ok(shutdown);
                }
            }
            if let Some(shutdown) = self.handle_timers(Instant::now()) {
                return Ok(shutdown);
            }
            if let Some(shutdown) = self.lifecycle.take_request() {
                return Ok(shutdown);
            }
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        [
            self.timers.first().map(|(t, _)| *t),
            self.accept_paused_until,
            self.supervisor.next_wakeup(),
            self.lifecycle
                .fdstore
                .as_ref()
                .and_then(FdStore::next_wakeup),
            self.operator.next_deadline(),
            self.http.next_deadline(),
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
                    self.lifecycle.handover_requested = Some(HandOverRequest { requester: None });
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
        if let Err(why) = self.admission.check(peer, is_local, self.conns.len()) {
            // Dropping the stream closes it at once: the client sees EOF, as the C epmd's
            // "slots full" path does.
            self.stats.capped += 1;
            match why {
                Refusal::Cap => self.stats.capped_cap += 1,
                Refusal::LocalReserve => self.stats.capped_reserve += 1,
                Refusal::PerSource => self.stats.capped_per_source += 1,
            }
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
        let permissions = self.admission.permissions(peer, conn.local);
        conn.may_list = permissions.may_list;
        conn.may_lookup = permissions.may_lookup;
        self.admission.admitted(peer, conn.local);
        self.conns.insert(token, Box::new(conn));
        self.stats.accepted += 1;
        self.stats.observe(self.conns.len(), self.registry.len());
        self.rearm(token);
        if self.config.delay_accept.is_none() && answer_now {
            // On loopback the request usually arrives before the accept: read and answer
            // it now. A lookup answered at once is closed without ever entering the poll
            // (no epoll_ctl, no poll round trip); a miss costs one EAGAIN read.
            if let Some(shutdown) = self.read_and_dispatch(token) {
                self.lifecycle.shutdown_requested = Some(shutdown);
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
                        self.close_for(token, UnregisterReason::WriteFailed);
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
        let timeout = self.config.packet_timeout;
        let conn = self.conns.get_mut(&token)?;
        if let Some(accepted) = conn.deadline().and_then(|d| d.checked_sub(timeout)) {
            conn.mark_request(request_kind(&request), accepted);
        }
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
            let reason = match action.event {
                Event::ReplacedDeadOwner { .. } => {
                    self.stats.unregistered_replaced += 1;
                    UnregisterReason::Replaced
                }
                _ => {
                    self.stats.unregistered_stopped += 1;
                    UnregisterReason::Stop
                }
            };
            let peer = self
                .conns
                .get(&Token(removed.conn.0 as usize))
                .map(|c| c.peer);
            self.node_event(removed, Some(reason), peer);
            self.emit("unregister", removed);
        }
        if matches!(
            action.event,
            Event::Registered { .. } | Event::ReplacedDeadOwner { .. }
        ) {
            if let Some(reg) = self.registry.by_conn(conn_id(token)).cloned() {
                let peer = self.conns.get(&token).map(|c| c.peer);
                self.node_event(&reg, None, peer);
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
                self.close_for(token, UnregisterReason::WriteFailed);
                None
            }
        }
    }

    fn finish_reply(&mut self, token: Token, after: After) -> Option<Shutdown> {
        if let Some((accepted, kind)) = self
            .conns
            .get_mut(&token)
            .and_then(|c| c.take_request_mark())
        {
            self.stats.observe_duration(kind, accepted.elapsed());
        }
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
        self.supervisor.tick(now, self.registry.len());
        self.flush_fd_store();
        let expired = self.operator.expire(self.poll.registry(), now);
        self.stats.admin_timeouts += expired;
        let expired = self.http.expire(self.poll.registry(), now);
        self.stats.http_timeouts += expired;
        self.supervisor.schedule_status(now, self.registry.len());
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
        self.close_for(token, UnregisterReason::Closed);
    }

    /// [`close`](Self::close), saying why a registration it ends ends.
    fn close_for(&mut self, token: Token, reason: UnregisterReason) {
        let Some(mut conn) = self.conns.remove(&token) else {
            return;
        };
        if let Some(t) = conn.timer() {
            self.timers.remove(&(t, token));
        }
        let registered = conn.phase == Phase::Registered;
        if let Some(reg) = self.registry.unregister_conn(conn_id(token)) {
            info!("unregistering '{}'", reg.info.name);
            self.stats.unregistered_closed += 1;
            self.node_event(&reg, Some(reason), Some(conn.peer));
            self.emit("unregister", &reg);
        }
        if self.lifecycle.fdstore.is_some() {
            let name = conn.fd_name(token);
            self.fd_store_closed(token, &name, registered);
        }
        self.stats.bytes_in = self.stats.bytes_in.saturating_add(conn.bytes_in);
        self.stats.bytes_out = self.stats.bytes_out.saturating_add(conn.bytes_out);
        self.admission.released(conn.peer, conn.local);
        if self.lifecycle.shared_fds && conn.in_poll {
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

/// The loop's side of its parts: the admin requests it renders and acts on, the events it
/// hands to the operator plane and the fd store, and the state it hands over.
impl Server {
    fn admin_ready(&mut self, token: Token) {
        match self.operator.ready(self.poll.registry(), token) {
            None => {}
            Some(AdminRequest::Upgrade(token)) => {
                self.lifecycle.handover_requested = Some(HandOverRequest {
                    requester: Some(token),
                });
            }
            Some(AdminRequest::History(token, name)) => {
                let events = self.operator.history(name.as_deref());
                let text = serde_json::to_string(&events).unwrap_or_default();
                self.operator.reply(self.poll.registry(), token, &text);
            }
            Some(AdminRequest::View(token, view)) => {
                let text = self.render_view(view);
                self.operator.reply(self.poll.registry(), token, &text);
            }
        }
    }

    fn render_view(&self, view: View) -> String {
        let listening = self.local_addrs();
        let config = if view == View::Config {
            self.config_report()
        } else {
            Vec::new()
        };
        admin_views::render(
            view,
            &Sources {
                registry: &self.registry,
                conns: &self.conns,
                stats: &self.stats,
                admin_conns: self.operator.len(),
                uptime_secs: self.started.elapsed().as_secs(),
                listening: &listening,
                fd_store: self.fd_store_counts(),
                config,
                now: unix_now(),
            },
        )
    }

    /// Sends `reply` (one JSON document) to the admin client `token` and closes it.
    pub fn answer_admin(&mut self, token: Option<Token>, reply: &serde_json::Value) {
        if let Some(token) = token {
            self.operator
                .reply(self.poll.registry(), token, &reply.to_string());
        }
    }

    /// A node event: logged (journal fields, JSON) and kept for `admin history`.
    fn node_event(
        &mut self,
        reg: &Registration,
        reason: Option<UnregisterReason>,
        peer: Option<std::net::SocketAddr>,
    ) {
        let event = events::new_event(reg, reason, peer, unix_now());
        if crate::logging::events_shown() {
            crate::logging::event(&events::message(&event), &events::journal_fields(&event));
        }
        self.operator.record(event);
    }

    /// Sends a register / unregister event to every `watch` client.
    fn emit(&mut self, kind: &str, reg: &Registration) {
        if self.operator.has_watchers() {
            let event = admin_views::watch_event(kind, reg, unix_now());
            self.operator.broadcast(self.poll.registry(), &event);
        }
    }

    /// Whether the admin socket file stays when this server is dropped: true in a
    /// hand-over successor until the hand-over is confirmed, false once it is (the file
    /// is then this process's to remove).
    pub fn keep_admin_socket_file(&mut self, keep: bool) {
        self.operator.keep_socket_file(keep);
    }

    /// Leaves the admin socket file in place when this process exits (its successor owns
    /// it now).
    pub fn disown_admin_socket(&mut self) {
        self.operator.disown_socket();
    }

    /// The whole state, and the fds to pass in the order of [`State::fd_names`].
    pub fn snapshot(&self) -> (State, Vec<RawFd>) {
        snapshot::capture(Parts {
            listeners: self.listeners.iter().map(AsRawFd::as_raw_fd).collect(),
            admin: self.operator.socket(),
            fd_store: self
                .lifecycle
                .fdstore
                .as_ref()
                .and_then(FdStore::stored_state),
            conns: &self.conns,
            registry: &self.registry,
            stats: &self.stats,
            uptime_secs: self.started.elapsed().as_secs(),
            metrics_listeners: self.http.listener_fds(),
        })
    }

    /// Rebuilds a server from `state` and the fds passed with it (by name). Connections
    /// whose peer is already gone are dropped with their registrations; the successor's
    /// poll reports every connection that became readable meanwhile.
    ///
    /// `handover` is true for a live hand-over (counted in `handovers`), false for a
    /// restart from systemd's fd store.
    pub fn from_state(
        state: State,
        fds: HashMap<String, OwnedFd>,
        config: ServerConfig,
        handover: bool,
    ) -> Result<Server, StateError> {
        let sockets = restore::sockets(&state, fds)?;
        let limits = config.limits;
        let mut server = Server::new(sockets.listeners, sockets.admin, config)
            .map_err(|_| StateError::BadField("listening socket"))?;
        if handover {
            // The old process still serves on the admin socket until it says GO.
            server.keep_admin_socket_file(true);
        }
        let now = Instant::now();
        let mut ids = HashMap::new();
        for (c, stream) in state.connections.iter().zip(sockets.streams) {
            let Some(mut conn) = restore::connection(c, stream, peer::is_local, now)? else {
                continue; // the peer is gone: the connection (and its registration) ends
            };
            let token = server.tokens.allocate();
            let permissions = server.admission.permissions(conn.peer, conn.local);
            conn.may_list = permissions.may_list;
            conn.may_lookup = permissions.may_lookup;
            let interest = conn.wanted_interest();
            server
                .poll
                .registry()
                .register(&mut conn.stream, token, interest)
                .map_err(|_| StateError::BadField("connection"))?;
            conn.interest = interest;
            conn.in_poll = true;
            server.admission.admitted(conn.peer, conn.local);
            server.conns.insert(token, Box::new(conn));
            server.rearm(token);
            ids.insert(c.fd.clone(), conn_id(token));
        }
        server
            .serve_metrics(sockets.metrics)
            .map_err(|_| StateError::BadField("metrics listening socket"))?;
        server.registry = restore::registry(&state, limits, &ids)?;
        server.stats = restore::stats(&state, handover);
        server.lifecycle.inherited_memfd = sockets.memfd;
        server.lifecycle.shared_fds = true;
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

    /// Starts keeping state in systemd's fd store. `stored` is the state the store holds
    /// now (restored from it, or passed along in a hand-over), by name, if any; it is
    /// removed once a newer one has been stored. `at_least` is a lower bound for the next
    /// state number (above every state name seen in the store). Every registration
    /// connection is stored again: systemd ignores fds it already holds.
    pub fn enable_fd_store(
        &mut self,
        stored: Option<(String, std::fs::File)>,
        at_least: u64,
    ) -> io::Result<()> {
        if self.supervisor.notifier().is_none() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no NOTIFY_SOCKET"));
        }
        let stored = stored.or_else(|| self.lifecycle.inherited_memfd.take());
        let registered = self
            .conns
            .iter()
            .filter(|(t, c)| {
                c.phase == Phase::Registered && self.registry.by_conn(conn_id(**t)).is_some()
            })
            .map(|(t, _)| *t)
            .collect();
        self.lifecycle.shared_fds = true;
        self.lifecycle.fdstore = Some(FdStore::new(stored, at_least, registered));
        self.flush_fd_store();
        Ok(())
    }

    /// Removes a fd name from the store (a connection that is gone, or a stored fd that
    /// was not restored). Queued behind earlier notifications when the fd store is in use.
    pub fn fd_store_remove(&mut self, name: &str) {
        let Some(notifier) = self.supervisor.notifier() else {
            return;
        };
        let conns = &self.conns;
        match self.lifecycle.fdstore.as_mut() {
            Some(store) => store.remove(name, notifier, &|t| registered_fd(conns, t)),
            None => {
                if let Err(e) = notifier.notify(&format!("FDSTOREREMOVE=1\nFDNAME={name}")) {
                    warn!("cannot remove {name} from the fd store: {e}");
                }
            }
        }
    }

    /// The fd-store counters, if the store is in use.
    pub fn fd_store_counts(&self) -> Option<FdStoreCounts> {
        self.lifecycle.fdstore.as_ref().map(FdStore::counts)
    }

    fn fd_store_changed(&mut self, registered: Option<Token>) {
        if let Some(store) = self.lifecycle.fdstore.as_mut() {
            store.changed(registered);
        }
    }

    fn fd_store_closed(&mut self, token: Token, name: &str, was_registered: bool) {
        let (Some(store), Some(notifier)) =
            (self.lifecycle.fdstore.as_mut(), self.supervisor.notifier())
        else {
            return;
        };
        let conns = &self.conns;
        store.closed(token, name, was_registered, notifier, &|t| {
            registered_fd(conns, t)
        });
    }

    fn flush_fd_store(&mut self) {
        let Some(store) = self.lifecycle.fdstore.as_ref() else {
            return;
        };
        let now = Instant::now();
        let rewrite = store.rewrite_due(now);
        if !rewrite && store.next_wakeup().is_none_or(|t| t > now) {
            return;
        }
        // The state is taken before the store is borrowed: it lists what the store holds.
        let state = rewrite.then(|| self.snapshot().0);
        let (Some(store), Some(notifier)) =
            (self.lifecycle.fdstore.as_mut(), self.supervisor.notifier())
        else {
            return;
        };
        let conns = &self.conns;
        store.flush(notifier, state, &|t| registered_fd(conns, t));
    }
}

/// The operator plane's HTTP side: `/metrics` and `/readyz`, answered from the loop.
impl Server {
    fn http_ready(&mut self, token: Token) {
        let (status, content_type, body) = match self.http.ready(self.poll.registry(), token) {
            None => return,
            Some(Route::Metrics(format)) => (
                Status::Ok,
                format.content_type(),
                self.render_metrics(format).into_bytes(),
            ),
            Some(Route::Livez) => (Status::Ok, "text/plain; charset=utf-8", b"ok\n".to_vec()),
            Some(Route::Readyz) => match self.readiness() {
                Ok(()) => (Status::Ok, "text/plain; charset=utf-8", b"ready\n".to_vec()),
                Err(why) => (
                    Status::Unavailable,
                    "text/plain; charset=utf-8",
                    format!("not ready: {why}\n").into_bytes(),
                ),
            },
        };
        self.http
            .reply(self.poll.registry(), token, status, content_type, &body);
    }

    /// Whether the daemon is ready: listening, accepting, and below its connection cap.
    pub fn readiness(&self) -> Result<(), String> {
        let max = self.admission.caps().max_connections;
        if self.listeners.is_empty() {
            Err("not listening".to_owned())
        } else if self.accept_paused_until.is_some() {
            Err("accepting is paused after an accept error (out of file descriptors?)".to_owned())
        } else if self.conns.len() >= max {
            Err(format!(
                "the connection cap is reached ({} of {max} connections open)",
                self.conns.len()
            ))
        } else {
            Ok(())
        }
    }

    /// The `/metrics` exposition of the counters `admin stats` shows, in `format`.
    pub fn render_metrics(&self, format: Format) -> String {
        let mut phases = [
            ("accept_delay", 0u64),
            ("reading", 0),
            ("write_delay", 0),
            ("writing", 0),
            ("registration", 0),
            ("admin", self.operator.len() as u64),
            ("http", self.http.len() as u64),
        ];
        for c in self.conns.values() {
            let i = match c.phase {
                Phase::AcceptDelay => 0,
                Phase::Reading => 1,
                Phase::WriteDelay(_) => 2,
                Phase::Writing(_) => 3,
                Phase::Registered => 4,
            };
            phases[i].1 += 1;
        }
        let durations: Vec<(&'static str, &crate::server::histogram::Histogram)> =
            self.stats.durations.iter().map(|(k, h)| (*k, h)).collect();
        metrics::render(
            &metrics::Inputs {
                stats: &self.stats,
                registered: self.registry.len() as u64,
                connections: &phases,
                unregistrations: &self.stats.unregistrations(),
                durations: &durations,
                process: ProcessFigures::current(self.process_started),
            },
            format,
        )
    }
}

/// The request's name in `/metrics` labels.
fn request_kind(request: &crate::protocol::Request) -> &'static str {
    use crate::protocol::Request;
    match request {
        Request::Alive2(_) => "alive2",
        Request::PortPlease2(_) => "port_please2",
        Request::Names => "names",
        Request::Dump => "dump",
        Request::Kill => "kill",
        Request::Stop(_) => "stop",
    }
}

/// The fd name and fd of the registration connection `token`, while it is one.
fn registered_fd(conns: &TokenMap<Box<Connection>>, token: Token) -> Option<(String, RawFd)> {
    conns
        .get(&token)
        .filter(|c| c.phase == Phase::Registered)
        .map(|c| (c.fd_name(token), c.stream.as_raw_fd()))
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
