//! Live hand-over (issue 7): SIGUSR2 or `epmd-rs admin upgrade` starts a new process that
//! takes over every listening socket, every registration connection and the registry
//! state; the old process exits. Nothing is closed, nothing is looked up in vain, no node
//! re-registers. A hand-over that fails at any step leaves the old process serving.
//!
//! Every process of a hand-over chain is tracked by PID ([`Chain`]): the first one is our
//! child, its successors are found from the admin reply, the pid file or the signal, and
//! all of them are killed by PID at the end (plus, as a last resort, any `epmd-rs` that
//! still listens on the chain's port).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::c_epmd::{run_command, CmdOutput};
use crate::support::daemon::{Daemon, DetachedDaemon, BIN};
use crate::support::erl::{self, ErlNode};
use crate::support::procnet;
use crate::support::raw;
use crate::support::wait::{poll_true, poll_until};

/// How long an `admin upgrade` may take (the daemon waits up to 10 s per step).
pub(crate) const UPGRADE_TIMEOUT: Duration = Duration::from_secs(40);

/// Deadline of one admin request or one lookup.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a process may take to exit after handing over, or to show up.
pub(crate) const PROCESS_TIMEOUT: Duration = Duration::from_secs(10);

/// How many hand-overs the chain test does.
const CHAIN_LENGTH: usize = 20;

// ---------------------------------------------------------------------------------------
// Helpers shared with the fd-store tests.
// ---------------------------------------------------------------------------------------

/// Scratch directories, shared by the modules that import them from here.
pub(crate) use crate::support::tmp::TempDir;

/// Sends one admin request line over the admin socket and returns the whole answer, with a
/// deadline on every step.
pub(crate) fn admin_request(
    socket: &Path,
    line: &str,
    timeout: Duration,
) -> Result<String, String> {
    let mut s = UnixStream::connect(socket).map_err(|e| format!("connect {socket:?}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("timeouts: {e}"))?;
    s.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| format!("write {line:?}: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read the answer to {line:?}: {e} (got {reply:?})"))?;
    Ok(reply)
}

/// An admin view as JSON; panics on any failure.
pub(crate) fn admin_json(socket: &Path, view: &str) -> Value {
    let reply = admin_request(socket, view, REQUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("admin {view}: {e}"));
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("admin {view}: {e} in {reply:?}"))
}

/// `admin nodes --json` by name, each registration without its `age_secs` (which moves):
/// port, type, versions, extra, creation, peer (the connection's identity), local address
/// and registration time.
pub(crate) fn registrations(socket: &Path) -> BTreeMap<String, Value> {
    registrations_from(&admin_json(socket, "nodes"))
}

/// [`registrations`] of an already fetched `nodes` view.
pub(crate) fn registrations_from(nodes: &Value) -> BTreeMap<String, Value> {
    nodes
        .as_array()
        .unwrap_or_else(|| panic!("admin nodes is not an array: {nodes}"))
        .iter()
        .map(|n| {
            let mut n = n.clone();
            n.as_object_mut().expect("node object").remove("age_secs");
            (n["name"].as_str().expect("node name").to_owned(), n)
        })
        .collect()
}

/// `requests["alive2.registered"]` of an `admin stats` view (0 when absent).
pub(crate) fn alive2_registered(stats: &Value) -> u64 {
    stats["requests"]["alive2.registered"].as_u64().unwrap_or(0)
}

/// NAMES of the daemon on `port`, as name → port.
pub(crate) fn names_of(port: u16) -> BTreeMap<String, u16> {
    raw::parse_names(&raw::names(port)).1.into_iter().collect()
}

/// One request to `127.0.0.1:port` with a deadline; everything received until the daemon
/// closes. Errors are returned (for the load thread, which records them).
pub(crate) fn try_request(port: u16, bytes: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("timeouts: {e}"))?;
    s.write_all(bytes).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // A reset after a complete reply still counts as the end of the reply.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !out.is_empty() => Ok(out),
        Err(e) => Err(format!("read: {e} after {} bytes", out.len())),
    }
}

