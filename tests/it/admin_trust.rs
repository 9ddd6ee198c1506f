//! Who may do what on the admin socket (issue 15): a member of the admin group may read the
//! views but not hand the daemon over; no request may name a program to run; the socket file
//! is only replaced when it is a stale socket of ours; the client checks who owns the socket.
//!
//! The tests run as root (as CI does) and act as a less trusted user by forking a child that
//! drops to uid [`NOBODY_UID`] / gid [`ADMIN_GID`] before it connects.

use std::ffi::CString;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::c_epmd::{run, CmdOutput};
use crate::support::daemon::{Daemon, BIN};
use crate::support::ports::free_port;
use crate::support::tmp::TempDir;
use crate::support::wait::{poll_true, poll_until};

/// The uid the untrusted client runs as (not the daemon's, not root).
const NOBODY_UID: u32 = 65533;

/// The admin group of these tests (`nogroup` on Debian), given to the untrusted client.
const ADMIN_GID: u32 = 65534;

/// How long an admin exchange may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// True when the tests run as root (they need it to act as another user).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Starts a daemon with `--admin-socket <socket> --admin-group <ADMIN_GID>` and waits until
/// the admin socket accepts.
fn start_daemon(socket: &Path) -> Daemon {
    let daemon = Daemon::builder()
        .arg("--admin-socket")
        .arg(socket)
        .args(["--admin-group", &ADMIN_GID.to_string()])
        .start();
    assert!(
        poll_true(ADMIN_TIMEOUT, || UnixStream::connect(socket).is_ok()),
        "admin socket {} never accepted",
        socket.display()
    );
    daemon
}

/// Runs `epmd-rs admin --socket <socket> <args>` as uid [`NOBODY_UID`], gid [`ADMIN_GID`].
fn admin_as_nobody(socket: &Path, args: &[&str]) -> CmdOutput {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin").arg("--socket").arg(socket).args(args);
    cmd.uid(NOBODY_UID).gid(ADMIN_GID);
    run(&mut cmd, ADMIN_TIMEOUT)
}

