//! Node events: one record per registration and unregistration, with the node's details,
//! its peer, and for an unregistration the reason and how long the name was held. The loop
//! builds them; the operator plane keeps the last [`HISTORY_LEN`] (`admin history`) and
//! the log gets each one ([`crate::logging::event`]: journal fields under systemd, one
//! JSON object per line with `--log-format json`).

use crate::admin::NodeEvent;
use crate::registry::Registration;

/// How many events `admin history` remembers.
pub const HISTORY_LEN: usize = 1000;

/// Why a name was unregistered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnregisterReason {
    /// Its connection ended: EOF, reset, or bytes sent on it.
    Closed,
    /// A reply to it could not be written.
    WriteFailed,
    /// A STOP request.
    Stop,
    /// A new node took the name of an owner whose connection was gone.
    Replaced,
}

impl UnregisterReason {
    /// The reason's word in events.
    pub fn word(self) -> &'static str {
        match self {
            UnregisterReason::Closed => "closed",
            UnregisterReason::WriteFailed => "write_failed",
            UnregisterReason::Stop => "stop",
            UnregisterReason::Replaced => "replaced",
        }
    }
}

/// The event of `reg` registering (`reason` `None`) or unregistering, at Unix time `now`,
/// from `peer`.
pub fn new_event(
    reg: &Registration,
    reason: Option<UnregisterReason>,
    peer: Option<std::net::SocketAddr>,
    now: u64,
) -> NodeEvent {
    NodeEvent {
        event: if reason.is_some() {
            "unregister"
        } else {
            "register"
        }
        .to_owned(),
        node: reg.info.name.as_str().to_owned(),
        port: reg.info.port,
        node_type: reg.info.node_type.to_string(),
        highest_version: reg.info.highest_version,
        lowest_version: reg.info.lowest_version,
        creation: reg.creation,
        peer: peer.map(|p| p.to_string()).unwrap_or_default(),
        reason: reason.map(|r| r.word().to_owned()),
        registered_secs: reason.map(|_| now.saturating_sub(reg.registered_at)),
        at: now,
        time: crate::admin::table::rfc3339(now),
    }
}

/// A one-line message for people.
pub fn message(e: &NodeEvent) -> String {
    match (&e.reason, e.registered_secs) {
        (Some(reason), Some(secs)) => format!(
            "node {} unregistered ({reason}) after {secs} s: port {}, creation {}",
            e.node, e.port, e.creation
        ),
        _ => format!(
            "node {} registered from {}: port {}, {}, versions {}-{}, creation {}",
            e.node, e.peer, e.port, e.node_type, e.lowest_version, e.highest_version, e.creation
        ),
    }
}

/// The event as journal fields (`EPMD_EVENT=`, `EPMD_NODE=`...).
pub fn journal_fields(e: &NodeEvent) -> Vec<(&'static str, String)> {
    let mut f = vec![
        ("EPMD_EVENT", e.event.clone()),
        ("EPMD_NODE", e.node.clone()),
        ("EPMD_PORT", e.port.to_string()),
        ("EPMD_NODE_TYPE", e.node_type.clone()),
        ("EPMD_HIGHEST_VERSION", e.highest_version.to_string()),
        ("EPMD_LOWEST_VERSION", e.lowest_version.to_string()),
        ("EPMD_CREATION", e.creation.to_string()),
        ("EPMD_PEER", e.peer.clone()),
    ];
    if let Some(r) = &e.reason {
        f.push(("EPMD_REASON", r.clone()));
    }
    if let Some(s) = e.registered_secs {
        f.push(("EPMD_REGISTERED_SECS", s.to_string()));
    }
    f
}
