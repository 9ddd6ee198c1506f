//! `epmd-rs admin` against a live daemon (issue 3): every view over the admin Unix socket,
//! as a table and as JSON, with real registrations (raw ALIVE2 and a real `erl` node);
//! the socket's permissions; stale-socket replacement and live-socket refusal.
//!
//! Each test starts its own daemon with `--admin-socket <fresh dir>/admin.sock`. The
//! directory lives under the system temp dir (short paths: a Unix socket path is limited to
//! 108 bytes) and is removed when the test ends.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use epmd_rs::admin::{ConfigEntry, NodeView, OldView, Source, StatsView, WatchEvent};
use serde::de::DeserializeOwned;

use crate::support::c_epmd::{run_command, CmdOutput};
use crate::support::daemon::{Daemon, DaemonBuilder, BIN, EPMD_ENV_VARS};
use crate::support::erl::{atom, probe, tagged_lines, unique_name, ErlNode};
use crate::support::raw::{self, alive2_req, hex, parse_names, Conn, IO_TIMEOUT};
use crate::support::tmp;
use crate::support::tmp::TempDir;
use crate::support::wait::{poll_true, poll_until};

/// How long an admin command may run.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the admin socket may take to appear after the daemon listens on TCP.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a `watch` event may take to arrive.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A daemon builder with `--admin-socket <socket>`.
fn with_admin(socket: &Path) -> DaemonBuilder {
    Daemon::builder().arg("--admin-socket").arg(socket)
}

/// Starts `builder` and waits until the admin socket at `socket` accepts connections.
fn start_with_admin(builder: DaemonBuilder, socket: &Path) -> Daemon {
    let daemon = builder.start();
    wait_admin_socket(socket);
    daemon
}

/// Waits (bounded) until something accepts connections on the Unix socket `socket`.
fn wait_admin_socket(socket: &Path) {
    assert!(
        poll_true(SOCKET_TIMEOUT, || UnixStream::connect(socket).is_ok()),
        "admin socket {} not accepting within {SOCKET_TIMEOUT:?}",
        socket.display()
    );
}

/// Runs `epmd-rs admin --socket <socket> <args>` and returns its output.
fn admin_raw(socket: &Path, args: &[&str]) -> CmdOutput {
    let socket = socket.to_str().expect("UTF-8 socket path");
    let mut all = vec!["admin", "--socket", socket];
    all.extend_from_slice(args);
    run_command(Path::new(BIN), &all, ADMIN_TIMEOUT)
}

/// Runs an admin command that must succeed (exit 0, nothing on stderr); its stdout.
fn admin(socket: &Path, args: &[&str]) -> String {
    let out = admin_raw(socket, args);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "admin {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    String::from_utf8(out.stdout).expect("admin output is UTF-8")
}

