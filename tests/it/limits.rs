//! Bounds and timing: the packet deadline, many registrations, and `-delay_write` (spec §6,
//! §12).
//!
//! The deadline tests measure real elapsed time, because elapsed time is what they check;
//! they never sleep to wait for the daemon. Their bounds are wide enough for a loaded CI
//! machine and still tell the required behaviour from the C epmd's (a deadline refreshed
//! by every byte, sleeps that block every client).

use std::collections::BTreeSet;
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::daemon::Daemon;
use crate::support::raw::{alive2_req, hex, names_req, parse_names, register, Conn, IO_TIMEOUT};
use crate::support::wait::poll_true;
use crate::wire::{
    assert_bytes_eq, assert_exchange, registered, unhex, x_creation, ALIVE2_X_REFUSED,
};

/// The `-packet_timeout` of the deadline tests, in seconds.
const PACKET_TIMEOUT: Duration = Duration::from_secs(1);

/// An idle connection must be closed before this much time from connecting.
const CLOSE_BY: Duration = Duration::from_secs(4);

/// Starts a daemon with `-packet_timeout 1`.
fn daemon_with_packet_timeout() -> Daemon {
    Daemon::start(&["-packet_timeout", "1"])
}

#[test]
fn idle_connection_is_closed_at_the_packet_deadline() {
    let daemon = daemon_with_packet_timeout();

    // Measured from before connecting, so the daemon's accept is no earlier than `start`.
    let start = Instant::now();
    let mut idle = Conn::connect(daemon.port());
    let closed = idle.is_closed_within(CLOSE_BY);
    let elapsed = start.elapsed();

    assert!(
        closed,
        "an idle connection was still open after {CLOSE_BY:?}"
    );
    assert!(
        elapsed >= PACKET_TIMEOUT,
        "an idle connection was closed after {elapsed:?}, before the {PACKET_TIMEOUT:?} deadline"
    );
}

#[test]
fn trickling_connection_is_closed_at_the_deadline_counted_from_accept() {
    let daemon = daemon_with_packet_timeout();
    // A NAMES request padded to the largest payload: it never completes in this test.
    let mut bytes = unhex("0B F1 6E");
    bytes.resize(64, 0x58);

    let start = Instant::now();
    let mut conn = Conn::connect(daemon.port());
    // One byte every 300 ms. A deadline refreshed by each byte (the C epmd before the 2026
    // fix) would keep this connection open for as long as bytes come.
    let mut sent = 0;
    let closed_after = loop {
        if conn.try_write(&bytes[sent..=sent]).is_err() {
            break start.elapsed();
        }
        sent += 1;
        if conn.is_closed_within(Duration::from_millis(300)) {
            break start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(6) && sent < bytes.len(),
            "a connection trickling one byte every 300 ms was still open after {:?} and {sent} bytes",
            start.elapsed()
        );
    };

    assert!(
        closed_after >= PACKET_TIMEOUT,
        "closed after {closed_after:?}, before the {PACKET_TIMEOUT:?} deadline"
    );
    assert!(
        closed_after < Duration::from_millis(2500),
        "closed only after {closed_after:?} ({sent} bytes): the deadline is not counted from accept"
    );
}

#[test]
fn registration_connections_outlive_the_packet_deadline() {
    let daemon = daemon_with_packet_timeout();
    let port = daemon.port();

    let mut idle = Conn::connect(port);
    let (reg, reply) = register(port, "keeper", 4000, 6);
    x_creation("keeper", &reply);
    // A refused registration's connection is a registration connection too (spec §4.2).
    let (dup, reply) = register(port, "keeper", 4001, 6);
    assert_bytes_eq("duplicate keeper", &ALIVE2_X_REFUSED, &reply);
    let (mut reg, mut dup) = (Conn::from(reg), Conn::from(dup));

    // Well past the deadline (with the C epmd's whole-second rounding and more).
    let wait = PACKET_TIMEOUT * 2 + Duration::from_millis(500);
    assert!(
        !reg.is_closed_within(wait),
        "the registration connection was closed by the packet deadline"
    );
    assert!(
        !dup.is_closed_within(Duration::from_millis(10)),
        "the refused registration's connection was closed by the packet deadline"
    );
    // The deadline was in force: the plain connection opened first is gone.
    assert!(
        idle.is_closed_within(Duration::from_millis(10)),
        "control: an idle connection survived {wait:?} with -packet_timeout 1"
    );
    assert_eq!(registered(port), [("keeper".to_owned(), 4000)]);
}

