//! systemd integration (issue 4): socket activation through the real
//! `systemd-socket-activate`, `sd_notify` through a `NOTIFY_SOCKET` of our own, and the
//! units in `systemd/` checked by `systemd-analyze` (verify, and the security score).
//!
//! `systemd-socket-activate` binds the `-l` sockets, waits for the first connection and then
//! execs the daemon, so the PID we spawn becomes the daemon: it is killed by that PID.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon::{Daemon, BIN};
use crate::support::erl::unique_name;
use crate::support::ports::free_port;
use crate::support::procnet::{listen_addrs_of, runs_executable};
use crate::support::raw::{
    alive2_req, frame, hex, names_req, parse_names, parse_port2, port_please_req, Conn,
    ALIVE2_X_RESP, DUMP_REQ, IO_TIMEOUT, NODE_TYPE_NORMAL,
};
use crate::support::tmp;
use crate::support::wait::{poll_true, poll_until};
use crate::sysd_support::{
    assert_success, clean_env, is_alive, run, signal, tool, NotifySocket, TempDir,
};

/// The `-port` given to socket-activated daemons, which must not show in NAMES or DUMP.
const IGNORED_PORT: u16 = 9999;

/// How long the activator may take to bind, and the daemon to exec and answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh port sets to try when `systemd-socket-activate` cannot bind (a race).
const ATTEMPTS: usize = 5;

/// One `-l` socket of `systemd-socket-activate`.
#[derive(Clone, Copy, Debug)]
enum Listen {
    /// `-l 127.0.0.1:P`.
    V4,
    /// `-l [::1]:P`.
    V6,
    /// `-l P`: no address, which systemd binds as `[::]:P` without IPV6_V6ONLY.
    DualStack,
}

impl Listen {
    /// The `-l` argument for `port`.
    fn arg(self, port: u16) -> String {
        match self {
            Listen::V4 => format!("127.0.0.1:{port}"),
            Listen::V6 => format!("[::1]:{port}"),
            Listen::DualStack => port.to_string(),
        }
    }

    /// The address the socket is bound to, as `/proc/net/tcp*` shows it.
    fn bound(self, port: u16) -> SocketAddr {
        match self {
            Listen::V4 => (Ipv4Addr::LOCALHOST, port).into(),
            Listen::V6 => (Ipv6Addr::LOCALHOST, port).into(),
            Listen::DualStack => (Ipv6Addr::UNSPECIFIED, port).into(),
        }
    }
}

/// `systemd-socket-activate -l ... epmd-rs --admin-socket none -d <args>` (no
/// `--admin-socket none` when `args` name an admin socket), exec'd into the
/// daemon once a first connection arrived. Killed by PID (SIGKILL) when dropped.
#[derive(Debug)]
struct Activated {
    /// The activator process, then (same PID) the daemon.
    child: Child,
    /// One port per `-l`, in order.
    ports: Vec<u16>,
    /// Where stderr (the activator's, then the daemon's) goes.
    stderr_path: PathBuf,
    /// The command, for messages.
    command_line: String,
}

impl Activated {
    /// Starts the activator on free ports, waits until it holds every socket, then makes
    /// the first connection so that it execs the daemon, and waits for the exec.
    fn start(sockets: &[Listen], args: &[&str]) -> Activated {
        let mut failures = String::new();
        for _ in 0..ATTEMPTS {
            let ports: Vec<u16> = sockets.iter().map(|_| free_port()).collect();
            let mut activated = Self::spawn(sockets, &ports, args);
            let wanted: Vec<SocketAddr> = sockets
                .iter()
                .zip(&ports)
                .map(|(l, &p)| l.bound(p))
                .collect();
            let pid = activated.pid();
            let bound = poll_until(START_TIMEOUT, || {
                if let Ok(Some(status)) = activated.child.try_wait() {
                    return Some(Err(status));
                }
                let have = listen_addrs_of(pid);
                wanted.iter().all(|w| have.contains(w)).then_some(Ok(()))
            });
            match bound {
                Some(Ok(())) => {
                    activated.wait_exec();
                    return activated;
                }
                // Most likely a port was taken between free_port() and the bind: retry.
                Some(Err(status)) => {
                    let _ = writeln!(
                        failures,
                        "`{}` exited with {status}:\n{}",
                        activated.command_line,
                        activated.stderr_text()
                    );
                }
                None => panic!(
                    "`{}` did not bind {wanted:?} within {START_TIMEOUT:?}\n{}",
                    activated.command_line,
                    activated.stderr_text()
                ),
            }
        }
        panic!("systemd-socket-activate failed {ATTEMPTS} times:\n{failures}");
    }

