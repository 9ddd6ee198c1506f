//! Raw epmd protocol exchanges: request builders, one-shot requests, and a connection
//! wrapper whose every read has a deadline.
//!
//! Requests are `Length:u16` plus payload; replies have no length prefix and end when the
//! daemon closes (spec §1). Builders return the complete framed request, so tests can
//! write them as is or cut them into pieces. A reset from the daemon counts as end of
//! stream, as the C epmd resets connections it closes with unread input.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The default deadline of one request or read.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// ALIVE2_REQ tag (`x`).
pub(crate) const ALIVE2_REQ: u8 = 120;
/// ALIVE2_RESP tag (`y`), the reply to a request with HighestVersion < 6.
pub(crate) const ALIVE2_RESP: u8 = 121;
/// ALIVE2_X_RESP tag (`v`), the reply to a request with HighestVersion >= 6.
pub(crate) const ALIVE2_X_RESP: u8 = 118;
/// PORT_PLEASE2_REQ tag (`z`).
pub(crate) const PORT_PLEASE2_REQ: u8 = 122;
/// PORT2_RESP tag (`w`).
pub(crate) const PORT2_RESP: u8 = 119;
/// NAMES_REQ tag (`n`).
pub(crate) const NAMES_REQ: u8 = 110;
/// DUMP_REQ tag (`d`).
pub(crate) const DUMP_REQ: u8 = 100;
/// KILL_REQ tag (`k`).
pub(crate) const KILL_REQ: u8 = 107;
/// STOP_REQ tag (`s`).
pub(crate) const STOP_REQ: u8 = 115;

/// Node type of a normal node (`M`), which OTP sends for hidden nodes too.
pub(crate) const NODE_TYPE_NORMAL: u8 = 77;

/// Formats bytes as upper-case hex pairs separated by spaces (`76 00 6B 07`), for messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prefixes `payload` with its big-endian `u16` length. Panics if it does not fit.
pub(crate) fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("payload longer than 65535 bytes");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// A framed ALIVE2_REQ with every field given (spec §3.1).
pub(crate) fn alive2_req(
    node_port: u16,
    node_type: u8,
    protocol: u8,
    highest_version: u16,
    lowest_version: u16,
    name: &[u8],
    extra: &[u8],
) -> Vec<u8> {
    let mut p = vec![ALIVE2_REQ];
    p.extend_from_slice(&node_port.to_be_bytes());
    p.push(node_type);
    p.push(protocol);
    p.extend_from_slice(&highest_version.to_be_bytes());
    p.extend_from_slice(&lowest_version.to_be_bytes());
    p.extend_from_slice(&len_u16(name).to_be_bytes());
    p.extend_from_slice(name);
    p.extend_from_slice(&len_u16(extra).to_be_bytes());
    p.extend_from_slice(extra);
    frame(&p)
}

/// A framed PORT_PLEASE2_REQ for `name` (no NUL, as `erl_epmd` sends it).
pub(crate) fn port_please_req(name: &[u8]) -> Vec<u8> {
    let mut p = vec![PORT_PLEASE2_REQ];
    p.extend_from_slice(name);
    frame(&p)
}

/// The framed NAMES_REQ, `00 01 6E`.
pub(crate) fn names_req() -> Vec<u8> {
    frame(&[NAMES_REQ])
}

/// The length of a name or extra field as the `u16` the wire carries.
fn len_u16(bytes: &[u8]) -> u16 {
    u16::try_from(bytes.len()).expect("field longer than 65535 bytes")
}

/// Connects to `127.0.0.1:port`, writes `bytes`, and returns everything received until the
/// daemon closes (EOF or reset). Panics if that takes longer than [`IO_TIMEOUT`].
pub(crate) fn request(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut conn = Conn::connect(port);
    conn.write(bytes);
    conn.read_to_eof(IO_TIMEOUT)
}

