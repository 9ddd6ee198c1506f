//! systemd integration without libsystemd: socket activation (the `LISTEN_PID` /
//! `LISTEN_FDS` protocol of `sd_listen_fds(3)`) and `sd_notify(3)` over `NOTIFY_SOCKET`.

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

use log::warn;

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The most fds taken from `LISTEN_FDS`: listeners, the state and one per stored
/// registration connection stay far below it; a larger count is refused as a whole.
pub const MAX_LISTEN_FDS: usize = 65_536;

/// Why the fds passed in `LISTEN_FDS` were refused as a whole.
#[derive(Debug, PartialEq, Eq)]
pub enum ListenFdsError {
    /// `LISTEN_FDS` names more fds than [`MAX_LISTEN_FDS`] or than the fd limit allows.
    TooMany {
        /// `LISTEN_FDS`.
        count: usize,
        /// The most this process takes.
        limit: usize,
    },
}

impl std::fmt::Display for ListenFdsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenFdsError::TooMany { count, limit } => write!(
                f,
                "LISTEN_FDS={count} is more than this process takes (at most {limit})"
            ),
        }
    }
}

impl std::error::Error for ListenFdsError {}

/// How many fds systemd passed to process `pid`, according to `env`; 0 when the variables
/// are absent, malformed, or meant for another process. A count over [`MAX_LISTEN_FDS`] or
/// one that reaches past `fd_limit` (fds `3..3 + count` cannot all be open) is refused.
pub fn listen_fds_count(
    pid: u32,
    fd_limit: u64,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<usize, ListenFdsError> {
    let get = |k: &str| env(k).and_then(|v| v.into_string().ok());
    let Some(listen_pid) = get("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) else {
        return Ok(0);
    };
    if listen_pid != pid {
        return Ok(0);
    }
    let count = get("LISTEN_FDS")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let by_fd_limit = usize::try_from(fd_limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(LISTEN_FDS_START as usize);
    let limit = MAX_LISTEN_FDS.min(by_fd_limit);
    if count > limit {
        return Err(ListenFdsError::TooMany { count, limit });
    }
    Ok(count)
}

/// What a passed fd turned out to be (`fstat`, then socket options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// Not an open fd.
    Closed,
    /// A regular file (a memfd is one).
    File,
    /// A listening TCP socket (AF_INET or AF_INET6).
    TcpListener,
    /// A connected TCP socket (AF_INET or AF_INET6).
    TcpConnection,
    /// Anything else: another file type, socket family or socket type, or an unconnected
    /// socket.
    Other,
}

/// What `fd` is. It is only looked at, never closed.
pub fn classify(fd: RawFd) -> FdKind {
    // SAFETY: F_GETFD only reads the fd's flags; an fd that is not open gives EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return FdKind::Closed;
    }
    // SAFETY: stat is plain data; fstat fills it in for an open fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open (checked above) and st is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return FdKind::Other;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => return FdKind::File,
        libc::S_IFSOCK => {}
        _ => return FdKind::Other,
    }
    // SAFETY: fd is open for the whole call and the borrow does not outlive it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    let inet = matches!(
        sock.domain(),
        Ok(d) if d == socket2::Domain::IPV4 || d == socket2::Domain::IPV6
    );
    if !inet || sock.r#type().ok() != Some(socket2::Type::STREAM) {
        return FdKind::Other;
    }
    match sock.is_listener() {
        Ok(true) => FdKind::TcpListener,
        Ok(false) if sock.peer_addr().is_ok() => FdKind::TcpConnection,
        _ => FdKind::Other,
    }
}

/// Whether `name` is a fd-store state name (`state`, or `state-<…>` for the documents
/// written one after the other).
pub fn is_state_name(name: &str) -> bool {
    name == "state" || name.starts_with("state-")
}

/// What systemd passed, sorted by `LISTEN_FDNAMES`: listening sockets, state memfds
/// (`state…`) and registration connections (`conn-…`) from the fd store.
#[derive(Debug, Default)]
pub struct Passed {
    /// Listening sockets (any other name, e.g. the socket unit's `epmd`).
    pub listeners: Vec<TcpListener>,
    /// The stored state documents by name (normally one; two when a crash came between
    /// storing a new one and removing the old one).
    pub states: Vec<(String, std::fs::File)>,
    /// Stored connections by name.
    pub conns: Vec<(String, std::os::fd::OwnedFd)>,
    /// Fd-store names whose fd was not what the name says (closed here, to be removed
    /// from the store).
    pub rejected: Vec<String>,
}

