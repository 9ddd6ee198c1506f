//! `epmd-rs doctor NODE@HOST`: why a node cannot be reached, found by ordered probes, each
//! printed as one line, ending in one [`Verdict`] with its own exit code.
//!
//! The probes, in order, stop at the first failure:
//! 1. resolve HOST as a node would (IPv4 first, as `inet_tcp_dist`);
//! 2. connect to its epmd and ask PORT_PLEASE2 (on a miss, list the names and near misses);
//! 3. connect to the distribution port;
//! 4. start the distribution [`handshake`]: send a name, read the status and the challenge
//!    (whose name is compared with NODE@HOST), and with a cookie finish the challenge.
//!
//! [`probe`] does the I/O; [`verdict`] and [`handshake`] are pure.

pub mod handshake;
pub mod near;
pub mod probe;
pub mod verdict;

use std::fmt;
use std::time::Duration;

use serde::Serialize;

pub use verdict::Verdict;

use crate::cli::DoctorArgs;

/// The default wait of each step.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// The most steps that wait: the whole run is bounded by this many step timeouts.
pub const MAX_WAITS: u32 = 8;

/// What to diagnose and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The node's name, the part before `@`.
    pub name: String,
    /// The host, the part after `@`.
    pub host: String,
    /// The epmd port on that host.
    pub epmd_port: u16,
    /// The wait of each step.
    pub timeout: Duration,
    /// The cookie, if the challenge should be finished.
    pub cookie: Option<Vec<u8>>,
}

/// Why the arguments were refused before any probe ran.
#[derive(Debug)]
pub enum NodeArgError {
    /// No `@`, or an empty name or host.
    NotNameAtHost,
    /// `--timeout` is not a positive number of seconds.
    BadTimeout,
    /// The cookie file could not be read.
    CookieFile(std::io::Error),
}

impl fmt::Display for NodeArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeArgError::NotNameAtHost => f.write_str("expected NODE@HOST, e.g. rabbit@db1"),
            NodeArgError::BadTimeout => f.write_str("--timeout takes a positive number of seconds"),
            NodeArgError::CookieFile(e) => write!(f, "cannot read the cookie file: {e}"),
        }
    }
}

impl std::error::Error for NodeArgError {}

impl PartialEq for NodeArgError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl Options {
    /// Validates `doctor`'s arguments: NAME@HOST, the timeout, the cookie (a cookie file's
    /// trailing whitespace is dropped, as `auth` reads `~/.erlang.cookie`).
    pub fn from_args(args: &DoctorArgs, epmd_port: u16) -> Result<Options, NodeArgError> {
        let (name, host) = split_node(&args.node)?;
        let timeout = args
            .timeout
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t > 0.0 && *t <= 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or(NodeArgError::BadTimeout)?;
        let cookie = match (&args.cookie, &args.cookie_file) {
            (Some(c), _) => Some(c.clone().into_bytes()),
            (None, Some(path)) => {
                let text = std::fs::read(path).map_err(NodeArgError::CookieFile)?;
                let end = text
                    .iter()
                    .rposition(|b| !b.is_ascii_whitespace())
                    .map_or(0, |i| i + 1);
                Some(text[..end].to_vec())
            }
            (None, None) => None,
        };
        Ok(Options {
            name: name.to_owned(),
            host: host.to_owned(),
            epmd_port,
            timeout,
            cookie,
        })
    }
}

/// Splits `NAME@HOST` as `dist_util:split_node/1` does (exactly one `@`, both sides
/// non-empty).
pub fn split_node(node: &str) -> Result<(&str, &str), NodeArgError> {
    match node.split_once('@') {
        Some((name, host)) if !name.is_empty() && !host.is_empty() && !host.contains('@') => {
            Ok((name, host))
        }
        _ => Err(NodeArgError::NotNameAtHost),
    }
}