/// Sends `line` on the admin socket from a forked child running as `uid`/`gid` (no
/// supplementary groups) and returns the daemon's whole answer.
///
/// The child only makes raw system calls (async-signal-safe, as a child of a threaded
/// process must): everything it needs is prepared before the fork.
pub(crate) fn request_as(uid: u32, gid: u32, socket: &Path, line: &str) -> String {
    let path = CString::new(socket.as_os_str().as_encoded_bytes()).expect("no NUL in path");
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_bytes_with_nul();
    assert!(bytes.len() <= addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let request = format!("{line}\n").into_bytes();
    let mut pipe = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    assert_eq!(
        unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) },
        0
    );
    // SAFETY: the child only calls async-signal-safe functions and ends with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: raw system calls on memory prepared before the fork; _exit never returns.
        unsafe {
            libc::close(pipe[0]);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(2);
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
            if fd < 0 || libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), len) != 0 {
                libc::_exit(3);
            }
            if libc::write(fd, request.as_ptr().cast(), request.len()) != request.len() as isize {
                libc::_exit(4);
            }
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(pipe[1], buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: the write end belongs to the child now; the read end is ours alone.
    unsafe { libc::close(pipe[1]) };
    // SAFETY: pipe[0] is an open fd owned by nothing else.
    let mut reader = unsafe { <fs::File as std::os::fd::FromRawFd>::from_raw_fd(pipe[0]) };
    let mut answer = Vec::new();
    // The daemon answers and closes, so the child exits and the pipe ends; a hung daemon
    // would keep it open, which the test's own timeout catches.
    let _ = reader.read_to_end(&mut answer);
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child as uid {uid} could not talk to the daemon (status {status:#x})"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

/// H1: a member of the admin group (not root, not the daemon's user) cannot make the daemon
/// run anything: `upgrade <path>` is refused for naming a program (the program never
/// runs), plain `upgrade` is refused for the user, both are logged, the same daemon keeps
/// serving, and the read-only views still work for that user. Root may not name a program
/// either.
#[test]
fn upgrade_is_refused_to_the_admin_group_and_never_runs_a_named_program() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let dir = TempDir::short("trust").with_mode(0o755);
    let socket = dir.join("admin.sock");
    let marker = dir.join("ran");
    let script = dir.join("evil.sh");
    fs::write(
        &script,
        format!("#!/bin/sh\ntouch {}\nexit 3\n", marker.display()),
    )
    .expect("write the script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod +x");
    let mut daemon = start_daemon(&socket);
    let pid = daemon.pid();

    // The raw request that used to run the script as the daemon's user.
    let line = format!("upgrade {}", script.display());
    let answer = request_as(NOBODY_UID, ADMIN_GID, &socket, &line);
    let v: Value = serde_json::from_str(answer.trim())
        .unwrap_or_else(|e| panic!("answer {answer:?} to {line:?}: {e}"));
    assert_eq!(v["ok"], Value::Bool(false), "{v}");
    assert!(!marker.exists(), "the named program ran: {v}");

    // Plain `upgrade` through the CLI: refused, exit 1, the reason printed.
    let out = admin_as_nobody(&socket, &["upgrade", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr_text());
    let v: Value = serde_json::from_str(out.stdout_text().trim())
        .unwrap_or_else(|e| panic!("upgrade --json printed {:?}: {e}", out.stdout_text()));
    assert_eq!(v["ok"], Value::Bool(false), "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("only")),
        "{v}"
    );

    // Root may not name a program either.
    let answer = request_as(0, 0, &socket, &line);
    let v: Value = serde_json::from_str(answer.trim()).expect("JSON answer");
    assert_eq!(v["ok"], Value::Bool(false), "{v}");
    assert!(!marker.exists(), "the named program ran for root: {v}");

    // The same process serves; the views stay open to the admin group.
    assert!(daemon.is_running(), "{}", daemon.stderr_text());
    let out = admin_as_nobody(&socket, &["--json", "stats"]);
    assert!(out.status.success(), "{}", out.stderr_text());
    let stats: Value = serde_json::from_str(out.stdout_text().trim()).expect("stats JSON");
    assert_eq!(stats["handovers"].as_u64(), Some(0), "{stats}");
    assert_eq!(daemon.pid(), pid);
    let log = daemon.stderr_text();
    assert!(
        log.matches(&format!("refusing admin upgrade from uid {NOBODY_UID}"))
            .count()
            >= 2,
        "the refusals were not logged:\n{log}"
    );
}

/// A child process killed (SIGKILL, by PID) and reaped on drop.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the daemon as uid [`NOBODY_UID`] with its admin socket at `socket`, and waits
/// until it accepts there.
fn daemon_as_nobody(socket: &Path) -> Guard {
    let port = free_port().to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["-port", &port, "-address", "127.0.0.1", "--admin-socket"])
        .arg(socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .uid(NOBODY_UID)
        .gid(ADMIN_GID);
    let guard = Guard(cmd.spawn().expect("spawn the daemon as nobody"));
    assert!(
        poll_true(ADMIN_TIMEOUT, || UnixStream::connect(socket).is_ok()),
        "the daemon as uid {NOBODY_UID} never served {}",
        socket.display()
    );
    guard
}

/// L7, daemon side: a socket file at the admin path that belongs to another user is never
/// removed, even when nobody answers on it: the daemon refuses to start and says why.
/// A symlink to a stale socket is not followed either.
#[test]
fn a_stale_socket_of_another_user_is_never_replaced() {
    if !is_root() {
        eprintln!("skipped: needs root to own a file as another user");
        return;
    }
    let dir = TempDir::short("trust").with_mode(0o755);
    let socket = dir.join("admin.sock");
    drop(UnixListener::bind(&socket).expect("bind a soon-stale socket"));
    std::os::unix::fs::lchown(&socket, Some(NOBODY_UID), None).expect("lchown");
    let mut daemon = Daemon::builder().arg("--admin-socket").arg(&socket).spawn();
    let status = daemon.wait_exit(ADMIN_TIMEOUT);
    let stderr = daemon.stderr_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the daemon took over another user's socket: {status:?}\n{stderr}"
    );
    assert!(stderr.contains("not ours"), "{stderr}");
    let meta = fs::symlink_metadata(&socket).expect("the socket file is still there");
    assert_eq!(meta.uid(), NOBODY_UID);

    // A symlink to a stale socket of ours: refused as not a socket, the target untouched.
    let target = dir.join("target.sock");
    drop(UnixListener::bind(&target).expect("bind the target"));
    let link = dir.join("link.sock");
    symlink(&target, &link).expect("symlink");
    let mut daemon = Daemon::builder().arg("--admin-socket").arg(&link).spawn();
    let status = daemon.wait_exit(ADMIN_TIMEOUT);
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "{}",
        daemon.stderr_text()
    );
    assert!(fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()));
    assert!(target.exists(), "the symlink's target was removed");
}

