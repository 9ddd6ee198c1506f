//! Admission: which new epmd connections are taken (the total cap, the room reserved for
//! local peers, the per-source cap), the open connections counted per source, and what
//! the access policies let each connection ask.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::server::config::Caps;
use crate::server::policy::AccessPolicy;
use crate::server::source::source_key;

/// Why a new connection was refused (it is closed at once: the client sees EOF, as on
/// the C epmd's "slots full" path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Cap,
    /// A non-local peer, and only the room reserved for local peers is left.
    LocalReserve,
    /// A non-local peer whose source has `max_per_source` connections open.
    PerSource,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Cap => "connection cap",
            Refusal::LocalReserve => "connection cap (room reserved for local peers)",
            Refusal::PerSource => "per-source connection cap",
        })
    }
}

/// What a connection may ask, by the access policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// NAMES is answered.
    pub may_list: bool,
    /// PORT_PLEASE2 is answered.
    pub may_lookup: bool,
}

/// Admission's state: the caps, the policies and the open connections per source.
#[derive(Debug)]
pub struct Admission {
    caps: Caps,
    names_policy: AccessPolicy,
    port_please_policy: AccessPolicy,
    /// Open connections per non-local source ([`source_key`]).
    per_source: HashMap<IpAddr, usize>,
}

impl Admission {
    /// Admission with these caps and policies, and no connection open.
    pub fn new(caps: Caps, names_policy: AccessPolicy, port_please_policy: AccessPolicy) -> Self {
        Admission {
            caps,
            names_policy,
            port_please_policy,
            per_source: HashMap::new(),
        }
    }

    /// The caps.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Sets the caps; `open` are the open connections (peer, local), counted again by
    /// source when the IPv6 source prefix changes.
    pub fn set_caps(&mut self, caps: Caps, open: impl Iterator<Item = (SocketAddr, bool)>) {
        let recount = caps.ipv6_source_prefix != self.caps.ipv6_source_prefix;
        self.caps = caps;
        if recount {
            self.per_source.clear();
            for (peer, local) in open {
                self.admitted(peer, local);
            }
        }
    }

    /// Whether a new connection from `peer` is taken while `open` connections are open.
    pub fn check(&self, peer: SocketAddr, local: bool, open: usize) -> Result<(), Refusal> {
        let caps = self.caps;
        if open >= caps.max_connections {
            return Err(Refusal::Cap);
        }
        if local {
            return Ok(());
        }
        if open >= caps.max_connections.saturating_sub(caps.local_reserve) {
            return Err(Refusal::LocalReserve);
        }
        let source = source_key(peer.ip(), caps.ipv6_source_prefix);
        if self.per_source.get(&source).copied().unwrap_or(0) >= caps.max_per_source {
            return Err(Refusal::PerSource);
        }
        Ok(())
    }

    /// Counts a connection taken (or restored) from `peer`.
    pub fn admitted(&mut self, peer: SocketAddr, local: bool) {
        if !local {
            let source = source_key(peer.ip(), self.caps.ipv6_source_prefix);
            *self.per_source.entry(source).or_insert(0) += 1;
        }
    }

    /// Counts a connection from `peer` closed.
    pub fn released(&mut self, peer: SocketAddr, local: bool) {
        if local {
            return;
        }
        let source = source_key(peer.ip(), self.caps.ipv6_source_prefix);
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// What a connection from `peer` may ask.
    pub fn permissions(&self, peer: SocketAddr, local: bool) -> Permissions {
        Permissions {
            may_list: self.names_policy.allows(peer, local),
            may_lookup: self.port_please_policy.allows(peer, local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(max: usize, per_source: usize, reserve: usize) -> Caps {
        Caps {
            max_connections: max,
            max_per_source: per_source,
            ipv6_source_prefix: 64,
            local_reserve: reserve,
        }
    }

    #[test]
    fn caps_reserve_and_per_source_counts() {
        let all = AccessPolicy::default();
        let mut a = Admission::new(caps(10, 2, 3), all.clone(), all);
        let remote: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let other: SocketAddr = "192.0.2.2:1000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        assert_eq!(a.check(remote, false, 0), Ok(()));
        a.admitted(remote, false);
        a.admitted(remote, false);
        assert_eq!(a.check(remote, false, 2), Err(Refusal::PerSource));
        assert_eq!(a.check(other, false, 2), Ok(()));
        assert_eq!(a.check(other, false, 7), Err(Refusal::LocalReserve));
        assert_eq!(a.check(local, true, 9), Ok(()));
        assert_eq!(a.check(local, true, 10), Err(Refusal::Cap));
        a.released(remote, false);
        assert_eq!(a.check(remote, false, 1), Ok(()));
        // Local peers are not counted by source.
        a.admitted(local, true);
        a.released(local, true);
        assert_eq!(a.per_source.len(), 1);
    }
}
