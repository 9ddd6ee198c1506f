//! `-daemon` (issue 4): the command returns only once the detached daemon accepts, the
//! daemon outlives the process we started, the `--pid-file` names it, a second `-daemon`
//! on the same port exits 0 and leaves the first alone, logs reach `--log-file` and SIGHUP
//! reopens it, and SIGTERM removes the pid file.
//!
//! Every detached daemon is killed by the PID its pid file names (and, as a backstop, by
//! the PID of whatever process running our binary listens on its port).

use std::fs;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon::{DetachedDaemon, BIN};
use crate::support::erl::unique_name;
use crate::support::ports::free_port;
use crate::support::procnet::{listen_addrs_of, runs_executable};
use crate::support::raw::{self, hex, names_req, parse_names, Conn, IO_TIMEOUT};
use crate::support::tmp;
use crate::support::wait::{poll_true, poll_until};
use crate::sysd_support::{clean_env, cmdline, is_alive, signal, TempDir};

/// How long the `-daemon` command may take to return.
const RETURN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many free ports to try when a port turns out to be taken before the daemon binds it.
const ATTEMPTS: usize = 5;

/// A daemon that detached itself, known by its pid file. Dropping it kills it by PID.
#[derive(Debug)]
struct Detached {
    /// The port it serves.
    port: u16,
    /// The PID its pid file named when it started.
    pid: u32,
    /// Its `--pid-file`.
    pid_file: PathBuf,
    /// The PID of the `-daemon` command we spawned (exited by now).
    parent_pid: u32,
    /// The connection made right after the command returned.
    first_conn: Option<TcpStream>,
    /// Kills, by PID, any process running our binary that still listens on the port.
    backstop: DetachedDaemon,
}

impl Detached {
    /// Sends `sig` to the daemon.
    fn signal(&self, sig: libc::c_int) {
        signal(self.pid, sig);
    }

    /// SIGTERM, then waits up to 5 s until the process is gone; panics otherwise.
    fn terminate(&self) {
        self.signal(libc::SIGTERM);
        assert!(
            poll_true(Duration::from_secs(5), || !is_alive(self.pid)),
            "detached daemon {} survived SIGTERM",
            self.pid
        );
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        // Checked just before the signal, so that a reused PID is never hit.
        if is_alive(self.pid) && runs_executable(self.pid, BIN) {
            signal(self.pid, libc::SIGKILL);
        }
    }
}

/// `epmd-rs -daemon -port P -address 127.0.0.1 --admin-socket none --pid-file F <extra>`,
/// spawned in `cwd` (or ours) with its output captured; returns, once it exited (bounded
/// wait), its status, its PID and how long it ran.
fn run_daemon_command(
    port: u16,
    pid_file: &Path,
    extra: &[&str],
    cwd: Option<&Path>,
) -> (ExitStatus, u32, Duration) {
    let out_path = tmp::unique_path("daemon-cmd.out");
    let out = tmp::create_log(&out_path);
    let err = out.try_clone().expect("clone log handle");
    let mut cmd = Command::new(BIN);
    clean_env(&mut cmd)
        .args([
            "-daemon",
            "-port",
            &port.to_string(),
            "-address",
            "127.0.0.1",
        ])
        .args(["--admin-socket", "none", "--pid-file"])
        .arg(pid_file)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = poll_until(RETURN_TIMEOUT, || child.try_wait().ok().flatten());
    let elapsed = started.elapsed();
    let output = tmp::read_lossy(&out_path);
    let _ = fs::remove_file(&out_path);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} did not return within {RETURN_TIMEOUT:?}\noutput: {output}");
    };
    (status, child.id(), elapsed)
}

