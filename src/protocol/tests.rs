//! Codec unit tests written like the protocol: hex bytes in, hex bytes (or typed values) out,
//! one case per request, reply and malformed input of `epmd-spec.md` §1–§4 and §11.

use super::error::{FrameError, NameError, RequestError};
use super::frame::{decode_frame, encode_frame, read_limit, Status};
use super::node::{NodeInfo, NodeName, NodeType};
use super::request::{Alive2Request, Request};
use super::response::{
    encode_port2, Alive2Reply, Port2Reply, KILL_NO, KILL_OK, STOP_NOEXIST, STOP_STOPPED,
};
use super::text::{push_dump_active_line, push_dump_old_line, push_names_line, push_port_header};

/// Parses `"00 13 78 …"` (whitespace-separated, or run together) into bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {s:?}");
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex {pair:?} in {s:?}"))
        })
        .collect()
}

/// The fixed part of an ALIVE2_REQ payload used by the generated cases: tag `x`, port 5000,
/// type `M`, protocol 0, HighestVersion 6, LowestVersion 5.
const ALIVE2_HEAD: &str = "78 13 88 4D 00 00 06 00 05";

/// An ALIVE2_REQ payload with the given name and extra, lengths taken from the slices.
fn alive2(name: &[u8], extra: &[u8]) -> Vec<u8> {
    let mut p = hex(ALIVE2_HEAD);
    p.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
    p.extend_from_slice(name);
    p.extend_from_slice(&u16::try_from(extra.len()).unwrap().to_be_bytes());
    p.extend_from_slice(extra);
    p
}

/// A PORT_PLEASE2_REQ payload: `z` followed by `name`.
fn port_please(name: &[u8]) -> Vec<u8> {
    let mut p = vec![b'z'];
    p.extend_from_slice(name);
    p
}

fn decode_alive2(payload: &[u8]) -> Alive2Request {
    match Request::decode(payload) {
        Ok(Request::Alive2(a)) => a,
        other => panic!("expected ALIVE2, got {other:?}"),
    }
}

fn name(s: &str) -> NodeName {
    NodeName::new(s.as_bytes()).unwrap()
}

fn encode_alive2_reply(reply: Alive2Reply) -> Vec<u8> {
    let mut out = Vec::new();
    reply.encode(&mut out);
    out
}

fn encode_port2_reply(node: Option<&NodeInfo>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_port2(node, &mut out);
    out
}

/// `"😀"` (U+1F600): four bytes of UTF-8.
const FOUR_BYTE: &str = "\u{1F600}";

// ---------------------------------------------------------------------------------------------
// Framing (§1)
// ---------------------------------------------------------------------------------------------

/// The real ALIVE2_REQ sent by an OTP 25.2.3 node registering `probe1` (§3.1).
const OTP25_ALIVE2: &str = "00 13 78 94 AD 4D 00 00 06 00 05 00 06 70 72 6F 62 65 31 00 00";

#[test]
fn frame_complete_returns_the_payload() {
    for frame in ["00 01 6E", "00 02 6E 58", "00 02 7A 61", OTP25_ALIVE2] {
        let bytes = hex(frame);
        assert_eq!(
            decode_frame(&bytes),
            Ok(Status::Complete(&bytes[2..])),
            "{frame}"
        );
        assert_eq!(read_limit(&bytes), 0, "{frame}");
    }
}

#[test]
fn frame_of_length_zero_is_refused() {
    assert_eq!(decode_frame(&hex("00 00")), Err(FrameError::Empty));
    assert_eq!(decode_frame(&hex("00 00 6E")), Err(FrameError::Empty));
    assert_eq!(read_limit(&hex("00 00")), 0);
}