/// Whether process `pid` exists and is not a zombie (`kill(pid, 0)` and `/proc`).
pub(crate) fn is_alive(pid: u32) -> bool {
    let Ok(target) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists.
    if unsafe { libc::kill(target, 0) } != 0 {
        return false;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

/// SIGKILLs `pid` if it is alive and runs the daemon binary (so a reused pid is never hit).
pub(crate) fn kill_daemon_pid(pid: u32) {
    kill_pid_running(pid, Path::new(BIN));
}

/// SIGKILLs `pid` if it is alive and runs the executable at `binary`.
fn kill_pid_running(pid: u32, binary: &Path) {
    let exe = binary.to_str().expect("utf-8 path");
    if is_alive(pid) && procnet::runs_executable(pid, exe) {
        if let Ok(target) = libc::pid_t::try_from(pid) {
            // SAFETY: kill(2) on the pid of a daemon this test started (checked above).
            unsafe { libc::kill(target, libc::SIGKILL) };
        }
    }
}

/// Sends `sig` to `pid`; panics if that fails.
pub(crate) fn send_signal(pid: u32, sig: libc::c_int) {
    let target = libc::pid_t::try_from(pid).expect("pid fits pid_t");
    // SAFETY: kill(2) only sends a signal to a process this test started.
    let rc = unsafe { libc::kill(target, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// The targets of `/proc/<pid>/fd/*`, sorted, with socket inodes and pipe numbers kept
/// (for messages: which fds differ).
pub(crate) fn fd_links(pid: u32) -> Vec<String> {
    let mut links: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let e = e.ok()?;
                let target = fs::read_link(e.path()).ok()?;
                Some(format!(
                    "{} -> {}",
                    e.file_name().to_string_lossy(),
                    target.display()
                ))
            })
            .collect()
        })
        .unwrap_or_default();
    links.sort();
    links
}

/// The pid in a pid file, if it holds one.
pub(crate) fn read_pid_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Runs `epmd-rs <args>` with a deadline.
pub(crate) fn epmd_rs(args: &[&str], timeout: Duration) -> CmdOutput {
    run_command(Path::new(BIN), args, timeout)
}

/// Asks a hidden probe node for the local port of each node's `erl_epmd` socket (the
/// node's end of its registration connection), with `ping` pings between the nodes in
/// both directions, and returns (ports in order, ping results `from->to pong|pang`).
pub(crate) fn probe_nodes(
    epmd_port: u16,
    nodes: &[&ErlNode],
    ping: bool,
) -> (Vec<u16>, Vec<String>) {
    let mut body = String::new();
    for n in nodes {
        let node = erl::atom(n.node());
        // erl_epmd's state is #state{socket, port_no, name, family}.
        let _ = write!(
            body,
            "{{ok, {{_, P_{i}}}}} = rpc:call({node}, inet, sockname, [element(2, rpc:call({node}, sys, get_state, [erl_epmd]))]), \
             io:format(\"EPMDSOCK ~b~n\", [P_{i}]), ",
            i = n.pid()
        );
    }
    for a in nodes.iter().filter(|_| ping) {
        for b in nodes {
            if a.node() != b.node() {
                let _ = write!(
                    body,
                    "io:format(\"PING ~s->~s ~p~n\", [{from}, {to}, rpc:call({from}, net_adm, ping, [{to}])]), ",
                    from = erl::atom(a.node()),
                    to = erl::atom(b.node())
                );
            }
        }
    }
    body.push_str("ok");
    let out = erl::probe(epmd_port, &body);
    let ports = erl::tagged_lines(&out, "EPMDSOCK")
        .iter()
        .map(|p| p.parse().expect("EPMDSOCK port"))
        .collect();
    (ports, erl::tagged_lines(&out, "PING"))
}

/// The port of the `peer` address of a registration (the node's end of the connection).
pub(crate) fn peer_port(reg: &Value) -> u16 {
    let peer = reg["peer"].as_str().expect("peer address");
    peer.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("peer {peer:?}: {e}"))
        .port()
}

/// What the lookup load saw.
#[derive(Debug, Default)]
pub(crate) struct LoadReport {
    /// Lookups done (each PORT_PLEASE2 and each NAMES counts one).
    pub(crate) lookups: u64,
    /// Every failed lookup, with when and why.
    pub(crate) failures: Vec<String>,
    /// The slowest lookup.
    pub(crate) slowest: Duration,
}

/// A thread that loops PORT_PLEASE2 for every expected node and NAMES against the daemon,
/// and records every lookup that fails or answers anything but the expected port.
#[derive(Debug)]
pub(crate) struct LookupLoad {
    /// Set to stop the thread.
    stop: Arc<AtomicBool>,
    /// Lookups done so far.
    done: Arc<AtomicU64>,
    /// The thread.
    handle: Option<JoinHandle<LoadReport>>,
}

