//! `epmd-rs query`: ask any epmd (ours or the C one, local or remote, IPv4 or IPv6) for its
//! names or for one node's port, with connect and read timeouts and one-line errors;
//! [`fanout`] asks many hosts (parsed by [`hosts`]) at once.

pub mod fanout;
pub mod hosts;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admin::table::render;
use crate::protocol::{NodeName, Port2Reply, Request};

/// Connect timeout per address.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Total time allowed for the reply.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most reply bytes read (a NAMES reply of many thousand nodes fits).
pub const MAX_REPLY: usize = 16 << 20;

/// Why a query failed.
#[derive(Debug)]
pub enum QueryError {
    /// The host name did not resolve.
    Resolve(String, io::Error),
    /// No address of the host accepted the connection.
    Unreachable(String, io::Error),
    /// Sending or reading failed.
    Io(io::Error),
    /// No complete reply within the read timeout.
    Timeout,
    /// The reply is not a valid epmd reply.
    Garbage(&'static str),
    /// The node name is not a valid node name.
    BadName,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::Resolve(h, e) => write!(f, "cannot resolve {h}: {e}"),
            QueryError::Unreachable(a, e) => write!(f, "cannot connect to epmd at {a}: {e}"),
            QueryError::Io(e) => write!(f, "connection to epmd failed: {e}"),
            QueryError::Timeout => f.write_str("no reply from epmd within the read timeout"),
            QueryError::Garbage(what) => write!(f, "garbage reply, not an epmd: {what}"),
            QueryError::BadName => f.write_str("invalid node name"),
        }
    }
}

impl std::error::Error for QueryError {}

/// The NAMES answer.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct NamesAnswer {
    /// The port epmd reports in its header.
    pub epmd_port: u32,
    /// Registered nodes, in the order epmd sent them.
    pub nodes: Vec<NamedPort>,
}

/// One NAMES line.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NamedPort {
    /// Node name.
    pub name: String,
    /// Distribution port.
    pub port: u16,
}

/// The PORT_PLEASE2 answer.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PortAnswer {
    /// The name asked for.
    pub name: String,
    /// Whether it is registered.
    pub found: bool,
    /// Distribution port.
    pub port: Option<u16>,
    /// Node type.
    pub node_type: Option<String>,
    /// Protocol byte.
    pub protocol: Option<u8>,
    /// Highest version.
    pub highest_version: Option<u16>,
    /// Lowest version.
    pub lowest_version: Option<u16>,
    /// Extra bytes, hex-encoded.
    pub extra_hex: Option<String>,
}

/// Sends `request` to the epmd at `host:port` and reads until it closes.
fn exchange(host: &str, port: u16, request: &Request) -> Result<Vec<u8>, QueryError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| QueryError::Resolve(host.to_owned(), e))?
        .collect();
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream =
        stream.ok_or_else(|| QueryError::Unreachable(format!("{host}:{port}"), last))?;
    stream
        .write_all(&request.to_frame())
        .map_err(QueryError::Io)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QueryError::Timeout);
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(QueryError::Io)?;
        match stream.read(&mut buf) {
            Ok(0) => return Ok(reply),
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.len() > MAX_REPLY {
                    return Err(QueryError::Garbage("reply too large"));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(QueryError::Timeout)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(QueryError::Io(e)),
        }
    }
}

/// NAMES against `host:port`.
pub fn names(host: &str, port: u16) -> Result<NamesAnswer, QueryError> {
    parse_names(&exchange(host, port, &Request::Names)?)
}

/// Parses a NAMES reply strictly: the header, then `name N at port P` lines.
pub fn parse_names(reply: &[u8]) -> Result<NamesAnswer, QueryError> {
    let (header, rest) = reply
        .split_first_chunk::<4>()
        .ok_or(QueryError::Garbage("reply shorter than the 4-byte header"))?;
    let text = std::str::from_utf8(rest).map_err(|_| QueryError::Garbage("not UTF-8 text"))?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(QueryError::Garbage("unterminated line"));
    }
    let mut nodes = Vec::new();
    for line in text.lines() {
        let parsed = line
            .strip_prefix("name ")
            .and_then(|l| l.rsplit_once(" at port "))
            .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)));
        let (name, port) = parsed.ok_or(QueryError::Garbage("line is not 'name N at port P'"))?;
        nodes.push(NamedPort {
            name: name.to_owned(),
            port,
        });
    }
    Ok(NamesAnswer {
        epmd_port: u32::from_be_bytes(*header),
        nodes,
    })
}

/// PORT_PLEASE2 for `name` against `host:port`.
pub fn port(host: &str, port: u16, name: &str) -> Result<PortAnswer, QueryError> {
    let node = NodeName::new(name.as_bytes()).map_err(|_| QueryError::BadName)?;
    let reply = exchange(host, port, &Request::PortPlease2(node))?;
    if reply.is_empty() {
        return Err(QueryError::Garbage("epmd closed without a reply"));
    }
    match Port2Reply::decode(&reply).ok_or(QueryError::Garbage("malformed PORT2_RESP"))? {
        Port2Reply::NotFound(_) => Ok(PortAnswer {
            name: name.to_owned(),
            found: false,
            port: None,
            node_type: None,
            protocol: None,
            highest_version: None,
            lowest_version: None,
            extra_hex: None,
        }),
        Port2Reply::Found(info) => Ok(PortAnswer {
            name: info.name.as_str().to_owned(),
            found: true,
            port: Some(info.port),
            node_type: Some(info.node_type.to_string()),
            protocol: Some(info.protocol),
            highest_version: Some(info.highest_version),
            lowest_version: Some(info.lowest_version),
            extra_hex: Some(info.extra.iter().map(|b| format!("{b:02x}")).collect()),
        }),
    }
}

/// The NAMES answer as a table.
pub fn names_table(a: &NamesAnswer) -> String {
    let rows: Vec<Vec<String>> = a
        .nodes
        .iter()
        .map(|n| vec![n.name.clone(), n.port.to_string()])
        .collect();
    format!(
        "epmd port {}\n{}",
        a.epmd_port,
        render(&["NAME", "PORT"], &rows)
    )
}

/// The PORT_PLEASE2 answer as a table.
pub fn port_table(a: &PortAnswer) -> String {
    if !a.found {
        return format!("{}: not registered\n", a.name);
    }
    let opt = |v: Option<String>| v.unwrap_or_default();
    render(
        &["NAME", "PORT", "TYPE", "PROTO", "HIGH", "LOW", "EXTRA"],
        &[vec![
            a.name.clone(),
            opt(a.port.map(|p| p.to_string())),
            opt(a.node_type.clone()),
            opt(a.protocol.map(|p| p.to_string())),
            opt(a.highest_version.map(|p| p.to_string())),
            opt(a.lowest_version.map(|p| p.to_string())),
            a.extra_hex
                .clone()
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "-".into()),
        ]],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_replies_parse_strictly() {
        let a = parse_names(b"\x00\x00\x11\x11name a at port 1\nname b c at port 65535\n").unwrap();
        assert_eq!(a.epmd_port, 4369);
        assert_eq!(a.nodes.len(), 2);
        assert_eq!(a.nodes[1].name, "b c");
        assert!(parse_names(b"\x00\x00").is_err());
        assert!(parse_names(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_err());
        assert!(parse_names(b"\x00\x00\x11\x11name a at port 1").is_err());
        assert_eq!(parse_names(b"\x00\x00\x11\x11").unwrap().nodes, vec![]);
    }
}