#[test]
fn frame_of_3057_bytes_is_accepted_and_3058_refused() {
    // 3057 = 0x0BF1: `Length + 2 < INBUF_SIZE (3060)`.
    let mut max = hex("0B F1");
    assert_eq!(decode_frame(&max), Ok(Status::Partial));
    assert_eq!(read_limit(&max), 3057);
    max.resize(2 + 3057, b'n');
    assert_eq!(decode_frame(&max), Ok(Status::Complete(&max[2..])));
    assert_eq!(read_limit(&max), 0);

    // 3058 = 0x0BF2 is refused as soon as the length is known, with or without a payload.
    let mut over = hex("0B F2");
    assert_eq!(decode_frame(&over), Err(FrameError::TooLong(3058)));
    assert_eq!(read_limit(&over), 0);
    over.resize(2 + 3058, b'n');
    assert_eq!(decode_frame(&over), Err(FrameError::TooLong(3058)));
    assert_eq!(
        decode_frame(&hex("FF FF")),
        Err(FrameError::TooLong(0xFFFF))
    );
}

#[test]
fn frame_partial_at_every_prefix() {
    let frame = hex(OTP25_ALIVE2);
    for n in 0..frame.len() {
        let prefix = &frame[..n];
        assert_eq!(
            decode_frame(prefix),
            Ok(Status::Partial),
            "prefix of {n} bytes"
        );
        // Until the length is known a read takes up to 3059 bytes; afterwards only what is missing.
        let limit = if n < 2 { 3059 - n } else { frame.len() - n };
        assert_eq!(read_limit(prefix), limit, "prefix of {n} bytes");
    }
    assert_eq!(decode_frame(&frame), Ok(Status::Complete(&frame[2..])));
}

#[test]
fn frame_with_trailing_bytes_is_refused() {
    let cases: &[(&str, u16, usize)] = &[
        // Pipelined NAMES requests.
        ("00 01 6E 00 01 6E", 1, 4),
        ("00 01 6E 00", 1, 2),
        // ALIVE2 with piggy-backed data in the first segment is not registered (§11.11).
        (
            "00 13 78 94 AD 4D 00 00 06 00 05 00 06 70 72 6F 62 65 31 00 00 68 69",
            19,
            21,
        ),
    ];
    for &(bytes, expected, got) in cases {
        assert_eq!(
            decode_frame(&hex(bytes)),
            Err(FrameError::TrailingBytes { expected, got }),
            "{bytes}"
        );
    }
}

#[test]
fn encode_frame_prepends_a_big_endian_length() {
    let mut out = Vec::new();
    encode_frame(&hex("6E"), &mut out);
    assert_eq!(out, hex("00 01 6E"));
    let mut out = Vec::new();
    encode_frame(&vec![b'n'; 0x0102], &mut out);
    assert_eq!(&out[..2], &hex("01 02")[..]);
    assert_eq!(out.len(), 2 + 0x0102);
}

// ---------------------------------------------------------------------------------------------
// ALIVE2_REQ (§3.1, §4.1)
// ---------------------------------------------------------------------------------------------

#[test]
fn alive2_real_otp25_request() {
    let frame = hex(OTP25_ALIVE2);
    let Ok(Status::Complete(payload)) = decode_frame(&frame) else {
        panic!("frame not complete");
    };
    let req = decode_alive2(payload);
    assert_eq!(
        req,
        Alive2Request {
            port: 0x94AD,
            node_type: NodeType::Normal,
            protocol: 0,
            highest_version: 6,
            lowest_version: 5,
            name: b"probe1".to_vec(),
            extra: Vec::new(),
        }
    );
    assert_eq!(req.port, 38061);
    let info = req.to_node_info().unwrap();
    assert_eq!(info.name.as_str(), "probe1");
    assert_eq!(info.port, 38061);
    assert_eq!(info.extra, b"");
    // And it encodes back to the very same bytes.
    assert_eq!(Request::Alive2(req).to_frame(), frame);
}