/// L7, client side: `epmd-rs admin` refuses a socket served by another user (not root,
/// not the client's user) from a directory everyone can write, where anyone could have
/// planted it; it trusts the same daemon when the socket is in that user's own directory
/// (a service's private runtime directory), and its own user always trusts it.
#[test]
fn the_client_refuses_a_socket_another_user_may_have_planted() {
    if !is_root() {
        eprintln!("skipped: needs root to act as another user");
        return;
    }
    let shared = TempDir::short("trust").with_mode(0o755);
    fs::set_permissions(shared.path(), fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let socket = shared.join("admin.sock");
    let _planted = daemon_as_nobody(&socket);
    let out = run(
        Command::new(BIN)
            .arg("admin")
            .arg("--socket")
            .arg(&socket)
            .arg("nodes"),
        ADMIN_TIMEOUT,
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the client trusted a socket served by uid {NOBODY_UID} in a shared directory: {}",
        out.stdout_text()
    );
    assert!(
        out.stderr_text().contains("not trusting"),
        "{}",
        out.stderr_text()
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout_text());
    // Its own user trusts it.
    let own = admin_as_nobody(&socket, &["--json", "nodes"]);
    assert!(own.status.success(), "{}", own.stderr_text());

    // The same user's daemon in a directory of its own that nobody else can write.
    let private = TempDir::short("trust").with_mode(0o755);
    std::os::unix::fs::chown(private.path(), Some(NOBODY_UID), Some(ADMIN_GID)).expect("chown");
    let socket = private.join("admin.sock");
    let _service = daemon_as_nobody(&socket);
    let out = run(
        Command::new(BIN)
            .arg("admin")
            .arg("--socket")
            .arg(&socket)
            .args(["--json", "nodes"]),
        ADMIN_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out.stderr_text());
    assert_eq!(out.stdout_text().trim(), "[]");
}

/// L8: an admin client that connects and never sends its request is closed after the
/// admin deadline (5 s), and counted.
#[test]
fn an_idle_admin_client_is_closed_at_its_deadline() {
    let dir = TempDir::short("trust").with_mode(0o755);
    let socket = dir.join("admin.sock");
    let _daemon = start_daemon(&socket);
    let mut idle = UnixStream::connect(&socket).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("read timeout");
    let t0 = Instant::now();
    let mut buf = [0u8; 16];
    let got = idle.read(&mut buf);
    let took = t0.elapsed();
    assert!(
        matches!(got, Ok(0)),
        "an idle admin client was not closed within 30 s: {got:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(15),
        "closed after {took:?}, expected about 5 s"
    );
    let stats = admin_stats(&socket);
    assert_eq!(stats["admin_timeouts"].as_u64(), Some(1), "{stats}");
}

/// L8: at most 16 admin clients are open at once: the 17th is closed without an answer
/// (and counted); once one of the 16 goes, a new client is served again. Epmd clients are
/// not affected.
#[test]
fn admin_connections_are_capped() {
    let dir = TempDir::short("trust").with_mode(0o755);
    let socket = dir.join("admin.sock");
    let daemon = start_daemon(&socket);
    let mut open: Vec<UnixStream> = (0..16)
        .map(|_| UnixStream::connect(&socket).expect("connect"))
        .collect();
    // The daemon has accepted them all once one more request on a 17th gets its EOF.
    let mut extra = UnixStream::connect(&socket).expect("connect the 17th");
    extra
        .set_read_timeout(Some(ADMIN_TIMEOUT))
        .expect("read timeout");
    let _ = extra.write_all(b"stats\n");
    let mut answer = Vec::new();
    let _ = extra.read_to_end(&mut answer);
    assert!(
        answer.is_empty(),
        "the 17th admin client was served: {}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        TcpStream::connect(("127.0.0.1", daemon.port())).is_ok(),
        "epmd clients are refused too"
    );
    // One goes: the next client is served, and the refusal was counted.
    drop(open.pop());
    let stats = poll_until(ADMIN_TIMEOUT, || {
        let mut s = UnixStream::connect(&socket).ok()?;
        s.write_all(b"stats\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        serde_json::from_str::<Value>(&text).ok()
    })
    .expect("no admin client served after one of the 16 left");
    assert!(stats["admin_capped"].as_u64() >= Some(1), "{stats}");
}

/// `admin --json stats` as root.
fn admin_stats(socket: &Path) -> Value {
    let out = run(
        Command::new(BIN)
            .arg("admin")
            .arg("--socket")
            .arg(socket)
            .args(["--json", "stats"]),
        ADMIN_TIMEOUT,
    );
    assert!(out.status.success(), "{}", out.stderr_text());
    serde_json::from_str(out.stdout_text().trim()).expect("stats JSON")
}