    /// Spawns the activator with its output captured, without waiting.
    fn spawn(sockets: &[Listen], ports: &[u16], args: &[&str]) -> Activated {
        let mut cmd = Command::new(tool("systemd-socket-activate", "systemd"));
        clean_env(&mut cmd);
        for (l, &p) in sockets.iter().zip(ports) {
            cmd.arg("-l").arg(l.arg(p));
        }
        cmd.arg(BIN);
        if !args.contains(&"--admin-socket") {
            cmd.args(["--admin-socket", "none"]);
        }
        cmd.arg("-d").args(args);
        let stderr_path = tmp::unique_path("activate.stderr");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(tmp::create_log(&stderr_path));
        let command_line = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command_line}: {e}"));
        Activated {
            child,
            ports: ports.to_vec(),
            stderr_path,
            command_line,
        }
    }

    /// Connects once to the first socket (the activator execs on a connection attempt) and
    /// waits until the process runs our binary.
    fn wait_exec(&mut self) {
        let first = self.loopback(0);
        let conn = TcpStream::connect_timeout(&first, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {first}: {e}"));
        drop(conn);
        let pid = self.pid();
        assert!(
            poll_true(START_TIMEOUT, || runs_executable(pid, BIN)),
            "`{}` did not exec the daemon\n{}",
            self.command_line,
            self.stderr_text()
        );
    }

    /// The PID of the activator, which is the daemon after the exec.
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port of socket `i`.
    fn port(&self, i: usize) -> u16 {
        self.ports[i]
    }

    /// A loopback address through which socket `i` is reachable: `127.0.0.1` unless the
    /// socket is bound to `::1`.
    fn loopback(&self, i: usize) -> SocketAddr {
        let port = self.ports[i];
        let v6_only = listen_addrs_of(self.pid())
            .iter()
            .any(|a| *a == SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
        if v6_only {
            (Ipv6Addr::LOCALHOST, port).into()
        } else {
            (Ipv4Addr::LOCALHOST, port).into()
        }
    }

    /// stderr so far.
    fn stderr_text(&self) -> String {
        tmp::read_lossy(&self.stderr_path)
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of `{}` (pid {}) ---\n{}--- end of stderr ---",
                self.command_line,
                self.pid(),
                self.stderr_text()
            );
        }
        let _ = fs::remove_file(&self.stderr_path);
    }
}

/// Connects to `addr`, sends `bytes`, and returns the reply up to the daemon's close.
fn request_at(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = Conn::connect_to(addr);
    conn.write(bytes);
    conn.read_to_eof(IO_TIMEOUT)
}

/// Registers `name` (HighestVersion 6) through `addr`; returns the open registration
/// connection after checking the ALIVE2_X_RESP is a success.
fn register_at(addr: SocketAddr, name: &str, node_port: u16) -> Conn {
    let mut conn = Conn::connect_to(addr);
    conn.write(&alive2_req(
        node_port,
        NODE_TYPE_NORMAL,
        0,
        6,
        5,
        name.as_bytes(),
        &[],
    ));
    let reply = conn.read_exact_timeout(6, IO_TIMEOUT);
    assert_eq!(
        &reply[..2],
        &[ALIVE2_X_RESP, 0],
        "ALIVE2 of {name} through {addr} refused: {}",
        hex(&reply)
    );
    conn
}

