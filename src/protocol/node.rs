//! Domain types carried by the protocol: validated node names, node types and the node
//! description an ALIVE2_REQ registers and a PORT2_RESP echoes back.

use std::fmt;

use super::error::NameError;
use super::tag::{MAX_EXTRA_BYTES, MAX_NAME_BYTES, MAX_NAME_CHARS};

/// A node name as the registry stores it: the part of `name@host` before the `@`.
///
/// Invariant: valid UTF-8 (strict, as `std::str::from_utf8`), no NUL byte, at most
/// [`MAX_NAME_BYTES`] bytes and [`MAX_NAME_CHARS`] code points. It may be empty: the C epmd
/// registers an empty name (spec §4.1), and so do we.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

impl NodeName {
    /// Validates `bytes` with the registration rules of spec §4.1, in the C epmd's order.
    pub fn new(bytes: &[u8]) -> Result<NodeName, NameError> {
        if bytes.contains(&0) {
            return Err(NameError::Nul);
        }
        if bytes.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| NameError::NotUtf8)?;
        if text.chars().count() > MAX_NAME_CHARS {
            return Err(NameError::TooManyChars);
        }
        Ok(NodeName(text.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as the raw bytes that travel on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Lets maps keyed by `NodeName` be searched with a `&str` (same hash, same equality).
impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The node type byte of ALIVE2_REQ. The C epmd does not validate it: unknown values are
/// kept as [`NodeType::Other`] so that PORT2_RESP echoes exactly what was sent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum NodeType {
    /// 77 (`'M'`): a normal Erlang node. OTP sends this for hidden nodes too.
    Normal,
    /// 72 (`'H'`): a hidden node.
    Hidden,
    /// Any other byte (ei sends 104, `'h'`), stored and echoed unchanged.
    Other(u8),
}

impl NodeType {
    /// The wire byte for `'M'`.
    pub const NORMAL: u8 = 77;
    /// The wire byte for `'H'`.
    pub const HIDDEN: u8 = 72;

    /// Interprets a wire byte; every byte is accepted.
    pub fn from_byte(b: u8) -> NodeType {
        match b {
            Self::NORMAL => NodeType::Normal,
            Self::HIDDEN => NodeType::Hidden,
            other => NodeType::Other(other),
        }
    }

    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            NodeType::Normal => Self::NORMAL,
            NodeType::Hidden => Self::HIDDEN,
            NodeType::Other(b) => b,
        }
    }
}

impl fmt::Display for NodeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeType::Normal => f.write_str("normal"),
            NodeType::Hidden => f.write_str("hidden"),
            NodeType::Other(b) => write!(f, "other {b}"),
        }
    }
}

/// Everything a node registers, stored as received and echoed by PORT2_RESP (spec §4.5).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct NodeInfo {
    /// The node's distribution listen port (any value, 0 included).
    pub port: u16,
    /// The node type byte.
    pub node_type: NodeType,
    /// The protocol byte (0 = TCP/IPv4; not validated).
    pub protocol: u8,
    /// The highest distribution version the node speaks; selects the ALIVE2 reply form.
    pub highest_version: u16,
    /// The lowest distribution version the node speaks (not validated).
    pub lowest_version: u16,
    /// The validated node name.
    pub name: NodeName,
    /// Opaque extra bytes (NULs allowed), at most [`MAX_EXTRA_BYTES`].
    pub extra: Vec<u8>,
}

/// Checks the length of an ALIVE2 `Extra` field (spec §4.1: 1020 accepted, 1021 refused).
pub fn check_extra(extra: &[u8]) -> Result<(), NameError> {
    if extra.len() > MAX_EXTRA_BYTES {
        Err(NameError::ExtraTooLong)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(NodeName::new(b"").is_ok());
        assert!(NodeName::new(b"foo bar@x").is_ok());
        assert_eq!(NodeName::new(b"a\0b"), Err(NameError::Nul));
        assert_eq!(NodeName::new(&[0xC0, 0x80]), Err(NameError::NotUtf8));
        assert_eq!(NodeName::new(&[0xED, 0xA0, 0x80]), Err(NameError::NotUtf8));
        assert!(NodeName::new(&[b'a'; 255]).is_ok());
        assert_eq!(NodeName::new(&[b'a'; 256]), Err(NameError::TooManyChars));
        let four = "\u{1F600}".repeat(255);
        assert_eq!(four.len(), 1020);
        assert!(NodeName::new(four.as_bytes()).is_ok());
        let mut long = four.into_bytes();
        long.push(b'a');
        assert_eq!(NodeName::new(&long), Err(NameError::TooLong));
    }

    #[test]
    fn node_type_round_trips_every_byte() {
        for b in 0..=255u8 {
            assert_eq!(NodeType::from_byte(b).to_byte(), b);
        }
        assert_eq!(NodeType::from_byte(77), NodeType::Normal);
        assert_eq!(NodeType::from_byte(72), NodeType::Hidden);
    }
}
