//! Registrations live and die with their connections; KILL and STOP rules; local peers
//! (spec §3.5, §3.6, §4.2-§4.6, §5).
//!
//! A registration is owned by the connection that sent its ALIVE2: closing it, half-closing
//! it, resetting it or sending anything on it ends the registration. Where the daemon closes
//! our side first, the EOF we read proves the unregistration already happened (it is the
//! same step in the daemon); where we close first, a bounded poll of NAMES waits for it.
//!
//! Locality: every peer that loopback can produce is local (127.0.0.0/8 and `::1`), so
//! these tests only show that local peers are served, including a peer at 127.0.0.2 talking
//! to 127.0.0.1. Refusing a genuinely non-local peer needs a second address outside 127/8
//! that is not the daemon's own, i.e. a network namespace; that is left to a netns test.
//!
//! Two socket options std does not offer on stable (`SO_LINGER` 0, and binding a client
//! socket before connecting) come from `socket2`, a dependency the crate already has.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};

use crate::support::daemon::Daemon;
use crate::support::raw::{
    alive2_req, frame, hex, port_please_req, register, Conn, IO_TIMEOUT, NODE_TYPE_NORMAL,
};
use crate::support::wait::poll_true;
use crate::wire::{
    assert_bytes_eq, assert_exchange, assert_silent_close, assert_unregistered_soon, barrier,
    is_registered, registered, req, unhex, unix_now, x_creation, ALIVE2_REFUSED, ALIVE2_X_REFUSED,
    QUIET,
};

/// KILL_REQ, `00 01 6B`.
const KILL: &str = "00 01 6B";
/// KILL refused: `NO`.
const KILL_NO: &str = "4E 4F";
/// KILL honoured: `OK`.
const KILL_OK: &str = "4F 4B";
/// STOP honoured: `STOPPED`.
const STOPPED: &str = "53 54 4F 50 50 45 44";
/// STOP of an unknown name: `NOEXIST` and then `STOPPED`, 14 bytes (spec §3.6).
const NOEXIST_STOPPED: &str = "4E 4F 45 58 49 53 54 53 54 4F 50 50 45 44";

/// A STOP_REQ for `name`, framed, with no NUL (as `epmd -stop` sends it).
fn stop_req(name: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x73];
    payload.extend_from_slice(name);
    frame(&payload)
}

/// Sends `bytes` to `addr` on a new connection and reads until the daemon closes.
fn request_at(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut conn = Conn::connect_to(addr);
    conn.write(bytes);
    conn.read_to_eof(IO_TIMEOUT)
}

/// Registers `name` over `addr` and returns the registration connection after checking
/// the reply is a success.
fn register_at(addr: SocketAddr, name: &str, node_port: u16) -> Conn {
    let mut conn = Conn::connect_to(addr);
    conn.write(&alive2_req(
        node_port,
        NODE_TYPE_NORMAL,
        0,
        6,
        5,
        name.as_bytes(),
        b"",
    ));
    let reply = conn.read_exact_timeout(6, IO_TIMEOUT);
    x_creation(&format!("ALIVE2 {name} over {addr}"), &reply);
    conn
}

/// Registers `name` on 127.0.0.1 and returns its connection, checking for success.
fn register_ok(port: u16, name: &str, node_port: u16) -> (Conn, u32) {
    let (stream, reply) = register(port, name, node_port, 6);
    let creation = x_creation(&format!("ALIVE2 {name}"), &reply);
    (Conn::from(stream), creation)
}

/// Closes `conn` with a TCP reset instead of a FIN (`SO_LINGER` 0, then close).
fn reset(conn: Conn) {
    SockRef::from(conn.stream())
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(conn);
}

/// Checks that the daemon process exits with status 0 (KILL honoured).
fn assert_exits_0(daemon: &mut Daemon, why: &str) {
    let status = daemon.wait_exit(IO_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()),
        "{why}: expected the daemon to exit 0, got {status:?}"
    );
}

// ---------------------------------------------------------------------------------------
// What ends a registration (spec §4.6).
// ---------------------------------------------------------------------------------------

#[test]
fn registration_vanishes_when_its_connection_closes() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (reg, _) = register_ok(port, "gone", 4000);
    assert_eq!(registered(port), [("gone".to_owned(), 4000)]);

    drop(reg);

    assert_unregistered_soon(port, "gone", "after its connection closed");
    assert_exchange(
        port,
        "lookup of gone",
        &port_please_req(b"gone"),
        &unhex("77 01"),
    );
}

