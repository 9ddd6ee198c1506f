//! Locality (spec §5): which peers may send ALIVE2, DUMP, KILL and STOP.

use std::net::{IpAddr, SocketAddr};

/// True when `peer` counts as local for a connection that arrived on `local`.
///
/// As the C epmd decides at accept time: an IPv4 peer in 127.0.0.0/8, the IPv6 peer `::1`, or
/// a peer whose address equals the connection's local address ("my own eth0 address"). We
/// also accept IPv4-mapped loopback (`::ffff:127.x.y.z`), which a dual-stack socket shows
/// for a 127/8 client; the C epmd compares those byte for byte only.
pub fn is_local(peer: SocketAddr, local: SocketAddr) -> bool {
    let peer_ip = canonical(peer.ip());
    if peer_ip.is_loopback() {
        return true;
    }
    peer_ip == canonical(local.ip())
}

/// True when `peer` is a loopback address (127.0.0.0/8, ::1, or IPv4-mapped loopback):
/// local without looking at the connection's own address.
pub fn is_local_loopback(peer: SocketAddr) -> bool {
    canonical(peer.ip()).is_loopback()
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_and_same_address_are_local() {
        let local = sa("10.0.0.5:4369");
        assert!(is_local(sa("127.0.0.1:5000"), local));
        assert!(is_local(sa("127.9.9.9:5000"), local));
        assert!(is_local(sa("[::1]:5000"), sa("[::1]:4369")));
        assert!(is_local(
            sa("[::ffff:127.0.0.1]:5000"),
            sa("[::ffff:10.0.0.5]:4369")
        ));
        assert!(is_local(sa("10.0.0.5:6000"), local));
        assert!(is_local(sa("[fe80::1]:1"), sa("[fe80::1]:4369")));
    }

    #[test]
    fn others_are_not() {
        let local = sa("10.0.0.5:4369");
        assert!(!is_local(sa("10.0.0.6:5000"), local));
        assert!(!is_local(sa("[::2]:5000"), sa("[::1]:4369")));
        assert!(!is_local(sa("[fe80::2]:1"), sa("[fe80::1]:4369")));
    }
}
