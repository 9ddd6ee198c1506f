//! Fixed-layout replies epmd sends (spec §3). Replies carry no length prefix.
//!
//! NAMES and DUMP replies are text and live in [`super::text`].

use super::node::{NodeInfo, NodeName, NodeType};
use super::reader::Reader;
use super::tag::{ALIVE2_RESP, ALIVE2_X_RESP, ERROR_CREATION, EXTENDED_VERSION, PORT2_RESP};

/// `KILL_REQ` reply when the daemon exits.
pub const KILL_OK: &[u8] = b"OK";
/// `KILL_REQ` reply when nodes are registered and the command check is strict.
pub const KILL_NO: &[u8] = b"NO";
/// `STOP_REQ` reply when the node was unregistered.
pub const STOP_STOPPED: &[u8] = b"STOPPED";
/// `STOP_REQ` reply for an unknown name: `NOEXIST` followed by `STOPPED`, as the C epmd
/// writes both (spec §3.6).
pub const STOP_NOEXIST: &[u8] = b"NOEXISTSTOPPED";

/// The reply to an ALIVE2_REQ.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Alive2Reply {
    /// `ALIVE2_X_RESP` (`'v'`): 32-bit creation, for HighestVersion ≥ 6.
    Extended {
        /// 0 on success, 1 on failure.
        result: u8,
        /// The creation (99 on failure).
        creation: u32,
    },
    /// `ALIVE2_RESP` (`'y'`): 16-bit creation, for HighestVersion < 6.
    Short {
        /// 0 on success, 1 on failure.
        result: u8,
        /// The creation, `cr % 3 + 1` (99 on failure).
        creation: u16,
    },
}

impl Alive2Reply {
    /// The reply for a request with `highest_version`: `Ok(cr)` with the slot's 32-bit
    /// counter, or `Err(())` for a refused registration (result 1, creation 99).
    pub fn new(highest_version: u16, outcome: Result<u32, ()>) -> Alive2Reply {
        let extended = highest_version >= EXTENDED_VERSION;
        match (outcome, extended) {
            (Ok(cr), true) => Alive2Reply::Extended {
                result: 0,
                creation: cr,
            },
            (Ok(cr), false) => Alive2Reply::Short {
                result: 0,
                // cr % 3 + 1 is in 1..=3, so the cast cannot truncate.
                creation: (cr % 3 + 1) as u16,
            },
            (Err(()), true) => Alive2Reply::Extended {
                result: 1,
                creation: ERROR_CREATION,
            },
            (Err(()), false) => Alive2Reply::Short {
                result: 1,
                creation: ERROR_CREATION as u16,
            },
        }
    }

    /// Appends the wire form (6 or 4 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Alive2Reply::Extended { result, creation } => {
                out.push(ALIVE2_X_RESP);
                out.push(result);
                out.extend_from_slice(&creation.to_be_bytes());
            }
            Alive2Reply::Short { result, creation } => {
                out.push(ALIVE2_RESP);
                out.push(result);
                out.extend_from_slice(&creation.to_be_bytes());
            }
        }
    }

    /// Decodes a complete reply; `None` if `buf` is not exactly one reply.
    pub fn decode(buf: &[u8]) -> Option<Alive2Reply> {
        let mut r = Reader::new(buf);
        let reply = match r.u8()? {
            ALIVE2_X_RESP => Alive2Reply::Extended {
                result: r.u8()?,
                creation: r.u32_be()?,
            },
            ALIVE2_RESP => Alive2Reply::Short {
                result: r.u8()?,
                creation: r.u16_be()?,
            },
            _ => return None,
        };
        (r.remaining() == 0).then_some(reply)
    }

    /// True when the registration was accepted.
    pub fn is_success(&self) -> bool {
        match *self {
            Alive2Reply::Extended { result, .. } | Alive2Reply::Short { result, .. } => result == 0,
        }
    }
}

/// Appends the PORT2_RESP for a lookup: the node's fields echoed as registered, or `w 01`.
pub fn encode_port2(node: Option<&NodeInfo>, out: &mut Vec<u8>) {
    out.push(PORT2_RESP);
    let Some(n) = node else {
        out.push(1);
        return;
    };
    out.push(0);
    out.extend_from_slice(&n.port.to_be_bytes());
    out.push(n.node_type.to_byte());
    out.push(n.protocol);
    out.extend_from_slice(&n.highest_version.to_be_bytes());
    out.extend_from_slice(&n.lowest_version.to_be_bytes());
    let name = n.name.as_bytes();
    // Names are at most 1020 bytes and extras at most 1020 bytes (NodeInfo invariant).
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&(n.extra.len() as u16).to_be_bytes());
    out.extend_from_slice(&n.extra);
}

/// A decoded PORT2_RESP.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Port2Reply {
    /// Result 0 with the node's registration.
    Found(NodeInfo),
    /// A non-zero result: no such node.
    NotFound(u8),
}

impl Port2Reply {
    /// Decodes a complete PORT2_RESP (everything read until epmd closed the connection).
    /// `None` for anything else, including a name that breaks the registration rules.
    pub fn decode(buf: &[u8]) -> Option<Port2Reply> {
        let mut r = Reader::new(buf);
        if r.u8()? != PORT2_RESP {
            return None;
        }
        let result = r.u8()?;
        if result != 0 {
            return (r.remaining() == 0).then_some(Port2Reply::NotFound(result));
        }
        let port = r.u16_be()?;
        let node_type = NodeType::from_byte(r.u8()?);
        let protocol = r.u8()?;
        let highest_version = r.u16_be()?;
        let lowest_version = r.u16_be()?;
        let name = NodeName::new(r.len_prefixed()?).ok()?;
        let extra = r.len_prefixed()?.to_vec();
        if r.remaining() != 0 {
            return None;
        }
        Some(Port2Reply::Found(NodeInfo {
            port,
            node_type,
            protocol,
            highest_version,
            lowest_version,
            name,
            extra,
        }))
    }
}