/// `admin --json <view>` parsed with the library's serde types.
fn admin_json<T: DeserializeOwned>(socket: &Path, view: &str) -> T {
    let text = admin(socket, &["--json", view]);
    assert!(
        text.ends_with('\n') && text.trim_end().lines().count() == 1,
        "admin --json {view}: expected one JSON line, got {text:?}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("admin --json {view}: {e}: {text}"))
}

/// Parses an aligned table: the header line must hold `headers` in order, and each cell
/// of each row must start at its header's column (cells are separated by at least two
/// spaces). Returns the rows' cells, trimmed.
fn parse_table(text: &str, headers: &[&str]) -> Vec<Vec<String>> {
    let mut lines = text.lines();
    let head = lines
        .next()
        .unwrap_or_else(|| panic!("empty table: {text:?}"));
    assert!(head.is_ascii(), "non-ASCII header line {head:?}");
    let mut offsets = Vec::new();
    let mut from = 0;
    for (i, h) in headers.iter().enumerate() {
        let at = head[from..]
            .find(h)
            .map(|o| o + from)
            .unwrap_or_else(|| panic!("header {h:?} missing in {head:?}"));
        if i == 0 {
            assert_eq!(at, 0, "first header not at column 0: {head:?}");
        } else {
            assert!(
                head[from..at].trim().is_empty() && at - from >= 2,
                "headers {:?} and {h:?} not separated by two spaces: {head:?}",
                headers[i - 1]
            );
        }
        offsets.push(at);
        from = at + h.len();
    }
    assert_eq!(
        head[from..].trim(),
        "",
        "unexpected extra headers: {head:?}"
    );
    lines
        .map(|line| {
            assert!(line.is_ascii(), "non-ASCII table row {line:?}");
            offsets
                .iter()
                .enumerate()
                .map(|(i, &start)| {
                    let end = offsets.get(i + 1).copied().unwrap_or(line.len());
                    if start >= line.len() {
                        return String::new();
                    }
                    if i > 0 {
                        assert!(
                            line[..start].ends_with("  ") && !line[start..].starts_with(' '),
                            "column {:?} misaligned in row {line:?} (table:\n{text})",
                            headers[i]
                        );
                    }
                    line[start..end.min(line.len())].trim().to_owned()
                })
                .collect()
        })
        .collect()
}

/// Sends a framed ALIVE2_REQ and reads the fixed-size reply (6 bytes for HighestVersion
/// >= 6, else 4); returns the open connection and the creation that was sent.
fn register_raw(port: u16, req: &[u8], highest_version: u16) -> (Conn, u32) {
    let mut conn = Conn::connect(port);
    conn.write(req);
    if highest_version >= 6 {
        let r = conn.read_exact_timeout(6, IO_TIMEOUT);
        assert_eq!(&r[..2], &[raw::ALIVE2_X_RESP, 0], "ALIVE2: {}", hex(&r));
        (conn, u32::from_be_bytes([r[2], r[3], r[4], r[5]]))
    } else {
        let r = conn.read_exact_timeout(4, IO_TIMEOUT);
        assert_eq!(&r[..2], &[raw::ALIVE2_RESP, 0], "ALIVE2: {}", hex(&r));
        (conn, u32::from(u16::from_be_bytes([r[2], r[3]])))
    }
}

/// Registers `name` (v6, normal, no extra) and returns the connection and creation.
fn register_simple(port: u16, name: &str, node_port: u16) -> (Conn, u32) {
    let req = alive2_req(node_port, 77, 0, 6, 5, name.as_bytes(), &[]);
    register_raw(port, &req, 6)
}

/// The names the daemon lists, in NAMES order.
fn listed(port: u16) -> Vec<String> {
    parse_names(&raw::names(port))
        .1
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

// ---------------------------------------------------------------------------------------
// admin nodes
// ---------------------------------------------------------------------------------------

/// What a test expects of one registration in `admin nodes`.
struct Expected {
    name: String,
    port: u16,
    node_type: &'static str,
    protocol: u8,
    highest: u16,
    lowest: u16,
    creation: u32,
    extra_hex: &'static str,
    /// The registration connection's addresses as the test saw them: (ours, the daemon's).
    /// `None` for the erl node, whose socket the test does not own.
    addrs: Option<(SocketAddr, SocketAddr)>,
}

/// `admin nodes` shows every field of raw registrations (hidden with a non-empty extra,
/// v5, an unusual node type and protocol) and of a real `erl` node; `--json` parses into
/// `NodeView` and agrees with the table.
#[test]
fn admin_nodes_every_field() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    let daemon = start_with_admin(with_admin(&socket), &socket);
    let port = daemon.port();
    let before = unix_now();

    // Hidden (72), protocol 0, v6/5, extra with a NUL and high bytes.
    let extra = [0x00, 0xAB, 0x10, 0xFF];
    let req = alive2_req(5678, 72, 0, 6, 5, b"rawhidden", &extra);
    let (hidden, hidden_creation) = register_raw(port, &req, 6);
    // A v5 registration: the creation sent is 16-bit, 1..=3.
    let req = alive2_req(1234, 77, 0, 5, 5, b"rawv5", &[]);
    let (v5, v5_creation) = register_raw(port, &req, 5);
    assert!((1..=3).contains(&v5_creation), "v5 creation {v5_creation}");
    // ei's node type 'h' (104), protocol 1, versions 7/6.
    let req = alive2_req(4321, 104, 1, 7, 6, b"rawother", b"x");
    let (other, other_creation) = register_raw(port, &req, 7);

    // A real node, and its creation as the VM got it.
    let node = ErlNode::start(port, "-sname", &unique_name("admnode"), &[]);
    let out = probe(
        port,
        &format!(
            "Creation = rpc:call({}, erlang, system_info, [creation]), \
             io:format(\"CREATION ~p~n\", [Creation])",
            atom(node.node())
        ),
    );
    let node_creation: u32 = tagged_lines(&out, "CREATION")
        .first()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no creation from the probe: {out}"));
    // The probe registered too; wait until it is gone.
    let wanted = [node.name(), "rawother", "rawv5", "rawhidden"];
    assert!(
        poll_true(Duration::from_secs(10), || listed(port) == wanted),
        "NAMES is not {wanted:?}: {:?}",
        listed(port)
    );

    let addrs = |c: &Conn| {
        let s = c.stream();
        Some((s.local_addr().unwrap(), s.peer_addr().unwrap()))
    };
    let expected = [
        Expected {
            name: node.name().to_owned(),
            port: node.dist_port(),
            node_type: "normal",
            protocol: 0,
            highest: 6,
            lowest: 5,
            creation: node_creation,
            extra_hex: "",
            addrs: None,
        },
        Expected {
            name: "rawother".into(),
            port: 4321,
            node_type: "other 104",
            protocol: 1,
            highest: 7,
            lowest: 6,
            creation: other_creation,
            extra_hex: "78",
            addrs: addrs(&other),
        },
        Expected {
            name: "rawv5".into(),
            port: 1234,
            node_type: "normal",
            protocol: 0,
            highest: 5,
            lowest: 5,
            creation: v5_creation,
            extra_hex: "",
            addrs: addrs(&v5),
        },
        Expected {
            name: "rawhidden".into(),
            port: 5678,
            node_type: "hidden",
            protocol: 0,
            highest: 6,
            lowest: 5,
            creation: hidden_creation,
            extra_hex: "00ab10ff",
            addrs: addrs(&hidden),
        },
    ];

    let t0 = unix_now();
    let views: Vec<NodeView> = admin_json(&socket, "nodes");
    let t1 = unix_now();
    let table = admin(&socket, &["nodes"]);
    let t2 = unix_now();

    assert_eq!(
        views.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        wanted,
        "admin nodes is not in NAMES order (newest first): {views:#?}"
    );
    for (v, e) in views.iter().zip(&expected) {
        let ctx = format!("admin nodes entry {v:#?}");
        assert_eq!(v.name, e.name, "name; {ctx}");
        assert_eq!(v.port, e.port, "port; {ctx}");
        assert_eq!(v.node_type, e.node_type, "node type; {ctx}");
        assert_eq!(v.protocol, e.protocol, "protocol; {ctx}");
        assert_eq!(v.highest_version, e.highest, "highest version; {ctx}");
        assert_eq!(v.lowest_version, e.lowest, "lowest version; {ctx}");
        assert_eq!(v.creation, e.creation, "creation as sent; {ctx}");
        assert!(
            v.extra_hex.eq_ignore_ascii_case(e.extra_hex),
            "extra hex (expected {:?}); {ctx}",
            e.extra_hex
        );
        let peer: SocketAddr = v.peer.parse().unwrap_or_else(|_| panic!("peer; {ctx}"));
        let local: SocketAddr = v.local.parse().unwrap_or_else(|_| panic!("local; {ctx}"));
        match e.addrs {
            Some((ours, theirs)) => {
                assert_eq!(peer, ours, "peer is the test's socket; {ctx}");
                assert_eq!(local, theirs, "local is the daemon's end; {ctx}");
            }
            None => {
                assert!(peer.ip().is_loopback(), "peer of the erl node; {ctx}");
                assert!(local.ip().is_loopback(), "local of the erl node; {ctx}");
                assert_eq!(local.port(), port, "local port of the erl node; {ctx}");
            }
        }
        assert!(
            (before..=t0).contains(&v.registered_at),
            "registered-at not in [{before}, {t0}]; {ctx}"
        );
        assert_eq!(
            v.registered,
            epmd_rs::admin::table::rfc3339(v.registered_at),
            "JSON keeps both times; {ctx}"
        );
        assert!(
            v.age_secs >= t0 - v.registered_at && v.age_secs <= t1 - v.registered_at,
            "age not in [{}, {}]; {ctx}",
            t0 - v.registered_at,
            t1 - v.registered_at
        );
    }

    // The table: same rows, same order, every column.
    let headers = [
        "NAME",
        "PORT",
        "TYPE",
        "PROTO",
        "HIGH",
        "LOW",
        "CREATION",
        "EXTRA",
        "PEER",
        "LOCAL",
        "REGISTERED",
        "AGE",
    ];
    // "other 104" holds a space; split it back out of the table by the header offsets.
    let rows = parse_table(&table, &headers);
    assert_eq!(rows.len(), views.len(), "table rows vs JSON:\n{table}");
    for (row, v) in rows.iter().zip(&views) {
        let ctx = format!("table row {row:?} vs {v:?}\n{table}");
        let extra = if v.extra_hex.is_empty() {
            "-".to_owned()
        } else {
            v.extra_hex.clone()
        };
        let fixed = [
            v.name.clone(),
            v.port.to_string(),
            v.node_type.clone(),
            v.protocol.to_string(),
            v.highest_version.to_string(),
            v.lowest_version.to_string(),
            v.creation.to_string(),
            extra,
            v.peer.clone(),
            v.local.clone(),
            epmd_rs::admin::table::rfc3339(v.registered_at),
        ];
        assert_eq!(&row[..11], &fixed[..], "{ctx}");
        let age: u64 = row[11]
            .strip_suffix('s')
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("AGE cell {:?}; {ctx}", row[11]));
        assert!(
            age >= t1 - v.registered_at && age <= t2 - v.registered_at,
            "table age; {ctx}"
        );
    }
    drop((hidden, v5, other));
}

