//! Hold: one server at a time registers as many nodes as it will take, each over its own
//! connection kept open by the bench, until two registrations in a row fail (refused,
//! closed without a reply, or no reply within 0.5 s). Then, while it is full, lookups (one
//! at a time, up to 1000, giving up after 3 failures) and NAMES (3 tries, byte-exact) must
//! still be answered. The same probe runs again after 16 registrations are released, to
//! show lookup latency with nearly the maximum held.
//!
//! RSS is sampled idle, every 1000 registrations and when full. The registrations come from
//! 127.0.1.1–250 and the probes from 127.0.0.2, so that the bench's `connect()` does not
//! slow down with thousands of connections open (see `wire::connect`).

use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use crate::daemon::{Daemon, Kind};
use crate::limits;
use crate::procstat;
use crate::settings::Settings;
use crate::stats::{median, percentile};
use crate::wire::{self, Node, RegisterError};

/// Timeout of one registration or lookup while filling or full.
const TIMEOUT: Duration = Duration::from_millis(500);
/// Timeout of one NAMES (a reply of 20,000 lines takes a few ms).
const NAMES_TIMEOUT: Duration = Duration::from_secs(2);
/// Lookups measured per probe.
const LOOKUPS: usize = 1000;
/// Source address of the probes (the registrations come from 127.0.1.x).
const PROBE_SOURCE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Registrations released before the second probe.
pub(crate) const RELEASED: usize = 16;

/// Lookups and NAMES against a server in one state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probe {
    /// Lookups answered with the exact reply.
    pub(crate) lookups_ok: usize,
    /// Lookups tried.
    pub(crate) lookups_tried: usize,
    /// Latency of the answered lookups, µs.
    pub(crate) p50_us: f64,
    /// Latency of the answered lookups, µs.
    pub(crate) p99_us: f64,
    /// NAMES answered byte-exact.
    pub(crate) names_ok: usize,
    /// NAMES tried.
    pub(crate) names_tried: usize,
    /// Time of one NAMES listing every registration, ms.
    pub(crate) names_ms: f64,
    /// Server CPU per lookup, µs.
    pub(crate) server_us: f64,
    /// Bench CPU per lookup, µs.
    pub(crate) client_us: f64,
}

impl Probe {
    fn run(daemon: &Daemon, nodes: &[Node]) -> Probe {
        let addr = daemon.addr();
        let mut p = Probe::default();
        let mut lat = Vec::new();
        let server0 = procstat::cpu_time(daemon.pid).unwrap_or_default();
        let client0 = procstat::self_cpu_time();
        if let Some(first) = nodes.first() {
            let frame = wire::port_please_frame(&first.name);
            let expected = wire::expected_port2(first);
            let mut failed = 0;
            while p.lookups_ok < LOOKUPS && failed < 3 {
                p.lookups_tried += 1;
                match wire::request_from(addr, Some(PROBE_SOURCE), &frame, TIMEOUT) {
                    Ok((reply, took)) if reply == expected => {
                        p.lookups_ok += 1;
                        lat.push(took.as_nanos().min(u128::from(u32::MAX)) as u32);
                    }
                    _ => failed += 1,
                }
            }
        }
        let n = p.lookups_tried.max(1) as f64;
        let server = procstat::cpu_time(daemon.pid).unwrap_or_default();
        p.server_us = server.saturating_sub(server0).as_secs_f64() * 1e6 / n;
        p.client_us = procstat::self_cpu_time()
            .saturating_sub(client0)
            .as_secs_f64()
            * 1e6
            / n;
        lat.sort_unstable();
        p.p50_us = percentile(&lat, 0.5) / 1e3;
        p.p99_us = percentile(&lat, 0.99) / 1e3;
        let expected = wire::expected_names(daemon.port, nodes);
        let frame = wire::names_frame();
        let mut times = Vec::new();
        for _ in 0..3 {
            p.names_tried += 1;
            let got = wire::request_from(addr, Some(PROBE_SOURCE), &frame, NAMES_TIMEOUT);
            match got {
                Ok((reply, took)) if reply == expected => {
                    p.names_ok += 1;
                    times.push(took.as_secs_f64() * 1e3);
                }
                // One failure is enough: a full server would only fail again.
                _ => break,
            }
        }
        p.names_ms = median(&times);
        p
    }

