//! Fuzz bodies: the code behind `fuzz/fuzz_targets/*`, kept in the library so that stable
//! `cargo test` runs it too, over the committed corpus and a bounded pseudo-random loop.
//!
//! | body | input | oracle |
//! |---|---|---|
//! | [`decode_frame_body`] | bytes received on a connection | never panics; agrees with [`read_limit`]; every proper prefix of a frame is partial |
//! | [`decode_request_body`] | a frame payload | never panics; a decoded request re-encodes and decodes to the same value |
//! | [`roundtrip_body`] | a frame, or reply bytes | `decode(encode(decode(x))) == decode(x)`; `encode(decode(x))` is `x` less the bytes decode ignores (plus the empty ALIVE2's pad byte); replies: `decode(encode(r)) == r` |
//! | [`session_body`] | a [`SessionInput`] | a sans-IO model of the connection layer; invariants after every step |
//!
//! # The session model
//!
//! [`Session`] mirrors `server/event_loop.rs` and `server/connection.rs` without sockets: each model
//! connection has the bytes its peer sent that the server has not read yet (`inbox`, plus a
//! FIN or RST flag), the bytes the server has read towards a frame (`rx`), and a phase
//! (`AcceptDelay`, `Reading`, `WriteDelay`, `Registered`). Arriving bytes and readiness are
//! separate steps, so a peer can send or close while the server has not looked yet.
//!
//! - Reading: the server reads `min(read_limit(rx), FIRST_READ_BYTES)` bytes at a time until
//!   the frame is complete or invalid, the inbox is empty (would block), EOF (silent close)
//!   or RST (silent close); a complete frame is decoded and given to [`dispatch::handle`].
//! - Access policy: a NAMES or PORT_PLEASE2 from a peer the policy refuses closes silently
//!   before dispatch; NAMES is answered from a reply cached per
//!   ([`Registry::generation`], header port), as the server does.
//! - Dispatch: `owner_gone(c)` is true when `c` is unknown or its peer has sent data, FIN or
//!   RST that the server has not processed (what `peek` sees). `Action.close` closes that
//!   connection; an empty reply closes silently; otherwise the reply is written at once (or
//!   after the write delay) and `After` applies: `Close` closes, `Register` makes it a
//!   registration connection that is checked at once, `Exit` ends the daemon (every
//!   connection goes, a fresh daemon starts with an empty registry).
//! - Registered: any readiness that finds data, FIN or RST closes it.
//! - A deadline closes any connection that is not yet in `Registered`.
//! - Closing a connection always calls [`Registry::unregister_conn`].
//! - A hand-over rebuilds the registry with [`Registry::restore`] from its live and old
//!   entries; connections, with their unread bytes, carry on.
//!
//! Writes complete at once, and `-delay_accept`/`-delay_write` are a fired-or-not timer
//! step: the real loop's partial writes only postpone what the model does at once. The
//! connection caps act before a connection exists, so the model has none.
//!
//! After every step: [`Registry::assert_invariants`]; no duplicate names; every
//! registration is owned by exactly one open connection, which is `Registered` (or waiting
//! to write its ALIVE2 reply), and every connection the model saw register still owns its
//! registration; no connection holds a complete or invalid frame unread; with no
//! connection, no registration; old + live entries stay within the old-list threshold plus
//! the peak of live registrations. After each request: the reply is well-formed and agrees
//! with the registry (ALIVE2 decodes with the request's width and the slot's creation,
//! PORT2 decodes to the registered node or "not found", NAMES and DUMP list the registry
//! byte for byte, KILL and STOP replies are the known constants). At the end every peer
//! closes, and nothing may stay registered.

use std::collections::{BTreeMap, HashSet};

use crate::protocol::response::{encode_port2, KILL_NO, KILL_OK, STOP_NOEXIST, STOP_STOPPED};
use crate::protocol::tag::{
    DUMP_REQ, ERROR_CREATION, EXTENDED_VERSION, FIRST_READ_BYTES, KILL_REQ, MAX_NAME_CHARS,
    MAX_PAYLOAD, NAMES_REQ, PORT_PLEASE2_REQ, STOP_REQ,
};
use crate::protocol::{
    decode_frame, encode_frame, read_limit, Alive2Reply, Alive2Request, FrameError, NodeInfo,
    NodeName, NodeType, Port2Reply, Request, Status,
};
use crate::registry::{ConnId, Limits, OldEntry, Registration, Registry};
use crate::server::dispatch::{self, Action, After, DispatchConfig, Event, Origin};
use crate::server::policy::AccessPolicy;

/// The port NAMES and DUMP report in the session model.
pub const SESSION_HEADER_PORT: u32 = 4369;
/// The most steps one session input runs (keeps every fuzz iteration short).
pub const MAX_SESSION_OPS: usize = 4096;
/// The most connections the session model keeps open at once; more `Open`s are ignored.
pub const MAX_SESSION_CONNS: usize = 48;
/// The largest chunk one `Feed` step carries (its length is 13 bits).
pub const MAX_FEED_BYTES: usize = 0x1FFF;

// ---------------------------------------------------------------------------------------
// Input cursor
// ---------------------------------------------------------------------------------------

/// A cursor over fuzz input that never fails: past the end it yields zeros and empty slices.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte, or 0 past the end.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// The next two bytes as a big-endian `u16` (zeros past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// The next four bytes as a big-endian `u32` (zeros past the end).
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = end.max(self.pos);
        &self.data[start..end]
    }
}

// ---------------------------------------------------------------------------------------
// decode_frame
// ---------------------------------------------------------------------------------------