// ---------------------------------------------------------------------------------------
// admin old
// ---------------------------------------------------------------------------------------

/// After an unregistration, `admin old` lists the name with its last port and creation.
#[test]
fn admin_old_after_unregister() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    let daemon = start_with_admin(with_admin(&socket), &socket);
    let port = daemon.port();

    let empty: Vec<OldView> = admin_json(&socket, "old");
    assert!(empty.is_empty(), "old list of a fresh daemon: {empty:?}");

    let (_stay, _) = register_simple(port, "stays", 1111);
    let (leaving, creation) = register_simple(port, "leaving", 4242);
    drop(leaving);
    let old = poll_until(Duration::from_secs(10), || {
        let old: Vec<OldView> = admin_json(&socket, "old");
        (!old.is_empty()).then_some(old)
    })
    .expect("admin old stayed empty after the unregistration");
    assert_eq!(
        old,
        vec![OldView {
            name: "leaving".into(),
            port: 4242,
            creation,
        }]
    );
    let nodes: Vec<NodeView> = admin_json(&socket, "nodes");
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["stays"]
    );

    let table = admin(&socket, &["old"]);
    let rows = parse_table(&table, &["NAME", "LAST PORT", "CREATION"]);
    assert_eq!(
        rows,
        vec![vec![
            "leaving".to_owned(),
            "4242".to_owned(),
            creation.to_string()
        ]],
        "admin old table:\n{table}"
    );
}

