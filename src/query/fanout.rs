//! NAMES to many epmds at once, on one thread: non-blocking connects, one `poll(2)` over
//! every socket, each host with its own deadline. The run takes about as long as the
//! slowest host, not the sum.
//!
//! Names are resolved first, one after the other (the system resolver blocks); every
//! connection, request and reply after that is concurrent.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use super::hosts::{parse_file, parse_list, HostsError, Target};
use super::{parse_names, NamedPort, MAX_REPLY};
use crate::admin::table::render;
use crate::protocol::Request;

/// How one host answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// A NAMES reply.
    Ok,
    /// The connection was refused (nothing listens there).
    Refused,
    /// No connection or no complete reply before the host's deadline.
    NoAnswer,
    /// epmd accepted and closed without a reply (a policy, a cap).
    Closed,
    /// The name did not resolve.
    Unresolved,
    /// The reply is not an epmd NAMES reply.
    Garbage,
    /// Another socket error (unreachable network, reset).
    Error,
}

impl HostState {
    /// The word shown in the table and in JSON.
    pub fn word(self) -> &'static str {
        match self {
            HostState::Ok => "ok",
            HostState::Refused => "refused",
            HostState::NoAnswer => "no_answer",
            HostState::Closed => "closed",
            HostState::Unresolved => "unresolved",
            HostState::Garbage => "garbage",
            HostState::Error => "error",
        }
    }
}

/// One host's line of the fleet view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostAnswer {
    /// The host as given.
    pub host: String,
    /// The epmd port asked.
    pub port: u16,
    /// How it answered.
    pub state: HostState,
    /// What went wrong, if anything (the address, the error).
    pub detail: String,
    /// The registered nodes (empty unless `ok`).
    pub nodes: Vec<NamedPort>,
    /// From the start of the run to this host's outcome, milliseconds.
    pub elapsed_ms: u64,
}

/// The fleet view: every host's answer, in the order given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Fleet {
    /// One entry per host.
    pub hosts: Vec<HostAnswer>,
    /// Wall time of the whole run, milliseconds.
    pub elapsed_ms: u64,
}

impl Fleet {
    /// Whether every host answered.
    pub fn all_ok(&self) -> bool {
        self.hosts.iter().all(|h| h.state == HostState::Ok)
    }

    /// The table: host, state, nodes with ports (or what went wrong), time.
    pub fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .hosts
            .iter()
            .map(|h| {
                let what = if h.state == HostState::Ok {
                    let nodes: Vec<String> = h
                        .nodes
                        .iter()
                        .map(|n| format!("{}:{}", n.name, n.port))
                        .collect();
                    if nodes.is_empty() {
                        "-".to_owned()
                    } else {
                        nodes.join(" ")
                    }
                } else {
                    h.detail.clone()
                };
                vec![
                    format!("{}:{}", h.host, h.port),
                    h.state.word().to_owned(),
                    format!("{} ms", h.elapsed_ms),
                    what,
                ]
            })
            .collect();
        render(&["HOST", "STATE", "TIME", "NODES"], &rows)
    }
}

/// Where one host's exchange is.
enum Phase {
    /// Waiting for the connect to complete; the request is sent once writable.
    Connecting(Socket),
    /// Request sent; reading until epmd closes.
    Reading(TcpStream, Vec<u8>),
    /// Finished.
    Done,
}

/// Why `--hosts`/`--hosts-file`/`--timeout` were refused.
#[derive(Debug)]
pub enum FleetArgsError {
    /// The host list or file is malformed.
    Hosts(HostsError),
    /// The hosts file could not be read.
    File(io::Error),
    /// `--timeout` is not a positive number of seconds.
    BadTimeout,
}

impl std::fmt::Display for FleetArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetArgsError::Hosts(e) => e.fmt(f),
            FleetArgsError::File(e) => write!(f, "cannot read the hosts file: {e}"),
            FleetArgsError::BadTimeout => {
                f.write_str("--timeout takes a positive number of seconds")
            }
        }
    }
}

impl std::error::Error for FleetArgsError {}

