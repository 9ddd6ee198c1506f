//! The `epmd-rs admin` client: ask the daemon for a view over its Unix socket and print it
//! as a table or as JSON.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::table::render;
use super::{ConfigEntry, NodeEvent, NodeView, OldView, StatsView, View, WatchEvent};

/// Why an admin command failed.
#[derive(Debug)]
pub enum AdminClientError {
    /// No socket path was given and none could be derived.
    NoPath,
    /// The daemon's socket could not be reached.
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The process serving the socket runs as a user the client does not trust (neither
    /// root, nor the client's user, nor the owner of a private directory holding it).
    Untrusted {
        /// The socket path.
        path: PathBuf,
        /// The uid of the process serving it.
        uid: u32,
    },
    /// Reading or writing the socket failed.
    Io(io::Error),
    /// The daemon's answer was not the expected JSON.
    BadReply(serde_json::Error),
    /// The daemon reported a failed hand-over (it keeps serving).
    UpgradeFailed,
}

impl fmt::Display for AdminClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminClientError::NoPath => {
                f.write_str("no admin socket path: pass --socket or set XDG_RUNTIME_DIR")
            }
            AdminClientError::Connect { path, source } => write!(
                f,
                "cannot reach the epmd-rs admin socket {}: {source}",
                path.display()
            ),
            AdminClientError::Untrusted { path, uid } => write!(
                f,
                "not trusting the admin socket {}: it is served by uid {uid}, neither root nor \
                 you, from a directory that is not that user's own",
                path.display()
            ),
            AdminClientError::Io(e) => write!(f, "admin socket: {e}"),
            AdminClientError::BadReply(e) => write!(f, "unexpected reply from the daemon: {e}"),
            AdminClientError::UpgradeFailed => f.write_str("the hand-over failed"),
        }
    }
}

impl std::error::Error for AdminClientError {}

