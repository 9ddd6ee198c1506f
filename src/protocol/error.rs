//! Decoding errors of the protocol layer, one enum per kind of outcome.
//!
//! [`FrameError`] and [`RequestError`] both mean "close the connection without a reply" in the
//! daemon; [`NameError`] means "send the error form of the ALIVE2 reply" (spec §3.1 step 6).

use std::fmt;

/// The 2-byte length framing was violated (spec §1).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FrameError {
    /// The length prefix is zero.
    Empty,
    /// The length prefix exceeds [`MAX_PAYLOAD`](super::tag::MAX_PAYLOAD).
    TooLong(u16),
    /// More bytes arrived in one read than the frame declares (pipelining or piggy-backed data).
    TrailingBytes {
        /// The declared payload length.
        expected: u16,
        /// The payload bytes that were received.
        got: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("empty packet"),
            FrameError::TooLong(n) => write!(f, "packet too long ({n} bytes)"),
            FrameError::TrailingBytes { expected, got } => {
                write!(f, "got {got} bytes in packet, expected {expected}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A complete payload that is not a request the daemon answers: closed without a reply.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RequestError {
    /// An unknown or obsolete tag (`'a'`, `'p'`, anything not in spec §2).
    UnknownTag(u8),
    /// ALIVE2_REQ payload of 13 bytes or fewer.
    Alive2TooShort,
    /// ALIVE2_REQ whose `Nlen` runs past the payload.
    NameBeyondData,
    /// ALIVE2_REQ whose `Elen` runs past the payload.
    ExtraBeyondData,
    /// A NUL byte inside a node name.
    NulInName,
    /// PORT_PLEASE2_REQ or STOP_REQ without a name.
    MissingName,
    /// PORT_PLEASE2_REQ with a name that is not valid UTF-8.
    NameNotUtf8,
    /// PORT_PLEASE2_REQ with a name of 255 or more code points (epmd counts its NUL).
    NameTooLong,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::UnknownTag(t) => write!(f, "got garbage (tag {t})"),
            RequestError::Alive2TooShort => f.write_str("packet too short"),
            RequestError::NameBeyondData => f.write_str("node name length beyond the packet"),
            RequestError::ExtraBeyondData => f.write_str("extra length beyond the packet"),
            RequestError::NulInName => f.write_str("nul byte in node name"),
            RequestError::MissingName => f.write_str("no node name"),
            RequestError::NameNotUtf8 => f.write_str("node name is not valid utf-8"),
            RequestError::NameTooLong => f.write_str("node name too long"),
        }
    }
}

impl std::error::Error for RequestError {}

/// A well-framed ALIVE2_REQ whose name or extra breaks the registration rules (spec §4.1):
/// answered with result 1 and creation 99.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NameError {
    /// A NUL byte inside the name.
    Nul,
    /// More than 1020 bytes.
    TooLong,
    /// Not valid UTF-8.
    NotUtf8,
    /// More than 255 code points.
    TooManyChars,
    /// An extra field of more than 1020 bytes.
    ExtraTooLong,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Nul => "nul byte in node name",
            NameError::TooLong => "node name longer than 1020 bytes",
            NameError::NotUtf8 => "node name is not valid utf-8",
            NameError::TooManyChars => "node name longer than 255 characters",
            NameError::ExtraTooLong => "extra field longer than 1020 bytes",
        })
    }
}

impl std::error::Error for NameError {}