    /// Medians of the latencies, sums of the counts.
    fn combine(probes: &[&Probe]) -> Probe {
        let m = |f: fn(&Probe) -> f64| median(&probes.iter().map(|p| f(p)).collect::<Vec<_>>());
        Probe {
            lookups_ok: probes.iter().map(|p| p.lookups_ok).sum(),
            lookups_tried: probes.iter().map(|p| p.lookups_tried).sum(),
            p50_us: m(|p| p.p50_us),
            p99_us: m(|p| p.p99_us),
            names_ok: probes.iter().map(|p| p.names_ok).sum(),
            names_tried: probes.iter().map(|p| p.names_tried).sum(),
            names_ms: m(|p| p.names_ms),
            server_us: m(|p| p.server_us),
            client_us: m(|p| p.client_us),
        }
    }

    /// True when every lookup and NAMES was answered.
    pub(crate) fn all_answered(&self) -> bool {
        self.lookups_tried > 0
            && self.lookups_ok == self.lookups_tried
            && self.names_ok == self.names_tried
    }
}

/// One server's hold figures (medians across rounds; samples of the first round).
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    /// The server.
    pub(crate) kind: Kind,
    /// Registrations held when full.
    pub(crate) count: usize,
    /// The server's soft fd limit.
    pub(crate) fd_limit: Option<u64>,
    /// Seconds from the first registration to the last successful one.
    pub(crate) seconds: f64,
    /// RSS before the first registration, bytes.
    pub(crate) rss_idle: u64,
    /// RSS when full, bytes.
    pub(crate) rss_full: u64,
    /// Why filling stopped (first round).
    pub(crate) stop: String,
    /// Lookups and NAMES while full.
    pub(crate) full: Probe,
    /// Lookups and NAMES after releasing [`RELEASED`] registrations.
    pub(crate) near_full: Probe,
    /// (registrations, RSS bytes) while filling, first round.
    pub(crate) samples: Vec<(usize, u64)>,
}

impl Hold {
    /// RSS growth per registration, bytes.
    pub(crate) fn bytes_per_registration(&self) -> f64 {
        self.rss_full.saturating_sub(self.rss_idle) as f64 / self.count.max(1) as f64
    }

    /// RSS growth per registration over the last quarter of the fill (first round): the
    /// marginal cost, without the one-off growth of tables that double in size earlier.
    pub(crate) fn marginal_bytes_per_registration(&self) -> Option<f64> {
        let &(n1, rss1) = self.samples.last()?;
        let target = n1 * 3 / 4;
        let &(n0, rss0) = self
            .samples
            .iter()
            .filter(|(n, _)| *n + 1000 <= n1)
            .min_by_key(|(n, _)| n.abs_diff(target))?;
        Some(rss1.saturating_sub(rss0) as f64 / (n1 - n0) as f64)
    }
}

