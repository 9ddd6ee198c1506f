//! Both ends of a live hand-over: [`hand_over`] in the running daemon, [`receive`] in its
//! successor. See the module docs of [`crate::handover`] for the protocol.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fdpass::{recv_fds, send_fds};
use super::state::{State, StateError};

/// The environment variable that tells a new process which fd is its hand-over socket.
pub const HANDOVER_FD_ENV: &str = "EPMD_RS_HANDOVER_FD";
/// Set to `systemd` for a successor whose listening sockets came from the service manager
/// (the `LISTEN_*` variables are not passed on), for `admin config`.
pub const LISTEN_SOURCE_ENV: &str = "EPMD_RS_LISTEN_SOURCE";
/// The first line the old process sends.
pub const MAGIC: &[u8] = b"EPMDRS-HANDOVER 1\n";
/// How long the whole exchange may take on either side, however slowly the other side
/// reads or writes (the old daemon does not serve meanwhile).
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest answer line (`READY`, `REFUSED <reason>`, `GO`) accepted.
pub const MAX_LINE: usize = 4096;
/// The largest state document accepted.
pub const MAX_STATE: usize = 256 << 20;

/// Why a hand-over did not happen. The old process keeps serving in every case.
#[derive(Debug)]
pub enum HandoverError {
    /// The new binary could not be started.
    Spawn(io::Error),
    /// Talking to the new process failed (it died, or closed the socket).
    Io(&'static str, io::Error),
    /// The new process refused the state.
    Refused(String),
    /// The new process answered something else.
    Protocol(String),
}

impl fmt::Display for HandoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoverError::Spawn(e) => write!(f, "cannot start the new binary: {e}"),
            HandoverError::Io(what, e) => write!(f, "hand-over failed while {what}: {e}"),
            HandoverError::Refused(why) => write!(f, "the new process refused the state: {why}"),
            HandoverError::Protocol(got) => {
                write!(f, "unexpected answer from the new process: {got:?}")
            }
        }
    }
}

impl std::error::Error for HandoverError {}

/// Hands the daemon over to `binary` started with `args`: `snapshot` is the daemon's
/// state and the fds to pass in the order of [`State::fd_names`]; `from_systemd` says
/// that the listening sockets came from the service manager (the successor reports them
/// so). Returns the successor's pid. On error the successor (if any) is killed, and the
/// daemon is untouched.
///
/// The successor is detached from this process (a double fork: an intermediate process
/// forks it and exits, and is reaped here; the successor writes its own pid to the
/// hand-over socket before it executes the binary) before
/// anything is exchanged, so that it is the child of the service manager (systemd, or
/// whichever process reaps orphans) and not of the process about to exit: systemd then
/// supervises it fully once `MAINPID=` names it. The whole exchange takes at most
/// [`HANDOVER_TIMEOUT`], however slowly the successor answers.
///
/// `watchdog_usec` is this process's watchdog timeout (`systemd::watchdog_usec`): the
/// successor gets it as `WATCHDOG_USEC` without `WATCHDOG_PID`, so that it pings systemd's
/// watchdog once it serves.
///
/// `EPMD_RS_STATE_VERSION`, when set, overrides the version written (a test hook for the
/// "unknown version is refused" path).
pub fn hand_over(
    snapshot: (State, Vec<RawFd>),
    from_systemd: bool,
    binary: &Path,
    args: &[OsString],
    watchdog_usec: Option<u64>,
) -> Result<u32, HandoverError> {
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    let (mut state, fds) = snapshot;
    if let Some(v) = std::env::var("EPMD_RS_STATE_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        state.version = v;
    }
    let (ours, theirs) = UnixStream::pair().map_err(HandoverError::Spawn)?;
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(binary);
    cmd.args(args)
        .env(HANDOVER_FD_ENV, child_fd.to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES")
        // The watchdog is the successor's once it serves: WATCHDOG_PID (our pid) would
        // make it ignore WATCHDOG_USEC.
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    if from_systemd {
        cmd.env(LISTEN_SOURCE_ENV, "systemd");
    } else {
        cmd.env_remove(LISTEN_SOURCE_ENV);
    }
    match watchdog_usec {
        Some(usec) => cmd.env("WATCHDOG_USEC", usec.to_string()),
        None => cmd.env_remove("WATCHDOG_USEC"),
    };
    // SAFETY: the closure only calls fcntl, fork, getpid, write and _exit, which are
    // async-signal-safe; the intermediate process never returns from it.
    unsafe {
        cmd.pre_exec(move || detach_successor(child_fd));
    }
    // Returns once the successor has executed the binary (or failed to).
    let mut intermediate = cmd.spawn().map_err(HandoverError::Spawn)?;
    drop(theirs);
    // Reaping the intermediate process completes the successor's reparenting.
    let status = intermediate
        .wait()
        .map_err(|e| HandoverError::Io("waiting for the intermediate process", e))?;
    if !status.success() {
        return Err(HandoverError::Spawn(io::Error::other(format!(
            "the intermediate process failed ({status})"
        ))));
    }
    let mut pid = [0u8; 4];
    read_exact_by(&ours, &mut pid, deadline)
        .map_err(|e| HandoverError::Io("reading the new process's pid", e))?;
    // The successor waits for our greeting, so it is alive while its pidfd is opened.
    let successor = Successor::open(u32::from_be_bytes(pid));
    let doc = state.encode();
    match talk(&ours, &doc, &fds, deadline) {
        Ok(()) => Ok(successor.pid),
        Err(e) => {
            successor.kill();
            Err(e)
        }
    }
}

/// In the forked child, before `exec`: keeps the hand-over socket open across `exec`, then
/// forks again and exits. The grandchild writes its own pid to the hand-over socket and
/// returns (and executes the binary): its pid is on the socket before anything the binary
/// writes, whatever order the two processes run in.
fn detach_successor(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl, fork, getpid, write and _exit on values owned by this process.
    unsafe {
        if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
            return Err(io::Error::last_os_error());
        }
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                let bytes = (libc::getpid() as u32).to_be_bytes();
                if libc::write(fd, bytes.as_ptr().cast(), bytes.len()) == bytes.len() as isize {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            _ => libc::_exit(0),
        }
    }
}