#[test]
fn any_data_on_a_registration_connection_unregisters_it() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    for (case, bytes) in [
        ("`hello`", "68 65 6C 6C 6F"),
        ("one NUL byte", "00"),
        ("a well-formed NAMES request", "00 01 6E"),
        (
            "a second ALIVE2 for the same name",
            "00 12 78 0F A0 4D 00 00 06 00 05 00 05 63 68 61 74 74 00 00",
        ),
    ] {
        let (mut reg, _) = register_ok(port, "chatt", 4000);
        reg.write(&unhex(bytes));
        // No reply; the daemon unregisters and closes in one step, so once we see the EOF
        // the name is gone.
        assert!(
            reg.is_closed_within(IO_TIMEOUT),
            "{case} on a registration connection: the daemon did not close it"
        );
        assert!(
            !is_registered(port, "chatt"),
            "{case} on a registration connection did not unregister it: {:?}",
            registered(port)
        );
    }
}

#[test]
fn half_close_of_a_registration_connection_unregisters_it() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (mut reg, _) = register_ok(port, "half", 4000);

    reg.shutdown_write();

    assert!(
        reg.is_closed_within(IO_TIMEOUT),
        "the daemon did not close a half-closed registration connection"
    );
    assert!(!is_registered(port, "half"), "{:?}", registered(port));
}

#[test]
fn refused_duplicate_keeps_its_connection_and_closing_it_keeps_the_original() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (orig, _) = register_ok(port, "dup", 4000);

    let (dup6, reply) = register(port, "dup", 4001, 6);
    assert_bytes_eq("duplicate, HighestVersion 6", &ALIVE2_X_REFUSED, &reply);
    let (dup5, reply) = register(port, "dup", 4002, 5);
    assert_bytes_eq("duplicate, HighestVersion 5", &ALIVE2_REFUSED, &reply);
    let (mut dup6, mut dup5) = (Conn::from(dup6), Conn::from(dup5));

    // Both refused connections stay open like registrations (spec §4.2).
    barrier(port);
    assert!(
        !dup6.is_closed_within(QUIET),
        "refused v6 connection closed"
    );
    assert!(
        !dup5.is_closed_within(QUIET),
        "refused v5 connection closed"
    );

    // Data on one makes the daemon close it; closing the other is ours. Neither touches
    // the original registration.
    dup5.write(b"x");
    assert!(
        dup5.is_closed_within(IO_TIMEOUT),
        "data on the refused connection did not close it"
    );
    drop(dup6);
    barrier(port);
    assert_eq!(registered(port), [("dup".to_owned(), 4000)]);
    drop(orig);
    assert_unregistered_soon(port, "dup", "after the original closed");
}

#[test]
fn each_re_registration_of_a_name_gets_the_previous_creation_plus_one() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (mut reg, mut creation) = register_ok(port, "again", 4000);

    for round in 1..=3 {
        drop(reg);
        assert_unregistered_soon(port, "again", "after closing");
        let (next, next_creation) = register_ok(port, "again", 4000 + round);
        assert_eq!(
            next_creation,
            creation + 1,
            "re-registration {round}: creation is not the previous one + 1"
        );
        (reg, creation) = (next, next_creation);
    }
}

#[test]
fn node_restart_race_reregisters_at_once_while_a_live_duplicate_is_refused() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (a, creation) = register_ok(port, "racer", 4000);

    // While A is open, the name is taken.
    let (live_dup, reply) = register(port, "racer", 4001, 6);
    assert_bytes_eq("ALIVE2 racer while A is open", &ALIVE2_X_REFUSED, &reply);
    drop(live_dup);

    // A restarting node: its old connection closes and the new ALIVE2 follows at once,
    // before the daemon had any reason to process the close (upstream PR #11085).
    drop(a);
    let (b, reply) = register(port, "racer", 4002, 6);
    let b_creation = x_creation("ALIVE2 racer right after A closed", &reply);
    assert_eq!(
        b_creation,
        creation + 1,
        "the restarted node should reuse the name's slot (creation + 1): {}",
        hex(&reply)
    );
    assert_eq!(registered(port), [("racer".to_owned(), 4002)]);
    drop(b);
}

