//! The in-process scale simulation: no sockets, just `epmd_rs::registry::Registry` and the
//! NAMES/DUMP renderers of `epmd_rs::protocol::text`, at registration counts this machine
//! cannot reach over TCP (its fd limit is 20,000). It shows whether the per-operation costs
//! stay flat as the registry grows (and NAMES/DUMP stay linear).
//!
//! For each size n: register n nodes, look each up once (in a scrambled order), render
//! NAMES and DUMP, run register → unregister churn at size n, then unregister all n. RSS
//! growth of the bench process per registration is reported too (allocator-dependent, so
//! approximate).

use std::hint::black_box;
use std::time::{Duration, Instant};

use epmd_rs::protocol::text::{
    push_dump_active_line, push_dump_old_line, push_names_line, push_port_header,
};
use epmd_rs::protocol::{NodeInfo, NodeName, NodeType};
use epmd_rs::registry::{ConnId, Limits, Registry};

use crate::procstat;

/// A prime larger than every size, so `i * STRIDE % n` visits every index once.
const STRIDE: usize = 1_000_003;
/// Unix time passed to the registry.
const NOW: u64 = 1_700_000_000;

/// Figures for one size.
#[derive(Clone, Debug)]
pub(crate) struct SimRow {
    /// Registrations.
    pub(crate) n: usize,
    /// ns per register.
    pub(crate) register_ns: f64,
    /// ns per lookup.
    pub(crate) lookup_ns: f64,
    /// ns per register + unregister pair at size n.
    pub(crate) churn_ns: f64,
    /// ns per unregister.
    pub(crate) unregister_ns: f64,
    /// ms per NAMES rendering (all n lines).
    pub(crate) names_ms: f64,
    /// ms per DUMP rendering.
    pub(crate) dump_ms: f64,
    /// RSS growth of the bench per registration, bytes (approximate).
    pub(crate) rss_per_reg: f64,
}

impl SimRow {
    /// ns per NAMES line.
    pub(crate) fn names_ns_per_line(&self) -> f64 {
        self.names_ms * 1e6 / self.n.max(1) as f64
    }
}

fn info(name: &str, port: u16) -> NodeInfo {
    NodeInfo {
        port,
        node_type: NodeType::Normal,
        protocol: 0,
        highest_version: 6,
        lowest_version: 5,
        name: NodeName::new(name.as_bytes()).expect("valid name"),
        extra: Vec::new(),
    }
}

fn per_op(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n.max(1) as f64
}

/// Runs the simulation at every size.
pub(crate) fn run(sizes: &[usize]) -> Vec<SimRow> {
    sizes.iter().map(|&n| one(n)).collect()
}

fn one(n: usize) -> SimRow {
    let infos: Vec<NodeInfo> = (0..n)
        .map(|i| info(&format!("node{i}"), (i % 60_000) as u16))
        .collect();
    let names: Vec<NodeName> = infos.iter().map(|i| i.name.clone()).collect();
    let churn_count = n.min(100_000);
    let churn: Vec<NodeInfo> = (0..churn_count)
        .map(|i| info(&format!("churn{i}"), 4000))
        .collect();

    let rss0 = procstat::self_rss_bytes();
    let mut reg = Registry::new(Limits::default());
    let t = Instant::now();
    for (i, info) in infos.into_iter().enumerate() {
        reg.register(ConnId(i as u64), i as u32, info, NOW)
            .expect("unique names register");
    }
    let register_ns = per_op(t.elapsed(), n);
    let rss1 = procstat::self_rss_bytes();

    let t = Instant::now();
    for j in 0..n {
        black_box(reg.lookup(&names[j * STRIDE % n]));
    }
    let lookup_ns = per_op(t.elapsed(), n);

    let mut names_times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut out = Vec::new();
        push_port_header(4369, &mut out);
        for r in reg.newest_first() {
            push_names_line(r.info.name.as_bytes(), r.info.port, &mut out);
        }
        names_times.push(t.elapsed().as_secs_f64() * 1e3);
        black_box(out);
    }

    let t = Instant::now();
    for (j, info) in churn.into_iter().enumerate() {
        let conn = ConnId((n + j) as u64);
        reg.register(conn, 0, info, NOW)
            .expect("fresh name registers");
        black_box(reg.unregister_conn(conn));
    }
    let churn_ns = per_op(t.elapsed(), churn_count);

    let mut dump_times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let mut out = Vec::new();
        push_port_header(4369, &mut out);
        for r in reg.newest_first() {
            push_dump_active_line(r.info.name.as_bytes(), r.info.port, r.fd, &mut out);
        }
        for o in reg.old_entries() {
            push_dump_old_line(o.name.as_bytes(), o.port, o.fd, &mut out);
        }
        dump_times.push(t.elapsed().as_secs_f64() * 1e3);
        black_box(out);
    }

    let t = Instant::now();
    for j in 0..n {
        black_box(reg.unregister_conn(ConnId((j * STRIDE % n) as u64)));
    }
    let unregister_ns = per_op(t.elapsed(), n);
    assert!(reg.is_empty());

    let row = SimRow {
        n,
        register_ns,
        lookup_ns,
        churn_ns,
        unregister_ns,
        names_ms: crate::stats::median(&names_times),
        dump_ms: crate::stats::median(&dump_times),
        rss_per_reg: rss1.saturating_sub(rss0) as f64 / n.max(1) as f64,
    };
    eprintln!(
        "  sim       n={:<8} register {:>6.0} ns  lookup {:>6.0} ns  churn {:>6.0} ns  unregister {:>6.0} ns  NAMES {:>8.2} ms ({:.1} ns/line)  DUMP {:>8.2} ms  RSS {:.0} B/registration",
        row.n,
        row.register_ns,
        row.lookup_ns,
        row.churn_ns,
        row.unregister_ns,
        row.names_ms,
        row.names_ns_per_line(),
        row.dump_ms,
        row.rss_per_reg
    );
    row
}