/// The raw NAMES reply of the daemon on `port`.
pub(crate) fn names(port: u16) -> Vec<u8> {
    request(port, &names_req())
}

/// The raw PORT2_RESP for `name` from the daemon on `port`.
pub(crate) fn port_please(port: u16, name: &str) -> Vec<u8> {
    request(port, &port_please_req(name.as_bytes()))
}

/// Registers `name` with an ALIVE2_REQ (node type 77, protocol 0, the given
/// HighestVersion, LowestVersion `min(5, highest)`, no extra) and reads the fixed-size
/// reply: 6 bytes for HighestVersion >= 6, else 4. Returns the still-open registration
/// connection (closing it unregisters) and the reply bytes.
///
/// Panics if the reply does not arrive within [`IO_TIMEOUT`].
pub(crate) fn register(
    port: u16,
    name: &str,
    node_port: u16,
    highest_version: u16,
) -> (TcpStream, Vec<u8>) {
    let req = alive2_req(
        node_port,
        NODE_TYPE_NORMAL,
        0,
        highest_version,
        highest_version.min(5),
        name.as_bytes(),
        &[],
    );
    let reply_len = if highest_version >= 6 { 6 } else { 4 };
    let mut conn = Conn::connect(port);
    conn.write(&req);
    let reply = conn.read_exact_timeout(reply_len, IO_TIMEOUT);
    (conn.into_stream(), reply)
}

/// Splits a NAMES reply into its `u32` port header and its `(name, port)` lines, in wire
/// order. Panics, showing the bytes, on anything but `name <N> at port <P>\n` lines.
pub(crate) fn parse_names(reply: &[u8]) -> (u32, Vec<(String, u16)>) {
    assert!(
        reply.len() >= 4,
        "NAMES reply shorter than its header: {}",
        hex(reply)
    );
    let header = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
    let body = std::str::from_utf8(&reply[4..])
        .unwrap_or_else(|_| panic!("NAMES body is not UTF-8: {}", hex(reply)));
    assert!(
        body.is_empty() || body.ends_with('\n'),
        "NAMES body does not end with a newline: {body:?}"
    );
    let entries = body
        .lines()
        .map(|line| {
            let parsed = line.strip_prefix("name ").and_then(|rest| {
                let (name, port) = rest.rsplit_once(" at port ")?;
                Some((name.to_owned(), port.parse().ok()?))
            });
            parsed.unwrap_or_else(|| panic!("bad NAMES line {line:?} in {body:?}"))
        })
        .collect();
    (header, entries)
}

/// A successful PORT2_RESP, field by field (spec §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Port2 {
    /// The node's distribution port.
    pub(crate) port: u16,
    /// Node type as registered (77 normal, 72 hidden).
    pub(crate) node_type: u8,
    /// Protocol as registered (0 = TCP/IPv4).
    pub(crate) protocol: u8,
    /// HighestVersion as registered.
    pub(crate) highest_version: u16,
    /// LowestVersion as registered.
    pub(crate) lowest_version: u16,
    /// The node name (the part before `@`).
    pub(crate) name: Vec<u8>,
    /// The extra field as registered.
    pub(crate) extra: Vec<u8>,
}

/// Parses a PORT2_RESP: `Some` for result 0, `None` for the 2-byte not-found reply `77 01`.
/// Panics, showing the bytes, on anything malformed or with trailing bytes.
pub(crate) fn parse_port2(reply: &[u8]) -> Option<Port2> {
    match reply {
        [PORT2_RESP, 1] => return None,
        [PORT2_RESP, 0, ..] => {}
        _ => bad_port2(reply, "tag/result"),
    }
    let mut r = &reply[2..];
    let mut take =
        |n: usize| take_bytes(&mut r, n).unwrap_or_else(|| bad_port2(reply, "too short"));
    let port = be_u16(take(2));
    let node_type = take(1)[0];
    let protocol = take(1)[0];
    let highest_version = be_u16(take(2));
    let lowest_version = be_u16(take(2));
    let nlen = usize::from(be_u16(take(2)));
    let name = take(nlen).to_vec();
    let elen = usize::from(be_u16(take(2)));
    let extra = take(elen).to_vec();
    if !r.is_empty() {
        bad_port2(reply, "trailing bytes");
    }
    Some(Port2 {
        port,
        node_type,
        protocol,
        highest_version,
        lowest_version,
        name,
        extra,
    })
}