/// Starts a `-daemon` on a free port with the pid file in `dir`. Right after the command
/// returns (status 0), one connect to the port must succeed: no retry.
fn start_detached(dir: &TempDir, extra: &[&str]) -> Detached {
    for attempt in 0..ATTEMPTS {
        let port = free_port();
        let backstop = DetachedDaemon::on_port(port);
        let pid_file = dir.join(format!("epmd-{attempt}.pid"));
        let (status, parent_pid, _) = run_daemon_command(port, &pid_file, extra, None);
        assert!(status.success(), "-daemon on free port {port}: {status}");
        if !pid_file.exists() {
            // Exit 0 without a daemon: the port was taken after free_port() (the EADDRINUSE
            // rule); nothing of ours was started. Try another port.
            continue;
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let first_conn = match TcpStream::connect(addr) {
            Ok(c) => c,
            Err(e) => panic!("-daemon returned but {addr} does not accept: {e}"),
        };
        let text = fs::read_to_string(&pid_file).expect("read pid file");
        let pid: u32 = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("pid file {}: {text:?}", pid_file.display()));
        return Detached {
            port,
            pid,
            pid_file,
            parent_pid,
            first_conn: Some(first_conn),
            backstop,
        };
    }
    panic!("-daemon found its port taken on {ATTEMPTS} free ports in a row");
}

#[test]
fn daemon_returns_once_serving_outlives_its_parent_and_its_pid_file_is_right() {
    let dir = TempDir::new("daemon");
    let mut d = start_detached(&dir, &[]);

    // The connection made right after the command returned is served.
    let mut conn = Conn::from(d.first_conn.take().expect("first connection"));
    conn.write(&names_req());
    let reply = conn.read_to_eof(IO_TIMEOUT);
    let (header, entries) = parse_names(&reply);
    assert_eq!(header, u32::from(d.port), "NAMES: {}", hex(&reply));
    assert!(entries.is_empty(), "NAMES: {entries:?}");

    // The daemon is another process than the one we started, which has exited (and was
    // reaped by us), and it still runs.
    assert_ne!(
        d.pid, d.parent_pid,
        "the pid file names the spawned command"
    );
    assert!(!is_alive(d.parent_pid) || !runs_executable(d.parent_pid, BIN));
    assert!(
        is_alive(d.pid),
        "daemon {} (from the pid file) is not running",
        d.pid
    );

    // The pid file names the process that listens on the port, running our binary with
    // our arguments.
    assert!(
        runs_executable(d.pid, BIN),
        "pid {} does not run {BIN}",
        d.pid
    );
    let args = cmdline(d.pid);
    assert!(
        args.first().is_some_and(|a| a == BIN) && args.contains(&d.port.to_string()),
        "cmdline of {}: {args:?}",
        d.pid
    );
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, d.port));
    assert!(
        listen_addrs_of(d.pid).contains(&local),
        "pid {} does not listen on {local}: {:?}",
        d.pid,
        listen_addrs_of(d.pid)
    );
    assert_eq!(d.backstop.pids(), vec![d.pid], "other listeners on {local}");

    // SIGTERM: a clean exit, which removes the pid file and closes the port.
    d.terminate();
    assert!(
        poll_true(Duration::from_secs(5), || !d.pid_file.exists()),
        "pid file {} left behind after SIGTERM",
        d.pid_file.display()
    );
    let refused = TcpStream::connect(local).err().map(|e| e.kind());
    assert_eq!(refused, Some(ErrorKind::ConnectionRefused));
}

#[test]
fn second_daemon_on_the_same_port_exits_0_quickly_and_keeps_the_first() {
    let dir = TempDir::new("daemon2");
    let first = start_detached(&dir, &[]);
    let pid_text = fs::read_to_string(&first.pid_file).expect("pid file");

    // Same port, same pid file: the second command must not touch either.
    let (status, second_pid, elapsed) = run_daemon_command(first.port, &first.pid_file, &[], None);
    assert!(status.success(), "second -daemon: {status}");
    assert!(
        elapsed < Duration::from_secs(5),
        "second -daemon took {elapsed:?} to return"
    );
    assert_ne!(second_pid, first.pid);
    assert_eq!(
        fs::read_to_string(&first.pid_file).expect("pid file"),
        pid_text,
        "the second -daemon rewrote the pid file"
    );
    assert!(is_alive(first.pid), "the first daemon died");
    assert_eq!(
        first.backstop.pids(),
        vec![first.pid],
        "the port should still belong to the first daemon only"
    );
    let (header, _) = parse_names(&raw::names(first.port));
    assert_eq!(header, u32::from(first.port));
    first.terminate();
}