/// One probe's line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The probe: `resolve`, `epmd`, `port_please`, `names`, `dist_connect`, `handshake`,
    /// `challenge` or `cookie`.
    pub step: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// The doctor's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// NAME@HOST as asked.
    pub node: String,
    /// The verdict word.
    pub verdict: Verdict,
    /// Its exit code.
    pub exit_code: u8,
    /// What to check next.
    pub hint: &'static str,
    /// The probes run, in order.
    pub steps: Vec<Step>,
    /// Wall time of the run, milliseconds.
    pub elapsed_ms: u64,
}

impl Report {
    /// Builds the report for `verdict` after `steps`.
    pub fn new(node: String, verdict: Verdict, steps: Vec<Step>, elapsed: Duration) -> Report {
        Report {
            node,
            verdict,
            exit_code: verdict.exit_code(),
            hint: verdict.hint(),
            steps,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The human-readable report: one line per probe, then the verdict and the hint.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let width = self.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
        for s in &self.steps {
            let mark = if s.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!(
                "{mark} {:width$}  {}\n",
                s.step,
                s.detail,
                width = width
            ));
        }
        out.push_str(&format!(
            "verdict: {} (exit {}): {}\n",
            self.verdict, self.exit_code, self.hint
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_arguments_split_like_dist_util() {
        assert_eq!(split_node("a@h"), Ok(("a", "h")));
        assert_eq!(split_node("a@10.0.0.1"), Ok(("a", "10.0.0.1")));
        for bad in ["a", "@h", "a@", "a@b@c", ""] {
            assert_eq!(split_node(bad), Err(NodeArgError::NotNameAtHost), "{bad}");
        }
    }

    #[test]
    fn options_from_args() {
        let args = |node: &str, timeout: &str| DoctorArgs {
            node: node.into(),
            port: None,
            timeout: timeout.into(),
            cookie: None,
            cookie_file: None,
            json: false,
        };
        let o = Options::from_args(&args("a@h", "0.5"), 4370).unwrap();
        assert_eq!(
            (o.name.as_str(), o.host.as_str(), o.epmd_port),
            ("a", "h", 4370)
        );
        assert_eq!((o.timeout, o.cookie), (Duration::from_millis(500), None));
        for bad in ["0", "-1", "x", "nan", "inf"] {
            assert_eq!(
                Options::from_args(&args("a@h", bad), 1),
                Err(NodeArgError::BadTimeout),
                "{bad}"
            );
        }
        let dir = std::env::temp_dir().join(format!("doctor-cookie-{}", std::process::id()));
        std::fs::write(&dir, b"SECRET \n").unwrap();
        let mut a = args("a@h", "1");
        a.cookie_file = Some(dir.clone());
        assert_eq!(
            Options::from_args(&a, 1).unwrap().cookie.unwrap(),
            b"SECRET"
        );
        std::fs::remove_file(&dir).unwrap();
        assert!(matches!(
            Options::from_args(&a, 1),
            Err(NodeArgError::CookieFile(_))
        ));
        a.cookie = Some("c".into());
        assert_eq!(Options::from_args(&a, 1).unwrap().cookie.unwrap(), b"c");
    }

    #[test]
    fn text_has_one_line_per_step_and_the_verdict() {
        let r = Report::new(
            "a@h".into(),
            Verdict::NameNotRegistered,
            vec![
                Step {
                    step: "resolve",
                    ok: true,
                    detail: "h is 10.0.0.1".into(),
                },
                Step {
                    step: "port_please",
                    ok: false,
                    detail: "a is not registered".into(),
                },
            ],
            Duration::from_millis(3),
        );
        let t = r.text();
        assert_eq!(t.lines().count(), 3);
        assert!(t.starts_with("ok   resolve      h is 10.0.0.1\nFAIL port_please  a is"));
        assert!(t.contains("verdict: name_not_registered (exit 13): Check"));
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["verdict"], "name_not_registered");
        assert_eq!(j["exit_code"], 13);
        assert_eq!(j["steps"][1]["ok"], false);
    }
}