impl LookupLoad {
    /// Starts looking up `expected` (name → distribution port) on `port`.
    pub(crate) fn start(port: u16, expected: BTreeMap<String, u16>) -> LookupLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (stop2, done2) = (stop.clone(), done.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut report = LoadReport::default();
            let record = |report: &mut LoadReport, t0: Instant, what: String| {
                report.failures.push(format!(
                    "at +{:?} ({:?} into the lookup): {what}",
                    t0 - started,
                    t0.elapsed()
                ));
            };
            while !stop2.load(Ordering::Relaxed) {
                for (name, want) in &expected {
                    let t0 = Instant::now();
                    let got = try_request(
                        port,
                        &raw::port_please_req(name.as_bytes()),
                        REQUEST_TIMEOUT,
                    );
                    report.slowest = report.slowest.max(t0.elapsed());
                    report.lookups += 1;
                    done2.fetch_add(1, Ordering::Relaxed);
                    match got {
                        Ok(r) if r.len() >= 4 && r[0] == raw::PORT2_RESP && r[1] == 0 => {
                            let p = u16::from_be_bytes([r[2], r[3]]);
                            if p != *want {
                                record(
                                    &mut report,
                                    t0,
                                    format!("PORT_PLEASE2 {name}: port {p}, expected {want}"),
                                );
                            }
                        }
                        Ok(r) => record(
                            &mut report,
                            t0,
                            format!("PORT_PLEASE2 {name}: {}", raw::hex(&r)),
                        ),
                        Err(e) => record(&mut report, t0, format!("PORT_PLEASE2 {name}: {e}")),
                    }
                }
                let t0 = Instant::now();
                let got = try_request(port, &raw::names_req(), REQUEST_TIMEOUT);
                report.slowest = report.slowest.max(t0.elapsed());
                report.lookups += 1;
                done2.fetch_add(1, Ordering::Relaxed);
                match got {
                    Ok(r) if r.len() >= 4 => {
                        let body = String::from_utf8_lossy(&r[4..]);
                        for (name, want) in &expected {
                            let line = format!("name {name} at port {want}\n");
                            if !body.contains(&line) {
                                record(&mut report, t0, format!("NAMES lacks {line:?}: {body:?}"));
                            }
                        }
                    }
                    Ok(r) => record(&mut report, t0, format!("NAMES: {}", raw::hex(&r))),
                    Err(e) => record(&mut report, t0, format!("NAMES: {e}")),
                }
            }
            report
        });
        LookupLoad {
            stop,
            done,
            handle: Some(handle),
        }
    }

    /// Lookups done so far.
    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until at least `more` further lookups have been done.
    pub(crate) fn wait_for_more(&self, more: u64) {
        let target = self.done() + more;
        assert!(
            poll_true(Duration::from_secs(20), || self.done() >= target),
            "the lookup load made no progress ({} of {target} lookups)",
            self.done()
        );
    }

    /// Stops the thread and returns its report.
    pub(crate) fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("load thread")
            .join()
            .expect("the load thread panicked")
    }
}

impl Drop for LookupLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Nearest-rank percentile `p` (0..=100) of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    assert!(!sorted.is_empty());
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// Writes a shell script into `dir` and makes it executable.
fn script(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod +x");
    path
}

// ---------------------------------------------------------------------------------------
// A chain of daemons handing over to each other.
// ---------------------------------------------------------------------------------------

/// The first daemon (our child, with an admin socket and a pid file) and every successor
/// it handed over to. Dropping it kills every one of them by PID.
#[derive(Debug)]
pub(crate) struct Chain {
    /// The daemon we started.
    first: Daemon,
    /// The pid serving now.
    current: u32,
    /// Every pid that handed over, oldest first.
    retired: Vec<u32>,
    /// Every successor pid, oldest first.
    successors: Vec<u32>,
    /// The admin socket.
    admin: PathBuf,
    /// The pid file.
    pid_file: PathBuf,
    /// The daemon binary the chain runs (and every hand-over starts again).
    binary: PathBuf,
    /// Last resort: any epmd-rs still listening on the port is killed by PID.
    _port_guard: DetachedDaemon,
    /// Scripts, the admin socket and the pid file.
    dir: TempDir,
}

impl Chain {
    /// Starts `epmd-rs -port P -address 127.0.0.1 --admin-socket … --pid-file …` with `envs`.
    pub(crate) fn start(envs: &[(&str, &str)]) -> Chain {
        Chain::start_from(envs, None)
    }

    /// As [`Chain::start`], but runs a link (or copy) of the daemon binary in the chain's
    /// directory, which [`Chain::replace_binary`] can then replace: a hand-over always
    /// starts the daemon's own binary by its path.
    pub(crate) fn start_own_copy(envs: &[(&str, &str)]) -> Chain {
        let dir = TempDir::new("ho");
        let binary = dir.join("epmd-rs");
        if fs::hard_link(BIN, &binary).is_err() {
            fs::copy(BIN, &binary).expect("copy the daemon binary");
        }
        Chain::start_from(envs, Some((dir, binary)))
    }

