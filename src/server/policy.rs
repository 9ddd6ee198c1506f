//! Access policies: who may send NAMES and who may send PORT_PLEASE2 (the default, `any`,
//! is the C epmd's behaviour). Lists of CIDR blocks, with `local` for the peers spec §5
//! calls local and `any` for everyone.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One entry of a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessRule {
    /// Everyone.
    Any,
    /// Local peers (127.0.0.0/8, ::1, or the connection's own local address).
    Local,
    /// A CIDR block.
    Cidr {
        /// The network address.
        net: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
}

/// An allow list; a peer is allowed when any rule matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    rules: Vec<AccessRule>,
}

/// A policy that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid access rule \"{}\" (use any, local or CIDR blocks)",
            self.0
        )
    }
}

impl std::error::Error for PolicyError {}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy::any()
    }
}

impl AccessPolicy {
    /// Everyone allowed (the compatible default).
    pub fn any() -> AccessPolicy {
        AccessPolicy {
            rules: vec![AccessRule::Any],
        }
    }

    /// Parses a comma- or space-separated list of `any`, `local`, addresses and CIDR blocks.
    pub fn parse(text: &str) -> Result<AccessPolicy, PolicyError> {
        let mut rules = Vec::new();
        for item in text.split([',', ' ']).filter(|s| !s.is_empty()) {
            rules.push(parse_rule(item).ok_or_else(|| PolicyError(item.to_owned()))?);
        }
        if rules.is_empty() {
            return Err(PolicyError(text.to_owned()));
        }
        Ok(AccessPolicy { rules })
    }

    /// True when `peer` may send the request; `is_local` is its locality (spec §5).
    pub fn allows(&self, peer: SocketAddr, is_local: bool) -> bool {
        let ip = canonical(peer.ip());
        self.rules.iter().any(|r| match *r {
            AccessRule::Any => true,
            AccessRule::Local => is_local,
            AccessRule::Cidr { net, prefix } => in_block(ip, net, prefix),
        })
    }

    /// True when the policy lets everyone in (nothing to check).
    pub fn is_any(&self) -> bool {
        self.rules.contains(&AccessRule::Any)
    }
}

impl fmt::Display for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                AccessRule::Any => f.write_str("any")?,
                AccessRule::Local => f.write_str("local")?,
                AccessRule::Cidr { net, prefix } => write!(f, "{net}/{prefix}")?,
            }
        }
        Ok(())
    }
}