#[test]
fn alive2_malformed_payloads_close() {
    let cases: &[(&str, &str, RequestError)] = &[
        ("tag only", "78", RequestError::Alive2TooShort),
        (
            "fixed fields cut",
            "78 13 88 4D 00 00 06",
            RequestError::Alive2TooShort,
        ),
        (
            "empty name and empty extra is only 13 bytes",
            "78 13 88 4D 00 00 06 00 05 00 00 00 00",
            RequestError::Alive2TooShort,
        ),
        (
            "12 bytes: Elen cut",
            "78 13 88 4D 00 00 06 00 05 00 00 00",
            RequestError::Alive2TooShort,
        ),
        (
            "Nlen 3 with 2 name bytes",
            "78 13 88 4D 00 00 06 00 05 00 03 61 62",
            RequestError::Alive2TooShort,
        ),
        (
            "Nlen 6 beyond the data",
            "78 13 88 4D 00 00 06 00 05 00 06 61 62 63",
            RequestError::NameBeyondData,
        ),
        (
            "name fits but Elen is missing",
            "78 13 88 4D 00 00 06 00 05 00 03 61 62 63",
            RequestError::NameBeyondData,
        ),
        (
            "name fits but Elen is cut",
            "78 13 88 4D 00 00 06 00 05 00 03 61 62 63 00",
            RequestError::NameBeyondData,
        ),
        (
            "Nlen 0xFFFF",
            "78 13 88 4D 00 00 06 00 05 FF FF 61 62 63 00 00",
            RequestError::NameBeyondData,
        ),
        (
            "Elen 1 with no extra",
            "78 13 88 4D 00 00 06 00 05 00 03 61 62 63 00 01",
            RequestError::ExtraBeyondData,
        ),
        (
            "Elen 4 with 3 extra bytes",
            "78 13 88 4D 00 00 06 00 05 00 03 61 62 63 00 04 41 42 43",
            RequestError::ExtraBeyondData,
        ),
        (
            "Elen 0xFFFF",
            "78 13 88 4D 00 00 06 00 05 00 01 61 FF FF 41",
            RequestError::ExtraBeyondData,
        ),
        (
            "NUL inside the name",
            "78 13 88 4D 00 00 06 00 05 00 07 66 6F 6F 00 62 61 72 00 00",
            RequestError::NulInName,
        ),
        (
            "NUL at the end of the name",
            "78 13 88 4D 00 00 06 00 05 00 07 66 6F 6F 62 61 72 00 00 00",
            RequestError::NulInName,
        ),
        (
            "name is a single NUL",
            "78 13 88 4D 00 00 06 00 05 00 01 00 00 00",
            RequestError::NulInName,
        ),
    ];
    for &(what, payload, err) in cases {
        assert_eq!(
            Request::decode(&hex(payload)),
            Err(err),
            "{what}: {payload}"
        );
    }
}

#[test]
fn alive2_14_bytes_with_empty_name_is_accepted() {
    // Empty name + one extra byte: 14 bytes, the smallest packet that passes check 2.
    let req = decode_alive2(&hex("78 13 88 4D 00 00 06 00 05 00 00 00 01 41"));
    assert_eq!(req.name, b"");
    assert_eq!(req.extra, b"A");
    assert_eq!(req.to_node_info().unwrap().name.as_str(), "");

    // Empty name + empty extra + one junk byte is 14 bytes too.
    let req = decode_alive2(&hex("78 13 88 4D 00 00 06 00 05 00 00 00 00 58"));
    assert_eq!(req.name, b"");
    assert_eq!(req.extra, b"");
    assert!(req.to_node_info().is_ok());
}

#[test]
fn alive2_extra_may_hold_nuls_and_junk_after_it_is_ignored() {
    let req = decode_alive2(&hex(
        "78 13 88 4D 00 00 06 00 05 00 03 62 61 7A 00 04 41 42 00 43 4A 55 4E 4B",
    ));
    assert_eq!(req.name, b"baz");
    assert_eq!(req.extra, hex("41 42 00 43"));
    let info = req.to_node_info().unwrap();
    assert_eq!(info.extra, hex("41 42 00 43"));
}

#[test]
fn alive2_invalid_utf8_decodes_then_gets_an_error_reply() {
    let cases: &[(&str, &str)] = &[
        ("stray continuation byte", "80"),
        ("overlong NUL", "C0 80"),
        ("surrogate D800", "ED A0 80"),
        ("above U+10FFFF", "F4 90 80 80"),
        ("truncated sequence", "66 6F 6F E2 82"),
        ("FF", "FF"),
    ];
    for &(what, name_bytes) in cases {
        let req = decode_alive2(&alive2(&hex(name_bytes), b""));
        assert_eq!(req.name, hex(name_bytes), "{what}");
        assert_eq!(req.to_node_info(), Err(NameError::NotUtf8), "{what}");
    }
}

