//! Byte-exact requests and replies through the running daemon over loopback (spec §1-§3, §11).
//!
//! Every case is hex in, hex out: a request as the C epmd's clients and nodes put it on the
//! wire, and exactly the bytes the C epmd answers, or a close with no reply at all. Each test
//! starts its own daemon on a free port, so the tests run in parallel. Creation numbers and
//! DUMP's `fd = F` are the only bytes not known in advance; they are checked by range, or
//! masked, and everything around them is compared byte for byte.
//!
//! The helpers at the top are shared with `lifecycle` and `limits`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::daemon::Daemon;
use crate::support::raw::{
    alive2_req, frame, hex, names, names_req, parse_names, parse_port2, port_please,
    port_please_req, register, request, Conn, ALIVE2_X_RESP, IO_TIMEOUT, NODE_TYPE_NORMAL,
};
use crate::support::wait::poll_true;

// ---------------------------------------------------------------------------------------
// Helpers shared with `lifecycle` and `limits`.
// ---------------------------------------------------------------------------------------

/// How long a check that something does *not* happen waits, after a barrier (see
/// [`barrier`]) has made sure the daemon already handled everything that came before.
pub(crate) const QUIET: Duration = Duration::from_millis(100);

/// The refused ALIVE2 reply to a request with HighestVersion >= 6: result 1, creation 99.
pub(crate) const ALIVE2_X_REFUSED: [u8; 6] = [0x76, 0x01, 0x00, 0x00, 0x00, 0x63];

/// The refused ALIVE2 reply to a request with HighestVersion < 6: result 1, creation 99.
pub(crate) const ALIVE2_REFUSED: [u8; 4] = [0x79, 0x01, 0x00, 0x63];

/// Bytes from a hex literal such as `"00 01 6E"` (pairs separated by whitespace).
pub(crate) fn unhex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|pair| {
            u8::from_str_radix(pair, 16).unwrap_or_else(|_| panic!("bad hex pair {pair:?}"))
        })
        .collect()
}

/// A request from a hex literal, checking that its 2-byte length prefix matches the payload,
/// so that a case meant to break one rule does not break the framing by accident.
pub(crate) fn req(text: &str) -> Vec<u8> {
    let bytes = unhex(text);
    let declared = bytes
        .get(..2)
        .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])));
    assert_eq!(
        declared,
        Some(bytes.len().saturating_sub(2)),
        "length prefix of {text:?} does not match its payload"
    );
    bytes
}

/// Panics unless `actual == expected`, showing the first difference and both byte strings
/// (long ones around the difference only).
pub(crate) fn assert_bytes_eq(case: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let at = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    // `at` is at most the shorter length, so both windows start inside their slices.
    fn window(b: &[u8], at: usize) -> &[u8] {
        &b[at.saturating_sub(32)..(at + 32).min(b.len())]
    }
    panic!(
        "{case}: replies differ at byte {at} (expected {} bytes, received {})\n  \
         expected ..{}..\n  received ..{}..\n  expected as text {:?}\n  received as text {:?}",
        expected.len(),
        actual.len(),
        hex(window(expected, at)),
        hex(window(actual, at)),
        String::from_utf8_lossy(window(expected, at)),
        String::from_utf8_lossy(window(actual, at)),
    );
}

/// Sends `request` on a new connection and checks that the daemon answers exactly
/// `expected` and then closes.
pub(crate) fn assert_exchange(port: u16, case: &str, request_bytes: &[u8], expected: &[u8]) {
    let reply = request(port, request_bytes);
    assert_bytes_eq(
        &format!("{case} (sent {})", hex(request_bytes)),
        expected,
        &reply,
    );
}

/// Sends `request` on a new connection and checks that the daemon closes it without sending
/// a single byte.
pub(crate) fn assert_silent_close(port: u16, case: &str, request_bytes: &[u8]) {
    let mut conn = Conn::connect(port);
    // A daemon that refuses a long request may close (and reset) while it is being written.
    let _ = conn.try_write(request_bytes);
    let reply = conn.read_to_eof(IO_TIMEOUT);
    assert!(
        reply.is_empty(),
        "{case}: sent {}, expected a close with no reply, received {}",
        hex(request_bytes),
        hex(&reply)
    );
}

