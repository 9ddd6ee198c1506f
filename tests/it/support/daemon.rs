//! The daemon under test as a child process, on a free port, killed by PID when dropped.
//!
//! [`DaemonBuilder`] assembles the command line (`-port P`, then `-address 127.0.0.1` unless
//! the test configures addresses itself, then the test's own arguments) with the `ERL_EPMD_*`
//! variables of the test runner removed. [`DaemonBuilder::start`] waits until the child owns
//! a listener on the port and a TCP connect to `127.0.0.1:P` succeeds; a daemon that exits 0
//! first is taken to have found the port in use (the C epmd's EADDRINUSE rule) and is started
//! again on a new port. stdout and stderr go to files; when a test panics while a [`Daemon`]
//! is alive, its stderr is printed so the failure explains itself.
//!
//! [`DetachedDaemon`] covers `-daemon`, where the process we spawned exits and a grandchild
//! serves: it finds that grandchild by its listening port and kills it by PID.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::ports::free_port;
use super::procnet;
use super::tmp;
use super::wait::{poll_true, poll_until, POLL_INTERVAL};

/// Path of the daemon binary under test, built by Cargo for this test target.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_epmd-rs");

/// How long [`DaemonBuilder::start`] waits for the daemon to accept connections.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many fresh ports [`DaemonBuilder::start`] tries when the daemon finds its port taken.
const PORT_ATTEMPTS: usize = 5;

/// The variables that configure the daemon. They are removed from the environment the
/// test runner passes on, so that only what a test sets explicitly applies.
pub(crate) const EPMD_ENV_VARS: [&str; 3] = [
    "ERL_EPMD_PORT",
    "ERL_EPMD_ADDRESS",
    "ERL_EPMD_RELAXED_COMMAND_CHECK",
];

/// Why a daemon did not become ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// The process exited before listening; status 0 means "port already in use".
    Exited(ExitStatus),
    /// It was still running, but not listening on the port, when the deadline passed.
    Timeout,
}

/// Builds the command line and environment of a daemon before starting it.
#[derive(Clone, Debug, Default)]
pub(crate) struct DaemonBuilder {
    /// Arguments appended after `-port P` and the default address.
    args: Vec<OsString>,
    /// Extra environment variables.
    envs: Vec<(OsString, OsString)>,
    /// Set by [`DaemonBuilder::no_default_address`].
    no_default_address: bool,
    /// A fixed port instead of a free one.
    port: Option<u16>,
    /// Pass the port as `ERL_EPMD_PORT` instead of `-port`.
    port_via_env: bool,
    /// Run this copy of the daemon binary instead of [`BIN`].
    program: Option<PathBuf>,
}

