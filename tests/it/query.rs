//! `epmd-rs query names|port` against our daemon and the C epmd (issue 3): the same
//! registrations give the same answers; IPv6 works; and a server that is not an epmd
//! (garbage, silence, nothing listening) gives a clear one-line error, exit 1, in bounded
//! time, never a hang or a panic.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client_compat::{Epmd, Kind};
use crate::support::c_epmd::{run_command, CmdOutput};
use crate::support::daemon::BIN;
use crate::support::ports::free_port;
use crate::support::raw::{self, alive2_req, hex, parse_names, Conn, IO_TIMEOUT};
use crate::support::wait::poll_until;

/// The most a query may take before the test kills it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(20);

/// A query against a server that answers garbage must end within this.
const GARBAGE_BOUND: Duration = Duration::from_secs(6);

/// A query against a silent server must give up within this ("within ~6 s").
const SILENT_BOUND: Duration = Duration::from_millis(7500);

/// Runs `epmd-rs query <args>`; its output and how long it took.
fn query(args: &[&str]) -> (CmdOutput, Duration) {
    let mut all = vec!["query"];
    all.extend_from_slice(args);
    let start = Instant::now();
    let out = run_command(Path::new(BIN), &all, QUERY_TIMEOUT);
    (out, start.elapsed())
}

/// Runs a query that must succeed with nothing on stderr; its stdout.
fn query_ok(args: &[&str]) -> String {
    let (out, _) = query(args);
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "query {args:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    out.stdout_text()
}

/// Runs a `--json` query and parses its single line.
fn query_json(args: &[&str]) -> Value {
    let text = query_ok(args);
    assert!(
        text.ends_with('\n') && text.trim_end().lines().count() == 1,
        "query {args:?}: expected one JSON line, got {text:?}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("query {args:?}: {e}: {text}"))
}

/// Asserts that a failed query exited 1 with nothing on stdout and exactly one line
/// `epmd-rs: ...` on stderr that contains one of `words` (case-insensitive) and no panic.
fn assert_clear_error(what: &str, out: &CmdOutput, words: &[&str]) {
    let stderr = out.stderr_text();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit {} (stderr {stderr:?})",
        out.status
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout {:?}",
        out.stdout_text()
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: panic: {stderr:?}"
    );
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "{what}: expected exactly one line on stderr: {stderr:?}"
    );
    assert!(stderr.starts_with("epmd-rs: "), "{what}: stderr {stderr:?}");
    let lower = stderr.to_lowercase();
    assert!(
        words.iter().any(|w| lower.contains(w)),
        "{what}: stderr {stderr:?} mentions none of {words:?}"
    );
}