/// The targets and per-host timeout of `query names --hosts LIST | --hosts-file FILE`.
pub fn fleet_args(
    list: Option<&str>,
    file: Option<&Path>,
    timeout: &str,
    default_port: u16,
) -> Result<(Vec<Target>, Duration), FleetArgsError> {
    let timeout = timeout
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t > 0.0 && *t <= 3600.0)
        .map(Duration::from_secs_f64)
        .ok_or(FleetArgsError::BadTimeout)?;
    let mut targets = Vec::new();
    if let Some(list) = list {
        targets.extend(parse_list(list, default_port).map_err(FleetArgsError::Hosts)?);
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(FleetArgsError::File)?;
        targets.extend(parse_file(&text, default_port).map_err(FleetArgsError::Hosts)?);
    }
    if targets.is_empty() {
        return Err(FleetArgsError::Hosts(HostsError::Empty));
    }
    Ok((targets, timeout))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn resolve(t: &Target) -> Result<SocketAddr, String> {
    let mut addrs: Vec<SocketAddr> = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs
        .first()
        .copied()
        .ok_or_else(|| "no address".to_owned())
}

fn start_connect(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_nonblocking(true)?;
    match s.connect(&addr.into()) {
        Ok(()) => Ok(s),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(s),
        Err(e) => Err(e),
    }
}

fn state_of(e: &io::Error) -> HostState {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => HostState::Refused,
        io::ErrorKind::TimedOut => HostState::NoAnswer,
        _ => HostState::Error,
    }
}

/// Asks every target for NAMES at once; each gets `timeout` from the start of the run.
pub fn names_all(targets: &[Target], timeout: Duration) -> Fleet {
    let started = Instant::now();
    let mut answers: Vec<HostAnswer> = targets
        .iter()
        .map(|t| HostAnswer {
            host: t.host.clone(),
            port: t.port,
            state: HostState::NoAnswer,
            detail: String::new(),
            nodes: Vec::new(),
            elapsed_ms: 0,
        })
        .collect();
    let mut phases: Vec<Phase> = Vec::with_capacity(targets.len());
    for (t, a) in targets.iter().zip(answers.iter_mut()) {
        let phase = match resolve(t) {
            Err(e) => {
                a.state = HostState::Unresolved;
                a.detail = e;
                Phase::Done
            }
            Ok(addr) => {
                a.detail = addr.to_string();
                match start_connect(addr) {
                    Ok(s) => Phase::Connecting(s),
                    Err(e) => {
                        a.state = state_of(&e);
                        a.detail = format!("{addr}: {e}");
                        Phase::Done
                    }
                }
            }
        };
        if matches!(phase, Phase::Done) {
            a.elapsed_ms = ms(started.elapsed());
        }
        phases.push(phase);
    }
    // The deadline runs from after resolution, so a slow resolver does not eat the wait.
    let deadline = Instant::now() + timeout;
    let request = Request::Names.to_frame();
    loop {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut owners: Vec<usize> = Vec::new();
        for (i, p) in phases.iter().enumerate() {
            let (fd, events) = match p {
                Phase::Connecting(s) => (s.as_raw_fd(), libc::POLLOUT),
                Phase::Reading(s, _) => (s.as_raw_fd(), libc::POLLIN),
                Phase::Done => continue,
            };
            fds.push(libc::pollfd {
                fd,
                events,
                revents: 0,
            });
            owners.push(i);
        }
        if fds.is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let wait_ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd entries
        // whose descriptors stay open (owned by `phases`) for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            for &i in &owners {
                answers[i].state = HostState::Error;
                answers[i].detail = format!("poll: {e}");
                phases[i] = Phase::Done;
            }
            break;
        }
        for (pfd, &i) in fds.iter().zip(&owners) {
            if pfd.revents == 0 {
                continue;
            }
            let phase = std::mem::replace(&mut phases[i], Phase::Done);
            phases[i] = step(phase, &mut answers[i], &request);
            if matches!(phases[i], Phase::Done) {
                answers[i].elapsed_ms = ms(started.elapsed());
            }
        }
    }
    for (p, a) in phases.iter().zip(answers.iter_mut()) {
        if !matches!(p, Phase::Done) {
            a.state = HostState::NoAnswer;
            let what = match p {
                Phase::Connecting(_) => "no connection",
                _ => "no complete reply",
            };
            a.detail = format!("{}: {what} within {:.1} s", a.detail, timeout.as_secs_f64());
            a.elapsed_ms = ms(started.elapsed());
        }
    }
    Fleet {
        hosts: answers,
        elapsed_ms: ms(started.elapsed()),
    }
}