/// The successor process, not our child: held by a pidfd so that a failed hand-over never
/// signals a recycled pid.
struct Successor {
    pid: u32,
    handle: Handle,
}

/// How the successor is signalled.
enum Handle {
    /// Its pidfd.
    PidFd(OwnedFd),
    /// By pid: the kernel has no pidfds (the successor waits for our greeting, so the pid
    /// is still its own).
    Pid,
    /// It has exited already: nothing to signal.
    Gone,
}

impl Successor {
    fn open(pid: u32) -> Successor {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let handle = if fd >= 0 {
            // SAFETY: the kernel just returned this fd; nothing else owns it.
            Handle::PidFd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
        } else if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            Handle::Pid
        } else {
            Handle::Gone
        };
        Successor { pid, handle }
    }

    /// SIGKILLs the successor. It is reaped by its parent (the service manager or init).
    fn kill(&self) {
        // SAFETY: pidfd_send_signal and kill only send a signal.
        unsafe {
            match &self.handle {
                Handle::PidFd(fd) => {
                    libc::syscall(
                        libc::SYS_pidfd_send_signal,
                        fd.as_raw_fd(),
                        libc::SIGKILL,
                        std::ptr::null::<libc::siginfo_t>(),
                        0,
                    );
                }
                Handle::Pid => {
                    libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
                }
                Handle::Gone => {}
            }
        }
    }
}

/// The old side of the exchange on `sock`: the greeting, the state `doc` and `fds` out,
/// the successor's answer in; all of it by `deadline`.
fn talk(
    sock: &UnixStream,
    doc: &[u8],
    fds: &[RawFd],
    deadline: Instant,
) -> Result<(), HandoverError> {
    let sending = |e| HandoverError::Io("sending the state", e);
    write_all_by(sock, MAGIC, deadline).map_err(sending)?;
    write_all_by(sock, &(doc.len() as u32).to_be_bytes(), deadline).map_err(sending)?;
    write_all_by(sock, doc, deadline).map_err(sending)?;
    set_timeouts(sock, deadline).map_err(|e| HandoverError::Io("sending the sockets", e))?;
    send_fds(sock, fds).map_err(|e| HandoverError::Io("sending the sockets", e))?;
    let line = read_line_by(sock, deadline)
        .map_err(|e| HandoverError::Io("waiting for the new process", e))?;
    if let Some(why) = line.strip_prefix("REFUSED ") {
        return Err(HandoverError::Refused(why.to_owned()));
    }
    if line != "READY" {
        return Err(HandoverError::Protocol(line));
    }
    write_all_by(sock, b"GO\n", deadline)
        .map_err(|e| HandoverError::Io("telling the new process to go", e))
}

/// The time left until `deadline`, or a `TimedOut` error once it has passed.
fn remaining(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the hand-over took longer than {HANDOVER_TIMEOUT:?}"),
        )),
    }
}

