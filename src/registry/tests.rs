//! Unit tests of the registry: duplicates, ownership, creation sequences, old-list recycling.

use super::*;
use crate::protocol::{Alive2Reply, NodeType};

const T0: u64 = 1_800_000_000;

fn info(name: &str, port: u16) -> NodeInfo {
    NodeInfo {
        port,
        node_type: NodeType::Normal,
        protocol: 0,
        highest_version: 6,
        lowest_version: 5,
        name: NodeName::new(name.as_bytes()).unwrap(),
        extra: Vec::new(),
    }
}

fn names(r: &Registry) -> Vec<&str> {
    r.newest_first().map(|g| g.info.name.as_str()).collect()
}

#[test]
fn duplicate_name_is_refused_with_creation_99() {
    let mut r = Registry::default();
    r.register(ConnId(1), 7, info("foo", 5000), T0).unwrap();
    let err = r.register(ConnId(2), 8, info("foo", 5001), T0).unwrap_err();
    assert_eq!(err, RegisterError::Duplicate { owner: ConnId(1) });
    let mut out = Vec::new();
    Alive2Reply::new(6, Err(())).encode(&mut out);
    assert_eq!(out, [0x76, 0x01, 0x00, 0x00, 0x00, 0x63]);
    out.clear();
    Alive2Reply::new(5, Err(())).encode(&mut out);
    assert_eq!(out, [0x79, 0x01, 0x00, 0x63]);
    assert_eq!(r.lookup(&info("foo", 0).name).unwrap().info.port, 5000);
    r.assert_invariants();
}

#[test]
fn one_registration_per_connection() {
    let mut r = Registry::default();
    r.register(ConnId(1), 7, info("a", 1), T0).unwrap();
    assert_eq!(
        r.register(ConnId(1), 7, info("b", 2), T0),
        Err(RegisterError::ConnectionBusy)
    );
    r.assert_invariants();
}

#[test]
fn registrations_stop_at_the_cap() {
    let mut r = Registry::default();
    r.set_max_registrations(2);
    r.register(ConnId(1), 7, info("a", 1), T0).unwrap();
    r.register(ConnId(2), 7, info("b", 1), T0).unwrap();
    assert_eq!(
        r.register(ConnId(3), 7, info("c", 1), T0),
        Err(RegisterError::Full)
    );
    r.unregister_conn(ConnId(1));
    r.register(ConnId(3), 7, info("c", 1), T0).unwrap();
    r.assert_invariants();
}

#[test]
fn unregister_by_connection_moves_to_old_list() {
    let mut r = Registry::default();
    r.register(ConnId(1), 7, info("a", 1), T0).unwrap();
    r.register(ConnId(2), 8, info("b", 2), T0).unwrap();
    assert_eq!(names(&r), ["b", "a"]);
    let gone = r.unregister_conn(ConnId(1)).unwrap();
    assert_eq!(gone.info.name.as_str(), "a");
    assert!(r.unregister_conn(ConnId(1)).is_none());
    assert!(r.unregister_conn(ConnId(99)).is_none());
    assert_eq!(names(&r), ["b"]);
    let old: Vec<_> = r
        .old_entries()
        .map(|o| (o.name.as_str(), o.port, o.fd))
        .collect();
    assert_eq!(old, [("a", 1, 7)]);
    r.assert_invariants();
}

#[test]
fn unregister_by_name_returns_the_owner() {
    let mut r = Registry::default();
    r.register(ConnId(5), 7, info("a", 1), T0).unwrap();
    assert!(r.unregister_name(b"b").is_none());
    assert!(r.unregister_name(&[0xFF]).is_none());
    assert_eq!(r.unregister_name(b"a").unwrap().conn, ConnId(5));
    assert!(r.is_empty());
    assert!(r.by_conn(ConnId(5)).is_none());
    r.assert_invariants();
}

#[test]
fn creation_sequence_for_new_and_reregistered_names() {
    let mut r = Registry::default();
    // A new name: time + 1.
    assert_eq!(
        r.register(ConnId(1), 7, info("a", 1), T0).unwrap(),
        1_800_000_001
    );
    // Another new name in the same second may share it.
    assert_eq!(
        r.register(ConnId(2), 7, info("b", 1), T0).unwrap(),
        1_800_000_001
    );
    // Re-registration of the same name: +1 per cycle, whatever the clock says.
    r.unregister_conn(ConnId(1));
    assert_eq!(
        r.register(ConnId(3), 7, info("a", 1), T0 + 100).unwrap(),
        1_800_000_002
    );
    r.unregister_conn(ConnId(3));
    assert_eq!(
        r.register(ConnId(4), 7, info("a", 1), T0 + 200).unwrap(),
        1_800_000_003
    );
    r.assert_invariants();
}

