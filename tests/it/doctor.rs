//! `epmd-rs doctor NODE@HOST` on the loopback interface, against our daemon and real Erlang
//! nodes: each verdict, its exit code and JSON word, within the run's time bound. The same
//! verdicts across hosts (network namespaces) are in `cluster`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::daemon::{Daemon, BIN};
use crate::support::erl::{unique_name, ErlCommand};
use crate::support::ports::free_port;
use crate::support::raw;

/// One doctor run: exit code, stdout, wall time.
pub(crate) struct Run {
    /// The exit code.
    pub(crate) code: i32,
    /// What it printed.
    pub(crate) stdout: String,
    /// How long it took.
    pub(crate) took: Duration,
}

/// Runs `epmd-rs doctor <args>` and returns its exit code, output and duration.
pub(crate) fn doctor(args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new(BIN)
        .arg("doctor")
        .args(args)
        .env_remove("ERL_EPMD_PORT")
        .output()
        .expect("run epmd-rs doctor");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        took: started.elapsed(),
    }
}

/// Runs doctor with `--json` and checks that the verdict word, the exit code and the JSON
/// agree with `word`/`code`; returns the JSON.
pub(crate) fn expect_verdict(args: &[&str], word: &str, code: i32) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let run = doctor(&all);
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("doctor {args:?}: not JSON ({e}): {}", run.stdout));
    assert_eq!(json["verdict"], word, "doctor {args:?}: {}", run.stdout);
    assert_eq!(run.code, code, "doctor {args:?}: {}", run.stdout);
    assert_eq!(json["exit_code"], code);
    assert!(
        run.took < Duration::from_secs(9),
        "doctor {args:?} took {:?}",
        run.took
    );
    json
}

#[test]
fn every_loopback_verdict_with_its_exit_code() {
    let d = Daemon::start(&[]);
    let port = d.port().to_string();
    let name = unique_name("doc");
    let node = ErlCommand::new(d.port(), "-name", &format!("{name}@127.0.0.1")).start();
    let target = node.node().to_owned();
    let p = ["--port", &port];

    // Healthy, without and with the cookie; the text form has one line per probe.
    let json = expect_verdict(&[&target, p[0], p[1]], "ok", 0);
    let steps: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "resolve",
            "epmd",
            "port_please",
            "dist_connect",
            "handshake",
            "challenge",
            "cookie"
        ]
    );
    let cookie = crate::support::erl::COOKIE;
    let json = expect_verdict(&[&target, p[0], p[1], "--cookie", cookie], "ok", 0);
    assert!(json["steps"][6]["detail"]
        .as_str()
        .unwrap()
        .starts_with("accepted"));
    let text = doctor(&[&target, p[0], p[1]]).stdout;
    assert_eq!(text.lines().count(), 8, "{text}");
    assert!(text.ends_with(
        "verdict: ok (exit 0): The node is reachable as a distributed Erlang node from here.\n"
    ));

    // The cookie, from the command line and from a file.
    expect_verdict(
        &[&target, p[0], p[1], "--cookie", "wrong"],
        "cookie_rejected",
        17,
    );
    let file = crate::support::tmp::unique_path("cookie");
    std::fs::write(&file, format!("{cookie}\n")).unwrap();
    let f = file.to_str().unwrap();
    expect_verdict(&[&target, p[0], p[1], "--cookie-file", f], "ok", 0);
    std::fs::write(&file, "nope").unwrap();
    expect_verdict(
        &[&target, p[0], p[1], "--cookie-file", f],
        "cookie_rejected",
        17,
    );
    let _ = std::fs::remove_file(&file);

    // The node calls itself NAME@127.0.0.1, not NAME@localhost.
    let json = expect_verdict(
        &[&format!("{name}@localhost"), p[0], p[1]],
        "host_name_mismatch",
        18,
    );
    assert!(json["steps"][5]["detail"]
        .as_str()
        .unwrap()
        .contains(&format!("calls itself {target}")));

    // A typo: not registered, with the real name as a near miss.
    let typo = format!("{}x@127.0.0.1", name);
    let json = expect_verdict(&[&typo, p[0], p[1]], "name_not_registered", 13);
    let detail = json["steps"][2]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("near misses: {name}")), "{detail}");

    // A registration whose port nobody listens on, and one with no common version.
    let dead = free_port();
    let (_keep, _) = raw::register(d.port(), "deadport", dead, 6);
    expect_verdict(&["deadport@127.0.0.1", p[0], p[1]], "dist_unreachable", 14);
    let (_keep4, _) = raw::register(d.port(), "ancient", node.dist_port(), 4);
    let json = expect_verdict(&["ancient@127.0.0.1", p[0], p[1]], "handshake_refused", 16);
    assert!(json["steps"][3]["detail"]
        .as_str()
        .unwrap()
        .contains("no common version"));

    // No epmd on that port; a host that does not resolve.
    let nobody = free_port().to_string();
    expect_verdict(&[&target, "--port", &nobody], "epmd_unreachable", 11);
    expect_verdict(&["a@host.invalid", p[0], p[1]], "host_unresolved", 10);

    // Arguments: not NAME@HOST, a bad timeout.
    assert_eq!(doctor(&["nohost"]).code, 1);
    assert_eq!(doctor(&[&target, "--timeout", "0"]).code, 1);
    assert_eq!(
        doctor(&[&target, "--cookie-file", "/nonexistent/cookie"]).code,
        1
    );
    assert_eq!(doctor(&[]).code, 1, "clap's usage error");
}

