//! Real Erlang/OTP nodes and the C epmd client against our daemon.
//!
//! Each test starts its own daemon on a free port and its own uniquely named nodes, so the
//! tests run in parallel. What is checked is what a deployment relies on (spec §9): nodes
//! register under their real distribution ports, find and call each other through the
//! daemon, are forgotten when they die, come back after the daemon restarts, and `erl`
//! can start the daemon itself; plus the C `epmd -names` client reading our replies.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::support::c_epmd::run_c_epmd;
use crate::support::daemon::{Daemon, DetachedDaemon, BIN};
use crate::support::erl::{
    atom, probe, probe_with, tagged_lines, unique_name, ErlCommand, ErlNode, NODE_READY_TIMEOUT,
};
use crate::support::ports::free_port;
use crate::support::raw::{hex, names, parse_names, parse_port2, port_please, NODE_TYPE_NORMAL};
use crate::support::wait::poll_until;

/// The `(name, port)` lines of the daemon's NAMES reply, in wire order (newest first),
/// after checking that the header carries the daemon's port.
fn registered(epmd_port: u16) -> Vec<(String, u16)> {
    let reply = names(epmd_port);
    let (header, entries) = parse_names(&reply);
    assert_eq!(
        header,
        u32::from(epmd_port),
        "NAMES header is not the daemon's port: {}",
        hex(&reply)
    );
    entries
}

/// The NAMES entry a ready node should have.
fn entry(node: &ErlNode) -> (String, u16) {
    (node.name().to_owned(), node.dist_port())
}

/// `entries` sorted, for comparisons where registration order is not determined.
fn sorted(mut entries: Vec<(String, u16)>) -> Vec<(String, u16)> {
    entries.sort();
    entries
}

/// Seconds since the Unix epoch, as the daemon's creation numbers count them.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Checks PORT_PLEASE2 for `node`: every field is what OTP 25 registers (spec §9.2).
fn assert_port_please_finds(epmd_port: u16, node: &ErlNode) {
    let reply = port_please(epmd_port, node.name());
    let info = parse_port2(&reply)
        .unwrap_or_else(|| panic!("PORT_PLEASE2 did not find {}: {}", node.name(), hex(&reply)));
    let context = format!("PORT2_RESP for {}: {}", node.name(), hex(&reply));
    assert_eq!(info.port, node.dist_port(), "{context}");
    assert_eq!(info.name, node.name().as_bytes(), "{context}");
    // OTP registers every node, hidden ones included, as type 77 over protocol 0.
    assert_eq!(info.node_type, NODE_TYPE_NORMAL, "{context}");
    assert_eq!(info.protocol, 0, "{context}");
    assert_eq!(info.highest_version, 6, "{context}");
    assert!(
        matches!(info.lowest_version, 5 | 6),
        "LowestVersion is neither 5 nor 6: {context}"
    );
    assert!(info.extra.is_empty(), "{context}");
}

/// A daemon and two `-sname` nodes, registered in the order `a`, then `b`.
fn daemon_with_two_nodes() -> (Daemon, ErlNode, ErlNode) {
    let daemon = Daemon::start(&[]);
    let a = ErlNode::start(daemon.port(), "-sname", &unique_name("a"), &[]);
    let b = ErlNode::start(daemon.port(), "-sname", &unique_name("b"), &[]);
    (daemon, a, b)
}

#[test]
fn sname_nodes_are_listed_newest_first_with_their_dist_ports() {
    let (daemon, a, b) = daemon_with_two_nodes();

    assert_eq!(registered(daemon.port()), vec![entry(&b), entry(&a)]);
}

#[test]
fn port_please2_returns_what_each_sname_node_registered() {
    let (daemon, a, b) = daemon_with_two_nodes();

    assert_port_please_finds(daemon.port(), &a);
    assert_port_please_finds(daemon.port(), &b);
}

