//! The Erlang distribution handshake, client side, as OTP 25 nodes speak it (sans-IO:
//! bytes in, values out). See `erts/doc/src/erl_dist_protocol.xml` and
//! `kernel/src/dist_util.erl`.
//!
//! Every handshake message is framed by a 2-byte big-endian length:
//!
//! | message | version 6 (`N`) | version 5 (`n`) |
//! |---|---|---|
//! | send_name (us) | `N, Flags:64, Creation:32, Nlen:16, Name` | `n, Version:16, Flags:32, Name` |
//! | recv_status (them) | `s, "ok" \| "ok_simultaneous" \| "nok" \| "not_allowed" \| "alive"` | same |
//! | recv_challenge (them) | `N, Flags:64, Challenge:32, Creation:32, Nlen:16, Name` | `n, Version:16, Flags:32, Challenge:32, Name` |
//! | complement (us, `n` sent, `N` received) | `c, FlagsHigh:32, Creation:32` | |
//! | challenge_reply (us) | `r, Challenge:32, Digest:16` | same |
//! | challenge_ack (them) | `a, Digest:16` | same |
//!
//! `Digest = MD5(Cookie ++ decimal(Challenge))`.

use md5::{Digest as _, Md5};

/// The node exports pids, references and ports with new encodings (mandatory since 25).
pub const DFLAG_EXTENDED_REFERENCES: u64 = 0x04;
/// Monitors of processes.
pub const DFLAG_DIST_MONITOR: u64 = 0x08;
/// Fun tags.
pub const DFLAG_FUN_TAGS: u64 = 0x10;
/// New fun tags.
pub const DFLAG_NEW_FUN_TAGS: u64 = 0x80;
/// Extended pids and ports.
pub const DFLAG_EXTENDED_PIDS_PORTS: u64 = 0x100;
/// Export pointer tag.
pub const DFLAG_EXPORT_PTR_TAG: u64 = 0x200;
/// Bit binaries.
pub const DFLAG_BIT_BINARIES: u64 = 0x400;
/// New floats.
pub const DFLAG_NEW_FLOATS: u64 = 0x800;
/// UTF-8 atoms.
pub const DFLAG_UTF8_ATOMS: u64 = 0x1_0000;
/// Map tag.
pub const DFLAG_MAP_TAG: u64 = 0x2_0000;
/// 32-bit creations.
pub const DFLAG_BIG_CREATION: u64 = 0x4_0000;
/// The OTP 23 handshake (`N` messages).
pub const DFLAG_HANDSHAKE_23: u64 = 0x100_0000;
/// OTP 25's shorthand for every flag of [`MANDATORY_25`].
pub const DFLAG_MANDATORY_25_DIGEST: u64 = 0x400_0000;
/// The flags an OTP 25 node requires of its peers (`dist.hrl`).
pub const MANDATORY_25: u64 = DFLAG_EXTENDED_REFERENCES
    | DFLAG_FUN_TAGS
    | DFLAG_EXTENDED_PIDS_PORTS
    | DFLAG_NEW_FUN_TAGS
    | DFLAG_EXPORT_PTR_TAG
    | DFLAG_BIT_BINARIES
    | DFLAG_NEW_FLOATS
    | DFLAG_UTF8_ATOMS
    | DFLAG_MAP_TAG
    | DFLAG_BIG_CREATION
    | DFLAG_HANDSHAKE_23;
/// What the doctor announces: the mandatory set, as a hidden node (no `DFLAG_PUBLISHED`),
/// so that the probe never joins the cluster's `global` mesh.
pub const DOCTOR_FLAGS: u64 = MANDATORY_25 | DFLAG_MANDATORY_25_DIGEST | DFLAG_DIST_MONITOR;

/// The handshake version chosen from the node's epmd entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// The OTP 23+ handshake (`N` messages).
    V6,
    /// The pre-23 handshake (`n` messages).
    V5,
}

impl Version {
    /// The highest version both sides speak, from the node's `[lowest, highest]` in epmd.
    pub fn choose(lowest: u16, highest: u16) -> Option<Version> {
        if lowest <= 6 && highest >= 6 {
            Some(Version::V6)
        } else if lowest <= 5 && highest >= 5 {
            Some(Version::V5)
        } else {
            None
        }
    }