#[test]
fn a_policy_refusing_the_prober_is_epmd_refused() {
    // 127.0.0.1 is not in 192.0.2.0/24: PORT_PLEASE2 from it is closed without a reply.
    let d = Daemon::start(&["--port-please-allow", "192.0.2.0/24"]);
    let port = d.port().to_string();
    let json = expect_verdict(&["a@127.0.0.1", "--port", &port], "epmd_refused", 12);
    assert!(json["steps"][2]["detail"]
        .as_str()
        .unwrap()
        .contains("closed the connection without a reply"));
}

#[test]
fn a_node_refusing_our_name_is_handshake_refused() {
    let d = Daemon::start(&[]);
    let name = unique_name("picky");
    let node = ErlCommand::new(d.port(), "-name", &format!("{name}@127.0.0.1"))
        .args(["-eval", "net_kernel:allow(['only@127.0.0.1'])"])
        .start();
    let port = d.port().to_string();
    let json = expect_verdict(&[node.node(), "--port", &port], "handshake_refused", 16);
    assert!(json["steps"][4]["detail"]
        .as_str()
        .unwrap()
        .contains("status not_allowed"));
}

#[test]
fn erl_epmd_port_is_the_default_port() {
    let d = Daemon::start(&[]);
    let out = Command::new(BIN)
        .args(["doctor", "x@127.0.0.1", "--json"])
        .env("ERL_EPMD_PORT", d.port().to_string())
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["verdict"], "name_not_registered");
    assert_eq!(out.status.code(), Some(13));
}

/// Runs `epmd-rs query names <args>`: exit code, stdout, wall time.
pub(crate) fn query_names(args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new(BIN)
        .args(["query", "names"])
        .args(args)
        .env_remove("ERL_EPMD_PORT")
        .output()
        .expect("run epmd-rs query names");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        took: started.elapsed(),
    }
}

