//! Runs wire scenarios against the C epmd and epmd-rs side by side and compares what each
//! client connection sees: every reply byte and every close (which side closed, after
//! which bytes, FIN or RST).
//!
//! After every step both daemons are synchronised with a NAMES request on a new
//! connection: each daemon is single-threaded and handles the earlier connection's bytes
//! before it answers, so what the step caused is then in the client's socket and is read
//! without waiting. Then the state is read and compared: a PORT_PLEASE2 for each name the
//! scenario has sent in an ALIVE2 (hits and misses), and NAMES. Only creation values are normalised, to their
//! relation with the same name's previous creation (first, same, bumped, other); the
//! NAMES/DUMP header (each daemon's own port) is compared as "the daemon's port", and the
//! DUMP `fd = F` through the documented `dump-fd` difference.

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::deliberate::Deliberate;
use super::twin::{Foreground, Side};
use super::wire_scenario::{to_hex, Scenario, Step};

/// The documented differences (keys of docs/PROTOCOL.md's table) this comparison accepts.
pub(crate) const ACCEPTED_KEYS: &[&str] = &["dump-fd", "reply-writes"];

/// The longest a synchronising NAMES or a daemon's exit may take.
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);

/// One daemon and what the comparison remembers about it.
#[derive(Debug)]
pub(crate) struct Target {
    side: Side,
    relaxed: bool,
    daemon: Foreground,
    /// name → (reply tag, creation) of its last successful registration.
    creations: HashMap<Vec<u8>, (u8, u32)>,
    /// Compared requests sent after the steps (lookups and NAMES).
    pub(crate) requests: u64,
}

/// A client connection of a scenario.
#[derive(Debug, Default)]
struct Client {
    stream: Option<TcpStream>,
    sent: Vec<u8>,
    received: usize,
    /// How the daemon closed it, once seen.
    closed: Option<&'static str>,
}

impl Target {
    /// Starts `side` on a free port (relaxed or not).
    pub(crate) fn start(side: Side, relaxed: bool) -> Target {
        let extra: &[&str] = if relaxed {
            &["-relaxed_command_check"]
        } else {
            &[]
        };
        Target {
            side,
            relaxed,
            daemon: Foreground::start(side, extra),
            creations: HashMap::new(),
            requests: 0,
        }
    }

    /// Starts a fresh daemon of the same kind (after a KILL, or to shrink from a clean
    /// state).
    pub(crate) fn restart(&mut self) {
        let requests = self.requests;
        *self = Target::start(self.side, self.relaxed);
        self.requests = requests;
    }