    /// The version number.
    pub fn number(self) -> u16 {
        match self {
            Version::V6 => 6,
            Version::V5 => 5,
        }
    }
}

/// Why a handshake message could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The message is shorter than its fixed fields.
    Short,
    /// The first byte is not the expected tag.
    UnexpectedTag(u8),
    /// The name length runs past the message.
    BadNameLength,
}

/// Frames `body` with its 2-byte length.
fn frame(body: &[u8]) -> Vec<u8> {
    let len = u16::try_from(body.len()).expect("handshake messages are short");
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Takes one complete 2-byte-length frame off the front of `buf`: `Some(body)` and the
/// bytes consumed, or `None` while more bytes are needed.
pub fn take_frame(buf: &[u8]) -> Option<(&[u8], usize)> {
    let (len, rest) = buf.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| (&rest[..len], len + 2))
}

/// The send_name message for `version` (framed).
pub fn send_name(version: Version, flags: u64, creation: u32, name: &str) -> Vec<u8> {
    let mut body = Vec::new();
    match version {
        Version::V6 => {
            body.push(b'N');
            body.extend_from_slice(&flags.to_be_bytes());
            body.extend_from_slice(&creation.to_be_bytes());
            let nlen = u16::try_from(name.len()).expect("node names are short");
            body.extend_from_slice(&nlen.to_be_bytes());
        }
        Version::V5 => {
            body.push(b'n');
            body.extend_from_slice(&5u16.to_be_bytes());
            body.extend_from_slice(&(flags as u32).to_be_bytes());
        }
    }
    body.extend_from_slice(name.as_bytes());
    frame(&body)
}

/// The node's answer to our name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeStatus {
    /// `ok`: go on.
    Ok,
    /// `ok_simultaneous`: the node is connecting to us too; go on.
    OkSimultaneous,
    /// `nok`: a simultaneous connect won by the other side.
    Nok,
    /// `not_allowed`: our name or flags are not allowed.
    NotAllowed,
    /// `alive`: a connection with our name already exists.
    Alive,
    /// Anything else (`named:` is for dynamic names, which the doctor does not ask for).
    Other(Vec<u8>),
}

impl HandshakeStatus {
    /// Whether the handshake continues with a challenge.
    pub fn proceeds(&self) -> bool {
        matches!(self, HandshakeStatus::Ok | HandshakeStatus::OkSimultaneous)
    }

