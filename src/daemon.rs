//! Starting the daemon: raise the fd limit, obtain the listening sockets (bind, or adopt
//! them from systemd), detach for `-daemon` only after they are bound, then run the loop.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;

use log::{info, warn};

use crate::cli::DaemonConfig;
use crate::error::Error;
use crate::registry::Limits;
use crate::server::dispatch::DispatchConfig;
use crate::server::listener::{bind_all, bind_targets};
use crate::server::token::MAX_LISTENERS;
use crate::server::{Server, ServerConfig, Shutdown};
use crate::systemd;

/// How the daemon ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A KILL_REQ was honoured.
    Killed,
    /// This was the `-daemon` parent; the detached child serves.
    Detached,
}

/// Runs the daemon until it is killed.
pub fn run(config: &DaemonConfig, env: impl Fn(&str) -> Option<OsString>) -> Result<Exit, Error> {
    match raise_fd_limit() {
        Ok(n) => info!("file descriptor limit: {n}"),
        Err(e) => warn!("cannot raise the file descriptor limit: {e}"),
    }
    let listeners = listeners(config, env)?;
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
            info!("no admin socket (no runtime directory known)");
            None
        }
    };
    if config.daemon {
        let outcome = daemonize::Daemonize::new()
            .working_directory("/")
            .umask(0o022)
            .execute();
        match outcome {
            daemonize::Outcome::Parent(Ok(_)) => return Ok(Exit::Detached),
            daemonize::Outcome::Parent(Err(e)) | daemonize::Outcome::Child(Err(e)) => {
                return Err(Error::Daemonize(e))
            }
            daemonize::Outcome::Child(Ok(_)) => {}
        }
    }
    let server_config = ServerConfig {
        dispatch: DispatchConfig {
            header_port: config.header_port(),
            relaxed: config.relaxed,
        },
        packet_timeout: config.packet_timeout,
        delay_accept: config.delay_accept,
        delay_write: config.delay_write,
        limits: Limits::new(config.debug > 0),
        report: config.report.clone(),
    };
    let mut server = Server::new(listeners, admin, server_config).map_err(|source| Error::Io {
        context: "cannot start the event loop",
        source,
    })?;
    match server.run() {
        Ok(Shutdown::Killed) => Ok(Exit::Killed),
        Err(source) => Err(Error::Io {
            context: "event loop failed",
            source,
        }),
    }
}

/// The listening sockets: adopted from systemd when `LISTEN_FDS` is meant for us (or
/// required by `-systemd`), bound as spec §7.3 says otherwise.
fn listeners(
    config: &DaemonConfig,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Vec<TcpListener>, Error> {
    let passed = systemd::listen_fds_count(std::process::id(), &env);
    if passed > 0 {
        if passed > MAX_LISTENERS {
            return Err(Error::Listen(crate::server::listener::ListenError::TooMany));
        }
        // SAFETY: LISTEN_PID names this process, so fds 3.. were passed to us by the
        // service manager and nothing in this process has taken them.
        return Ok(unsafe { systemd::adopt(passed) });
    }
    if config.systemd {
        return Err(Error::NoSystemdSockets);
    }
    let targets = bind_targets(config.addresses.as_deref(), config.bind_port());
    let (bound, skipped) = bind_all(&targets)?;
    for (addr, e) in skipped {
        warn!("cannot listen on {addr}: {e}");
    }
    Ok(bound)
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