/// Panics with a description of a malformed PORT2_RESP.
fn bad_port2(reply: &[u8], why: &str) -> ! {
    panic!("bad PORT2_RESP ({why}): {}", hex(reply))
}

/// Splits the first `n` bytes off `r`, or `None` if it is shorter.
fn take_bytes<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (head, tail) = r.split_at(n);
    *r = tail;
    Some(head)
}

/// A big-endian `u16` from the first two bytes of `b`.
fn be_u16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// A client connection whose every read has a deadline.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The connected socket.
    stream: TcpStream,
}

impl From<TcpStream> for Conn {
    fn from(stream: TcpStream) -> Self {
        Self { stream }
    }
}

impl Conn {
    /// Connects to `127.0.0.1:port` (panics after [`IO_TIMEOUT`] or on refusal).
    pub(crate) fn connect(port: u16) -> Conn {
        Self::connect_to(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
    }

    /// Connects to `addr` (panics after [`IO_TIMEOUT`] or on refusal).
    pub(crate) fn connect_to(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("set TCP_NODELAY");
        Conn { stream }
    }

    /// The underlying socket.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Gives back the underlying socket.
    pub(crate) fn into_stream(self) -> TcpStream {
        self.stream
    }

    /// Writes all of `bytes`; panics on error.
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.try_write(bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", hex(bytes)));
    }

    /// Writes all of `bytes`, returning the error (for writes that may hit a closed socket).
    pub(crate) fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Half-closes the connection (`shutdown(SHUT_WR)`): the daemon sees EOF.
    pub(crate) fn shutdown_write(&self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown(SHUT_WR)");
    }

    /// One read of at most `buf.len()` bytes, giving up at `deadline`: `Ok(0)` is EOF (a
    /// reset counts as EOF), `Err` means the deadline passed.
    fn read_until(&mut self, buf: &mut [u8], deadline: Instant) -> Result<usize, ()> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(());
            }
            self.stream
                .set_read_timeout(Some(left))
                .expect("set_read_timeout");
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(())
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(0),
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Reads exactly `n` bytes within `timeout`. Panics, showing what did arrive, on EOF or
    /// at the deadline.
    pub(crate) fn read_exact_timeout(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = vec![0; n];
        let mut got = 0;
        while got < n {
            match self.read_until(&mut out[got..], deadline) {
                Ok(0) => panic!(
                    "connection closed after {got} of {n} bytes: {}",
                    hex(&out[..got])
                ),
                Ok(k) => got += k,
                Err(()) => panic!(
                    "timed out after {timeout:?} with {got} of {n} bytes: {}",
                    hex(&out[..got])
                ),
            }
        }
        out
    }

    /// Reads until the daemon closes the connection (EOF or reset), within `timeout`.
    /// Panics, showing what did arrive, at the deadline.
    pub(crate) fn read_to_eof(&mut self, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match self.read_until(&mut buf, deadline) {
                Ok(0) => return out,
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(()) => panic!("no EOF within {timeout:?}; received so far: {}", hex(&out)),
            }
        }
    }

    /// Whether the daemon closes the connection (EOF or reset) within `timeout`, without
    /// sending anything first. `false` means it was still open at the deadline. Panics,
    /// showing the bytes, if data arrives: callers ask this only when no reply is due.
    pub(crate) fn is_closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        match self.read_until(&mut buf, deadline) {
            Ok(0) => true,
            Ok(k) => panic!("expected a silent close, received {}", hex(&buf[..k])),
            Err(()) => false,
        }
    }
}
