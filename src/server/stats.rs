//! Counters the daemon keeps for `admin stats`.

use std::collections::BTreeMap;

use super::connection::CloseReason;
use super::dispatch::Event;

/// Counters since start.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Connections accepted.
    pub accepted: u64,
    /// Requests by type and outcome.
    pub requests: BTreeMap<&'static str, u64>,
    /// Local-only requests from non-local peers.
    pub non_local_refusals: u64,
    /// Connections closed at their deadline.
    pub deadline_expiries: u64,
    /// accept() failures.
    pub accept_errors: u64,
    /// Framing violations, unknown tags, malformed requests.
    pub malformed_requests: u64,
    /// Bytes read from closed connections (live ones are added when reporting).
    pub bytes_in: u64,
    /// Bytes written to closed connections.
    pub bytes_out: u64,
    /// Most simultaneous registrations.
    pub peak_registrations: u64,
    /// Most simultaneous connections.
    pub peak_connections: u64,
    /// Connections closed at once because a connection cap was reached.
    pub capped: u64,
    /// Requests refused by an access policy.
    pub policy_refusals: u64,
}

impl Stats {
    /// Counts the outcome of a request.
    pub fn count_event(&mut self, event: &Event) {
        let key = match event {
            Event::Registered { .. } => "alive2.registered",
            Event::ReplacedDeadOwner { .. } => "alive2.replaced_dead_owner",
            Event::Duplicate => "alive2.duplicate",
            Event::BadName(_) => "alive2.bad_name",
            Event::Lookup(true) => "port_please2.found",
            Event::Lookup(false) => "port_please2.not_found",
            Event::Names => "names",
            Event::Dump => "dump",
            Event::KillRefused => "kill.refused",
            Event::Killed => "kill.honoured",
            Event::Stopped(true) => "stop.stopped",
            Event::Stopped(false) => "stop.noexist",
            Event::StopIgnored => "stop.ignored",
            Event::NotLocal => {
                self.non_local_refusals += 1;
                return;
            }
        };
        *self.requests.entry(key).or_default() += 1;
    }

    /// Counts a silent close caused by the request itself.
    pub fn count_close(&mut self, reason: CloseReason) {
        if matches!(reason, CloseReason::Frame(_) | CloseReason::Request(_)) {
            self.malformed_requests += 1;
        }
    }

    /// Records the current sizes for the peaks.
    pub fn observe(&mut self, connections: usize, registrations: usize) {
        self.peak_connections = self.peak_connections.max(connections as u64);
        self.peak_registrations = self.peak_registrations.max(registrations as u64);
    }
}
