//! Node events (issue 12): every registration and unregistration is one structured event;
//! with `--log-format json` each is one JSON object per line with its fields; `admin
//! history [NAME]` shows the last 1000, oldest first. The journal side is checked under a
//! real systemd (tests/real-systemd/epmd-rs-service.sh, "node events in the journal").

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::handover::{admin_json, admin_request};
use crate::support::daemon::{Daemon, BIN};
use crate::support::erl::{unique_name, ErlCommand};
use crate::support::raw::{self, IO_TIMEOUT};
use crate::support::tmp::unique_path;
use crate::support::wait::poll_until;

/// Registers `name` and closes the connection at once (one register, one unregister).
fn register_and_close(port: u16, name: &str, node_port: u16) {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(&raw::alive2_req(
        node_port,
        77,
        0,
        6,
        5,
        name.as_bytes(),
        &[],
    ))
    .unwrap();
    let mut reply = [0u8; 6];
    c.read_exact(&mut reply).expect("ALIVE2 reply");
    assert_eq!(reply[1], 0, "{name} refused");
}

/// The JSON event lines of a daemon's stderr.
fn event_lines(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .collect()
}

fn history(socket: &Path, name: Option<&str>) -> Vec<Value> {
    let line = name.map_or("history".to_owned(), |n| format!("history {n}"));
    let reply = admin_request(socket, &line, IO_TIMEOUT).expect("admin history");
    serde_json::from_str::<Value>(&reply)
        .unwrap_or_else(|e| panic!("{e}: {reply}"))
        .as_array()
        .cloned()
        .expect("an array")
}

#[test]
fn a_thousand_events_of_real_and_raw_nodes_are_json_lines_and_admin_history() {
    let dir = unique_path("events");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("admin.sock");
    let d = Daemon::builder()
        .arg("--admin-socket")
        .arg(&socket)
        .args(["--log-format", "json"])
        .start();
    let port = d.port();
    poll_until(IO_TIMEOUT, || {
        std::os::unix::net::UnixStream::connect(&socket).ok()
    })
    .expect("admin socket");
    // A real node: registers, then is killed.
    let real = unique_name("evreal");
    let mut node = ErlCommand::new(port, "-sname", &real).start();
    node.kill();
    poll_until(Duration::from_secs(5), || {
        raw::parse_port2(&raw::port_please(port, &real))
            .is_none()
            .then_some(())
    })
    .expect("the real node unregistered");
    // 499 raw nodes register and go: with the real node, 1000 events.
    for i in 0..499 {
        register_and_close(port, &format!("ev{i}"), 7000 + (i % 1000) as u16);
    }
    let lines = poll_until(Duration::from_secs(10), || {
        let lines = event_lines(&d.stderr_text());
        (lines.len() >= 1000).then_some(lines)
    })
    .unwrap_or_else(|| {
        panic!(
            "not 1000 event lines: {}",
            event_lines(&d.stderr_text()).len()
        )
    });
    assert_eq!(lines.len(), 1000);
    let count = |kind: &str| lines.iter().filter(|l| l["event"] == kind).count();
    assert_eq!((count("register"), count("unregister")), (500, 500));
    println!("event JSON lines: 500 register + 500 unregister (1 real node, 499 raw)");
    let real_events: Vec<&Value> = lines
        .iter()
        .filter(|l| l["node"] == real.as_str())
        .collect();
    assert_eq!(real_events.len(), 2, "{real_events:?}");
    let (reg, unreg) = (real_events[0], real_events[1]);
    assert_eq!(reg["event"], "register");
    assert_eq!(reg["level"], "INFO");
    assert_eq!(reg["node_type"], "normal");
    assert_eq!(reg["port"], node.dist_port().to_string());
    assert!(
        reg["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{reg}"
    );
    assert!(reg["time"].as_str().unwrap().ends_with('Z'), "{reg}");
    assert!(
        reg["message"].as_str().unwrap().contains("registered"),
        "{reg}"
    );
    assert_eq!(unreg["event"], "unregister");
    assert_eq!(unreg["reason"], "closed");
    assert!(unreg.get("registered_secs").is_some(), "{unreg}");
    // admin history: bounded to the last 1000, oldest first; by name.
    register_and_close(port, "evlast", 7999);
    poll_until(Duration::from_secs(5), || {
        (history(&socket, Some("evlast")).len() == 2).then_some(())
    })
    .expect("evlast in the history");
    let all = history(&socket, None);
    assert_eq!(all.len(), 1000, "the history is bounded");
    assert_eq!(all[998]["node"], "evlast");
    assert_eq!(all[999]["event"], "unregister");
    // 1002 events so far: the real node's two are gone, the oldest left is ev0's register.
    assert_eq!(all[0]["event"], "register");
    assert_eq!(all[0]["node"], "ev0");
    assert!(history(&socket, Some(&real)).is_empty());
    let ev7 = history(&socket, Some("ev7"));
    assert_eq!(ev7.len(), 2, "{ev7:?}");
    assert_eq!(ev7[1]["reason"], "closed");
    // The table.
    let out = std::process::Command::new(BIN)
        .args(["admin", "--socket"])
        .arg(&socket)
        .args(["history", "ev7"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = text.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["TIME", "EVENT", "NODE", "PORT", "CREATION", "PEER", "REASON", "HELD"]
    );
    let unreg_row: Vec<&str> = rows.nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&unreg_row[1..3], ["unregister", "ev7"], "{text}");
    assert_eq!(unreg_row[6], "closed", "{text}");
    assert_eq!(admin_json(&socket, "stats")["registrations"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