/// Checks that PORT_PLEASE2 through `addr` finds `name` at `node_port`.
fn assert_port_please(addr: SocketAddr, name: &str, node_port: u16) {
    let reply = request_at(addr, &port_please_req(name.as_bytes()));
    let info = parse_port2(&reply).unwrap_or_else(|| {
        panic!(
            "PORT_PLEASE2 {name} through {addr} found nothing: {}",
            hex(&reply)
        )
    });
    assert_eq!(
        info.port,
        node_port,
        "PORT2_RESP through {addr}: {}",
        hex(&reply)
    );
    assert_eq!(info.name, name.as_bytes());
}

/// Checks that NAMES through `addr` has the header `header_port` and lists `name`.
fn assert_names(addr: SocketAddr, header_port: u16, name: &str, node_port: u16) {
    let reply = request_at(addr, &names_req());
    let (header, entries) = parse_names(&reply);
    assert_eq!(
        header,
        u32::from(header_port),
        "NAMES through {addr} does not report the port the client connected to: {}",
        hex(&reply)
    );
    assert!(
        entries.contains(&(name.to_owned(), node_port)),
        "NAMES through {addr} lacks {name} at {node_port}: {entries:?}"
    );
}

/// ALIVE2, PORT_PLEASE2 and NAMES through `addr`, whose NAMES header must be `header_port`.
/// The registration is dropped at the end and the name disappears.
fn assert_serves(addr: SocketAddr, header_port: u16) {
    let name = unique_name("sa");
    let node_port = 40_000 + u16::try_from(tmp::unique_id() % 20_000).expect("small");
    let conn = register_at(addr, &name, node_port);
    assert_port_please(addr, &name, node_port);
    assert_names(addr, header_port, &name, node_port);
    drop(conn);
    let gone = poll_true(IO_TIMEOUT, || {
        parse_port2(&request_at(addr, &port_please_req(name.as_bytes()))).is_none()
    });
    assert!(gone, "{name} still registered after its connection closed");
}

#[test]
fn socket_activation_ipv4_socket_serves_and_names_reports_its_port() {
    let activated = Activated::start(
        &[Listen::V4],
        &["-systemd", "-port", &IGNORED_PORT.to_string()],
    );
    let port = activated.port(0);
    assert_eq!(
        listen_addrs_of(activated.pid()),
        vec![Listen::V4.bound(port)]
    );
    assert_serves((Ipv4Addr::LOCALHOST, port).into(), port);
}

#[test]
fn socket_activation_ipv6_socket_serves_without_the_systemd_flag() {
    // No -systemd: the LISTEN_* variables alone make the daemon adopt the socket.
    let activated = Activated::start(&[Listen::V6], &[]);
    let port = activated.port(0);
    assert_eq!(
        listen_addrs_of(activated.pid()),
        vec![Listen::V6.bound(port)]
    );
    assert_serves((Ipv6Addr::LOCALHOST, port).into(), port);
}

#[test]
fn socket_activation_dual_stack_socket_serves_ipv4_and_ipv6_clients() {
    let activated = Activated::start(&[Listen::DualStack], &["-systemd"]);
    let port = activated.port(0);
    // systemd-socket-activate binds `-l P` as [::]:P; it reaches IPv4 clients too, so
    // IPV6_V6ONLY is off (the connects below prove it).
    assert_eq!(
        listen_addrs_of(activated.pid()),
        vec![Listen::DualStack.bound(port)]
    );
    let v4: SocketAddr = (Ipv4Addr::LOCALHOST, port).into();
    let v6: SocketAddr = (Ipv6Addr::LOCALHOST, port).into();
    assert_serves(v4, port);
    assert_serves(v6, port);

    // One registry behind both families: registered over IPv4 (a v4-mapped peer, which
    // must count as local), found over IPv6, and the other way round.
    let (a, b) = (unique_name("dsa"), unique_name("dsb"));
    let conn_a = register_at(v4, &a, 41_001);
    let conn_b = register_at(v6, &b, 41_002);
    assert_port_please(v6, &a, 41_001);
    assert_port_please(v4, &b, 41_002);
    assert_names(v6, port, &a, 41_001);
    assert_names(v4, port, &b, 41_002);
    drop((conn_a, conn_b));
}