/// A NAMES round trip on a fresh connection. The daemon is one thread that handles readiness
/// in arrival order, so once this answer is in, it has handled every byte and close sent
/// before it on other connections.
pub(crate) fn barrier(port: u16) {
    let reply = names(port);
    assert!(
        reply.len() >= 4,
        "barrier NAMES got a short reply: {}",
        hex(&reply)
    );
}

/// The `(name, port)` lines of NAMES, newest first, after checking the header is `port`.
pub(crate) fn registered(port: u16) -> Vec<(String, u16)> {
    let reply = names(port);
    let (header, entries) = parse_names(&reply);
    assert_eq!(
        header,
        u32::from(port),
        "NAMES header is not the daemon's port: {}",
        hex(&reply)
    );
    entries
}

/// Whether NAMES lists `name`.
pub(crate) fn is_registered(port: u16, name: &str) -> bool {
    registered(port).iter().any(|(n, _)| n == name)
}

/// Waits (bounded) until NAMES no longer lists `name`; panics with the list otherwise.
pub(crate) fn assert_unregistered_soon(port: u16, name: &str, why: &str) {
    assert!(
        poll_true(IO_TIMEOUT, || !is_registered(port, name)),
        "{why}: {name:?} still registered after {IO_TIMEOUT:?}: {:?}",
        registered(port)
    );
}

/// The creation of a successful `ALIVE2_X_RESP` (`76 00 C C C C`); panics on anything else.
pub(crate) fn x_creation(case: &str, reply: &[u8]) -> u32 {
    match reply {
        [ALIVE2_X_RESP, 0, c @ ..] if c.len() == 4 => u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
        _ => panic!(
            "{case}: expected a successful ALIVE2_X_RESP `76 00 C C C C`, received {}",
            hex(reply)
        ),
    }
}

/// Seconds since the Unix epoch, as the daemon's creation numbers count them.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Checks that `conn` is a registration connection (spec §4.6): after a barrier it is still
/// open and silent, and one byte sent on it makes the daemon close it with no reply.
pub(crate) fn assert_registration_connection(port: u16, conn: &mut Conn, case: &str) {
    barrier(port);
    assert!(
        !conn.is_closed_within(QUIET),
        "{case}: the daemon closed the connection after its ALIVE2 reply"
    );
    conn.write(b"x");
    assert!(
        conn.is_closed_within(IO_TIMEOUT),
        "{case}: a byte on the registration connection did not make the daemon close it"
    );
}

/// Sends an ALIVE2 request (given whole, framed) and reads the `reply_len`-byte reply,
/// returning the open connection.
pub(crate) fn send_alive2(port: u16, request_bytes: &[u8], reply_len: usize) -> (Conn, Vec<u8>) {
    let mut conn = Conn::connect(port);
    conn.write(request_bytes);
    let reply = conn.read_exact_timeout(reply_len, IO_TIMEOUT);
    (conn, reply)
}

/// An ALIVE2_REQ payload (without the length) of a normal node over TCP/IPv4 with
/// HighestVersion 6 and LowestVersion 5, the way OTP 25 sends it.
fn otp_alive2_payload(node_port: u16, name: &[u8], extra: &[u8]) -> Vec<u8> {
    alive2_req(node_port, NODE_TYPE_NORMAL, 0, 6, 5, name, extra)[2..].to_vec()
}

/// The 4-byte NAMES/DUMP header for `port`.
fn header(port: u16) -> Vec<u8> {
    u32::from(port).to_be_bytes().to_vec()
}

