//! Serving the admin socket inside the daemon loop: accepting admin clients, answering
//! views from the registry, connections and counters, and streaming `watch` events.

use std::collections::BTreeMap;
use std::io;

use std::time::Instant;

use log::{debug, warn};
use mio::{Interest, Token};

use super::admin::{self, AdminConn, AdminRead};
use super::connection::Phase;
use super::{token, unix_now, Server};
use crate::admin::{NodeView, OldView, StatsView, View, WatchEvent};
use crate::protocol::Alive2Reply;
use crate::registry::Registration;

impl Server {
    pub(super) fn accept_admin(&mut self) {
        loop {
            let accepted = match &self.admin {
                Some(a) => a.listener.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, _)) if self.admin_conns.len() >= admin::MAX_ADMIN_CONNECTIONS => {
                    // Dropping the stream closes it: the client sees EOF.
                    self.stats.admin_capped += 1;
                    debug!("refusing an admin client: {} open", self.admin_conns.len());
                    drop(stream);
                }
                Ok((mut stream, _)) => {
                    let token = self.tokens.allocate();
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_ok()
                    {
                        self.admin_conns.insert(token, AdminConn::new(stream));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    warn!("error in admin accept: {e}");
                    return;
                }
            }
        }
    }

    pub(super) fn admin_ready(&mut self, token: Token) {
        let Some(conn) = self.admin_conns.get_mut(&token) else {
            return;
        };
        match conn.read_line() {
            AdminRead::Pending => {}
            AdminRead::Close => {
                self.close_admin(token);
                return;
            }
            AdminRead::Line(line) => {
                let (word, arg) = match line.split_once(' ') {
                    Some((w, a)) => (w.to_owned(), Some(a.trim().to_owned())),
                    None => (line.clone(), None),
                };
                let reply = if View::parse(&word) == Some(View::Upgrade) {
                    let uid = conn.peer_uid;
                    match upgrade_refusal(uid, arg.as_deref()) {
                        None => {
                            self.handover_requested = Some(super::HandOverRequest {
                                requester: Some(token),
                            });
                            return;
                        }
                        Some(why) => {
                            let who = uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string());
                            warn!("refusing admin upgrade from uid {who}: {why}");
                            let reply = serde_json::json!({ "ok": false, "error": why });
                            Some(reply.to_string())
                        }
                    }
                } else {
                    match View::parse(&line) {
                        Some(View::Watch) => {
                            conn.watching = true;
                            conn.deadline = None;
                            None
                        }
                        Some(view) => Some(self.admin_view(view)),
                        None => Some(
                            serde_json::json!({ "error": format!("unknown view {line:?}") })
                                .to_string(),
                        ),
                    }
                };
                if let (Some(text), Some(c)) = (reply, self.admin_conns.get_mut(&token)) {
                    c.queue(text.as_bytes());
                    c.queue(b"\n");
                    c.close_after_flush = true;
                }
            }
        }
        self.flush_admin(token);
    }

    fn flush_admin(&mut self, token: Token) {
        let Some(conn) = self.admin_conns.get_mut(&token) else {
            return;
        };
        match conn.flush() {
            Ok(true) if conn.close_after_flush => self.close_admin(token),
            Ok(done) => {
                let wanted = if done {
                    Interest::READABLE
                } else {
                    Interest::READABLE | Interest::WRITABLE
                };
                let _ = self
                    .poll
                    .registry()
                    .reregister(&mut conn.stream, token, wanted);
            }
            Err(_) => self.close_admin(token),
        }
    }

    /// Sends `reply` (one JSON document) to the admin client `token` and closes it.
    pub fn answer_admin(&mut self, token: Option<Token>, reply: &serde_json::Value) {
        let Some(token) = token else {
            return;
        };
        if let Some(c) = self.admin_conns.get_mut(&token) {
            c.queue(reply.to_string().as_bytes());
            c.queue(b"\n");
            c.close_after_flush = true;
        }
        self.flush_admin(token);
    }

    /// The earliest admin connection deadline.
    pub(super) fn next_admin_deadline(&self) -> Option<Instant> {
        self.admin_conns.values().filter_map(|c| c.deadline).min()
    }

    /// Closes the admin connections whose deadline has passed.
    pub(super) fn expire_admin(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .admin_conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            debug!("closing an admin client at its deadline");
            self.stats.admin_timeouts += 1;
            self.close_admin(t);
        }
    }

    fn close_admin(&mut self, token: Token) {
        if let Some(mut conn) = self.admin_conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    /// Sends a register / unregister event to every `watch` client.
    pub(super) fn emit(&mut self, kind: &str, reg: &Registration) {
        let watchers: Vec<Token> = self
            .admin_conns
            .iter()
            .filter(|(_, c)| c.watching)
            .map(|(t, _)| *t)
            .collect();
        if watchers.is_empty() {
            return;
        }
        let event = WatchEvent {
            event: kind.to_owned(),
            name: reg.info.name.as_str().to_owned(),
            port: reg.info.port,
            creation: creation_as_sent(reg),
            at: unix_now(),
        };
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        for t in watchers {
            let queued = self.admin_conns.get_mut(&t).is_some_and(|c| c.queue(&line));
            if queued {
                self.flush_admin(t);
            } else {
                warn!("dropping an admin watcher that does not read");
                self.close_admin(t);
            }
        }
    }

    fn admin_view(&self, view: View) -> String {
        let json = match view {
            View::Nodes => serde_json::to_string(&self.node_views()),
            View::Old => {
                let old: Vec<OldView> = self
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
            View::Stats => serde_json::to_string(&self.stats_view()),
            View::Config => serde_json::to_string(&self.config_report()),
            View::Watch | View::Upgrade => Ok(String::new()),
        };
        json.unwrap_or_default()
    }

    fn node_views(&self) -> Vec<NodeView> {
        let now = unix_now();
        self.registry
            .newest_first()
            .map(|r| {
                let conn = self.conns.get(&Token(r.conn.0 as usize));
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
                    age_secs: now.saturating_sub(r.registered_at),
                }
            })
            .collect()
    }

    fn stats_view(&self) -> StatsView {
        let mut connections = BTreeMap::new();
        let (mut bytes_in, mut bytes_out) = (self.stats.bytes_in, self.stats.bytes_out);
        for c in self.conns.values() {
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
        connections.insert("admin".to_owned(), self.admin_conns.len() as u64);
        StatsView {
            uptime_secs: self.started.elapsed().as_secs(),
            listening: self.local_addrs().iter().map(|a| a.to_string()).collect(),
            connections,
            registrations: self.registry.len() as u64,
            old_names: self.registry.old_len() as u64,
            peak_registrations: self.stats.peak_registrations,
            peak_connections: self.stats.peak_connections,
            accepted: self.stats.accepted,
            requests: self
                .stats
                .requests
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            non_local_refusals: self.stats.non_local_refusals,
            deadline_expiries: self.stats.deadline_expiries,
            accept_errors: self.stats.accept_errors,
            malformed_requests: self.stats.malformed_requests,
            handovers: self.stats.handovers,
            capped_connections: self.stats.capped,
            policy_refusals: self.stats.policy_refusals,
            admin_capped: self.stats.admin_capped,
            admin_timeouts: self.stats.admin_timeouts,
            log_lines_dropped: crate::logging::dropped_lines(),
            fd_store: self
                .fd_store_counts()
                .map(|c| {
                    BTreeMap::from([
                        ("stored".to_owned(), c.stored),
                        ("removed".to_owned(), c.removed),
                        ("pending".to_owned(), c.pending),
                        ("failed".to_owned(), c.failed),
                    ])
                })
                .unwrap_or_default(),
            bytes_in,
            bytes_out,
        }
    }
}

/// Why an `upgrade` request from a peer with `uid`, with the argument `arg`, is refused;
/// `None` when it is served. The request may not name a program (a hand-over always starts
/// the daemon's own binary), and only root and the daemon's own user may ask.
fn upgrade_refusal(uid: Option<u32>, arg: Option<&str>) -> Option<String> {
    if arg.is_some_and(|a| !a.is_empty()) {
        return Some(
            "upgrade takes no argument: the daemon always starts its own binary".to_owned(),
        );
    }
    if !admin::may_upgrade(uid) {
        return Some("upgrade is served only to root and the daemon's own user".to_owned());
    }
    None
}

/// The creation the node was sent: the 32-bit counter, or `%3+1` for version < 6.
fn creation_as_sent(reg: &Registration) -> u32 {
    match Alive2Reply::new(reg.info.highest_version, Ok(reg.creation)) {
        Alive2Reply::Extended { creation, .. } => creation,
        Alive2Reply::Short { creation, .. } => u32::from(creation),
    }
}

// The admin listener token is reserved next to the TCP listeners.
const _: () = assert!(token::ADMIN.0 < token::FIRST_CONN_TOKEN);