    fn start_from(envs: &[(&str, &str)], own: Option<(TempDir, PathBuf)>) -> Chain {
        let (dir, binary) = match own {
            Some((dir, binary)) => (dir, binary),
            None => (TempDir::new("ho"), PathBuf::from(BIN)),
        };
        let admin = dir.join("admin.sock");
        let pid_file = dir.join("epmd.pid");
        let builder = Daemon::builder()
            .program(&binary)
            .arg("--admin-socket")
            .arg(&admin)
            .arg("--pid-file")
            .arg(&pid_file);
        let first = envs.iter().fold(builder, |b, (k, v)| b.env(k, v)).start();
        let pid = first.pid();
        assert!(
            poll_true(PROCESS_TIMEOUT, || read_pid_file(&pid_file) == Some(pid)),
            "the pid file never named the daemon"
        );
        Chain {
            current: pid,
            retired: Vec::new(),
            successors: Vec::new(),
            _port_guard: DetachedDaemon::on_port(first.port()),
            first,
            admin,
            pid_file,
            binary,
            dir,
        }
    }

    /// Replaces the chain's binary (started by [`Chain::start_own_copy`]) by `with`, or
    /// removes it (`None`), the way a package upgrade does: a new file renamed over the
    /// path, so the running process keeps its own.
    pub(crate) fn replace_binary(&self, with: Option<&Path>) {
        assert_ne!(
            self.binary,
            Path::new(BIN),
            "the chain runs the shared binary"
        );
        match with {
            Some(new) => {
                let staged = self.dir.join("epmd-rs.new");
                let _ = fs::remove_file(&staged);
                if fs::hard_link(new, &staged).is_err() {
                    fs::copy(new, &staged).expect("stage the new binary");
                }
                fs::rename(&staged, &self.binary).expect("rename the new binary in place");
            }
            None => {
                let _ = fs::remove_file(&self.binary);
            }
        }
    }

    /// The epmd port.
    pub(crate) fn port(&self) -> u16 {
        self.first.port()
    }

    /// The admin socket.
    pub(crate) fn admin(&self) -> &Path {
        &self.admin
    }

    /// `admin stats`.
    pub(crate) fn stats(&self) -> Value {
        admin_json(&self.admin, "stats")
    }

    /// `admin nodes`, by name, without ages.
    pub(crate) fn registrations(&self) -> BTreeMap<String, Value> {
        registrations(&self.admin)
    }

    /// `epmd-rs admin --socket … upgrade <extra>`.
    pub(crate) fn upgrade_cli(&self, extra: &[&str]) -> CmdOutput {
        let admin = self.admin.to_str().expect("utf-8 path");
        let mut args = vec!["admin", "--socket", admin, "upgrade"];
        args.extend_from_slice(extra);
        epmd_rs(&args, UPGRADE_TIMEOUT)
    }

    /// Sends `upgrade` on the admin socket itself and times it, from sending the request
    /// to the daemon's answer; returns the time and the successor's pid.
    pub(crate) fn upgrade_timed(&self) -> (Duration, u32) {
        let t0 = Instant::now();
        let reply = admin_request(&self.admin, "upgrade", UPGRADE_TIMEOUT)
            .unwrap_or_else(|e| panic!("admin upgrade: {e}"));
        let took = t0.elapsed();
        let v: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|e| panic!("admin upgrade answered {reply:?}: {e}"));
        assert_eq!(
            v["ok"],
            Value::Bool(true),
            "admin upgrade failed: {v}\n{}",
            self.log()
        );
        let pid = v["pid"].as_u64().expect("pid in the answer") as u32;
        (took, pid)
    }

    /// Records that the daemon handed over to `pid`: the pid file names it, it runs the
    /// daemon binary, and the previous process exits (status 0 for our own child).
    pub(crate) fn handed_over_to(&mut self, pid: u32) {
        let old = self.current;
        assert_ne!(pid, old, "handed over to itself?");
        self.successors.push(pid);
        assert_eq!(
            read_pid_file(&self.pid_file),
            Some(pid),
            "the pid file does not name the successor once the hand-over is reported"
        );
        assert!(
            is_alive(pid),
            "successor {pid} is not running\n{}",
            self.log()
        );
        assert!(
            procnet::runs_executable(pid, self.binary.to_str().expect("utf-8 path")),
            "successor {pid} is not epmd-rs"
        );
        if old == self.first.pid() {
            let status = self.first.wait_exit(PROCESS_TIMEOUT);
            assert!(
                status.is_some_and(|s| s.success()),
                "the first daemon did not exit 0 after handing over: {status:?}\n{}",
                self.log()
            );
        } else {
            assert!(
                poll_true(PROCESS_TIMEOUT, || !is_alive(old)),
                "pid {old} still runs after handing over to {pid}"
            );
        }
        self.retired.push(old);
        self.current = pid;
    }

    /// The pid serving now.
    pub(crate) fn current(&self) -> u32 {
        self.current
    }

    /// The daemon's log (successors inherit the first daemon's stderr).
    pub(crate) fn log(&self) -> String {
        self.first.stderr_text()
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        for pid in self.successors.iter().rev() {
            kill_pid_running(*pid, &self.binary);
        }
        // `first`, the port guard and the directory are dropped after this.
    }
}