#[test]
fn alive2_name_length_limits() {
    // 255 ASCII code points are accepted; 256 get an error reply.
    let ok = decode_alive2(&alive2(&[b'a'; 255], b""));
    assert_eq!(ok.to_node_info().unwrap().name.as_str().len(), 255);
    let too_many = decode_alive2(&alive2(&[b'a'; 256], b""));
    assert_eq!(too_many.to_node_info(), Err(NameError::TooManyChars));

    // 255 four-byte code points (1020 bytes, MAXSYMLEN) are accepted.
    let max = FOUR_BYTE.repeat(255);
    assert_eq!(max.len(), 1020);
    let ok = decode_alive2(&alive2(max.as_bytes(), b""));
    assert_eq!(ok.to_node_info().unwrap().name.as_str(), max);

    // 1021 bytes are refused by length first, even though the code point count would pass.
    let mut long = max.clone().into_bytes();
    long.push(b'a');
    let req = decode_alive2(&alive2(&long, b""));
    assert_eq!(req.to_node_info(), Err(NameError::TooLong));

    // 254 four-byte code points + 5 ASCII bytes: 1021 bytes, 259 code points: still TooLong.
    let mut long = FOUR_BYTE.repeat(254).into_bytes();
    long.extend_from_slice(b"abcde");
    assert_eq!(long.len(), 1021);
    let req = decode_alive2(&alive2(&long, b""));
    assert_eq!(req.to_node_info(), Err(NameError::TooLong));
}

#[test]
fn alive2_extra_length_limits() {
    let ok = decode_alive2(&alive2(b"foo", &[0xAB; 1020]));
    assert_eq!(ok.to_node_info().unwrap().extra, vec![0xAB; 1020]);
    let too_long = decode_alive2(&alive2(b"foo", &[0xAB; 1021]));
    assert_eq!(too_long.extra.len(), 1021);
    assert_eq!(too_long.to_node_info(), Err(NameError::ExtraTooLong));
}

#[test]
fn alive2_node_type_and_versions_are_kept_unvalidated() {
    // ei's 'h' (104), protocol 7, HighestVersion 0xFFFF, LowestVersion 0.
    let req = decode_alive2(&hex("78 00 00 68 07 FF FF 00 00 00 01 65 00 00"));
    assert_eq!(req.node_type, NodeType::Other(104));
    assert_eq!(req.port, 0);
    assert_eq!(req.protocol, 7);
    assert_eq!(req.highest_version, 0xFFFF);
    assert_eq!(req.lowest_version, 0);
    let info = req.to_node_info().unwrap();
    assert_eq!(info.node_type, NodeType::Other(104));
    // PORT2_RESP echoes 0x68 back.
    assert_eq!(
        encode_port2_reply(Some(&info)),
        hex("77 00 00 00 68 07 FF FF 00 00 00 01 65 00 00")
    );

    assert_eq!(
        decode_alive2(&hex("78 00 00 48 00 00 06 00 05 00 01 65 00 00")).node_type,
        NodeType::Hidden
    );
}

// ---------------------------------------------------------------------------------------------
// ALIVE2 replies (§3.1, §4.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn alive2_replies_are_byte_exact() {
    let cases: &[(u16, Result<u32, ()>, &str)] = &[
        // HighestVersion ≥ 6: ALIVE2_X_RESP with the 32-bit counter.
        (6, Ok(0x6B07_E0C9), "76 00 6B 07 E0 C9"),
        (7, Ok(4), "76 00 00 00 00 04"),
        (0xFFFF, Ok(u32::MAX), "76 00 FF FF FF FF"),
        (6, Err(()), "76 01 00 00 00 63"),
        // HighestVersion < 6: ALIVE2_RESP with cr % 3 + 1. 0x6B07E0C9 % 3 == 2.
        (5, Ok(0x6B07_E0C9), "79 00 00 03"),
        (5, Ok(4), "79 00 00 02"),
        (5, Ok(5), "79 00 00 03"),
        (5, Ok(6), "79 00 00 01"),
        (0, Ok(u32::MAX), "79 00 00 01"),
        (5, Err(()), "79 01 00 63"),
        (0, Err(()), "79 01 00 63"),
    ];
    for &(version, outcome, wire) in cases {
        let reply = Alive2Reply::new(version, outcome);
        assert_eq!(
            encode_alive2_reply(reply),
            hex(wire),
            "v{version} {outcome:?}"
        );
        assert_eq!(reply.is_success(), outcome.is_ok());
        assert_eq!(Alive2Reply::decode(&hex(wire)), Some(reply), "{wire}");
    }
}