#[test]
fn query_hosts_asks_every_host_at_once() {
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(&[])).collect();
    let _regs: Vec<_> = daemons
        .iter()
        .enumerate()
        .map(|(i, d)| raw::register(d.port(), &format!("n{i}"), 40_000 + i as u16, 6).0)
        .collect();
    let mut hosts: Vec<String> = daemons
        .iter()
        .map(|d| format!("127.0.0.1:{}", d.port()))
        .collect();
    let healthy = hosts.join(",");
    let run = query_names(&["--hosts", &healthy, "--json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    for (i, h) in json["hosts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(h["state"], "ok");
        assert_eq!(h["nodes"][0]["name"], format!("n{i}"));
        assert_eq!(h["nodes"][0]["port"], 40_000 + i);
    }

    // Two silent hosts (listeners that never accept) with a 1.5 s timeout each, one refused,
    // one unresolved: the run takes about one timeout, not the sum of them.
    let silent: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    for s in &silent {
        hosts.push(format!("127.0.0.1:{}", s.local_addr().unwrap().port()));
    }
    hosts.push(format!("127.0.0.1:{}", free_port()));
    let file = crate::support::tmp::unique_path("hosts.erlang");
    let text: String = hosts.iter().map(|h| format!("'{h}'.\n")).collect();
    std::fs::write(&file, text + "% a comment\nplain.invalid\n").unwrap();
    let run = query_names(&[
        "--hosts-file",
        file.to_str().unwrap(),
        "--timeout",
        "1.5",
        "--json",
    ]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let json: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    let states: Vec<&str> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    let expected = [
        "ok",
        "ok",
        "ok",
        "no_answer",
        "no_answer",
        "refused",
        "unresolved",
    ];
    assert_eq!(states, expected, "{}", run.stdout);
    // Measured inside the run (process start-up left out): one timeout, not two.
    let ms = json["elapsed_ms"].as_u64().unwrap();
    assert!(
        (1500..3000).contains(&ms),
        "two silent hosts with 1.5 s each took {ms} ms: asked one after the other?"
    );

    // The table: host, state, time, nodes.
    let run = query_names(&["--hosts", &healthy]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.starts_with("HOST"), "{}", run.stdout);
    assert!(run.stdout.contains(" n1:40001"), "{}", run.stdout);
    assert_eq!(run.stdout.lines().count(), 4, "{}", run.stdout);
}

/// A pre-OTP 23 node's side of the version 5 handshake, on one connection: reads the `n`
/// name, answers `sok`, sends an `n` challenge naming itself `full_name`, checks the
/// digest of `cookie` and acknowledges it (or closes, as a node does on a wrong cookie).
/// Returns the version and name the doctor sent.
fn old_node_once(listener: &std::net::TcpListener, full_name: &str, cookie: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let (mut s, _) = listener.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s2 = s.try_clone().unwrap();
    let mut frame = || {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut body).unwrap();
        body
    };
    let name = frame();
    assert_eq!(name[0], b'n', "a version 5 name");
    let version = u16::from_be_bytes([name[1], name[2]]);
    let flags = u32::from_be_bytes(name[3..7].try_into().unwrap());
    assert_ne!(flags & 0x4, 0, "extended references");
    let sent = String::from_utf8_lossy(&name[7..]).into_owned();
    let challenge: u32 = 0x1234_5678;
    let mut out = raw::frame(b"sok");
    let mut ch = vec![b'n', 0, 5];
    ch.extend_from_slice(&0x0000_7ffcu32.to_be_bytes());
    ch.extend_from_slice(&challenge.to_be_bytes());
    ch.extend_from_slice(full_name.as_bytes());
    out.extend(raw::frame(&ch));
    s2.write_all(&out).unwrap();
    let reply = frame();
    assert_eq!(reply[0], b'r');
    let theirs = u32::from_be_bytes(reply[1..5].try_into().unwrap());
    let expect = epmd_rs::doctor::handshake::digest(cookie.as_bytes(), challenge);
    if reply[5..] == expect {
        let mut ack = vec![b'a'];
        ack.extend_from_slice(&epmd_rs::doctor::handshake::digest(
            cookie.as_bytes(),
            theirs,
        ));
        s2.write_all(&raw::frame(&ack)).unwrap();
    }
    (version, sent)
}

#[test]
fn a_version_5_node_gets_the_old_handshake() {
    let d = Daemon::start(&[]);
    let port = d.port().to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dist = listener.local_addr().unwrap().port();
    let (_reg, _) = raw::register(d.port(), "old", dist, 5);
    let server = std::thread::spawn(move || {
        let first = old_node_once(&listener, "old@127.0.0.1", "c00kie");
        let second = old_node_once(&listener, "old@127.0.0.1", "c00kie");
        (first, second)
    });
    let json = expect_verdict(
        &["old@127.0.0.1", "--port", &port, "--cookie", "c00kie"],
        "ok",
        0,
    );
    assert!(json["steps"][4]["detail"]
        .as_str()
        .unwrap()
        .starts_with("version 5, status ok"));
    expect_verdict(
        &["old@127.0.0.1", "--port", &port, "--cookie", "wrong"],
        "cookie_rejected",
        17,
    );
    let ((v1, n1), (v2, _)) = server.join().unwrap();
    assert_eq!((v1, v2), (5, 5));
    assert!(
        n1.starts_with("epmd_rs_doctor_") && n1.ends_with("@127.0.0.1"),
        "{n1}"
    );
}

#[test]
fn an_otp25_node_registered_as_version_5_is_retried_with_version_6() {
    let d = Daemon::start(&[]);
    let name = unique_name("v5");
    let node = ErlCommand::new(d.port(), "-name", &format!("{name}@127.0.0.1"))
        .env("ERL_EPMD_DIST_HIGH", "5")
        .start();
    let port = d.port().to_string();
    let cookie = crate::support::erl::COOKIE;
    let json = expect_verdict(&[node.node(), "--port", &port, "--cookie", cookie], "ok", 0);
    assert!(json["steps"][2]["detail"]
        .as_str()
        .unwrap()
        .ends_with("(versions 5-5)"));
    assert!(json["steps"][4]["detail"]
        .as_str()
        .unwrap()
        .contains("retrying with version 6"));
}