/// Parses `handed over to pid N` (the text output of `admin upgrade`).
fn handed_over_pid(out: &CmdOutput) -> u32 {
    let text = out.stdout_text();
    assert!(
        out.status.success(),
        "admin upgrade failed with {}: {text}{}",
        out.status,
        out.stderr_text()
    );
    text.trim()
        .strip_prefix("handed over to pid ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected `admin upgrade` output {text:?}"))
}

/// Two `-sname` Erlang nodes registered with the daemon on `port`.
fn two_nodes(port: u16, prefix: &str) -> (ErlNode, ErlNode) {
    let a = ErlNode::start(
        port,
        "-sname",
        &erl::unique_name(&format!("{prefix}a")),
        &[],
    );
    let b = ErlNode::start(
        port,
        "-sname",
        &erl::unique_name(&format!("{prefix}b")),
        &[],
    );
    (a, b)
}

/// The node name → distribution port map the lookups expect.
fn expected(nodes: &[&ErlNode]) -> BTreeMap<String, u16> {
    nodes
        .iter()
        .map(|n| (n.name().to_owned(), n.dist_port()))
        .collect()
}

/// Asserts the node-side identity of the registration connections: each node's
/// `erl_epmd` socket is the peer of its registration, and pings work both ways.
fn assert_nodes_connected(port: u16, regs: &BTreeMap<String, Value>, nodes: &[&ErlNode]) {
    let (ports, pings) = probe_nodes(port, nodes, true);
    for (n, p) in nodes.iter().zip(&ports) {
        assert_eq!(
            peer_port(&regs[n.name()]),
            *p,
            "{}: the node's epmd socket is not the registration's connection",
            n.name()
        );
    }
    assert_eq!(pings.len(), nodes.len() * (nodes.len() - 1), "{pings:?}");
    for line in &pings {
        assert!(line.ends_with(" pong"), "net_adm:ping failed: {line}");
    }
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

/// Two real Erlang nodes, a thread doing PORT_PLEASE2 and NAMES without pause, and one
/// `admin upgrade`: no lookup fails, both registrations keep their creation and their
/// connection (same peer port, from the daemon's view and the node's), nobody
/// re-registers, and the nodes still reach each other.
#[test]
fn handover_under_lookup_load_loses_nothing() {
    let mut chain = Chain::start(&[]);
    let port = chain.port();
    let (a, b) = two_nodes(port, "hol");
    let want = expected(&[&a, &b]);
    assert_eq!(names_of(port), want);
    let regs_before = chain.registrations();
    assert_eq!(
        regs_before.keys().cloned().collect::<Vec<_>>(),
        want.keys().cloned().collect::<Vec<_>>()
    );
    let stats_before = chain.stats();

    let load = LookupLoad::start(port, want.clone());
    load.wait_for_more(50);
    let t0 = Instant::now();
    let out = chain.upgrade_cli(&[]);
    let took = t0.elapsed();
    let pid = handed_over_pid(&out);
    chain.handed_over_to(pid);
    // The successor answers lookups too before the load stops.
    load.wait_for_more(50);
    let report = load.finish();

    eprintln!(
        "hand-over under load: `admin upgrade` took {took:?}; {} lookups, {} failed, slowest {:?}",
        report.lookups,
        report.failures.len(),
        report.slowest
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} lookups failed during the hand-over:\n{}",
        report.failures.len(),
        report.lookups,
        report.failures.join("\n")
    );
    assert_eq!(names_of(port), want, "NAMES changed across the hand-over");
    for (name, p) in &want {
        let reply = raw::parse_port2(&raw::port_please(port, name)).expect("still registered");
        assert_eq!(reply.port, *p);
    }
    let regs_after = chain.registrations();
    assert_eq!(
        regs_after, regs_before,
        "registrations (creation, peer = connection, registered_at) changed"
    );
    let stats_after = chain.stats();
    assert_eq!(
        stats_after["handovers"].as_u64(),
        stats_before["handovers"].as_u64().map(|h| h + 1),
        "handovers counter"
    );
    assert_eq!(
        alive2_registered(&stats_after),
        alive2_registered(&stats_before),
        "a node registered again: its registration connection was closed"
    );
    // The nodes' own view: their epmd socket is still the same connection; they ping.
    assert_nodes_connected(port, &regs_after, &[&a, &b]);
}