#[test]
fn alive2_reply_decode_rejects_garbage() {
    for wire in [
        "",
        "76",
        "76 00 6B 07 E0",
        "76 00 6B 07 E0 C9 00",
        "79 00 00",
        "79 00 00 03 00",
        "77 01",
        "78 00 00 03",
        "4F 4B",
    ] {
        assert_eq!(Alive2Reply::decode(&hex(wire)), None, "{wire:?}");
    }
    assert_eq!(
        Alive2Reply::decode(&hex("76 00 6B 07 E0 C9")),
        Some(Alive2Reply::Extended {
            result: 0,
            creation: 0x6B07_E0C9
        })
    );
    assert_eq!(
        Alive2Reply::decode(&hex("79 01 00 63")),
        Some(Alive2Reply::Short {
            result: 1,
            creation: 99
        })
    );
}

// ---------------------------------------------------------------------------------------------
// PORT_PLEASE2_REQ and PORT2_RESP (§3.2)
// ---------------------------------------------------------------------------------------------

fn baz() -> NodeInfo {
    NodeInfo {
        port: 6000,
        node_type: NodeType::Hidden,
        protocol: 0,
        highest_version: 7,
        lowest_version: 6,
        name: name("baz"),
        extra: b"AB\0C".to_vec(),
    }
}

#[test]
fn port2_found_reply_is_byte_exact() {
    let wire = hex("77 00 17 70 48 00 00 07 00 06 00 03 62 61 7A 00 04 41 42 00 43");
    assert_eq!(encode_port2_reply(Some(&baz())), wire);
    assert_eq!(Port2Reply::decode(&wire), Some(Port2Reply::Found(baz())));
}

#[test]
fn port2_found_reply_keeps_elen_when_extra_is_empty() {
    let info = NodeInfo {
        extra: Vec::new(),
        node_type: NodeType::Normal,
        ..baz()
    };
    let wire = hex("77 00 17 70 4D 00 00 07 00 06 00 03 62 61 7A 00 00");
    assert_eq!(encode_port2_reply(Some(&info)), wire);
    assert_eq!(Port2Reply::decode(&wire), Some(Port2Reply::Found(info)));
}

#[test]
fn port2_not_found_reply_is_two_bytes() {
    assert_eq!(encode_port2_reply(None), hex("77 01"));
    assert_eq!(
        Port2Reply::decode(&hex("77 01")),
        Some(Port2Reply::NotFound(1))
    );
}

#[test]
fn port2_reply_decode_rejects_garbage() {
    for wire in [
        "",
        "77",
        "76 01",
        "77 01 00",
        "77 00",
        "77 00 17 70 48 00 00 07 00 06 00 03 62 61 7A",
        "77 00 17 70 48 00 00 07 00 06 00 03 62 61 7A 00 04 41 42 00",
        "77 00 17 70 48 00 00 07 00 06 00 03 62 61 7A 00 04 41 42 00 43 00",
        // A name that breaks the registration rules (NUL, invalid UTF-8).
        "77 00 17 70 48 00 00 07 00 06 00 03 62 00 7A 00 00",
        "77 00 17 70 48 00 00 07 00 06 00 01 FF 00 00",
    ] {
        assert_eq!(Port2Reply::decode(&hex(wire)), None, "{wire:?}");
    }
}

#[test]
fn port2_reply_round_trips() {
    let infos = [
        baz(),
        NodeInfo {
            name: name(""),
            extra: Vec::new(),
            ..baz()
        },
        NodeInfo {
            name: NodeName::new(FOUR_BYTE.repeat(255).as_bytes()).unwrap(),
            extra: vec![0; 1020],
            node_type: NodeType::Other(104),
            ..baz()
        },
    ];
    for info in infos {
        let wire = encode_port2_reply(Some(&info));
        assert_eq!(Port2Reply::decode(&wire), Some(Port2Reply::Found(info)));
    }
}