#[test]
fn socket_activation_two_sockets_each_serve_and_report_their_own_port() {
    let activated = Activated::start(
        &[Listen::V4, Listen::V6],
        &["-systemd", "-port", &IGNORED_PORT.to_string()],
    );
    let (p4, p6) = (activated.port(0), activated.port(1));
    let mut held = listen_addrs_of(activated.pid());
    held.sort();
    let mut wanted = vec![Listen::V4.bound(p4), Listen::V6.bound(p6)];
    wanted.sort();
    assert_eq!(
        held, wanted,
        "the daemon should hold exactly the two sockets"
    );
    let v4: SocketAddr = (Ipv4Addr::LOCALHOST, p4).into();
    let v6: SocketAddr = (Ipv6Addr::LOCALHOST, p6).into();
    assert_serves(v4, p4);
    assert_serves(v6, p6);

    // One registry: a name registered through one socket is seen through the other, and
    // NAMES and DUMP through each socket carry that socket's port, never -port 9999.
    let name = unique_name("two");
    let conn = register_at(v4, &name, 41_003);
    assert_port_please(v6, &name, 41_003);
    for (addr, port) in [(v4, p4), (v6, p6)] {
        assert_names(addr, port, &name, 41_003);
        let dump = request_at(addr, &frame(&[DUMP_REQ]));
        assert!(dump.len() >= 4, "short DUMP reply: {}", hex(&dump));
        assert_eq!(
            u32::from_be_bytes([dump[0], dump[1], dump[2], dump[3]]),
            u32::from(port),
            "DUMP header through {addr}: {}",
            hex(&dump)
        );
        let body = String::from_utf8_lossy(&dump[4..]);
        assert!(
            body.contains(&name),
            "DUMP through {addr} lacks {name}: {body:?}"
        );
    }
    drop(conn);
}

#[test]
fn systemd_flag_without_sockets_exits_1_with_the_message() {
    let port = free_port().to_string();
    // Nothing passed at all, then variables meant for another process (PID 1).
    let cases: [&[(&str, &str)]; 2] = [&[], &[("LISTEN_PID", "1"), ("LISTEN_FDS", "1")]];
    for env in cases {
        let mut cmd = Command::new(BIN);
        clean_env(&mut cmd)
            .args(["-systemd", "--admin-socket", "none", "-port", &port])
            .envs(env.iter().copied());
        let out = run(&mut cmd, Duration::from_secs(10));
        assert_eq!(
            out.status.code(),
            Some(1),
            "-systemd with {env:?}: {}\nstderr: {}",
            out.status,
            out.stderr_text()
        );
        assert!(
            out.stderr_text().contains("systemd provides no sockets"),
            "-systemd with {env:?}, stderr: {:?}",
            out.stderr_text()
        );
    }
}

/// A daemon (`-port P -address 127.0.0.1 --admin-socket none`) that notifies `notify`,
/// with a watchdog timeout of `watchdog_usec` when given.
fn notifying_daemon(notify: &NotifySocket, watchdog_usec: Option<&str>) -> Daemon {
    let mut builder = Daemon::builder()
        .args(["--admin-socket", "none"])
        .env("NOTIFY_SOCKET", notify.path());
    if let Some(usec) = watchdog_usec {
        builder = builder.env("WATCHDOG_USEC", usec);
    }
    builder.start()
}

/// Waits for `READY=1` and checks that it names the daemon's PID as `MAINPID`.
fn assert_ready(notify: &mut NotifySocket, daemon: &Daemon) {
    let (_, ready) = notify
        .wait_for(Duration::from_secs(5), |m| {
            m.lines().any(|l| l == "READY=1")
        })
        .unwrap_or_else(|| panic!("no READY=1; received {:?}", notify.all()));
    let mainpid = format!("MAINPID={}", daemon.pid());
    assert!(
        ready.lines().any(|l| l == mainpid),
        "READY without {mainpid}: {ready:?}"
    );
}

