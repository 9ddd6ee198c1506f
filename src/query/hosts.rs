//! The host list of `query names --hosts H1[:PORT],H2... | --hosts-file FILE`: parsing only.
//!
//! A hosts file is either Erlang's `.hosts.erlang` (`'host'.` terms, `%` comments) or one
//! host per line (`#` comments); both may be mixed. `[v6]:port` brackets an IPv6 address
//! that has a port; a bare address with several colons is an IPv6 address without one.

use std::fmt;

/// One host to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host name or address as given (without brackets).
    pub host: String,
    /// The epmd port.
    pub port: u16,
}

/// Why a host list was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostsError {
    /// An entry's port is not a number in 1–65535.
    BadPort(String),
    /// A `'host'.` term is not closed.
    BadTerm(String),
    /// The list holds no host.
    Empty,
}

impl fmt::Display for HostsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostsError::BadPort(e) => write!(f, "bad port in host entry {e:?}"),
            HostsError::BadTerm(e) => write!(f, "bad .hosts.erlang term {e:?}"),
            HostsError::Empty => f.write_str("no host to ask"),
        }
    }
}

impl std::error::Error for HostsError {}

/// Parses one entry: `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
pub fn parse_entry(entry: &str, default_port: u16) -> Result<Target, HostsError> {
    let bad = || HostsError::BadPort(entry.to_owned());
    let port = |p: &str| p.parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(bad);
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => default_port,
            _ => port(after.strip_prefix(':').ok_or_else(bad)?)?,
        };
        return Ok(Target {
            host: host.to_owned(),
            port,
        });
    }
    match entry.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => Ok(Target {
            host: host.to_owned(),
            port: port(p)?,
        }),
        _ => Ok(Target {
            host: entry.to_owned(),
            port: default_port,
        }),
    }
}

/// Parses `--hosts H1[:PORT],H2...` (commas or spaces).
pub fn parse_list(list: &str, default_port: u16) -> Result<Vec<Target>, HostsError> {
    let targets = list
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|e| parse_entry(e, default_port))
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err(HostsError::Empty);
    }
    Ok(targets)
}

/// Parses a hosts file: `.hosts.erlang` terms (`'h1'. 'h2'.`, `%` comments) and plain
/// lines (`h3`, `h4:4370`, `#` comments).
pub fn parse_file(text: &str, default_port: u16) -> Result<Vec<Target>, HostsError> {
    let mut targets = Vec::new();
    for line in text.lines() {
        let line = line.split('%').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('\'') {
            // One or more quoted atoms, each ended by a period.
            let mut rest = line;
            while let Some(after) = rest.strip_prefix('\'') {
                let (host, tail) = after
                    .split_once('\'')
                    .ok_or_else(|| HostsError::BadTerm(line.to_owned()))?;
                let tail = tail.trim_start();
                let tail = tail
                    .strip_prefix('.')
                    .ok_or_else(|| HostsError::BadTerm(line.to_owned()))?;
                targets.push(parse_entry(host, default_port)?);
                rest = tail.trim_start();
            }
            if !rest.is_empty() {
                return Err(HostsError::BadTerm(line.to_owned()));
            }
        } else {
            let entry = line.trim_end_matches('.');
            targets.push(parse_entry(entry, default_port)?);
        }
    }
    if targets.is_empty() {
        return Err(HostsError::Empty);
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn entries() {
        assert_eq!(parse_entry("h1", 4369), Ok(t("h1", 4369)));
        assert_eq!(parse_entry("h1:4370", 4369), Ok(t("h1", 4370)));
        assert_eq!(parse_entry("10.0.0.1:1", 4369), Ok(t("10.0.0.1", 1)));
        assert_eq!(parse_entry("::1", 4369), Ok(t("::1", 4369)));
        assert_eq!(parse_entry("[::1]", 4369), Ok(t("::1", 4369)));
        assert_eq!(parse_entry("[fe80::1]:99", 4369), Ok(t("fe80::1", 99)));
        for bad in ["h:0", "h:x", "h:70000", "[::1", "[::1]x", "[::1]:"] {
            assert!(
                matches!(parse_entry(bad, 1), Err(HostsError::BadPort(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn lists() {
        assert_eq!(
            parse_list("a, b:2 ,[::1]:3", 9),
            Ok(vec![t("a", 9), t("b", 2), t("::1", 3)])
        );
        assert_eq!(parse_list(" , ", 9), Err(HostsError::Empty));
    }

    #[test]
    fn hosts_erlang_and_plain_files() {
        let text = "% the cluster\n'db1'.\n'db2.example'. 'db3'.  % two on a line\n\n# plain\nweb1\nweb2:4370\n'10.0.0.9'.\n";
        assert_eq!(
            parse_file(text, 4369),
            Ok(vec![
                t("db1", 4369),
                t("db2.example", 4369),
                t("db3", 4369),
                t("web1", 4369),
                t("web2", 4370),
                t("10.0.0.9", 4369),
            ])
        );
        assert!(matches!(
            parse_file("'db1'\n", 1),
            Err(HostsError::BadTerm(_))
        ));
        assert!(matches!(
            parse_file("'db1. \n", 1),
            Err(HostsError::BadTerm(_))
        ));
        assert!(matches!(
            parse_file("'a'. x\n", 1),
            Err(HostsError::BadTerm(_))
        ));
        assert_eq!(parse_file("% nothing\n", 1), Err(HostsError::Empty));
    }
}