#[test]
fn restart_race_succeeds_even_when_the_old_close_is_not_yet_processed() {
    // In the test above the daemon sees A's EOF before B's request. Here it cannot: with
    // -delay_write, A's registration waits for its delayed reply and the daemon does not
    // look at A's socket meanwhile. B's ALIVE2 must still win, because A's owner is
    // already gone (spec §12, upstream PR #11085) rather than be refused as a duplicate.
    let daemon = Daemon::start(&["-delay_write", "1"]);
    let port = daemon.port();
    let before = unix_now();

    let mut a = Conn::connect(port);
    a.write(&alive2_req(4000, NODE_TYPE_NORMAL, 0, 6, 5, b"racer", b""));
    drop(a);
    let mut b = Conn::connect(port);
    b.write(&alive2_req(4001, NODE_TYPE_NORMAL, 0, 6, 5, b"racer", b""));
    let reply = b.read_exact_timeout(6, IO_TIMEOUT);
    let after = unix_now();

    // A's slot (Unix time + 1) is taken over and bumped once.
    let creation = u64::from(x_creation("ALIVE2 racer on B", &reply));
    assert!(
        (before + 2..=after + 2).contains(&creation),
        "creation {creation} is not A's new slot + 1 ({before}..={after} + 2)"
    );
    assert_eq!(registered(port), [("racer".to_owned(), 4001)]);
}

#[test]
fn alive2_client_that_resets_right_after_sending_leaves_no_registration() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let mut conn = Conn::connect(port);
    conn.write(&alive2_req(4000, NODE_TYPE_NORMAL, 0, 6, 5, b"rst1", b""));
    reset(conn);

    barrier(port);
    assert_unregistered_soon(port, "rst1", "after the client reset");
}

#[test]
fn alive2_client_that_resets_with_the_reply_unread_leaves_no_registration() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let mut conn = Conn::connect(port);
    conn.write(&alive2_req(4000, NODE_TYPE_NORMAL, 0, 6, 5, b"rst2", b""));
    // Wait until the whole reply sits unread in our receive buffer, then reset.
    let stream: &TcpStream = conn.stream();
    stream.set_nonblocking(true).expect("non-blocking");
    let mut buf = [0u8; 6];
    assert!(
        poll_true(IO_TIMEOUT, || matches!(stream.peek(&mut buf), Ok(6))),
        "no ALIVE2 reply arrived"
    );
    x_creation("ALIVE2 rst2", &buf);
    assert!(is_registered(port, "rst2"));
    reset(conn);

    assert_unregistered_soon(port, "rst2", "after the client reset");
}

#[test]
fn alive2_client_that_resets_during_a_delayed_reply_leaves_no_registration() {
    // With -delay_write the reply waits 1 s; the reset lands before it is written, so the
    // daemon either sees the reset first or fails the reply write, which must unregister.
    let daemon = Daemon::start(&["-delay_write", "1"]);
    let port = daemon.port();

    let mut conn = Conn::connect(port);
    conn.write(&alive2_req(4000, NODE_TYPE_NORMAL, 0, 6, 5, b"rst3", b""));
    reset(conn);

    assert_unregistered_soon(port, "rst3", "after the client reset");
    // Each NAMES answer is itself delayed 1 s, so this one was dispatched after the
    // delayed ALIVE2 reply was due: the state is final.
    assert!(!is_registered(port, "rst3"), "{:?}", registered(port));
}

// ---------------------------------------------------------------------------------------
// KILL_REQ (spec §3.5).
// ---------------------------------------------------------------------------------------

#[test]
fn kill_is_refused_while_nodes_are_registered() {
    let mut daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (_reg, _) = register_ok(port, "alive", 4000);

    assert_exchange(port, "KILL with a node", &req(KILL), &unhex(KILL_NO));

    assert!(daemon.is_running(), "the daemon exited after refusing KILL");
    assert_eq!(registered(port), [("alive".to_owned(), 4000)]);
}

#[test]
fn kill_with_no_nodes_answers_ok_and_exits_0() {
    let mut daemon = Daemon::start(&[]);
    let port = daemon.port();
    // A node that came and went does not count.
    let (reg, _) = register_ok(port, "went", 4000);
    drop(reg);
    assert_unregistered_soon(port, "went", "after closing");

    assert_exchange(port, "KILL with no nodes", &req(KILL), &unhex(KILL_OK));

    assert_exits_0(&mut daemon, "KILL with no nodes");
}

