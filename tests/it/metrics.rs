//! `--metrics-listen` (issue 12): `/metrics` in the Prometheus text format and OpenMetrics,
//! its counters equal to `admin stats`; `/livez` and `/readyz` (503 at the connection cap
//! and back); hostile HTTP clients (oversized, slow, pipelined, non-GET, binary, a flood)
//! answered and closed with registrations untouched; a real Prometheus server scraping
//! real Erlang nodes' daemon, queried with PromQL, and `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::handover::admin_json;
use crate::support::daemon::Daemon;
use crate::support::erl::{unique_name, ErlCommand};
use crate::support::ports::free_port;
use crate::support::raw::{self, Conn, IO_TIMEOUT};
use crate::support::tmp::unique_path;
use crate::support::wait::poll_until;

/// How long the daemon gives an HTTP client (`HTTP_DEADLINE`).
const HTTP_DEADLINE: Duration = Duration::from_secs(5);

/// A daemon with an admin socket and `--metrics-listen 127.0.0.1:<free port>`.
struct Served {
    daemon: Daemon,
    admin: PathBuf,
    metrics: SocketAddr,
    dir: PathBuf,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn serve(extra: &[&str]) -> Served {
    let dir = unique_path("metrics");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let admin = dir.join("admin.sock");
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let daemon = Daemon::builder()
        .arg("--admin-socket")
        .arg(&admin)
        .arg("--metrics-listen")
        .arg(metrics.to_string())
        .args(extra)
        .start();
    let up = poll_until(IO_TIMEOUT, || TcpStream::connect(metrics).ok().map(|_| ()));
    assert!(
        up.is_some(),
        "{metrics} not serving: {}",
        daemon.stderr_text()
    );
    poll_until(IO_TIMEOUT, || {
        std::os::unix::net::UnixStream::connect(&admin).ok()
    })
    .expect("admin socket");
    Served {
        daemon,
        admin,
        metrics,
        dir,
    }
}

/// An HTTP exchange: writes `request`, reads to EOF (bounded); the raw response.
fn http_raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Status code, headers (lower-case names) and body of a response.
fn parse_response(raw: &[u8]) -> (u16, BTreeMap<String, String>, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn get(
    addr: SocketAddr,
    path: &str,
    accept: Option<&str>,
) -> (u16, BTreeMap<String, String>, String) {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n");
    parse_response(&http_raw(addr, req.as_bytes()))
}

/// The samples of an exposition: `name{labels}` → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (
                k.to_owned(),
                v.parse().unwrap_or_else(|_| panic!("bad value {l:?}")),
            )
        })
        .collect()
}

fn metric(all: &BTreeMap<String, f64>, key: &str) -> f64 {
    *all.get(key).unwrap_or_else(|| panic!("{key} missing"))
}

