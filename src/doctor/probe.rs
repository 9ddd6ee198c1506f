//! The doctor's I/O: blocking sockets with a deadline per step, the whole run bounded by
//! [`MAX_WAITS`](super::MAX_WAITS) step timeouts.

use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::handshake::{self, HandshakeStatus, Version, DOCTOR_FLAGS};
use super::near::near_misses;
use super::{Options, Report, Step, Verdict, MAX_WAITS};
use crate::protocol::{NodeName, Port2Reply, Request};
use crate::query::parse_names;

/// The most bytes read from epmd or a distribution port while probing.
const MAX_READ: usize = 1 << 20;

/// How a read that expected bytes ended without them.
#[derive(Debug)]
enum ReadEnd {
    /// The peer closed (an empty read or a reset).
    Closed(&'static str),
    /// Nothing within the step's time.
    Timeout,
    /// The bytes are a TLS record.
    Tls,
    /// Another socket error.
    Io(io::Error),
}

impl ReadEnd {
    fn describe(&self) -> String {
        match self {
            ReadEnd::Closed(how) => (*how).to_owned(),
            ReadEnd::Timeout => "no answer".to_owned(),
            ReadEnd::Tls => "a TLS record".to_owned(),
            ReadEnd::Io(e) => e.to_string(),
        }
    }
}

/// One run: the options, the deadline and the steps so far.
struct Probe<'a> {
    opts: &'a Options,
    started: Instant,
    deadline: Instant,
    steps: Vec<Step>,
}

impl Probe<'_> {
    /// The wait of the next step: the step timeout, cut by the run's deadline.
    fn wait(&self) -> Duration {
        self.opts
            .timeout
            .min(self.deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1))
    }

    fn pass(&mut self, step: &'static str, detail: String) {
        self.steps.push(Step {
            step,
            ok: true,
            detail,
        });
    }

    /// Records a failed step and ends the run with `verdict`.
    fn fail(mut self, step: &'static str, detail: String, verdict: Verdict) -> Report {
        self.steps.push(Step {
            step,
            ok: false,
            detail,
        });
        self.finish(verdict)
    }

    fn finish(self, verdict: Verdict) -> Report {
        let node = format!("{}@{}", self.opts.name, self.opts.host);
        Report::new(node, verdict, self.steps, self.started.elapsed())
    }

    /// Connects to `addr` within the step's wait; describes the failure as an operator
    /// would say it.
    fn connect(&self, addr: SocketAddr) -> Result<TcpStream, String> {
        let wait = self.wait();
        TcpStream::connect_timeout(&addr, wait).map_err(|e| match e.kind() {
            io::ErrorKind::ConnectionRefused => format!("{addr}: connection refused"),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                format!("{addr}: no answer within {}", secs(wait))
            }
            _ => format!("{addr}: {e}"),
        })
    }

    /// Reads until the peer closes (what epmd does after a reply).
    fn read_to_close(&self, s: &mut TcpStream) -> Result<Vec<u8>, ReadEnd> {
        let until = Instant::now() + self.wait();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::Timeout);
            }
            s.set_read_timeout(Some(left)).map_err(ReadEnd::Io)?;
            match s.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) if out.len() + n > MAX_READ => return Err(ReadEnd::Closed("too long")),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => match classify(e) {
                    Some(end) => return Err(end),
                    None => continue,
                },
            }
        }
    }

    /// Reads one handshake frame into `buf` (keeping what follows it).
    fn read_frame(&self, s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Vec<u8>, ReadEnd> {
        let until = Instant::now() + self.wait();
        let mut chunk = [0u8; 4096];
        loop {
            if handshake::looks_like_tls(buf) {
                return Err(ReadEnd::Tls);
            }
            if let Some((body, used)) = handshake::take_frame(buf) {
                let body = body.to_vec();
                buf.drain(..used);
                return Ok(body);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadEnd::Timeout);
            }
            s.set_read_timeout(Some(left)).map_err(ReadEnd::Io)?;
            match s.read(&mut chunk) {
                Ok(0) if buf.is_empty() => return Err(ReadEnd::Closed("closed the connection")),
                Ok(0) => return Err(ReadEnd::Closed("closed in the middle of a message")),
                Ok(n) if buf.len() + n > MAX_READ => return Err(ReadEnd::Closed("too long")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => match classify(e) {
                    Some(end) => return Err(end),
                    None => continue,
                },
            }
        }
    }
}

/// Maps a read error: `None` to retry (EINTR), else how the read ended.
fn classify(e: io::Error) -> Option<ReadEnd> {
    match e.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Some(ReadEnd::Timeout),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            Some(ReadEnd::Closed("reset the connection"))
        }
        _ => Some(ReadEnd::Io(e)),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A random 32-bit number for our challenge and creation: std's randomly keyed hasher
/// (fresh keys per `RandomState`) over the wall clock and the pid.
fn random_u32() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    (h.finish() >> 16) as u32
}