/// A `nodes` reply larger than the 1 MiB a `watch` client may fall behind (registrations
/// with 255-character names and 1000-byte extras) arrives whole: the limit is the
/// watchers', not every reply's.
#[test]
fn admin_nodes_reply_over_one_mib_arrives_whole() {
    const COUNT: usize = 500;
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    let daemon = start_with_admin(with_admin(&socket), &socket);
    let port = daemon.port();
    let extra: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let mut conns = Vec::with_capacity(COUNT);
    for i in 0..COUNT {
        let mut name = format!("big{i}-");
        name.extend(std::iter::repeat_n('x', 255 - name.len()));
        let req = alive2_req(10000 + i as u16, 77, 0, 6, 5, name.as_bytes(), &extra);
        conns.push(register_raw(port, &req, 6).0);
    }
    let text = admin(&socket, &["--json", "nodes"]);
    assert!(
        text.len() > 1 << 20,
        "the reply is only {} bytes: the test needs more than 1 MiB",
        text.len()
    );
    let nodes: Vec<NodeView> = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("admin --json nodes ({} bytes): {e}", text.len()));
    assert_eq!(nodes.len(), COUNT);
    assert!(nodes
        .iter()
        .all(|n| n.name.len() == 255 && n.extra_hex.len() == 2000));
    // The table view of the same registrations too.
    let table = admin(&socket, &["nodes"]);
    assert_eq!(table.lines().count(), COUNT + 1);
}

