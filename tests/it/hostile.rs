//! Hostile input (issue 6, item 2): a table of malformed and abusive requests sent to a
//! daemon that holds two registrations, each row with its documented outcome (a silent close
//! or exact reply bytes) and the admin counter it must move.
//!
//! Every boundary of the spec (§1 framing, §3 requests, §4.1 name rules) has a row, and so
//! do seeded random garbage, the banners that scanners send to any open port (HTTP, a TLS
//! ClientHello, SSH), valid requests split at every byte offset, pipelined requests, and data
//! on registration connections. After the table the two registrations are untouched, the
//! daemon still answers, and `admin stats` shows exactly the sums the table predicts:
//! `malformed_requests`, `non_local_refusals` (none: every peer here is local; the
//! non-local path is in `netns`), every `requests.*` key, and `accepted`.
//!
//! The helpers at the top (an admin socket in a temp dir, `admin stats --json`, the
//! no-panic check) are shared with `exhaustion` and `netns`.

use std::collections::BTreeMap;
use std::fs;
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::time::Duration;

use epmd_rs::admin::StatsView;

use crate::support::c_epmd::run_command;
use crate::support::daemon::{Daemon, DaemonBuilder, BIN};
use crate::support::raw::{alive2_req, frame, hex, names_req, parse_names, Conn, IO_TIMEOUT};
use crate::support::tmp;
use crate::support::wait::poll_true;
use crate::wire::{assert_bytes_eq, req, unhex, QUIET};

// ---------------------------------------------------------------------------------------
// Shared with `exhaustion` and `netns`.
// ---------------------------------------------------------------------------------------

/// How long one `epmd-rs admin` command may run.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

/// A fresh directory under the system temp dir (short: a Unix socket path is limited to 108
/// bytes) holding the daemon's admin socket `a.sock`; removed on drop.
#[derive(Debug)]
pub(crate) struct AdminSocket {
    /// The directory.
    dir: PathBuf,
}