/// Sets both socket timeouts to the time left until `deadline`.
fn set_timeouts(sock: &UnixStream, deadline: Instant) -> io::Result<()> {
    let left = remaining(deadline)?;
    sock.set_read_timeout(Some(left))?;
    sock.set_write_timeout(Some(left))
}

/// `write_all`, finished by `deadline` however slowly the peer reads.
fn write_all_by(sock: &UnixStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    let mut w = sock;
    while !buf.is_empty() {
        set_timeouts(sock, deadline)?;
        match w.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timed_out(e)),
        }
    }
    Ok(())
}

/// `read_exact`, finished by `deadline` however slowly the peer writes.
fn read_exact_by(sock: &UnixStream, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut r = sock;
    while !buf.is_empty() {
        set_timeouts(sock, deadline)?;
        match r.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timed_out(e)),
        }
    }
    Ok(())
}

/// One line (without its `\n`) of at most [`MAX_LINE`] bytes, read by `deadline`. Reads
/// byte by byte, so that nothing after the line is consumed (the fds that may follow).
fn read_line_by(sock: &UnixStream, deadline: Instant) -> io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        read_exact_by(sock, &mut byte, deadline)?;
        if byte[0] == b'\n' {
            return String::from_utf8(line).map_err(|_| {
                io::Error::new(io::ErrorKind::InvalidData, "a line that is not UTF-8")
            });
        }
        if line.len() == MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes"),
            ));
        }
        line.push(byte[0]);
    }
}

/// Socket timeouts show as `WouldBlock`: report them as `TimedOut`.
fn timed_out(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the other process did not answer in time",
        )
    } else {
        e
    }
}

/// Why a successor could not take over.
#[derive(Debug)]
pub enum ReceiveError {
    /// Reading from the old process failed.
    Io(&'static str, io::Error),
    /// The stream is not a hand-over.
    NotAHandover,
    /// The state was refused.
    State(StateError),
    /// The old process did not say `GO`.
    NoGo(String),
}

impl fmt::Display for ReceiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveError::Io(what, e) => write!(f, "hand-over failed while {what}: {e}"),
            ReceiveError::NotAHandover => {
                f.write_str("the hand-over socket does not speak the protocol")
            }
            ReceiveError::State(e) => write!(f, "{e}"),
            ReceiveError::NoGo(got) => write!(f, "the old process did not confirm ({got:?})"),
        }
    }
}

impl std::error::Error for ReceiveError {}

