//! The three servers under load, each a child process on a free loopback port, killed by
//! PID when dropped:
//!
//! - epmd-rs (the release binary Cargo builds for this bench),
//! - the C epmd (`/usr/bin/epmd` from Debian's `erlang-base`),
//! - the ceiling server (this bench binary re-executed in ceiling mode, see `ceiling.rs`).
//!
//! The daemons get `-port P -address 127.0.0.1` (they also listen on `::1`) with the
//! `ERL_EPMD_*` variables removed; the ceiling listens on the same two addresses. A server
//! is ready once a NAMES request on `127.0.0.1:P` returns the header for port P.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::limits;
use crate::wire;

/// Path of the epmd-rs binary built by Cargo for this bench.
pub(crate) const EPMD_RS: &str = env!("CARGO_BIN_EXE_epmd-rs");

/// The C epmd's binary.
pub(crate) const C_EPMD: &str = "/usr/bin/epmd";

/// The environment variable that turns this binary into the ceiling server on a port.
pub(crate) const CEILING_ENV: &str = "EPMD_BENCH_CEILING_PORT";

/// Which server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub(crate) enum Kind {
    /// epmd-rs.
    EpmdRs,
    /// The C epmd.
    CEpmd,
    /// The minimal accept → reply → close server.
    Ceiling,
}

impl Kind {
    /// All kinds, in table order.
    pub(crate) const ALL: [Kind; 3] = [Kind::EpmdRs, Kind::CEpmd, Kind::Ceiling];

    /// The column label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::EpmdRs => "epmd-rs",
            Kind::CEpmd => "C epmd",
            Kind::Ceiling => "ceiling",
        }
    }

    /// Connection slots of the C epmd: `FD_SETSIZE` (1024) minus stdin/stdout/stderr and its
    /// two listening sockets. Other servers are limited by their fd limit only.
    pub(crate) fn max_connections(self) -> Option<usize> {
        (self == Kind::CEpmd).then_some(1019)
    }

    /// True when this server can serve `registered` registrations plus `concurrent`
    /// simultaneous clients (with a small margin for connections the daemon has not yet
    /// seen close).
    pub(crate) fn can_hold(self, registered: usize, concurrent: usize) -> bool {
        self.max_connections()
            .is_none_or(|max| registered + concurrent + 4 <= max)
    }
}

/// A running server.
pub(crate) struct Daemon {
    /// Which server it is.
    pub(crate) kind: Kind,
    /// Its port on 127.0.0.1 and ::1.
    pub(crate) port: u16,
    /// Its process id.
    pub(crate) pid: u32,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `kind` on a free port; retries on a new port if the chosen one was taken.
    pub(crate) fn spawn(kind: Kind) -> Result<Daemon, String> {
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            match Daemon::spawn_on(kind, port) {
                Ok(d) => return Ok(d),
                Err(e) => last = e,
            }
        }
        Err(format!("{} did not start: {last}", kind.label()))
    }

    fn spawn_on(kind: Kind, port: u16) -> Result<Daemon, String> {
        let log = std::env::temp_dir().join(format!(
            "epmd-bench-{}-{port}.log",
            kind.label().replace(' ', "-")
        ));
        let log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut cmd = match kind {
            Kind::EpmdRs | Kind::CEpmd => {
                let bin = if kind == Kind::EpmdRs {
                    EPMD_RS
                } else {
                    C_EPMD
                };
                let mut cmd = Command::new(bin);
                cmd.args(["-port", &port.to_string(), "-address", "127.0.0.1"]);
                cmd
            }
            Kind::Ceiling => {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let mut cmd = Command::new(exe);
                cmd.env(CEILING_ENV, port.to_string());
                cmd
            }
        };
        for var in [
            "ERL_EPMD_PORT",
            "ERL_EPMD_ADDRESS",
            "ERL_EPMD_RELAXED_COMMAND_CHECK",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        let limit = limits::server_limit();
        // SAFETY: the closure only calls setrlimit, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                // Every server gets the same fd limit, whatever the bench has raised its
                // own to.
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                Ok(())
            });
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file));
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        drop(cmd);
        let mut daemon = Daemon {
            kind,
            port,
            pid: child.id(),
            child,
            log,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let frame = wire::names_frame();
        let header = u32::from(self.port).to_be_bytes();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.log_tail()));
            }
            if let Ok((reply, _)) = wire::request(self.addr(), &frame, Duration::from_secs(1)) {
                if reply.len() >= 4 && reply[..4] == header {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(format!("not ready after 10 s: {}", self.log_tail()))
    }

    /// `127.0.0.1:port`.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// True while the process runs.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The end of what the process wrote to stderr.
    pub(crate) fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(400);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].trim().to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // `Child::kill` sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.log);
    }
}

/// A port free on both 127.0.0.1 and ::1 (::1 is skipped if IPv6 is unavailable).
fn free_port() -> std::io::Result<u16> {
    for _ in 0..20 {
        let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = v4.local_addr()?.port();
        match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
            Ok(_) => return Ok(port),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(_) => return Ok(port),
        }
    }
    Err(std::io::Error::other(
        "no port free on both loopback addresses",
    ))
}

/// True when the C epmd binary is installed.
pub(crate) fn c_epmd_available() -> bool {
    Path::new(C_EPMD).is_file()
}

/// The installed OTP release (from `/usr/lib/erlang/releases/*/OTP_VERSION`), if any.
pub(crate) fn otp_version() -> Option<String> {
    let dir = fs::read_dir("/usr/lib/erlang/releases").ok()?;
    dir.filter_map(|e| e.ok())
        .find_map(|e| fs::read_to_string(e.path().join("OTP_VERSION")).ok())
        .map(|s| s.trim().to_string())
}
