//! The requests the bench sends and the exact replies it expects, built with the crate's
//! codec (`epmd_rs::protocol`), plus blocking helpers to register and hold nodes.
//!
//! Every benchmark node registers as a normal node, protocol 0, versions 6..5, no extra, so
//! a PORT2_RESP and a NAMES reply can be predicted byte for byte.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use epmd_rs::protocol::response::encode_port2;
use epmd_rs::protocol::text::{push_names_line, push_port_header};
use epmd_rs::protocol::{Alive2Reply, Alive2Request, NodeInfo, NodeName, NodeType, Request};

/// A node the bench registers.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// Its name (ASCII).
    pub(crate) name: String,
    /// Its distribution port.
    pub(crate) port: u16,
}

impl Node {
    /// The `i`-th node of a set named `prefix`.
    pub(crate) fn numbered(prefix: &str, i: usize) -> Node {
        Node {
            name: format!("{prefix}{i}"),
            port: 10_000 + (i % 50_000) as u16,
        }
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            port: self.port,
            node_type: NodeType::Normal,
            protocol: 0,
            highest_version: 6,
            lowest_version: 5,
            name: NodeName::new(self.name.as_bytes()).expect("bench names are valid"),
            extra: Vec::new(),
        }
    }
}

/// An ALIVE2_REQ frame registering `node` (HighestVersion 6, so the reply is ALIVE2_X_RESP).
pub(crate) fn alive2_frame(node: &Node) -> Vec<u8> {
    let info = node.info();
    Request::Alive2(Alive2Request {
        port: info.port,
        node_type: info.node_type,
        protocol: info.protocol,
        highest_version: info.highest_version,
        lowest_version: info.lowest_version,
        name: info.name.as_bytes().to_vec(),
        extra: info.extra,
    })
    .to_frame()
}

/// Appends an ALIVE2_REQ frame for a node called `name` to `out` without allocating (used
/// in the churn loop, where every request registers a fresh name).
pub(crate) fn push_alive2_frame(name: &[u8], port: u16, out: &mut Vec<u8>) {
    let payload_len = 13 + name.len();
    out.extend_from_slice(&(payload_len as u16).to_be_bytes());
    out.push(120);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&[NodeType::NORMAL, 0, 0, 6, 0, 5]);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name);
    out.extend_from_slice(&[0, 0]);
}

/// A PORT_PLEASE2_REQ frame for `name`.
pub(crate) fn port_please_frame(name: &str) -> Vec<u8> {
    Request::PortPlease2(NodeName::new(name.as_bytes()).expect("bench names are valid")).to_frame()
}

/// The NAMES_REQ frame.
pub(crate) fn names_frame() -> Vec<u8> {
    Request::Names.to_frame()
}

/// The exact PORT2_RESP for a registered `node`.
pub(crate) fn expected_port2(node: &Node) -> Vec<u8> {
    let mut out = Vec::new();
    encode_port2(Some(&node.info()), &mut out);
    out
}

/// The exact NAMES reply of a daemon on `port` holding `nodes`, given oldest first (the
/// reply lists the most recently registered first).
pub(crate) fn expected_names(port: u16, nodes: &[Node]) -> Vec<u8> {
    let mut out = Vec::new();
    push_port_header(u32::from(port), &mut out);
    for n in nodes.iter().rev() {
        push_names_line(n.name.as_bytes(), n.port, &mut out);
    }
    out
}

/// True when `buf` is exactly one successful ALIVE2 reply.
pub(crate) fn is_alive2_ok(buf: &[u8]) -> bool {
    Alive2Reply::decode(buf).is_some_and(|r| r.is_success())
}