#[test]
fn port_please2_valid_requests() {
    let cases: &[(&str, &str)] = &[
        ("7A 62 61 7A", "baz"),
        // One trailing NUL is dropped: `zbaz` and `zbaz\0` are the same request.
        ("7A 62 61 7A 00", "baz"),
        ("7A 61", "a"),
        // UTF-8 passes through; spaces and '@' are not checked.
        ("7A C3 A9", "\u{e9}"),
        ("7A 61 20 62 40 63", "a b@c"),
    ];
    for &(payload, expected) in cases {
        assert_eq!(
            Request::decode(&hex(payload)),
            Ok(Request::PortPlease2(name(expected))),
            "{payload}"
        );
    }
}

#[test]
fn port_please2_malformed_requests_close() {
    let cases: &[(&str, &str, RequestError)] = &[
        ("tag only", "7A", RequestError::MissingName),
        ("only a NUL", "7A 00", RequestError::MissingName),
        ("NUL inside", "7A 62 00 7A", RequestError::NulInName),
        (
            "two trailing NULs",
            "7A 62 61 7A 00 00",
            RequestError::NulInName,
        ),
        ("leading NUL", "7A 00 62", RequestError::NulInName),
        ("invalid UTF-8", "7A FF", RequestError::NameNotUtf8),
        ("surrogate", "7A ED A0 80", RequestError::NameNotUtf8),
        ("truncated", "7A 62 E2 82 00", RequestError::NameNotUtf8),
    ];
    for &(what, payload, err) in cases {
        assert_eq!(
            Request::decode(&hex(payload)),
            Err(err),
            "{what}: {payload}"
        );
    }
}

#[test]
fn port_please2_is_limited_to_254_code_points() {
    // The C epmd counts the NUL it appended: 254 code points pass, 255 close (§11.7).
    for (len, ok) in [(254, true), (255, false), (256, false)] {
        let ascii = vec![b'a'; len];
        let four = FOUR_BYTE.repeat(len);
        for bytes in [&ascii[..], four.as_bytes()] {
            let got = Request::decode(&port_please(bytes));
            if ok {
                assert_eq!(got, Ok(Request::PortPlease2(NodeName::new(bytes).unwrap())));
            } else {
                assert_eq!(got, Err(RequestError::NameTooLong), "{len} code points");
            }
            // A trailing NUL does not change the count.
            let mut with_nul = bytes.to_vec();
            with_nul.push(0);
            assert_eq!(Request::decode(&port_please(&with_nul)), got);
        }
    }
    // A name of 255 code points registers but cannot be looked up.
    let registered = decode_alive2(&alive2(&[b'a'; 255], b"")).to_node_info();
    assert!(registered.is_ok());
}

// ---------------------------------------------------------------------------------------------
// NAMES, DUMP, KILL, STOP (§3.3–§3.6)
// ---------------------------------------------------------------------------------------------

#[test]
fn names_dump_kill_ignore_extra_payload_bytes() {
    let cases: &[(&str, Request)] = &[
        ("00 01 6E", Request::Names),
        ("00 02 6E 58", Request::Names),
        ("00 04 6E 00 00 00", Request::Names),
        ("00 01 64", Request::Dump),
        ("00 03 64 FF 00", Request::Dump),
        ("00 01 6B", Request::Kill),
        ("00 02 6B 6B", Request::Kill),
    ];
    for (frame, expected) in cases {
        let bytes = hex(frame);
        let Ok(Status::Complete(payload)) = decode_frame(&bytes) else {
            panic!("{frame}: frame not complete");
        };
        assert_eq!(Request::decode(payload).as_ref(), Ok(expected), "{frame}");
    }
}

