//! Helpers of the systemd, `-daemon` and installation tests (`systemd`, `daemonize`,
//! `install`): signals and liveness by PID, external commands with a bounded wait, private
//! temporary directories, and an `sd_notify` receiver (a `NOTIFY_SOCKET` of our own).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::c_epmd::{find_on_path, CmdOutput};
use crate::support::daemon::EPMD_ENV_VARS;
use crate::support::tmp;

/// Variables through which a service manager talks to the process; removed from what the
/// test runner passes on, so that only what a test sets applies.
pub(crate) const SYSTEMD_ENV_VARS: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Removes the epmd and systemd variables of the test runner from `cmd`'s environment.
pub(crate) fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in EPMD_ENV_VARS.iter().chain(SYSTEMD_ENV_VARS.iter()) {
        cmd.env_remove(var);
    }
    cmd
}

/// Sends `sig` to process `pid`; panics if the process does not exist.
pub(crate) fn signal(pid: u32, sig: libc::c_int) {
    let target = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) only sends a signal; `target` is a positive PID of a test process.
    let rc = unsafe { libc::kill(target, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// Whether process `pid` exists and is not a zombie (a detached daemon is reaped by init,
/// which in a container may be slow to do so).
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // pid (comm) state ...: the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

/// The command line of process `pid`, one string per argument (empty if it is gone).
pub(crate) fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The path of `program`, from `PATH` or `/usr/bin`; panics naming the Debian package
/// that provides it when it is missing.
pub(crate) fn tool(program: &str, package: &str) -> PathBuf {
    find_on_path(program)
        .or_else(|| {
            let fixed = Path::new("/usr/bin").join(program);
            fixed.is_file().then_some(fixed)
        })
        .unwrap_or_else(|| panic!("`{program}` not found (install Debian's {package})"))
}

/// Runs `cmd` with stdin closed and its output captured to files, waiting up to `timeout`
/// for it to exit. At the deadline the process is killed by PID and the test panics.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    crate::support::c_epmd::run(cmd, timeout)
}

/// Panics, showing the command and its output, unless `out` is a success.
pub(crate) fn assert_success(what: &str, out: &CmdOutput) {
    assert!(
        out.status.success(),
        "{what} failed with {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
}

/// Scratch directories, shared by the modules that import them from here.
pub(crate) use crate::support::tmp::TempDir;

/// An `sd_notify` receiver: a Unix datagram socket bound to a fresh path, to give a daemon
/// as `NOTIFY_SOCKET`. Every datagram received is kept, with the time it arrived.
#[derive(Debug)]
pub(crate) struct NotifySocket {
    /// The bound socket.
    socket: UnixDatagram,
    /// Where it is bound (removed on drop).
    path: PathBuf,
    /// Every message so far, in arrival order.
    received: Vec<(Instant, String)>,
    /// Messages before this index were consumed by [`NotifySocket::wait_for`].
    cursor: usize,
}

impl NotifySocket {
    /// Binds a fresh socket path (short enough for `sun_path`).
    pub(crate) fn bind() -> NotifySocket {
        let path = tmp::unique_path("notify.sock");
        assert!(
            path.as_os_str().len() < 100,
            "socket path too long for sun_path: {}",
            path.display()
        );
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
        NotifySocket {
            socket,
            path,
            received: Vec::new(),
            cursor: 0,
        }
    }

    /// The socket path, the value of `NOTIFY_SOCKET`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Receives datagrams until `deadline`; returns whether at least one arrived.
    fn receive_until(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.socket
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.received.push((Instant::now(), text));
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(e) => panic!("recv on {}: {e}", self.path.display()),
        }
    }

    /// The first not yet consumed message for which `pred` holds, received within
    /// `timeout`; it and every message before it are consumed.
    pub(crate) fn wait_for(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = (self.cursor..self.received.len()).find(|&i| pred(&self.received[i].1))
            {
                self.cursor = i + 1;
                return Some(self.received[i].clone());
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.receive_until(deadline);
        }
    }

    /// Takes in every datagram already queued, without waiting.
    fn drain(&mut self) {
        self.socket.set_nonblocking(true).expect("set_nonblocking");
        let mut buf = [0u8; 4096];
        loop {
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.received.push((Instant::now(), text));
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("recv on {}: {e}", self.path.display()),
            }
        }
        self.socket.set_nonblocking(false).expect("set_nonblocking");
    }

    /// Takes in what is already queued, then keeps receiving for `window` and returns the
    /// arrival times of the messages equal to `exact` that were sent within it (not
    /// queued before it started).
    pub(crate) fn times_of_during(&mut self, exact: &str, window: Duration) -> Vec<Instant> {
        self.drain();
        let start = Instant::now();
        let deadline = start + window;
        while Instant::now() < deadline {
            self.receive_until(deadline);
        }
        self.received
            .iter()
            .filter(|(t, m)| *t >= start && m == exact)
            .map(|(t, _)| *t)
            .collect()
    }

    /// Every message so far, for failure messages.
    pub(crate) fn all(&self) -> Vec<String> {
        self.received.iter().map(|(_, m)| m.clone()).collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