/// Fuzz body for [`decode_frame`] and [`read_limit`]: `data` is everything received on a
/// connection so far.
///
/// Never panics on its own; asserts that the two functions agree (a partial frame allows a
/// read that never overshoots the frame, a complete or invalid one allows none), that every
/// proper prefix of a complete frame is partial, and that reading the same bytes one at a
/// time, as the server would if they trickled in, never sees trailing bytes.
pub fn decode_frame_body(data: &[u8]) {
    let limit = read_limit(data);
    let declared = match data {
        [hi, lo, ..] => Some(usize::from(u16::from_be_bytes([*hi, *lo]))),
        _ => None,
    };
    match decode_frame(data) {
        Ok(Status::Partial) => {
            assert!(limit > 0, "a partial frame must allow a read");
            match declared {
                Some(len) => assert_eq!(data.len() + limit, len + 2, "read past the frame"),
                None => assert_eq!(data.len() + limit, FIRST_READ_BYTES),
            }
        }
        Ok(Status::Complete(payload)) => {
            assert_eq!(limit, 0, "a complete frame allows no more reads");
            assert_eq!(payload, &data[2..]);
            assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
            assert_eq!(declared, Some(payload.len()));
            for end in 0..data.len() {
                assert_eq!(decode_frame(&data[..end]), Ok(Status::Partial));
            }
        }
        Err(FrameError::Empty) => {
            assert_eq!(limit, 0);
            assert_eq!(declared, Some(0));
        }
        Err(FrameError::TooLong(n)) => {
            assert_eq!(limit, 0);
            assert!(usize::from(n) > MAX_PAYLOAD);
            assert_eq!(declared, Some(usize::from(n)));
        }
        Err(FrameError::TrailingBytes { expected, got }) => {
            assert_eq!(limit, 0);
            assert_eq!(got, data.len() - 2);
            assert!(got > usize::from(expected));
            let frame = &data[..2 + usize::from(expected)];
            assert!(matches!(decode_frame(frame), Ok(Status::Complete(_))));
        }
    }

    // Bytes trickling in one at a time: reads follow read_limit, so they stop at the frame.
    let mut rx = Vec::new();
    for &b in data {
        if read_limit(&rx) == 0 {
            break;
        }
        rx.push(b);
        match decode_frame(&rx) {
            Ok(Status::Partial) => {}
            Ok(Status::Complete(p)) => {
                assert_eq!(declared, Some(p.len()));
                break;
            }
            Err(FrameError::TrailingBytes { .. }) => panic!("one-byte reads overshot the frame"),
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Request::decode
// ---------------------------------------------------------------------------------------

/// Fuzz body for [`Request::decode`]: `data` is a frame payload.
///
/// Never panics on its own; a request that decodes re-encodes to a payload no longer than
/// `data` that decodes to the same value, frames as a complete frame, and satisfies the
/// decoder's promises (no NUL in names, PORT_PLEASE2 names within the lookup limit).
pub fn decode_request_body(data: &[u8]) {
    let Ok(request) = Request::decode(data) else {
        return;
    };
    let mut payload = Vec::new();
    request.encode_payload(&mut payload);
    assert!(payload.len() <= data.len(), "encoding grew the request");
    assert_re_decodes(&payload, &request);
    match &request {
        Request::Alive2(a) => {
            assert!(!a.name.contains(&0));
            if let Ok(info) = a.to_node_info() {
                assert_eq!(info.name.as_bytes(), &a.name[..]);
                assert_eq!(info.extra, a.extra);
            }
        }
        Request::PortPlease2(name) => {
            assert!(!name.as_bytes().is_empty());
            assert!(name.as_str().chars().count() < MAX_NAME_CHARS);
        }
        Request::Stop(name) => assert!(!name.contains(&0)),
        Request::Names | Request::Dump | Request::Kill => {}
    }
    if payload.len() <= MAX_PAYLOAD {
        let frame = request.to_frame();
        assert_eq!(decode_frame(&frame), Ok(Status::Complete(&payload[..])));
    }
}

// ---------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------

/// Fuzz body for the encode/decode round trips.
///
/// - `data` as a request frame: `decode(encode(decode(x))) == decode(x)`, the re-encoding is
///   canonical (`encode(decode(e)) == e`), and `encode(decode(x))` is `x` without the bytes
///   the decoder ignores (and only those), plus the one pad byte an ALIVE2 with an empty
///   name and no extra gets; so it is `x` itself for a canonical frame.
/// - `data` as an ALIVE2 or PORT2 reply: a reply that decodes encodes back to `data`.
/// - `data` as the fields of replies and an ALIVE2 request: `decode(encode(r)) == r`.
pub fn roundtrip_body(data: &[u8]) {
    request_round_trip(data);
    reply_bytes_round_trip(data);
    let mut input = Input::new(data);
    alive2_reply_from_fields(&mut input);
    port2_reply_from_fields(&mut input);
    alive2_request_from_fields(&mut input);
}

fn request_round_trip(data: &[u8]) {
    let Ok(Status::Complete(payload)) = decode_frame(data) else {
        return;
    };
    let Ok(request) = Request::decode(payload) else {
        return;
    };
    let frame = request.to_frame();
    let encoded = &frame[2..];
    // The one byte the encoder adds that no field holds: an ALIVE2 with an empty name and
    // no extra is padded to 14 bytes (13 are refused as too short). That pad stands for
    // whatever trailing byte the input had, so it is not compared.
    let padded = matches!(&request, Request::Alive2(a) if a.name.is_empty() && a.extra.is_empty());
    let fields = if padded {
        &encoded[..encoded.len() - 1]
    } else {
        encoded
    };
    let ignored = payload
        .strip_prefix(fields)
        .unwrap_or_else(|| panic!("{request:?} re-encoded as {encoded:02x?}, not a prefix"));
    let ignorable = match &request {
        Request::Names | Request::Dump | Request::Kill | Request::Alive2(_) => true,
        Request::PortPlease2(_) => ignored.is_empty() || ignored == [0],
        Request::Stop(name) => name.is_empty() || ignored.is_empty() || ignored[0] == 0,
    };
    assert!(
        ignorable,
        "{request:?}: bytes {ignored:02x?} were not ignorable"
    );
    if ignored.is_empty() {
        assert_eq!(frame, data, "a canonical frame must round-trip exactly");
    }
    // decode(encode(decode(x))) == decode(x), and the re-encoding is a fixed point:
    // encode(decode(encode(r))) == encode(r).
    let Ok(Status::Complete(again)) = decode_frame(&frame) else {
        panic!("re-encoded frame is not a frame");
    };
    assert_re_decodes(again, &request);
    assert_eq!(
        Request::decode(again).map(|r| r.to_frame()).as_ref(),
        Ok(&frame),
        "the re-encoded frame is not canonical"
    );
}

/// `decode(payload) == request`, where `payload` is `request` encoded.
fn assert_re_decodes(payload: &[u8], request: &Request) {
    let decoded = Request::decode(payload);
    assert_eq!(decoded.as_ref(), Ok(request), "{payload:02x?}");
}

/// The hand-over / fd-store state document: decoding never panics, and a document that
/// decodes re-encodes to one that decodes to the same value.
pub fn state_decode_body(data: &[u8]) {
    if let Ok(state) = crate::handover::state::State::decode(data) {
        let again = crate::handover::state::State::decode(&state.encode());
        assert_eq!(again.ok().as_ref(), Some(&state));
    }
}

fn reply_bytes_round_trip(data: &[u8]) {
    if let Some(reply) = Alive2Reply::decode(data) {
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(out, data);
    }
    match Port2Reply::decode(data) {
        Some(Port2Reply::Found(info)) => {
            let mut out = Vec::new();
            encode_port2(Some(&info), &mut out);
            assert_eq!(out, data);
        }
        Some(Port2Reply::NotFound(result)) => {
            assert_ne!(result, 0);
            assert_eq!(data, [crate::protocol::tag::PORT2_RESP, result]);
            if result == 1 {
                let mut out = Vec::new();
                encode_port2(None, &mut out);
                assert_eq!(out, data);
            }
        }
        None => {}
    }
}

fn alive2_reply_from_fields(input: &mut Input<'_>) {
    let high = input.u16();
    let ok = input.u8() & 1 == 0;
    let cr = input.u32();
    let reply = Alive2Reply::new(high, if ok { Ok(cr) } else { Err(()) });
    assert_eq!(reply.is_success(), ok);
    match reply {
        Alive2Reply::Extended { creation, .. } => {
            assert!(high >= EXTENDED_VERSION);
            assert_eq!(creation, if ok { cr } else { ERROR_CREATION });
        }
        Alive2Reply::Short { creation, .. } => {
            assert!(high < EXTENDED_VERSION);
            if ok {
                assert!((1..=3).contains(&creation));
            } else {
                assert_eq!(u32::from(creation), ERROR_CREATION);
            }
        }
    }
    let mut out = Vec::new();
    reply.encode(&mut out);
    assert_eq!(Alive2Reply::decode(&out), Some(reply));
    // Decoding needs exactly one reply: one byte more or less is refused.
    out.push(0);
    assert_eq!(Alive2Reply::decode(&out), None);
    out.truncate(out.len() - 2);
    assert_eq!(Alive2Reply::decode(&out), None);
}

fn port2_reply_from_fields(input: &mut Input<'_>) {
    let port = input.u16();
    let node_type = NodeType::from_byte(input.u8());
    let protocol = input.u8();
    let highest_version = input.u16();
    let lowest_version = input.u16();
    let name_len = usize::from(input.u8());
    let name = input.take(name_len);
    let extra_len = usize::from(input.u16()) % (crate::protocol::tag::MAX_EXTRA_BYTES + 1);
    let extra = input.take(extra_len).to_vec();
    let mut out = Vec::new();
    encode_port2(None, &mut out);
    assert_eq!(Port2Reply::decode(&out), Some(Port2Reply::NotFound(1)));
    let Ok(name) = NodeName::new(name) else {
        return;
    };
    let info = NodeInfo {
        port,
        node_type,
        protocol,
        highest_version,
        lowest_version,
        name,
        extra,
    };
    out.clear();
    encode_port2(Some(&info), &mut out);
    assert_eq!(Port2Reply::decode(&out), Some(Port2Reply::Found(info)));
    out.push(0);
    assert_eq!(Port2Reply::decode(&out), None);
}

fn alive2_request_from_fields(input: &mut Input<'_>) {
    let port = input.u16();
    let node_type = NodeType::from_byte(input.u8());
    let protocol = input.u8();
    let highest_version = input.u16();
    let lowest_version = input.u16();
    let name_len = usize::from(input.u8());
    let name: Vec<u8> = input.take(name_len).iter().map(|&b| b.max(1)).collect();
    let extra_len = usize::from(input.u16() & 0x07FF);
    let extra = input.take(extra_len).to_vec();
    let request = Request::Alive2(Alive2Request {
        port,
        node_type,
        protocol,
        highest_version,
        lowest_version,
        name,
        extra,
    });
    let frame = request.to_frame();
    let Ok(Status::Complete(payload)) = decode_frame(&frame) else {
        panic!("an ALIVE2 request of {} bytes is not a frame", frame.len());
    };
    assert_re_decodes(payload, &request);
}

// ---------------------------------------------------------------------------------------
// Session: operations
// ---------------------------------------------------------------------------------------

/// Old-list thresholds a session may run with (index = bits 4–6 of the flags byte).
const THRESHOLDS: [usize; 8] = [5, Limits::OLD_LIST_THRESHOLD, 0, 1, 2, 3, 5, 5];

/// How a session's daemon is configured (the first five input bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Setup {
    /// `-relaxed_command_check` (flags bit 0).
    pub relaxed: bool,
    /// `-delay_accept` (flags bit 1): connections wait for their timer before being read.
    pub delay_accept: bool,
    /// `-delay_write` (flags bit 2): replies wait for the connection's timer.
    pub delay_write: bool,
    /// NAMES policy `local` instead of `any` (flags bit 3).
    pub names_local: bool,
    /// PORT_PLEASE2 policy `local` instead of `any` (flags bit 7).
    pub port_please_local: bool,
    /// Index into the old-list thresholds `[5, 1000, 0, 1, 2, 3, 5, 5]` (flags bits 4–6).
    pub threshold: u8,
    /// The wall clock at the start, in Unix seconds (4 bytes, big-endian).
    pub start_unix: u32,
}

impl Setup {
    /// Reads the setup; missing bytes count as zeros.
    pub fn decode(input: &mut Input<'_>) -> Setup {
        let flags = input.u8();
        Setup {
            relaxed: flags & 1 != 0,
            delay_accept: flags & 2 != 0,
            delay_write: flags & 4 != 0,
            names_local: flags & 8 != 0,
            port_please_local: flags & 0x80 != 0,
            threshold: (flags >> 4) & 7,
            start_unix: input.u32(),
        }
    }

    /// Appends the five setup bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let flags = u8::from(self.relaxed)
            | u8::from(self.delay_accept) << 1
            | u8::from(self.delay_write) << 2
            | u8::from(self.names_local) << 3
            | u8::from(self.port_please_local) << 7
            | (self.threshold & 7) << 4;
        out.push(flags);
        out.extend_from_slice(&self.start_unix.to_be_bytes());
    }

    /// The access policy a flag selects.
    fn policy(local_only: bool) -> AccessPolicy {
        if local_only {
            AccessPolicy::parse("local").expect("the local preset parses")
        } else {
            AccessPolicy::any()
        }
    }

    /// The registry limits this setup runs with.
    pub fn limits(&self) -> Limits {
        Limits {
            old_list_threshold: THRESHOLDS[usize::from(self.threshold & 7)],
            // Bit 3 turns on a small registration cap, so that the "full" path is fuzzed.
            max_registrations: if self.threshold & 8 != 0 {
                4
            } else {
                usize::MAX
            },
        }
    }
}

/// One step of a session. `conn` selects an open connection, counting back from the most
/// recently opened one (0), modulo how many are open (nothing happens when none is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A client connects (from a non-local address when `local` is false).
    Open {
        /// Whether the peer is local (spec §5).
        local: bool,
    },
    /// Bytes from the peer arrive on a connection (ignored after its FIN or RST).
    Feed {
        /// The connection selector.
        conn: u8,
        /// The bytes (at most [`MAX_FEED_BYTES`]).
        bytes: Vec<u8>,
        /// Whether the server sees the readiness event now (else a later step delivers it).
        poll: bool,
    },
    /// The peer closes: a FIN, or an RST that drops what the server has not read.
    PeerClose {
        /// The connection selector.
        conn: u8,
        /// RST instead of FIN.
        reset: bool,
        /// Whether the server sees the readiness event now.
        poll: bool,
    },
    /// A readiness event for a connection (possibly spurious).
    Poll {
        /// The connection selector.
        conn: u8,
    },
    /// A connection's request deadline passes.
    Deadline {
        /// The connection selector.
        conn: u8,
    },
    /// A connection's `-delay_accept` or `-delay_write` timer fires.
    Timer {
        /// The connection selector.
        conn: u8,
    },
    /// The wall clock moves forward.
    Tick {
        /// Seconds.
        secs: u16,
    },
    /// The daemon hands over to a new process: the registry is rebuilt with
    /// [`Registry::restore`] from its live and old entries; connections carry on.
    HandOver,
}