impl DaemonBuilder {
    /// A daemon with no extra arguments: `-port <free> -address 127.0.0.1`.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Appends one command-line argument (after `-port P` and the default `-address`).
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several command-line arguments.
    pub(crate) fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the daemon. Setting `ERL_EPMD_ADDRESS` disables the
    /// default `-address 127.0.0.1`.
    pub(crate) fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Does not add `-address 127.0.0.1`: the daemon then binds its defaults (`0.0.0.0` and
    /// `[::]`) unless the test passes its own `-address` or `ERL_EPMD_ADDRESS`.
    pub(crate) fn no_default_address(mut self) -> Self {
        self.no_default_address = true;
        self
    }

    /// Uses this port instead of a free one (to restart on the port of a killed daemon).
    /// [`DaemonBuilder::start`] then panics instead of retrying if the port is taken.
    pub(crate) fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Runs the daemon binary from `path` (a copy or link of [`BIN`]) instead of [`BIN`].
    pub(crate) fn program(mut self, path: impl Into<PathBuf>) -> Self {
        self.program = Some(path.into());
        self
    }

    /// Passes the port as `ERL_EPMD_PORT=P` instead of `-port P`.
    pub(crate) fn port_via_env(mut self) -> Self {
        self.port_via_env = true;
        self
    }

    /// Starts the daemon and waits (up to [`READY_TIMEOUT`]) until it listens on
    /// `127.0.0.1:P`. Retries on a new port when the daemon exits 0 first (port taken).
    ///
    /// Panics, with the daemon's stderr, when it exits with another status, times out, or
    /// keeps finding its port taken.
    pub(crate) fn start(self) -> Daemon {
        let attempts = if self.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        let mut last_stderr = String::new();
        for _ in 0..attempts {
            let port = self.port.unwrap_or_else(free_port);
            let mut daemon = self.spawn_on(port);
            match daemon.wait_ready(READY_TIMEOUT) {
                Ok(()) => return daemon,
                Err(NotReady::Exited(status)) if status.success() && self.port.is_none() => {
                    last_stderr = daemon.stderr_text();
                    daemon.reported = true;
                    continue;
                }
                Err(reason) => {
                    daemon.reported = true;
                    panic!(
                        "daemon `{}` did not become ready on port {port}: {reason:?}\n\
                         --- stderr ---\n{}--- end of stderr ---",
                        daemon.command_line,
                        daemon.stderr_text()
                    );
                }
            }
        }
        panic!(
            "the daemon exited 0 (port in use?) on {PORT_ATTEMPTS} free ports in a row\n\
             --- last stderr ---\n{last_stderr}--- end of stderr ---"
        );
    }

    /// Starts the daemon without waiting for anything, on the fixed port or a free one.
    /// For tests that expect it to exit, or that wait in their own way.
    pub(crate) fn spawn(self) -> Daemon {
        let port = self.port.unwrap_or_else(free_port);
        self.spawn_on(port)
    }

    /// Whether the default `-address 127.0.0.1` should be added.
    fn wants_default_address(&self) -> bool {
        !self.no_default_address
            && !self.args.iter().any(|a| a == "-address")
            && !self.envs.iter().any(|(k, _)| k == "ERL_EPMD_ADDRESS")
    }

    /// Spawns the daemon on `port` with output captured to fresh files.
    fn spawn_on(&self, port: u16) -> Daemon {
        let mut cmd = Command::new(self.program.as_deref().unwrap_or(Path::new(BIN)));
        for var in EPMD_ENV_VARS {
            cmd.env_remove(var);
        }
        let port_text = port.to_string();
        if self.port_via_env {
            cmd.env("ERL_EPMD_PORT", &port_text);
        } else {
            cmd.args(["-port", &port_text]);
        }
        if self.wants_default_address() {
            cmd.args(["-address", "127.0.0.1"]);
        }
        cmd.args(&self.args);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));