/// DUMP's `fd = <digits>` with the digits replaced by `F`: the number is the daemon's own
/// descriptor (spec §3.4), the one part of the reply a client cannot predict.
fn mask_fds(reply: &[u8]) -> Vec<u8> {
    const MARK: &[u8] = b"fd = ";
    let mut out = Vec::with_capacity(reply.len());
    let mut i = 0;
    while i < reply.len() {
        if reply[i..].starts_with(MARK) {
            out.extend_from_slice(MARK);
            i += MARK.len();
            let digits = reply[i..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                out.push(b'F');
                i += digits;
            }
        } else {
            out.push(reply[i]);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Framing (spec §1).
// ---------------------------------------------------------------------------------------

#[test]
fn zero_length_frame_is_closed_without_reply() {
    let daemon = Daemon::start(&[]);

    assert_silent_close(daemon.port(), "length 0", &unhex("00 00"));
    assert_silent_close(daemon.port(), "length 0 with bytes", &unhex("00 00 6E"));
}

#[test]
fn payload_of_3057_bytes_is_answered_and_3058_is_closed() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    // NAMES plus 3056 junk bytes: `0B F1 6E 58 58 ...`, the largest request epmd reads.
    let mut largest = vec![0x6E];
    largest.resize(3057, 0x58);
    let largest = frame(&largest);
    assert_eq!(largest[..3], unhex("0B F1 6E"));
    assert_exchange(port, "3057-byte NAMES", &largest, &header(port));

    let mut too_long = vec![0x6E];
    too_long.resize(3058, 0x58);
    let too_long = frame(&too_long);
    assert_eq!(too_long[..3], unhex("0B F2 6E"));
    assert_silent_close(port, "3058-byte NAMES", &too_long);
    assert_silent_close(port, "length FFFF", &unhex("FF FF 6E"));
}

#[test]
fn bytes_inside_the_length_that_a_request_does_not_need_are_ignored() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    assert_exchange(port, "NAMES + junk", &req("00 02 6E 58"), &header(port));

    // An ALIVE2 with junk after the extra field registers; the junk is not part of Extra.
    let mut payload = otp_alive2_payload(0x1770, b"junky", b"");
    payload.extend_from_slice(&unhex("4A 55 4E 4B"));
    let (_reg, reply) = send_alive2(port, &frame(&payload), 6);
    x_creation("ALIVE2 + junk", &reply);
    assert_exchange(
        port,
        "lookup of junky",
        &req("00 06 7A 6A 75 6E 6B 79"),
        &unhex("77 00 17 70 4D 00 00 06 00 05 00 05 6A 75 6E 6B 79 00 00"),
    );
}

#[test]
fn bytes_beyond_the_request_in_the_same_write_close_without_reply() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    assert_silent_close(port, "NAMES + 1 byte", &unhex("00 01 6E 00"));
    assert_silent_close(port, "two pipelined NAMES", &unhex("00 01 6E 00 01 6E"));
    assert_silent_close(
        port,
        "PORT_PLEASE2 + NAMES",
        &unhex("00 04 7A 66 6F 6F 00 01 6E"),
    );
}

#[test]
fn alive2_with_piggybacked_bytes_in_the_same_write_does_not_register() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let mut bytes = frame(&otp_alive2_payload(4000, b"piggy", b""));
    bytes.extend_from_slice(b"hello");
    assert_silent_close(port, "ALIVE2 + `hello`", &bytes);

    // The close came before any registration; a lookup confirms nothing was stored.
    assert_exchange(
        port,
        "lookup of piggy",
        &port_please_req(b"piggy"),
        &unhex("77 01"),
    );
    assert_eq!(registered(port), []);
}