/// Whether this host has an IPv6 loopback.
fn has_ipv6() -> bool {
    TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

/// Sends a framed ALIVE2_REQ with HighestVersion >= 6 and checks the success reply; the
/// open connection keeps the registration.
fn register(port: u16, req: &[u8]) -> Conn {
    let mut conn = Conn::connect(port);
    conn.write(req);
    let reply = conn.read_exact_timeout(6, IO_TIMEOUT);
    assert_eq!(&reply[..2], &[raw::ALIVE2_X_RESP, 0], "{}", hex(&reply));
    conn
}

/// The same registrations on a daemon: a normal node, a hidden one with an extra (NUL
/// included), and one with ei's node type and other versions.
fn register_set(port: u16) -> Vec<Conn> {
    vec![
        register(port, &alive2_req(5555, 77, 0, 6, 5, b"qalpha", &[])),
        register(
            port,
            &alive2_req(3333, 72, 0, 6, 5, b"qbeta", b"hello\0\xff"),
        ),
        register(port, &alive2_req(4444, 104, 1, 7, 6, b"qgamma", b"x")),
    ]
}

/// The NAMES answer of the daemon on `port`, from `query names` (as JSON) on `host`.
fn names_json(host: &str, port: u16) -> Value {
    query_json(&[
        "names",
        "--host",
        host,
        "--port",
        &port.to_string(),
        "--json",
    ])
}

/// The PORT_PLEASE2 answer for `name` from `query port` (as JSON) on `host`.
fn port_json(host: &str, port: u16, name: &str) -> Value {
    query_json(&[
        "port",
        name,
        "--host",
        host,
        "--port",
        &port.to_string(),
        "--json",
    ])
}

/// `query names` / `query port` against our daemon and the C epmd with the same
/// registrations: the same answers, and the right ones.
#[test]
fn same_answers_ours_and_c() {
    let ours = Epmd::start(Kind::Ours, false);
    let c = Epmd::start(Kind::C, false);
    let _ours_nodes = register_set(ours.port());
    let _c_nodes = register_set(c.port());

    let expected_nodes = json!([
        {"name": "qgamma", "port": 4444},
        {"name": "qbeta", "port": 3333},
        {"name": "qalpha", "port": 5555},
    ]);
    for (what, epmd) in [("ours", &ours), ("C", &c)] {
        let port = epmd.port();
        let names = names_json("127.0.0.1", port);
        assert_eq!(
            names,
            json!({"epmd_port": port, "nodes": expected_nodes}),
            "query names against {what}"
        );
        // The same as the raw NAMES reply.
        let (header, raw_nodes) = parse_names(&raw::names(port));
        assert_eq!(u32::from(port), header);
        let raw_nodes: Vec<Value> = raw_nodes
            .into_iter()
            .map(|(n, p)| json!({"name": n, "port": p}))
            .collect();
        assert_eq!(names["nodes"], Value::Array(raw_nodes), "{what}");
    }

    let ask = |epmd: &Epmd, name: &str| port_json("127.0.0.1", epmd.port(), name);
    for name in ["qalpha", "qbeta", "qgamma", "nosuch"] {
        let a = ask(&ours, name);
        let b = ask(&c, name);
        assert_eq!(a, b, "query port {name}: ours vs C");
    }
    assert_eq!(
        ask(&c, "qbeta"),
        json!({
            "name": "qbeta", "found": true, "port": 3333, "node_type": "hidden",
            "protocol": 0, "highest_version": 6, "lowest_version": 5,
            "extra_hex": "68656c6c6f00ff",
        })
    );
    assert_eq!(
        ask(&c, "qgamma"),
        json!({
            "name": "qgamma", "found": true, "port": 4444, "node_type": "other 104",
            "protocol": 1, "highest_version": 7, "lowest_version": 6, "extra_hex": "78",
        })
    );
    assert_eq!(ask(&c, "nosuch")["found"], json!(false));

    // The tables agree too (the names table names the epmd port on its first line).
    for name in ["qbeta", "nosuch"] {
        let args = |p: u16| {
            vec![
                "port".to_owned(),
                name.to_owned(),
                "--host".to_owned(),
                "127.0.0.1".to_owned(),
                "--port".to_owned(),
                p.to_string(),
            ]
        };
        let a = args(ours.port());
        let b = args(c.port());
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        assert_eq!(query_ok(&a), query_ok(&b), "query port {name} table");
    }
    let table = |p: u16| {
        let text = query_ok(&["names", "--host", "127.0.0.1", "--port", &p.to_string()]);
        let (first, rest) = text.split_once('\n').expect("a first line");
        assert!(first.contains(&p.to_string()), "first line {first:?}");
        rest.to_owned()
    };
    assert_eq!(table(ours.port()), table(c.port()), "query names table");
}

/// `--host ::1` reaches both daemons over IPv6 with the same answers.
#[test]
fn ipv6_host() {
    if !has_ipv6() {
        eprintln!("no IPv6 loopback on this host: skipped");
        return;
    }
    let ours = Epmd::start(Kind::Ours, false);
    let c = Epmd::start(Kind::C, false);
    let _ours_nodes = register_set(ours.port());
    let _c_nodes = register_set(c.port());
    for epmd in [&ours, &c] {
        let p = epmd.port();
        assert_eq!(names_json("::1", p), names_json("127.0.0.1", p));
        assert_eq!(
            port_json("::1", p, "qbeta"),
            port_json("127.0.0.1", p, "qbeta")
        );
    }
    assert_eq!(
        names_json("::1", ours.port())["nodes"],
        names_json("::1", c.port())["nodes"]
    );
    assert_eq!(
        port_json("::1", ours.port(), "qgamma"),
        port_json("::1", c.port(), "qgamma")
    );
}

/// What the fake server sends on each connection.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// These bytes, then close.
    Bytes(&'static [u8]),
    /// Garbage without end, until the client goes away.
    Endless,
}

/// A fake server on 127.0.0.1 answering every connection with garbage, in a thread.
struct GarbageServer {
    /// The port.
    port: u16,
    /// Set on drop.
    stop: Arc<AtomicBool>,
    /// The thread.
    thread: Option<JoinHandle<()>>,
}

impl GarbageServer {
    fn start(garbage: Garbage) -> GarbageServer {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind fake server");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || loop {
            let accepted = poll_until(QUERY_TIMEOUT, || {
                if stopped.load(Ordering::Relaxed) {
                    return Some(None);
                }
                listener.accept().ok().map(|(s, _)| Some(s))
            });
            let Some(Some(stream)) = accepted else { return };
            serve_garbage(stream, garbage, &stopped);
        });
        GarbageServer {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for GarbageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if !thread::panicking() {
                let _ = t.join();
            }
        }
    }
}

