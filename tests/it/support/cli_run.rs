//! Runs the command-line cases of [`super::cli_cases`] on one side (the C epmd or
//! epmd-rs) and reduces what happened to an [`Outcome`] that can be compared byte for
//! byte: in client mode the exit status, stdout and stderr; in daemon mode whether it keeps
//! running or how it exited, the addresses it listens on, its NAMES reply and its answer
//! to a STOP (which shows the relaxed command check), and whether it left a detached
//! process. Only the side's own port (shown as `{P}`) and the program-name prefix of error
//! messages (`error-prefix` in docs/PROTOCOL.md) are normalised.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::c_epmd::run;
use super::cli_cases::{Case, Context};
use super::daemon::EPMD_ENV_VARS;
use super::deliberate::Deliberate;
use super::ports::free_port;
use super::procnet;
use super::raw;
use super::twin::{Foreground, Side};
use super::wait::poll_until;

/// How long a client-mode run may take before it is killed (a daemon started by mistake).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a daemon-mode run gets to listen or exit.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `-daemon` run's detached process gets to listen.
const DETACH_TIMEOUT: Duration = Duration::from_secs(5);

/// The node names registered in the `WithNodes` context.
const NODES: [(&str, u16); 2] = [("node1", 5001), ("node2", 5002)];

/// What one run produced, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Client mode.
    Client {
        /// Exit code (`None`: killed by a signal).
        code: Option<i32>,
        /// stdout, normalised.
        stdout: String,
        /// stderr, normalised.
        stderr: String,
    },
    /// Daemon mode.
    Daemon {
        /// Exit code of the started process, `None` if it kept running.
        exit: Option<i32>,
        /// Whether a detached process served.
        detached: bool,
        /// The listening addresses (`ip:{P}` or `ip:ephemeral`), sorted.
        listens: Vec<String>,
        /// The NAMES reply (hex, header `{P}` when it is the port).
        names: String,
        /// The reply to STOP of an unknown name.
        stop: String,
    },
}

/// The daemons of the client-mode contexts of one side, started on first use.
#[derive(Debug)]
pub(crate) struct Contexts {
    side: Side,
    /// (context, daemon, its registration connections).
    running: Vec<(Context, Foreground, Vec<TcpStream>)>,
    /// The free port used for `NoDaemon`.
    no_daemon_port: u16,
}

impl Contexts {
    /// No daemon started yet.
    pub(crate) fn new(side: Side) -> Contexts {
        Contexts {
            side,
            running: Vec::new(),
            no_daemon_port: free_port(),
        }
    }

    /// The port of `ctx`, starting (or restarting, after a `-kill`) its daemon.
    fn port(&mut self, ctx: Context) -> u16 {
        if ctx == Context::NoDaemon {
            return self.no_daemon_port;
        }
        self.running
            .retain_mut(|(c, d, _)| *c != ctx || d.try_wait().is_none());
        if let Some((_, d, _)) = self.running.iter().find(|(c, _, _)| *c == ctx) {
            return d.port();
        }
        let daemon = Foreground::start(self.side, &[]);
        let port = daemon.port();
        let nodes = if ctx == Context::WithNodes {
            NODES
                .iter()
                .map(|(name, node_port)| raw::register(port, name, *node_port, 6).0)
                .collect()
        } else {
            Vec::new()
        };
        self.running.push((ctx, daemon, nodes));
        port
    }
}

/// Runs a client-mode `case` on `side` against its context's daemon.
pub(crate) fn run_client(
    case: &Case,
    ctx: Context,
    contexts: &mut Contexts,
    allow: &Deliberate,
) -> Outcome {
    let port = contexts.port(ctx);
    let out = run(&mut command(contexts.side, case, port), CLIENT_TIMEOUT);
    Outcome::Client {
        code: out.status.code(),
        stdout: normalise(&out.stdout, port, allow),
        stderr: normalise(&out.stderr, port, allow),
    }
}

/// The command of `case` for `side` on `port`: the `ERL_EPMD_*` variables of the runner
/// removed, the case's set, and unless the case sets them `ERL_EPMD_PORT={P}` (so that
/// nothing reaches port 4369) and `ERL_EPMD_ADDRESS=127.0.0.1` (loopback only).
fn command(side: Side, case: &Case, port: u16) -> Command {
    let mut cmd = Command::new(side.program());
    for var in EPMD_ENV_VARS {
        cmd.env_remove(var);
    }
    // Should a case start epmd-rs as a daemon, its admin socket stays out of /run.
    cmd.env(
        "EPMD_RS_ADMIN_SOCKET",
        super::tmp::unique_path("admin.sock"),
    );
    let env = case.render_env(port);
    let sets = |k: &str| env.iter().any(|(key, _)| key == k);
    if !sets("ERL_EPMD_PORT") {
        cmd.env("ERL_EPMD_PORT", port.to_string());
    }
    if !sets("ERL_EPMD_ADDRESS") && !case.args.iter().any(|a| a == "-address") {
        cmd.env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }
    cmd.envs(env).args(case.render_args(port));
    cmd
}