fn parse_rule(item: &str) -> Option<AccessRule> {
    match item {
        "any" => return Some(AccessRule::Any),
        "local" => return Some(AccessRule::Local),
        _ => {}
    }
    let (addr, prefix) = match item.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (item, None),
    };
    let net: IpAddr = addr.parse().ok()?;
    let max = if net.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return None;
    }
    match net {
        // An IPv4-mapped block (`::ffff:a.b.c.d/p`) is the IPv4 block `a.b.c.d/(p - 96)`,
        // as peers are compared in their IPv4 form; one wider than the mapped range is
        // refused rather than guessed at.
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Some(AccessRule::Cidr {
                net: IpAddr::V4(v4),
                prefix: prefix.checked_sub(96)?,
            }),
            None => Some(AccessRule::Cidr { net, prefix }),
        },
        IpAddr::V4(_) => Some(AccessRule::Cidr { net, prefix }),
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let prefix = u32::from(prefix);
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        // A prefix longer than the family (never parsed) matches nothing.
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        let p = AccessPolicy::parse("local, 10.0.0.0/8,2001:db8::/32 192.0.2.7").unwrap();
        assert_eq!(p.to_string(), "local,10.0.0.0/8,2001:db8::/32,192.0.2.7/32");
        assert!(AccessPolicy::parse("").is_err());
        assert!(AccessPolicy::parse("10.0.0.0/33").is_err());
        assert!(AccessPolicy::parse("nobody").is_err());
        assert!(AccessPolicy::parse("any").unwrap().is_any());
    }

    /// Whether the first `prefix` bits of `a` and `b` (as big-endian bit strings) agree:
    /// the reference `in_block` is checked against.
    fn same_prefix(a: &[u8], b: &[u8], prefix: usize) -> bool {
        (0..prefix).all(|i| (a[i / 8] >> (7 - i % 8)) & 1 == (b[i / 8] >> (7 - i % 8)) & 1)
    }

    /// `bytes` with bit `i` (from the most significant) flipped.
    fn flip(bytes: &[u8], i: usize) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v[i / 8] ^= 1 << (7 - i % 8);
        v
    }

    fn v4(b: &[u8]) -> IpAddr {
        IpAddr::from(<[u8; 4]>::try_from(b).unwrap())
    }

    fn v6(b: &[u8]) -> IpAddr {
        IpAddr::from(<[u8; 16]>::try_from(b).unwrap())
    }

    /// Every prefix of every family, written as a rule and parsed: the block matches
    /// exactly the addresses that share its first `prefix` bits (checked at the network
    /// address and with each bit flipped), and an IPv4-mapped rule `::ffff:a.b.c.d/p` is
    /// the IPv4 block `a.b.c.d/(p - 96)` (refused below /96).
    #[test]
    fn every_prefix_matches_exactly_its_block() {
        let net4 = [0xc0u8, 0x00, 0x02, 0xa7];
        let net6: [u8; 16] = [
            0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x0f, 0x1e,
            0x2d, 0x3c,
        ];
        let check = |rule: &str, net: &[u8], prefix: usize, to_ip: fn(&[u8]) -> IpAddr| {
            let p = AccessPolicy::parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}"));
            let mut probes = vec![net.to_vec()];
            probes.extend((0..net.len() * 8).map(|i| flip(net, i)));
            for probe in probes {
                let ip = to_ip(&probe);
                assert_eq!(
                    p.allows(SocketAddr::new(ip, 1), false),
                    same_prefix(net, &probe, prefix),
                    "rule {rule} against {ip}"
                );
            }
        };
        for prefix in 0..=32usize {
            let rule = format!("{}/{prefix}", v4(&net4));
            check(&rule, &net4, prefix, v4);
            // The same block written as an IPv4-mapped IPv6 rule.
            let mapped = format!("::ffff:{}/{}", v4(&net4), prefix + 96);
            check(&mapped, &net4, prefix, v4);
            assert_eq!(
                AccessPolicy::parse(&mapped).unwrap().to_string(),
                format!("{}/{prefix}", v4(&net4))
            );
            // And an IPv4-mapped peer is matched as its IPv4 address.
            let p = AccessPolicy::parse(&rule).unwrap();
            let mapped_peer: SocketAddr = format!("[::ffff:{}]:1", v4(&net4)).parse().unwrap();
            assert!(p.allows(mapped_peer, false), "{rule}");
        }
        for prefix in 0..=128usize {
            check(&format!("{}/{prefix}", v6(&net6)), &net6, prefix, v6);
            let mapped = format!("::ffff:{}/{prefix}", v4(&net4));
            assert_eq!(
                AccessPolicy::parse(&mapped).is_ok(),
                prefix >= 96,
                "{mapped}"
            );
        }
        assert!(AccessPolicy::parse("10.0.0.0/33").is_err());
        assert!(AccessPolicy::parse("2001:db8::/129").is_err());
    }

    /// The finding: `--names-allow ::ffff:192.0.2.7` let every IPv4 peer list names (or
    /// panicked in a debug build).
    #[test]
    fn mapped_host_rule_matches_only_that_host() {
        let p = AccessPolicy::parse("::ffff:192.0.2.7").unwrap();
        assert_eq!(p.to_string(), "192.0.2.7/32");
        assert!(!p.allows(sa("127.0.0.1:1"), false));
        assert!(!p.allows(sa("192.0.2.8:1"), false));
        assert!(p.allows(sa("192.0.2.7:1"), false));
        assert!(p.allows(sa("[::ffff:192.0.2.7]:1"), false));
    }

    #[test]
    fn matching() {
        let p = AccessPolicy::parse("local,10.0.0.0/8,2001:db8::/32").unwrap();
        assert!(p.allows(sa("10.1.2.3:1"), false));
        assert!(p.allows(sa("[::ffff:10.1.2.3]:1"), false));
        assert!(!p.allows(sa("11.0.0.1:1"), false));
        assert!(p.allows(sa("[2001:db8::5]:1"), false));
        assert!(!p.allows(sa("[2001:db9::5]:1"), false));
        assert!(p.allows(sa("192.0.2.1:1"), true));
        let zero = AccessPolicy::parse("0.0.0.0/0").unwrap();
        assert!(zero.allows(sa("1.2.3.4:5"), false));
        assert!(!zero.allows(sa("[::2]:5"), false));
    }
}
