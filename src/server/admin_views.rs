//! The admin views, rendered from what the loop lends: the registry, the connections and
//! the counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use mio::Token;

use crate::admin::{ConfigEntry, NodeView, OldView, StatsView, View, WatchEvent};
use crate::protocol::Alive2Reply;
use crate::registry::{Registration, Registry};
use crate::server::connection::{Connection, Phase};
use crate::server::lifecycle::fdstore::FdStoreCounts;
use crate::server::stats::Stats;
use crate::server::token::TokenMap;

/// What the views are rendered from.
#[derive(Debug)]
pub struct Sources<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The epmd connections.
    pub conns: &'a TokenMap<Box<Connection>>,
    /// The counters.
    pub stats: &'a Stats,
    /// Open admin clients.
    pub admin_conns: usize,
    /// Seconds since the first daemon of this lineage started.
    pub uptime_secs: u64,
    /// The addresses listened on.
    pub listening: &'a [SocketAddr],
    /// The fd store's counters, if it is in use.
    pub fd_store: Option<FdStoreCounts>,
    /// The effective configuration (`admin config`).
    pub config: Vec<ConfigEntry>,
    /// The Unix time now.
    pub now: u64,
}

/// `view` as one JSON document (`watch` and `upgrade` are no views: empty).
pub fn render(view: View, src: &Sources<'_>) -> String {
    let json = match view {
        View::Nodes => serde_json::to_string(&node_views(src)),
        View::Old => {
            let old: Vec<OldView> = src
                .registry
                .old_entries()
                .map(|o| OldView {
                    name: o.name.as_str().to_owned(),
                    port: o.port,
                    creation: o.creation,
                })
                .collect();
            serde_json::to_string(&old)
        }
        View::Stats => serde_json::to_string(&stats_view(src)),
        View::Config => serde_json::to_string(&src.config),
        View::Watch | View::Upgrade | View::History => Ok(String::new()),
    };
    json.unwrap_or_default()
}

fn node_views(src: &Sources<'_>) -> Vec<NodeView> {
    src.registry
        .newest_first()
        .map(|r| {
            let conn = src.conns.get(&Token(r.conn.0 as usize));
            NodeView {
                name: r.info.name.as_str().to_owned(),
                port: r.info.port,
                node_type: r.info.node_type.to_string(),
                protocol: r.info.protocol,
                highest_version: r.info.highest_version,
                lowest_version: r.info.lowest_version,
                creation: creation_as_sent(r),
                extra_hex: r.info.extra.iter().map(|b| format!("{b:02x}")).collect(),
                peer: conn.map(|c| c.peer.to_string()).unwrap_or_default(),
                local: conn
                    .and_then(|c| c.local_addr())
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                registered_at: r.registered_at,
                registered: crate::admin::table::rfc3339(r.registered_at),
                age_secs: src.now.saturating_sub(r.registered_at),
            }
        })
        .collect()
}

fn stats_view(src: &Sources<'_>) -> StatsView {
    let stats = src.stats;
    let mut connections = BTreeMap::new();
    let (mut bytes_in, mut bytes_out) = (stats.bytes_in, stats.bytes_out);
    for c in src.conns.values() {
        let phase = match c.phase {
            Phase::AcceptDelay => "accept_delay",
            Phase::Reading => "reading",
            Phase::WriteDelay(..) => "write_delay",
            Phase::Writing(_) => "writing",
            Phase::Registered => "registration",
        };
        *connections.entry(phase.to_owned()).or_insert(0u64) += 1;
        bytes_in += c.bytes_in;
        bytes_out += c.bytes_out;
    }
    connections.insert("admin".to_owned(), src.admin_conns as u64);
    StatsView {
        uptime_secs: src.uptime_secs,
        listening: src.listening.iter().map(|a| a.to_string()).collect(),
        connections,
        registrations: src.registry.len() as u64,
        old_names: src.registry.old_len() as u64,
        peak_registrations: stats.peak_registrations,
        peak_connections: stats.peak_connections,
        accepted: stats.accepted,
        requests: stats
            .requests
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        non_local_refusals: stats.non_local_refusals,
        deadline_expiries: stats.deadline_expiries,
        accept_errors: stats.accept_errors,
        malformed_requests: stats.malformed_requests,
        handovers: stats.handovers,
        capped_connections: stats.capped,
        policy_refusals: stats.policy_refusals,
        admin_capped: stats.admin_capped,
        admin_timeouts: stats.admin_timeouts,
        log_lines_dropped: crate::logging::dropped_lines(),
        fd_store: src
            .fd_store
            .map(|c| {
                BTreeMap::from([
                    ("stored".to_owned(), c.stored),
                    ("removed".to_owned(), c.removed),
                    ("pending".to_owned(), c.pending),
                    ("failed".to_owned(), c.failed),
                ])
            })
            .unwrap_or_default(),
        refused: BTreeMap::from([
            ("cap".to_owned(), stats.capped_cap),
            ("local_reserve".to_owned(), stats.capped_reserve),
            ("per_source_cap".to_owned(), stats.capped_per_source),
        ]),
        unregistrations: stats
            .unregistrations()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        http_capped: stats.http_capped,
        http_timeouts: stats.http_timeouts,
        bytes_in,
        bytes_out,
    }
}

/// The `watch` event of `kind` (`register`, `unregister`) for `reg` at Unix time `at`.
pub fn watch_event(kind: &str, reg: &Registration, at: u64) -> WatchEvent {
    WatchEvent {
        event: kind.to_owned(),
        name: reg.info.name.as_str().to_owned(),
        port: reg.info.port,
        creation: creation_as_sent(reg),
        at,
        time: crate::admin::table::rfc3339(at),
    }
}

/// The creation the node was sent: the 32-bit counter, or `%3+1` for version < 6.
fn creation_as_sent(reg: &Registration) -> u32 {
    match Alive2Reply::new(reg.info.highest_version, Ok(reg.creation)) {
        Alive2Reply::Extended { creation, .. } => creation,
        Alive2Reply::Short { creation, .. } => u32::from(creation),
    }
}