#[test]
fn relaxed_kill_answers_ok_with_nodes_and_exits_0() {
    let mut daemon = Daemon::start(&["-relaxed_command_check"]);
    let port = daemon.port();
    let (mut reg, _) = register_ok(port, "doomed", 4000);

    assert_exchange(
        port,
        "relaxed KILL with a node",
        &req(KILL),
        &unhex(KILL_OK),
    );

    assert_exits_0(&mut daemon, "relaxed KILL with a node");
    assert!(
        reg.is_closed_within(IO_TIMEOUT),
        "the registration connection is still open after KILL"
    );
}

#[test]
fn relaxed_check_from_the_environment_honours_kill_with_nodes() {
    // Presence is enough: an empty value turns the relaxed check on (spec §5).
    let mut daemon = Daemon::start_with_env(&[], &[("ERL_EPMD_RELAXED_COMMAND_CHECK", "")]);
    let port = daemon.port();
    let (_reg, _) = register_ok(port, "doomed", 4000);

    assert_exchange(port, "KILL, relaxed by env", &req(KILL), &unhex(KILL_OK));

    assert_exits_0(&mut daemon, "KILL with ERL_EPMD_RELAXED_COMMAND_CHECK set");
}

// ---------------------------------------------------------------------------------------
// STOP_REQ (spec §3.6).
// ---------------------------------------------------------------------------------------

#[test]
fn stop_without_relaxed_check_closes_without_reply() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (mut reg, _) = register_ok(port, "foo", 4000);

    assert_silent_close(port, "STOP foo, strict", &req("00 04 73 66 6F 6F"));
    assert_silent_close(port, "STOP unknown, strict", &req("00 04 73 71 75 78"));

    assert!(
        !reg.is_closed_within(QUIET),
        "STOP closed the node's connection"
    );
    assert_eq!(registered(port), [("foo".to_owned(), 4000)]);
}

#[test]
fn relaxed_stop_of_a_registered_node_closes_its_connection_and_unregisters_it() {
    let daemon = Daemon::start(&["-relaxed_command_check"]);
    let port = daemon.port();
    let (mut foo, _) = register_ok(port, "foo", 4000);
    let (mut bar, _) = register_ok(port, "bar", 4001);
    let (_keep, _) = register_ok(port, "keep", 4002);

    assert_exchange(port, "STOP foo", &stop_req(b"foo"), &unhex(STOPPED));
    assert!(
        foo.is_closed_within(IO_TIMEOUT),
        "STOP did not close foo's registration connection"
    );
    // The name is a C string: it ends at the first NUL.
    assert_exchange(
        port,
        "STOP bar\\0junk",
        &req("00 09 73 62 61 72 00 6A 75 6E 6B"),
        &unhex(STOPPED),
    );
    assert!(
        bar.is_closed_within(IO_TIMEOUT),
        "STOP did not close bar's registration connection"
    );

    assert_eq!(registered(port), [("keep".to_owned(), 4002)]);
    assert_exchange(
        port,
        "lookup of foo",
        &port_please_req(b"foo"),
        &unhex("77 01"),
    );
}

#[test]
fn relaxed_stop_of_an_unknown_name_answers_noexist_stopped() {
    let daemon = Daemon::start(&["-relaxed_command_check"]);
    let port = daemon.port();
    let (_reg, _) = register_ok(port, "foo", 4000);

    assert_exchange(port, "STOP qux", &stop_req(b"qux"), &unhex(NOEXIST_STOPPED));
    assert_exchange(port, "STOP FOO", &stop_req(b"FOO"), &unhex(NOEXIST_STOPPED));
    // No UTF-8 check on STOP's name: invalid bytes are just an unknown name.
    assert_exchange(
        port,
        "STOP FF",
        &req("00 02 73 FF"),
        &unhex(NOEXIST_STOPPED),
    );
    assert_silent_close(port, "STOP with no name", &req("00 01 73"));

    assert_eq!(registered(port), [("foo".to_owned(), 4000)]);
}

// ---------------------------------------------------------------------------------------
// Local peers (spec §5).
// ---------------------------------------------------------------------------------------

/// The daemon's port on `127.0.0.1` and on `::1`, after checking it listens on both
/// (`-address 127.0.0.1` binds the two loopbacks, spec §7.3).
fn both_loopbacks(daemon: &Daemon) -> [SocketAddr; 2] {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, daemon.port()));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, daemon.port()));
    let listening = daemon.listen_addrs();
    assert!(
        listening.contains(&v4) && listening.contains(&v6),
        "the daemon should listen on {v4} and {v6}, listens on {listening:?}"
    );
    [v4, v6]
}