/// In the successor: reads the state and fds from `fd`, rebuilds the daemon with `rebuild`
/// (its fds by name), and completes the exchange. On a refused state the old process is
/// told why.
///
/// # Safety
/// `fd` must be the inherited hand-over socket, owned by nothing else in this process.
///
/// `on_ready` runs once the server is rebuilt and before `READY` is sent (the pid file is
/// written there, so it is right by the time the old process reports success).
pub unsafe fn receive<T>(
    fd: RawFd,
    rebuild: impl FnOnce(State, HashMap<String, OwnedFd>) -> Result<T, StateError>,
    on_ready: impl FnOnce() -> io::Result<()>,
) -> Result<T, ReceiveError> {
    // SAFETY: the caller guarantees the fd is ours alone.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    // Do not leak the socket into anything this process starts later.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    let deadline = Instant::now() + HANDOVER_TIMEOUT;
    let io = |what| move |e| ReceiveError::Io(what, e);
    let mut magic = vec![0u8; MAGIC.len()];
    read_exact_by(&sock, &mut magic, deadline).map_err(io("reading the greeting"))?;
    if magic != MAGIC {
        return Err(ReceiveError::NotAHandover);
    }
    let mut len = [0u8; 4];
    read_exact_by(&sock, &mut len, deadline).map_err(io("reading the state length"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_STATE {
        return refuse(&sock, ReceiveError::NotAHandover);
    }
    let mut doc = vec![0u8; len];
    read_exact_by(&sock, &mut doc, deadline).map_err(io("reading the state"))?;
    let state = match State::decode(&doc) {
        Ok(s) => s,
        Err(e) => return refuse(&sock, ReceiveError::State(e)),
    };
    let names = state.fd_names();
    set_timeouts(&sock, deadline).map_err(io("receiving the sockets"))?;
    let fds = recv_fds(&sock, names.len()).map_err(io("receiving the sockets"))?;
    let by_name: HashMap<String, _> = names.into_iter().zip(fds).collect();
    let server = match rebuild(state, by_name) {
        Ok(s) => s,
        Err(e) => return refuse(&sock, ReceiveError::State(e)),
    };
    if let Err(e) = on_ready() {
        return refuse(&sock, ReceiveError::Io("preparing to serve", e));
    }
    write_all_by(&sock, b"READY\n", deadline).map_err(io("answering READY"))?;
    let line = read_line_by(&sock, deadline).map_err(io("waiting for GO"))?;
    if line != "GO" {
        return Err(ReceiveError::NoGo(line));
    }
    Ok(server)
}

fn refuse<T>(sock: &UnixStream, err: ReceiveError) -> Result<T, ReceiveError> {
    let reason = err.to_string().replace('\n', " ");
    let mut w = sock;
    let _ = w.write_all(format!("REFUSED {reason}\n").as_bytes());
    Err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::thread;

    /// The successor's end: reads the greeting and the `doc_len`-byte state, then runs
    /// `answer` on the socket.
    fn successor(
        doc_len: usize,
        answer: impl FnOnce(&UnixStream) + Send + 'static,
    ) -> (UnixStream, thread::JoinHandle<()>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let handle = thread::spawn(move || {
            let mut got = vec![0u8; MAGIC.len() + 4 + doc_len];
            (&theirs).read_exact(&mut got).unwrap();
            assert_eq!(&got[..MAGIC.len()], MAGIC);
            answer(&theirs);
        });
        (ours, handle)
    }

    #[test]
    fn ready_is_answered_with_go() {
        let (sock, peer) = successor(3, |s| {
            let mut w = s;
            w.write_all(b"READY\n").unwrap();
            let mut go = [0u8; 3];
            (&*s).read_exact(&mut go).unwrap();
            assert_eq!(&go, b"GO\n");
        });
        talk(&sock, b"{}\n", &[], Instant::now() + Duration::from_secs(5)).unwrap();
        peer.join().unwrap();
    }

    #[test]
    fn a_refusal_is_reported_with_its_reason() {
        let (sock, peer) = successor(2, |s| {
            let mut w = s;
            w.write_all(b"REFUSED version 99\n").unwrap();
        });
        let e = talk(&sock, b"{}", &[], Instant::now() + Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(&e, HandoverError::Refused(why) if why == "version 99"),
            "{e}"
        );
        peer.join().unwrap();
    }

    /// A successor that sends one byte every 50 ms and never a newline: the exchange ends
    /// at the deadline, not when the successor stops (L8 of issue 15).
    #[test]
    fn a_trickling_successor_cannot_hold_the_loop_past_the_deadline() {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let (sock, peer) = successor(2, move |s| {
            let mut w = s;
            for _ in 0..200 {
                if w.write_all(b"R").is_err() || stop_rx.try_recv().is_ok() {
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let t0 = Instant::now();
        let e = talk(&sock, b"{}", &[], t0 + Duration::from_millis(500)).unwrap_err();
        let took = t0.elapsed();
        let _ = stop_tx.send(());
        drop(sock);
        peer.join().unwrap();
        assert!(
            matches!(&e, HandoverError::Io(_, io) if io.kind() == io::ErrorKind::TimedOut),
            "{e}"
        );
        assert!(took < Duration::from_secs(2), "gave up after {took:?}");
    }

    /// A successor that sends a line longer than [`MAX_LINE`] (and keeps the socket open):
    /// refused at once, without reading it all.
    #[test]
    fn an_overlong_answer_line_is_refused_at_once() {
        let (sock, peer) = successor(2, |s| {
            let mut w = s;
            let _ = w.write_all(&vec![b'A'; MAX_LINE + 1]);
            // Hold the socket open well past the check below.
            let mut rest = Vec::new();
            let _ = (&*s).read_to_end(&mut rest);
        });
        let t0 = Instant::now();
        let e = talk(&sock, b"{}", &[], t0 + Duration::from_secs(5)).unwrap_err();
        let took = t0.elapsed();
        drop(sock);
        peer.join().unwrap();
        assert!(
            matches!(&e, HandoverError::Io(_, io) if io.kind() == io::ErrorKind::InvalidData),
            "{e}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }

    #[test]
    fn read_line_by_stops_at_the_newline() {
        let (a, b) = UnixStream::pair().unwrap();
        (&b).write_all(b"GO\nafter").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(read_line_by(&a, deadline).unwrap(), "GO");
        let mut rest = [0u8; 5];
        read_exact_by(&a, &mut rest, deadline).unwrap();
        assert_eq!(&rest, b"after");
    }
}
