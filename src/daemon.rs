//! Starting the daemon: raise the fd limit, obtain the listening sockets (bind, or adopt
//! them from systemd), create the admin socket, detach for `-daemon` only after all of that
//! (so the command returns when the port already accepts), then run the loop.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::io::{Seek, SeekFrom};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use log::{info, warn};

use crate::admin::Source;
use crate::cli::config::DaemonConfig;
use crate::error::Error;
use crate::handover::state::State;
use crate::handover::transfer::{self, HANDOVER_FD_ENV, LISTEN_SOURCE_ENV};
use crate::registry::Limits;
use crate::server::dispatch::DispatchConfig;
use crate::server::listener::{bind_all, bind_targets, ListenError};
use crate::server::token::MAX_LISTENERS;
use crate::server::{fdstore, Caps, Server, ServerConfig, Shutdown};
use crate::systemd;

/// How the daemon ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A KILL_REQ was honoured.
    Killed,
    /// SIGTERM or SIGINT.
    Terminated,
    /// This was the `-daemon` parent; the detached child serves.
    Detached,
    /// The daemon was handed over to a successor, which serves now.
    HandedOver,
}

/// Runs the daemon until it is killed or terminated.
///
/// `args` are the daemon's own arguments and `self_exe` its binary: a hand-over starts
/// `self_exe` with the same arguments (never another program).
pub fn run(
    config: &DaemonConfig,
    args: &[OsString],
    self_exe: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Exit, Error> {
    let fd_limit = match raise_fd_limit() {
        Ok(n) => {
            info!("file descriptor limit: {n}");
            n
        }
        Err(e) => {
            warn!("cannot raise the file descriptor limit: {e}");
            1024
        }
    };
    let caps_for = |fds_in_use: usize| {
        let mut caps = Caps::for_fd_limit(fd_limit, fds_in_use);
        if let Some(n) = config.max_connections {
            caps.max_connections = n;
            caps.local_reserve = caps.local_reserve.min(n / 2);
        }
        if let Some(n) = config.max_connections_per_source {
            caps.max_per_source = n;
        }
        if let Some(bits) = config.ipv6_source_prefix {
            caps.ipv6_source_prefix = bits;
        }
        caps
    };
    // A first estimate; fitted to the fds actually open once everything is set up.
    let caps = caps_for(16);
    // Where bound sockets come from: the source of the `address` setting.
    let address_source = config
        .report
        .iter()
        .find(|e| e.key == "address")
        .map_or(Source::Default, |e| e.source);
    let server_config = |listen_source: Source| ServerConfig {
        dispatch: DispatchConfig {
            header_port: config.header_port(),
            relaxed: config.relaxed,
        },
        packet_timeout: config.packet_timeout,
        delay_accept: config.delay_accept,
        delay_write: config.delay_write,
        limits: Limits::new(config.debug > 0),
        report: config.report.clone(),
        header_from_socket: listen_source == Source::Systemd || config.systemd,
        listen_source,
        names_policy: config.names_policy.clone(),
        port_please_policy: config.port_please_policy.clone(),
        caps,
    };
    let handover_fd = env(HANDOVER_FD_ENV)
        .and_then(|v| v.into_string().ok())
        .and_then(|v| v.parse::<RawFd>().ok());
    let started = match handover_fd {
        Some(fd) => {
            // A successor: everything comes from the running daemon, nothing is bound.
            let pid_file = config.pid_file.clone();
            // The predecessor says whether its sockets came from systemd.
            let source = match env(LISTEN_SOURCE_ENV) {
                Some(v) if v == "systemd" => Source::Systemd,
                _ => address_source,
            };
            // SAFETY: the fd was inherited from the daemon that started us for this purpose.
            let server = unsafe {
                let config = server_config(source);
                let rebuild = |state, fds| Server::from_state(state, fds, config, true);
                transfer::receive(fd, rebuild, || match &pid_file {
                    Some(path) => write_pid_file(path).map_err(|e| io::Error::other(e.to_string())),
                    None => Ok(()),
                })
            }
            .map_err(Error::Handover)?;
            // Confirmed (GO received): the admin socket file is ours to remove at exit now.
            let mut server = server;
            server.keep_admin_socket_file(false);
            info!("took over from the previous daemon");
            Started::Serving(Box::new(server), Restore::default())
        }
        None => start_fresh(config, &env, |activated| {
            server_config(if activated {
                Source::Systemd
            } else {
                address_source
            })
        })?,
    };
    let (mut server, restore) = match started {
        Started::Detached => return Ok(Exit::Detached),
        Started::Serving(server, restore) => (server, restore),
    };
    // Passed on to a successor, which pings once it serves.
    let watchdog_usec = systemd::watchdog_usec(std::process::id(), &env);
    server.set_notifier(
        systemd::Notifier::from_env(&env),
        systemd::watchdog_interval(std::process::id(), &env),
    );
    if config.fd_store {
        match server.enable_fd_store(restore.state, restore.next_state_number) {
            Ok(()) => info!("keeping registrations in systemd's fd store"),
            Err(e) => warn!("cannot use systemd's fd store: {e}"),
        }
    }
    for name in &restore.stale {
        server.fd_store_remove(name);
    }
    // Fds for the HTTP clients `--metrics-listen` may have open are kept out of the caps.
    let http_fds = if server.metrics_addrs().is_empty() {
        0
    } else {
        crate::server::http::MAX_HTTP_CONNECTIONS
    };
    let caps = caps_for(open_fds().saturating_sub(server.connection_count()) + http_fds);
    info!(
        "at most {} connections, {} of them registrations",
        caps.max_connections,
        caps.max_connections
            .saturating_sub(crate::server::SHORT_REQUEST_RESERVE)
    );
    server.set_caps(caps);
    loop {
        let shutdown = server.run().map_err(|source| Error::Io {
            context: "event loop failed",
            source,
        })?;
        let exit = match shutdown {
            Shutdown::Killed => Exit::Killed,
            Shutdown::Terminated(_) => Exit::Terminated,
            Shutdown::HandOver(request) => {
                // Always the daemon's own binary, by the path it was started from (so a
                // package upgrade that replaced the file is picked up): nobody can name
                // another program.
                let began = std::time::Instant::now();
                let outcome = match self_exe {
                    Some(b) => transfer::hand_over(
                        server.snapshot(),
                        server.listen_source() == Source::Systemd,
                        b,
                        args,
                        watchdog_usec,
                    ),
                    None => Err(transfer::HandoverError::Spawn(io::Error::new(
                        io::ErrorKind::NotFound,
                        "the daemon's own binary is unknown",
                    ))),
                };
                match outcome {
                    Ok(pid) => {
                        info!(
                            "handed over to pid {pid} in {:.1} ms",
                            began.elapsed().as_secs_f64() * 1000.0
                        );
                        server.answer_admin(
                            request.requester,
                            &serde_json::json!({ "ok": true, "pid": pid }),
                        );
                        server.notify_main_pid(pid);
                        server.disown_admin_socket();
                        // The successor owns the sockets and the pid file now; closing our
                        // copies of the fds leaves every connection open.
                        return Ok(Exit::HandedOver);
                    }
                    Err(e) => {
                        warn!("{e}; still serving");
                        server.answer_admin(
                            request.requester,
                            &serde_json::json!({ "ok": false, "error": e.to_string() }),
                        );
                        continue;
                    }
                }
            }
        };
        server.notify_stopping();
        drop(server);
        if let Some(path) = &config.pid_file {
            let _ = std::fs::remove_file(path);
        }
        return Ok(exit);
    }
}

/// The result of a fresh start.
enum Started {
    /// The `-daemon` parent: the detached child serves.
    Detached,
    /// Ready to serve, with what a restart from the fd store left to do.
    Serving(Box<Server>, Restore),
}

/// Binds (or adopts) the sockets, creates the admin socket, detaches for `-daemon`.
fn start_fresh(
    config: &DaemonConfig,
    env: impl Fn(&str) -> Option<OsString>,
    server_config: impl Fn(bool) -> ServerConfig,
) -> Result<Started, Error> {
    let found = listeners(config, &env)?;
    let (listeners, activated) = (found.listeners, found.activated);
    for l in &listeners {
        if let Ok(addr) = l.local_addr() {
            info!("listening on {addr}");
        }
    }
    let admin = match &config.admin_socket {
        Some(path) => {
            let l = crate::server::admin::bind(path, config.admin_group.as_deref())
                .map_err(Error::Admin)?;
            info!("admin socket {}", path.display());
            Some((l, path.clone()))
        }
        None => {
            info!("no admin socket (disabled, or no runtime directory known)");
            None
        }
    };
    let mut metrics = Vec::with_capacity(config.metrics_listen.len());
    for addr in &config.metrics_listen {
        let l = TcpListener::bind(addr).map_err(|source| Error::Io {
            context: "cannot bind --metrics-listen",
            source,
        })?;
        info!("serving /metrics on {addr}");
        metrics.push(l);
    }
    if config.daemon {
        if detach(config.pid_file.as_deref())? {
            return Ok(Started::Detached);
        }
    } else if let Some(path) = &config.pid_file {
        write_pid_file(path)?;
    }
    let config_now = server_config(activated);
    let mut restore = Restore {
        // Names of fds that were passed but are not what their name says.
        stale: found.rejected,
        ..Restore::default()
    };
    let mut server = if config.fd_store && !found.states.is_empty() {
        restore_or_start_fresh(
            found.states,
            listeners,
            admin,
            found.conns,
            config_now,
            &mut restore,
        )?
    } else {
        restore
            .stale
            .extend(found.states.into_iter().map(|(n, _)| n));
        restore
            .stale
            .extend(found.conns.into_iter().map(|(n, _)| n));
        Server::new(listeners, admin, config_now).map_err(|source| Error::Io {
            context: "cannot start the event loop",
            source,
        })?
    };
    server.serve_metrics(metrics).map_err(|source| Error::Io {
        context: "cannot serve --metrics-listen",
        source,
    })?;
    Ok(Started::Serving(Box::new(server), restore))
}

/// What a restart from the fd store leaves to do once sd_notify works.
#[derive(Debug, Default)]
struct Restore {
    /// The stored state restored from (name and memfd): removed once a newer one is
    /// stored.
    state: Option<(String, File)>,
    /// The lowest number the next stored state may have (above every stored one).
    next_state_number: u64,
    /// Stored fd names that were not restored (to remove from the store).
    stale: Vec<String>,
}

/// Restores from the newest stored state that can be restored. When none can, logs why,
/// marks every stored fd for removal from the store and starts serving with an empty
/// registry: a state the daemon cannot use must not stop it from starting (under
/// `Restart=on-failure` that would be a crash loop that ends every registration).
fn restore_or_start_fresh(
    mut states: Vec<(String, File)>,
    listeners: Vec<TcpListener>,
    admin: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
    conns: Vec<(String, OwnedFd)>,
    config: ServerConfig,
    restore: &mut Restore,
) -> Result<Server, Error> {
    let io_err = |context| move |source| Error::Io { context, source };
    // Newest first: a crash between storing a new state and removing the old one leaves
    // both, each whole.
    states.sort_by_key(|(name, _)| std::cmp::Reverse(fdstore::state_number(name)));
    restore.next_state_number = states
        .iter()
        .filter_map(|(name, _)| fdstore::state_number(name))
        .max()
        .map_or(1, |n| n.saturating_add(1));
    let mut docs = Vec::new();
    for (name, mut memfd) in states {
        let mut doc = Vec::new();
        let read = memfd
            .seek(SeekFrom::Start(0))
            .and_then(|_| memfd.read_to_end(&mut doc));
        match read
            .map_err(StoredStateError::Read)
            .and_then(|_| State::decode(&doc).map_err(StoredStateError::Decode))
        {
            Ok(state) => docs.push((name, memfd, state)),
            Err(e) => {
                warn!("stored state {name} cannot be restored: {e}; removing it");
                restore.stale.push(name);
            }
        }
    }
    // Copies of the sockets, to start fresh with if the restore fails after taking them.
    let spare_listeners = listeners
        .iter()
        .map(TcpListener::try_clone)
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_err("cannot duplicate a listening socket"))?;
    let spare_admin = match &admin {
        Some((l, path)) => Some((
            l.try_clone()
                .map_err(io_err("cannot duplicate the admin socket"))?,
            path.clone(),
        )),
        None => None,
    };
    let mut docs = docs.into_iter();
    let conn_names: Vec<String> = conns.iter().map(|(n, _)| n.clone()).collect();
    if let Some((name, memfd, state)) = docs.next() {
        // A server that fails half-built removes the admin socket's file as it goes; a
        // second link to the socket puts it back for the fresh start.
        let admin_link = spare_admin
            .as_ref()
            .and_then(|(_, path)| AdminLink::new(path));
        match restored_server(state, listeners, admin, conns, config.clone(), restore) {
            Ok(server) => {
                restore.state = Some((name, memfd));
                // Older states, kept by a crash between a store and a remove.
                restore.stale.extend(docs.map(|(n, _, _)| n));
                return Ok(server);
            }
            Err(e) => {
                warn!("stored state {name} cannot be restored: {e}; removing it");
                restore.stale.push(name);
                if let Some(link) = admin_link {
                    link.restore();
                }
            }
        }
    }
    // Nothing restorable: serve fresh, and let the store forget what it holds.
    warn!(
        "starting without the stored registrations ({} stored connections dropped)",
        conn_names.len()
    );
    restore.stale.extend(docs.map(|(n, _, _)| n));
    restore.stale.extend(conn_names);
    restore.stale.sort();
    restore.stale.dedup();
    Server::new(spare_listeners, spare_admin, config).map_err(io_err("cannot start the event loop"))
}