/// Op kinds: the low three bits of an op byte; the high five bits are flags.
mod kind {
    pub(super) const OPEN: u8 = 0;
    pub(super) const FEED: u8 = 1;
    pub(super) const FEED_REQUEST: u8 = 2;
    pub(super) const PEER_CLOSE: u8 = 3;
    pub(super) const POLL: u8 = 4;
    pub(super) const DEADLINE: u8 = 5;
    pub(super) const TIMER: u8 = 6;
    pub(super) const TICK: u8 = 7;
}

/// A whole session input: the setup, then operations until the bytes run out.
///
/// Layout: 5 setup bytes, then ops. Each op starts with a byte whose low three bits are the
/// kind and whose high five bits are flags (bit 3: "not local" for `Open`, "defer the
/// readiness event" for `Feed` and `PeerClose`; bit 4: RST for `PeerClose`):
///
/// | kind | op | then |
/// |---|---|---|
/// | 0 | `Open` | — |
/// | 1 | `Feed` | conn, len (`0xFF`: a `u16` follows, masked to 13 bits), bytes |
/// | 2 | `Feed` of a generated request | conn, what, param; bits 4–7 split it in two feeds |
/// | 3 | `PeerClose` | conn |
/// | 4 | `Poll` | conn |
/// | 5 | `Deadline` | conn |
/// | 6 | `Timer` | conn |
/// | 7 | `Tick` | secs (`u16`) |
/// | 7 with bit 3 | `HandOver` | — |
///
/// Kind 2 lets short inputs reach deep states: `(what & 7) % 6` picks ALIVE2, PORT_PLEASE2,
/// NAMES, DUMP, KILL or STOP, `what / 8` a name from a fixed pool of tricky names (empty,
/// 255 and 256 code points, non-UTF-8, NUL, newline), and `param` ALIVE2's version, node
/// type, port and extra length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInput {
    /// The daemon's configuration.
    pub setup: Setup,
    /// The steps, in order.
    pub ops: Vec<Op>,
}

impl SessionInput {
    /// Decodes any bytes into a session: never panics, at most [`MAX_SESSION_OPS`] steps.
    pub fn decode(data: &[u8]) -> SessionInput {
        let mut input = Input::new(data);
        let setup = Setup::decode(&mut input);
        let mut ops = Vec::new();
        while !input.is_empty() && ops.len() < MAX_SESSION_OPS {
            decode_op(&mut input, &mut ops);
        }
        SessionInput { setup, ops }
    }

    /// Encodes the session so that [`decode`](Self::decode) gives it back.
    ///
    /// # Panics
    /// If a `Feed` carries more than [`MAX_FEED_BYTES`] bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.setup.encode(&mut out);
        for op in &self.ops {
            match op {
                Op::Open { local } => out.push(kind::OPEN | u8::from(!local) << 3),
                Op::Feed { conn, bytes, poll } => {
                    assert!(bytes.len() <= MAX_FEED_BYTES, "feed too long to encode");
                    out.extend_from_slice(&[kind::FEED | u8::from(!poll) << 3, *conn]);
                    match u8::try_from(bytes.len()) {
                        Ok(n) if n < 0xFF => out.push(n),
                        _ => {
                            out.push(0xFF);
                            // Bounded by MAX_FEED_BYTES above.
                            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                        }
                    }
                    out.extend_from_slice(bytes);
                }
                Op::PeerClose { conn, reset, poll } => out.extend_from_slice(&[
                    kind::PEER_CLOSE | u8::from(!poll) << 3 | u8::from(*reset) << 4,
                    *conn,
                ]),
                Op::Poll { conn } => out.extend_from_slice(&[kind::POLL, *conn]),
                Op::Deadline { conn } => out.extend_from_slice(&[kind::DEADLINE, *conn]),
                Op::Timer { conn } => out.extend_from_slice(&[kind::TIMER, *conn]),
                Op::Tick { secs } => {
                    out.push(kind::TICK);
                    out.extend_from_slice(&secs.to_be_bytes());
                }
                Op::HandOver => out.push(kind::TICK | 0x08),
            }
        }
        out
    }
}