    /// Whether the daemon process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        self.daemon.try_wait().is_none()
    }

    /// Runs `scenario` and returns the transcript: one line per observation.
    pub(crate) fn run(&mut self, scenario: &Scenario, allow: &Deliberate) -> Vec<String> {
        let port = self.daemon.port();
        let mut clients: BTreeMap<u8, Client> = BTreeMap::new();
        let mut out = Vec::new();
        let mut gone = false;
        for (i, step) in scenario.steps.iter().enumerate() {
            let conn = step.conn();
            let client = clients.entry(conn).or_default();
            match step {
                Step::Send(_, bytes) => {
                    if client.closed.is_some() {
                        continue;
                    }
                    if client.stream.is_none() {
                        match connect(port) {
                            Ok(s) => client.stream = Some(s),
                            Err(e) => {
                                out.push(format!("{i} c{conn}: connect {:?}", e.kind()));
                                client.closed = Some("refused");
                                continue;
                            }
                        }
                    }
                    let stream = client.stream.as_mut().expect("connected");
                    if let Err(e) = write_all(stream, bytes) {
                        out.push(format!("{i} c{conn}: write {:?}", e.kind()));
                    }
                    client.sent.extend_from_slice(bytes);
                }
                Step::Close(_) => {
                    client.stream = None;
                    client.closed.get_or_insert("client");
                }
                Step::HalfClose(_) => {
                    if let Some(s) = &client.stream {
                        let _ = s.shutdown(Shutdown::Write);
                    }
                }
            }
            if !gone {
                match self.sync(port) {
                    Ok(()) => {
                        // The state as lookups of every name the scenario has sent in an
                        // ALIVE2 so far (hits and misses), then NAMES.
                        let names = scenario_names(&clients);
                        for name in names.iter().take(MAX_LOOKUPS) {
                            let reply = self.ask(port, &port_please(name));
                            out.push(format!("{i} port {} {}", to_hex(name), to_hex(&reply)));
                        }
                        let names = self.ask(port, &[0, 1, b'n']);
                        out.push(format!("{i} names {}", self.header(&names)));
                    }
                    Err(what) => {
                        out.push(format!("{i} {what}"));
                        gone = true;
                    }
                }
            }
            for (c, client) in clients.iter_mut() {
                if let Some(seen) = self.observe(client, allow) {
                    out.push(format!("{i} c{c}: {seen}"));
                }
            }
        }
        out
    }

    /// A NAMES on a new connection whose reply is not compared: it only lets the daemon
    /// finish what the step started. The C epmd reads a connection's trailing bytes
    /// (behind a request it has just answered) one select pass later, and may answer a
    /// request accepted meanwhile first, depending on its connection slots; the compared
    /// requests that follow come after that pass. `Err` describes a daemon that is gone
    /// (with its exit status) or did not answer.
    fn sync(&mut self, port: u16) -> Result<(), String> {
        let reply = (|| -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
            s.set_read_timeout(Some(SYNC_TIMEOUT))?;
            s.write_all(&[0, 1, b'n'])?;
            let mut reply = Vec::new();
            s.read_to_end(&mut reply)?;
            Ok(reply)
        })();
        match reply {
            Ok(r) if !r.is_empty() => Ok(()),
            other => match self.daemon.wait_exit(SYNC_TIMEOUT) {
                Some(status) => Err(format!("daemon exited {status}")),
                None => Err(format!("names failed: {other:?}")),
            },
        }
    }

    /// One compared request on a new connection: the reply until the daemon closes (a
    /// reset ends it too; an error is shown in the reply).
    fn ask(&mut self, port: u16, request: &[u8]) -> Vec<u8> {
        self.requests += 1;
        let reply = (|| -> std::io::Result<Vec<u8>> {
            let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
            s.set_read_timeout(Some(SYNC_TIMEOUT))?;
            s.write_all(request)?;
            let mut reply = Vec::new();
            match s.read_to_end(&mut reply) {
                Err(e) if e.kind() != ErrorKind::ConnectionReset => Err(e),
                _ => Ok(reply),
            }
        })();
        reply.unwrap_or_else(|e| format!("error {:?}", e.kind()).into_bytes())
    }

    /// A NAMES or DUMP reply with its header shown as `PORT` when it is this daemon's port.
    fn header(&self, reply: &[u8]) -> String {
        let port = u32::from(self.daemon.port()).to_be_bytes();
        match reply.strip_prefix(&port[..]) {
            Some(rest) => format!("PORT+{}", to_hex(rest)),
            None => to_hex(reply),
        }
    }

    /// Reads what the daemon sent on `client` since the last look, without waiting;
    /// describes it (normalised) and a close, or `None` if nothing happened.
    fn observe(&mut self, client: &mut Client, allow: &Deliberate) -> Option<String> {
        if client.closed.is_some() {
            return None;
        }
        let stream = client.stream.as_mut()?;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        let mut end = None;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    end = Some("FIN");
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    end = Some("RST");
                    break;
                }
                Err(e) => {
                    end = Some(if e.kind() == ErrorKind::BrokenPipe {
                        "EPIPE"
                    } else {
                        "ERR"
                    });
                    break;
                }
            }
        }
        if got.is_empty() && end.is_none() {
            return None;
        }
        let first = client.received == 0;
        client.received += got.len();
        client.closed = end;
        let text = if first {
            self.normalise_reply(&client.sent, &got, allow)
        } else {
            to_hex(&got)
        };
        Some(match end {
            Some(how) => format!("+{text} {how}"),
            None => format!("+{text}"),
        })
    }

    /// The first bytes of a reply, normalised: an ALIVE2 reply's creation as its relation
    /// to the name's previous one, a NAMES/DUMP header as `PORT`, DUMP's `fd = F`.
    fn normalise_reply(&mut self, sent: &[u8], reply: &[u8], allow: &Deliberate) -> String {
        let tag = sent.get(2).copied();
        let width = match reply.first() {
            Some(b'y') => 2,
            Some(b'v') => 4,
            _ => 0,
        };
        if tag == Some(b'x') && width > 0 && reply.len() == 2 + width && reply[1] == 0 {
            let creation = reply[2..]
                .iter()
                .fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
            let name = alive2_name(sent);
            let relation = self.relation(&name, reply[0], creation);
            return format!("{}:creation={relation}", to_hex(&reply[..2]));
        }
        if tag == Some(b'd') && reply.len() >= 4 {
            allow.allow(ACCEPTED_KEYS[0]);
            return self.header(&mask_fds(reply));
        }
        if tag == Some(b'n') {
            return self.header(reply);
        }
        to_hex(reply)
    }

    /// How `creation` (from a reply tagged `tag`) relates to `name`'s previous creation.
    fn relation(&mut self, name: &[u8], tag: u8, creation: u32) -> &'static str {
        let v5 = |cr: u32| cr % 3 + 1;
        let rel = match self.creations.get(name) {
            None => "first",
            Some(&(prev_tag, prev)) => {
                // What the same counter, or the counter plus one, reads as in this reply.
                let (same, bumped) = match (prev_tag, tag) {
                    (b'v', b'v') => (prev, prev.wrapping_add(1)),
                    (b'v', _) => (v5(prev), v5(prev.wrapping_add(1))),
                    (_, b'y') => (prev, prev % 3 + 1),
                    // v5 before, v6 now: only the counter modulo 3 is known.
                    _ => {
                        let m = v5(creation);
                        (
                            if m == prev { creation } else { u32::MAX },
                            if m == prev % 3 + 1 {
                                creation
                            } else {
                                u32::MAX
                            },
                        )
                    }
                };
                if creation == same {
                    "same"
                } else if creation == bumped {
                    "bumped"
                } else {
                    "other"
                }
            }
        };
        self.creations.insert(name.to_vec(), (tag, creation));
        rel
    }
}