/// A second hard link to the admin socket's file, made while a restore is tried: removed
/// when dropped, or moved back to the socket's path with [`AdminLink::restore`].
struct AdminLink {
    path: std::path::PathBuf,
    link: std::path::PathBuf,
}

impl AdminLink {
    /// Links `path` to `path.restore-<pid>`; `None` if that fails (then nothing is put
    /// back).
    fn new(path: &Path) -> Option<AdminLink> {
        let mut link = path.as_os_str().to_owned();
        link.push(format!(".restore-{}", std::process::id()));
        let link = std::path::PathBuf::from(link);
        let _ = std::fs::remove_file(&link);
        std::fs::hard_link(path, &link).ok()?;
        Some(AdminLink {
            path: path.to_path_buf(),
            link,
        })
    }

    /// Puts the socket's file back at its path if it is gone.
    fn restore(self) {
        if !self.path.exists() {
            if let Err(e) = std::fs::rename(&self.link, &self.path) {
                warn!(
                    "cannot put back the admin socket {}: {e}",
                    self.path.display()
                );
            }
        }
    }
}

impl Drop for AdminLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// Why a stored state document was not used.
#[derive(Debug)]
enum StoredStateError {
    /// The memfd could not be read.
    Read(io::Error),
    /// The document was refused.
    Decode(crate::handover::state::StateError),
}