    /// The status as the node sent it.
    pub fn text(&self) -> String {
        match self {
            HandshakeStatus::Ok => "ok".into(),
            HandshakeStatus::OkSimultaneous => "ok_simultaneous".into(),
            HandshakeStatus::Nok => "nok".into(),
            HandshakeStatus::NotAllowed => "not_allowed".into(),
            HandshakeStatus::Alive => "alive".into(),
            HandshakeStatus::Other(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

/// Decodes a recv_status body (`s` + text).
pub fn decode_status(body: &[u8]) -> Result<HandshakeStatus, DecodeError> {
    let (&tag, text) = body.split_first().ok_or(DecodeError::Short)?;
    if tag != b's' {
        return Err(DecodeError::UnexpectedTag(tag));
    }
    Ok(match text {
        b"ok" => HandshakeStatus::Ok,
        b"ok_simultaneous" => HandshakeStatus::OkSimultaneous,
        b"nok" => HandshakeStatus::Nok,
        b"not_allowed" => HandshakeStatus::NotAllowed,
        b"alive" => HandshakeStatus::Alive,
        other => HandshakeStatus::Other(other.to_vec()),
    })
}

/// The status we send after `alive`: `false`, do not replace the existing connection.
pub fn status_false() -> Vec<u8> {
    frame(b"sfalse")
}

/// The node's challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The message's tag: `N` (new) or `n` (old).
    pub new_format: bool,
    /// The node's flags.
    pub flags: u64,
    /// The number we must digest with the cookie.
    pub challenge: u32,
    /// The node's creation (`N` only).
    pub creation: Option<u32>,
    /// The node's full name as it calls itself.
    pub name: String,
}

/// Decodes a recv_challenge body (`N` or `n`).
pub fn decode_challenge(body: &[u8]) -> Result<Challenge, DecodeError> {
    let (&tag, rest) = body.split_first().ok_or(DecodeError::Short)?;
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    match tag {
        b'N' => {
            if rest.len() < 18 {
                return Err(DecodeError::Short);
            }
            let flags = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let challenge = be32(&rest[8..12]);
            let creation = be32(&rest[12..16]);
            let nlen = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            let name = rest[18..].get(..nlen).ok_or(DecodeError::BadNameLength)?;
            Ok(Challenge {
                new_format: true,
                flags,
                challenge,
                creation: Some(creation),
                name: String::from_utf8_lossy(name).into_owned(),
            })
        }
        b'n' => {
            if rest.len() < 10 {
                return Err(DecodeError::Short);
            }
            Ok(Challenge {
                new_format: false,
                flags: u64::from(be32(&rest[2..6])),
                challenge: be32(&rest[6..10]),
                creation: None,
                name: String::from_utf8_lossy(&rest[10..]).into_owned(),
            })
        }
        other => Err(DecodeError::UnexpectedTag(other)),
    }
}

/// The complement we owe after sending `n` and receiving `N`: the high flag word and our
/// creation.
pub fn complement(flags: u64, creation: u32) -> Vec<u8> {
    let mut body = vec![b'c'];
    body.extend_from_slice(&((flags >> 32) as u32).to_be_bytes());
    body.extend_from_slice(&creation.to_be_bytes());
    frame(&body)
}

/// `MD5(cookie ++ decimal(challenge))`, as `dist_util:gen_digest/2`.
pub fn digest(cookie: &[u8], challenge: u32) -> [u8; 16] {
    let mut md5 = Md5::new();
    md5.update(cookie);
    md5.update(challenge.to_string().as_bytes());
    md5.finalize().into()
}

/// Our challenge_reply: our own challenge and the digest of theirs.
pub fn challenge_reply(our_challenge: u32, their_digest: &[u8; 16]) -> Vec<u8> {
    let mut body = vec![b'r'];
    body.extend_from_slice(&our_challenge.to_be_bytes());
    body.extend_from_slice(their_digest);
    frame(&body)
}

/// Whether a challenge_ack body proves the node holds `cookie` (it digested our challenge).
pub fn ack_matches(body: &[u8], cookie: &[u8], our_challenge: u32) -> bool {
    body.first() == Some(&b'a') && body[1..] == digest(cookie, our_challenge)
}

/// Whether the first bytes a port sent back are a TLS record (an alert or a handshake, TLS
/// 1.0–1.3 all say major version 3), which is how a `-proto_dist inet_tls` node answers a
/// plain handshake.
pub fn looks_like_tls(reply: &[u8]) -> bool {
    matches!(reply, [0x15 | 0x16, 0x03, minor, ..] if *minor <= 0x04)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_dist_utils() {
        // Both computed by an OTP 25 node:
        // erlang:md5([atom_to_list(abc) | integer_to_list(1234567890)]) and md5("abc0").
        let hex = |d: [u8; 16]| -> String { d.iter().map(|b| format!("{b:02x}")).collect() };
        assert_eq!(
            hex(digest(b"abc", 1_234_567_890)),
            "57041f8f7dff9b67e3f97d7facbaf8d3"
        );
        assert_eq!(hex(digest(b"abc", 0)), "577571be4de9dcce85a041ba0410f29f");
    }

    #[test]
    fn send_name_v6_and_v5_bytes() {
        assert_eq!(
            send_name(Version::V6, 0x0000_0001_0000_0004, 7, "a@b"),
            [0, 18, b'N', 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0, 7, 0, 3, b'a', b'@', b'b']
        );
        assert_eq!(
            send_name(Version::V5, 0x0000_0001_0100_0004, 7, "a@b"),
            [0, 10, b'n', 0, 5, 1, 0, 0, 4, b'a', b'@', b'b']
        );
    }

    #[test]
    fn version_choice() {
        assert_eq!(Version::choose(6, 6), Some(Version::V6));
        assert_eq!(Version::choose(5, 6), Some(Version::V6));
        assert_eq!(Version::choose(5, 5), Some(Version::V5));
        assert_eq!(Version::choose(1, 4), None);
        assert_eq!(Version::choose(7, 9), None);
    }

    #[test]
    fn frames_and_statuses() {
        assert_eq!(take_frame(b"\x00"), None);
        assert_eq!(take_frame(b"\x00\x03sok"), Some((&b"sok"[..], 5)));
        assert_eq!(take_frame(b"\x00\x03sokXX"), Some((&b"sok"[..], 5)));
        assert_eq!(take_frame(b"\x00\x04sok"), None);
        assert_eq!(decode_status(b"sok"), Ok(HandshakeStatus::Ok));
        assert_eq!(
            decode_status(b"snot_allowed"),
            Ok(HandshakeStatus::NotAllowed)
        );
        assert_eq!(decode_status(b"salive"), Ok(HandshakeStatus::Alive));
        assert!(decode_status(b"sok_simultaneous").unwrap().proceeds());
        assert!(!decode_status(b"snok").unwrap().proceeds());
        assert_eq!(decode_status(b"xok"), Err(DecodeError::UnexpectedTag(b'x')));
        assert_eq!(decode_status(b""), Err(DecodeError::Short));
        assert_eq!(status_false(), b"\x00\x06sfalse");
    }

    #[test]
    fn challenges_decode() {
        let mut n = vec![b'N'];
        n.extend_from_slice(&0x0000_000d_0100_0004u64.to_be_bytes());
        n.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        n.extend_from_slice(&42u32.to_be_bytes());
        n.extend_from_slice(&3u16.to_be_bytes());
        n.extend_from_slice(b"a@h");
        let c = decode_challenge(&n).unwrap();
        assert_eq!(
            c,
            Challenge {
                new_format: true,
                flags: 0x0000_000d_0100_0004,
                challenge: 0xdead_beef,
                creation: Some(42),
                name: "a@h".into()
            }
        );
        n[18] = 9; // the name length runs past the end
        assert_eq!(decode_challenge(&n), Err(DecodeError::BadNameLength));
        assert_eq!(decode_challenge(&n[..10]), Err(DecodeError::Short));
        let old = b"n\x00\x05\x00\x00\x00\x04\x00\x00\x00\x07b@h";
        let c = decode_challenge(old).unwrap();
        assert_eq!((c.new_format, c.flags, c.challenge), (false, 4, 7));
        assert_eq!((c.creation, c.name.as_str()), (None, "b@h"));
        assert_eq!(
            decode_challenge(b"a"),
            Err(DecodeError::UnexpectedTag(b'a'))
        );
    }

    #[test]
    fn reply_ack_and_complement() {
        let d = digest(b"c", 5);
        let r = challenge_reply(9, &d);
        assert_eq!(&r[..7], b"\x00\x15r\x00\x00\x00\x09");
        assert_eq!(&r[7..], &d);
        let mut ack = vec![b'a'];
        ack.extend_from_slice(&digest(b"cookie", 77));
        assert!(ack_matches(&ack, b"cookie", 77));
        assert!(!ack_matches(&ack, b"cookie", 78));
        assert!(!ack_matches(&ack, b"other", 77));
        assert!(!ack_matches(b"a", b"cookie", 77));
        assert_eq!(
            complement(0x0000_000f_0000_0000, 2),
            b"\x00\x09c\x00\x00\x00\x0f\x00\x00\x00\x02"
        );
    }

    #[test]
    fn tls_records_are_recognised() {
        assert!(looks_like_tls(b"\x15\x03\x03\x00\x02\x02\x0a"));
        assert!(looks_like_tls(b"\x16\x03\x01"));
        assert!(!looks_like_tls(b"\x00\x03sok"));
        assert!(!looks_like_tls(b"\x15"));
        assert!(!looks_like_tls(b"\x15\x02\x00"));
    }
}