#[test]
fn local_only_requests_are_served_over_ipv4_and_ipv6_loopback() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let [v4, v6] = both_loopbacks(&daemon);

    let _r4 = register_at(v4, "over4", 4004);
    let _r6 = register_at(v6, "over6", 4006);
    for addr in [v4, v6] {
        let dump = request_at(addr, &req("00 01 64"));
        let text = String::from_utf8_lossy(&dump);
        assert!(
            dump.starts_with(&u32::from(port).to_be_bytes())
                && text.contains("active name     <over4> at port 4004, fd = ")
                && text.contains("active name     <over6> at port 4006, fd = "),
            "DUMP over {addr}: {}",
            hex(&dump)
        );
        // Answered at all means local: a non-local KILL is closed without a reply.
        assert_bytes_eq(
            &format!("KILL over {addr}"),
            &unhex(KILL_NO),
            &request_at(addr, &req(KILL)),
        );
    }
    assert_eq!(
        registered(port),
        [("over6".to_owned(), 4006), ("over4".to_owned(), 4004)]
    );
}

#[test]
fn stop_and_kill_are_served_over_ipv4_and_ipv6_loopback_when_relaxed() {
    let mut daemon = Daemon::start(&["-relaxed_command_check"]);
    let port = daemon.port();
    let [v4, v6] = both_loopbacks(&daemon);
    let mut a = register_at(v4, "a", 1);
    let mut b = register_at(v6, "b", 2);

    assert_bytes_eq(
        "STOP a over ::1",
        &unhex(STOPPED),
        &request_at(v6, &stop_req(b"a")),
    );
    assert_bytes_eq(
        "STOP b over 127.0.0.1",
        &unhex(STOPPED),
        &request_at(v4, &stop_req(b"b")),
    );
    assert!(a.is_closed_within(IO_TIMEOUT) && b.is_closed_within(IO_TIMEOUT));
    assert_eq!(registered(port), []);

    assert_bytes_eq(
        "KILL over ::1",
        &unhex(KILL_OK),
        &request_at(v6, &req(KILL)),
    );
    assert_exits_0(&mut daemon, "KILL over ::1");
}

/// Connects to `dest` from `source` (port chosen by the kernel).
fn connect_from(source: Ipv4Addr, dest: SocketAddr) -> Conn {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::from((source, 0)).into())
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    socket
        .connect_timeout(&dest.into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {source} -> {dest}: {e}"));
    let stream = TcpStream::from(socket);
    stream.set_nodelay(true).expect("TCP_NODELAY");
    Conn::from(stream)
}

#[test]
fn peer_127_0_0_2_talking_to_127_0_0_1_is_local() {
    // 127.0.0.2 is another address, but inside 127.0.0.0/8, which is local by rule
    // (spec §5); a truly non-local peer is left to a network-namespace test.
    let daemon = Daemon::start(&["-address", "127.0.0.1"]);
    let port = daemon.port();
    let dest = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let source = Ipv4Addr::new(127, 0, 0, 2);

    let mut reg = connect_from(source, dest);
    assert_eq!(
        reg.stream().local_addr().expect("local_addr").ip(),
        IpAddr::V4(source)
    );
    reg.write(&alive2_req(4000, NODE_TYPE_NORMAL, 0, 6, 5, b"two", b""));
    x_creation(
        "ALIVE2 from 127.0.0.2",
        &reg.read_exact_timeout(6, IO_TIMEOUT),
    );

    let mut dump = connect_from(source, dest);
    dump.write(&req("00 01 64"));
    let reply = dump.read_to_eof(IO_TIMEOUT);
    assert!(
        String::from_utf8_lossy(&reply).contains("active name     <two> at port 4000, fd = "),
        "DUMP from 127.0.0.2: {}",
        hex(&reply)
    );

    let mut kill = connect_from(source, dest);
    kill.write(&req(KILL));
    assert_bytes_eq(
        "KILL from 127.0.0.2",
        &unhex(KILL_NO),
        &kill.read_to_eof(IO_TIMEOUT),
    );

    assert_eq!(registered(port), [("two".to_owned(), 4000)]);
    drop(reg);
    assert_unregistered_soon(port, "two", "after closing");
}