/// Twenty hand-overs in a row (timed, under lookup load): every registration (Erlang nodes
/// and a raw one with extra bytes and old versions) and the old-names list stay as they
/// were, every retired process exits, and the last process holds exactly the fds the
/// first one held. Writes p50/p99 to `<target>/handover-times.txt`.
#[test]
fn twenty_handovers_in_a_row_keep_everything_and_leak_nothing() {
    let mut chain = Chain::start(&[]);
    let port = chain.port();
    let (a, b) = two_nodes(port, "hoc");
    // A raw registration with extra bytes and HighestVersion 5 (4-byte ALIVE2_RESP).
    let req = raw::alive2_req(40001, 72, 0, 5, 5, b"rawext", b"\x01extra\xff");
    let mut raw_conn = raw::Conn::connect(port);
    raw_conn.write(&req);
    let reply = raw_conn.read_exact_timeout(4, REQUEST_TIMEOUT);
    assert_eq!(&reply[..2], &[raw::ALIVE2_RESP, 0], "{}", raw::hex(&reply));
    // An old (unused) name: registered, then closed.
    let (gone, _) = raw::register(port, "rawgone", 40002, 6);
    drop(gone);
    assert!(
        poll_true(PROCESS_TIMEOUT, || !names_of(port).contains_key("rawgone")),
        "rawgone never unregistered"
    );

    let names_before = names_of(port);
    let regs_before = chain.registrations();
    let old_before = admin_json(chain.admin(), "old");
    let stats_before = chain.stats();
    assert_eq!(regs_before.len(), 3, "{regs_before:?}");
    let first_pid = chain.current();
    let first_fds = fd_links(first_pid);

    let load = LookupLoad::start(port, expected(&[&a, &b]));
    load.wait_for_more(20);
    let mut times = Vec::with_capacity(CHAIN_LENGTH);
    for i in 0..CHAIN_LENGTH {
        let (took, pid) = chain.upgrade_timed();
        times.push(took);
        chain.handed_over_to(pid);
        assert_eq!(
            names_of(port),
            names_before,
            "NAMES after hand-over {} (stats: {})",
            i + 1,
            chain.stats()
        );
        assert_eq!(
            chain.registrations(),
            regs_before,
            "registrations after hand-over {}",
            i + 1
        );
    }
    load.wait_for_more(20);
    let report = load.finish();

    let mut sorted = times.clone();
    sorted.sort();
    let p50 = percentile(&sorted, 50.0);
    let p99 = percentile(&sorted, 99.0);
    let summary = format!(
        "epmd-rs hand-over time over {CHAIN_LENGTH} hand-overs (admin `upgrade` sent -> answer received): \
         p50 {p50:?}, p99 {p99:?}, min {:?}, max {:?}; lookups during them: {}, failed: {}, slowest {:?}\n\
         samples: {times:?}\n",
        sorted[0],
        sorted[sorted.len() - 1],
        report.lookups,
        report.failures.len(),
        report.slowest
    );
    eprint!("{summary}");
    println!("{summary}");
    // <target>/tmp is CARGO_TARGET_TMPDIR; the figures go next to it.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("handover-times.txt");
    let _ = fs::write(&target, &summary);

    assert!(
        report.failures.is_empty(),
        "{} of {} lookups failed:\n{}",
        report.failures.len(),
        report.lookups,
        report.failures.join("\n")
    );
    assert_eq!(
        admin_json(chain.admin(), "old"),
        old_before,
        "old names list changed"
    );
    let stats = chain.stats();
    assert_eq!(
        stats["handovers"].as_u64(),
        Some(CHAIN_LENGTH as u64),
        "handovers counter: {stats}"
    );
    assert_eq!(alive2_registered(&stats), alive2_registered(&stats_before));
    for pid in &chain.retired {
        assert!(!is_alive(*pid), "retired daemon {pid} still runs");
    }
    assert_eq!(chain.retired.len(), CHAIN_LENGTH);
    let last = chain.current();
    let settled = poll_true(PROCESS_TIMEOUT, || fd_links(last).len() == first_fds.len());
    assert!(
        settled,
        "fd leak: the first daemon held {} fds, the last holds {}\nfirst:\n{}\nlast:\n{}",
        first_fds.len(),
        fd_links(last).len(),
        first_fds.join("\n"),
        fd_links(last).join("\n")
    );
    // The raw registration's connection is the one we opened: still open, and served.
    let local = raw_conn.stream().local_addr().expect("local address");
    assert_eq!(peer_port(&regs_before["rawext"]), local.port());
    assert_nodes_connected(port, &chain.registrations(), &[&a, &b]);
}