#[test]
fn metrics_equal_admin_stats_and_health_answers() {
    let s = serve(&[]);
    let port = s.daemon.port();
    let (a, _) = raw::register(port, "metra", 7001, 6);
    let (b, _) = raw::register(port, "metrb", 7002, 6);
    let (_c, _) = raw::register(port, "metrc", 7003, 6);
    drop(a); // unregistered: its connection closed
    drop(b);
    assert!(poll_until(IO_TIMEOUT, || {
        let n = raw::parse_names(&raw::names(port)).1.len();
        (n == 1).then_some(())
    })
    .is_some());
    raw::port_please(port, "metrc");
    raw::port_please(port, "nosuch");
    raw::request(port, &[0, 1, 0xff]); // malformed
    let (status, headers, body) = get(s.metrics, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(headers["connection"], "close");
    let stats = admin_json(&s.admin, "stats");
    let m = samples(&body);
    println!(
        "scrape ({} bytes, {} samples):\n{body}",
        body.len(),
        m.len()
    );
    assert_eq!(metric(&m, "epmd_registered_nodes"), 1.0);
    assert_eq!(stats["registrations"], 1);
    for (key, n) in stats["requests"].as_object().expect("requests") {
        let (request, outcome) = key.split_once('.').unwrap_or((key, "answered"));
        let sample = format!("epmd_requests_total{{request=\"{request}\",outcome=\"{outcome}\"}}");
        assert_eq!(Some(metric(&m, &sample)), n.as_f64(), "{sample}");
    }
    let pairs = [
        (
            "epmd_requests_total{request=\"malformed\",outcome=\"closed\"}",
            "malformed_requests",
        ),
        ("epmd_accept_errors_total", "accept_errors"),
        ("epmd_handovers_total", "handovers"),
        ("epmd_accepted_connections_total", "accepted"),
        ("epmd_deadline_expiries_total", "deadline_expiries"),
        (
            "epmd_refused_connections_total{reason=\"policy\"}",
            "policy_refusals",
        ),
        (
            "epmd_refused_connections_total{reason=\"non_local\"}",
            "non_local_refusals",
        ),
    ];
    for (map, family, label) in [
        ("refused", "epmd_refused_connections_total", "reason"),
        ("unregistrations", "epmd_unregistrations_total", "reason"),
    ] {
        for (key, n) in stats[map].as_object().expect(map) {
            let sample = format!("{family}{{{label}=\"{key}\"}}");
            assert_eq!(Some(metric(&m, &sample)), n.as_f64(), "{sample}");
        }
    }
    for (sample, field) in pairs {
        assert_eq!(
            Some(metric(&m, sample)),
            stats[field].as_f64(),
            "{sample} vs {field}"
        );
    }
    assert_eq!(
        metric(
            &m,
            "epmd_requests_total{request=\"malformed\",outcome=\"closed\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "epmd_registrations_total"), 3.0);
    assert_eq!(
        metric(&m, "epmd_unregistrations_total{reason=\"closed\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "epmd_open_connections{kind=\"registration\"}"),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "epmd_request_duration_seconds_count{request=\"port_please2\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "epmd_request_duration_seconds_bucket{request=\"alive2\",le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(metric(&m, "process_open_fds") > 3.0);
    assert!(metric(&m, "process_resident_memory_bytes") > 0.0);
    assert!(metric(&m, "process_start_time_seconds") > 1.7e9);
    // OpenMetrics when asked.
    let (status, headers, body) = get(
        s.metrics,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE epmd_requests counter\n"));
    // Health.
    let (status, _, body) = get(s.metrics, "/livez", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, body) = get(s.metrics, "/readyz", None);
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    // `admin config` reports the setting.
    let config = admin_json(&s.admin, "config");
    let entry = config
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "metrics-listen")
        .cloned();
    assert_eq!(
        entry.map(|e| e["value"].clone()),
        Some(Value::from(s.metrics.to_string()))
    );
}

#[test]
fn readyz_is_503_at_the_connection_cap_and_200_after_relief() {
    let s = serve(&["--max-connections", "8"]);
    let port = s.daemon.port();
    assert_eq!(get(s.metrics, "/readyz", None).0, 200);
    let held: Vec<Conn> = (0..8).map(|_| Conn::connect(port)).collect();
    let t0 = Instant::now();
    let went = poll_until(Duration::from_secs(1), || {
        let (status, _, body) = get(s.metrics, "/readyz", None);
        (status == 503).then_some(body)
    })
    .unwrap_or_else(|| panic!("/readyz not 503 within 1 s of the cap"));
    let to_503 = t0.elapsed();
    assert!(
        went.starts_with("not ready: the connection cap is reached"),
        "{went}"
    );
    // One more epmd connection is refused at the cap, and counted so on both sides.
    let mut refused = Conn::connect(port);
    assert!(
        refused.is_closed_within(IO_TIMEOUT),
        "a 9th connection stayed open"
    );
    let m = samples(&get(s.metrics, "/metrics", None).2);
    let stats = admin_json(&s.admin, "stats");
    assert_eq!(
        metric(&m, "epmd_refused_connections_total{reason=\"cap\"}"),
        1.0
    );
    assert_eq!(stats["refused"]["cap"], 1, "{stats}");
    assert_eq!(stats["capped_connections"], 1, "{stats}");
    drop(held);
    let t1 = Instant::now();
    poll_until(Duration::from_secs(1), || {
        (get(s.metrics, "/readyz", None).0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("/readyz not 200 within 1 s of relief"));
    println!(
        "readiness: 503 {:?} after the cap was reached ({went:?}), 200 {:?} after relief",
        to_503,
        t1.elapsed()
    );
}

#[test]
fn hostile_http_clients_are_answered_and_closed_with_registrations_untouched() {
    let s = serve(&[]);
    let port = s.daemon.port();
    let (_node, _) = raw::register(port, "hostilehttp", 7100, 6);
    // Slow: a partial request, then nothing; opened first so its deadline runs meanwhile.
    let mut slow = TcpStream::connect(s.metrics).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    let slow_since = Instant::now();
    let cases: [(&str, Vec<u8>, u16); 7] = [
        (
            "non-GET",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
            405,
        ),
        (
            "binary",
            vec![
                0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xff, 0x00, b'\r', b'\n', b'\r', b'\n',
            ],
            400,
        ),
        (
            "oversized",
            {
                let mut r = b"GET /metrics HTTP/1.1\r\n".to_vec();
                while r.len() < 8192 {
                    r.extend_from_slice(b"X-Pad: 0123456789012345678901234567890123456789\r\n");
                }
                r
            },
            431,
        ),
        (
            "too many headers",
            {
                let mut r = b"GET /metrics HTTP/1.1\r\n".to_vec();
                for _ in 0..40 {
                    r.extend_from_slice(b"A: b\r\n");
                }
                r.extend_from_slice(b"\r\n");
                r
            },
            431,
        ),
        ("unknown path", b"GET /admin HTTP/1.1\r\n\r\n".to_vec(), 404),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            400,
        ),
        (
            "pipelined",
            b"GET /livez HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n"
                .to_vec(),
            200,
        ),
    ];
    for (what, request, want) in &cases {
        let raw = http_raw(s.metrics, request);
        let (status, headers, body) = parse_response(&raw);
        assert_eq!(status, *want, "{what}: {body}");
        assert_eq!(headers["connection"], "close", "{what}");
        // One response only, then EOF (the pipelined requests after the first are not read).
        assert_eq!(
            String::from_utf8_lossy(&raw).matches("HTTP/1.1 ").count(),
            1,
            "{what}: {}",
            String::from_utf8_lossy(&raw)
        );
        println!("hostile HTTP {what}: {status}");
    }
    // A flood of idle clients: beyond 16 open, the next is closed at once.
    let flood: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(s.metrics).unwrap())
        .collect();
    let mut extra = Conn::connect_to(s.metrics);
    assert!(
        extra.is_closed_within(IO_TIMEOUT),
        "the 17th HTTP client is not closed"
    );
    // Meanwhile epmd service is untouched.
    let reply = raw::parse_port2(&raw::port_please(port, "hostilehttp")).expect("a PORT2 reply");
    assert_eq!(reply.port, 7100);
    drop(flood);
    // The slow client is closed at its deadline, unanswered.
    slow.set_read_timeout(Some(HTTP_DEADLINE + IO_TIMEOUT))
        .unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let waited = slow_since.elapsed();
    assert!(rest.is_empty(), "the slow client got {rest:?}");
    assert!(
        waited >= HTTP_DEADLINE - Duration::from_millis(100)
            && waited < HTTP_DEADLINE + Duration::from_secs(2),
        "{waited:?}"
    );
    let stats = admin_json(&s.admin, "stats");
    assert_eq!(stats["registrations"], 1);
    let m = samples(&get(s.metrics, "/metrics", None).2);
    assert_eq!(metric(&m, "epmd_registered_nodes"), 1.0);
    assert!(s.daemon.stderr_text().is_empty() || !s.daemon.stderr_text().contains("panick"));
}

/// A child process killed by pid when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A PromQL instant query through Prometheus's HTTP API: the first result's value.
fn promql(api: SocketAddr, query: &str) -> Option<f64> {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    // Prometheus may not listen yet: no panic, the caller polls.
    let mut conn = TcpStream::connect(api).ok()?;
    conn.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    conn.write_all(
        format!("GET /api/v1/query?query={q} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = conn.read_to_end(&mut raw);
    let (status, headers, body) = parse_response(&raw);
    if status != 200 {
        return None;
    }
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t == "chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    let v: Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn a_real_prometheus_scrapes_real_nodes_and_promtool_accepts_the_exposition() {
    assert!(
        have("prometheus") && have("promtool"),
        "Debian's prometheus package is needed (make deps installs it)"
    );
    let s = serve(&[]);
    let port = s.daemon.port();
    let nodes: Vec<_> = (0..2)
        .map(|i| {
            let name = unique_name(&format!("prom{i}"));
            ErlCommand::new(port, "-sname", &name).start()
        })
        .collect();
    // promtool: the exposition as scraped (it reads the Prometheus text format).
    let (_, _, body) = get(s.metrics, "/metrics", None);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{body}"
    );
    println!("promtool check metrics: no problem reported");
    // A real Prometheus scraping every 100 ms.
    let dir = s.dir.join("prom");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: epmd\n    scrape_interval: 100ms\n    scrape_timeout: 100ms\n    static_configs:\n      - targets: ['{}']\n",
            s.metrics
        ),
    )
    .unwrap();
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus"),
    );
    let t0 = Instant::now();
    let answer = poll_until(Duration::from_secs(60), || {
        promql(api, "sum(epmd_registered_nodes{job=\"epmd\"})").filter(|v| *v == 2.0)
    });
    assert_eq!(
        answer,
        Some(2.0),
        "PromQL never saw the 2 nodes; prometheus log:\n{}",
        std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
    );
    println!(
        "PromQL sum(epmd_registered_nodes) = 2 (2 real Erlang nodes), {:?} after prometheus started",
        t0.elapsed()
    );
    drop(nodes);
}

/// The daemon's CPU time so far, in nanoseconds (`/proc/<pid>/schedstat`).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("schedstat")
}

#[test]
fn a_scrape_at_10000_nodes_costs_the_daemon_under_a_millisecond() {
    const NODES: usize = 10_000;
    const SCRAPES: u32 = 200;
    crate::exhaustion::ensure_fd_limit(NODES as u64 + 1024);
    let s = serve(&[]);
    let port = s.daemon.port();
    // Registrations written back to back, replies read afterwards.
    let mut held = Vec::with_capacity(NODES);
    for i in 0..NODES {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let req = raw::alive2_req(
            20_000 + (i % 40_000) as u16,
            77,
            0,
            6,
            5,
            format!("scr{i}").as_bytes(),
            &[],
        );
        c.write_all(&req).expect("write");
        held.push(c);
    }
    for c in &mut held {
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reply = [0u8; 6];
        c.read_exact(&mut reply).expect("ALIVE2 reply");
        assert_eq!(reply[1], 0, "registration refused");
    }
    let first = samples(&get(s.metrics, "/metrics", None).2);
    assert_eq!(metric(&first, "epmd_registered_nodes"), NODES as f64);
    let pid = s.daemon.pid();
    let before = cpu_ns(pid);
    let t0 = Instant::now();
    for _ in 0..SCRAPES {
        let (status, _, _) = get(s.metrics, "/metrics", None);
        assert_eq!(status, 200);
    }
    let wall = t0.elapsed() / SCRAPES;
    let per_scrape = Duration::from_nanos((cpu_ns(pid) - before) / u64::from(SCRAPES));
    println!(
        "scrape cost at {NODES} nodes: {per_scrape:?} of daemon CPU per scrape (accept, read, render, write, close), {wall:?} wall per scrape seen by the client ({} build)",
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    assert!(
        per_scrape < Duration::from_millis(if cfg!(debug_assertions) { 2 } else { 1 }),
        "{per_scrape:?} per scrape"
    );
}

#[test]
fn the_metrics_listener_is_handed_over_with_the_daemon() {
    let s = serve(&[]);
    let port = s.daemon.port();
    let (_node, _) = raw::register(port, "handedmetrics", 7200, 6);
    let reply = crate::handover::admin_request(&s.admin, "upgrade", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("admin upgrade: {e}"));
    let v: Value = serde_json::from_str(&reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    assert_eq!(v["ok"], Value::Bool(true), "{v}");
    let successor = v["pid"].as_u64().expect("pid") as u32;
    struct Reap(u32);
    impl Drop for Reap {
        fn drop(&mut self) {
            crate::handover::kill_daemon_pid(self.0);
        }
    }
    let _reap = Reap(successor);
    // The same address answers, from the successor, with the counters handed over.
    let m = samples(&get(s.metrics, "/metrics", None).2);
    assert_eq!(metric(&m, "epmd_handovers_total"), 1.0);
    assert_eq!(metric(&m, "epmd_registered_nodes"), 1.0);
    assert_eq!(metric(&m, "epmd_registrations_total"), 1.0);
    assert_eq!(get(s.metrics, "/readyz", None).0, 200);
}