#[test]
fn stop_name_is_an_unchecked_c_string() {
    let cases: &[(&str, &str)] = &[
        ("73 66 6F 6F", "66 6F 6F"),
        // No UTF-8 check.
        ("73 FF FE", "FF FE"),
        // Cut at the first NUL.
        ("73 66 6F 6F 00", "66 6F 6F"),
        ("73 66 6F 6F 00 62 61 72", "66 6F 6F"),
        // `s\0` is the empty name (a lookup that finds nothing), not a missing name.
        ("73 00", ""),
        ("73 00 66 6F 6F", ""),
    ];
    for &(payload, expected) in cases {
        assert_eq!(
            Request::decode(&hex(payload)),
            Ok(Request::Stop(hex(expected))),
            "{payload}"
        );
    }
    // No length check either.
    let mut long = vec![b's'];
    long.extend_from_slice(&[b'a'; 2000]);
    assert_eq!(Request::decode(&long), Ok(Request::Stop(vec![b'a'; 2000])));
}

#[test]
fn stop_tag_only_closes() {
    assert_eq!(Request::decode(&hex("73")), Err(RequestError::MissingName));
}

#[test]
fn kill_and_stop_replies_are_byte_exact() {
    let cases: &[(&[u8], &str)] = &[
        (KILL_OK, "4F 4B"),
        (KILL_NO, "4E 4F"),
        (STOP_STOPPED, "53 54 4F 50 50 45 44"),
        (STOP_NOEXIST, "4E 4F 45 58 49 53 54 53 54 4F 50 50 45 44"),
    ];
    for &(constant, wire) in cases {
        assert_eq!(constant, &hex(wire)[..], "{wire}");
    }
    assert_eq!(STOP_NOEXIST, b"NOEXISTSTOPPED");
    assert_eq!(STOP_NOEXIST.len(), 14);
    // Clients such as `epmd -stop` read 7 bytes: both forms start like this.
    assert_eq!(&STOP_NOEXIST[..7], b"NOEXIST");
}

// ---------------------------------------------------------------------------------------------
// Unknown and obsolete tags (§2)
// ---------------------------------------------------------------------------------------------