/// Hand-overs that fail, the daemon's binary (a hand-over always starts it by its path)
/// being replaced each time: removed, a program that exits at once, one that reads the
/// first bytes of the hand-over and exits, one that answers nonsense. Each time `admin
/// upgrade` exits 1 with the reason, and the same process keeps serving every
/// registration, takes new ones, and leaks no fd; once the real binary is back, a real
/// hand-over works.
#[test]
fn failed_handovers_leave_the_old_daemon_serving() {
    let mut chain = Chain::start_own_copy(&[]);
    let port = chain.port();
    let node = ErlNode::start(port, "-sname", &erl::unique_name("hof"), &[]);
    let (_first_raw, _) = raw::register(port, "rawkeep", 40011, 6);
    let pid = chain.current();

    let exits = script(&chain.dir, "exit3", "#!/bin/sh\nexit 3\n");
    let reads_a_little = script(
        &chain.dir,
        "readfew",
        "#!/bin/bash\nread -r -N 5 -u \"$EPMD_RS_HANDOVER_FD\" got\necho \"readfew got [$got]\" >&2\nexit 3\n",
    );
    let answers_nonsense = script(
        &chain.dir,
        "nonsense",
        // Answers, then keeps the socket open (until the daemon kills it), so that the
        // daemon reads the answer rather than a broken pipe.
        "#!/bin/bash\nprintf 'NOPE\\n' >&\"$EPMD_RS_HANDOVER_FD\"\nexec cat <&\"$EPMD_RS_HANDOVER_FD\" >/dev/null\n",
    );
    let cases: [(&str, Option<PathBuf>, &[&str]); 4] = [
        ("missing binary", None, &["cannot start the new binary"]),
        ("exits at once", Some(exits), &["hand-over failed while"]),
        (
            "exits after reading",
            Some(reads_a_little),
            &["hand-over failed while"],
        ),
        (
            "answers nonsense",
            Some(answers_nonsense),
            &["unexpected answer from the new process: \"NOPE\""],
        ),
    ];

    let mut live: Vec<TcpStream> = Vec::new();
    for (i, (what, binary, reasons)) in cases.iter().enumerate() {
        let names_before = names_of(port);
        let regs_before = chain.registrations();
        let fds_before = fd_links(pid);
        chain.replace_binary(binary.as_deref());
        let json = i == 0;
        let out = chain.upgrade_cli(if json { &["--json"] } else { &[] });
        let stdout = out.stdout_text();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{what}: admin upgrade should exit 1\nstdout: {stdout}\nstderr: {}",
            out.stderr_text()
        );
        let reason = if json {
            let v: Value = serde_json::from_str(&stdout)
                .unwrap_or_else(|e| panic!("{what}: --json output {stdout:?}: {e}"));
            assert_eq!(v["ok"], Value::Bool(false), "{what}: {v}");
            v["error"].as_str().expect("error text").to_owned()
        } else {
            stdout
                .strip_prefix("hand-over failed, still serving: ")
                .unwrap_or_else(|| panic!("{what}: unexpected output {stdout:?}"))
                .to_owned()
        };
        assert!(
            reasons.iter().any(|r| reason.contains(r)),
            "{what}: the reason {reason:?} names none of {reasons:?}"
        );
        // Same process, same pid file, same registrations, nothing leaked.
        assert!(
            chain.first.is_running(),
            "{what}: the daemon exited\n{}",
            chain.log()
        );
        assert_eq!(
            read_pid_file(&chain.pid_file),
            Some(pid),
            "{what}: pid file"
        );
        assert_eq!(names_of(port), names_before, "{what}: NAMES");
        assert_eq!(chain.registrations(), regs_before, "{what}: registrations");
        assert!(
            poll_true(PROCESS_TIMEOUT, || fd_links(pid) == fds_before),
            "{what}: fds changed\nbefore:\n{}\nafter:\n{}",
            fds_before.join("\n"),
            fd_links(pid).join("\n")
        );
        // And it takes new registrations.
        let name = format!("rawnew{i}");
        let (conn, reply) = raw::register(port, &name, 40020 + i as u16, 6);
        assert_eq!(
            &reply[..2],
            &[raw::ALIVE2_X_RESP, 0],
            "{what}: {}",
            raw::hex(&reply)
        );
        live.push(conn);
        assert_eq!(
            names_of(port).get(&name),
            Some(&(40020 + i as u16)),
            "{what}"
        );
    }
    assert!(
        chain.log().contains("readfew got [EPMDR]"),
        "the script that reads did not get the greeting:\n{}",
        chain.log()
    );
    assert_eq!(chain.stats()["handovers"].as_u64(), Some(0));

    // The daemon recovered completely: with the real binary back in place, a real
    // hand-over keeps all of it.
    chain.replace_binary(Some(Path::new(BIN)));
    let names_before = names_of(port);
    let regs_before = chain.registrations();
    let new = handed_over_pid(&chain.upgrade_cli(&[]));
    chain.handed_over_to(new);
    assert_eq!(names_of(port), names_before);
    assert_eq!(chain.registrations(), regs_before);
    assert_nodes_connected(port, &chain.registrations(), &[&node]);
}