impl std::fmt::Display for StoredStateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredStateError::Read(e) => write!(f, "cannot read it: {e}"),
            StoredStateError::Decode(e) => e.fmt(f),
        }
    }
}

/// Rebuilds the server from a stored state document and the stored connections.
fn restored_server(
    mut state: State,
    listeners: Vec<TcpListener>,
    admin: Option<(std::os::unix::net::UnixListener, std::path::PathBuf)>,
    conns: Vec<(String, OwnedFd)>,
    config: ServerConfig,
    restore: &mut Restore,
) -> Result<Server, crate::handover::state::StateError> {
    let mut fds: HashMap<String, OwnedFd> = HashMap::new();
    state.listeners.clear();
    for (i, l) in listeners.into_iter().enumerate() {
        let name = format!("listen-{i}");
        state.listeners.push(name.clone());
        fds.insert(name, OwnedFd::from(l));
    }
    state.admin = admin.map(|(l, path)| {
        fds.insert("admin".to_owned(), OwnedFd::from(l));
        crate::handover::state::AdminState {
            fd: "admin".to_owned(),
            path: path.display().to_string(),
        }
    });
    let listed: std::collections::HashSet<String> =
        state.connections.iter().map(|c| c.fd.clone()).collect();
    for (name, fd) in conns {
        if !listed.contains(&name) {
            restore.stale.push(name);
            continue;
        }
        match fds.entry(name) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(fd);
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                // A second fd under one name (an older build's names could collide): only
                // one can be restored; removing the name would drop both from the store.
                warn!(
                    "two stored connections are named {}; one is closed",
                    slot.key()
                );
            }
        }
    }
    state.connections.retain(|c| fds.contains_key(&c.fd));
    let before: Vec<String> = state.connections.iter().map(|c| c.fd.clone()).collect();
    let server = Server::from_state(state, fds, config, false)?;
    let kept = server.store_names();
    restore
        .stale
        .extend(before.into_iter().filter(|n| !kept.contains(n)));
    info!(
        "restored {} registrations from the fd store",
        server.registry().len()
    );
    Ok(server)
}