// ---------------------------------------------------------------------------------------
// admin stats
// ---------------------------------------------------------------------------------------

/// `admin stats` counters move: a NAMES request adds one to `requests.names`, a garbage
/// request one to `malformed_requests`; the table agrees with the JSON.
#[test]
fn admin_stats_counters_move() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    let daemon = start_with_admin(with_admin(&socket), &socket);
    let port = daemon.port();
    let (_node, _) = register_simple(port, "counted", 2222);

    let s0: StatsView = admin_json(&socket, "stats");
    assert_eq!(s0.registrations, 1, "{s0:#?}");
    for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
        assert!(
            s0.listening.contains(&addr),
            "listening lacks {addr}: {s0:#?}"
        );
    }

    let reply = raw::names(port);
    assert!(reply.len() > 4, "NAMES reply {}", hex(&reply));
    // An unknown tag: closed without a reply.
    let garbage = raw::request(port, &[0, 1, 0xFF]);
    assert!(garbage.is_empty(), "garbage got a reply: {}", hex(&garbage));

    let s1: StatsView = admin_json(&socket, "stats");
    let count = |s: &StatsView, k: &str| s.requests.get(k).copied().unwrap_or(0);
    assert_eq!(
        count(&s1, "names"),
        count(&s0, "names") + 1,
        "requests.names did not move by one: before {s0:#?}\nafter {s1:#?}"
    );
    assert_eq!(
        s1.malformed_requests,
        s0.malformed_requests + 1,
        "malformed_requests did not move by one: before {s0:#?}\nafter {s1:#?}"
    );
    assert_eq!(s1.accepted, s0.accepted + 2, "accepted: {s0:#?} -> {s1:#?}");
    assert!(
        s1.bytes_in >= s0.bytes_in + 6,
        "bytes_in: {s0:#?} -> {s1:#?}"
    );
    assert!(
        s1.bytes_out >= s0.bytes_out + reply.len() as u64,
        "bytes_out: {s0:#?} -> {s1:#?}"
    );
    assert!(s1.peak_registrations >= 1);
    assert!(s1.uptime_secs >= s0.uptime_secs);

    // The table, with no epmd request in between, shows the same counters.
    let table = admin(&socket, &["stats"]);
    let rows = parse_table(&table, &["STAT", "VALUE"]);
    let get = |key: &str| {
        rows.iter()
            .find(|r| r[0] == key)
            .map(|r| r[1].clone())
            .unwrap_or_else(|| panic!("stats table lacks {key:?}:\n{table}"))
    };
    assert_eq!(get("registrations"), s1.registrations.to_string());
    assert_eq!(get("accepted"), s1.accepted.to_string());
    assert_eq!(get("malformed requests"), s1.malformed_requests.to_string());
    assert_eq!(get("requests names"), count(&s1, "names").to_string());
    assert_eq!(get("bytes in"), s1.bytes_in.to_string());
    assert_eq!(get("bytes out"), s1.bytes_out.to_string());
    assert_eq!(get("listening"), s1.listening.join(" "));
    assert_eq!(
        get("connections registration"),
        s1.connections
            .get("registration")
            .copied()
            .unwrap_or(0)
            .to_string()
    );
}