/// At most this many names are looked up after each step.
const MAX_LOOKUPS: usize = 4;

/// The names of the ALIVE2 requests sent so far on `clients`, without repeats.
fn scenario_names(clients: &BTreeMap<u8, Client>) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    for client in clients.values() {
        if client.sent.get(2) == Some(&b'x') {
            let name = alive2_name(&client.sent);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// A framed PORT_PLEASE2_REQ for `name`.
fn port_please(name: &[u8]) -> Vec<u8> {
    let mut p = vec![b'z'];
    p.extend_from_slice(name);
    let mut out = (p.len() as u16).to_be_bytes().to_vec();
    out.extend(p);
    out
}

/// The name field of an ALIVE2 request as sent (bounded by what was sent).
fn alive2_name(sent: &[u8]) -> Vec<u8> {
    let Some(len) = sent.get(11..13) else {
        return Vec::new();
    };
    let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
    sent.get(13..)
        .map_or(Vec::new(), |rest| rest[..n.min(rest.len())].to_vec())
}

/// DUMP text with every `fd = <digits>` replaced by `fd = F`.
fn mask_fds(reply: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(reply.len());
    let mut i = 0;
    while i < reply.len() {
        if reply[i..].starts_with(b"fd = ") {
            out.extend_from_slice(b"fd = F");
            i += 5;
            while i < reply.len() && reply[i].is_ascii_digit() {
                i += 1;
            }
        } else {
            out.push(reply[i]);
            i += 1;
        }
    }
    out
}

/// A non-blocking connection to `127.0.0.1:port`.
fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), SYNC_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Writes all of `bytes` on a non-blocking socket (bounded wait while its buffer is full).
fn write_all(s: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    while !bytes.is_empty() {
        match s.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The C epmd and epmd-rs, relaxed or strict, started alike.
#[derive(Debug)]
pub(crate) struct Pair {
    /// The C epmd.
    pub(crate) c: Target,
    /// epmd-rs.
    pub(crate) ours: Target,
}

/// A scenario whose transcripts differ.
#[derive(Debug)]
pub(crate) struct Divergence {
    /// The scenario.
    pub(crate) scenario: Scenario,
    /// The C epmd's transcript.
    pub(crate) c: Vec<String>,
    /// epmd-rs's transcript.
    pub(crate) ours: Vec<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "scenario: {}", self.scenario)?;
        let n = self.c.len().max(self.ours.len());
        for i in 0..n {
            let c = self.c.get(i).map_or("-", String::as_str);
            let o = self.ours.get(i).map_or("-", String::as_str);
            let mark = if c == o { "  " } else { "!!" };
            writeln!(f, "{mark} C:    {}", clip(c))?;
            if c != o {
                writeln!(f, "{mark} ours: {}", clip(o))?;
                let at = c.bytes().zip(o.bytes()).take_while(|(a, b)| a == b).count();
                let from = at.saturating_sub(60) & !1;
                let end = |s: &str| (at + 200).min(s.len());
                writeln!(f, "   first difference at char {at}:")?;
                writeln!(f, "   C:    ...{}", &c[from.min(c.len())..end(c)])?;
                writeln!(f, "   ours: ...{}", &o[from.min(o.len())..end(o)])?;
            }
        }
        Ok(())
    }
}

/// A long transcript line shortened for display.
fn clip(s: &str) -> String {
    if s.len() > 200 {
        format!("{}...({} chars)", &s[..200], s.len())
    } else {
        s.to_owned()
    }
}

impl Pair {
    /// Both daemons, relaxed or strict.
    pub(crate) fn start(relaxed: bool) -> Pair {
        Pair {
            c: Target::start(Side::C, relaxed),
            ours: Target::start(Side::Ours, relaxed),
        }
    }

    /// Restarts both (a KILL ended one or both, or a clean state is wanted).
    pub(crate) fn restart(&mut self) {
        self.c.restart();
        self.ours.restart();
    }

    /// Runs `scenario` on both at once: epmd-rs's transcript if they agree, `Err` with
    /// both if they differ. Restarts the pair if a daemon exited.
    pub(crate) fn compare(
        &mut self,
        scenario: &Scenario,
        allow: &Deliberate,
    ) -> Result<Vec<String>, Divergence> {
        let (c, ours) = std::thread::scope(|s| {
            let c = s.spawn(|| self.c.run(scenario, allow));
            let ours = self.ours.run(scenario, allow);
            (c.join().expect("C side panicked"), ours)
        });
        if !self.c.alive() || !self.ours.alive() {
            self.restart();
        }
        let same = c.len() == ours.len()
            && c.iter()
                .zip(&ours)
                .all(|(c, o)| c == o || cut_by_reset(c, o, allow));
        if same {
            Ok(ours)
        } else {
            Err(Divergence {
                scenario: scenario.clone(),
                c,
                ours,
            })
        }
    }

    /// Shrinks a diverging scenario: drops steps (and whole connections) while it still
    /// diverges from a fresh pair of daemons. Returns the smallest divergence found.
    pub(crate) fn shrink(&mut self, found: Divergence, allow: &Deliberate) -> Divergence {
        let mut best = found;
        self.restart();
        // The divergence may need earlier scenarios' state; keep it if it does not replay.
        match self.compare(&best.scenario, allow) {
            Err(d) => best = d,
            Ok(_) => return best,
        }
        loop {
            let mut progressed = false;
            let conns: Vec<u8> = {
                let mut c: Vec<u8> = best.scenario.steps.iter().map(Step::conn).collect();
                c.sort_unstable();
                c.dedup();
                c
            };
            let mut candidates: Vec<Scenario> = conns
                .iter()
                .map(|&conn| without(&best.scenario, |s| s.conn() == conn))
                .collect();
            for i in (0..best.scenario.steps.len()).rev() {
                let mut s = best.scenario.clone();
                s.steps.remove(i);
                candidates.push(s);
            }
            for candidate in candidates {
                if candidate.steps.is_empty() || candidate.steps.len() >= best.scenario.steps.len()
                {
                    continue;
                }
                self.restart();
                if let Err(d) = self.compare(&candidate, allow) {
                    best = d;
                    progressed = true;
                    break;
                }
            }
            if !progressed {
                return best;
            }
        }
    }
}

/// Whether C's observation `c` is epmd-rs's `ours` cut short by a reset: the C epmd
/// writes NAMES and DUMP one line per write, Nagle holds lines back until the client
/// acknowledges, and a close with unread bytes (a RST) drops what was still held; epmd-rs
/// writes its reply at once (`reply-writes` in docs/PROTOCOL.md).
fn cut_by_reset(c: &str, ours: &str, allow: &Deliberate) -> bool {
    let (Some(c), Some(o)) = (c.strip_suffix(" RST"), ours.strip_suffix(" RST")) else {
        return false;
    };
    if o.starts_with(c) {
        allow.allow(ACCEPTED_KEYS[1]);
        true
    } else {
        false
    }
}

/// `scenario` without the steps `drop` selects.
fn without(scenario: &Scenario, drop: impl Fn(&Step) -> bool) -> Scenario {
    Scenario {
        relaxed: scenario.relaxed,
        steps: scenario
            .steps
            .iter()
            .filter(|s| !drop(s))
            .cloned()
            .collect(),
        requests: scenario.requests,
    }
}