/// Output bytes as text with the side's port shown as `{P}`, the `epmd-rs:` prefix of a
/// message shown as `epmd:` and DUMP's `fd = F` masked (`dump-fd`).
fn normalise(bytes: &[u8], port: u16, allow: &Deliberate) -> String {
    let text = String::from_utf8_lossy(bytes).replace(&port.to_string(), "{P}");
    let text = if text.contains(", fd = ") {
        allow.allow("dump-fd");
        mask_fds(&text)
    } else {
        text
    };
    if text.contains("epmd-rs: ") {
        allow.allow("error-prefix");
    }
    text.replace("epmd-rs: ", "epmd: ")
}

/// Runs a daemon-mode `case` on `side` on a free port, observes it and kills what it
/// started (the process, and a detached one, by PID).
pub(crate) fn run_daemon(case: &Case, side: Side) -> Outcome {
    let port = free_port();
    let program = side.program();
    let cmd = command(side, case, port);
    let args: Vec<OsString> = cmd.get_args().map(OsString::from).collect();
    let envs: Vec<(OsString, OsString)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    let mut fg = Foreground::spawn(&program, &args, &envs, port);
    let pid = fg.pid();
    // Listening (on any port: a port of 0 gives ephemeral ones) or exited; with
    // -daemon, exited (epmd-rs listens before it detaches).
    let wants_detach = case.args.iter().any(|a| a == "-daemon");
    let started = poll_until(START_TIMEOUT, || {
        if let Some(status) = fg.try_wait() {
            return Some(Some(status));
        }
        (!wants_detach && !procnet::listen_addrs_of(pid).is_empty()).then_some(None)
    });
    let exit = started.flatten().map(|s| s.code().unwrap_or(-1));
    let detached_pid = if exit == Some(0) && wants_detach {
        poll_until(DETACH_TIMEOUT, || {
            procnet::listening_pids(port)
                .into_iter()
                .find(|&p| p != pid && procnet::runs_executable(p, &program.to_string_lossy()))
        })
    } else {
        None
    };
    let server = detached_pid.unwrap_or(pid);
    let mut listens: Vec<SocketAddr> = if exit.is_none() || detached_pid.is_some() {
        procnet::listen_addrs_of(server)
    } else {
        Vec::new()
    };
    listens.sort();
    let (names, stop) = match listens.iter().find(|a| a.ip().is_loopback()) {
        Some(addr) => (
            ask(*addr, &[0, 1, b'n'], port),
            ask(*addr, &raw::frame(b"snosuch"), port),
        ),
        None => (String::new(), String::new()),
    };
    let listens = listens
        .iter()
        .map(|a| {
            let p = if a.port() == port {
                "{P}".to_owned()
            } else {
                "ephemeral".to_owned()
            };
            format!("{}:{p}", a.ip())
        })
        .collect();
    drop(fg);
    if wants_detach {
        // Every process of this side's program that listens on the port, by PID (the
        // detached one, or one that detached too late to be seen above).
        let exe = program.to_string_lossy();
        for p in procnet::listening_pids(port) {
            if procnet::runs_executable(p, &exe) {
                let _ = Command::new("kill")
                    .args(["-KILL", &p.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
    Outcome::Daemon {
        exit,
        detached: detached_pid.is_some(),
        listens,
        names,
        stop,
    }
}

/// Sends `request` to `addr` and returns the reply until close, as hex, with a 4-byte
/// header equal to `port` shown as `{P}`.
fn ask(addr: SocketAddr, request: &[u8], port: u16) -> String {
    let reply = (|| -> std::io::Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(15)))?;
        s.write_all(request)?;
        let mut reply = Vec::new();
        match s.read_to_end(&mut reply) {
            Ok(_) => Ok(reply),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(reply),
            Err(e) => Err(e),
        }
    })();
    let negative = (i64::from(port) - 65536) as u32;
    match reply {
        Ok(r) => match r.strip_prefix(&u32::from(port).to_be_bytes()[..]) {
            Some(rest) => format!("{{P}}+{}", raw::hex(rest)),
            None => match r.strip_prefix(&negative.to_be_bytes()[..]) {
                Some(rest) => format!("{{NEG}}+{}", raw::hex(rest)),
                None => raw::hex(&r),
            },
        },
        Err(e) => format!("error {:?}", e.kind()),
    }
}

/// For a failing comparison: both outcomes side by side.
pub(crate) fn show(case: &Case, c: &Outcome, ours: &Outcome) -> String {
    format!("{}\n  C:    {c:?}\n  ours: {ours:?}\n", case.describe())
}

/// `text` with every `fd = <digits>` shown as `fd = F`.
fn mask_fds(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("fd = ") {
        out.push_str(&rest[..i + 5]);
        out.push('F');
        rest = rest[i + 5..].trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}
