//! `epmd-rs wait NAME [--gone]`: polls an epmd with PORT_PLEASE2 until NAME is registered
//! (or, with `--gone`, is not), for start-up scripts and container probes that loop over
//! `epmd -names` today. An epmd that does not answer counts as "not registered".

use std::fmt;
use std::time::{Duration, Instant};

use crate::query::{self, QueryError};

/// The time between two lookups.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitFor {
    /// The epmd's host.
    pub host: String,
    /// The epmd's port.
    pub port: u16,
    /// The node name (before the `@`).
    pub name: String,
    /// Wait for the name to be gone instead of registered.
    pub gone: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

/// How waiting ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// The name is registered (or gone, with `--gone`), after this many lookups.
    Reached {
        /// Lookups made.
        lookups: u64,
        /// The node's port when it is registered.
        port: Option<u16>,
    },
    /// The timeout passed first.
    TimedOut,
}

/// Why waiting could not start.
#[derive(Debug)]
pub enum WaitError {
    /// The name cannot be a node name.
    BadName(String),
    /// The timeout is not a number of seconds.
    BadTimeout(String),
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::BadName(n) => write!(f, "not a node name: {n:?}"),
            WaitError::BadTimeout(t) => write!(f, "not a number of seconds: {t:?}"),
        }
    }
}

impl std::error::Error for WaitError {}

/// `--timeout` as a duration: seconds, with a fraction, not negative.
pub fn parse_timeout(text: &str) -> Result<Duration, WaitError> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| WaitError::BadTimeout(text.to_owned()))
}

/// Polls until `what` holds or its timeout passes.
pub fn wait(what: &WaitFor) -> Result<Waited, WaitError> {
    crate::protocol::NodeName::new(what.name.as_bytes())
        .map_err(|_| WaitError::BadName(what.name.clone()))?;
    let deadline = Instant::now() + what.timeout;
    let mut lookups = 0;
    loop {
        lookups += 1;
        let port = match query::port(&what.host, what.port, &what.name) {
            Ok(a) if a.found => a.port,
            Ok(_) => None,
            Err(QueryError::BadName) => return Err(WaitError::BadName(what.name.clone())),
            // Not answering (yet): not registered there.
            Err(_) => None,
        };
        if port.is_some() != what.gone {
            return Ok(Waited::Reached { lookups, port });
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Waited::TimedOut);
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse() {
        assert_eq!(parse_timeout("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_timeout("0.25").unwrap(), Duration::from_millis(250));
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("soon").is_err());
    }

    #[test]
    fn an_unanswering_epmd_means_not_registered() {
        // A port nothing listens on: a closed listener's port.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut w = WaitFor {
            host: "127.0.0.1".into(),
            port,
            name: "nobody".into(),
            gone: false,
            timeout: Duration::from_millis(50),
        };
        assert_eq!(wait(&w).unwrap(), Waited::TimedOut);
        w.gone = true;
        assert_eq!(
            wait(&w).unwrap(),
            Waited::Reached {
                lookups: 1,
                port: None
            }
        );
        w.name = "x".repeat(300);
        assert!(matches!(wait(&w), Err(WaitError::BadName(_))));
    }
}