/// The registration count in a `STATUS=` message: the number just before "node".
fn status_count(message: &str) -> Option<u64> {
    let status = message.lines().find_map(|l| l.strip_prefix("STATUS="))?;
    let words: Vec<&str> = status.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].starts_with("node"))
        .and_then(|w| w[0].parse().ok())
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping_on_sigterm() {
    let mut notify = NotifySocket::bind();
    let mut daemon = notifying_daemon(&notify, Some("400000"));
    assert_ready(&mut notify, &daemon);

    let (_, first) = notify
        .wait_for(Duration::from_secs(5), |m| status_count(m).is_some())
        .unwrap_or_else(|| panic!("no STATUS=; received {:?}", notify.all()));
    assert_eq!(status_count(&first), Some(0), "first status: {first:?}");

    // WATCHDOG_USEC=400000: a ping every 200 ms, so about 5 in one second. Counted by
    // arrival, which the test's own scheduling can delay: at least 2 (the requirement),
    // and no more than 7 (pings much faster than WATCHDOG_USEC/2 would exceed it).
    let pings = notify.times_of_during("WATCHDOG=1", Duration::from_secs(1));
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        (2..=7).contains(&pings.len()),
        "{} WATCHDOG=1 in 1 s with WATCHDOG_USEC=400000 (want 2..=7, about 5); gaps {gaps:?}",
        pings.len()
    );

    let registered_at = Instant::now();
    let conn = register_at(
        (Ipv4Addr::LOCALHOST, daemon.port()).into(),
        &unique_name("st"),
        41_004,
    );
    let status = notify.wait_for(Duration::from_secs(2), |m| status_count(m) == Some(1));
    assert!(
        status.is_some(),
        "no STATUS= with 1 registration within 2 s of registering ({:?} ago); received {:?}",
        registered_at.elapsed(),
        notify.all()
    );

    signal(daemon.pid(), libc::SIGTERM);
    assert!(
        notify
            .wait_for(Duration::from_secs(5), |m| m
                .lines()
                .any(|l| l == "STOPPING=1"))
            .is_some(),
        "no STOPPING=1 after SIGTERM; received {:?}",
        notify.all()
    );
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGTERM: {status:?}\n{}",
        daemon.stderr_text()
    );
    // The registration connection was closed with the daemon.
    let mut conn = conn;
    assert!(conn.is_closed_within(IO_TIMEOUT), "registration still open");
}

#[test]
fn sigint_stops_the_daemon_with_stopping_and_exit_0() {
    let mut notify = NotifySocket::bind();
    let mut daemon = notifying_daemon(&notify, None);
    assert_ready(&mut notify, &daemon);
    signal(daemon.pid(), libc::SIGINT);
    assert!(
        notify
            .wait_for(Duration::from_secs(5), |m| m
                .lines()
                .any(|l| l == "STOPPING=1"))
            .is_some(),
        "no STOPPING=1 after SIGINT; received {:?}",
        notify.all()
    );
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGINT: {status:?}\n{}",
        daemon.stderr_text()
    );
    // Without WATCHDOG_USEC, no pings at all.
    assert!(
        !notify.all().iter().any(|m| m.contains("WATCHDOG=1")),
        "watchdog pings without WATCHDOG_USEC: {:?}",
        notify.all()
    );
}

/// The units of `systemd/` copied into `dir`, ExecStart pointing at the binary under test.
fn units_for_test(dir: &TempDir) -> (PathBuf, PathBuf) {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let service = fs::read_to_string(repo.join("systemd/epmd-rs.service")).expect("read service");
    let exec = "ExecStart=/usr/local/bin/epmd-rs ";
    assert_eq!(
        service.matches(exec).count(),
        1,
        "epmd-rs.service should have one `{exec}` line"
    );
    let service = service.replace(exec, &format!("ExecStart={BIN} "));
    let (svc, sock) = (dir.join("epmd-rs.service"), dir.join("epmd-rs.socket"));
    fs::write(&svc, service).expect("write service");
    fs::copy(repo.join("systemd/epmd-rs.socket"), &sock).expect("copy socket");
    (svc, sock)
}