/// Why a blocking registration did not produce a held registration.
#[derive(Debug)]
pub(crate) enum RegisterError {
    /// The bench itself ran out of file descriptors (EMFILE on `socket()`).
    BenchFds,
    /// Connecting, writing or reading failed (refused, reset, ...).
    Io(io::Error),
    /// The daemon closed the connection without a reply.
    Closed,
    /// No reply within the timeout.
    Timeout,
    /// A reply other than a successful ALIVE2 reply.
    Refused(Vec<u8>),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::BenchFds => f.write_str("the bench ran out of file descriptors"),
            RegisterError::Io(e) => write!(f, "{e}"),
            RegisterError::Closed => f.write_str("closed without a reply"),
            RegisterError::Timeout => f.write_str("no reply (timeout)"),
            RegisterError::Refused(b) => write!(f, "refused: {b:02x?}"),
        }
    }
}

/// A TCP socket bound to `from` with `IP_BIND_ADDRESS_NO_PORT`: the kernel picks the port
/// at `connect()` time, for the full address pair (see [`connect`]).
pub(crate) fn bound_socket(from: Ipv4Addr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads an int option value of the size we pass.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket.bind(&SocketAddr::from((from, 0)).into())?;
    Ok(socket)
}

/// Connects to `addr`, from the loopback address `from` if given.
///
/// Thousands of open connections from 127.0.0.1 to one port make the kernel search long for
/// a free ephemeral port on every `connect()` (the cost lands on the bench, hundreds of µs
/// per connection at 20,000). Spreading connections over other 127/8 source addresses
/// avoids that: with `IP_BIND_ADDRESS_NO_PORT` the port is chosen at `connect()` time for
/// the full address pair. Every 127/8 peer is local to epmd.
pub(crate) fn connect(
    addr: SocketAddr,
    from: Option<Ipv4Addr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(from) = from else {
        return TcpStream::connect_timeout(&addr, timeout);
    };
    let socket = bound_socket(from)?;
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

/// The source address of the `i`-th of many held connections: 127.0.1.1 to 127.0.1.250 in
/// turn, so that none carries more than a few hundred (see [`connect`]).
pub(crate) fn spread_source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1, 1 + (i % 250) as u8)
}

/// Registers `node` over a new connection (from `from`, if given) and returns that
/// connection, which holds the registration for as long as it stays open.
pub(crate) fn register(
    addr: SocketAddr,
    from: Option<Ipv4Addr>,
    node: &Node,
    timeout: Duration,
) -> Result<TcpStream, RegisterError> {
    let mut stream = connect(addr, from, timeout).map_err(|e| {
        if e.raw_os_error() == Some(libc::EMFILE) {
            RegisterError::BenchFds
        } else {
            RegisterError::Io(e)
        }
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(RegisterError::Io)?;
    stream
        .write_all(&alive2_frame(node))
        .map_err(RegisterError::Io)?;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 6 {
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(RegisterError::Closed),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(RegisterError::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(RegisterError::Io(e)),
        }
    }
    if is_alive2_ok(&buf[..got]) {
        Ok(stream)
    } else {
        Err(RegisterError::Refused(buf[..got].to_vec()))
    }
}

/// Registers every node, each over its own connection kept open (from
/// [`spread_source`] addresses); panics on failure (used to set up scenarios, where the
/// daemon must hold them all).
pub(crate) fn register_all(addr: SocketAddr, nodes: &[Node]) -> Vec<TcpStream> {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            register(addr, Some(spread_source(i)), n, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("registering {} on {addr}: {e}", n.name))
        })
        .collect()
}

/// Sends one request over a new connection (from `from`, if given) and reads the reply
/// until the daemon closes the connection. Returns the reply and how long the exchange took.
pub(crate) fn request_from(
    addr: SocketAddr,
    from: Option<Ipv4Addr>,
    frame: &[u8],
    timeout: Duration,
) -> io::Result<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut stream = connect(addr, from, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(frame)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok((reply, start.elapsed()))
}

/// [`request_from`] from the default source address.
pub(crate) fn request(
    addr: SocketAddr,
    frame: &[u8],
    timeout: Duration,
) -> io::Result<(Vec<u8>, Duration)> {
    request_from(addr, None, frame, timeout)
}