#[test]
fn requests_written_one_byte_at_a_time_are_answered() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    // Each byte is its own write (TCP_NODELAY), and a barrier after each one makes sure the
    // daemon has read it before the next is sent, so it really sees one byte per read.
    let send_slowly = |request_bytes: &[u8]| -> Conn {
        let mut conn = Conn::connect(port);
        let (last, head) = request_bytes.split_last().expect("non-empty request");
        for &byte in head {
            conn.write(&[byte]);
            barrier(port);
            assert!(
                !conn.is_closed_within(Duration::from_millis(1)),
                "closed after a partial request of {}",
                hex(request_bytes)
            );
        }
        conn.write(&[*last]);
        conn
    };

    let mut conn = send_slowly(&req("00 01 6E"));
    assert_bytes_eq("slow NAMES", &header(port), &conn.read_to_eof(IO_TIMEOUT));

    let alive2 = req("00 13 78 17 70 4D 00 00 06 00 05 00 04 73 6C 6F 77 00 02 45 58");
    let mut reg = send_slowly(&alive2);
    let reply = reg.read_exact_timeout(6, IO_TIMEOUT);
    x_creation("slow ALIVE2", &reply);
    assert_eq!(registered(port), [("slow".to_owned(), 6000)]);

    let mut conn = send_slowly(&req("00 05 7A 73 6C 6F 77"));
    assert_bytes_eq(
        "slow PORT_PLEASE2",
        &unhex("77 00 17 70 4D 00 00 06 00 05 00 04 73 6C 6F 77 00 02 45 58"),
        &conn.read_to_eof(IO_TIMEOUT),
    );
}

#[test]
fn unknown_and_obsolete_tags_close_without_reply() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    for (case, bytes) in [
        ("obsolete ALIVE_REQ `a`", "00 01 61"),
        (
            "obsolete ALIVE_REQ `a` with a body",
            "00 06 61 17 70 66 6F 6F",
        ),
        ("obsolete PORT_REQ `p`", "00 04 70 66 6F 6F"),
        ("reply tag `y` as a request", "00 01 79"),
        ("reply tag `v` as a request", "00 01 76"),
        ("reply tag `w` as a request", "00 01 77"),
        ("old ALIVE_OK_RESP `Y`", "00 01 59"),
        ("NUL tag", "00 01 00"),
        ("tag FF", "00 01 FF"),
        ("upper-case `N`", "00 01 4E"),
    ] {
        assert_silent_close(port, case, &req(bytes));
    }
}

// ---------------------------------------------------------------------------------------
// ALIVE2_REQ (spec §3.1, §4.1, §4.3).
// ---------------------------------------------------------------------------------------

#[test]
fn malformed_alive2_closes_without_reply_and_registers_nothing() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    for (case, bytes) in [
        (
            "payload of 13 bytes (Nlen 0, Elen 0)",
            "00 0D 78 17 70 4D 00 00 06 00 05 00 00 00 00",
        ),
        ("payload of 1 byte", "00 01 78"),
        (
            "payload of 12 bytes",
            "00 0C 78 17 70 4D 00 00 06 00 05 00 03 66",
        ),
        (
            "Nlen beyond the data",
            "00 10 78 17 70 4D 00 00 06 00 05 00 09 66 6F 6F 00 00",
        ),
        (
            "name truncated, Elen missing",
            "00 0F 78 17 70 4D 00 00 06 00 05 00 03 66 6F 6F 00",
        ),
        (
            "Elen beyond the data",
            "00 12 78 17 70 4D 00 00 06 00 05 00 03 66 6F 6F 00 05 41 42",
        ),
        (
            "Elen 1 with no extra",
            "00 10 78 17 70 4D 00 00 06 00 05 00 03 66 6F 6F 00 01",
        ),
        (
            "NUL inside the name",
            "00 10 78 17 70 4D 00 00 06 00 05 00 03 66 00 6F 00 00",
        ),
        (
            "NUL ending the name",
            "00 10 78 17 70 4D 00 00 06 00 05 00 03 66 6F 00 00 00",
        ),
        (
            "name of one NUL",
            "00 0E 78 17 70 4D 00 00 06 00 05 00 01 00 00 00",
        ),
    ] {
        assert_silent_close(port, case, &req(bytes));
    }
    assert_eq!(registered(port), []);
}