fn decode_op(input: &mut Input<'_>, ops: &mut Vec<Op>) {
    let b = input.u8();
    let flag = b & 0x08 != 0;
    match b & 7 {
        kind::OPEN => ops.push(Op::Open { local: !flag }),
        kind::FEED => {
            let conn = input.u8();
            let len = match input.u8() {
                0xFF => usize::from(input.u16()) & MAX_FEED_BYTES,
                n => usize::from(n),
            };
            let bytes = input.take(len).to_vec();
            ops.push(Op::Feed {
                conn,
                bytes,
                poll: !flag,
            });
        }
        kind::FEED_REQUEST => {
            let conn = input.u8();
            let what = input.u8();
            let param = input.u8();
            let frame = generated_request(what, param);
            let split = usize::from(b >> 4).min(frame.len());
            let (first, second) = frame.split_at(split);
            for part in [first, second] {
                if !part.is_empty() {
                    ops.push(Op::Feed {
                        conn,
                        bytes: part.to_vec(),
                        poll: !flag,
                    });
                }
            }
        }
        kind::PEER_CLOSE => ops.push(Op::PeerClose {
            conn: input.u8(),
            reset: b & 0x10 != 0,
            poll: !flag,
        }),
        kind::POLL => ops.push(Op::Poll { conn: input.u8() }),
        kind::DEADLINE => ops.push(Op::Deadline { conn: input.u8() }),
        kind::TIMER => ops.push(Op::Timer { conn: input.u8() }),
        _ if flag => ops.push(Op::HandOver),
        _ => ops.push(Op::Tick { secs: input.u16() }),
    }
}

/// The name pool of generated requests.
fn pool_name(i: u8) -> Vec<u8> {
    match i % 12 {
        0 => b"a".to_vec(),
        1 => b"b".to_vec(),
        2 => b"seed1".to_vec(),
        3 => Vec::new(),
        4 => vec![b'x'; MAX_NAME_CHARS],
        5 => vec![b'y'; MAX_NAME_CHARS + 1],
        6 => "\u{e9}\u{1F600}".as_bytes().to_vec(),
        7 => b"a\nname b at port 1".to_vec(),
        8 => b"n\0ul".to_vec(),
        9 => vec![0xC0, 0x80],
        10 => b"A".to_vec(),
        _ => b"a b".to_vec(),
    }
}

/// A whole request frame built from two bytes (see [`SessionInput`]).
fn generated_request(what: u8, param: u8) -> Vec<u8> {
    let name = pool_name(what >> 3);
    let mut payload = Vec::new();
    match (what & 7) % 6 {
        0 => {
            let extra_len = [0, 1, 1020, 1021][usize::from((param >> 1) & 3)];
            Request::Alive2(Alive2Request {
                port: u16::from(param) * 257,
                node_type: NodeType::from_byte(if param & 0x10 != 0 { 72 } else { 77 }),
                protocol: 0,
                highest_version: if param & 1 != 0 { 5 } else { 6 },
                lowest_version: 5,
                name,
                extra: vec![0xEE; extra_len],
            })
            .encode_payload(&mut payload)
        }
        1 => {
            payload.push(PORT_PLEASE2_REQ);
            payload.extend_from_slice(&name);
        }
        2 => payload.push(NAMES_REQ),
        3 => payload.push(DUMP_REQ),
        4 => payload.push(KILL_REQ),
        _ => {
            payload.push(STOP_REQ);
            payload.extend_from_slice(&name);
        }
    }
    let mut frame = Vec::new();
    encode_frame(&payload, &mut frame);
    frame
}

// ---------------------------------------------------------------------------------------
// Session: the model
// ---------------------------------------------------------------------------------------

/// A model connection's phase (the `Writing` phase of the real loop takes no time here).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// `-delay_accept`: not read before its timer.
    AcceptDelay,
    /// Collecting the one request.
    Reading,
    /// `-delay_write`: the reply waits for the timer; then `After` applies.
    WriteDelay(After),
    /// A registration connection.
    Registered,
}

/// One model connection.
#[derive(Debug)]
struct Conn {
    local: bool,
    phase: Phase,
    /// Bytes the peer sent that the server has not read.
    inbox: Vec<u8>,
    /// The peer sent a FIN (after `inbox`).
    fin: bool,
    /// The peer reset the connection.
    reset: bool,
    /// Bytes the server has read towards a frame.
    rx: Vec<u8>,
    /// The model's expectation: this connection owns a registration.
    registered: bool,
    /// The NAMES policy lets this peer list names.
    may_list: bool,
    /// The PORT_PLEASE2 policy lets this peer look names up.
    may_lookup: bool,
}

impl Conn {
    /// What `peek` on the socket would see: data, EOF or an error.
    fn peer_gone(&self) -> bool {
        !self.inbox.is_empty() || self.fin || self.reset
    }
}

/// How often a session reached each outcome: shows that fuzzing reaches the states the
/// invariants are about (the pseudo-random test asserts every counter is non-zero).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Connections closed silently for a framing or request error, EOF or RST while reading.
    pub silent_closes: usize,
    /// Successful registrations.
    pub registered: usize,
    /// Registrations that replaced an owner whose peer had gone.
    pub replaced_dead_owner: usize,
    /// ALIVE2 refused as a duplicate.
    pub duplicates: usize,
    /// ALIVE2 refused for its name or extra.
    pub bad_names: usize,
    /// PORT_PLEASE2 that found a node.
    pub lookups_found: usize,
    /// NAMES answered from the cache.
    pub names_cached: usize,
    /// NAMES rendered because the registry (or nothing cached) changed.
    pub names_rendered: usize,
    /// DUMP answered.
    pub dumps: usize,
    /// KILL refused.
    pub kills_refused: usize,
    /// KILL honoured: the daemon exited.
    pub exits: usize,
    /// STOP that unregistered a node.
    pub stops: usize,
    /// Requests refused by the access policy or for a non-local peer.
    pub refused: usize,
    /// Registrations that ended because their connection closed.
    pub unregistered_by_close: usize,
    /// Connections closed by their deadline.
    pub deadlines: usize,
    /// Hand-overs to a new process.
    pub handovers: usize,
}

/// The sans-IO model of the daemon's connection layer (see the module docs).
#[derive(Debug)]
pub struct Session {
    setup: Setup,
    config: DispatchConfig,
    registry: Registry,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: u64,
    now: u64,
    /// Most live registrations since the daemon started (bounds the old list).
    peak_live: usize,
    /// What the session reached.
    coverage: Coverage,
    /// The NAMES reply cache: (registry generation, header port, reply).
    names_cache: Option<(u64, u32, Vec<u8>)>,
}