/// Runs the scenario for every server.
pub(crate) fn run(settings: &Settings, kinds: &[Kind]) -> Vec<Hold> {
    eprintln!(
        "  hold: bench fd limit {}, server fd limit {}",
        limits::bench_limit(),
        limits::server_limit().rlim_cur,
    );
    let mut out = Vec::new();
    for &kind in kinds {
        let rounds: Vec<Hold> = (0..settings.hold_rounds).map(|_| one(kind)).collect();
        let m = |f: fn(&Hold) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        let hold = Hold {
            count: m(|h| h.count as f64) as usize,
            seconds: m(|h| h.seconds),
            rss_idle: m(|h| h.rss_idle as f64) as u64,
            rss_full: m(|h| h.rss_full as f64) as u64,
            full: Probe::combine(&rounds.iter().map(|h| &h.full).collect::<Vec<_>>()),
            near_full: Probe::combine(&rounds.iter().map(|h| &h.near_full).collect::<Vec<_>>()),
            ..rounds[0].clone()
        };
        eprintln!(
            "  hold      {:<8} {} registrations in {:.2} s (fd limit {}; stopped: {}), RSS {:.2} → {:.2} MiB ({:.0} B/registration); full: lookups {}/{}, NAMES {}/{}; full−{RELEASED}: lookups {}/{} (p50 {:.0} µs, p99 {:.0} µs, server {:.1} µs/lookup, client {:.1} µs/lookup), NAMES {}/{}",
            kind.label(),
            hold.count,
            hold.seconds,
            hold.fd_limit.map_or("?".into(), |l| l.to_string()),
            hold.stop,
            hold.rss_idle as f64 / 1048576.0,
            hold.rss_full as f64 / 1048576.0,
            hold.bytes_per_registration(),
            hold.full.lookups_ok,
            hold.full.lookups_tried,
            hold.full.names_ok,
            hold.full.names_tried,
            hold.near_full.lookups_ok,
            hold.near_full.lookups_tried,
            hold.near_full.p50_us,
            hold.near_full.p99_us,
            hold.near_full.server_us,
            hold.near_full.client_us,
            hold.near_full.names_ok,
            hold.near_full.names_tried,
        );
        out.push(hold);
    }
    out
}

fn one(kind: Kind) -> Hold {
    let mut daemon = Daemon::spawn(kind).unwrap_or_else(|e| panic!("{e}"));
    let addr = daemon.addr();
    let fd_limit = procstat::fd_limit(daemon.pid);
    let rss_idle = procstat::rss_bytes(daemon.pid).unwrap_or(0);
    let mut samples = vec![(0, rss_idle)];
    let mut nodes: Vec<Node> = Vec::new();
    let mut held: Vec<TcpStream> = Vec::new();
    let budget = limits::bench_limit() as usize;
    let base_fds = procstat::open_fds(std::process::id()).unwrap_or(16);
    let start = Instant::now();
    let mut last_ok = start;
    let mut failures = 0;
    let stop = loop {
        if base_fds + held.len() + 8 >= budget {
            break "the bench's fd limit".to_string();
        }
        let node = Node::numbered("hold", nodes.len());
        let from = wire::spread_source(nodes.len());
        match wire::register(addr, Some(from), &node, TIMEOUT) {
            Ok(stream) => {
                held.push(stream);
                nodes.push(node);
                last_ok = Instant::now();
                failures = 0;
                if held.len() % 1000 == 0 {
                    samples.push((held.len(), procstat::rss_bytes(daemon.pid).unwrap_or(0)));
                }
            }
            Err(RegisterError::BenchFds) => break "the bench's fd limit".to_string(),
            Err(e) => {
                failures += 1;
                if failures >= 2 {
                    break e.to_string();
                }
            }
        }
    };
    let seconds = (last_ok - start).as_secs_f64();
    let rss_full = procstat::rss_bytes(daemon.pid).unwrap_or(0);
    let count = nodes.len();
    samples.push((count, rss_full));

    let full = Probe::run(&daemon, &nodes);
    let keep = count.saturating_sub(RELEASED);
    held.truncate(keep);
    nodes.truncate(keep);
    // Give the server time to see the closes (and to resume accepting).
    std::thread::sleep(Duration::from_millis(300));
    let near_full = Probe::run(&daemon, &nodes);

    let stop = if daemon.is_running() {
        stop
    } else {
        format!("{stop}; the server exited: {}", daemon.log_tail())
    };
    drop(held);
    Hold {
        kind,
        count,
        fd_limit,
        seconds,
        rss_idle,
        rss_full,
        stop,
        full,
        near_full,
        samples,
    }
}