#[test]
fn alive2_with_invalid_utf8_name_gets_the_error_reply_and_keeps_the_connection() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    for (case, name) in [
        ("overlong NUL C0 80", "C0 80"),
        ("surrogate ED A0 80", "ED A0 80"),
        ("above U+10FFFF", "F4 90 80 80"),
        ("stray continuation byte", "61 80 62"),
        ("truncated sequence", "61 E2 82"),
        ("byte FF", "FF"),
    ] {
        let name = unhex(name);
        for (high, expected) in [(6, &ALIVE2_X_REFUSED[..]), (5, &ALIVE2_REFUSED[..])] {
            let case = format!("{case}, HighestVersion {high}");
            let bytes = alive2_req(4000, NODE_TYPE_NORMAL, 0, high, 5, &name, b"");
            let (mut conn, reply) = send_alive2(port, &bytes, expected.len());
            assert_bytes_eq(&case, expected, &reply);
            assert_registration_connection(port, &mut conn, &case);
        }
    }
    assert_eq!(registered(port), []);
}

#[test]
fn name_of_255_code_points_registers_and_256_gets_the_error_reply() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let ascii_255 = "a".repeat(255);
    let (_a, reply) = register(port, &ascii_255, 1, 6);
    x_creation("255 ASCII characters", &reply);

    let ascii_256 = "b".repeat(256);
    let (conn, reply) = register(port, &ascii_256, 2, 6);
    assert_bytes_eq("256 ASCII characters", &ALIVE2_X_REFUSED, &reply);
    let mut conn = Conn::from(conn);
    assert_registration_connection(port, &mut conn, "256 ASCII characters");

    // 255 four-byte characters are 1020 bytes, the most a name may have; with the largest
    // extra and junk up to the largest payload, the request is still accepted.
    let emoji_255 = "\u{1F600}".repeat(255);
    assert_eq!(emoji_255.len(), 1020);
    let mut payload = otp_alive2_payload(3, emoji_255.as_bytes(), &[0xEE; 1020]);
    payload.resize(3057, 0x58);
    let (_e, reply) = send_alive2(port, &frame(&payload), 6);
    x_creation("255 four-byte characters in a 3057-byte request", &reply);

    // One more character is both 256 code points and 1021 bytes.
    let emoji_256 = format!("{emoji_255}a");
    let (_r, reply) = register(port, &emoji_256, 4, 5);
    assert_bytes_eq("255 four-byte characters + `a`", &ALIVE2_REFUSED, &reply);

    assert_eq!(registered(port), [(emoji_255, 3), (ascii_255, 1)]);
}

#[test]
fn extra_of_1020_bytes_is_stored_and_echoed_and_1021_gets_the_error_reply() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    // Every byte value, NULs included, as Extra.
    let extra: Vec<u8> = (0..1020).map(|i| (i % 256) as u8).collect();
    let (_reg, reply) = send_alive2(
        port,
        &alive2_req(0x1F90, 0x68, 0x01, 6, 5, b"ext", &extra),
        6,
    );
    x_creation("1020-byte extra", &reply);
    let mut expected = unhex("77 00 1F 90 68 01 00 06 00 05 00 03 65 78 74 03 FC");
    expected.extend_from_slice(&extra);
    assert_exchange(port, "lookup of ext", &req("00 04 7A 65 78 74"), &expected);

    let mut too_long = extra.clone();
    too_long.push(0xFF);
    let (mut conn, reply) = send_alive2(
        port,
        &alive2_req(1, NODE_TYPE_NORMAL, 0, 6, 5, b"ext2", &too_long),
        6,
    );
    assert_bytes_eq("1021-byte extra", &ALIVE2_X_REFUSED, &reply);
    assert_registration_connection(port, &mut conn, "1021-byte extra");
    assert_eq!(registered(port), [("ext".to_owned(), 0x1F90)]);
}

#[test]
fn empty_name_registers_when_the_payload_has_14_bytes() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let (_reg, reply) = send_alive2(
        port,
        &req("00 0E 78 17 70 4D 00 00 06 00 05 00 00 00 01 58"),
        6,
    );
    x_creation("empty name, extra `X`", &reply);
    let mut expected = header(port);
    expected.extend_from_slice(b"name  at port 6000\n");
    assert_exchange(port, "NAMES with the empty name", &names_req(), &expected);
}