// ---------------------------------------------------------------------------------------
// admin config
// ---------------------------------------------------------------------------------------

/// `admin config` reports each value with its source: flag, environment or default.
#[test]
fn admin_config_sources() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    // The port from ERL_EPMD_PORT; -relaxed_command_check and -address as flags; the
    // packet timeout and the admin group left at their defaults.
    let builder = with_admin(&socket)
        .port_via_env()
        .arg("-relaxed_command_check");
    let daemon = start_with_admin(builder, &socket);
    let port = daemon.port();

    let entries: Vec<ConfigEntry> = admin_json(&socket, "config");
    let find = |key: &str| {
        entries
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("admin config lacks {key:?}: {entries:#?}"))
    };
    let expect = |key: &str, value: &str, source: Source| {
        let e = find(key);
        assert_eq!(
            (e.value.as_str(), e.source),
            (value, source),
            "admin config {key}: {entries:#?}"
        );
    };
    expect("port", &port.to_string(), Source::Environment);
    expect("relaxed-command-check", "true", Source::Flag);
    expect("address", "127.0.0.1", Source::Flag);
    expect("packet-timeout", "60", Source::Default);
    expect(
        "admin-socket",
        socket.to_str().expect("UTF-8 path"),
        Source::Flag,
    );
    expect("admin-group", "none", Source::Default);

    let table = admin(&socket, &["config"]);
    let rows = parse_table(&table, &["SETTING", "VALUE", "SOURCE"]);
    let from_json: Vec<Vec<String>> = entries
        .iter()
        .map(|e| vec![e.key.clone(), e.value.clone(), e.source.to_string()])
        .collect();
    assert_eq!(rows, from_json, "admin config table vs JSON:\n{table}");
    for r in &rows {
        assert!(
            ["flag", "environment", "default"].contains(&r[2].as_str()),
            "source {:?}",
            r[2]
        );
    }
}

// ---------------------------------------------------------------------------------------
// admin watch
// ---------------------------------------------------------------------------------------

/// A running `admin watch` child whose stdout lines arrive on a channel; killed by PID
/// on drop.
struct Watcher {
    /// The `epmd-rs admin watch` process.
    child: Child,
    /// Its stdout, line by line.
    lines: Receiver<String>,
    /// Where its stderr goes.
    stderr_path: PathBuf,
}

impl Watcher {
    /// Spawns `epmd-rs admin --socket <socket> [--json] watch`.
    fn spawn(socket: &Path, json: bool) -> Watcher {
        let stderr_path = tmp::unique_path("watch.stderr");
        let mut cmd = Command::new(BIN);
        for var in EPMD_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.arg("admin").arg("--socket").arg(socket);
        if json {
            cmd.arg("--json");
        }
        cmd.arg("watch")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(tmp::create_log(&stderr_path));
        let mut child = cmd.spawn().expect("spawn admin watch");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher {
            child,
            lines,
            stderr_path,
        }
    }