/// Asks for `view` and writes the answer to `out` (a table, or JSON when `json`).
/// `watch` streams until the daemon closes the socket or writing fails.
pub fn run(
    path: &Path,
    view: View,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminClientError> {
    run_line(path, view, json, out)
}

/// Asks the daemon to hand itself over to a new process running its own binary; prints the
/// outcome. Fails with [`AdminClientError::UpgradeFailed`] when the daemon reports failure
/// (or refuses: only root and the daemon's own user may ask).
pub fn upgrade(path: &Path, json: bool, out: &mut dyn Write) -> Result<(), AdminClientError> {
    run_line(path, View::Upgrade, json, out)
}

/// Shows the node events the daemon remembers, of `name` only when given.
pub fn history(
    path: &Path,
    name: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminClientError> {
    let line = match name {
        Some(n) => format!("history {n}"),
        None => "history".to_owned(),
    };
    send_line(path, &line, View::History, json, out)
}

fn run_line(
    path: &Path,
    view: View,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminClientError> {
    send_line(path, view.word(), view, json, out)
}

fn send_line(
    path: &Path,
    request: &str,
    view: View,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AdminClientError> {
    let mut stream = UnixStream::connect(path).map_err(|source| AdminClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    let uid = super::peer::peer_uid(&stream).map_err(AdminClientError::Io)?;
    if !super::peer::daemon_trusted(uid, path) {
        return Err(AdminClientError::Untrusted {
            path: path.to_owned(),
            uid,
        });
    }
    let line = format!("{request}\n");
    stream
        .write_all(line.as_bytes())
        .map_err(AdminClientError::Io)?;
    if view == View::Watch {
        return watch(stream, json, out);
    }
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .map_err(AdminClientError::Io)?;
    if view == View::Upgrade {
        let v: serde_json::Value =
            serde_json::from_slice(&reply).map_err(AdminClientError::BadReply)?;
        let ok = v.get("ok").and_then(|o| o.as_bool()) == Some(true);
        let text = if json {
            format!("{v}\n")
        } else if ok {
            format!("handed over to pid {}\n", v["pid"])
        } else {
            format!(
                "hand-over failed, still serving: {}\n",
                v["error"].as_str().unwrap_or("?")
            )
        };
        out.write_all(text.as_bytes())
            .map_err(AdminClientError::Io)?;
        return if ok {
            Ok(())
        } else {
            Err(AdminClientError::UpgradeFailed)
        };
    }
    let text = if json {
        // Validate, then print as the daemon sent it.
        serde_json::from_slice::<serde_json::Value>(&reply).map_err(AdminClientError::BadReply)?;
        String::from_utf8_lossy(&reply).trim_end().to_owned() + "\n"
    } else {
        render_view(view, &reply)?
    };
    out.write_all(text.as_bytes()).map_err(AdminClientError::Io)
}

fn render_view(view: View, reply: &[u8]) -> Result<String, AdminClientError> {
    let bad = AdminClientError::BadReply;
    Ok(match view {
        View::Nodes => {
            let nodes: Vec<NodeView> = serde_json::from_slice(reply).map_err(bad)?;
            let rows: Vec<Vec<String>> = nodes
                .into_iter()
                .map(|n| {
                    vec![
                        n.name,
                        n.port.to_string(),
                        n.node_type,
                        n.protocol.to_string(),
                        n.highest_version.to_string(),
                        n.lowest_version.to_string(),
                        n.creation.to_string(),
                        if n.extra_hex.is_empty() {
                            "-".into()
                        } else {
                            n.extra_hex
                        },
                        n.peer,
                        n.local,
                        super::table::rfc3339(n.registered_at),
                        format!("{}s", n.age_secs),
                    ]
                })
                .collect();
            render(
                &[
                    "NAME",
                    "PORT",
                    "TYPE",
                    "PROTO",
                    "HIGH",
                    "LOW",
                    "CREATION",
                    "EXTRA",
                    "PEER",
                    "LOCAL",
                    "REGISTERED",
                    "AGE",
                ],
                &rows,
            )
        }
        View::Old => {
            let old: Vec<OldView> = serde_json::from_slice(reply).map_err(bad)?;
            let rows: Vec<Vec<String>> = old
                .into_iter()
                .map(|o| vec![o.name, o.port.to_string(), o.creation.to_string()])
                .collect();
            render(&["NAME", "LAST PORT", "CREATION"], &rows)
        }
        View::Stats => {
            let s: StatsView = serde_json::from_slice(reply).map_err(bad)?;
            let mut rows = vec![
                row("uptime", format!("{}s", s.uptime_secs)),
                row("listening", s.listening.join(" ")),
                row("registrations", s.registrations.to_string()),
                row("old names", s.old_names.to_string()),
                row("peak registrations", s.peak_registrations.to_string()),
                row("peak connections", s.peak_connections.to_string()),
                row("accepted", s.accepted.to_string()),
                row("non-local refusals", s.non_local_refusals.to_string()),
                row("deadline expiries", s.deadline_expiries.to_string()),
                row("accept errors", s.accept_errors.to_string()),
                row("malformed requests", s.malformed_requests.to_string()),
                row("capped connections", s.capped_connections.to_string()),
                row("policy refusals", s.policy_refusals.to_string()),
                row("admin capped", s.admin_capped.to_string()),
                row("admin timeouts", s.admin_timeouts.to_string()),
                row("log lines dropped", s.log_lines_dropped.to_string()),
                row("hand-overs", s.handovers.to_string()),
                row("bytes in", s.bytes_in.to_string()),
                row("bytes out", s.bytes_out.to_string()),
            ];
            for (phase, n) in s.connections {
                rows.push(row(&format!("connections {phase}"), n.to_string()));
            }
            for (kind, n) in s.requests {
                rows.push(row(&format!("requests {kind}"), n.to_string()));
            }
            for (what, n) in s.fd_store {
                rows.push(row(&format!("fd store {what}"), n.to_string()));
            }
            for (cap, n) in s.refused {
                rows.push(row(&format!("refused {cap}"), n.to_string()));
            }
            for (reason, n) in s.unregistrations {
                rows.push(row(&format!("unregistrations {reason}"), n.to_string()));
            }
            rows.push(row("http capped", s.http_capped.to_string()));
            rows.push(row("http timeouts", s.http_timeouts.to_string()));
            render(&["STAT", "VALUE"], &rows)
        }
        View::Config => {
            let entries: Vec<ConfigEntry> = serde_json::from_slice(reply).map_err(bad)?;
            let rows: Vec<Vec<String>> = entries
                .into_iter()
                .map(|e| vec![e.key, e.value, e.source.to_string()])
                .collect();
            render(&["SETTING", "VALUE", "SOURCE"], &rows)
        }
        View::History => {
            let events: Vec<NodeEvent> = serde_json::from_slice(reply).map_err(bad)?;
            let rows: Vec<Vec<String>> = events
                .into_iter()
                .map(|e| {
                    vec![
                        super::table::rfc3339(e.at),
                        e.event,
                        e.node,
                        e.port.to_string(),
                        e.creation.to_string(),
                        if e.peer.is_empty() {
                            "-".into()
                        } else {
                            e.peer
                        },
                        e.reason.unwrap_or_else(|| "-".into()),
                        e.registered_secs.map_or("-".into(), |s| format!("{s}s")),
                    ]
                })
                .collect();
            render(
                &[
                    "TIME", "EVENT", "NODE", "PORT", "CREATION", "PEER", "REASON", "HELD",
                ],
                &rows,
            )
        }
        View::Watch | View::Upgrade => String::new(),
    })
}

fn row(key: &str, value: String) -> Vec<String> {
    vec![key.to_owned(), value]
}

fn watch(stream: UnixStream, json: bool, out: &mut dyn Write) -> Result<(), AdminClientError> {
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(AdminClientError::Io)?;
        let event: WatchEvent = serde_json::from_str(&line).map_err(AdminClientError::BadReply)?;
        let text = if json {
            line + "\n"
        } else {
            format!(
                "{} {:<10} {} port {} creation {}\n",
                super::table::rfc3339(event.at),
                event.event,
                event.name,
                event.port,
                event.creation
            )
        };
        if out
            .write_all(text.as_bytes())
            .and_then(|_| out.flush())
            .is_err()
        {
            break;
        }
    }
    Ok(())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