impl AdminSocket {
    /// Creates `<tmp>/epmd-rs-hx-<pid>-<n>`.
    pub(crate) fn new() -> AdminSocket {
        let dir = std::env::temp_dir().join(format!(
            "epmd-rs-hx-{}-{}",
            std::process::id(),
            tmp::unique_id()
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        AdminSocket { dir }
    }

    /// `<dir>/a.sock`.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.join("a.sock")
    }

    /// Starts `builder` with `--admin-socket <path>` and waits until the admin socket
    /// answers.
    pub(crate) fn start(&self, builder: DaemonBuilder) -> Daemon {
        let daemon = builder.arg("--admin-socket").arg(self.path()).start();
        self.wait_ready();
        daemon
    }

    /// Waits (bounded) until something accepts connections on the admin socket.
    pub(crate) fn wait_ready(&self) {
        let path = self.path();
        assert!(
            poll_true(Duration::from_secs(10), || {
                std::os::unix::net::UnixStream::connect(&path).is_ok()
            }),
            "admin socket {} not accepting within 10 s",
            path.display()
        );
    }

    /// `epmd-rs admin --socket <path> stats --json`, parsed.
    pub(crate) fn stats(&self) -> StatsView {
        admin_stats(&self.path())
    }
}

impl Drop for AdminSocket {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `epmd-rs admin --socket <socket> stats --json`, parsed with the library's type.
pub(crate) fn admin_stats(socket: &Path) -> StatsView {
    let socket = socket.to_str().expect("UTF-8 socket path");
    let out = run_command(
        Path::new(BIN),
        &["admin", "--socket", socket, "stats", "--json"],
        ADMIN_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "admin stats failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        out.stdout_text(),
        out.stderr_text()
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("admin stats --json: {e}: {}", out.stdout_text()))
}

/// `requests[key]` of a stats view (0 when absent).
pub(crate) fn request_count(stats: &StatsView, key: &str) -> u64 {
    stats.requests.get(key).copied().unwrap_or(0)
}

/// `connections[phase]` of a stats view (0 when absent).
pub(crate) fn connection_count(stats: &StatsView, phase: &str) -> u64 {
    stats.connections.get(phase).copied().unwrap_or(0)
}

/// Panics if the daemon's stderr shows a panic: every panic is a bug (issue 6, item 6).
pub(crate) fn assert_no_panic(daemon: &Daemon) {
    let stderr = daemon.stderr_text();
    assert!(
        !stderr.contains("panicked"),
        "the daemon panicked:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// The table.
// ---------------------------------------------------------------------------------------

/// How a row's bytes are sent, each on a fresh connection.
#[derive(Clone, Copy, Debug)]
enum How {
    /// One write.
    OneWrite,
    /// One connection per split point `k` in `1..len`: `bytes[..k]`, a barrier (so the
    /// daemon has read the first part on its own), then `bytes[k..]`.
    EveryOffset,
    /// One write per byte.
    ByteByByte,
    /// `bytes[..k]`, a barrier, then `bytes[k..]` (the second write may fail once the
    /// daemon has closed).
    TwoWrites(usize),
    /// One write, then `shutdown(SHUT_WR)`: the daemon sees EOF.
    ThenEof,
    /// First register the given name on the connection (a success reply is required), then
    /// write the bytes (or half-close when they are empty): the registration must end.
    OnRegistration(&'static str),
}

/// What the daemon must do.
#[derive(Clone, Debug)]
enum Expect {
    /// Close without sending a byte.
    SilentClose,
    /// Send exactly these bytes, then close.
    Reply(Vec<u8>),
    /// Send exactly this ALIVE2 error reply and keep the connection open as a registration
    /// connection (spec §4.2); a byte sent on it then closes it.
    Refused(Vec<u8>),
    /// Register `name`: a success reply (v6 `76 00 C32`, v5 `79 00 C16`), the name listed by
    /// NAMES while the connection lives, and gone once the test closes it.
    Registers {
        /// The node name.
        name: Vec<u8>,
        /// HighestVersion >= 6.
        v6: bool,
    },
    /// A DUMP reply: the header, both fixture nodes as active lines, `\n\0` line ends.
    Dump,
}

/// The counter a row moves, once per connection it opens.
#[derive(Clone, Copy, Debug)]
enum Counter {
    /// `malformed_requests`.
    Malformed,
    /// `requests.<key>`.
    Request(&'static str),
    /// Nothing (EOF before a complete request is not malformed, and data on a registration
    /// connection is an unregistration).
    Nothing,
}

/// One row.
#[derive(Clone, Debug)]
struct Case {
    /// What it is.
    name: String,
    /// The bytes sent.
    bytes: Vec<u8>,
    /// How they are sent.
    how: How,
    /// The outcome.
    expect: Expect,
    /// The counter that moves.
    counter: Counter,
}

fn case(name: &str, bytes: Vec<u8>, how: How, expect: Expect, counter: Counter) -> Case {
    Case {
        name: name.to_owned(),
        bytes,
        how,
        expect,
        counter,
    }
}

/// A row sent in one write that must be closed silently and counted as malformed.
fn garbage(name: &str, bytes: Vec<u8>) -> Case {
    case(
        name,
        bytes,
        How::OneWrite,
        Expect::SilentClose,
        Counter::Malformed,
    )
}

/// The fixture nodes, registered before the table and checked after it.
const ALPHA_PORT: u16 = 4101;
const BETA_PORT: u16 = 4102;

/// ALPHA: type 77, protocol 0, versions 6/5, no extra (OTP 25's own registration).
fn alpha_alive2() -> Vec<u8> {
    alive2_req(ALPHA_PORT, 77, 0, 6, 5, b"alpha", b"")
}

/// BETA: a hidden node (72) with versions 5/5 (short reply) and extra `xy`.
fn beta_alive2() -> Vec<u8> {
    alive2_req(BETA_PORT, 72, 0, 5, 5, b"beta", b"xy")
}

/// The exact PORT2_RESP for alpha.
fn alpha_port2() -> Vec<u8> {
    unhex("77 00 10 05 4D 00 00 06 00 05 00 05 61 6C 70 68 61 00 00")
}

/// The exact PORT2_RESP for beta.
fn beta_port2() -> Vec<u8> {
    unhex("77 00 10 06 48 00 00 05 00 05 00 04 62 65 74 61 00 02 78 79")
}

/// The exact NAMES reply with the two fixtures (newest first).
fn fixture_names(port: u16) -> Vec<u8> {
    let mut out = u32::from(port).to_be_bytes().to_vec();
    out.extend_from_slice(b"name beta at port 4102\nname alpha at port 4101\n");
    out
}

/// A framed ALIVE2_REQ (port 0x1005, type 77, protocol 0, versions 6/5) whose `Nlen` field
/// and the bytes after it are given as they are, consistent or not.
fn alive2_fields(nlen: u16, name: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut p = unhex("78 10 05 4D 00 00 06 00 05");
    p.extend_from_slice(&nlen.to_be_bytes());
    p.extend_from_slice(name);
    p.extend_from_slice(tail);
    frame(&p)
}

/// A well-formed ALIVE2_REQ (type 77, protocol 0, versions 6/5, or 5/5 with `v6 == false`).
fn alive2(name: &[u8], extra: &[u8], v6: bool) -> Vec<u8> {
    let high = if v6 { 6 } else { 5 };
    alive2_req(4200, 77, 0, high, 5, name, extra)
}

/// A framed PORT_PLEASE2_REQ with `name` as given.
fn port_please(name: &[u8]) -> Vec<u8> {
    let mut p = vec![0x7A];
    p.extend_from_slice(name);
    frame(&p)
}

/// A deterministic generator for the random rows (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// The seed of the random rows (printed, so a failure can be replayed).
const SEED: u64 = 0x6570_6D64_2D72_7321;

/// Every row of the table. `port` is the daemon's (it is in NAMES replies).
fn table(port: u16) -> Vec<Case> {
    use Counter::{Malformed, Nothing, Request};
    use Expect::{Refused, Registers, Reply, SilentClose};
    use How::{ByteByByte, EveryOffset, OnRegistration, OneWrite, ThenEof, TwoWrites};

    let names = fixture_names(port);
    let v6_refused = unhex("76 01 00 00 00 63");
    let v5_refused = unhex("79 01 00 63");
    let clef = "\u{1D11E}"; // 4 bytes of UTF-8
    let padded = |tag: u8, len: usize| {
        let mut p = vec![tag];
        p.resize(len, 0x58);
        frame(&p)
    };

    let mut rows = vec![
        // --- Framing (spec §1) ---
        garbage("length 0", req("00 00")),
        garbage("length 0 followed by a tag", unhex("00 00 6E")),
        garbage("64 NUL bytes (length 0)", vec![0; 64]),
        case(
            "length 1: NAMES",
            req("00 01 6E"),
            OneWrite,
            Reply(names.clone()),
            Request("names"),
        ),
        garbage("length 1: ALIVE2 tag only", req("00 01 78")),
        case(
            "length 2: NAMES + junk byte",
            req("00 02 6E 58"),
            OneWrite,
            Reply(names.clone()),
            Request("names"),
        ),
        case(
            "length 3057: NAMES padded",
            padded(0x6E, 3057),
            OneWrite,
            Reply(names.clone()),
            Request("names"),
        ),
        garbage("length 3057: unknown tag padded", padded(0xFF, 3057)),
        garbage("length 3058: NAMES padded", padded(0x6E, 3058)),
        garbage("length 3058: the prefix alone", unhex("0B F2")),
        garbage("length 0xFFFF with 65535 bytes", padded(0x6E, 0xFFFF)),
        garbage("length 0xFFFF: the prefix alone", unhex("FF FF")),
        case(
            "NAMES with the prefix and the tag in two writes",
            req("00 01 6E"),
            TwoWrites(2),
            Reply(names.clone()),
            Request("names"),
        ),
        case(
            "NAMES split at every byte offset",
            req("00 01 6E"),
            EveryOffset,
            Reply(names.clone()),
            Request("names"),
        ),
        case(
            "a truncated request, then EOF",
            unhex("00 05 6E"),
            ThenEof,
            SilentClose,
            Nothing,
        ),
        case(
            "one byte, then EOF",
            unhex("00"),
            ThenEof,
            SilentClose,
            Nothing,
        ),
        case(
            "connect, then EOF at once",
            Vec::new(),
            ThenEof,
            SilentClose,
            Nothing,
        ),
        garbage(
            "two NAMES pipelined in one write",
            unhex("00 01 6E 00 01 6E"),
        ),
        garbage(
            "PORT_PLEASE2 + NAMES pipelined",
            unhex("00 06 7A 61 6C 70 68 61 00 01 6E"),
        ),
        garbage("NAMES + one stray byte", unhex("00 01 6E 00")),
        case(
            "NAMES, then a second NAMES in a later write (never read)",
            unhex("00 01 6E 00 01 6E"),
            TwoWrites(3),
            Reply(names.clone()),
            Request("names"),
        ),
        // --- ALIVE2_REQ (spec §3.1, §4.1) ---
        garbage(
            "ALIVE2 payload 13 (Nlen 0, Elen 0)",
            alive2_fields(0, b"", &[0, 0]),
        ),
        case(
            "ALIVE2 payload 14 (empty name + 1 junk byte)",
            alive2_fields(0, b"", &[0, 0, 0x58]),
            OneWrite,
            Registers {
                name: Vec::new(),
                v6: true,
            },
            Request("alive2.registered"),
        ),
        garbage(
            "ALIVE2 Nlen beyond the data by 1",
            alive2_fields(5, b"abcde", &[0]),
        ),
        garbage(
            "ALIVE2 Elen beyond the data by 1",
            alive2_fields(5, b"abcde", &[0, 3, b'x', b'y']),
        ),
        garbage("ALIVE2 Nlen 0xFFFF", alive2_fields(0xFFFF, b"abc", &[0, 0])),
        garbage(
            "ALIVE2 Elen 0xFFFF",
            alive2_fields(3, b"abc", &[0xFF, 0xFF, b'x']),
        ),
        garbage("ALIVE2 NUL inside the name", alive2(b"foo\0bar", b"", true)),
        garbage(
            "ALIVE2 NUL at the end of the name",
            alive2(b"foobar\0", b"", true),
        ),
        case(
            "ALIVE2 invalid UTF-8 (FF)",
            alive2(b"bad\xFFname", b"", true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 invalid UTF-8, v5 reply",
            alive2(b"\xFE\xFF", b"", false),
            OneWrite,
            Refused(v5_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 overlong UTF-8 (C0 80)",
            alive2(b"a\xC0\x80", b"", true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 UTF-16 surrogate (ED A0 80)",
            alive2(b"\xED\xA0\x80", b"", true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 truncated UTF-8 sequence (E2 82)",
            alive2(b"x\xE2\x82", b"", true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 255 code points (1020 bytes)",
            alive2(clef.repeat(255).as_bytes(), b"", true),
            OneWrite,
            Registers {
                name: clef.repeat(255).into_bytes(),
                v6: true,
            },
            Request("alive2.registered"),
        ),
        case(
            "ALIVE2 256 code points (ASCII)",
            alive2("a".repeat(256).as_bytes(), b"", true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 Nlen 1021 (256 code points)",
            alive2(format!("{}a", clef.repeat(255)).as_bytes(), b"", true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 extra of 1020 bytes",
            alive2(b"extra1020", &[0xAB; 1020], true),
            OneWrite,
            Registers {
                name: b"extra1020".to_vec(),
                v6: true,
            },
            Request("alive2.registered"),
        ),
        case(
            "ALIVE2 extra of 1021 bytes",
            alive2(b"extra1021", &[0xAB; 1021], true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.bad_name"),
        ),
        case(
            "ALIVE2 duplicate of alpha (v6)",
            alive2(b"alpha", b"", true),
            OneWrite,
            Refused(v6_refused.clone()),
            Request("alive2.duplicate"),
        ),
        case(
            "ALIVE2 duplicate of beta (v5)",
            alive2(b"beta", b"", false),
            OneWrite,
            Refused(v5_refused.clone()),
            Request("alive2.duplicate"),
        ),
        garbage(
            "ALIVE2 with piggy-backed bytes in the same write",
            [alive2(b"piggy", b"", true), b"hello".to_vec()].concat(),
        ),
        case(
            "ALIVE2 with junk after Extra inside the length",
            alive2_fields(8, b"junktail", &[0, 0, 1, 2, 3]),
            OneWrite,
            Registers {
                name: b"junktail".to_vec(),
                v6: true,
            },
            Request("alive2.registered"),
        ),
        case(
            "ALIVE2 name with spaces, '@' and a control char",
            alive2(b"a b@c\x01d", b"", false),
            OneWrite,
            Registers {
                name: b"a b@c\x01d".to_vec(),
                v6: false,
            },
            Request("alive2.registered"),
        ),
        case(
            "ALIVE2 split at every byte offset",
            alive2(b"splitter", b"e", true),
            EveryOffset,
            Registers {
                name: b"splitter".to_vec(),
                v6: true,
            },
            Request("alive2.registered"),
        ),
        case(
            "ALIVE2 one byte per write",
            alive2(b"bytewise", b"", false),
            ByteByByte,
            Registers {
                name: b"bytewise".to_vec(),
                v6: false,
            },
            Request("alive2.registered"),
        ),
        // --- PORT_PLEASE2_REQ (spec §3.2) ---
        garbage("PORT_PLEASE2 bare tag", req("00 01 7A")),
        garbage("PORT_PLEASE2 name of one NUL", req("00 02 7A 00")),
        case(
            "PORT_PLEASE2 alpha with a trailing NUL",
            port_please(b"alpha\0"),
            OneWrite,
            Reply(alpha_port2()),
            Request("port_please2.found"),
        ),
        garbage(
            "PORT_PLEASE2 alpha with two trailing NULs",
            port_please(b"alpha\0\0"),
        ),
        garbage("PORT_PLEASE2 NUL inside the name", port_please(b"al\0pha")),
        garbage("PORT_PLEASE2 invalid UTF-8", port_please(b"alph\xFF")),
        case(
            "PORT_PLEASE2 254 code points",
            port_please(clef.repeat(254).as_bytes()),
            OneWrite,
            Reply(unhex("77 01")),
            Request("port_please2.not_found"),
        ),
        garbage(
            "PORT_PLEASE2 255 code points",
            port_please(clef.repeat(255).as_bytes()),
        ),
        case(
            "PORT_PLEASE2 ALPHA (case differs)",
            port_please(b"ALPHA"),
            OneWrite,
            Reply(unhex("77 01")),
            Request("port_please2.not_found"),
        ),
        case(
            "PORT_PLEASE2 beta split at every byte offset",
            port_please(b"beta"),
            EveryOffset,
            Reply(beta_port2()),
            Request("port_please2.found"),
        ),
        case(
            "PORT_PLEASE2 alpha one byte per write",
            port_please(b"alpha"),
            ByteByByte,
            Reply(alpha_port2()),
            Request("port_please2.found"),
        ),
        // --- DUMP, KILL, STOP (spec §3.4-3.6), without the relaxed check ---
        case(
            "DUMP",
            req("00 01 64"),
            OneWrite,
            Expect::Dump,
            Request("dump"),
        ),
        case(
            "KILL with nodes registered",
            req("00 01 6B"),
            OneWrite,
            Reply(b"NO".to_vec()),
            Request("kill.refused"),
        ),
        case(
            "KILL with junk inside the length",
            req("00 03 6B 00 00"),
            OneWrite,
            Reply(b"NO".to_vec()),
            Request("kill.refused"),
        ),
        garbage("STOP bare tag", req("00 01 73")),
        case(
            "STOP alpha (strict check: ignored)",
            req("00 06 73 61 6C 70 68 61"),
            OneWrite,
            SilentClose,
            Request("stop.ignored"),
        ),
        case(
            "STOP with a NUL-only name (ignored)",
            req("00 02 73 00"),
            OneWrite,
            SilentClose,
            Request("stop.ignored"),
        ),
        // --- Unknown and obsolete tags (spec §2) ---
        garbage("tag 0", req("00 01 00")),
        garbage("tag 97 'a' (old ALIVE_REQ)", req("00 03 61 12 34")),
        garbage("tag 112 'p' (old PORT_REQ)", req("00 06 70 61 6C 70 68 61")),
        garbage("tag 255", req("00 01 FF")),
        garbage("tag 121 'y' (a reply tag)", req("00 04 79 00 00 01")),
        garbage("tag 119 'w' (a reply tag)", req("00 02 77 01")),
        // --- What scanners send to any open port ---
        garbage(
            "HTTP GET",
            b"GET / HTTP/1.1\r\nHost: localhost:4369\r\nUser-Agent: scanner\r\n\r\n".to_vec(),
        ),
        garbage("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        case(
            "SSH banner split at every byte offset",
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            EveryOffset,
            SilentClose,
            Malformed,
        ),
        garbage("Redis PING", b"*1\r\n$4\r\nPING\r\n".to_vec()),
        // --- Data on registration connections (spec §4.6) ---
        case(
            "data on a registration connection",
            b"hello".to_vec(),
            OnRegistration("gamma"),
            SilentClose,
            Nothing,
        ),
        case(
            "NAMES on a registration connection",
            req("00 01 6E"),
            OnRegistration("delta"),
            SilentClose,
            Nothing,
        ),
        case(
            "half-close of a registration connection",
            Vec::new(),
            OnRegistration("epsilon"),
            SilentClose,
            Nothing,
        ),
    ];

    let mut rng = Rng(SEED);
    // A TLS 1.0 record header, a ClientHello header and 32 random bytes: length 0x1603.
    let mut hello = unhex("16 03 01 02 00 01 00 01 FC 03 03");
    hello.extend(rng.bytes(32));
    hello.extend_from_slice(&unhex("20"));
    hello.extend(rng.bytes(32));
    rows.push(garbage("TLS ClientHello prefix", hello));
    for i in 0..4 {
        // Random bytes whose first byte makes the declared length at least 0x0C00 > 3057.
        let n = 2 + rng.below(600) as usize;
        let mut bytes = rng.bytes(n);
        bytes[0] = 0x0C + (rng.below(0xF4) as u8);
        rows.push(garbage(
            &format!("random garbage #{i} (length > 3057)"),
            bytes,
        ));
    }
    for i in 0..4 {
        // A correctly framed random payload whose tag is no request.
        let n = 1 + rng.below(300) as usize;
        let mut payload = rng.bytes(n);
        while [0x78, 0x7A, 0x6E, 0x64, 0x6B, 0x73].contains(&payload[0]) {
            payload[0] = rng.byte();
        }
        rows.push(garbage(
            &format!("random payload #{i} with an unknown tag"),
            frame(&payload),
        ));
    }
    for i in 0..4 {
        // A valid length, fewer random bytes than it declares, then EOF.
        let declared = 100 + rng.below(2900) as usize;
        let mut bytes = u16::try_from(declared)
            .expect("length")
            .to_be_bytes()
            .to_vec();
        let n = rng.below(declared as u64) as usize;
        bytes.extend(rng.bytes(n));
        rows.push(case(
            &format!("random truncated request #{i}, then EOF"),
            bytes,
            ThenEof,
            SilentClose,
            Nothing,
        ));
    }
    rows
}

/// What the table expects the counters to have moved by.
#[derive(Debug, Default)]
struct Tally {
    /// Connections opened to the epmd port.
    accepted: u64,
    /// `malformed_requests`.
    malformed: u64,
    /// `requests.*`.
    requests: BTreeMap<String, u64>,
}

impl Tally {
    fn count(&mut self, counter: Counter) {
        match counter {
            Counter::Malformed => self.malformed += 1,
            Counter::Request(key) => *self.requests.entry(key.to_owned()).or_default() += 1,
            Counter::Nothing => {}
        }
    }
}

/// Sends the rows and checks each outcome, counting what every connection should move.
struct Runner {
    port: u16,
    tally: Tally,
}

impl Runner {
    fn connect(&mut self) -> Conn {
        self.tally.accepted += 1;
        Conn::connect(self.port)
    }

    /// A counted NAMES round trip.
    fn names(&mut self) -> Vec<u8> {
        let mut conn = self.connect();
        conn.write(&names_req());
        let reply = conn.read_to_eof(IO_TIMEOUT);
        self.tally.count(Counter::Request("names"));
        reply
    }

    /// The names NAMES lists, as bytes.
    fn listed(&mut self) -> Vec<Vec<u8>> {
        let reply = self.names();
        parse_names(&reply)
            .1
            .into_iter()
            .map(|(n, _)| n.into_bytes())
            .collect()
    }

    /// A NAMES round trip: the daemon has handled everything sent before it.
    fn barrier(&mut self) {
        let reply = self.names();
        assert!(reply.len() >= 4, "barrier NAMES: {}", hex(&reply));
    }

    fn run(&mut self, case: &Case) -> usize {
        let bytes = case.bytes.as_slice();
        match case.how {
            How::OneWrite => self.once(case, "", &[bytes], false, false),
            How::ThenEof => self.once(case, "", &[bytes], false, true),
            How::ByteByByte => {
                let parts: Vec<&[u8]> = bytes.chunks(1).collect();
                self.once(case, "one byte per write", &parts, false, false);
            }
            How::TwoWrites(k) => {
                self.once(case, "", &[&bytes[..k], &bytes[k..]], true, false);
            }
            How::EveryOffset => {
                for k in 1..bytes.len() {
                    let label = format!("split after byte {k}");
                    self.once(case, &label, &[&bytes[..k], &bytes[k..]], true, false);
                }
                return bytes.len() - 1;
            }
            How::OnRegistration(name) => self.on_registration(case, name),
        }
        1
    }

    fn once(&mut self, case: &Case, how: &str, parts: &[&[u8]], barriers: bool, eof: bool) {
        let label = if how.is_empty() {
            case.name.clone()
        } else {
            format!("{} ({how})", case.name)
        };
        let mut conn = self.connect();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 && barriers {
                self.barrier();
            }
            // A write fails once the daemon has closed (and reset) the connection, which a
            // refused request allows it to do before everything is sent.
            if conn.try_write(part).is_err() {
                break;
            }
        }
        if eof {
            let _ = conn.stream().shutdown(Shutdown::Write);
        }
        self.check(case, &label, conn);
        self.tally.count(case.counter);
    }

    fn on_registration(&mut self, case: &Case, name: &str) {
        let mut conn = self.connect();
        conn.write(&alive2(name.as_bytes(), b"", true));
        let reply = conn.read_exact_timeout(6, IO_TIMEOUT);
        assert_registered_reply(&case.name, &reply, true);
        self.tally.count(Counter::Request("alive2.registered"));
        assert!(
            self.listed().contains(&name.as_bytes().to_vec()),
            "{}: {name} not listed after its registration",
            case.name
        );
        if case.bytes.is_empty() {
            conn.shutdown_write();
        } else {
            let _ = conn.try_write(&case.bytes);
        }
        self.check(case, &case.name, conn);
        self.tally.count(case.counter);
        let gone = poll_true(IO_TIMEOUT, || {
            !self.listed().contains(&name.as_bytes().to_vec())
        });
        assert!(gone, "{}: {name} still registered", case.name);
    }

    fn check(&mut self, case: &Case, label: &str, mut conn: Conn) {
        match &case.expect {
            Expect::SilentClose => {
                let reply = conn.read_to_eof(IO_TIMEOUT);
                assert!(
                    reply.is_empty(),
                    "{label}: sent {}, expected a silent close, received {}",
                    hex_short(&case.bytes),
                    hex(&reply)
                );
            }
            Expect::Reply(expected) => {
                let reply = conn.read_to_eof(IO_TIMEOUT);
                assert_bytes_eq(
                    &format!("{label} (sent {})", hex_short(&case.bytes)),
                    expected,
                    &reply,
                );
            }
            Expect::Refused(expected) => {
                let reply = conn.read_exact_timeout(expected.len(), IO_TIMEOUT);
                assert_bytes_eq(label, expected, &reply);
                self.barrier();
                assert!(
                    !conn.is_closed_within(QUIET),
                    "{label}: the refused registration's connection was closed (spec §4.2)"
                );
                conn.write(b"x");
                assert!(
                    conn.is_closed_within(IO_TIMEOUT),
                    "{label}: a byte on the refused registration's connection did not close it"
                );
            }
            Expect::Registers { name, v6 } => {
                let reply = conn.read_exact_timeout(if *v6 { 6 } else { 4 }, IO_TIMEOUT);
                assert_registered_reply(label, &reply, *v6);
                assert!(
                    self.listed().contains(name),
                    "{label}: {:?} not listed after a success reply",
                    String::from_utf8_lossy(name)
                );
                assert!(
                    !conn.is_closed_within(Duration::from_millis(1)),
                    "{label}: the registration connection was closed or answered twice"
                );
                drop(conn);
                let gone = poll_true(IO_TIMEOUT, || !self.listed().contains(name));
                assert!(
                    gone,
                    "{label}: still registered after its connection closed"
                );
            }
            Expect::Dump => {
                let reply = conn.read_to_eof(IO_TIMEOUT);
                let header = u32::from(self.port).to_be_bytes();
                assert!(
                    reply.starts_with(&header) && reply.ends_with(b"\n\0"),
                    "{label}: bad DUMP reply {}",
                    String::from_utf8_lossy(&reply)
                );
                let text = String::from_utf8_lossy(&reply[4..]).into_owned();
                let beta = text.find("active name     <beta> at port 4102, fd = ");
                let alpha = text.find("active name     <alpha> at port 4101, fd = ");
                assert!(
                    matches!((beta, alpha), (Some(b), Some(a)) if b < a),
                    "{label}: DUMP lacks the two active lines, newest first: {text:?}"
                );
            }
        }
    }
}

/// Checks a success ALIVE2 reply: `76 00 C32` with C >= 4, or `79 00 C16` with C in 1..=3.
fn assert_registered_reply(label: &str, reply: &[u8], v6: bool) {
    let ok = match (v6, reply) {
        (true, [0x76, 0, c @ ..]) if c.len() == 4 => {
            u32::from_be_bytes([c[0], c[1], c[2], c[3]]) >= 4
        }
        (false, [0x79, 0, 0, c]) => (1..=3).contains(c),
        _ => false,
    };
    assert!(
        ok,
        "{label}: expected a success ALIVE2 reply, got {}",
        hex(reply)
    );
}

/// Hex of at most the first 24 bytes, for messages.
fn hex_short(bytes: &[u8]) -> String {
    if bytes.len() <= 24 {
        hex(bytes)
    } else {
        format!("{} .. ({} bytes)", hex(&bytes[..24]), bytes.len())
    }
}

/// Panics unless `after - before == expected` for one counter.
fn assert_moved(what: &str, before: u64, after: u64, expected: u64) {
    assert!(
        after.checked_sub(before) == Some(expected),
        "counter {what}: moved from {before} to {after}, the table expects +{expected}"
    );
}

#[test]
fn hostile_table_every_row_has_its_outcome_and_counter() {
    let admin = AdminSocket::new();
    let mut daemon = admin.start(Daemon::builder());
    let port = daemon.port();
    let mut runner = Runner {
        port,
        tally: Tally::default(),
    };

    // Two nodes registered on held connections before the table.
    let mut alpha = runner.connect();
    alpha.write(&alpha_alive2());
    assert_registered_reply("alpha", &alpha.read_exact_timeout(6, IO_TIMEOUT), true);
    let mut beta = runner.connect();
    beta.write(&beta_alive2());
    assert_registered_reply("beta", &beta.read_exact_timeout(4, IO_TIMEOUT), false);
    assert_bytes_eq(
        "NAMES before the table",
        &fixture_names(port),
        &runner.names(),
    );

    let before = admin.stats();
    runner.tally = Tally::default();

    let rows = table(port);
    assert!(rows.len() >= 40, "only {} rows", rows.len());
    println!("hostile table: {} rows, random seed {SEED:#x}", rows.len());
    for row in &rows {
        let conns = runner.run(row);
        println!(
            "  {:<58} {:<22} {:<14} {:<28} conns={conns}",
            row.name,
            format!("{:?}", row.how),
            match &row.expect {
                Expect::SilentClose => "silent close".to_owned(),
                Expect::Reply(b) => format!("reply {}B", b.len()),
                Expect::Refused(_) => "error reply".to_owned(),
                Expect::Registers { .. } => "registers".to_owned(),
                Expect::Dump => "dump".to_owned(),
            },
            format!("{:?}", row.counter),
        );
    }

    // The fixtures are untouched and their connections still open; the daemon answers.
    assert_bytes_eq(
        "NAMES after the table",
        &fixture_names(port),
        &runner.names(),
    );
    for (name, bytes, expected) in [
        ("alpha", port_please(b"alpha"), alpha_port2()),
        ("beta", port_please(b"beta"), beta_port2()),
    ] {
        let mut conn = runner.connect();
        conn.write(&bytes);
        assert_bytes_eq(
            &format!("lookup of {name} after the table"),
            &expected,
            &conn.read_to_eof(IO_TIMEOUT),
        );
        runner.tally.count(Counter::Request("port_please2.found"));
    }
    assert!(
        !alpha.is_closed_within(Duration::from_millis(1))
            && !beta.is_closed_within(Duration::from_millis(1)),
        "a fixture's registration connection was closed"
    );

    let after = admin.stats();
    let tally = &runner.tally;
    println!(
        "hostile counters: +{} connections, +{} malformed, requests {:?}",
        tally.accepted, tally.malformed, tally.requests
    );
    assert_moved("accepted", before.accepted, after.accepted, tally.accepted);
    assert_moved(
        "malformed_requests",
        before.malformed_requests,
        after.malformed_requests,
        tally.malformed,
    );
    assert_moved(
        "non_local_refusals",
        before.non_local_refusals,
        after.non_local_refusals,
        0,
    );
    let keys: std::collections::BTreeSet<&str> = before
        .requests
        .keys()
        .chain(after.requests.keys())
        .map(String::as_str)
        .chain(tally.requests.keys().map(String::as_str))
        .collect();
    for key in keys {
        assert_moved(
            &format!("requests.{key}"),
            request_count(&before, key),
            request_count(&after, key),
            tally.requests.get(key).copied().unwrap_or(0),
        );
    }
    for (what, b, a) in [
        (
            "policy_refusals",
            before.policy_refusals,
            after.policy_refusals,
        ),
        (
            "capped_connections",
            before.capped_connections,
            after.capped_connections,
        ),
        (
            "deadline_expiries",
            before.deadline_expiries,
            after.deadline_expiries,
        ),
        ("accept_errors", before.accept_errors, after.accept_errors),
    ] {
        assert_moved(what, b, a, 0);
    }
    assert_eq!(after.registrations, 2, "{after:#?}");
    assert_eq!(connection_count(&after, "registration"), 2, "{after:#?}");
    assert!(daemon.is_running(), "the daemon exited");
    assert_no_panic(&daemon);
}