/// Moves one host's exchange on after `poll` reported its socket ready.
fn step(phase: Phase, a: &mut HostAnswer, request: &[u8]) -> Phase {
    match phase {
        Phase::Connecting(s) => {
            match s.take_error() {
                Ok(Some(e)) | Err(e) => {
                    a.state = state_of(&e);
                    a.detail = format!("{}: {e}", a.detail);
                    return Phase::Done;
                }
                Ok(None) => {}
            }
            let mut stream: TcpStream = s.into();
            // The request is 3 bytes: a fresh socket's buffer always takes it whole.
            match stream.write(request) {
                Ok(n) if n == request.len() => Phase::Reading(stream, Vec::new()),
                Ok(_) => {
                    a.state = HostState::Error;
                    a.detail = format!("{}: short write", a.detail);
                    Phase::Done
                }
                Err(e) => {
                    a.state = state_of(&e);
                    a.detail = format!("{}: {e}", a.detail);
                    Phase::Done
                }
            }
        }
        Phase::Reading(mut stream, mut reply) => {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => {
                        finish(a, &reply);
                        return Phase::Done;
                    }
                    Ok(n) if reply.len() + n > MAX_REPLY => {
                        a.state = HostState::Garbage;
                        a.detail = format!("{}: reply too large", a.detail);
                        return Phase::Done;
                    }
                    Ok(n) => reply.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Phase::Reading(stream, reply)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset && reply.is_empty() => {
                        a.state = HostState::Closed;
                        a.detail = format!("{}: reset without a reply", a.detail);
                        return Phase::Done;
                    }
                    Err(e) => {
                        a.state = HostState::Error;
                        a.detail = format!("{}: {e}", a.detail);
                        return Phase::Done;
                    }
                }
            }
        }
        Phase::Done => Phase::Done,
    }
}

/// Classifies a complete reply (epmd closed after it).
fn finish(a: &mut HostAnswer, reply: &[u8]) {
    if reply.is_empty() {
        a.state = HostState::Closed;
        a.detail = format!("{}: closed without a reply", a.detail);
        return;
    }
    match parse_names(reply) {
        Ok(names) => {
            a.state = HostState::Ok;
            a.nodes = names.nodes;
        }
        Err(e) => {
            a.state = HostState::Garbage;
            a.detail = format!("{}: {e}", a.detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn table_shows_nodes_or_what_went_wrong() {
        let fleet = Fleet {
            hosts: vec![
                HostAnswer {
                    host: "a".into(),
                    port: 1,
                    state: HostState::Ok,
                    detail: "10.0.0.1:1".into(),
                    nodes: vec![NamedPort {
                        name: "n".into(),
                        port: 5,
                    }],
                    elapsed_ms: 3,
                },
                HostAnswer {
                    host: "b".into(),
                    port: 1,
                    state: HostState::Refused,
                    detail: "10.0.0.2:1: connection refused".into(),
                    nodes: vec![],
                    elapsed_ms: 1,
                },
            ],
            elapsed_ms: 3,
        };
        let t = fleet.table();
        assert!(t.contains("a:1   ok       3 ms  n:5"), "{t}");
        assert!(
            t.contains("b:1   refused  1 ms  10.0.0.2:1: connection refused"),
            "{t}"
        );
        assert!(!fleet.all_ok());
        let j = serde_json::to_value(&fleet).unwrap();
        assert_eq!(j["hosts"][1]["state"], "refused");
    }

    #[test]
    fn refused_unresolved_and_silent_hosts_in_one_bounded_run() {
        // A listener that never accepts answers the SYN (backlog) but never replies.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let closed_port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let targets = vec![
            Target {
                host: "127.0.0.1".into(),
                port: closed_port,
            },
            Target {
                host: "host.invalid".into(),
                port: 1,
            },
            Target {
                host: "127.0.0.1".into(),
                port: silent_port,
            },
        ];
        let t0 = Instant::now();
        let fleet = names_all(&targets, Duration::from_millis(300));
        let took = t0.elapsed();
        let states: Vec<HostState> = fleet.hosts.iter().map(|h| h.state).collect();
        assert_eq!(
            states,
            [
                HostState::Refused,
                HostState::Unresolved,
                HostState::NoAnswer
            ]
        );
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        drop(silent);
    }
}