#[test]
fn alive2_v6_reply_carries_the_time_based_32_bit_creation() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let before = unix_now();
    let (_reg, reply) = send_alive2(
        port,
        &req("00 13 78 94 AD 4D 00 00 06 00 05 00 06 70 72 6F 62 65 31 00 00"),
        6,
    );
    let after = unix_now();
    let creation = u64::from(x_creation("OTP 25 probe1", &reply));
    assert!(
        (before + 1..=after + 1).contains(&creation),
        "creation {creation} of a new name is not Unix time + 1 ({before}..={after} + 1): {}",
        hex(&reply)
    );
}

#[test]
fn alive2_v5_reply_carries_a_16_bit_creation_from_1_to_3() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let (first, reply) = send_alive2(
        port,
        &req("00 12 78 17 70 4D 00 00 05 00 05 00 05 66 69 76 65 31 00 00"),
        4,
    );
    match reply[..] {
        [0x79, 0x00, 0x00, c] if (1..=3).contains(&c) => {}
        _ => panic!(
            "expected `79 00 00 0X` with X in 1..=3, received {}",
            hex(&reply)
        ),
    }
    // The short creation is `cr % 3 + 1` of the slot's counter; the next registration of
    // the same name (a v6 one, which shows the counter) gets that counter + 1.
    drop(first);
    assert_unregistered_soon(port, "five1", "after closing the v5 registration");
    let (_again, reply6) = register(port, "five1", 6000, 6);
    let cr = x_creation("v6 re-registration", &reply6);
    let short = u32::from(reply[3]);
    assert_eq!(
        short,
        (cr - 1) % 3 + 1,
        "v5 creation {short} is not (cr % 3 + 1) for cr = {} (v6 re-registration {})",
        cr - 1,
        hex(&reply6)
    );
}

// ---------------------------------------------------------------------------------------
// PORT_PLEASE2_REQ (spec §3.2).
// ---------------------------------------------------------------------------------------

/// The spec's observed registration: port 6000, type `H`, protocol 0, versions 7 and 6,
/// name `baz`, extra `41 42 00 43`.
const BAZ_ALIVE2: &str = "00 14 78 17 70 48 00 00 07 00 06 00 03 62 61 7A 00 04 41 42 00 43";
/// Its PORT2_RESP, echoing every field (spec §3.2, seen on the C epmd).
const BAZ_PORT2: &str = "77 00 17 70 48 00 00 07 00 06 00 03 62 61 7A 00 04 41 42 00 43";

#[test]
fn port_please2_found_echoes_every_registered_field() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (_reg, reply) = send_alive2(port, &req(BAZ_ALIVE2), 6);
    x_creation("baz", &reply);

    assert_exchange(port, "zbaz", &req("00 04 7A 62 61 7A"), &unhex(BAZ_PORT2));
    assert_exchange(
        port,
        "zbaz with a trailing NUL",
        &req("00 05 7A 62 61 7A 00"),
        &unhex(BAZ_PORT2),
    );
}

#[test]
fn port_please2_not_found_is_77_01() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (_reg, reply) = send_alive2(port, &req(BAZ_ALIVE2), 6);
    x_creation("baz", &reply);

    for (case, bytes) in [
        ("unknown name", "00 04 7A 71 75 78"),
        ("other case", "00 04 7A 42 41 5A"),
        ("prefix", "00 03 7A 62 61"),
        ("longer", "00 05 7A 62 61 7A 7A"),
    ] {
        assert_exchange(port, case, &req(bytes), &unhex("77 01"));
    }
}

