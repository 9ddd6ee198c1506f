//! The C epmd and epmd-rs side by side, each a foreground process on its own free port,
//! started with the same arguments and environment, for the differential tests.
//!
//! Readiness is read from `/proc` (the process holds a listener on its port) rather than
//! probed with a connect, so a daemon has seen no connection when a test starts. Every
//! process is killed by PID when its handle drops.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::c_epmd::c_epmd_path;
use super::daemon::{BIN, EPMD_ENV_VARS, READY_TIMEOUT};
use super::ports::free_port;
use super::procnet;
use super::tmp;
use super::wait::poll_until;

/// Which implementation a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    /// `/usr/bin/epmd`.
    C,
    /// epmd-rs.
    Ours,
}

impl Side {
    /// Both sides, the reference first.
    pub(crate) const BOTH: [Side; 2] = [Side::C, Side::Ours];

    /// The binary of this side.
    pub(crate) fn program(self) -> PathBuf {
        match self {
            Side::C => c_epmd_path(),
            Side::Ours => PathBuf::from(BIN),
        }
    }
}

/// A daemon of either side in the foreground, with stdout and stderr captured to files.
#[derive(Debug)]
pub(crate) struct Foreground {
    /// The process.
    child: Child,
    /// The port it serves on.
    port: u16,
    /// Captured stderr.
    stderr_path: PathBuf,
    /// Captured stdout.
    stdout_path: PathBuf,
    /// epmd-rs's admin socket.
    admin_path: PathBuf,
}

/// How many free ports [`Foreground::start`] tries when a daemon finds its port taken.
const PORT_ATTEMPTS: usize = 5;

impl Foreground {
    /// Spawns `program` with exactly `args` and `envs` (the runner's `ERL_EPMD_*` removed)
    /// without waiting for anything.
    pub(crate) fn spawn(
        program: &Path,
        args: &[OsString],
        envs: &[(OsString, OsString)],
        port: u16,
    ) -> Foreground {
        let stdout_path = tmp::unique_path("twin.stdout");
        let stderr_path = tmp::unique_path("twin.stderr");
        // epmd-rs's admin socket in the test's scratch directory, never under /run, and
        // unique even for two daemons on port 0 (the C epmd ignores the variable).
        let admin_path = tmp::unique_path("admin.sock");
        let mut cmd = Command::new(program);
        for var in EPMD_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.env("EPMD_RS_ADMIN_SOCKET", &admin_path)
            .args(args)
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(tmp::create_log(&stdout_path))
            .stderr(tmp::create_log(&stderr_path));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        Foreground {
            child,
            port,
            stderr_path,
            stdout_path,
            admin_path,
        }
    }

    /// Starts `side` as `-port P -address 127.0.0.1 <extra>` on a free port and waits until
    /// it listens; tries new ports while it exits 0 (port taken). Panics otherwise.
    pub(crate) fn start(side: Side, extra: &[&str]) -> Foreground {
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut args: Vec<OsString> = ["-port", &port.to_string(), "-address", "127.0.0.1"]
                .iter()
                .map(OsString::from)
                .collect();
            args.extend(extra.iter().map(OsString::from));
            let mut d = Foreground::spawn(&side.program(), &args, &[], port);
            match d.wait_listening(READY_TIMEOUT) {
                Ok(()) => return d,
                Err(Some(status)) if status.success() => continue,
                Err(status) => panic!(
                    "{side:?} daemon on {port} did not start ({status:?}): {}",
                    d.stderr_text()
                ),
            }
        }
        panic!("{side:?} found its port taken {PORT_ATTEMPTS} times in a row");
    }

    /// Waits until the process holds a listener on its port: `Err(Some(status))` if it
    /// exits first, `Err(None)` at the deadline.
    pub(crate) fn wait_listening(&mut self, timeout: Duration) -> Result<(), Option<ExitStatus>> {
        let pid = self.child.id();
        let port = self.port;
        let child = &mut self.child;
        match poll_until(timeout, || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(status));
            }
            procnet::listen_addrs_of(pid)
                .iter()
                .any(|a| a.port() == port)
                .then_some(Ok(()))
        }) {
            Some(Ok(())) => Ok(()),
            Some(Err(status)) => Err(Some(status)),
            None => Err(None),
        }
    }

    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The PID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited (reaping it).
    pub(crate) fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for it to exit.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Everything written to stderr so far.
    pub(crate) fn stderr_text(&self) -> String {
        tmp::read_lossy(&self.stderr_path)
    }

    /// Everything written to stdout so far (raw bytes).
    pub(crate) fn stdout_bytes(&self) -> Vec<u8> {
        fs::read(&self.stdout_path).unwrap_or_default()
    }

    /// Everything written to stderr so far (raw bytes).
    pub(crate) fn stderr_bytes(&self) -> Vec<u8> {
        fs::read(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.stderr_path);
        let _ = fs::remove_file(&self.stdout_path);
        let _ = fs::remove_file(&self.admin_path);
    }
}