#[test]
fn daemon_logs_reach_the_log_file_and_sighup_reopens_it() {
    let dir = TempDir::new("daemonlog");
    let log = dir.join("epmd.log");
    let log_arg = log.to_str().expect("UTF-8 path").to_owned();
    let d = start_detached(&dir, &["-d", "--log-file", &log_arg]);
    let read = |p: &Path| tmp::read_lossy(p);

    let listening = format!("listening on 127.0.0.1:{}", d.port);
    assert!(
        poll_true(Duration::from_secs(5), || read(&log).contains(&listening)),
        "no {listening:?} in {}: {:?}",
        log.display(),
        read(&log)
    );
    // Lines of the serving daemon (not only of the parent before it detached).
    let tag = format!("epmd-rs[{}]", d.pid);

    // logrotate: move the file away, then SIGHUP; the daemon reopens the path.
    let rotated = dir.join("epmd.log.1");
    fs::rename(&log, &rotated).expect("rotate log");
    d.signal(libc::SIGHUP);
    assert!(
        poll_true(Duration::from_secs(5), || log.exists()),
        "no fresh {} after SIGHUP",
        log.display()
    );

    // A registration that ends logs "unregistering '<name>'" at -d: it must go to the
    // fresh file only.
    let name = unique_name("log");
    let (conn, reply) = raw::register(d.port, &name, 41_005, 6);
    assert_eq!(&reply[..2], &[raw::ALIVE2_X_RESP, 0], "{}", hex(&reply));
    drop(conn);
    let line = format!("unregistering '{name}'");
    assert!(
        poll_true(Duration::from_secs(5), || read(&log).contains(&line)),
        "no {line:?} in the reopened {}: {:?}",
        log.display(),
        read(&log)
    );
    let fresh = read(&log);
    let old = read(&rotated);
    assert!(
        fresh.lines().any(|l| l.contains(&tag) && l.contains(&line)),
        "the line does not come from the daemon {tag}: {fresh:?}"
    );
    assert!(
        !fresh.contains(&listening),
        "the reopened file is not fresh: {fresh:?}"
    );
    assert!(
        old.contains(&listening) && !old.contains(&line),
        "the rotated file got lines after SIGHUP: {old:?}"
    );
    d.terminate();
}

/// Removes its files when dropped, so that a failing test leaves nothing behind.
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

#[test]
fn daemon_resolves_relative_pid_and_log_files_against_the_callers_directory() {
    let dir = TempDir::new("daemonrel");
    // Unique names, so that the files the bug puts in / are ours to remove.
    let stem = format!("epmd-it-{}-{}", std::process::id(), tmp::unique_id());
    let (pid_name, log_name) = (format!("{stem}.pid"), format!("{stem}.log"));
    let misplaced = RemoveOnDrop(vec![
        Path::new("/").join(&pid_name),
        Path::new("/").join(&log_name),
    ]);
    let port = free_port();
    let backstop = DetachedDaemon::on_port(port);
    let (status, parent_pid, _) = run_daemon_command(
        port,
        Path::new(&pid_name),
        &["-d", "--log-file", &log_name],
        Some(dir.path()),
    );
    assert!(status.success(), "-daemon: {status}");
    let pid_file = [dir.join(&pid_name), misplaced.0[0].clone()]
        .into_iter()
        .find(|p| p.exists())
        .expect("no pid file anywhere");
    let pid: u32 = fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let daemon = Detached {
        port,
        pid,
        pid_file: pid_file.clone(),
        parent_pid,
        first_conn: None,
        backstop,
    };

    // SIGHUP reopens the log file: it must stay the one in the caller's directory.
    let log = dir.join(&log_name);
    fs::rename(&log, dir.join("rotated.log")).expect("rotate");
    daemon.signal(libc::SIGHUP);
    let reopened_here = poll_true(Duration::from_secs(5), || log.exists());
    daemon.terminate();
    let in_root: Vec<&PathBuf> = misplaced.0.iter().filter(|p| p.exists()).collect();
    assert!(
        pid_file == dir.join(&pid_name) && reopened_here,
        "pid file written at {}; log reopened in the caller's directory: {reopened_here}; \
         files left in /: {in_root:?}",
        pid_file.display()
    );
}