/// Reads what the client sent (briefly), then sends the garbage.
fn serve_garbage(mut stream: TcpStream, garbage: Garbage, stop: &AtomicBool) {
    stream.set_nonblocking(false).expect("blocking");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    let mut buf = [0u8; 256];
    let _ = stream.read(&mut buf);
    match garbage {
        Garbage::Bytes(bytes) => {
            let _ = stream.write_all(bytes);
        }
        Garbage::Endless => {
            stream
                .set_write_timeout(Some(Duration::from_millis(200)))
                .expect("write timeout");
            let chunk = [b'A'; 16 * 1024];
            let deadline = Instant::now() + QUERY_TIMEOUT;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match stream.write(&chunk) {
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

/// An HTTP server is not an epmd: both queries fail at once with a clear error.
#[test]
fn http_server_is_garbage() {
    let server = GarbageServer::start(Garbage::Bytes(
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    ));
    let port = server.port.to_string();
    for args in [
        vec!["names", "--host", "127.0.0.1", "--port", &port],
        vec!["names", "--host", "127.0.0.1", "--port", &port, "--json"],
        vec!["port", "foo", "--host", "127.0.0.1", "--port", &port],
        vec![
            "port",
            "foo",
            "--host",
            "127.0.0.1",
            "--port",
            &port,
            "--json",
        ],
    ] {
        let (out, took) = query(&args);
        assert_clear_error(&format!("{args:?} vs HTTP"), &out, &["garbage"]);
        assert!(took < GARBAGE_BOUND, "{args:?} took {took:?}");
    }
}

/// Other garbage: a NAMES header followed by bytes that are not lines, an unterminated
/// line, a port number out of range, a PORT2 reply cut short, or
/// another tag. (A result other than 0 is "not found", as for `erl_epmd`, so not tested.)
#[test]
fn other_garbage_replies() {
    let names_cases: [&[u8]; 4] = [
        b"\x00\x00\x11\x11\xff\xfe\xfd\n",
        b"\x00\x00\x11\x11name x at port 1",
        b"\x00\x00\x11\x11name x at port 70000\n",
        b"\x00\x00",
    ];
    for bytes in names_cases {
        let server = GarbageServer::start(Garbage::Bytes(bytes));
        let port = server.port.to_string();
        let (out, took) = query(&["names", "--host", "127.0.0.1", "--port", &port]);
        assert_clear_error(&format!("names vs {}", hex(bytes)), &out, &["garbage"]);
        assert!(took < GARBAGE_BOUND, "took {took:?}");
    }
    let port_cases: [&[u8]; 3] = [
        b"w\x00\x0d",
        b"w\x00\x0d\x05\x4d\x00\x00\x06\x00\x05\x00\x09abc\x00\x00",
        b"\x00",
    ];
    for bytes in port_cases {
        let server = GarbageServer::start(Garbage::Bytes(bytes));
        let port = server.port.to_string();
        let (out, took) = query(&["port", "abc", "--host", "127.0.0.1", "--port", &port]);
        assert_clear_error(&format!("port vs {}", hex(bytes)), &out, &["garbage"]);
        assert!(took < GARBAGE_BOUND, "took {took:?}");
    }
}

/// A server that closes without a word: a clear error for `query port`, and for `query
/// names` (a reply shorter than the header).
#[test]
fn closed_without_reply() {
    let server = GarbageServer::start(Garbage::Bytes(b""));
    let port = server.port.to_string();
    for args in [
        vec!["names", "--host", "127.0.0.1", "--port", &port],
        vec!["port", "foo", "--host", "127.0.0.1", "--port", &port],
    ] {
        let (out, took) = query(&args);
        assert_clear_error(
            &format!("{args:?} vs close"),
            &out,
            &["garbage", "no reply"],
        );
        assert!(took < GARBAGE_BOUND, "{args:?} took {took:?}");
    }
}

/// A server that never stops sending garbage: the query still ends, with a clear error.
#[test]
fn endless_garbage() {
    let server = GarbageServer::start(Garbage::Endless);
    let port = server.port.to_string();
    for args in [
        vec!["names", "--host", "127.0.0.1", "--port", &port],
        vec!["port", "foo", "--host", "127.0.0.1", "--port", &port],
    ] {
        let (out, took) = query(&args);
        assert_clear_error(
            &format!("{args:?} vs endless garbage"),
            &out,
            &["garbage", "timeout", "timed out", "too large"],
        );
        assert!(took < SILENT_BOUND, "{args:?} took {took:?}");
    }
}

/// A server that accepts and never answers: a timeout with a clear error, in bounded time.
fn silent_server(args_after: &[&str]) {
    // The kernel completes the handshake from the backlog; nothing ever reads or writes.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind silent server");
    let port = listener
        .local_addr()
        .expect("local_addr")
        .port()
        .to_string();
    let mut args = args_after.to_vec();
    args.extend_from_slice(&["--host", "127.0.0.1", "--port", &port]);
    let (out, took) = query(&args);
    assert_clear_error(
        &format!("{args:?} vs silence"),
        &out,
        &["timeout", "timed out", "no reply"],
    );
    assert!(took < SILENT_BOUND, "{args:?} gave up only after {took:?}");
    drop(listener);
}

#[test]
fn silent_server_names_times_out() {
    silent_server(&["names"]);
}

#[test]
fn silent_server_port_times_out() {
    silent_server(&["port", "foo"]);
}

/// Nothing listens: "cannot connect", at once.
#[test]
fn nothing_listening() {
    let port = free_port().to_string();
    let mut hosts = vec!["127.0.0.1", "localhost"];
    if has_ipv6() {
        hosts.push("::1");
    }
    for host in hosts {
        for args in [
            vec!["names", "--host", host, "--port", &port],
            vec!["port", "foo", "--host", host, "--port", &port, "--json"],
        ] {
            let (out, took) = query(&args);
            assert_clear_error(
                &format!("{args:?}, nothing listening"),
                &out,
                &["cannot connect"],
            );
            assert!(took < GARBAGE_BOUND, "{args:?} took {took:?}");
        }
    }
}
