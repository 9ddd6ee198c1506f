//! systemd integration without libsystemd: socket activation (the `LISTEN_PID` /
//! `LISTEN_FDS` protocol of `sd_listen_fds(3)`) and `sd_notify(3)` over `NOTIFY_SOCKET`.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// How many listening fds systemd passed to process `pid`, according to `env`; 0 when the
/// variables are absent, malformed, or meant for another process.
pub fn listen_fds_count(pid: u32, env: impl Fn(&str) -> Option<OsString>) -> usize {
    let get = |k: &str| env(k).and_then(|v| v.into_string().ok());
    let Some(listen_pid) = get("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) else {
        return 0;
    };
    if listen_pid != pid {
        return 0;
    }
    get("LISTEN_FDS")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
}

/// Takes ownership of `count` passed fds as listening sockets, after checking that each
/// is a listening stream socket; marks them close-on-exec and non-blocking.
///
/// # Safety
/// The fds `3..3 + count` must have been passed by the service manager to this process
/// (`LISTEN_PID` names it) and must not be owned by anything else in this process.
pub unsafe fn adopt(count: usize) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let fd = LISTEN_FDS_START + i as RawFd;
        // SAFETY: the caller guarantees that fd was passed to us and nobody else owns it.
        let listener = unsafe { TcpListener::from_raw_fd(fd) };
        let sock = socket2::SockRef::from(&listener);
        if sock.r#type()? != socket2::Type::STREAM || !sock.is_listener()? {
            // Do not close an fd we refuse: forget the wrapper.
            std::mem::forget(listener);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "passed fd is not a listening stream socket",
            ));
        }
        sock.set_cloexec(true)?;
        sock.set_nonblocking(true)?;
        out.push(listener);
    }
    Ok(out)
}

/// What systemd passed, sorted by `LISTEN_FDNAMES`: listening sockets, the state memfd
/// (`state`) and registration connections (`conn-…`) from the fd store.
#[derive(Debug, Default)]
pub struct Passed {
    /// Listening sockets (any other name, e.g. the socket unit's `epmd`).
    pub listeners: Vec<TcpListener>,
    /// The state memfd, if one was stored.
    pub state: Option<std::fs::File>,
    /// Stored connections by name.
    pub conns: Vec<(String, std::os::fd::OwnedFd)>,
}

/// Takes ownership of `count` passed fds, sorted by their `names` (from
/// `LISTEN_FDNAMES`; missing names mean listening sockets).
///
/// # Safety
/// As for [`adopt`]: the fds `3..3 + count` were passed to this process and are owned by
/// nothing else in it.
pub unsafe fn adopt_named(count: usize, names: &[String]) -> io::Result<Passed> {
    let mut passed = Passed::default();
    let mut listener_fds = Vec::new();
    for i in 0..count {
        let fd = LISTEN_FDS_START + i as RawFd;
        let name = names.get(i).map(String::as_str).unwrap_or("");
        // SAFETY: the caller guarantees that fd was passed to us and nobody else owns it.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        if name == "state" {
            passed.state = Some(std::fs::File::from(owned));
        } else if name.starts_with("conn-") {
            socket2::SockRef::from(&owned).set_cloexec(true)?;
            passed.conns.push((name.to_owned(), owned));
        } else {
            listener_fds.push(owned);
        }
    }
    for owned in listener_fds {
        let listener = TcpListener::from(owned);
        let sock = socket2::SockRef::from(&listener);
        if sock.r#type()? != socket2::Type::STREAM || !sock.is_listener()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "passed fd is not a listening stream socket",
            ));
        }
        sock.set_cloexec(true)?;
        sock.set_nonblocking(true)?;
        passed.listeners.push(listener);
    }
    Ok(passed)
}

/// A connection to the service manager's notification socket (`sd_notify`).
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
}