#[test]
fn net_adm_names_on_a_node_lists_both_nodes_with_their_ports() {
    let (daemon, a, b) = daemon_with_two_nodes();

    let output = probe(
        daemon.port(),
        &format!(
            "{{ok, Ns}} = rpc:call({}, net_adm, names, []), \
             [io:format(\"NAME ~s ~b~n\", [N, P]) || {{N, P}} <- Ns]",
            atom(a.node())
        ),
    );

    let listed: Vec<String> = tagged_lines(&output, "NAME");
    for node in [&a, &b] {
        let line = format!("{} {}", node.name(), node.dist_port());
        assert!(
            listed.contains(&line),
            "net_adm:names() on {} lacks {line:?}: {listed:?}",
            a.node()
        );
    }
}

#[test]
fn sname_nodes_ping_and_rpc_each_other_through_the_daemon() {
    let (daemon, a, b) = daemon_with_two_nodes();
    let (qa, qb) = (atom(a.node()), atom(b.node()));

    let output = probe(
        daemon.port(),
        &format!(
            "io:format(\"PING ~p~n\", [rpc:call({qa}, net_adm, ping, [{qb}])]), \
             io:format(\"NODE ~p~n\", [rpc:call({qa}, rpc, call, [{qb}, erlang, node, []])]), \
             io:format(\"BACK ~p~n\", [rpc:call({qb}, net_adm, ping, [{qa}])])"
        ),
    );

    assert_eq!(tagged_lines(&output, "PING"), ["pong"], "{output}");
    assert_eq!(tagged_lines(&output, "NODE"), [b.node()], "{output}");
    assert_eq!(tagged_lines(&output, "BACK"), ["pong"], "{output}");
}

#[test]
fn node_creation_is_unix_time_plus_one_from_the_daemon() {
    let daemon = Daemon::start(&[]);
    let before = unix_now();
    let node = ErlNode::start(daemon.port(), "-sname", &unique_name("c"), &[]);
    let after = unix_now();

    let output = probe(
        daemon.port(),
        &format!(
            "io:format(\"CREATION ~b~n\", [rpc:call({}, erlang, system_info, [creation])])",
            atom(node.node())
        ),
    );

    let creation: u64 = tagged_lines(&output, "CREATION")
        .first()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no creation in probe output: {output}"));
    // A name never seen before gets `cr = time(NULL) + 1` (spec §4.3), and a v6 request
    // gets it as a u32, which the node adopts as its creation (spec §9.2).
    assert!(
        (before + 1..=after + 1).contains(&creation),
        "creation {creation} outside {}..={}",
        before + 1,
        after + 1
    );
}

#[test]
fn hidden_node_registers_under_its_dist_port() {
    let daemon = Daemon::start(&[]);
    let hidden = ErlNode::start(daemon.port(), "-sname", &unique_name("h"), &["-hidden"]);

    assert_eq!(registered(daemon.port()), vec![entry(&hidden)]);
    assert_port_please_finds(daemon.port(), &hidden);
}

#[test]
fn long_name_node_registers_and_is_reachable_by_long_name() {
    let daemon = Daemon::start(&[]);
    let alive = unique_name("a");
    let node = ErlNode::start(daemon.port(), "-name", &format!("{alive}@127.0.0.1"), &[]);

    assert_eq!(node.node(), format!("{alive}@127.0.0.1"));
    assert_eq!(registered(daemon.port()), vec![(alive, node.dist_port())]);
    assert_port_please_finds(daemon.port(), &node);
    let output = probe_with(
        daemon.port(),
        "-name",
        &format!(
            "io:format(\"NODE ~s~n\", [rpc:call({}, erlang, node, [])])",
            atom(node.node())
        ),
    );
    assert_eq!(tagged_lines(&output, "NODE"), [node.node()], "{output}");
}

