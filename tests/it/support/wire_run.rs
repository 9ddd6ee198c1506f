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
    /// It received an ALIVE2 reply: any byte or EOF makes the daemon close it.
    registration: bool,
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
        pin_to_first_cpu();
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
                    if client.registration {
                        await_daemon_close(stream);
                    }
                }
                Step::Close(_) => {
                    // Half-close, let the daemon close its end, then close: the step is
                    // over for the daemon before the state is read.
                    if let Some(s) = client.stream.take() {
                        if client.closed.is_none() && s.shutdown(Shutdown::Write).is_ok() {
                            await_daemon_close(&s);
                        }
                    }
                    client.closed.get_or_insert("client");
                }
                Step::HalfClose(_) => {
                    if let Some(s) = &client.stream {
                        if client.closed.is_none() && s.shutdown(Shutdown::Write).is_ok() {
                            await_daemon_close(s);
                        }
                    }
                }
            }
            if !gone {
                match self.read_state(port, &clients) {
                    Ok(lines) => out.extend(lines.into_iter().map(|l| format!("{i} {l}"))),
                    Err(what) => {
                        // The step ended the daemon (a KILL): whichever request found it
                        // gone, the transcript says so once.
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

    /// After a step: [`Target::sync`], then the state as lookups of every name the
    /// scenario has sent in an ALIVE2 so far (hits and misses) and NAMES. `Err` when the
    /// daemon turns out to be gone at any point.
    fn read_state(
        &mut self,
        port: u16,
        clients: &BTreeMap<u8, Client>,
    ) -> Result<Vec<String>, String> {
        self.sync(port)?;
        let mut lines = Vec::new();
        for name in scenario_names(clients).iter().take(MAX_LOOKUPS) {
            let reply = self.ask(port, &port_please(name))?;
            lines.push(format!("port {} {}", to_hex(name), to_hex(&reply)));
        }
        let names = self.ask(port, &[0, 1, b'n'])?;
        lines.push(format!("names {}", self.header(&names)));
        Ok(lines)
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
    /// reset ends it too). `Err` if there is no reply because the daemon exited.
    fn ask(&mut self, port: u16, request: &[u8]) -> Result<Vec<u8>, String> {
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
        let refused = |port: u16| {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .is_err_and(|e| e.kind() == ErrorKind::ConnectionRefused)
        };
        match reply {
            Ok(r) if !r.is_empty() => Ok(r),
            // An empty reply is a legitimate answer (a lookup of the empty name) unless
            // the daemon no longer accepts connections.
            Ok(r) if !refused(port) => Ok(r),
            other => match self.daemon.wait_exit(SYNC_TIMEOUT) {
                Some(status) => Err(format!("daemon exited {status}")),
                None => Ok(other.unwrap_or_else(|e| format!("error {:?}", e.kind()).into_bytes())),
            },
        }
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
        if first && client.sent.get(2) == Some(&b'x') && matches!(got.first(), Some(b'y' | b'v')) {
            client.registration = true;
        }
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

/// Pins the calling thread to the first CPU it may use. On loopback a packet is queued
/// on the sending CPU; a client thread that moved between CPUs could have its next
/// connection's packets handled before the FIN or the bytes of the step before (when
/// softirq work is deferred under load), and a daemon would then see them out of order.
/// From one CPU they are handled in the order they were sent.
fn pin_to_first_cpu() {
    // SAFETY: cpu_set_t is plain data; the calls only read and write the local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return;
        }
        let Some(cpu) = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set)) else {
            return;
        };
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut one);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &one);
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

/// How long a step waits for the daemon to close a connection it must close.
const CLOSE_TIMEOUT_MS: i32 = 2000;

/// Waits (at most [`CLOSE_TIMEOUT_MS`]) until the daemon has closed or reset `stream`, or
/// sent on it, without reading: `poll` leaves the bytes and a pending reset for
/// [`Target::observe`]. Without this wait, the state read after a step could overtake
/// the daemon's handling of a close, under load (a FIN handled late by the kernel).
fn await_daemon_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe {
        libc::poll(&mut fds, 1, CLOSE_TIMEOUT_MS);
    }
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
