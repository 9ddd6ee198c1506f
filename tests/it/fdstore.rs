//! Registrations that survive a crash (issue 7, systemd part): with `--fd-store` (or
//! systemd's `$FDSTORE`), the daemon keeps every registration connection and a state memfd
//! in the service manager's fd store; a daemon started after a `kill -9` with the stored
//! fds (`LISTEN_FDS` / `LISTEN_FDNAMES`) serves every registration again, on the same
//! connection, with the same creation, and no node notices. Connections the daemon closes
//! (STOP, the node going away) leave the store (`FDSTOREREMOVE=1`).
//!
//! The service manager is [`crate::supervisor::Supervisor`], which speaks the documented
//! sd_notify and LISTEN_FDS protocols.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::handover::{
    admin_json, admin_request, alive2_registered, is_alive, kill_daemon_pid, names_of, peer_port,
    probe_nodes, read_pid_file, registrations, TempDir, PROCESS_TIMEOUT, UPGRADE_TIMEOUT,
};
use crate::supervisor::{is_state_name, Supervised, Supervisor};
use crate::support::erl::{self, ErlNode};
use crate::support::raw;
use crate::support::wait::{poll_true, poll_until};

/// How long a notification may take to arrive.
pub(crate) const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long nodes are watched for a re-registration after a restart (OTP re-registers
/// 2 s after its epmd connection closes).
const NO_REREGISTRATION_WINDOW: Duration = Duration::from_secs(3);

/// Hand-overs done before the crash in the fd-store hand-over test (each one is a chance
/// for the old and the new process's notifications to cross).
const HANDOVER_ROUNDS: usize = 10;

/// Kills, by PID, daemons that are not our children (hand-over successors) on drop.
#[derive(Debug, Default)]
pub(crate) struct PidGuard(pub(crate) Vec<u32>);

impl Drop for PidGuard {
    fn drop(&mut self) {
        for pid in &self.0 {
            kill_daemon_pid(*pid);
        }
    }
}

/// The registrations the stored state lists, name → fd name of their connection.
pub(crate) fn stored_registrations(state: &Value) -> BTreeMap<String, String> {
    state["registrations"]
        .as_array()
        .map(|regs| {
            regs.iter()
                .filter_map(|r| {
                    Some((
                        r["name"].as_str()?.to_owned(),
                        r["conn"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What is wrong with the stored state, if anything, for registrations `wanted` (sorted)
/// written by `writer` (any writer if `None`): it must list exactly those registrations,
/// each one's connection must be among the state's connections (as a registration
/// connection), and that connection must be in the store exactly once. Returns
/// name → connection fd name when all holds.
pub(crate) fn check_stored(
    sup: &Supervisor,
    wanted: &[String],
    writer: Option<u32>,
) -> Result<BTreeMap<String, String>, String> {
    if sup.state_names().len() != 1 {
        return Err(format!("state fds in the store: {:?}", sup.state_names()));
    }
    let state = sup.state().ok_or("the stored state does not parse")?;
    if let Some(pid) = writer {
        if state["writer_pid"].as_u64() != Some(u64::from(pid)) {
            return Err(format!("not written by pid {pid} (yet): {state}"));
        }
    }
    let regs = stored_registrations(&state);
    if regs.keys().cloned().collect::<Vec<_>>() != wanted {
        return Err(format!("registrations {:?}: {state}", regs.keys()));
    }
    let listed: Vec<&str> = state["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["phase"] == "registered")
                .filter_map(|c| c["fd"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for (name, conn) in &regs {
        if !listed.contains(&conn.as_str()) {
            return Err(format!(
                "registration {name} names connection {conn:?}, which the state does not \
                 list among its registration connections {listed:?}: {state}"
            ));
        }
        if sup.stored_count(conn) != 1 {
            return Err(format!(
                "connection {conn:?} of {name} is stored {} times; store: {:?}",
                sup.stored_count(conn),
                sup.store_names()
            ));
        }
    }
    Ok(regs)
}

/// Waits until [`check_stored`] holds; returns name → connection fd name. Panics with the
/// last problem and every notification otherwise.
pub(crate) fn wait_stored_by(
    sup: &mut Supervisor,
    names: &[&str],
    writer: Option<u32>,
) -> BTreeMap<String, String> {
    let mut wanted: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    wanted.sort();
    let mut outcome = Err(String::new());
    sup.wait_until(NOTIFY_TIMEOUT, |s| {
        outcome = check_stored(s, &wanted, writer);
        outcome.is_ok()
    });
    outcome.unwrap_or_else(|problem| {
        panic!(
            "the fd store never held a consistent state for {wanted:?}: {problem}\n\
             notifications:\n{}",
            sup.transcript()
        )
    })
}

/// [`wait_stored_by`] any writer.
pub(crate) fn wait_stored(sup: &mut Supervisor, names: &[&str]) -> BTreeMap<String, String> {
    wait_stored_by(sup, names, None)
}

/// Daemon arguments: the port (informational with socket activation), an admin socket,
/// and `extra`.
pub(crate) fn daemon_args<'a>(port: &'a str, admin: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "-port",
        port,
        "--admin-socket",
        admin.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    args
}

/// Starts a daemon under the supervisor and waits for its READY=1.
pub(crate) fn start(sup: &mut Supervisor, args: &[&str], fdstore_env: Option<usize>) -> Supervised {
    let from = sup.messages().len();
    let d = sup.spawn(args, fdstore_env);
    sup.expect_ready(d.pid(), from, NOTIFY_TIMEOUT);
    d
}

/// Asserts that `admin stats` keeps `alive2.registered` at `count` and NAMES at `names`
/// for the whole window (a node that lost its connection would register again).
fn assert_no_reregistration(admin: &Path, port: u16, count: u64, names: &BTreeMap<String, u16>) {
    // A bounded poll for a violation: none may turn up within the window.
    let violation = poll_until(NO_REREGISTRATION_WINDOW, || {
        let stats = admin_json(admin, "stats");
        let now = names_of(port);
        (alive2_registered(&stats) != count || &now != names).then_some((stats, now))
    });
    if let Some((stats, now)) = violation {
        panic!("a node registered again: {stats}\nNAMES: {now:?}, before: {names:?}");
    }
}

/// Two Erlang nodes registered through a daemon that keeps them in the fd store; the
/// daemon is killed with SIGKILL and a new one started with the stored fds: both
/// registrations are back with the same creation, on the same connections (same peer
/// port, from the daemon's view and the node's), with the stored statistics, a lookup
/// queued while no daemon ran is answered, the nodes never register again, and they ping.
#[test]
fn fd_store_brings_registrations_back_after_kill_9() {
    let dir = TempDir::new("fds");
    let admin = dir.join("admin.sock");
    let mut sup = Supervisor::new();
    let port = sup.port();
    let port_s = port.to_string();
    let mut d1 = start(
        &mut sup,
        &daemon_args(&port_s, &admin, &["--fd-store"]),
        None,
    );
    sup.expect("the state memfd stored", NOTIFY_TIMEOUT, |s| {
        s.state_names().len() == 1
    });

    let a = ErlNode::start(port, "-sname", &erl::unique_name("fsa"), &[]);
    let b = ErlNode::start(port, "-sname", &erl::unique_name("fsb"), &[]);
    let conns = wait_stored(&mut sup, &[a.name(), b.name()]);
    // The nodes' end of their epmd connections (the probe registers and goes away).
    let (node_ports, _) = probe_nodes(port, &[&a, &b], false);
    let conns_after_probe = wait_stored(&mut sup, &[a.name(), b.name()]);
    assert_eq!(conns_after_probe, conns);
    let stats_before = admin_json(&admin, "stats");
    let alive2 = alive2_registered(&stats_before);
    // The stored state carries the counters as they are now.
    sup.expect(
        "the stored state's counters to catch up",
        NOTIFY_TIMEOUT,
        |s| {
            s.state().is_some_and(|st| {
                st["stats"]["requests"]["alive2.registered"].as_u64() == Some(alive2)
            })
        },
    );
    let names_before = names_of(port);
    let regs_before = registrations(&admin);
    assert_eq!(regs_before.len(), 2, "{regs_before:?}");
    for (n, p) in [&a, &b].iter().zip(&node_ports) {
        assert_eq!(peer_port(&regs_before[n.name()]), *p);
    }

    d1.kill();
    // A lookup while no daemon runs waits in the supervisor's listening socket.
    let mut queued = raw::Conn::connect(port);
    queued.write(&raw::names_req());

    let removals_before = sup.removals();
    let duplicates_before = sup.duplicates();
    // This time the fd store is enabled the way systemd 254+ says so: $FDSTORE.
    let mut d2 = start(&mut sup, &daemon_args(&port_s, &admin, &[]), Some(64));
    let queued_reply = queued.read_to_eof(NOTIFY_TIMEOUT);
    assert_eq!(
        raw::parse_names(&queued_reply)
            .1
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        names_before,
        "the lookup queued during the restart"
    );
    assert_eq!(names_of(port), names_before);
    for n in [&a, &b] {
        let reply = raw::parse_port2(&raw::port_please(port, n.name())).expect("registered");
        assert_eq!(reply.port, n.dist_port());
    }
    assert_eq!(
        registrations(&admin),
        regs_before,
        "registrations (creation, connection, registration time) after the restart"
    );
    let stats = admin_json(&admin, "stats");
    assert_eq!(
        alive2_registered(&stats),
        alive2,
        "the counters come from the stored state: {stats}"
    );
    // The new daemon stores its connections again; the store ignores what it holds.
    sup.expect(
        "the new daemon to store its connections again",
        NOTIFY_TIMEOUT,
        |s| s.duplicates() >= duplicates_before + conns.len(),
    );
    for conn in conns.values() {
        assert_eq!(sup.stored_count(conn), 1, "{conn}: {:?}", sup.store_names());
    }
    let removed: Vec<String> = sup.removals().split_off(removals_before.len());
    assert!(
        conns.values().all(|c| !removed.contains(c)),
        "a node's connection was removed from the store: {removed:?}"
    );

    // What the restored daemon keeps in the store is consistent in turn: a second crash
    // loses nothing either.
    wait_stored_by(&mut sup, &[a.name(), b.name()], Some(d2.pid()));
    d2.kill();
    let d3 = start(
        &mut sup,
        &daemon_args(&port_s, &admin, &["--fd-store"]),
        None,
    );
    assert_eq!(names_of(port), names_before, "after the second kill -9");
    assert_eq!(
        registrations(&admin),
        regs_before,
        "registrations after the second kill -9"
    );
    wait_stored_by(&mut sup, &[a.name(), b.name()], Some(d3.pid()));

    assert_no_reregistration(&admin, port, alive2, &names_before);
    let (node_ports_after, pings) = probe_nodes(port, &[&a, &b], true);
    assert_eq!(
        node_ports_after, node_ports,
        "the nodes' epmd connections are not the ones they had"
    );
    assert_eq!(pings.len(), 2);
    for line in &pings {
        assert!(line.ends_with(" pong"), "net_adm:ping failed: {line}");
    }
    drop(d3);
}

/// A STOPped registration and one whose connection the node closed leave the store
/// (`FDSTOREREMOVE=1` with their fd name) and do not come back after a `kill -9`; the one
/// that stayed does, and when it closes later (a restored connection) it leaves the store
/// too.
#[test]
fn fd_store_forgets_stopped_and_closed_registrations() {
    let dir = TempDir::new("fds");
    let admin = dir.join("admin.sock");
    let mut sup = Supervisor::new();
    let port = sup.port();
    let port_s = port.to_string();
    let args = daemon_args(&port_s, &admin, &["--fd-store", "-relaxed_command_check"]);
    let mut d1 = start(&mut sup, &args, None);

    let (keep, _) = raw::register(port, "fskeep", 40051, 6);
    let (stopped, _) = raw::register(port, "fsstop", 40052, 6);
    let (closed, _) = raw::register(port, "fsclose", 40053, 6);
    let conns = wait_stored(&mut sup, &["fskeep", "fsstop", "fsclose"]);

    // STOP: the daemon closes the registration and removes its fd from the store.
    let mut stop_req = vec![raw::STOP_REQ];
    stop_req.extend_from_slice(b"fsstop");
    assert_eq!(raw::request(port, &raw::frame(&stop_req)), b"STOPPED");
    let stop_conn = conns["fsstop"].clone();
    sup.expect(
        &format!("FDSTOREREMOVE of {stop_conn}"),
        NOTIFY_TIMEOUT,
        |s| s.removals().contains(&stop_conn) && s.stored_count(&stop_conn) == 0,
    );
    assert!(
        raw::Conn::from(stopped).is_closed_within(NOTIFY_TIMEOUT),
        "the STOPped registration's connection is still open"
    );

    // The node closes its connection.
    drop(closed);
    let close_conn = conns["fsclose"].clone();
    sup.expect(
        &format!("FDSTOREREMOVE of {close_conn}"),
        NOTIFY_TIMEOUT,
        |s| s.removals().contains(&close_conn) && s.stored_count(&close_conn) == 0,
    );
    let kept = wait_stored(&mut sup, &["fskeep"]);
    assert_eq!(kept["fskeep"], conns["fskeep"]);
    let regs_before = registrations(&admin);

    d1.kill();
    let d2 = start(&mut sup, &args, None);
    assert_eq!(
        names_of(port),
        BTreeMap::from([("fskeep".to_owned(), 40051)]),
        "only the registration that stayed comes back"
    );
    wait_stored_by(&mut sup, &["fskeep"], Some(d2.pid()));
    assert_eq!(registrations(&admin), regs_before);
    assert_eq!(
        peer_port(&regs_before["fskeep"]),
        keep.local_addr().expect("local").port()
    );
    // The old names came back with the state.
    let old = admin_json(&admin, "old").to_string();
    assert!(
        old.contains("\"fsstop\"") && old.contains("\"fsclose\""),
        "{old}"
    );

    // A restored registration that closes leaves the store under its stored name.
    let keep_conn = conns["fskeep"].clone();
    drop(keep);
    sup.expect(
        &format!("FDSTOREREMOVE of the restored {keep_conn}"),
        NOTIFY_TIMEOUT,
        |s| s.removals().contains(&keep_conn) && s.stored_count(&keep_conn) == 0,
    );
    assert!(
        poll_true(NOTIFY_TIMEOUT, || names_of(port).is_empty()),
        "fskeep still registered"
    );
    let conn_fds: Vec<String> = sup
        .store_names()
        .into_iter()
        .filter(|n| n.starts_with("conn-"))
        .collect();
    assert!(
        conn_fds.is_empty(),
        "connections left in the store: {conn_fds:?}"
    );
    drop(d2);
}

/// Live hand-overs of a daemon that uses the fd store, then a crash of the last
/// successor: after each hand-over the store holds exactly one state memfd (passed along
/// to the successor, which keeps rewriting it); a daemon started from the store after the
/// `kill -9` has every registration back.
#[test]
fn fd_store_survives_handovers_then_a_crash() {
    let dir = TempDir::new("fds");
    let admin = dir.join("admin.sock");
    let pid_file = dir.join("epmd.pid");
    let mut sup = Supervisor::new();
    let port = sup.port();
    let port_s = port.to_string();
    let args = daemon_args(
        &port_s,
        &admin,
        &[
            "--fd-store",
            "--pid-file",
            pid_file.to_str().expect("utf-8"),
        ],
    );
    let mut successors = PidGuard::default();
    let mut d1 = start(&mut sup, &args, None);
    let (_k1, _) = raw::register(port, "fshov1", 40061, 6);
    let (_k2, _) = raw::register(port, "fshov2", 40062, 5);
    wait_stored(&mut sup, &["fshov1", "fshov2"]);
    let names_before = names_of(port);
    let regs_before = registrations(&admin);

    let mut current = d1.pid();
    for round in 1..=HANDOVER_ROUNDS {
        let from = sup.messages().len();
        let reply = admin_request(&admin, "upgrade", UPGRADE_TIMEOUT)
            .unwrap_or_else(|e| panic!("admin upgrade: {e}"));
        let v: Value = serde_json::from_str(&reply).expect("JSON answer");
        assert_eq!(v["ok"], Value::Bool(true), "round {round}: {v}");
        let new = v["pid"].as_u64().expect("pid") as u32;
        successors.0.push(new);
        assert_eq!(read_pid_file(&pid_file), Some(new));
        if round == 1 {
            assert!(d1.wait_exit(PROCESS_TIMEOUT).is_some_and(|s| s.success()));
        } else {
            assert!(poll_true(PROCESS_TIMEOUT, || !is_alive(current)));
        }
        let old = current;
        current = new;
        let new_s = new.to_string();
        sup.expect(
            &format!("round {round}: MAINPID={new} from {old}, READY=1 from {new}"),
            NOTIFY_TIMEOUT,
            |s| {
                let msgs = &s.messages()[from..];
                msgs.iter()
                    .any(|m| m.pid == Some(old) && m.has("MAINPID", &new_s))
                    && msgs
                        .iter()
                        .any(|m| m.has("READY", "1") && m.has("MAINPID", &new_s))
            },
        );
        // The successor writes a new state and only then removes the one it took over:
        // the store never lacks a state, and settles on exactly one, never changed.
        let msgs = &sup.messages()[from..];
        let stored_at = msgs
            .iter()
            .position(|m| m.has("FDSTORE", "1") && m.get("FDNAME").is_some_and(is_state_name));
        let removed_at = msgs.iter().position(|m| {
            m.has("FDSTOREREMOVE", "1") && m.get("FDNAME").is_some_and(is_state_name)
        });
        if let Some(removed_at) = removed_at {
            assert!(
                stored_at.is_some_and(|s| s < removed_at),
                "round {round}: a state was removed before a new one was stored:\n{}",
                sup.transcript()
            );
        }
        assert!(
            !sup.state_names().is_empty(),
            "round {round}: no state in the store:\n{}",
            sup.transcript()
        );
        assert_eq!(sup.changed_states(), Vec::<String>::new(), "round {round}");
        wait_stored_by(&mut sup, &["fshov1", "fshov2"], Some(new));
        assert_eq!(names_of(port), names_before);
        assert_eq!(registrations(&admin), regs_before);
    }

    // Crash the last successor; a fresh daemon gets everything back from the store.
    kill_daemon_pid(current);
    assert!(poll_true(PROCESS_TIMEOUT, || !is_alive(current)));
    let d3 = start(&mut sup, &args, None);
    assert_eq!(names_of(port), names_before);
    assert_eq!(registrations(&admin), regs_before);
    wait_stored_by(&mut sup, &["fshov1", "fshov2"], Some(d3.pid()));
    drop(d3);
}