impl Session {
    /// A daemon with no connections.
    pub fn new(setup: Setup) -> Session {
        Session {
            setup,
            config: DispatchConfig {
                header_port: SESSION_HEADER_PORT,
                relaxed: setup.relaxed,
            },
            registry: Registry::new(setup.limits()),
            conns: BTreeMap::new(),
            next_conn: 1,
            now: u64::from(setup.start_unix),
            peak_live: 0,
            coverage: Coverage::default(),
            names_cache: None,
        }
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// What the session reached so far.
    pub fn coverage(&self) -> Coverage {
        self.coverage
    }

    /// Applies one step, then checks every invariant.
    pub fn step(&mut self, op: &Op) {
        match op {
            Op::Open { local } => self.open(*local),
            Op::Feed { conn, bytes, poll } => {
                if let Some(id) = self.select(*conn) {
                    let c = self.conns.get_mut(&id).expect("selected connection");
                    if !c.fin && !c.reset {
                        c.inbox.extend_from_slice(bytes);
                    }
                    if *poll {
                        self.ready(id);
                    }
                }
            }
            Op::PeerClose { conn, reset, poll } => {
                if let Some(id) = self.select(*conn) {
                    self.peer_close(id, *reset);
                    if *poll {
                        self.ready(id);
                    }
                }
            }
            Op::Poll { conn } => {
                if let Some(id) = self.select(*conn) {
                    self.ready(id);
                }
            }
            Op::Deadline { conn } => {
                if let Some(id) = self.select(*conn) {
                    self.deadline(id);
                }
            }
            Op::Timer { conn } => {
                if let Some(id) = self.select(*conn) {
                    self.timer(id);
                }
            }
            Op::Tick { secs } => self.now += u64::from(*secs),
            Op::HandOver => self.hand_over(),
        }
        self.check();
    }

    /// Every peer closes, one after the other, and their deadlines pass; then nothing may
    /// remain registered.
    pub fn close_all(&mut self) {
        while let Some(&id) = self.conns.keys().next() {
            self.peer_close(id, false);
            self.ready(id);
            self.check();
            if self.conns.contains_key(&id) {
                self.deadline(id);
                self.check();
            }
            assert!(
                !self.conns.contains_key(&id),
                "{id:?} survived its peer's FIN and its deadline"
            );
        }
        assert!(
            self.registry.is_empty(),
            "registrations left with no connection: {:?}",
            self.registry.newest_first().collect::<Vec<_>>()
        );
    }

    fn select(&self, k: u8) -> Option<ConnId> {
        let n = self.conns.len();
        if n == 0 {
            return None;
        }
        self.conns.keys().nth_back(usize::from(k) % n).copied()
    }

    fn open(&mut self, local: bool) {
        if self.conns.len() >= MAX_SESSION_CONNS {
            return;
        }
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let phase = if self.setup.delay_accept {
            Phase::AcceptDelay
        } else {
            Phase::Reading
        };
        // Addresses only as values for the policy (no traffic): loopback, or TEST-NET-1.
        let peer: std::net::SocketAddr = if local {
            ([127, 0, 0, 1], 40000).into()
        } else {
            ([192, 0, 2, 1], 40000).into()
        };
        self.conns.insert(
            id,
            Conn {
                local,
                phase,
                inbox: Vec::new(),
                fin: false,
                reset: false,
                rx: Vec::new(),
                registered: false,
                may_list: Setup::policy(self.setup.names_local).allows(peer, local),
                may_lookup: Setup::policy(self.setup.port_please_local).allows(peer, local),
            },
        );
    }

    fn peer_close(&mut self, id: ConnId, reset: bool) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if reset {
            c.inbox.clear();
            c.reset = true;
        } else {
            c.fin = true;
        }
    }

    /// A readiness event, as `Server::connection_ready` handles it.
    fn ready(&mut self, id: ConnId) {
        let Some(c) = self.conns.get(&id) else {
            return;
        };
        match c.phase {
            Phase::AcceptDelay | Phase::WriteDelay(_) => {}
            Phase::Reading => self.read_and_dispatch(id),
            Phase::Registered => self.check_registration(id),
        }
    }

    /// `Connection::read_request`: reads bounded by `read_limit` until the frame is done.
    fn read_and_dispatch(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        let request = loop {
            let limit = read_limit(&c.rx).min(FIRST_READ_BYTES);
            if limit > 0 {
                if c.reset {
                    break None; // ECONNRESET
                }
                if c.inbox.is_empty() {
                    if c.fin {
                        break None; // read() == 0
                    }
                    return; // WouldBlock
                }
                let n = limit.min(c.inbox.len());
                c.rx.extend(c.inbox.drain(..n));
            }
            match decode_frame(&c.rx) {
                Ok(Status::Partial) => {
                    assert!(limit > 0, "read_limit 0 on a partial frame");
                }
                Ok(Status::Complete(payload)) => break Request::decode(payload).ok(),
                Err(_) => break None,
            }
        };
        c.rx.clear();
        match request {
            Some(request) => self.dispatch(id, request),
            None => {
                self.coverage.silent_closes += 1;
                self.close(id);
            }
        }
    }

    /// `Server::dispatch`, with the reply checked against the registry before and after.
    fn dispatch(&mut self, id: ConnId, request: Request) {
        let c = &self.conns[&id];
        let refused = match request {
            Request::Names => !c.may_list,
            Request::PortPlease2(_) => !c.may_lookup,
            _ => false,
        };
        if refused {
            assert!(!c.local, "the access policy refused a local peer");
            self.coverage.refused += 1;
            self.close(id);
            return;
        }
        if request == Request::Names {
            let generation = self.registry.generation();
            let reply = match &self.names_cache {
                Some((g, p, reply)) if *g == generation && *p == SESSION_HEADER_PORT => {
                    self.coverage.names_cached += 1;
                    reply.clone()
                }
                _ => {
                    self.coverage.names_rendered += 1;
                    let reply = dispatch::names_reply(&self.registry, SESSION_HEADER_PORT);
                    self.names_cache = Some((generation, SESSION_HEADER_PORT, reply.clone()));
                    reply
                }
            };
            self.check_names(&reply);
            return self.send(id, After::Close);
        }
        let origin = Origin {
            conn: id,
            fd: u32::try_from(id.0).unwrap_or(u32::MAX),
            local: c.local,
        };
        let before = Before::capture(&request, &self.registry, &self.conns);
        let conns = &self.conns;
        let action = dispatch::handle(
            request.clone(),
            origin,
            &self.config,
            &mut self.registry,
            self.now,
            |owner| conns.get(&owner).is_none_or(Conn::peer_gone),
        );
        self.check_action(&request, origin, &before, &action);
        self.count(&action.event);
        if matches!(
            action.event,
            Event::Registered { .. } | Event::ReplacedDeadOwner { .. }
        ) {
            self.conns
                .get_mut(&id)
                .expect("dispatching connection")
                .registered = true;
            self.peak_live = self.peak_live.max(self.registry.len());
        }
        if let Some(other) = action.close {
            assert_ne!(other, id, "a request closed its own connection by id");
            self.close(other);
        }
        if action.reply.is_empty() {
            self.close(id);
        } else {
            self.send(id, action.after);
        }
    }

    fn count(&mut self, event: &Event) {
        let c = &mut self.coverage;
        match event {
            Event::Registered { .. } => c.registered += 1,
            Event::ReplacedDeadOwner { .. } => c.replaced_dead_owner += 1,
            Event::Duplicate => c.duplicates += 1,
            Event::BadName(_) => c.bad_names += 1,
            Event::Lookup(found) => c.lookups_found += usize::from(*found),
            Event::Dump => c.dumps += 1,
            Event::KillRefused => c.kills_refused += 1,
            Event::Stopped(stopped) => c.stops += usize::from(*stopped),
            Event::NotLocal | Event::Full => c.refused += 1,
            Event::Names | Event::Killed | Event::StopIgnored => {}
        }
    }

    /// `Server::send`: the reply is written now, or after the write delay.
    fn send(&mut self, id: ConnId, after: After) {
        if self.setup.delay_write {
            self.conns
                .get_mut(&id)
                .expect("dispatching connection")
                .phase = Phase::WriteDelay(after);
        } else {
            self.write_reply(id, after);
        }
    }

