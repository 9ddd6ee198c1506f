//! What the per-source connection cap counts as one source: an IPv4 address, or an IPv6
//! network of a configurable prefix (a /64 by default, as one host or one customer usually
//! holds a whole /64 and could otherwise open `max_per_source` connections from each of
//! its 2^64 addresses).

use std::net::{IpAddr, Ipv6Addr};

/// The default prefix length that makes IPv6 sources one source.
pub const DEFAULT_IPV6_SOURCE_PREFIX: u8 = 64;

/// The source `ip` counts as: itself for IPv4 (and IPv4-mapped IPv6, taken as IPv4), its
/// first `ipv6_prefix` bits for IPv6 (128 or more: the exact address).
pub fn source_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let keep = u32::from(ipv6_prefix.min(128));
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_are_counted_per_prefix() {
        // Two addresses of one /64 are one source by default; another /64 is another.
        let a = source_key(ip("2001:db8:1:2::5"), DEFAULT_IPV6_SOURCE_PREFIX);
        let b = source_key(ip("2001:db8:1:2:ffff::7"), DEFAULT_IPV6_SOURCE_PREFIX);
        let c = source_key(ip("2001:db8:1:3::5"), DEFAULT_IPV6_SOURCE_PREFIX);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, ip("2001:db8:1:2::"));
        // /128 counts exact addresses; /0 makes all of IPv6 one source.
        assert_ne!(
            source_key(ip("2001:db8::1"), 128),
            source_key(ip("2001:db8::2"), 128)
        );
        assert_eq!(
            source_key(ip("2001:db8::1"), 0),
            source_key(ip("fe80::1"), 0)
        );
        // Every prefix keeps exactly its bits.
        let full = ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        for p in 0..=128u8 {
            let IpAddr::V6(k) = source_key(full, p) else {
                panic!("v6 expected");
            };
            assert_eq!(u128::from(k).count_ones(), u32::from(p), "/{p}");
        }
    }

    #[test]
    fn ipv4_sources_stay_exact() {
        assert_eq!(source_key(ip("10.1.2.3"), 64), ip("10.1.2.3"));
        assert_eq!(source_key(ip("::ffff:10.1.2.3"), 64), ip("10.1.2.3"));
        assert_ne!(source_key(ip("10.1.2.3"), 0), source_key(ip("10.1.2.4"), 0));
    }
}