    /// The next line within `timeout`.
    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Skips lines until one satisfies `pred`, for at most `timeout`.
    fn find(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if pred(&line) {
                return Some(line);
            }
        }
    }

    /// What the watcher wrote to stderr.
    fn stderr_text(&self) -> String {
        tmp::read_lossy(&self.stderr_path)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.stderr_path);
    }
}

/// Whether `line` (JSON or table form) is a `kind` event for `name`.
fn is_event(line: &str, kind: &str, name: &str) -> bool {
    if let Ok(e) = serde_json::from_str::<WatchEvent>(line) {
        return e.event == kind && e.name == name;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    words.get(1) == Some(&kind) && words.get(2) == Some(&name)
}

/// Makes sure every watcher is subscribed: registers (and at once unregisters) a sync
/// name until each watcher has reported it, then drains each up to the last sync name's
/// unregister event, so that the streams hold nothing older afterwards.
fn sync_watchers(port: u16, watchers: &mut [&mut Watcher]) {
    let mut synced = vec![false; watchers.len()];
    let mut last = String::new();
    for attempt in 0..40 {
        last = format!("watchsync{attempt}");
        drop(register_simple(port, &last, 1));
        for (w, done) in watchers.iter_mut().zip(synced.iter_mut()) {
            if !*done {
                *done = w
                    .find(Duration::from_millis(250), |l| {
                        is_event(l, "register", &last)
                    })
                    .is_some();
            }
        }
        if synced.iter().all(|&s| s) {
            break;
        }
    }
    for (w, done) in watchers.iter_mut().zip(&synced) {
        assert!(
            *done,
            "admin watch never reported a registration; stderr: {}",
            w.stderr_text()
        );
        assert!(
            w.find(EVENT_TIMEOUT, |l| is_event(l, "unregister", &last))
                .is_some(),
            "admin watch did not report the unregistration of {last}"
        );
    }
}

/// `admin watch --json` (and the table form) sees a register, then an unregister, with
/// the name, port and creation.
#[test]
fn admin_watch_register_then_unregister() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    let daemon = start_with_admin(with_admin(&socket), &socket);
    let port = daemon.port();

    let mut json = Watcher::spawn(&socket, true);
    let mut text = Watcher::spawn(&socket, false);
    sync_watchers(port, &mut [&mut json, &mut text]);

    let t0 = unix_now();
    let (conn, creation) = register_simple(port, "watched", 4321);
    let reg = json
        .next_line(EVENT_TIMEOUT)
        .expect("no register event from watch --json");
    drop(conn);
    let unreg = json
        .next_line(EVENT_TIMEOUT)
        .expect("no unregister event from watch --json");
    let t1 = unix_now();

    let parse = |line: &str| -> WatchEvent {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("watch --json line {line:?}: {e}"))
    };
    let (reg, unreg) = (parse(&reg), parse(&unreg));
    assert_eq!(
        (
            reg.event.as_str(),
            reg.name.as_str(),
            reg.port,
            reg.creation
        ),
        ("register", "watched", 4321, creation),
        "{reg:?}"
    );
    assert_eq!(
        (
            unreg.event.as_str(),
            unreg.name.as_str(),
            unreg.port,
            unreg.creation
        ),
        ("unregister", "watched", 4321, creation),
        "{unreg:?}"
    );
    for e in [&reg, &unreg] {
        assert!(
            (t0..=t1).contains(&e.at),
            "event time not in [{t0}, {t1}]: {e:?}"
        );
        // JSON keeps both forms.
        assert_eq!(e.time, epmd_rs::admin::table::rfc3339(e.at), "{e:?}");
    }

    // The table form: `<at> <event> <name> port <port> creation <creation>`.
    for kind in ["register", "unregister"] {
        let line = text
            .next_line(EVENT_TIMEOUT)
            .unwrap_or_else(|| panic!("no {kind} line from watch"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let creation = creation.to_string();
        assert_eq!(
            &words[1..],
            &[
                kind,
                "watched",
                "port",
                "4321",
                "creation",
                creation.as_str()
            ],
            "watch line {line:?}"
        );
        // An RFC 3339 UTC time: 2026-11-28T03:17:29Z.
        let at = words[0].as_bytes();
        assert!(
            at.len() == 20 && at[4] == b'-' && at[10] == b'T' && at[19] == b'Z',
            "watch line {line:?}"
        );
    }
    assert!(json.child.try_wait().expect("try_wait").is_none());
}

// ---------------------------------------------------------------------------------------
// The socket file
// ---------------------------------------------------------------------------------------

/// The admin socket's mode (permission bits) and group.
fn socket_mode(socket: &Path) -> (u32, u32) {
    let meta = fs::symlink_metadata(socket).expect("stat the admin socket");
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        socket.display()
    );
    (meta.permissions().mode() & 0o7777, meta.gid())
}