/// The overall exposure `systemd-analyze security --offline=true` gives `unit`.
fn exposure(unit: &std::path::Path) -> (f64, String) {
    let out = run(
        Command::new(tool("systemd-analyze", "systemd"))
            .args(["security", "--offline=true", "--no-pager"])
            .arg(unit),
        Duration::from_secs(60),
    );
    let text = out.stdout_text() + &out.stderr_text();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"))
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_owned();
    let score = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("cannot parse the score in {line:?}"));
    (score, line)
}

#[test]
fn units_pass_systemd_analyze_verify_and_the_security_score_is_at_most_1_5() {
    let dir = TempDir::new("units");
    let (svc, sock) = units_for_test(&dir);

    // Documentation=man:epmd-rs(1): verify runs `man`, which finds the generated page
    // through MANPATH.
    let gen = dir.join("gen");
    assert_success(
        "epmd-rs generate",
        &run(
            Command::new(BIN).arg("generate").arg(&gen),
            Duration::from_secs(30),
        ),
    );
    let man1 = dir.join("man/man1");
    fs::create_dir_all(&man1).expect("mkdir man1");
    fs::copy(gen.join("epmd-rs.1"), man1.join("epmd-rs.1")).expect("copy man page");
    tool("man", "man-db");

    let out = run(
        Command::new(tool("systemd-analyze", "systemd"))
            .arg("verify")
            .arg(&svc)
            .arg(&sock)
            .env("MANPATH", dir.join("man"))
            .current_dir(dir.path()),
        Duration::from_secs(60),
    );
    assert_success("systemd-analyze verify", &out);
    let text = out.stdout_text() + &out.stderr_text();
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains("epmd-rs")).collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains about the units:\n{text}"
    );

    let (score, line) = exposure(&svc);
    let mut report = format!("systemd-analyze security --offline=true: {line}\n");
    let debian = std::path::Path::new("/lib/systemd/system/epmd.service");
    if debian.is_file() {
        let (_, debian_line) = exposure(debian);
        let _ = writeln!(report, "  for comparison, Debian's {debian_line}");
    }
    // Written to the real stdout, past the test harness's capture, so that every test run
    // shows the figure.
    let _ = std::io::stdout().write_all(report.as_bytes());
    assert!(score <= 1.5, "exposure {score} > 1.5: {line}");
}

#[test]
fn foreground_pid_file_is_written_and_removed_on_sigterm() {
    // Plain foreground daemon (no notify socket): SIGTERM ends it with status 0, and the
    // foreground --pid-file is removed.
    let pid_file = tmp::unique_path("fg.pid");
    let mut daemon = Daemon::builder()
        .args(["--admin-socket", "none", "--pid-file"])
        .arg(&pid_file)
        .start();
    let pid = daemon.pid();
    let written = fs::read_to_string(&pid_file).expect("foreground pid file");
    assert_eq!(written.trim(), pid.to_string());
    signal(pid, libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "after SIGTERM: {status:?}"
    );
    assert!(!is_alive(pid));
    assert!(!pid_file.exists(), "pid file left behind after SIGTERM");
}

