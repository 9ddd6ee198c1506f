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
    (prefix <= max).then_some(AccessRule::Cidr {
        net: canonical(net),
        prefix,
    })
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn in_block(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
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