#[test]
fn names_lists_1000_nodes_byte_exact_newest_first() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let mut conns = Vec::with_capacity(1000);
    for i in 0..1000u16 {
        let (conn, reply) = register(port, &format!("node{i:04}"), 10_000 + i, 6);
        x_creation(&format!("node{i:04}"), &reply);
        conns.push(conn);
    }

    let mut expected = u32::from(port).to_be_bytes().to_vec();
    for i in (0..1000u16).rev() {
        expected.extend_from_slice(format!("name node{i:04} at port {}\n", 10_000 + i).as_bytes());
    }
    assert_exchange(port, "NAMES with 1000 nodes", &names_req(), &expected);
}

/// The soft `RLIMIT_NOFILE` of this test process, from `/proc/self/limits`.
fn open_files_soft_limit() -> u64 {
    let limits = fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no `Max open files` in /proc/self/limits:\n{limits}"));
    let soft = line
        .split_whitespace()
        .nth(3)
        .unwrap_or_else(|| panic!("bad line {line:?}"));
    if soft == "unlimited" {
        u64::MAX
    } else {
        soft.parse()
            .unwrap_or_else(|_| panic!("bad soft limit in {line:?}"))
    }
}

#[test]
fn two_thousand_simultaneous_registrations_succeed() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    const NEEDED: u64 = 4500;
    let soft = open_files_soft_limit();
    assert!(
        soft >= NEEDED,
        "this test holds 2000 registration sockets (plus those of tests running alongside) \
         and needs a soft RLIMIT_NOFILE of at least {NEEDED}; it is {soft}. \
         Run the tests under `ulimit -n {NEEDED}` or more."
    );
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    // Registered concurrently from several threads; every connection stays open.
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                (0..PER_THREAD)
                    .map(|i| {
                        let name = format!("t{t}n{i:03}");
                        let node_port = u16::try_from(20_000 + t * PER_THREAD + i).expect("port");
                        let (conn, reply) = register(port, &name, node_port, 6);
                        x_creation(&name, &reply);
                        conn
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let conns: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("registering thread panicked"))
        .collect();
    assert_eq!(conns.len(), THREADS * PER_THREAD);

    let listed: BTreeSet<(String, u16)> = registered(port).into_iter().collect();
    let expected: BTreeSet<(String, u16)> = (0..THREADS)
        .flat_map(|t| {
            (0..PER_THREAD).map(move |i| {
                (
                    format!("t{t}n{i:03}"),
                    u16::try_from(20_000 + t * PER_THREAD + i).expect("port"),
                )
            })
        })
        .collect();
    assert_eq!(listed.len(), THREADS * PER_THREAD, "NAMES lines");
    assert!(
        listed == expected,
        "NAMES does not list exactly the 2000 nodes"
    );

    drop(conns);
    assert!(
        poll_true(Duration::from_secs(10), || registered(port).is_empty()),
        "registrations left after closing all 2000 connections: {}",
        registered(port).len()
    );
}

#[test]
fn delay_write_delays_each_reply_without_blocking_other_clients() {
    const OTHERS: usize = 4;
    let delay = Duration::from_secs(1);
    let daemon = Daemon::start(&["-delay_write", "1"]);
    let port = daemon.port();

    let start = Instant::now();
    let mut first = Conn::connect(port);
    first.write(&alive2_req(4000, 77, 0, 6, 5, b"delayed", b""));
    // While the ALIVE2 reply is held back, other clients ask for NAMES.
    let mut others: Vec<(Conn, Instant)> = (0..OTHERS)
        .map(|_| {
            let mut conn = Conn::connect(port);
            conn.write(&names_req());
            (conn, Instant::now())
        })
        .collect();

    let reply = first.read_exact_timeout(6, IO_TIMEOUT);
    let first_took = start.elapsed();
    x_creation("delayed ALIVE2", &reply);
    assert!(
        first_took >= delay,
        "the ALIVE2 reply came after {first_took:?}, before the {delay:?} write delay"
    );

    for (i, (conn, sent)) in others.iter_mut().enumerate() {
        let reply = conn.read_to_eof(IO_TIMEOUT);
        let took = sent.elapsed();
        let (header, _) = parse_names(&reply);
        assert_eq!(header, u32::from(port), "NAMES {i}: {}", hex(&reply));
        assert!(
            took >= delay,
            "NAMES {i} answered after {took:?}, before its delay"
        );
    }
    // Each reply waits only for its own delay. A daemon that sleeps (the C epmd) would need
    // at least 1 + 4 s here, one delay after another.
    let all_took = start.elapsed();
    assert!(
        all_took < Duration::from_secs(3),
        "{} delayed replies took {all_took:?} in all: the delays block each other",
        OTHERS + 1
    );
}