    /// `continue_writing` + `finish_reply`: the write fails on a reset connection.
    fn write_reply(&mut self, id: ConnId, after: After) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.reset {
            self.close(id);
            return;
        }
        match after {
            After::Close => self.close(id),
            After::Register => {
                c.phase = Phase::Registered;
                self.check_registration(id);
            }
            After::Exit => self.exit(),
        }
    }

    /// `check_registration`: data, EOF or an error end a registration connection.
    fn check_registration(&mut self, id: ConnId) {
        if self.conns.get(&id).is_some_and(Conn::peer_gone) {
            self.close(id);
        }
    }

    fn deadline(&mut self, id: ConnId) {
        if self
            .conns
            .get(&id)
            .is_some_and(|c| c.phase != Phase::Registered)
        {
            self.coverage.deadlines += 1;
            self.close(id);
        }
    }

    fn timer(&mut self, id: ConnId) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        match c.phase {
            Phase::AcceptDelay => {
                c.phase = Phase::Reading;
                self.read_and_dispatch(id);
            }
            Phase::WriteDelay(after) => self.write_reply(id, after),
            Phase::Reading | Phase::Registered => {}
        }
    }

    /// `Server::close`: the registration, if any, goes with the connection.
    fn close(&mut self, id: ConnId) {
        if self.conns.remove(&id).is_some() && self.registry.unregister_conn(id).is_some() {
            self.coverage.unregistered_by_close += 1;
        }
    }

    /// `Server` hand-over: the successor rebuilds the registry from the saved live and old
    /// entries (oldest first); it must list, look up and recycle exactly as before.
    fn hand_over(&mut self) {
        let live: Vec<Registration> = self.registry.oldest_first().cloned().collect();
        let old: Vec<OldEntry> = self.registry.old_entries().cloned().collect();
        let restored = Registry::restore(self.registry.limits(), live, old)
            .unwrap_or_else(|e| panic!("a live registry does not restore: {e}"));
        restored.assert_invariants();
        assert!(restored.newest_first().eq(self.registry.newest_first()));
        assert!(restored.old_entries().eq(self.registry.old_entries()));
        self.registry = restored;
        self.names_cache = None;
        self.coverage.handovers += 1;
    }

    /// KILL honoured: the daemon exits with every connection; a new one starts.
    fn exit(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
        assert!(
            self.registry.is_empty(),
            "registrations outlived the daemon"
        );
        self.registry = Registry::new(self.setup.limits());
        self.names_cache = None;
        self.peak_live = 0;
        self.coverage.exits += 1;
    }

    /// The invariants that hold after every step.
    fn check(&self) {
        self.registry.assert_invariants();
        let mut names = HashSet::new();
        for reg in self.registry.newest_first() {
            assert!(
                names.insert(&reg.info.name),
                "duplicate name {:?}",
                reg.info.name
            );
            let c = self
                .conns
                .get(&reg.conn)
                .unwrap_or_else(|| panic!("{:?} owned by closed {:?}", reg.info.name, reg.conn));
            assert!(
                matches!(
                    c.phase,
                    Phase::Registered | Phase::WriteDelay(After::Register)
                ),
                "{:?} owned by {:?} in phase {:?}",
                reg.info.name,
                reg.conn,
                c.phase
            );
            assert_eq!(self.registry.by_conn(reg.conn), Some(reg));
        }
        for (id, c) in &self.conns {
            assert_eq!(
                c.registered,
                self.registry.by_conn(*id).is_some(),
                "{id:?}: registration lost or appeared"
            );
            if c.phase == Phase::Reading {
                assert_eq!(decode_frame(&c.rx), Ok(Status::Partial), "{id:?}: stale rx");
            } else {
                assert!(c.rx.is_empty());
            }
        }
        if self.conns.is_empty() {
            assert!(self.registry.is_empty(), "registrations with no connection");
        }
        let threshold = self.registry.limits().old_list_threshold;
        assert!(
            self.registry.old_len() + self.registry.len() <= threshold + self.peak_live,
            "old list grew past threshold + peak registrations"
        );
    }

    /// Checks one action against the request and the registry as it was before.
    fn check_action(&self, request: &Request, origin: Origin, before: &Before, action: &Action) {
        let local_only = matches!(
            request,
            Request::Alive2(_) | Request::Dump | Request::Kill | Request::Stop(_)
        );
        if local_only && !origin.local {
            assert_eq!(action.event, Event::NotLocal);
            assert!(action.reply.is_empty() && action.close.is_none());
            assert_eq!(action.after, After::Close);
            return;
        }
        match request {
            Request::Alive2(a) => self.check_alive2(a, origin, before, action),
            Request::PortPlease2(name) => {
                assert_eq!(action.after, After::Close);
                let reply = Port2Reply::decode(&action.reply)
                    .unwrap_or_else(|| panic!("bad PORT2 reply {:02x?}", action.reply));
                match (reply, self.registry.lookup(name)) {
                    (Port2Reply::Found(info), Some(reg)) => assert_eq!(info, reg.info),
                    (Port2Reply::NotFound(1), None) => {}
                    (reply, reg) => panic!("PORT2 {reply:?} for registration {reg:?}"),
                }
            }
            Request::Names => {
                assert_eq!(action.after, After::Close);
                self.check_names(&action.reply);
            }
            Request::Dump => {
                assert_eq!(action.after, After::Close);
                self.check_dump(&action.reply);
            }
            Request::Kill => {
                if !self.config.relaxed && before.live > 0 {
                    assert_eq!(action.reply, KILL_NO);
                    assert_eq!(action.after, After::Close);
                } else {
                    assert_eq!(action.reply, KILL_OK);
                    assert_eq!(action.after, After::Exit);
                }
            }
            Request::Stop(_) => {
                assert_eq!(action.after, After::Close);
                if !self.config.relaxed {
                    assert!(action.reply.is_empty() && action.close.is_none());
                } else if let Some(owner) = before.owner {
                    assert_eq!(action.reply, STOP_STOPPED);
                    assert_eq!(action.close, Some(owner));
                } else {
                    assert_eq!(action.reply, STOP_NOEXIST);
                    assert_eq!(action.close, None);
                }
            }
        }
    }

    fn check_alive2(&self, a: &Alive2Request, origin: Origin, before: &Before, action: &Action) {
        assert_eq!(action.after, After::Register);
        let reply = Alive2Reply::decode(&action.reply)
            .unwrap_or_else(|| panic!("bad ALIVE2 reply {:02x?}", action.reply));
        assert_eq!(
            matches!(reply, Alive2Reply::Extended { .. }),
            a.highest_version >= EXTENDED_VERSION,
            "ALIVE2 reply width does not follow HighestVersion {}",
            a.highest_version
        );
        let expected = match (a.to_node_info(), before.owner) {
            (Err(_), _) => None,
            (Ok(_), None) => Some(None),
            (Ok(_), Some(owner)) if before.owner_gone => Some(Some(owner)),
            (Ok(_), Some(_)) => None,
        };
        match expected {
            None => {
                assert!(!reply.is_success(), "refused ALIVE2 answered as a success");
                assert!(matches!(action.event, Event::BadName(_) | Event::Duplicate));
                assert_eq!(action.close, None);
                let creation = match reply {
                    Alive2Reply::Extended { creation, .. } => creation,
                    Alive2Reply::Short { creation, .. } => u32::from(creation),
                };
                assert_eq!(creation, ERROR_CREATION);
            }
            Some(replaced) => {
                assert!(reply.is_success(), "ALIVE2 refused: {:?}", action.event);
                assert_eq!(action.close, replaced);
                let reg = self
                    .registry
                    .by_conn(origin.conn)
                    .expect("a successful ALIVE2 registers its connection");
                assert_eq!(reg.info.name.as_bytes(), &a.name[..]);
                assert_eq!(reg.info.port, a.port);
                assert_eq!(reg.info.extra, a.extra);
                assert_eq!(reg.registered_at, self.now);
                match reply {
                    Alive2Reply::Extended { creation, .. } => assert_eq!(creation, reg.creation),
                    Alive2Reply::Short { creation, .. } => {
                        assert_eq!(u32::from(creation), reg.creation % 3 + 1)
                    }
                }
            }
        }
    }

    fn check_names(&self, reply: &[u8]) {
        assert_eq!(reply.get(..4), Some(&SESSION_HEADER_PORT.to_be_bytes()[..]));
        let mut expected = SESSION_HEADER_PORT.to_be_bytes().to_vec();
        for reg in self.registry.newest_first() {
            expected.extend_from_slice(b"name ");
            expected.extend_from_slice(reg.info.name.as_bytes());
            expected.extend_from_slice(format!(" at port {}\n", reg.info.port).as_bytes());
        }
        assert_eq!(reply, expected, "NAMES reply does not list the registry");
        // Line structure, where names cannot fake a line break.
        if self
            .registry
            .newest_first()
            .all(|r| !r.info.name.as_bytes().contains(&b'\n'))
        {
            let text = std::str::from_utf8(&reply[4..]).expect("NAMES reply is UTF-8");
            let mut lines = 0;
            for line in text.split_terminator('\n') {
                let rest = line
                    .strip_prefix("name ")
                    .expect("line starts with 'name '");
                let (_, port) = rest.rsplit_once(" at port ").expect("line has ' at port '");
                port.parse::<u16>().expect("port is a u16");
                lines += 1;
            }
            assert!(text.is_empty() || text.ends_with('\n'));
            assert_eq!(lines, self.registry.len());
        }
    }

    fn check_dump(&self, reply: &[u8]) {
        let mut expected = SESSION_HEADER_PORT.to_be_bytes().to_vec();
        for reg in self.registry.newest_first() {
            expected.extend_from_slice(b"active name     <");
            expected.extend_from_slice(reg.info.name.as_bytes());
            let tail = format!("> at port {}, fd = {}\n\0", reg.info.port, reg.fd);
            expected.extend_from_slice(tail.as_bytes());
        }
        for old in self.registry.old_entries() {
            expected.extend_from_slice(b"old/unused name <");
            expected.extend_from_slice(old.name.as_bytes());
            let tail = format!(">, port = {}, fd = {} \n\0", old.port, old.fd);
            expected.extend_from_slice(tail.as_bytes());
        }
        assert_eq!(reply, expected, "DUMP reply does not list the registry");
    }
}