#[test]
fn malformed_port_please2_closes_without_reply() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();
    let (_reg, reply) = send_alive2(port, &req(BAZ_ALIVE2), 6);
    x_creation("baz", &reply);

    for (case, bytes) in [
        ("no name", "00 01 7A"),
        ("only a NUL", "00 02 7A 00"),
        ("NUL inside", "00 05 7A 62 00 61 7A"),
        ("junk after a NUL", "00 06 7A 62 61 7A 00 58"),
        ("two trailing NULs", "00 06 7A 62 61 7A 00 00"),
        ("invalid UTF-8", "00 03 7A 62 FF"),
        ("surrogate", "00 04 7A ED A0 80"),
    ] {
        assert_silent_close(port, case, &req(bytes));
    }
}

#[test]
fn name_of_255_code_points_registers_but_cannot_be_looked_up() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    let name_255 = "m".repeat(255);
    let (_a, reply) = register(port, &name_255, 255, 6);
    x_creation("255 code points", &reply);
    let name_254 = "n".repeat(254);
    let (_b, reply) = register(port, &name_254, 254, 6);
    x_creation("254 code points", &reply);

    // The C epmd counts the NUL it appends: 255 + 1 code points is too many to look up.
    let reply = port_please(port, &name_255);
    assert!(
        reply.is_empty(),
        "lookup of a 255-code-point name: expected a close with no reply, received {}",
        hex(&reply)
    );
    let found = parse_port2(&port_please(port, &name_254)).expect("254 code points are found");
    assert_eq!((found.port, found.name), (254, name_254.into_bytes()));
    assert!(is_registered(port, &name_255));
}

// ---------------------------------------------------------------------------------------
// NAMES_REQ and DUMP_REQ (spec §3.3, §3.4).
// ---------------------------------------------------------------------------------------

#[test]
fn names_reply_is_the_port_header_then_lines_newest_first() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    assert_exchange(port, "NAMES with no nodes", &req("00 01 6E"), &header(port));

    let (_foo, r1) = register(port, "foo", 5555, 6);
    let (_bar, r2) = register(port, "bar", 4242, 5);
    let (_utf, r3) = register(port, "n\u{f6}de", 1, 6);
    x_creation("foo", &r1);
    assert_eq!(r2[..3], [0x79, 0x00, 0x00], "bar: {}", hex(&r2));
    x_creation("n\u{f6}de", &r3);

    let mut expected = header(port);
    expected.extend_from_slice(&unhex(
        "6E 61 6D 65 20 6E C3 B6 64 65 20 61 74 20 70 6F 72 74 20 31 0A",
    ));
    expected.extend_from_slice(b"name bar at port 4242\nname foo at port 5555\n");
    assert_exchange(port, "NAMES with three nodes", &req("00 01 6E"), &expected);
}

#[test]
fn names_header_is_the_port_given_in_erl_epmd_port() {
    let daemon = Daemon::builder().port_via_env().start();
    let port = daemon.port();

    assert_exchange(port, "NAMES", &req("00 01 6E"), &header(port));
}

#[test]
fn dump_reply_has_nul_terminated_active_and_old_lines() {
    let daemon = Daemon::start(&[]);
    let port = daemon.port();

    assert_exchange(port, "DUMP with no nodes", &req("00 01 64"), &header(port));

    let (foo, r1) = register(port, "foo", 5555, 6);
    let (_baz, r2) = send_alive2(port, &req(BAZ_ALIVE2), 6);
    x_creation("foo", &r1);
    x_creation("baz", &r2);

    let mut expected = header(port);
    expected.extend_from_slice(
        b"active name     <baz> at port 6000, fd = F\n\0active name     <foo> at port 5555, fd = F\n\0",
    );
    let reply = request(port, &req("00 01 64"));
    assert_bytes_eq("DUMP with baz and foo", &expected, &mask_fds(&reply));

    drop(foo);
    assert_unregistered_soon(port, "foo", "after closing foo's connection");

    let mut expected = header(port);
    expected.extend_from_slice(
        b"active name     <baz> at port 6000, fd = F\n\0old/unused name <foo>, port = 5555, fd = F \n\0",
    );
    let reply = request(port, &req("00 01 64"));
    assert_bytes_eq("DUMP after foo unregistered", &expected, &mask_fds(&reply));
}
