//! Which addresses to listen on (spec §7.3) and binding them with socket2.
//!
//! Deliberate differences from the C epmd 25.x: `0.0.0.0` (or `::`) in the address list
//! replaces the implicit IPv4 (or IPv6) loopback instead of colliding with it and exiting,
//! as upstream does since GHSA-h6f3-hx58-xhj6; a loopback that cannot be bound is only
//! logged, as upstream does since PR #11409.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use super::token::MAX_LISTENERS;
use crate::admin::{ConfigEntry, Source};

/// The most listening sockets `-address` may produce (the C epmd's 16th socket is refused).
pub const MAX_ADDRESS_SOCKETS: usize = MAX_LISTENERS - 1;

/// The listen backlog (`SOMAXCONN` of current glibc; the kernel caps it at `somaxconn`).
pub const BACKLOG: i32 = 4096;

/// One address to bind, and whether its failure is fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindTarget {
    /// The socket address.
    pub addr: SocketAddr,
    /// An implicit loopback (added because an address list was given) or a default
    /// wildcard: a failure other than "address in use" is only logged.
    pub optional: bool,
}

/// Why the listening sockets could not be set up.
#[derive(Debug)]
pub enum ListenError {
    /// The port is taken: another epmd already serves it (exit 0, as `erl` expects).
    AddressInUse {
        /// The address that was taken.
        addr: SocketAddr,
    },
    /// A listed address could not be bound.
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// More than [`MAX_ADDRESS_SOCKETS`] sockets were asked for.
    TooMany,
    /// No socket could be bound at all.
    NoSockets,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::AddressInUse { addr } => write!(
                f,
                "there is already a epmd running at port {} on ipaddr {}",
                addr.port(),
                addr.ip()
            ),
            ListenError::Bind { addr, source } => write!(f, "cannot bind {addr}: {source}"),
            ListenError::TooMany => {
                write!(f, "cannot listen on more than {MAX_LISTENERS} IP addresses")
            }
            ListenError::NoSockets => f.write_str("no listening socket could be opened"),
        }
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ListenError::Bind { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The sockets to bind for `addresses` (`None`: no list given) on `port`.
///
/// No list: `0.0.0.0` and `[::]`. A list: `127.0.0.1` and `::1` first (unless the list
/// holds the same family's wildcard), then each listed address, skipping exact duplicates.
pub fn bind_targets(addresses: Option<&[IpAddr]>, port: u16) -> Vec<BindTarget> {
    let v4_any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    let v6_any = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
    let Some(list) = addresses else {
        return [v4_any, v6_any]
            .into_iter()
            .map(|ip| BindTarget {
                addr: SocketAddr::new(ip, port),
                optional: true,
            })
            .collect();
    };
    let mut targets: Vec<BindTarget> = Vec::new();
    let v4_loop = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let v6_loop = IpAddr::V6(Ipv6Addr::LOCALHOST);
    for (lo, any) in [(v4_loop, v4_any), (v6_loop, v6_any)] {
        if !list.contains(&any) {
            targets.push(BindTarget {
                addr: SocketAddr::new(lo, port),
                optional: true,
            });
        }
    }
    for ip in list {
        if targets.iter().any(|t| t.addr.ip() == *ip) {
            continue;
        }
        targets.push(BindTarget {
            addr: SocketAddr::new(*ip, port),
            optional: false,
        });
    }
    targets
}

/// Listening sockets that were bound, and optional targets skipped with their error.
pub type Bound = (Vec<TcpListener>, Vec<(SocketAddr, io::Error)>);

/// Binds every target (SO_REUSEADDR, IPV6_V6ONLY, non-blocking, backlog [`BACKLOG`]).
///
/// Address-in-use is always fatal (it means an epmd already runs); other failures are
/// fatal only for non-optional targets. Each skipped target is returned with its error so
/// that the caller can log it.
pub fn bind_all(targets: &[BindTarget]) -> Result<Bound, ListenError> {
    if targets.len() > MAX_ADDRESS_SOCKETS {
        return Err(ListenError::TooMany);
    }
    let mut bound = Vec::new();
    let mut skipped = Vec::new();
    for t in targets {
        match bind_one(t.addr) {
            Ok(l) => bound.push(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                return Err(ListenError::AddressInUse { addr: t.addr })
            }
            Err(e) if t.optional => skipped.push((t.addr, e)),
            Err(source) => {
                return Err(ListenError::Bind {
                    addr: t.addr,
                    source,
                })
            }
        }
    }
    if bound.is_empty() {
        return Err(ListenError::NoSockets);
    }
    Ok((bound, skipped))
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    socket.set_cloexec(true)?;
    Ok(socket.into())
}

/// `report` with the `listen` entry for the sockets `listening` from `source` (and, for
/// sockets from systemd, `address` rewritten to their addresses).
pub fn listen_report(
    report: &[ConfigEntry],
    listening: &[SocketAddr],
    source: Source,
) -> Vec<ConfigEntry> {
    let mut out: Vec<ConfigEntry> = report.to_vec();
    if source == Source::Systemd {
        let mut ips: Vec<String> = Vec::new();
        for a in listening {
            let ip = a.ip().to_string();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        for e in out.iter_mut().filter(|e| e.key == "address") {
            e.value = ips.join(",");
            e.source = Source::Systemd;
        }
    }
    let listen = ConfigEntry {
        key: "listen".to_owned(),
        value: listening
            .iter()
            .map(SocketAddr::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        source,
    };
    match out.iter().position(|e| e.key == "address") {
        Some(i) => out.insert(i + 1, listen),
        None => out.push(listen),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(targets: &[BindTarget]) -> Vec<(String, bool)> {
        targets
            .iter()
            .map(|t| (t.addr.to_string(), t.optional))
            .collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn entry(key: &str, value: &str, source: Source) -> ConfigEntry {
        ConfigEntry {
            key: key.to_owned(),
            value: value.to_owned(),
            source,
        }
    }

    #[test]
    fn the_report_names_the_sockets_systemd_passed() {
        let report = [
            entry("port", "4369", Source::Default),
            entry("address", "0.0.0.0 ::", Source::Default),
            entry("debug", "0", Source::Default),
        ];
        let passed: Vec<SocketAddr> = vec![
            "127.0.0.1:4369".parse().unwrap(),
            "[::1]:4369".parse().unwrap(),
        ];
        assert_eq!(
            listen_report(&report, &passed, Source::Systemd),
            [
                entry("port", "4369", Source::Default),
                entry("address", "127.0.0.1,::1", Source::Systemd),
                entry("listen", "127.0.0.1:4369 [::1]:4369", Source::Systemd),
                entry("debug", "0", Source::Default),
            ]
        );
        let bound: Vec<SocketAddr> = vec!["127.0.0.1:4369".parse().unwrap()];
        let flagged = [entry("address", "127.0.0.1", Source::Flag)];
        assert_eq!(
            listen_report(&flagged, &bound, Source::Flag),
            [
                entry("address", "127.0.0.1", Source::Flag),
                entry("listen", "127.0.0.1:4369", Source::Flag),
            ]
        );
    }

    #[test]
    fn no_list_means_both_wildcards() {
        assert_eq!(
            addrs(&bind_targets(None, 4369)),
            [("0.0.0.0:4369".into(), true), ("[::]:4369".into(), true)]
        );
    }

    #[test]
    fn a_list_adds_the_loopbacks_first_and_skips_duplicates() {
        assert_eq!(
            addrs(&bind_targets(Some(&ips(&["127.0.0.1"])), 1)),
            [("127.0.0.1:1".into(), true), ("[::1]:1".into(), true)]
        );
        assert_eq!(
            addrs(&bind_targets(
                Some(&ips(&["127.0.0.2", "::1", "10.1.2.3"])),
                1
            )),
            [
                ("127.0.0.1:1".into(), true),
                ("[::1]:1".into(), true),
                ("127.0.0.2:1".into(), false),
                ("10.1.2.3:1".into(), false)
            ]
        );
    }

    #[test]
    fn a_wildcard_in_the_list_replaces_its_loopback() {
        assert_eq!(
            addrs(&bind_targets(Some(&ips(&["0.0.0.0"])), 7)),
            [("[::1]:7".into(), true), ("0.0.0.0:7".into(), false)]
        );
        assert_eq!(
            addrs(&bind_targets(Some(&ips(&["::", "0.0.0.0"])), 7)),
            [("[::]:7".into(), false), ("0.0.0.0:7".into(), false)]
        );
    }

    #[test]
    fn too_many_addresses_are_refused() {
        let list: Vec<IpAddr> = (2..16)
            .map(|i| format!("127.0.0.{i}").parse().unwrap())
            .collect();
        let targets = bind_targets(Some(&list), 0);
        assert_eq!(targets.len(), 16);
        assert!(matches!(bind_all(&targets), Err(ListenError::TooMany)));
    }

    #[test]
    fn address_in_use_is_reported() {
        let first = bind_all(&bind_targets(Some(&ips(&["127.0.0.1"])), 0))
            .unwrap()
            .0;
        let port = first[0].local_addr().unwrap().port();
        let again = bind_all(&[BindTarget {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            optional: true,
        }]);
        assert!(matches!(again, Err(ListenError::AddressInUse { .. })));
    }
}
