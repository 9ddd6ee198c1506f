//! Counters the daemon keeps for `admin stats`.

use std::collections::BTreeMap;

use super::connection::CloseReason;
use super::dispatch::Event;
use super::histogram::Histogram;

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
    /// Connections closed at once because a connection cap was reached (the sum of the
    /// three below).
    pub capped: u64,
    /// ... because `max_connections` were open.
    pub capped_cap: u64,
    /// ... because only the room reserved for local peers was left (non-local peers).
    pub capped_reserve: u64,
    /// ... because the peer's source had `max_per_source` open (non-local peers).
    pub capped_per_source: u64,
    /// Names unregistered because their connection closed (EOF, reset, bytes sent on it,
    /// a reply that could not be written).
    pub unregistered_closed: u64,
    /// Names unregistered by a STOP request.
    pub unregistered_stopped: u64,
    /// Names taken over from an owner whose connection was gone.
    pub unregistered_replaced: u64,
    /// `--metrics-listen` connections refused because `MAX_HTTP_CONNECTIONS` were open.
    pub http_capped: u64,
    /// `--metrics-listen` connections closed at their deadline.
    pub http_timeouts: u64,
    /// Request durations from accept to reply written, by request (not handed over).
    pub durations: BTreeMap<&'static str, Histogram>,
    /// Requests refused by an access policy.
    pub policy_refusals: u64,
    /// Hand-overs this daemon's state has gone through.
    pub handovers: u64,
    /// Admin connections closed at once because [`MAX_ADMIN_CONNECTIONS`] were open.
    ///
    /// [`MAX_ADMIN_CONNECTIONS`]: super::admin::MAX_ADMIN_CONNECTIONS
    pub admin_capped: u64,
    /// Admin connections closed at their deadline.
    pub admin_timeouts: u64,
}

/// Every key [`Stats::count_event`] uses (so that counters read back from a saved state map
/// onto the same static keys).
pub const REQUEST_KEYS: &[&str] = &[
    "alive2.registered",
    "alive2.replaced_dead_owner",
    "alive2.duplicate",
    "alive2.full",
    "alive2.bad_name",
    "port_please2.found",
    "port_please2.not_found",
    "names",
    "dump",
    "kill.refused",
    "kill.honoured",
    "stop.stopped",
    "stop.noexist",
    "stop.ignored",
];

impl Stats {
    /// The counters other than requests, by name (for saving).
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("accepted", self.accepted),
            ("non_local_refusals", self.non_local_refusals),
            ("deadline_expiries", self.deadline_expiries),
            ("accept_errors", self.accept_errors),
            ("malformed_requests", self.malformed_requests),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("peak_registrations", self.peak_registrations),
            ("peak_connections", self.peak_connections),
            ("capped", self.capped),
            ("policy_refusals", self.policy_refusals),
            ("admin_capped", self.admin_capped),
            ("admin_timeouts", self.admin_timeouts),
            ("capped_cap", self.capped_cap),
            ("capped_reserve", self.capped_reserve),
            ("capped_per_source", self.capped_per_source),
            ("unregistered_closed", self.unregistered_closed),
            ("unregistered_stopped", self.unregistered_stopped),
            ("unregistered_replaced", self.unregistered_replaced),
            ("http_capped", self.http_capped),
            ("http_timeouts", self.http_timeouts),
        ]
    }

    /// Restores counters saved with [`counters`](Self::counters) and request counts;
    /// unknown names are ignored (a newer writer may count more things).
    pub fn restore<'a>(
        counters: impl Iterator<Item = (&'a str, u64)>,
        requests: impl Iterator<Item = (&'a str, u64)>,
    ) -> Stats {
        let mut s = Stats::default();
        for (k, v) in counters {
            let slot = match k {
                "accepted" => &mut s.accepted,
                "non_local_refusals" => &mut s.non_local_refusals,
                "deadline_expiries" => &mut s.deadline_expiries,
                "accept_errors" => &mut s.accept_errors,
                "malformed_requests" => &mut s.malformed_requests,
                "bytes_in" => &mut s.bytes_in,
                "bytes_out" => &mut s.bytes_out,
                "peak_registrations" => &mut s.peak_registrations,
                "peak_connections" => &mut s.peak_connections,
                "capped" => &mut s.capped,
                "policy_refusals" => &mut s.policy_refusals,
                "admin_capped" => &mut s.admin_capped,
                "admin_timeouts" => &mut s.admin_timeouts,
                "capped_cap" => &mut s.capped_cap,
                "capped_reserve" => &mut s.capped_reserve,
                "capped_per_source" => &mut s.capped_per_source,
                "unregistered_closed" => &mut s.unregistered_closed,
                "unregistered_stopped" => &mut s.unregistered_stopped,
                "unregistered_replaced" => &mut s.unregistered_replaced,
                "http_capped" => &mut s.http_capped,
                "http_timeouts" => &mut s.http_timeouts,
                _ => continue,
            };
            *slot = v;
        }
        for (k, v) in requests {
            if let Some(key) = REQUEST_KEYS.iter().find(|key| **key == k) {
                s.requests.insert(key, v);
            }
        }
        s
    }

    /// Counts the outcome of a request.
    pub fn count_event(&mut self, event: &Event) {
        let key = match event {
            Event::Registered { .. } => "alive2.registered",
            Event::ReplacedDeadOwner { .. } => "alive2.replaced_dead_owner",
            Event::Duplicate => "alive2.duplicate",
            Event::Full => "alive2.full",
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
        let n = self.requests.entry(key).or_default();
        *n = n.saturating_add(1);
    }

    /// Counts a silent close caused by the request itself.
    pub fn count_close(&mut self, reason: CloseReason) {
        if matches!(reason, CloseReason::Frame(_) | CloseReason::Request(_)) {
            self.malformed_requests += 1;
        }
    }

    /// Records the time from accept to reply written of a `request`.
    pub fn observe_duration(&mut self, request: &'static str, d: std::time::Duration) {
        self.durations.entry(request).or_default().observe(d);
    }

    /// Unregistrations by reason, for `/metrics`.
    pub fn unregistrations(&self) -> [(&'static str, u64); 3] {
        [
            ("closed", self.unregistered_closed),
            ("stop", self.unregistered_stopped),
            ("replaced", self.unregistered_replaced),
        ]
    }

    /// Records the current sizes for the peaks.
    pub fn observe(&mut self, connections: usize, registrations: usize) {
        self.peak_connections = self.peak_connections.max(connections as u64);
        self.peak_registrations = self.peak_registrations.max(registrations as u64);
    }
}
