//! Unit tests of request dispatch: replies as bytes, connection fate, registry effects.

use super::*;
use crate::protocol::{Alive2Request, NodeName, NodeType};

const NOW: u64 = 1_800_000_000;

fn cfg(relaxed: bool) -> DispatchConfig {
    DispatchConfig {
        header_port: 4369,
        relaxed,
    }
}

fn origin(conn: u64, local: bool) -> Origin {
    Origin {
        conn: ConnId(conn),
        fd: conn as u32,
        local,
    }
}

fn alive(name: &str, port: u16, high: u16) -> Request {
    Request::Alive2(Alive2Request {
        port,
        node_type: NodeType::Normal,
        protocol: 0,
        highest_version: high,
        lowest_version: 5,
        name: name.as_bytes().to_vec(),
        extra: Vec::new(),
    })
}

fn run(reg: &mut Registry, req: Request, o: Origin, relaxed: bool) -> Action {
    handle(req, o, &cfg(relaxed), reg, NOW, |_| false)
}

#[test]
fn alive2_registers_and_keeps_the_connection() {
    let mut reg = Registry::default();
    let a = run(&mut reg, alive("foo", 5000, 6), origin(1, true), false);
    assert_eq!(a.reply, [0x76, 0x00, 0x6B, 0x49, 0xD2, 0x01]);
    assert_eq!(a.after, After::Register);
    assert_eq!(reg.len(), 1);
}

#[test]
fn refused_registrations_also_keep_the_connection() {
    let mut reg = Registry::default();
    run(&mut reg, alive("foo", 5000, 6), origin(1, true), false);
    let dup = run(&mut reg, alive("foo", 5001, 5), origin(2, true), false);
    assert_eq!(dup.reply, [0x79, 0x01, 0x00, 0x63]);
    assert_eq!(dup.after, After::Register);
    assert_eq!(dup.event, Event::Duplicate);
    let bad = run(
        &mut reg,
        alive(&"a".repeat(256), 1, 6),
        origin(3, true),
        false,
    );
    assert_eq!(bad.reply, [0x76, 0x01, 0x00, 0x00, 0x00, 0x63]);
    assert_eq!(bad.after, After::Register);
    assert_eq!(reg.len(), 1);
}

#[test]
fn a_dead_owner_is_replaced_but_a_live_one_is_not() {
    let mut reg = Registry::default();
    run(&mut reg, alive("foo", 5000, 6), origin(1, true), false);
    let a = handle(
        alive("foo", 5001, 6),
        origin(2, true),
        &cfg(false),
        &mut reg,
        NOW,
        |c| c == ConnId(1),
    );
    assert_eq!(a.reply[..2], [0x76, 0x00]);
    assert_eq!(a.close, Some(ConnId(1)));
    // Re-registration of the same name: the counter is bumped.
    assert_eq!(
        a.event,
        Event::ReplacedDeadOwner {
            creation: 1_800_000_002
        }
    );
    assert_eq!(reg.by_conn(ConnId(2)).unwrap().info.port, 5001);
    assert!(reg.by_conn(ConnId(1)).is_none());
    reg.assert_invariants();
}

#[test]
fn local_only_requests_from_remote_peers_close_silently() {
    let mut reg = Registry::default();
    for req in [
        alive("x", 1, 6),
        Request::Dump,
        Request::Kill,
        Request::Stop(b"x".to_vec()),
    ] {
        let a = run(&mut reg, req, origin(1, false), true);
        assert_eq!(a.reply, b"");
        assert_eq!(a.after, After::Close);
        assert_eq!(a.event, Event::NotLocal);
    }
    assert!(reg.is_empty());
    // NAMES and PORT_PLEASE2 are for anyone.
    assert_eq!(
        run(&mut reg, Request::Names, origin(1, false), false).reply,
        [0, 0, 0x11, 0x11]
    );
    let name = NodeName::new(b"x").unwrap();
    assert_eq!(
        run(
            &mut reg,
            Request::PortPlease2(name),
            origin(1, false),
            false
        )
        .reply,
        [0x77, 0x01]
    );
}

#[test]
fn port_please2_echoes_the_registration() {
    let mut reg = Registry::default();
    let req = Request::Alive2(Alive2Request {
        port: 6000,
        node_type: NodeType::Hidden,
        protocol: 0,
        highest_version: 7,
        lowest_version: 6,
        name: b"baz".to_vec(),
        extra: b"AB\0C".to_vec(),
    });
    run(&mut reg, req, origin(1, true), false);
    let a = run(
        &mut reg,
        Request::PortPlease2(NodeName::new(b"baz").unwrap()),
        origin(2, false),
        false,
    );
    assert_eq!(
        a.reply,
        [
            0x77, 0x00, 0x17, 0x70, 0x48, 0x00, 0x00, 0x07, 0x00, 0x06, 0x00, 0x03, 0x62, 0x61,
            0x7A, 0x00, 0x04, 0x41, 0x42, 0x00, 0x43
        ]
    );
    assert_eq!(a.after, After::Close);
}

#[test]
fn names_and_dump_list_newest_first_then_old() {
    let mut reg = Registry::default();
    run(&mut reg, alive("foo", 5555, 6), origin(5, true), false);
    run(&mut reg, alive("bar", 4242, 6), origin(6, true), false);
    run(&mut reg, alive("baz", 6000, 6), origin(7, true), false);
    let names = run(&mut reg, Request::Names, origin(9, true), false);
    assert_eq!(
        names.reply,
        &b"\x00\x00\x11\x11name baz at port 6000\nname bar at port 4242\nname foo at port 5555\n"[..]
    );
    reg.unregister_conn(ConnId(5));
    let dump = run(&mut reg, Request::Dump, origin(9, true), false);
    assert_eq!(
        dump.reply,
        &b"\x00\x00\x11\x11active name     <baz> at port 6000, fd = 7\n\0active name     <bar> at port 4242, fd = 6\n\0old/unused name <foo>, port = 5555, fd = 5 \n\0"[..]
    );
}

#[test]
fn kill_rules() {
    let mut reg = Registry::default();
    let a = run(&mut reg, Request::Kill, origin(1, true), false);
    assert_eq!((a.reply.as_slice(), a.after), (&b"OK"[..], After::Exit));
    run(&mut reg, alive("n", 1, 6), origin(2, true), false);
    let a = run(&mut reg, Request::Kill, origin(3, true), false);
    assert_eq!((a.reply.as_slice(), a.after), (&b"NO"[..], After::Close));
    let a = run(&mut reg, Request::Kill, origin(3, true), true);
    assert_eq!((a.reply.as_slice(), a.after), (&b"OK"[..], After::Exit));
}

#[test]
fn stop_rules() {
    let mut reg = Registry::default();
    run(&mut reg, alive("n", 1, 6), origin(2, true), false);
    let a = run(
        &mut reg,
        Request::Stop(b"n".to_vec()),
        origin(3, true),
        false,
    );
    assert_eq!(
        (a.reply.as_slice(), a.event),
        (&b""[..], Event::StopIgnored)
    );
    assert_eq!(reg.len(), 1);
    let a = run(
        &mut reg,
        Request::Stop(b"n".to_vec()),
        origin(3, true),
        true,
    );
    assert_eq!(a.reply, b"STOPPED");
    assert_eq!(a.close, Some(ConnId(2)));
    assert!(reg.is_empty());
    let a = run(
        &mut reg,
        Request::Stop(b"n".to_vec()),
        origin(3, true),
        true,
    );
    assert_eq!(a.reply, b"NOEXISTSTOPPED");
    assert_eq!(a.close, None);
}