/// Resolves `host` in a helper thread so that a hung resolver cannot outlast `wait`.
/// IPv4 addresses first, as `inet_tcp_dist` resolves with `inet:getaddr(Host, inet)`.
fn resolve(host: &str, wait: Duration) -> Result<Vec<IpAddr>, String> {
    let (tx, rx) = mpsc::channel();
    let name = host.to_owned();
    std::thread::spawn(move || {
        let r = (name.as_str(), 0)
            .to_socket_addrs()
            .map(|a| a.map(|s| s.ip()).collect::<Vec<_>>());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(wait) {
        Ok(Ok(mut ips)) if !ips.is_empty() => {
            ips.sort_by_key(|ip| ip.is_ipv6());
            ips.dedup();
            Ok(ips)
        }
        Ok(Ok(_)) => Err("no address".to_owned()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer from the resolver within {}", secs(wait))),
    }
}

/// The host part of the doctor's own node name: long names (an IP or a dotted host) get
/// this side's address, short names this machine's short host name.
fn own_host(target_host: &str, local: IpAddr) -> String {
    let long = target_host.contains('.') || target_host.contains(':');
    if long {
        return local.to_string();
    }
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname NUL-terminates within it
    // (the last byte is kept 0 in case of truncation).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    match name.split('.').next() {
        Some(short) if !short.is_empty() => short.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// Runs every probe against `opts` and returns the report.
pub fn run(opts: &Options) -> Report {
    let started = Instant::now();
    let mut p = Probe {
        opts,
        started,
        deadline: started + opts.timeout * MAX_WAITS,
        steps: Vec::new(),
    };
    // 1. Resolve.
    let ips = match resolve(&opts.host, p.wait()) {
        Ok(ips) => ips,
        Err(e) => {
            return p.fail(
                "resolve",
                format!("{}: {e}", opts.host),
                Verdict::HostUnresolved,
            )
        }
    };
    let ip = ips[0];
    let shown: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    p.pass("resolve", format!("{} is {}", opts.host, shown.join(", ")));

    // 2. epmd: connect, PORT_PLEASE2.
    let epmd = SocketAddr::new(ip, opts.epmd_port);
    let Ok(node_name) = NodeName::new(opts.name.as_bytes()) else {
        return p.fail(
            "port_please",
            format!("{:?} is not a name epmd can hold", opts.name),
            Verdict::NameNotRegistered,
        );
    };
    let mut s = match p.connect(epmd) {
        Ok(s) => s,
        Err(e) => return p.fail("epmd", e, Verdict::EpmdUnreachable),
    };
    p.pass("epmd", format!("{epmd}: connected"));
    if let Err(e) = s.write_all(&Request::PortPlease2(node_name).to_frame()) {
        return p.fail(
            "port_please",
            format!("cannot send: {e}"),
            Verdict::EpmdRefused,
        );
    }
    let reply = match p.read_to_close(&mut s) {
        Ok(r) if r.is_empty() => {
            return p.fail(
                "port_please",
                "epmd closed the connection without a reply".into(),
                Verdict::EpmdRefused,
            )
        }
        Ok(r) => r,
        Err(end) => {
            return p.fail(
                "port_please",
                format!("epmd: {}, no reply", end.describe()),
                Verdict::EpmdRefused,
            )
        }
    };
    drop(s);
    let info = match Port2Reply::decode(&reply) {
        Some(Port2Reply::Found(info)) => info,
        Some(Port2Reply::NotFound(_)) => {
            let names = names_line(&p, epmd);
            return p.fail(
                "port_please",
                format!("{} is not registered; {names}", opts.name),
                Verdict::NameNotRegistered,
            );
        }
        None => {
            return p.fail(
                "port_please",
                format!(
                    "the reply is not an epmd PORT2_RESP ({} bytes)",
                    reply.len()
                ),
                Verdict::EpmdRefused,
            )
        }
    };
    p.pass(
        "port_please",
        format!(
            "{} at port {} (versions {}-{})",
            opts.name, info.port, info.lowest_version, info.highest_version
        ),
    );
    let Some(chosen) = Version::choose(info.lowest_version, info.highest_version) else {
        return p.fail(
            "handshake",
            format!(
                "no common version: the node speaks {}-{}, the doctor 5-6",
                info.lowest_version, info.highest_version
            ),
            Verdict::HandshakeRefused,
        );
    };

    // 3. The distribution port.
    let dist = SocketAddr::new(ip, info.port);
    let mut s = match p.connect(dist) {
        Ok(s) => s,
        Err(e) => return p.fail("dist_connect", e, Verdict::DistUnreachable),
    };
    p.pass("dist_connect", format!("{dist}: connected"));

    // 4. The handshake.
    let local = s.local_addr().map_or(ip, |a| a.ip());
    let me = format!(
        "epmd_rs_doctor_{}@{}",
        std::process::id(),
        own_host(&opts.host, local)
    );
    let creation = random_u32() | 1;
    let mut version = chosen;
    let mut buf = Vec::new();
    let status = loop {
        let send = s.write_all(&handshake::send_name(version, DOCTOR_FLAGS, creation, &me));
        if let Err(e) = send {
            return p.fail(
                "handshake",
                format!("cannot send: {e}"),
                Verdict::DistUnreachable,
            );
        }
        match p.read_frame(&mut s, &mut buf) {
            Ok(body) => break body,
            Err(ReadEnd::Tls) => {
                return p.fail(
                    "handshake",
                    "the port answered with a TLS record".into(),
                    Verdict::DistTls,
                )
            }
            // An OTP 25+ node registered as version 5 (ERL_EPMD_DIST_HIGH=5) only reads
            // `N` names, as OTP 25 nodes always send: try that once on a new connection.
            Err(ReadEnd::Closed(_)) if version == Version::V5 => {
                p.pass(
                    "handshake",
                    "version 5 name refused by a close: retrying with version 6, as OTP 25 does"
                        .into(),
                );
                version = Version::V6;
                s = match p.connect(dist) {
                    Ok(s) => s,
                    Err(e) => return p.fail("dist_connect", e, Verdict::DistUnreachable),
                };
                buf.clear();
            }
            Err(end) => {
                return p.fail(
                    "handshake",
                    format!("the node {} after our name {me}", end.describe()),
                    Verdict::HandshakeRefused,
                )
            }
        }
    };
    match handshake::decode_status(&status) {
        Ok(st) if st.proceeds() => p.pass(
            "handshake",
            format!(
                "version {}, status {} for {me}",
                version.number(),
                st.text()
            ),
        ),
        Ok(st) => {
            if st == HandshakeStatus::Alive {
                let _ = s.write_all(&handshake::status_false());
            }
            return p.fail(
                "handshake",
                format!("status {} for {me}", st.text()),
                Verdict::HandshakeRefused,
            );
        }
        Err(e) => {
            return p.fail(
                "handshake",
                format!("not a handshake status: {e:?}"),
                Verdict::HandshakeRefused,
            )
        }
    }
    let challenge = match p
        .read_frame(&mut s, &mut buf)
        .map(|b| handshake::decode_challenge(&b))
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return p.fail(
                "challenge",
                format!("not a challenge: {e:?}"),
                Verdict::HandshakeRefused,
            )
        }
        Err(end) => {
            return p.fail(
                "challenge",
                format!("the node {} before its challenge", end.describe()),
                Verdict::HandshakeRefused,
            )
        }
    };
    let asked = format!("{}@{}", opts.name, opts.host);
    if challenge.name != asked {
        return p.fail(
            "challenge",
            format!("the node calls itself {}, not {asked}", challenge.name),
            Verdict::HostNameMismatch,
        );
    }
    p.pass(
        "challenge",
        format!("the node calls itself {}", challenge.name),
    );
    let Some(cookie) = &opts.cookie else {
        p.pass(
            "cookie",
            "not checked (give --cookie or --cookie-file to finish the challenge)".into(),
        );
        return p.finish(Verdict::Ok);
    };
    if version == Version::V5 && challenge.new_format {
        let _ = s.write_all(&handshake::complement(DOCTOR_FLAGS, creation));
    }
    let ours = random_u32();
    let reply = handshake::challenge_reply(ours, &handshake::digest(cookie, challenge.challenge));
    if let Err(e) = s.write_all(&reply) {
        return p.fail(
            "cookie",
            format!("cannot send: {e}"),
            Verdict::CookieRejected,
        );
    }
    match p.read_frame(&mut s, &mut buf) {
        Ok(ack) if handshake::ack_matches(&ack, cookie, ours) => {
            p.pass(
                "cookie",
                "accepted: the node acknowledged our digest".into(),
            );
            p.finish(Verdict::Ok)
        }
        Ok(_) => p.fail(
            "cookie",
            "the node's acknowledgement does not match our cookie".into(),
            Verdict::CookieRejected,
        ),
        Err(ReadEnd::Closed(how)) => p.fail(
            "cookie",
            format!("the node {how} after our digest: it holds another cookie"),
            Verdict::CookieRejected,
        ),
        Err(end) => p.fail(
            "cookie",
            format!("the node gave {} after our digest", end.describe()),
            Verdict::HandshakeRefused,
        ),
    }
}

/// NAMES on a new connection, for the line of a missed PORT_PLEASE2.
fn names_line(p: &Probe<'_>, epmd: SocketAddr) -> String {
    let listed = p.connect(epmd).ok().and_then(|mut s| {
        s.write_all(&Request::Names.to_frame()).ok()?;
        parse_names(&p.read_to_close(&mut s).ok()?).ok()
    });
    let Some(answer) = listed else {
        return "epmd did not list its names".to_owned();
    };
    let names: Vec<String> = answer.nodes.into_iter().map(|n| n.name).collect();
    if names.is_empty() {
        return "epmd has no names registered".to_owned();
    }
    let near = near_misses(&p.opts.name, &names);
    let near = if near.is_empty() {
        String::new()
    } else {
        format!("; near misses: {}", near.join(", "))
    };
    format!("registered: {}{near}", names.join(", "))
}
