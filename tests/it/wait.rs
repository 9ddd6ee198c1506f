//! `epmd-rs wait NAME [--gone]` (issue 12): exits 0 as soon as NAME is registered (or
//! gone), 1 at its timeout, 2 for a bad name; with a real Erlang node, and its latency
//! after a registration over 100 runs.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon::{Daemon, BIN};
use crate::support::erl::{unique_name, ErlCommand};
use crate::support::raw;
use crate::support::wait::poll_until;

/// A running `epmd-rs wait`, killed by pid if still running when dropped.
struct Waiter(Child);

impl Waiter {
    fn start(port: u16, args: &[&str]) -> Waiter {
        Waiter(
            Command::new(BIN)
                .arg("wait")
                .args(args)
                .args(["--port", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("epmd-rs wait"),
        )
    }

    /// The exit code once it exits (bounded).
    fn code_within(&mut self, timeout: Duration) -> Option<i32> {
        poll_until(timeout, || self.0.try_wait().ok().flatten()).map(|s| s.code().unwrap_or(-1))
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn wait_exits_once_a_real_node_registers_and_once_it_is_gone() {
    let d = Daemon::start(&[]);
    let port = d.port();
    let name = unique_name("waited");
    let mut waiter = Waiter::start(port, &[&name, "--timeout", "60"]);
    // Not registered yet: still waiting.
    assert_eq!(waiter.code_within(Duration::from_millis(300)), None);
    let mut node = ErlCommand::new(port, "-sname", &name).start();
    assert_eq!(waiter.code_within(Duration::from_secs(5)), Some(0));
    let found = raw::parse_port2(&raw::port_please(port, &name)).expect("registered");
    assert_eq!(found.port, node.dist_port());
    // --gone: waits while it is registered, exits once the node stops.
    let mut gone = Waiter::start(port, &[&name, "--gone", "--timeout", "60"]);
    assert_eq!(gone.code_within(Duration::from_millis(300)), None);
    node.kill();
    assert_eq!(gone.code_within(Duration::from_secs(5)), Some(0));
}

#[test]
fn wait_times_out_with_1_and_refuses_a_bad_name_with_2() {
    let d = Daemon::start(&[]);
    let t0 = Instant::now();
    let mut w = Waiter::start(d.port(), &["nobody", "--timeout", "0.3"]);
    assert_eq!(w.code_within(Duration::from_secs(5)), Some(1));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // Longer than the 255 bytes a node name may have.
    let long = "x".repeat(300);
    let mut w = Waiter::start(d.port(), &[&long, "--timeout", "5"]);
    assert_eq!(w.code_within(Duration::from_secs(5)), Some(2));
    // --gone on a name nobody holds: at once.
    let mut w = Waiter::start(d.port(), &["nobody", "--gone", "--timeout", "5"]);
    assert_eq!(w.code_within(Duration::from_secs(2)), Some(0));
}

#[test]
fn wait_latency_after_a_registration_p99_over_100_runs() {
    let d = Daemon::start(&[]);
    let port = d.port();
    let mut latencies = Vec::with_capacity(100);
    for i in 0..100 {
        let name = format!("lat{i}");
        let mut w = Waiter::start(port, &[&name, "--timeout", "30"]);
        // Until it has asked at least once (a lookup of the name was answered "not found").
        std::thread::sleep(Duration::from_millis(15));
        let (conn, reply) = raw::register(port, &name, 7300, 6);
        assert_eq!(reply[1], 0, "registration refused");
        let registered = Instant::now();
        assert_eq!(w.code_within(Duration::from_secs(5)), Some(0), "run {i}");
        latencies.push(registered.elapsed());
        drop(conn);
    }
    latencies.sort();
    let p50 = latencies[49];
    let p99 = latencies[98];
    println!(
        "wait latency after a registration (registration reply -> wait exited), 100 runs: p50 {p50:?}, p99 {p99:?}, max {:?}",
        latencies[99]
    );
    // One poll interval (10 ms) plus a lookup and the process exit.
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
}