/// What a request's outcome depends on, captured before dispatch.
#[derive(Debug)]
struct Before {
    /// The live registrations.
    live: usize,
    /// The connection owning the request's name (ALIVE2, STOP), if any.
    owner: Option<ConnId>,
    /// Whether that owner's peer had gone (`owner_gone`).
    owner_gone: bool,
}

impl Before {
    fn capture(request: &Request, registry: &Registry, conns: &BTreeMap<ConnId, Conn>) -> Before {
        let name: Option<&[u8]> = match request {
            Request::Alive2(a) => Some(&a.name),
            Request::Stop(name) => Some(name),
            _ => None,
        };
        let owner = name.and_then(|name| {
            registry
                .newest_first()
                .find(|r| r.info.name.as_bytes() == name)
                .map(|r| r.conn)
        });
        Before {
            live: registry.len(),
            owner,
            owner_gone: owner.is_some_and(|o| conns.get(&o).is_none_or(Conn::peer_gone)),
        }
    }
}

/// Fuzz body for the connection layer: decodes `data` as a [`SessionInput`], runs every
/// step against one [`Session`] checking the invariants after each, then closes every
/// connection and checks that nothing stays registered.
pub fn session_body(data: &[u8]) {
    let input = SessionInput::decode(data);
    let mut session = Session::new(input.setup);
    for op in &input.ops {
        session.step(op);
    }
    session.close_all();
}

#[cfg(test)]
mod tests {
    //! Every body over the committed corpus, then over bounded pseudo-random inputs (random
    //! bytes and mutated seeds); plus scenarios that show the session model reaches the
    //! states it is meant to check.

    use super::*;

    /// A fuzz body.
    type Body = fn(&[u8]);

    /// The fuzz targets, as named under `fuzz/fuzz_targets/` and `fuzz/corpus/`.
    const TARGETS: [(&str, Body); 5] = [
        ("decode_frame", decode_frame_body),
        ("decode_request", decode_request_body),
        ("roundtrip", roundtrip_body),
        ("session", session_body),
        ("state", state_decode_body),
    ];

    /// Iterations of the pseudo-random loop per body.
    const ITERATIONS: usize = 20_000;

    fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| {
                let path = entry.expect("corpus entry").path();
                let bytes = std::fs::read(&path).expect("corpus file");
                (path.display().to_string(), bytes)
            })
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{} has no seeds", dir.display());
        seeds
    }

    /// xorshift64*: a seeded, dependency-free generator for the bounded loop.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }

        /// A session input made of likely steps: local connections, generated requests for
        /// three names, closes, polls, deadlines, timers and ticks.
        fn session(&mut self) -> Vec<u8> {
            let mut out = vec![self.next() as u8];
            out.extend_from_slice(&1_800_000_000u32.to_be_bytes());
            for _ in 0..10 + self.below(50) {
                let conn = if self.below(3) == 0 {
                    self.below(4) as u8
                } else {
                    0
                };
                let defer = u8::from(self.below(4) == 0);
                match self.below(20) {
                    0..=4 => out.push(kind::OPEN | (u8::from(self.below(8) == 0) << 3)),
                    5..=11 => {
                        // ALIVE2 and PORT_PLEASE2 twice as often as the rest, KILL least.
                        let which = [0, 0, 1, 1, 2, 3, 5, 5, 4][self.below(9)];
                        let what = which + 8 * self.below(3) as u8;
                        let split = u8::from(self.below(4) == 0) * self.below(16) as u8;
                        let param = self.next() as u8;
                        out.extend_from_slice(&[
                            kind::FEED_REQUEST | defer << 3 | split << 4,
                            conn,
                            what,
                            param,
                        ]);
                    }
                    12 | 13 => out.extend_from_slice(&[
                        kind::PEER_CLOSE | (defer << 3) | (u8::from(self.below(3) == 0) << 4),
                        conn,
                    ]),
                    14 | 15 => out.extend_from_slice(&[kind::POLL, conn]),
                    16 => out.extend_from_slice(&[kind::DEADLINE, conn]),
                    17 => out.extend_from_slice(&[kind::TIMER, conn]),
                    18 => out.extend_from_slice(&[kind::FEED, conn, 1, self.next() as u8]),
                    _ if self.below(2) == 0 => out.push(kind::TICK | 0x08),
                    _ => out.extend_from_slice(&[kind::TICK, 0, self.next() as u8]),
                }
            }
            out
        }

        /// A few byte-level mutations of `seed`: flip, overwrite, insert, delete, splice.
        fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
            let mut out = seed.to_vec();
            for _ in 0..1 + self.below(4) {
                let at = self.below(out.len() + 1);
                match self.below(6) {
                    0 if at < out.len() => out[at] ^= 1 << self.below(8),
                    1 if at < out.len() => out[at] = self.next() as u8,
                    2 => {
                        let n = 1 + self.below(8);
                        let extra = self.bytes(n);
                        out.splice(at..at, extra);
                    }
                    3 if at < out.len() => {
                        let end = (at + 1 + self.below(8)).min(out.len());
                        out.drain(at..end);
                    }
                    4 => out.truncate(at),
                    _ => {
                        let copy = out.clone();
                        let from = self.below(copy.len() + 1);
                        out.splice(at..at, copy[from..].iter().copied().take(64));
                    }
                }
            }
            out
        }
    }

    #[test]
    fn every_body_passes_its_committed_corpus() {
        for (target, body) in TARGETS {
            for (name, bytes) in corpus(target) {
                eprintln!("{target}: {name}");
                body(&bytes);
            }
        }
    }

    /// The input `make fuzz` stopped on (issue 15): an ALIVE2 with an empty name, no
    /// extra and ignored trailing bytes, whose padded re-encoding is not a prefix of it.
    #[test]
    fn roundtrip_accepts_the_padded_empty_alive2() {
        let input = [
            0x00, 0x10, 0x78, 0x61, 0xce, 0xb2, 0xff, 0xfe, 0xf9, 0x01, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x08, 0x00, 0x04,
        ];
        roundtrip_body(&input);
        let committed = corpus("roundtrip")
            .into_iter()
            .any(|(name, bytes)| name.ends_with("regress-alive2-empty-padded") && bytes == input);
        assert!(
            committed,
            "the regression input is not in fuzz/corpus/roundtrip"
        );
    }

    #[test]
    fn every_body_survives_bounded_pseudo_random_inputs() {
        let mut rng = Rng(0x00E9_3D00_5EED_0001);
        for (target, body) in TARGETS {
            let seeds: Vec<Vec<u8>> = corpus(target).into_iter().map(|(_, b)| b).collect();
            for _ in 0..ITERATIONS {
                let input = match rng.below(3) {
                    0 if target == "session" => rng.session(),
                    0 | 1 => {
                        let len = rng.below(64);
                        rng.bytes(len)
                    }
                    _ => {
                        let seed = &seeds[rng.below(seeds.len())];
                        rng.mutate(seed)
                    }
                };
                body(&input);
            }
        }
    }

    /// The session body over random and mutated inputs reaches every outcome it checks.
    #[test]
    fn pseudo_random_sessions_reach_every_outcome() {
        let mut rng = Rng(0x5E55_1011_0000_0002);
        let seeds: Vec<Vec<u8>> = corpus("session").into_iter().map(|(_, b)| b).collect();
        let mut total = Coverage::default();
        for _ in 0..2_000 {
            let bytes = match rng.below(3) {
                0 => rng.session(),
                1 => {
                    let len = rng.below(256);
                    rng.bytes(len)
                }
                _ => {
                    let seed = &seeds[rng.below(seeds.len())];
                    rng.mutate(seed)
                }
            };
            let input = SessionInput::decode(&bytes);
            let mut session = Session::new(input.setup);
            for op in &input.ops {
                session.step(op);
            }
            session.close_all();
            let c = session.coverage();
            for (sum, n) in [
                (&mut total.silent_closes, c.silent_closes),
                (&mut total.registered, c.registered),
                (&mut total.replaced_dead_owner, c.replaced_dead_owner),
                (&mut total.duplicates, c.duplicates),
                (&mut total.bad_names, c.bad_names),
                (&mut total.lookups_found, c.lookups_found),
                (&mut total.names_cached, c.names_cached),
                (&mut total.names_rendered, c.names_rendered),
                (&mut total.dumps, c.dumps),
                (&mut total.kills_refused, c.kills_refused),
                (&mut total.exits, c.exits),
                (&mut total.stops, c.stops),
                (&mut total.refused, c.refused),
                (&mut total.unregistered_by_close, c.unregistered_by_close),
                (&mut total.deadlines, c.deadlines),
                (&mut total.handovers, c.handovers),
            ] {
                *sum += n;
            }
        }
        eprintln!("{total:?}");
        let fields = format!("{total:?}");
        assert!(
            !fields.contains(": 0,") && !fields.contains(": 0 }"),
            "{fields}"
        );
    }

    #[test]
    fn session_inputs_round_trip_through_their_encoding() {
        let input = SessionInput {
            setup: Setup {
                relaxed: true,
                delay_accept: false,
                delay_write: true,
                names_local: true,
                port_please_local: false,
                threshold: 3,
                start_unix: 1_800_000_000,
            },
            ops: vec![
                Op::Open { local: true },
                Op::Open { local: false },
                Op::Feed {
                    conn: 1,
                    bytes: vec![0x00, 0x01, NAMES_REQ],
                    poll: false,
                },
                Op::Feed {
                    conn: 0,
                    bytes: vec![0xAB; 300],
                    poll: true,
                },
                Op::PeerClose {
                    conn: 7,
                    reset: true,
                    poll: false,
                },
                Op::Poll { conn: 1 },
                Op::Deadline { conn: 2 },
                Op::Timer { conn: 3 },
                Op::Tick { secs: 65_000 },
                Op::HandOver,
            ],
        };
        assert_eq!(SessionInput::decode(&input.encode()), input);
        // Any bytes decode, and a truncated input is a shorter session.
        let bytes = input.encode();
        for end in 0..bytes.len() {
            let _ = SessionInput::decode(&bytes[..end]);
        }
    }

    fn setup(relaxed: bool) -> Setup {
        Setup {
            relaxed,
            delay_accept: false,
            delay_write: false,
            names_local: false,
            port_please_local: false,
            threshold: 0,
            start_unix: 1_800_000_000,
        }
    }

    fn feed(conn: u8, bytes: &[u8]) -> Op {
        Op::Feed {
            conn,
            bytes: bytes.to_vec(),
            poll: true,
        }
    }

    /// An OTP 25 ALIVE2 for `seed1` (as in `fuzz/corpus/decode_frame/otp25-alive2-sname`).
    const ALIVE2_SEED1: &[u8] = &[
        0x00, 0x12, 0x78, 0xA7, 0x81, 0x4D, 0x00, 0x00, 0x06, 0x00, 0x05, 0x00, 0x05, b's', b'e',
        b'e', b'd', b'1', 0x00, 0x00,
    ];

    #[test]
    fn a_registration_lives_exactly_as_long_as_its_connection() {
        let mut s = Session::new(setup(false));
        s.step(&Op::Open { local: true });
        // The ALIVE2 trickles in: the length alone, then the rest.
        s.step(&feed(0, &ALIVE2_SEED1[..1]));
        s.step(&feed(0, &ALIVE2_SEED1[1..]));
        assert_eq!(s.registry().len(), 1);
        // A lookup on another connection finds it, and that connection closes.
        s.step(&Op::Open { local: false });
        s.step(&feed(0, b"\x00\x06zseed1"));
        assert_eq!(s.open_connections(), 1);
        // The deadline does not touch a registration connection; its FIN does.
        s.step(&Op::Deadline { conn: 0 });
        assert_eq!(s.registry().len(), 1);
        s.step(&Op::PeerClose {
            conn: 0,
            reset: false,
            poll: true,
        });
        assert!(s.registry().is_empty());
        assert_eq!(s.registry().old_len(), 1);
    }

    #[test]
    fn a_dead_owner_is_replaced_and_a_live_one_is_not() {
        let mut s = Session::new(setup(false));
        s.step(&Op::Open { local: true });
        s.step(&feed(0, ALIVE2_SEED1));
        // A second node with the same name while the first is alive: refused, but kept.
        s.step(&Op::Open { local: true });
        s.step(&feed(0, ALIVE2_SEED1));
        assert_eq!(s.open_connections(), 2);
        assert_eq!(
            s.registry().by_conn(ConnId(1)).map(|r| r.conn),
            Some(ConnId(1))
        );
        // The first node's FIN arrives but the server has not seen it yet.
        s.step(&Op::PeerClose {
            conn: 1,
            reset: false,
            poll: false,
        });
        s.step(&Op::Open { local: true });
        s.step(&feed(0, ALIVE2_SEED1));
        assert_eq!(
            s.registry().by_conn(ConnId(3)).map(|r| r.conn),
            Some(ConnId(3))
        );
        assert_eq!(s.open_connections(), 2, "the dead owner was closed");
        s.close_all();
    }

    #[test]
    fn stop_closes_the_owner_and_kill_ends_the_daemon() {
        let mut s = Session::new(setup(true));
        s.step(&Op::Open { local: true });
        s.step(&feed(0, ALIVE2_SEED1));
        s.step(&Op::Open { local: true });
        s.step(&feed(0, b"\x00\x06sseed1"));
        assert_eq!(s.open_connections(), 0);
        assert!(s.registry().is_empty());
        s.step(&Op::Open { local: true });
        s.step(&feed(0, ALIVE2_SEED1));
        s.step(&Op::Open { local: true });
        s.step(&feed(0, b"\x00\x01k"));
        assert_eq!(s.coverage().exits, 1);
        assert_eq!(s.open_connections(), 0);
    }

    #[test]
    fn bytes_behind_a_request_end_or_refuse_it() {
        let mut two = ALIVE2_SEED1.to_vec();
        two.extend_from_slice(b"\x00\x01n");
        // In the read that learns the length (here: the first byte, then the rest), they
        // are trailing bytes: closed without a reply, nothing registered.
        let mut s = Session::new(setup(false));
        for split in [two.len(), 1] {
            s.step(&Op::Open { local: true });
            s.step(&feed(0, &two[..split]));
            s.step(&feed(0, &two[split..]));
            assert_eq!(s.open_connections(), 0);
            assert_eq!(s.registry().old_len(), 0);
        }
        // Once the length is known, reads stop at the frame: the node registers, and its
        // registration connection sees the bytes behind at once and ends.
        s.step(&Op::Open { local: true });
        s.step(&feed(0, &two[..2]));
        s.step(&feed(0, &two[2..]));
        assert_eq!(s.open_connections(), 0);
        assert!(s.registry().is_empty());
        assert_eq!(s.registry().old_len(), 1);
    }

    #[test]
    fn delays_postpone_reading_and_writing() {
        let mut s = Session::new(Setup {
            delay_accept: true,
            delay_write: true,
            ..setup(false)
        });
        s.step(&Op::Open { local: true });
        s.step(&feed(0, ALIVE2_SEED1));
        assert!(s.registry().is_empty(), "read before -delay_accept passed");
        s.step(&Op::Timer { conn: 0 });
        assert_eq!(s.registry().len(), 1, "registered while the reply waits");
        // The deadline still applies while the reply waits.
        s.step(&Op::Deadline { conn: 0 });
        assert!(s.registry().is_empty());
    }

    #[test]
    fn generated_requests_are_frames_of_every_kind() {
        let mut tags = HashSet::new();
        for what in 0..=255u8 {
            for param in [0u8, 1, 2, 4, 6, 0x10, 0xFF] {
                let frame = generated_request(what, param);
                let Ok(Status::Complete(payload)) = decode_frame(&frame) else {
                    panic!("generated request {what}/{param} is not a frame");
                };
                tags.insert(payload[0]);
            }
        }
        assert_eq!(tags.len(), 6);
    }
}