/// The old daemon writes a state version the new binary does not read
/// (`EPMD_RS_STATE_VERSION=99`): the successor refuses, `admin upgrade --json` says so and
/// exits 1, and the old daemon serves on; the same through SIGUSR2.
#[test]
fn refused_state_version_leaves_the_old_daemon_serving() {
    let mut chain = Chain::start(&[("EPMD_RS_STATE_VERSION", "99")]);
    let port = chain.port();
    let (_r1, _) = raw::register(port, "rawv1", 40031, 6);
    let (_r2, _) = raw::register(port, "rawv2", 40032, 5);
    let pid = chain.current();
    let names_before = names_of(port);
    let regs_before = chain.registrations();
    let fds_before = fd_links(pid);

    let out = chain.upgrade_cli(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout_text());
    let v: Value = serde_json::from_str(&out.stdout_text()).expect("JSON answer");
    assert_eq!(v["ok"], Value::Bool(false));
    let error = v["error"].as_str().expect("error");
    assert!(
        error.contains("refused") && error.contains("state version 99 is not supported"),
        "{error}"
    );
    assert!(chain.first.is_running());
    assert_eq!(read_pid_file(&chain.pid_file), Some(pid));
    assert_eq!(names_of(port), names_before);
    assert_eq!(chain.registrations(), regs_before);

    // SIGUSR2 takes the same path; the log says why and the daemon keeps serving.
    let refusals = |log: &str| log.matches("state version 99 is not supported").count();
    let before = refusals(&chain.log());
    send_signal(pid, libc::SIGUSR2);
    assert!(
        poll_true(UPGRADE_TIMEOUT, || refusals(&chain.log()) > before),
        "no refusal logged after SIGUSR2:\n{}",
        chain.log()
    );
    assert!(chain.log().contains("still serving"), "{}", chain.log());
    assert!(chain.first.is_running());
    assert_eq!(read_pid_file(&chain.pid_file), Some(pid));
    assert_eq!(names_of(port), names_before);
    assert_eq!(chain.registrations(), regs_before);
    assert!(
        poll_true(PROCESS_TIMEOUT, || fd_links(pid) == fds_before),
        "fds changed\nbefore:\n{}\nafter:\n{}",
        fds_before.join("\n"),
        fd_links(pid).join("\n")
    );
    let (_r3, reply) = raw::register(port, "rawv3", 40033, 6);
    assert_eq!(&reply[..2], &[raw::ALIVE2_X_RESP, 0]);
    assert_eq!(names_of(port).get("rawv3"), Some(&40033));
    assert_eq!(chain.stats()["handovers"].as_u64(), Some(0));
}

/// A successor that refuses after it has rebuilt the server (here: its pid file cannot be
/// written, because the path became a directory) must not remove the admin socket the old
/// daemon still serves on: after each of five refused SIGUSR2 hand-overs the socket file is
/// there and answers, from the same process.
#[test]
fn refused_handovers_never_remove_the_admin_socket() {
    let mut chain = Chain::start(&[]);
    let pid = chain.current();
    fs::remove_file(&chain.pid_file).expect("remove the pid file");
    fs::create_dir(&chain.pid_file).expect("a directory where the pid file was");
    let refusals = |log: &str| log.matches("while preparing to serve").count();
    for i in 1..=5 {
        send_signal(pid, libc::SIGUSR2);
        assert!(
            poll_true(UPGRADE_TIMEOUT, || refusals(&chain.log()) >= i),
            "refusal {i} not logged:\n{}",
            chain.log()
        );
        assert!(
            chain.admin().exists(),
            "the admin socket file is gone after refused hand-over {i}\n{}",
            chain.log()
        );
        let stats = chain.stats();
        assert_eq!(stats["handovers"].as_u64(), Some(0), "{stats}");
        assert!(chain.first.is_running(), "{}", chain.log());
    }
    assert_eq!(chain.current(), pid);
}

/// SIGUSR2 hands over as `admin upgrade` does: the pid file names a new process, the old
/// one exits, NAMES and every registration (with its connection) are unchanged.
#[test]
fn sigusr2_hands_over() {
    let mut chain = Chain::start(&[]);
    let port = chain.port();
    let node = ErlNode::start(port, "-sname", &erl::unique_name("hos"), &[]);
    let (raw_conn, _) = raw::register(port, "rawsig", 40041, 6);
    let names_before = names_of(port);
    let regs_before = chain.registrations();
    let stats_before = chain.stats();
    let old = chain.current();

    send_signal(old, libc::SIGUSR2);
    let new = poll_until(UPGRADE_TIMEOUT, || {
        read_pid_file(&chain.pid_file).filter(|p| *p != old)
    })
    .unwrap_or_else(|| panic!("the pid file never changed after SIGUSR2\n{}", chain.log()));
    chain.handed_over_to(new);

    assert_eq!(names_of(port), names_before);
    assert_eq!(chain.registrations(), regs_before);
    assert_eq!(
        peer_port(&regs_before["rawsig"]),
        raw_conn.local_addr().expect("local").port()
    );
    let stats = chain.stats();
    assert_eq!(stats["handovers"].as_u64(), Some(1));
    assert_eq!(alive2_registered(&stats), alive2_registered(&stats_before));
    assert_nodes_connected(port, &regs_before, &[&node]);
}