#[test]
fn node_with_a_taken_name_exits_1_and_the_first_keeps_it() {
    let daemon = Daemon::start(&[]);
    let name = unique_name("dup");
    let first = ErlNode::start(daemon.port(), "-sname", &name, &[]);

    // `halt(0)` only runs if the second node wrongly registers.
    let second = ErlCommand::new(daemon.port(), "-sname", &name)
        .args(["-eval", "halt(0)"])
        .run(NODE_READY_TIMEOUT);

    assert_eq!(second.status.code(), Some(1), "{}", second.output);
    assert!(
        second
            .output
            .contains("seems to be in use by another Erlang node"),
        "{}",
        second.output
    );
    assert_eq!(registered(daemon.port()), vec![entry(&first)]);
}

#[test]
fn sigkilled_node_vanishes_from_names_within_one_second() {
    let daemon = Daemon::start(&[]);
    let survivor = ErlNode::start(daemon.port(), "-sname", &unique_name("s"), &[]);
    let mut victim = ErlNode::start(daemon.port(), "-sname", &unique_name("v"), &[]);
    assert_eq!(
        registered(daemon.port()),
        vec![entry(&victim), entry(&survivor)]
    );
    let gone = entry(&victim);

    let killed_at = Instant::now();
    victim.kill();
    let left = poll_until(Duration::from_secs(1), || {
        let now = registered(daemon.port());
        (!now.contains(&gone)).then_some(now)
    });

    let left = left.unwrap_or_else(|| {
        panic!(
            "{} still registered {:?} after SIGKILL",
            gone.0,
            killed_at.elapsed()
        )
    });
    assert_eq!(left, vec![entry(&survivor)]);
}

#[test]
fn nodes_register_again_after_the_daemon_is_killed_and_restarted() {
    let (mut daemon, a, b) = daemon_with_two_nodes();
    let port = daemon.port();
    let expected = sorted(vec![entry(&a), entry(&b)]);
    assert_eq!(sorted(registered(port)), expected);

    daemon.kill();
    let restarted = Daemon::builder().port(port).start();
    let back = poll_until(Duration::from_secs(5), || {
        let now = sorted(registered(restarted.port()));
        (now == expected).then_some(())
    });

    assert!(
        back.is_some(),
        "after 5 s the restarted daemon lists {:?}, expected {expected:?}",
        registered(port)
    );
}

#[test]
fn erl_epmd_flag_starts_our_daemon_detached_and_the_node_registers() {
    let port = free_port();
    // Armed before `erl` runs, so a failing test still kills the detached daemon.
    let detached = DetachedDaemon::on_port(port);
    let name = unique_name("x");

    // erlexec runs the `-epmd` command through system() and waits for it, with our
    // environment: ERL_EPMD_PORT (set by ErlCommand) and ERL_EPMD_ADDRESS reach it.
    let node = ErlCommand::new(port, "-sname", &name)
        .start_epmd(true)
        .args(["-epmd", &format!("\"{BIN}\" -daemon")])
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .start();

    let pid = detached
        .wait_pid(Duration::from_secs(5))
        .expect("no epmd-rs process listens on the port");
    assert_ne!(pid, node.pid());
    assert_eq!(registered(port), vec![entry(&node)]);
    drop(node);
    assert!(detached.kill(), "detached daemon {pid} survived SIGKILL");
}

#[test]
fn c_epmd_names_lists_the_nodes_registered_with_our_daemon() {
    let (daemon, a, b) = daemon_with_two_nodes();
    let port = daemon.port().to_string();

    let out = run_c_epmd(&["-port", &port, "-names"]);

    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        out.stderr_text()
    );
    assert_eq!(
        out.stdout_text(),
        format!(
            "epmd: up and running on port {port} with data:\n\
             name {} at port {}\n\
             name {} at port {}\n",
            b.name(),
            b.dist_port(),
            a.name(),
            a.dist_port()
        )
    );
    assert_eq!(out.stderr_text(), "");
}