/// Issue 15 M2: systemd sets `WATCHDOG_PID` to the pid it started. After a hand-over
/// (SIGUSR2) the successor must still ping the watchdog, or systemd kills the service
/// `WatchdogSec` after every reload. The daemon is started through `sh -c 'WATCHDOG_PID=$$
/// exec …'`, so that the variable names the daemon's own pid as systemd's does.
#[test]
fn the_successor_of_a_hand_over_pings_the_watchdog() {
    let mut notify = NotifySocket::bind();
    let port = free_port();
    let guard = crate::support::daemon::DetachedDaemon::on_port(port);
    let mut cmd = Command::new("sh");
    clean_env(&mut cmd)
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\"", BIN])
        .args(["-port", &port.to_string(), "-address", "127.0.0.1"])
        .args(["--admin-socket", "none"])
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut first = cmd.spawn().expect("spawn sh -c … epmd-rs");
    let first_pid = first.id();
    let ready = notify.wait_for(START_TIMEOUT, |m| m.lines().any(|l| l == "READY=1"));
    assert!(ready.is_some(), "no READY=1: {:?}", notify.all());
    let pings = notify.times_of_during("WATCHDOG=1", Duration::from_secs(1));
    assert!(
        pings.len() >= 2,
        "the first daemon pinged {} times in 1 s: {:?}",
        pings.len(),
        notify.all()
    );

    signal(first_pid, libc::SIGUSR2);
    let mainpid = |m: &str| {
        m.lines()
            .filter_map(|l| l.strip_prefix("MAINPID="))
            .find_map(|p| p.parse::<u32>().ok())
            .filter(|&p| p != first_pid)
    };
    let handed = notify.wait_for(START_TIMEOUT, |m| mainpid(m).is_some());
    let successor = handed.as_ref().and_then(|(_, m)| mainpid(m));
    assert!(
        successor.is_some(),
        "no MAINPID= of a successor: {:?}",
        notify.all()
    );
    let exited = poll_until(START_TIMEOUT, || first.try_wait().ok().flatten());
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old daemon did not exit 0 after the hand-over: {exited:?}"
    );
    // Only the successor can send from now on.
    let pings = notify.times_of_during("WATCHDOG=1", Duration::from_secs(1));
    assert!(
        pings.len() >= 2,
        "the successor pinged the watchdog {} times in 1 s with WATCHDOG_USEC=400000 (want about 5)",
        pings.len()
    );
    drop(guard);
}

/// Issue 10: under socket activation `admin config` names the sockets systemd passed (not
/// the `0.0.0.0 ::` default), with the source `systemd`, and so does a successor after a
/// hand-over (which no longer sees `LISTEN_FDS`).
#[test]
fn admin_config_names_the_sockets_systemd_passed() {
    let dir = TempDir::new("cfg");
    let admin = dir.join("admin.sock");
    let admin_arg = admin.to_str().expect("UTF-8 path");
    let activated = Activated::start(
        &[Listen::V4, Listen::V6],
        &["-systemd", "--admin-socket", admin_arg],
    );
    let guards: Vec<_> = (0..2)
        .map(|i| crate::support::daemon::DetachedDaemon::on_port(activated.port(i)))
        .collect();
    let (p4, p6) = (activated.port(0), activated.port(1));
    // The daemon runs our binary by now; its admin socket may still be a moment away.
    assert!(
        poll_true(START_TIMEOUT, || std::os::unix::net::UnixStream::connect(
            &admin
        )
        .is_ok()),
        "no admin socket at {}\n{}",
        admin.display(),
        activated.stderr_text()
    );
    let shown = || {
        let entries = crate::handover::admin_json(&admin, "config");
        let find = |key: &str| {
            entries
                .as_array()
                .and_then(|a| a.iter().find(|e| e["key"] == key))
                .map(|e| {
                    (
                        e["value"].as_str().unwrap_or("").to_owned(),
                        e["source"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .unwrap_or_else(|| panic!("admin config lacks {key}: {entries}"))
        };
        (find("address"), find("listen"))
    };
    let want = (
        ("127.0.0.1,::1".to_owned(), "systemd".to_owned()),
        (format!("127.0.0.1:{p4} [::1]:{p6}"), "systemd".to_owned()),
    );
    assert_eq!(shown(), want, "admin config under socket activation");

    signal(activated.pid(), libc::SIGUSR2);
    assert!(
        poll_true(START_TIMEOUT, || !is_alive(activated.pid())
            || !runs_executable(activated.pid(), BIN)),
        "the activated daemon did not hand over\n{}",
        activated.stderr_text()
    );
    assert!(
        poll_true(START_TIMEOUT, || guards[0].pids().len() == 1),
        "no successor listens on {p4}"
    );
    assert_eq!(shown(), want, "admin config of the successor");
    drop(activated);
    drop(guards);
}