impl Notifier {
    /// The notifier for `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace);
    /// `None` when the variable is unset or unusable.
    pub fn from_env(env: impl Fn(&str) -> Option<OsString>) -> Option<Notifier> {
        let path = env("NOTIFY_SOCKET")?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => UnixAddr::from_abstract_name(name).ok()?,
            Some((b'/', _)) => UnixAddr::from_pathname(std::path::Path::new(&path)).ok()?,
            _ => return None,
        };
        let socket = UnixDatagram::unbound().ok()?;
        socket.connect_addr(&addr).ok()?;
        let _ = socket.set_nonblocking(true);
        Some(Notifier { socket, addr })
    }

    /// Sends one notification (`READY=1`, `STATUS=...`, ...). Errors are returned, not
    /// fatal: the daemon serves whether or not systemd listens.
    pub fn notify(&self, state: &str) -> io::Result<()> {
        self.socket.send(state.as_bytes()).map(|_| ())
    }

    /// Sends a notification with fds attached (`FDSTORE=1`).
    pub fn notify_with_fds(&self, state: &str, fds: &[RawFd]) -> io::Result<()> {
        crate::handover::fdpass::send_with_fds(self.socket.as_raw_fd(), state.as_bytes(), fds)
    }

    /// The address notifications go to.
    pub fn address(&self) -> &UnixAddr {
        &self.addr
    }

    /// The fd of the notification socket (kept open across the loop).
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The watchdog ping interval: half of `WATCHDOG_USEC`, when it is set for this process.
pub fn watchdog_interval(pid: u32, env: impl Fn(&str) -> Option<OsString>) -> Option<Duration> {
    watchdog_usec(pid, env).map(|usec| Duration::from_micros(usec / 2))
}

/// The watchdog timeout (`WATCHDOG_USEC`, above 0) when it applies to process `pid`:
/// `WATCHDOG_PID` is unset or names `pid`. A hand-over passes it on to the successor
/// without `WATCHDOG_PID`, so that the successor pings once it serves.
pub fn watchdog_usec(pid: u32, env: impl Fn(&str) -> Option<OsString>) -> Option<u64> {
    let get = |k: &str| env(k).and_then(|v| v.into_string().ok());
    if let Some(wpid) = get("WATCHDOG_PID") {
        if wpid.parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    let usec: u64 = get("WATCHDOG_USEC")?.parse().ok()?;
    (usec > 0).then_some(usec)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_env::fake_env as env;

    #[test]
    fn watchdog_interval_is_half_the_timeout() {
        assert_eq!(
            watchdog_interval(7, env(&[("WATCHDOG_USEC", "2000000")])),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(
                7,
                env(&[("WATCHDOG_USEC", "2000000"), ("WATCHDOG_PID", "8")])
            ),
            None
        );
        assert_eq!(watchdog_interval(7, env(&[])), None);
    }

    #[test]
    fn the_watchdog_timeout_is_passed_on_only_when_it_is_ours() {
        let ours = env(&[("WATCHDOG_USEC", "30000000"), ("WATCHDOG_PID", "7")]);
        assert_eq!(watchdog_usec(7, &ours), Some(30_000_000));
        assert_eq!(watchdog_usec(8, &ours), None);
        // A successor started without WATCHDOG_PID pings with the same timeout.
        assert_eq!(
            watchdog_interval(9, env(&[("WATCHDOG_USEC", "30000000")])),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_usec(7, env(&[("WATCHDOG_USEC", "0")])), None);
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = std::env::temp_dir().join(format!("epmd-rs-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let server = UnixDatagram::bind(&dir).unwrap();
        let path = dir.to_string_lossy().into_owned();
        let n = Notifier::from_env(env(&[("NOTIFY_SOCKET", &path)])).unwrap();
        n.notify("READY=1").unwrap();
        let mut buf = [0u8; 64];
        let got = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1");
        let _ = std::fs::remove_file(&dir);
        assert!(Notifier::from_env(env(&[("NOTIFY_SOCKET", "relative")])).is_none());
    }

    #[test]
    fn counts_only_fds_meant_for_us() {
        assert_eq!(
            listen_fds_count(42, env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "2")])),
            2
        );
        assert_eq!(
            listen_fds_count(42, env(&[("LISTEN_PID", "41"), ("LISTEN_FDS", "2")])),
            0
        );
        assert_eq!(listen_fds_count(42, env(&[("LISTEN_FDS", "2")])), 0);
        assert_eq!(
            listen_fds_count(42, env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "x")])),
            0
        );
    }
}
