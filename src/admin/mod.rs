//! The admin interface: what `epmd-rs admin` asks the running daemon over its Unix-domain
//! socket, and the views it gets back (JSON via serde).
//!
//! The exchange is one line: the client sends a view name and a newline (`nodes\n`); the
//! daemon answers with one JSON document and a newline, then closes. `watch` instead
//! stays open and receives one JSON line per register or unregister event.

pub mod client;
pub mod peer;
pub mod socket_path;
pub mod table;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest request line the daemon accepts.
pub const MAX_REQUEST_LINE: usize = 4096 + 16;

/// A view the admin client can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum View {
    /// Every registration with its details.
    Nodes,
    /// The old/unused names with their last port and creation.
    Old,
    /// Daemon counters and state.
    Stats,
    /// Register / unregister events as they happen.
    Watch,
    /// The effective configuration and where each value came from.
    Config,
    /// The last node events the daemon remembers (1000), oldest first; `history NAME`
    /// shows one node's.
    History,
    /// Hand the daemon over to a new process running its own binary (by the path it was
    /// started from) without closing any connection. Served only to root and the daemon's
    /// own user.
    Upgrade,
}

impl View {
    /// The request line's word.
    pub fn word(self) -> &'static str {
        match self {
            View::Nodes => "nodes",
            View::Old => "old",
            View::Stats => "stats",
            View::Watch => "watch",
            View::Config => "config",
            View::Upgrade => "upgrade",
            View::History => "history",
        }
    }

    /// Parses a request line (without its newline).
    pub fn parse(word: &str) -> Option<View> {
        [
            View::Nodes,
            View::Old,
            View::Stats,
            View::Watch,
            View::Config,
            View::Upgrade,
            View::History,
        ]
        .into_iter()
        .find(|v| v.word() == word)
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// One registration, as `admin nodes` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node name (before the `@`).
    pub name: String,
    /// Distribution port.
    pub port: u16,
    /// `normal`, `hidden` or `other N`.
    pub node_type: String,
    /// The protocol byte.
    pub protocol: u8,
    /// HighestVersion.
    pub highest_version: u16,
    /// LowestVersion.
    pub lowest_version: u16,
    /// The creation as sent in the ALIVE2 reply (32-bit, or `%3+1` for version < 6).
    pub creation: u32,
    /// The extra field, hex-encoded.
    pub extra_hex: String,
    /// The peer address of the registration connection.
    pub peer: String,
    /// The local address the registration arrived on.
    pub local: String,
    /// Unix time of the registration.
    pub registered_at: u64,
    /// The same as an RFC 3339 UTC time (empty from a daemon that did not send it).
    #[serde(default)]
    pub registered: String,
    /// Seconds since the registration.
    pub age_secs: u64,
}

/// One old/unused name slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OldView {
    /// The name last registered in the slot.
    pub name: String,
    /// Its last port.
    pub port: u16,
    /// The slot's 32-bit creation counter.
    pub creation: u32,
}

/// Daemon counters and state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsView {
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Listening addresses.
    pub listening: Vec<String>,
    /// Open connections by phase.
    pub connections: BTreeMap<String, u64>,
    /// Live registrations.
    pub registrations: u64,
    /// Old/unused name slots.
    pub old_names: u64,
    /// Most simultaneous registrations seen.
    pub peak_registrations: u64,
    /// Most simultaneous connections seen.
    pub peak_connections: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Requests by type and outcome.
    pub requests: BTreeMap<String, u64>,
    /// Local-only requests from non-local peers (closed silently).
    pub non_local_refusals: u64,
    /// Connections closed at their packet deadline.
    pub deadline_expiries: u64,
    /// accept() failures (EMFILE and the like).
    pub accept_errors: u64,
    /// Framing violations, unknown tags and malformed requests (closed silently).
    pub malformed_requests: u64,
    /// Hand-overs this daemon's state has gone through.
    #[serde(default)]
    pub handovers: u64,
    /// Connections closed at once because a connection cap was reached.
    #[serde(default)]
    pub capped_connections: u64,
    /// NAMES / PORT_PLEASE2 requests refused by an access policy.
    #[serde(default)]
    pub policy_refusals: u64,
    /// Admin connections closed at once because the admin connection cap was reached.
    #[serde(default)]
    pub admin_capped: u64,
    /// Admin connections closed at their deadline (no request, or an answer not read).
    #[serde(default)]
    pub admin_timeouts: u64,
    /// Log lines dropped because syslog could not take them at once.
    #[serde(default)]
    pub log_lines_dropped: u64,
    /// systemd's fd store, when in use: fds `stored`, names `removed`, notifications
    /// `pending` (waiting for the service manager to read) and `failed`.
    #[serde(default)]
    pub fd_store: BTreeMap<String, u64>,
    /// Connections refused at accept, by cap: `cap`, `local_reserve`, `per_source_cap`
    /// (their sum is `capped_connections`).
    #[serde(default)]
    pub refused: BTreeMap<String, u64>,
    /// Names unregistered, by reason: `closed`, `stop`, `replaced`.
    #[serde(default)]
    pub unregistrations: BTreeMap<String, u64>,
    /// `--metrics-listen` clients refused because 16 were open.
    #[serde(default)]
    pub http_capped: u64,
    /// `--metrics-listen` clients closed at their deadline.
    #[serde(default)]
    pub http_timeouts: u64,
    /// Bytes read from epmd clients.
    pub bytes_in: u64,
    /// Bytes written to epmd clients.
    pub bytes_out: u64,
}

/// Where a configuration value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// An environment variable.
    Environment,
    /// The built-in default.
    Default,
    /// The service manager (sockets passed by socket activation or a restart from the fd
    /// store).
    Systemd,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Environment => "environment",
            Source::Default => "default",
            Source::Systemd => "systemd",
        })
    }
}

/// One effective configuration value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// The setting's name (the flag's long name).
    pub key: String,
    /// Its effective value.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// A register or unregister event, streamed by `watch`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `register` or `unregister`.
    pub event: String,
    /// The node name.
    pub name: String,
    /// Its distribution port.
    pub port: u16,
    /// Its creation as sent.
    pub creation: u32,
    /// Unix time of the event.
    pub at: u64,
    /// The same as an RFC 3339 UTC time (empty from a daemon that did not send it).
    #[serde(default)]
    pub time: String,
}

/// One node event (`admin history`, and the log's record of which node came and went).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvent {
    /// `register` or `unregister`.
    pub event: String,
    /// The node name.
    pub node: String,
    /// Its distribution port.
    pub port: u16,
    /// `normal` or `hidden`.
    pub node_type: String,
    /// HighestVersion.
    pub highest_version: u16,
    /// LowestVersion.
    pub lowest_version: u16,
    /// The creation given to the node.
    pub creation: u32,
    /// The registration connection's peer, if known.
    pub peer: String,
    /// Why it was unregistered (unregistrations only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    /// Seconds it was registered (unregistrations only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub registered_secs: Option<u64>,
    /// Unix time of the event.
    pub at: u64,
    /// The same as an RFC 3339 UTC time.
    pub time: String,
}