#[test]
fn unknown_and_obsolete_tags_close() {
    let cases: &[(&str, u8)] = &[
        // Obsolete ALIVE_REQ, PORT_REQ, ALIVE_OK_RESP.
        ("61 00 00", 97),
        ("70 62 61 7A", 112),
        ("59", 89),
        ("00", 0),
        ("FF", 255),
        // Reply tags are not requests.
        ("76 00 00 00 00 04", 118),
        ("77 01", 119),
        ("79 00 00 01", 121),
        // Upper-case versions of valid tags.
        ("4E", 78),
        ("58 00 00", 88),
    ];
    for &(payload, tag) in cases {
        assert_eq!(
            Request::decode(&hex(payload)),
            Err(RequestError::UnknownTag(tag)),
            "{payload}"
        );
    }
    // Every tag other than x z n d k s is unknown.
    for tag in 0..=255u8 {
        if !b"xzndks".contains(&tag) {
            assert_eq!(
                Request::decode(&[tag, 0x61, 0x62]),
                Err(RequestError::UnknownTag(tag))
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NAMES and DUMP text (§3.3, §3.4, §11.5)
// ---------------------------------------------------------------------------------------------

#[test]
fn names_reply_is_byte_exact() {
    let mut out = Vec::new();
    push_port_header(4369, &mut out);
    assert_eq!(out, hex("00 00 11 11"));
    push_names_line(b"baz", 6000, &mut out);
    push_names_line("\u{e9}".as_bytes(), 0, &mut out);
    push_names_line(b"", 65535, &mut out);
    let mut expected = hex("00 00 11 11");
    expected.extend_from_slice(b"name baz at port 6000\n");
    expected.extend_from_slice(&hex(
        "6E 61 6D 65 20 C3 A9 20 61 74 20 70 6F 72 74 20 30 0A",
    ));
    expected.extend_from_slice(b"name  at port 65535\n");
    assert_eq!(out, expected);
}

#[test]
fn names_header_is_a_u32_port() {
    let cases: &[(u32, &str)] = &[
        (4369, "00 00 11 11"),
        (14369, "00 00 38 21"),
        (0, "00 00 00 00"),
        (70000, "00 01 11 70"),
        (u32::MAX, "FF FF FF FF"),
    ];
    for &(port, wire) in cases {
        let mut out = Vec::new();
        push_port_header(port, &mut out);
        assert_eq!(out, hex(wire), "{port}");
    }
}

#[test]
fn dump_lines_are_byte_exact() {
    let mut out = Vec::new();
    push_dump_active_line(b"baz", 6000, 7, &mut out);
    assert_eq!(out, b"active name     <baz> at port 6000, fd = 7\n\0");
    let mut out = Vec::new();
    push_dump_old_line(b"foo", 5555, 5, &mut out);
    assert_eq!(out, b"old/unused name <foo>, port = 5555, fd = 5 \n\0");

    // The observed reply, header included.
    let mut out = Vec::new();
    push_port_header(4369, &mut out);
    push_dump_active_line(b"baz", 6000, 7, &mut out);
    push_dump_old_line(b"foo", 5555, 5, &mut out);
    let mut expected = hex("00 00 11 11");
    expected.extend_from_slice(
        b"active name     <baz> at port 6000, fd = 7\n\x00old/unused name <foo>, port = 5555, fd = 5 \n\x00",
    );
    assert_eq!(out, expected);
}

#[test]
fn dump_line_ends_in_hex() {
    // `\n\0` after active lines, ` \n\0` after old ones.
    let mut out = Vec::new();
    push_dump_active_line(b"a", 1, 2, &mut out);
    assert_eq!(out.last_chunk::<3>(), Some(&[b'2', 0x0A, 0x00]));
    let mut out = Vec::new();
    push_dump_old_line(b"a", 1, 2, &mut out);
    assert_eq!(out.last_chunk::<4>(), Some(&[b'2', 0x20, 0x0A, 0x00]));
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

#[test]
fn requests_round_trip() {
    let requests = vec![
        decode_alive2(&hex(&OTP25_ALIVE2[6..])),
        Alive2Request {
            port: 0,
            node_type: NodeType::Other(104),
            protocol: 0xFF,
            highest_version: 5,
            lowest_version: 0xFFFF,
            name: Vec::new(),
            extra: b"A".to_vec(),
        },
        Alive2Request {
            port: 65535,
            node_type: NodeType::Hidden,
            protocol: 0,
            highest_version: 6,
            lowest_version: 6,
            // Invalid UTF-8 and an over-long extra still travel (they are refused later).
            name: hex("FF FE"),
            extra: vec![0; 1021],
        },
        Alive2Request {
            port: 4242,
            node_type: NodeType::Normal,
            protocol: 0,
            highest_version: 6,
            lowest_version: 5,
            name: FOUR_BYTE.repeat(255).into_bytes(),
            extra: b"AB\0C".to_vec(),
        },
    ]
    .into_iter()
    .map(Request::Alive2)
    .chain([
        Request::PortPlease2(name("baz")),
        Request::PortPlease2(name("a b@c")),
        Request::PortPlease2(NodeName::new(FOUR_BYTE.repeat(254).as_bytes()).unwrap()),
        Request::Names,
        Request::Dump,
        Request::Kill,
        Request::Stop(b"foo".to_vec()),
        Request::Stop(hex("FF FE")),
        Request::Stop(Vec::new()),
    ]);
    for req in requests {
        let mut payload = Vec::new();
        req.encode_payload(&mut payload);
        assert_eq!(
            Request::decode(&payload).as_ref(),
            Ok(&req),
            "{payload:02X?}"
        );

        let frame = req.to_frame();
        assert_eq!(decode_frame(&frame), Ok(Status::Complete(&payload[..])));
    }
}

#[test]
fn requests_encode_byte_exact() {
    let cases: &[(Request, &str)] = &[
        (Request::Names, "00 01 6E"),
        (Request::Dump, "00 01 64"),
        (Request::Kill, "00 01 6B"),
        (Request::PortPlease2(name("baz")), "00 04 7A 62 61 7A"),
        (Request::Stop(b"foo".to_vec()), "00 04 73 66 6F 6F"),
        (Request::Stop(Vec::new()), "00 02 73 00"),
    ];
    for (req, wire) in cases {
        assert_eq!(req.to_frame(), hex(wire), "{req:?}");
    }
}