        let stdout_path = tmp::unique_path("daemon.stdout");
        let stderr_path = tmp::unique_path("daemon.stderr");
        cmd.stdin(Stdio::null())
            .stdout(tmp::create_log(&stdout_path))
            .stderr(tmp::create_log(&stderr_path));
        let command_line = describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{command_line}`: {e}"));
        Daemon {
            child,
            port,
            stdout_path,
            stderr_path,
            command_line,
            reported: false,
        }
    }
}

/// `VAR=value ... program args` of a command, for messages.
fn describe(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// A running (or exited) daemon child process. Dropping it kills the child with SIGKILL,
/// reaps it, and removes its output files.
#[derive(Debug)]
pub(crate) struct Daemon {
    /// The spawned process.
    child: Child,
    /// The port it was told to use.
    port: u16,
    /// Where its stdout goes.
    stdout_path: PathBuf,
    /// Where its stderr goes.
    stderr_path: PathBuf,
    /// The command line, for messages.
    command_line: String,
    /// Whether a panic message already included the stderr.
    reported: bool,
}

impl Daemon {
    /// Starts `epmd-rs -port <free> -address 127.0.0.1 <args>` and waits until it listens.
    /// An `-address` among `args` replaces the default one.
    pub(crate) fn start(args: &[&str]) -> Daemon {
        DaemonBuilder::new().args(args).start()
    }

    /// Like [`Daemon::start`] with extra environment variables; an `ERL_EPMD_ADDRESS` among
    /// them replaces the default `-address`.
    pub(crate) fn start_with_env(args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        envs.iter()
            .fold(DaemonBuilder::new().args(args), |b, (k, v)| b.env(k, v))
            .start()
    }

    /// A builder for every other combination of arguments, environment and port.
    pub(crate) fn builder() -> DaemonBuilder {
        DaemonBuilder::new()
    }

    /// The port the daemon was given.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The daemon's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line it was started with, environment first, for messages.
    pub(crate) fn command_line(&self) -> &str {
        &self.command_line
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGKILL to the daemon's PID and reaps it. Harmless if it already exited.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit; its status, or `None` if it is still
    /// running at the deadline.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Everything the daemon wrote to stderr so far (lossy UTF-8).
    pub(crate) fn stderr_text(&self) -> String {
        tmp::read_lossy(&self.stderr_path)
    }

    /// Everything the daemon wrote to stdout so far (lossy UTF-8).
    pub(crate) fn stdout_text(&self) -> String {
        tmp::read_lossy(&self.stdout_path)
    }

    /// The addresses on which the daemon process holds listening sockets (from `/proc`).
    pub(crate) fn listen_addrs(&self) -> Vec<SocketAddr> {
        procnet::listen_addrs_of(self.pid())
    }

    /// Waits up to `timeout` until this process holds a listener on its port and a TCP
    /// connect to `127.0.0.1:port` succeeds. Checking ownership first means another
    /// process on the same port is never mistaken for our daemon.
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NotReady::Exited(status));
            }
            // Connect first: it is cheap, while the /proc scan that proves the listener is
            // this child's reads every TCP socket of the host (thousands while other tests
            // hold connections), so it runs only once something answers.
            if TcpStream::connect_timeout(&loopback, POLL_INTERVAL * 10).is_ok()
                && self.listen_addrs().iter().any(|a| a.port() == self.port)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout);
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "--- stderr of daemon `{}` (pid {}) ---\n{}--- end of stderr ---",
                self.command_line,
                self.pid(),
                self.stderr_text()
            );
        }
        let _ = fs::remove_file(&self.stdout_path);
        let _ = fs::remove_file(&self.stderr_path);
    }
}

/// A daemon that detached itself (`-daemon`, e.g. started by `erl`), known only by the port
/// it listens on. Dropping it kills, by PID, every process that runs [`BIN`] and listens on
/// that port; processes running anything else are never touched.
#[derive(Debug)]
pub(crate) struct DetachedDaemon {
    /// The port the detached daemon listens on.
    port: u16,
}

impl DetachedDaemon {
    /// Arms the cleanup for `port`. Create it before starting whatever detaches the daemon,
    /// so that a failing test still kills it.
    pub(crate) fn on_port(port: u16) -> Self {
        Self { port }
    }

    /// The port this guard watches.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The PIDs of the processes running [`BIN`] that listen on the port right now.
    pub(crate) fn pids(&self) -> Vec<u32> {
        procnet::listening_pids(self.port)
            .into_iter()
            .filter(|&pid| procnet::runs_executable(pid, BIN))
            .collect()
    }

    /// Waits up to `timeout` until exactly one process running [`BIN`] listens on the port,
    /// and returns its PID.
    pub(crate) fn wait_pid(&self, timeout: Duration) -> Option<u32> {
        poll_until(timeout, || match self.pids().as_slice() {
            [pid] => Some(*pid),
            _ => None,
        })
    }

    /// Kills every process running [`BIN`] that listens on the port (SIGKILL by PID) and
    /// waits up to 5 s until none is left. Returns whether they are all gone.
    pub(crate) fn kill(&self) -> bool {
        for pid in self.pids() {
            // Re-checked just before the signal so that a reused PID is never hit.
            if procnet::runs_executable(pid, BIN) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        poll_true(Duration::from_secs(5), || self.pids().is_empty())
    }
}

impl Drop for DetachedDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}