/// Without `--admin-group` the socket is 0600.
#[test]
fn admin_socket_mode_0600() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    let _daemon = start_with_admin(with_admin(&socket), &socket);
    let (mode, _) = socket_mode(&socket);
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

/// With `--admin-group 0` (root's gid) and `--admin-group root` the socket is 0660 and
/// belongs to that group.
#[test]
fn admin_socket_mode_0660_with_group() {
    for group in ["0", "root"] {
        let dir = TempDir::short("admin");
        let socket = dir.join("admin.sock");
        let builder = with_admin(&socket).args(["--admin-group", group]);
        let _daemon = start_with_admin(builder, &socket);
        let (mode, gid) = socket_mode(&socket);
        assert_eq!(mode, 0o660, "mode {mode:o} with --admin-group {group}");
        assert_eq!(gid, 0, "group with --admin-group {group}");
        admin(&socket, &["nodes"]);
    }
}

/// A stale socket file (bound, then its listener dropped) is replaced at start.
#[test]
fn stale_socket_is_replaced() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    drop(UnixListener::bind(&socket).expect("bind a soon-stale socket"));
    assert!(
        fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()),
        "the stale socket file was not left behind"
    );
    assert!(
        UnixStream::connect(&socket).is_err(),
        "stale socket answers"
    );

    let daemon = start_with_admin(with_admin(&socket), &socket);
    let (_node, _) = register_simple(daemon.port(), "afterstale", 3333);
    let nodes: Vec<NodeView> = admin_json(&socket, "nodes");
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["afterstale"]
    );
    assert_eq!(socket_mode(&socket).0, 0o600);
}

/// A live socket (another daemon's) is never taken over: the second daemon exits 1 with
/// a clear message, and the first keeps serving on it.
#[test]
fn live_socket_is_refused() {
    let dir = TempDir::short("admin");
    let socket = dir.join("admin.sock");
    let first = start_with_admin(with_admin(&socket), &socket);
    let (_node, _) = register_simple(first.port(), "firstnode", 4444);

    let mut second = with_admin(&socket).spawn();
    let status = second
        .wait_exit(Duration::from_secs(10))
        .expect("the second daemon did not exit");
    let stderr = second.stderr_text();
    assert_eq!(
        status.code(),
        Some(1),
        "second daemon: {status}; stderr {stderr:?}"
    );
    let path = socket.to_str().expect("UTF-8 path");
    assert!(
        stderr.contains(path) && stderr.contains("in use"),
        "the second daemon's stderr does not explain the refusal: {stderr:?}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected a one-line message: {stderr:?}"
    );

    // The first daemon still owns and serves the socket.
    assert!(
        fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()),
        "the socket file is gone"
    );
    let nodes: Vec<NodeView> = admin_json(&socket, "nodes");
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["firstnode"]
    );
    let stats: StatsView = admin_json(&socket, "stats");
    assert!(
        stats
            .listening
            .contains(&format!("127.0.0.1:{}", first.port())),
        "the admin socket answers for another daemon: {stats:#?}"
    );
    assert!(TcpStream::connect(("127.0.0.1", first.port())).is_ok());
}