#[test]
fn both_reply_widths() {
    let cr = 1_800_000_001u32;
    let mut out = Vec::new();
    Alive2Reply::new(6, Ok(cr)).encode(&mut out);
    assert_eq!(out, [0x76, 0x00, 0x6B, 0x49, 0xD2, 0x01]);
    out.clear();
    Alive2Reply::new(5, Ok(cr)).encode(&mut out);
    // 1_800_000_001 % 3 + 1 = 2
    assert_eq!(out, [0x79, 0x00, 0x00, 0x02]);
    out.clear();
    Alive2Reply::new(7, Ok(4)).encode(&mut out);
    assert_eq!(out, [0x76, 0x00, 0x00, 0x00, 0x00, 0x04]);
    out.clear();
    Alive2Reply::new(0, Ok(4)).encode(&mut out);
    assert_eq!(out, [0x79, 0x00, 0x00, 0x02]);
}

#[test]
fn old_list_recycles_the_oldest_slot_past_the_threshold() {
    let mut r = Registry::new(Limits::new(true)); // threshold 5
    for i in 0..6u64 {
        let name = format!("n{i}");
        r.register(ConnId(i), 7, info(&name, 1), T0 + i).unwrap();
        r.unregister_conn(ConnId(i));
    }
    assert_eq!(r.old_len(), 6);
    // More than 5 old entries: a brand-new name takes the oldest slot ("n0") and keeps its
    // counter unbumped.
    assert_eq!(
        r.register(ConnId(100), 7, info("fresh", 1), T0 + 50)
            .unwrap(),
        1_800_000_001
    );
    assert_eq!(r.old_len(), 5);
    assert!(r.old_entries().all(|o| o.name.as_str() != "n0"));
    // At exactly 5 old entries a new name gets a new slot.
    assert_eq!(
        r.register(ConnId(101), 7, info("fresh2", 1), T0 + 60)
            .unwrap(),
        1_800_000_061
    );
    assert_eq!(r.old_len(), 5);
    // A name still in the old list is bumped, not recycled.
    assert_eq!(
        r.register(ConnId(102), 7, info("n3", 1), T0 + 70).unwrap(),
        1_800_000_005
    );
    assert_eq!(r.old_len(), 4);
    r.assert_invariants();
}

#[test]
fn restore_keeps_order_creations_and_old_slots() {
    let mut r = Registry::default();
    for (i, n) in ["a", "b", "c"].iter().enumerate() {
        r.register(ConnId(i as u64), i as u32, info(n, i as u16), T0 + i as u64)
            .unwrap();
    }
    r.unregister_conn(ConnId(1));
    let live: Vec<Registration> = r.oldest_first().cloned().collect();
    let old: Vec<OldEntry> = r.old_entries().cloned().collect();
    let mut back = Registry::restore(Limits::default(), live, old).unwrap();
    back.assert_invariants();
    assert_eq!(names(&back), ["c", "a"]);
    assert_eq!(
        back.lookup(&info("c", 0).name).unwrap().creation,
        1_800_000_003
    );
    // The old slot still bumps its creation on re-registration.
    assert_eq!(
        back.register(ConnId(9), 0, info("b", 1), T0 + 99).unwrap(),
        1_800_000_003
    );
    back.assert_invariants();
}

#[test]
fn restore_refuses_inconsistent_states() {
    let reg = |name: &str, conn: u64| Registration {
        info: info(name, 1),
        conn: ConnId(conn),
        fd: 0,
        creation: 5,
        registered_at: T0,
    };
    let old = |name: &str| OldEntry {
        name: NodeName::new(name.as_bytes()).unwrap(),
        port: 1,
        fd: 0,
        creation: 5,
    };
    let limits = Limits::default();
    assert_eq!(
        Registry::restore(limits, vec![reg("a", 1), reg("a", 2)], vec![]).unwrap_err(),
        RestoreError::DuplicateName
    );
    assert_eq!(
        Registry::restore(limits, vec![reg("a", 1), reg("b", 1)], vec![]).unwrap_err(),
        RestoreError::DuplicateConnection
    );
    assert_eq!(
        Registry::restore(limits, vec![reg("a", 1)], vec![old("a")]).unwrap_err(),
        RestoreError::DuplicateOldName
    );
    assert_eq!(
        Registry::restore(limits, vec![], vec![old("x"), old("x")]).unwrap_err(),
        RestoreError::DuplicateOldName
    );
}

#[test]
fn old_entries_are_listed_oldest_first() {
    let mut r = Registry::default();
    for (i, n) in ["x", "y", "z"].iter().enumerate() {
        r.register(ConnId(i as u64), i as u32, info(n, i as u16), T0)
            .unwrap();
    }
    r.unregister_conn(ConnId(1));
    r.unregister_conn(ConnId(0));
    r.unregister_conn(ConnId(2));
    let old: Vec<_> = r.old_entries().map(|o| o.name.as_str()).collect();
    assert_eq!(old, ["y", "x", "z"]);
}