/// Takes ownership of `count` passed fds, sorted by their `names` (from
/// `LISTEN_FDNAMES`; missing names mean listening sockets). Each fd is checked before it
/// is wrapped: a listener must be a listening TCP socket, a state a regular file (memfd),
/// a stored connection a connected TCP socket. One that is not is closed with a warning
/// and left out (an fd that is not open is only left out). Every fd kept is made
/// close-on-exec (a successor gets what it needs through the hand-over), listeners
/// non-blocking.
///
/// # Safety
/// The fds `3..3 + count` were passed to this process (`LISTEN_PID` names it) and are
/// owned by nothing else in it.
pub unsafe fn adopt_named(count: usize, names: &[String]) -> io::Result<Passed> {
    let mut passed = Passed::default();
    for i in 0..count {
        let fd = LISTEN_FDS_START + i as RawFd;
        let name = names.get(i).map(String::as_str).unwrap_or("");
        let kind = classify(fd);
        let (wanted, what) = if is_state_name(name) {
            (FdKind::File, "a regular file (memfd)")
        } else if name.starts_with("conn-") {
            (FdKind::TcpConnection, "a connected TCP socket")
        } else {
            (FdKind::TcpListener, "a listening TCP socket")
        };
        if kind == FdKind::Closed {
            warn!("passed fd {fd} ({name:?}) is not open; left out");
            if wanted != FdKind::TcpListener {
                passed.rejected.push(name.to_owned());
            }
            continue;
        }
        // SAFETY: the caller guarantees that fd was passed to us and nobody else owns it;
        // it is open (checked above).
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        if kind != wanted {
            warn!("passed fd {fd} ({name:?}) is not {what} ({kind:?}); closed");
            if wanted != FdKind::TcpListener {
                passed.rejected.push(name.to_owned());
            }
            continue;
        }
        let sock = socket2::SockRef::from(&owned);
        sock.set_cloexec(true)?;
        match wanted {
            FdKind::File => passed
                .states
                .push((name.to_owned(), std::fs::File::from(owned))),
            FdKind::TcpConnection => passed.conns.push((name.to_owned(), owned)),
            _ => {
                sock.set_nonblocking(true)?;
                passed.listeners.push(TcpListener::from(owned));
            }
        }
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
        let count = |vars: &[(&str, &str)]| listen_fds_count(42, 1024, env(vars));
        assert_eq!(count(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "2")]), Ok(2));
        assert_eq!(count(&[("LISTEN_PID", "41"), ("LISTEN_FDS", "2")]), Ok(0));
        assert_eq!(count(&[("LISTEN_FDS", "2")]), Ok(0));
        assert_eq!(count(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "x")]), Ok(0));
    }

    #[test]
    fn an_unbounded_count_is_refused() {
        let count = |n: &str, fd_limit: u64| {
            listen_fds_count(
                42,
                fd_limit,
                env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", n)]),
            )
        };
        // Past the fd limit: fds 3..3+count cannot all be open.
        assert_eq!(
            count("1022", 1024),
            Err(ListenFdsError::TooMany {
                count: 1022,
                limit: 1021
            })
        );
        assert_eq!(count("1021", 1024), Ok(1021));
        // Past MAX_LISTEN_FDS whatever the fd limit.
        assert_eq!(
            count("65537", u64::MAX),
            Err(ListenFdsError::TooMany {
                count: 65_537,
                limit: MAX_LISTEN_FDS
            })
        );
        assert_eq!(count("65536", u64::MAX), Ok(MAX_LISTEN_FDS));
        assert_eq!(
            count("18446744073709551615", u64::MAX),
            Err(ListenFdsError::TooMany {
                count: usize::MAX,
                limit: MAX_LISTEN_FDS
            })
        );
    }

    /// A memfd without close-on-exec, as systemd passes fds.
    fn inheritable_memfd() -> std::fs::File {
        // SAFETY: the name is NUL-terminated; memfd_create returns a new fd or -1.
        let fd = unsafe { libc::memfd_create(c"test-state".as_ptr(), 0) };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: fd was just created and is owned by nothing else.
        unsafe { std::fs::File::from_raw_fd(fd) }
    }

    fn cloexec(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the flags of an open fd.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        assert!(flags >= 0);
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn passed_fds_are_classified_by_what_they_are() {
        use std::net::{Ipv4Addr, TcpStream};
        use std::os::unix::net::UnixStream;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (unix, _peer) = UnixStream::pair().unwrap();
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let unconnected =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let memfd = inheritable_memfd();
        let dir = std::fs::File::open("/").unwrap();
        assert_eq!(classify(listener.as_raw_fd()), FdKind::TcpListener);
        assert_eq!(classify(client.as_raw_fd()), FdKind::TcpConnection);
        assert_eq!(classify(memfd.as_raw_fd()), FdKind::File);
        assert_eq!(classify(unix.as_raw_fd()), FdKind::Other);
        assert_eq!(classify(udp.as_raw_fd()), FdKind::Other);
        assert_eq!(classify(unconnected.as_raw_fd()), FdKind::Other);
        assert_eq!(classify(dir.as_raw_fd()), FdKind::Other);
        let closed = memfd.as_raw_fd();
        drop(memfd);
        assert_eq!(classify(closed), FdKind::Closed);
    }

    /// Runs `adopt_named` on real fds placed at 3.. in a forked child (this test process
    /// has its own fds there), which reports over a pipe: for each passed fd whether it is
    /// still open and close-on-exec, then the counts of what was adopted.
    fn adopt_in_child(fds: &[RawFd], names: &[&str]) -> String {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut pipe = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
        let first = 3 + fds.len() as RawFd + 64;
        // Copies above every target, so the dup2 below never overwrites one still needed.
        // -1 stays -1: that target fd is left closed.
        let high: Vec<RawFd> = fds
            .iter()
            .map(|fd| match *fd {
                -1 => -1,
                // SAFETY: F_DUPFD_CLOEXEC duplicates an open fd at or above `first`.
                fd => unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, first + 64) },
            })
            .collect();
        // The child writes its report to a copy of the write end above every target fd.
        // SAFETY: F_DUPFD_CLOEXEC duplicates the open write end at or above the bound.
        let report_fd = unsafe { libc::fcntl(pipe[1], libc::F_DUPFD_CLOEXEC, first + 256) };
        assert!(report_fd >= 0);
        // SAFETY: the child only dup2s, runs adopt_named on the fds it placed, writes to
        // the pipe and _exits; the test binary's other threads are not relied on.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let report = (|| {
                let out = report_fd;
                for (i, fd) in high.iter().enumerate() {
                    let target = 3 + i as RawFd;
                    if *fd == -1 {
                        // SAFETY: closing whatever the child had at the target fd.
                        unsafe { libc::close(target) };
                        continue;
                    }
                    // SAFETY: dup2 onto a target fd; high copies stay where they are.
                    if unsafe { libc::dup2(*fd, target) } < 0 {
                        return (out, "dup2 failed".to_owned());
                    }
                }
                // SAFETY: fds 3.. were placed above for this call and nothing owns them.
                let passed = unsafe { adopt_named(high.len(), &names) };
                let mut text = String::new();
                for i in 0..high.len() {
                    let fd = 3 + i as RawFd;
                    // SAFETY: F_GETFD only reads flags; -1 when the fd is closed.
                    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
                    text.push(match flags {
                        f if f < 0 => 'x',
                        f if f & libc::FD_CLOEXEC != 0 => 'c',
                        _ => 'o',
                    });
                }
                match &passed {
                    Ok(p) => text.push_str(&format!(
                        " l{} s{} c{} r{:?}",
                        p.listeners.len(),
                        p.states.len(),
                        p.conns.len(),
                        p.rejected
                    )),
                    Err(e) => text.push_str(&format!(" error {e}")),
                }
                std::mem::forget(passed);
                (out, text)
            })();
            // SAFETY: writing a buffer to the pipe, then leaving without unwinding.
            unsafe {
                libc::write(report.0, report.1.as_ptr().cast(), report.1.len());
                libc::_exit(0);
            }
        }
        for fd in high.into_iter().filter(|fd| *fd >= 0) {
            // SAFETY: the parent's copies, owned by nothing else.
            unsafe { libc::close(fd) };
        }
        // SAFETY: the write ends are ours; the read end becomes a File.
        unsafe {
            libc::close(pipe[1]);
            libc::close(report_fd);
        }
        // SAFETY: pipe[0] is open and owned by nothing else.
        let mut reader = unsafe { std::fs::File::from_raw_fd(pipe[0]) };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
        let mut status = 0;
        // SAFETY: waiting for the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        text
    }

    #[test]
    fn adopted_fds_are_close_on_exec_and_invalid_ones_are_closed() {
        use std::net::{Ipv4Addr, TcpStream};
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (served, _) = listener.accept().unwrap();
        let memfd = inheritable_memfd();
        assert!(!cloexec(memfd.as_raw_fd()));
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let report = adopt_in_child(
            &[
                listener.as_raw_fd(),
                memfd.as_raw_fd(),
                served.as_raw_fd(),
                udp.as_raw_fd(),
                listener.as_raw_fd(),
                client.as_raw_fd(),
                -1,
            ],
            &[
                "epmd",
                "state-3",
                "conn-ab-70",
                "epmd",
                "conn-ab-71",
                "state",
                "conn-ab-72",
            ],
        );
        // Kept and close-on-exec: listener, state memfd, connection. Closed: a UDP socket
        // passed as a listener, a listener passed as a connection, a connection passed as
        // a state; left alone: an fd that is not open (the last three are removed from
        // the store by name).
        assert_eq!(
            report, r#"cccxxxx l1 s1 c1 r["conn-ab-71", "state", "conn-ab-72"]"#,
            "{report}"
        );
    }
}