/// What a fresh start found: listening sockets, whether they came from socket activation,
/// and what systemd's fd store gave back (a state memfd and stored connections).
struct Found {
    listeners: Vec<TcpListener>,
    activated: bool,
    states: Vec<(String, File)>,
    conns: Vec<(String, OwnedFd)>,
    /// Stored fd names whose fd was refused (to remove from the store).
    rejected: Vec<String>,
}

/// The listening sockets: adopted when `LISTEN_FDS` is meant for us (required by
/// `-systemd`), bound as spec §7.3 says otherwise; plus anything from the fd store.
fn listeners(
    config: &DaemonConfig,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Found, Error> {
    let fd_limit = current_fd_limit();
    let passed =
        systemd::listen_fds_count(std::process::id(), fd_limit, &env).map_err(|e| Error::Io {
            context: "cannot obtain sockets from systemd",
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
    if passed > 0 {
        let names: Vec<String> = env("LISTEN_FDNAMES")
            .map(|n| n.to_string_lossy().split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        info!("socket activation: {passed} fds ({})", names.join(":"));
        // SAFETY: LISTEN_PID names this process, so fds 3.. were passed to us by the
        // service manager and nothing in this process has taken them.
        let got = unsafe { systemd::adopt_named(passed, &names) }.map_err(|source| Error::Io {
            context: "cannot obtain sockets from systemd",
            source,
        })?;
        if got.listeners.len() > MAX_LISTENERS {
            return Err(Error::Listen(ListenError::TooMany));
        }
        if !got.listeners.is_empty() {
            return Ok(Found {
                listeners: got.listeners,
                activated: true,
                states: got.states,
                conns: got.conns,
                rejected: got.rejected,
            });
        }
        if config.systemd {
            return Err(Error::NoSystemdSockets);
        }
        let mut found = bind_listeners(config)?;
        found.states = got.states;
        found.conns = got.conns;
        found.rejected = got.rejected;
        return Ok(found);
    }
    if config.systemd {
        return Err(Error::NoSystemdSockets);
    }
    bind_listeners(config)
}

fn bind_listeners(config: &DaemonConfig) -> Result<Found, Error> {
    let targets = bind_targets(config.addresses.as_deref(), config.bind_port());
    let (bound, skipped) = bind_all(&targets)?;
    for (addr, e) in skipped {
        warn!("cannot listen on {addr}: {e}");
    }
    Ok(Found {
        listeners: bound,
        activated: false,
        states: Vec::new(),
        conns: Vec::new(),
        rejected: Vec::new(),
    })
}

/// Detaches with the daemonize crate. Returns `true` in the original process, which returns
/// only once the detached daemon has written its pid file (if any) and is about to serve;
/// `false` in the daemon.
fn detach(pid_file: Option<&Path>) -> Result<bool, Error> {
    let io_err = |context| move |source| Error::Io { context, source };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("cannot create a pipe")(io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created by pipe2 and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    match daemonize::Daemonize::new()
        .working_directory("/")
        .umask(0o022)
        .execute()
    {
        daemonize::Outcome::Parent(Ok(_)) => {
            drop(write_end);
            // `R` means the daemon is ready; `E` and a message, or EOF, that it failed.
            let mut answer = Vec::new();
            let mut reader = File::from(read_end);
            let _ = reader.read_to_end(&mut answer);
            match answer.split_first() {
                Some((b'R', _)) => Ok(true),
                Some((b'E', why)) => Err(io_err("the detached daemon did not start")(
                    io::Error::other(String::from_utf8_lossy(why).into_owned()),
                )),
                _ => Err(io_err("the detached daemon did not start")(
                    io::Error::from(io::ErrorKind::UnexpectedEof),
                )),
            }
        }
        daemonize::Outcome::Parent(Err(e)) | daemonize::Outcome::Child(Err(e)) => {
            Err(Error::Daemonize(e))
        }
        daemonize::Outcome::Child(Ok(_)) => {
            drop(read_end);
            let mut writer = File::from(write_end);
            if let Some(path) = pid_file {
                if let Err(e) = write_pid_file(path) {
                    // Tell the waiting parent why, since our stderr is /dev/null now.
                    let _ = writer.write_all(format!("E{e}").as_bytes());
                    return Err(e);
                }
            }
            let _ = writer.write_all(b"R");
            Ok(false)
        }
    }
}

/// Writes our pid to `path`, never through a symlink (`O_NOFOLLOW`; close-on-exec).
fn write_pid_file(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|mut f| f.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(|source| Error::Io {
            context: "cannot write the pid file",
            source,
        })
}

/// How many fds this process has open (not counting the one listing them).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(16, |d| d.count().saturating_sub(1))
}

/// The soft RLIMIT_NOFILE (1024 if it cannot be read).
fn current_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Raises the soft RLIMIT_NOFILE to the hard limit, so the daemon has no 1024-connection
/// ceiling; returns the new soft limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}
