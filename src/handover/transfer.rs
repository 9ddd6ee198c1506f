//! Both ends of a live hand-over: [`hand_over`] in the running daemon, [`receive`] in its
//! successor. See the module docs of [`crate::handover`] for the protocol.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::fdpass::{recv_fds, send_fds};
use super::state::{State, StateError};
use crate::server::{Server, ServerConfig};

/// The environment variable that tells a new process which fd is its hand-over socket.
pub const HANDOVER_FD_ENV: &str = "EPMD_RS_HANDOVER_FD";
/// The first line the old process sends.
pub const MAGIC: &[u8] = b"EPMDRS-HANDOVER 1\n";
/// How long each side waits for the other.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Hands the daemon over to `binary` started with `args`; returns the successor's pid.
/// On error the successor (if any) is killed and reaped, and `server` is untouched.
///
/// `EPMD_RS_STATE_VERSION`, when set, overrides the version written (a test hook for the
/// "unknown version is refused" path).
pub fn hand_over(server: &Server, binary: &Path, args: &[OsString]) -> Result<u32, HandoverError> {
    let (mut state, fds) = server.snapshot();
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
        .stdin(Stdio::null());
    // SAFETY: the closure only calls fcntl, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(HandoverError::Spawn)?;
    drop(theirs);
    match talk(&ours, &state, &fds) {
        Ok(()) => Ok(child.id()),
        Err(e) => {
            reap(&mut child);
            Err(e)
        }
    }
}

fn talk(sock: &UnixStream, state: &State, fds: &[RawFd]) -> Result<(), HandoverError> {
    sock.set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|_| sock.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| HandoverError::Io("setting timeouts", e))?;
    let doc = state.encode();
    let mut w = sock;
    w.write_all(MAGIC)
        .and_then(|_| w.write_all(&(doc.len() as u32).to_be_bytes()))
        .and_then(|_| w.write_all(&doc))
        .map_err(|e| HandoverError::Io("sending the state", e))?;
    send_fds(sock, fds).map_err(|e| HandoverError::Io("sending the sockets", e))?;
    let mut line = String::new();
    BufReader::new(sock)
        .read_line(&mut line)
        .map_err(|e| HandoverError::Io("waiting for the new process", e))?;
    if line.is_empty() {
        return Err(HandoverError::Io(
            "waiting for the new process",
            io::ErrorKind::UnexpectedEof.into(),
        ));
    }
    let line = line.trim_end();
    if let Some(why) = line.strip_prefix("REFUSED ") {
        return Err(HandoverError::Refused(why.to_owned()));
    }
    if line != "READY" {
        return Err(HandoverError::Protocol(line.to_owned()));
    }
    w.write_all(b"GO\n")
        .map_err(|e| HandoverError::Io("telling the new process to go", e))
}

fn reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
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

/// In the successor: reads the state and fds from `fd`, rebuilds the server, and completes
/// the exchange. On a refused state the old process is told why.
///
/// # Safety
/// `fd` must be the inherited hand-over socket, owned by nothing else in this process.
///
/// `on_ready` runs once the server is rebuilt and before `READY` is sent (the pid file is
/// written there, so it is right by the time the old process reports success).
pub unsafe fn receive(
    fd: RawFd,
    config: ServerConfig,
    on_ready: impl FnOnce() -> io::Result<()>,
) -> Result<Server, ReceiveError> {
    // SAFETY: the caller guarantees the fd is ours alone.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    // Do not leak the socket into anything this process starts later.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    sock.set_read_timeout(Some(STEP_TIMEOUT))
        .map_err(|e| ReceiveError::Io("setting timeouts", e))?;
    let io = |what| move |e| ReceiveError::Io(what, e);
    let mut r = &sock;
    let mut magic = vec![0u8; MAGIC.len()];
    r.read_exact(&mut magic)
        .map_err(io("reading the greeting"))?;
    if magic != MAGIC {
        return Err(ReceiveError::NotAHandover);
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .map_err(io("reading the state length"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_STATE {
        return refuse(&sock, ReceiveError::NotAHandover);
    }
    let mut doc = vec![0u8; len];
    r.read_exact(&mut doc).map_err(io("reading the state"))?;
    let state = match State::decode(&doc) {
        Ok(s) => s,
        Err(e) => return refuse(&sock, ReceiveError::State(e)),
    };
    let names = state.fd_names();
    let fds = recv_fds(&sock, names.len()).map_err(io("receiving the sockets"))?;
    let by_name: HashMap<String, _> = names.into_iter().zip(fds).collect();
    let server = match Server::from_state(state, by_name, config, true) {
        Ok(s) => s,
        Err(e) => return refuse(&sock, ReceiveError::State(e)),
    };
    if let Err(e) = on_ready() {
        return refuse(&sock, ReceiveError::Io("preparing to serve", e));
    }
    let mut w = &sock;
    w.write_all(b"READY\n").map_err(io("answering READY"))?;
    let mut line = String::new();
    BufReader::new(&sock)
        .read_line(&mut line)
        .map_err(io("waiting for GO"))?;
    if line != "GO\n" {
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
