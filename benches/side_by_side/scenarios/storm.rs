//! Storm: cluster start-up, when many nodes ask one host's epmd at once. A burst of N
//! simultaneous connections (1,000, 5,000, 15,000) from source addresses 127.0.10.1
//! upward (250 clients per address: 60 addresses for 15,000), each sending one
//! PORT_PLEASE2 and reading to close, all opened in one tight loop before any reply is
//! read. Every client
//! has until [`DEADLINE`] after the start of the burst; a client that gets no verified reply
//! by then, or an error, failed.
//!
//! Figures per burst: the share answered, latency (from that client's `connect()` to the
//! end of its reply) p50/p99/max, and the kernel's `TcpExtListenOverflows` (a full accept
//! queue: the handshake's last ACK is dropped and the client waits for a retransmission)
//! and `TcpExtTCPSynRetrans` (SYNs sent again, 1 s then 3 s later) over the burst, read
//! from `/proc/net/netstat` as `nstat` reads them. Those counters are the whole network
//! namespace's: other traffic on the machine at the same time adds to them.
//!
//! Each burst gets a fresh server holding 10 registrations.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::idx;
use crate::daemon::Kind;
use crate::limits;
use crate::settings::Settings;
use crate::stats::percentile;
use crate::wire::{self, Node};

/// The burst sizes of a full run.
pub(crate) const BURSTS: [usize; 3] = [1_000, 5_000, 15_000];
/// The burst sizes of a quick run.
pub(crate) const QUICK_BURSTS: [usize; 2] = [1_000, 5_000];
/// How long every client of a burst may take from the start of the burst.
pub(crate) const DEADLINE: Duration = Duration::from_secs(10);
/// Registrations held by each server.
const REGISTERED: usize = 10;
/// Fds the bench needs beyond one per client (servers' registrations, stdio, poll).
const FD_MARGIN: usize = 200;

/// One burst size against one server, summed over the rounds.
#[derive(Clone, Debug, Default)]
pub(crate) struct StormCell {
    /// Clients started.
    pub(crate) attempted: u64,
    /// Clients with a verified reply before the deadline.
    pub(crate) answered: u64,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
    /// Latencies of the answered clients, nanoseconds, sorted.
    pub(crate) latencies_ns: Vec<u32>,
    /// `TcpExtListenOverflows` over the bursts.
    pub(crate) listen_overflows: u64,
    /// `TcpExtTCPSynRetrans` over the bursts.
    pub(crate) syn_retrans: u64,
    /// Wall time of the slowest burst (until its last client answered or failed).
    pub(crate) wall: Duration,
}

impl StormCell {
    /// The share of clients answered, in percent.
    pub(crate) fn answered_pct(&self) -> f64 {
        if self.attempted == 0 {
            return 0.0;
        }
        100.0 * self.answered as f64 / self.attempted as f64
    }

    /// The `q` latency quantile in milliseconds.
    pub(crate) fn ms(&self, q: f64) -> f64 {
        percentile(&self.latencies_ns, q) / 1e6
    }

    /// The largest latency in milliseconds.
    pub(crate) fn max_ms(&self) -> f64 {
        self.latencies_ns
            .last()
            .map_or(0.0, |&n| f64::from(n) / 1e6)
    }
}

/// One burst size: a cell per server (indexed like [`Kind::ALL`]).
#[derive(Clone, Debug)]
pub(crate) struct StormRow {
    /// Clients per burst.
    pub(crate) burst: usize,
    /// Per server.
    pub(crate) cells: [Option<StormCell>; 3],
    /// Why a server or the whole row has no figures.
    pub(crate) note: Option<String>,
}

/// Runs every burst size against every server, `rounds` times, rotating the server order.
pub(crate) fn run(settings: &Settings, kinds: &[Kind]) -> Vec<StormRow> {
    let sizes: &[usize] = if settings.quick {
        &QUICK_BURSTS
    } else {
        &BURSTS
    };
    let nodes: Vec<Node> = (0..REGISTERED).map(|i| Node::numbered("node", i)).collect();
    let mut rows = Vec::new();
    for &burst in sizes {
        let mut row = StormRow {
            burst,
            cells: Default::default(),
            note: None,
        };
        let have = limits::bench_limit() as usize;
        let server_fds = limits::server_limit().rlim_cur as usize;
        if have < burst + FD_MARGIN || server_fds < burst + REGISTERED + 64 {
            row.note = Some(format!(
                "skipped: {burst} clients need {} fds in the bench (it has {have}) and {} in \
                 each server (they get {server_fds})",
                burst + FD_MARGIN,
                burst + REGISTERED + 64
            ));
            eprintln!("  storm {burst}: {}", row.note.as_deref().unwrap_or(""));
            rows.push(row);
            continue;
        }
        for round in 0..settings.hold_rounds.max(1) {
            for j in 0..kinds.len() {
                let kind = kinds[(round + j) % kinds.len()];
                let server = match super::Server::start(kind, &nodes) {
                    Ok(s) => s,
                    Err(e) => panic!("{e}"),
                };
                let expected = wire::expected_port2(&nodes[0]);
                let request = wire::port_please_frame(&nodes[0].name);
                let one = burst_once(server.daemon.addr(), burst, &request, &expected)
                    .unwrap_or_else(|e| panic!("storm client: {e}"));
                drop(server);
                let cell = row.cells[idx(kind)].get_or_insert_with(StormCell::default);
                cell.attempted += one.attempted;
                cell.answered += one.answered;
                cell.latencies_ns.extend(one.latencies_ns);
                cell.listen_overflows += one.listen_overflows;
                cell.syn_retrans += one.syn_retrans;
                cell.wall = cell.wall.max(one.wall);
                if cell.first_error.is_none() {
                    cell.first_error = one.first_error;
                }
                // Let the kernel finish with the burst's sockets before the next one.
                std::thread::sleep(Duration::from_millis(300));
            }
        }
        for cell in row.cells.iter_mut().flatten() {
            cell.latencies_ns.sort_unstable();
        }
        progress(&row);
        rows.push(row);
    }
    rows
}

fn progress(row: &StormRow) {
    let mut line = format!("  storm     burst={:<6}", row.burst);
    for kind in Kind::ALL {
        if let Some(c) = &row.cells[idx(kind)] {
            line += &format!(
                "  {}: {:.2} % answered, p99 {:.1} ms, max {:.0} ms, {} overflows",
                kind.label(),
                c.answered_pct(),
                c.ms(0.99),
                c.max_ms(),
                c.listen_overflows
            );
        }
    }
    eprintln!("{line}");
}

/// The kernel counters read before and after a burst.
#[derive(Clone, Copy, Debug, Default)]
struct Netstat {
    listen_overflows: u64,
    syn_retrans: u64,
}

/// `TcpExt: ListenOverflows` and `TcpExt: TCPSynRetrans` from `/proc/net/netstat` (pairs
/// of lines: names, then values).
fn netstat() -> Netstat {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Netstat::default();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            match n {
                "ListenOverflows" => out.listen_overflows = v.parse().unwrap_or(0),
                "TCPSynRetrans" => out.syn_retrans = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    out
}

/// What one burst measured.
#[derive(Default)]
struct Burst {
    attempted: u64,
    answered: u64,
    first_error: Option<String>,
    latencies_ns: Vec<u32>,
    listen_overflows: u64,
    syn_retrans: u64,
    wall: Duration,
}

/// One client of a burst.
struct Client {
    stream: TcpStream,
    started: Instant,
    sent: bool,
    reply: Vec<u8>,
}

/// The source address of client `i`: 127.0.10.1 upward, 250 clients per address.
fn source(i: usize) -> Ipv4Addr {
    let k = i / 250;
    Ipv4Addr::new(127, 0, 10 + (k / 250) as u8, 1 + (k % 250) as u8)
}

/// A non-blocking connect from `from` (port chosen at connect time).
fn start_connect(addr: SocketAddr, from: Ipv4Addr) -> io::Result<std::net::TcpStream> {
    let socket = wire::bound_socket(from)?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(socket.into())
}

/// Opens `n` connections at once to `addr`, sends `request` on each once connected, and
/// waits until every one has its reply (or fails) or [`DEADLINE`] passes.
fn burst_once(addr: SocketAddr, n: usize, request: &[u8], expected: &[u8]) -> io::Result<Burst> {
    let mut poll = Poll::new()?;
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(n);
    let mut out = Burst {
        attempted: n as u64,
        latencies_ns: Vec::with_capacity(n),
        ..Burst::default()
    };
    let before = netstat();
    let t0 = Instant::now();
    let mut open = 0usize;
    for i in 0..n {
        let started = Instant::now();
        match start_connect(addr, source(i)) {
            Ok(s) => {
                let mut stream = TcpStream::from_std(s);
                poll.registry().register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                clients.push(Some(Client {
                    stream,
                    started,
                    sent: false,
                    reply: Vec::new(),
                }));
                open += 1;
            }
            Err(e) => {
                out.first_error.get_or_insert(format!("connect: {e}"));
                clients.push(None);
            }
        }
    }
    let deadline = t0 + DEADLINE;
    let mut events = Events::with_capacity(4096);
    let mut buf = vec![0u8; 4096];
    while open > 0 {
        let now = Instant::now();
        if now >= deadline {
            out.first_error
                .get_or_insert(format!("{open} clients without a reply after {DEADLINE:?}"));
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(deadline - now)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(c) = clients[i].as_mut() else {
                continue;
            };
            let done = step(c, ev.is_writable(), request, expected, &mut buf);
            match done {
                None => continue,
                Some(Ok(())) => {
                    let ns = c.started.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32;
                    out.latencies_ns.push(ns);
                    out.answered += 1;
                }
                Some(Err(e)) => {
                    out.first_error.get_or_insert(e);
                }
            }
            if let Some(mut c) = clients[i].take() {
                let _ = poll.registry().deregister(&mut c.stream);
            }
            open -= 1;
        }
    }
    out.wall = t0.elapsed();
    drop(clients);
    // Retransmissions and overflows are counted as they happen: read after the burst.
    let after = netstat();
    out.listen_overflows = after
        .listen_overflows
        .saturating_sub(before.listen_overflows);
    out.syn_retrans = after.syn_retrans.saturating_sub(before.syn_retrans);
    Ok(out)
}

/// Moves one client on: `None` while it waits, `Some(Ok)` on a verified reply,
/// `Some(Err)` on a failure.
fn step(
    c: &mut Client,
    writable: bool,
    request: &[u8],
    expected: &[u8],
    buf: &mut [u8],
) -> Option<Result<(), String>> {
    if !c.sent {
        if !writable {
            // Readable before writable: an error or a reset on a connect in progress.
            if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                return Some(Err(format!("connect: {e}")));
            }
            return None;
        }
        if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
            return Some(Err(format!("connect: {e}")));
        }
        match c.stream.write(request) {
            Ok(k) if k == request.len() => c.sent = true,
            Ok(_) => return Some(Err("short write".into())),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return None,
            Err(e) => return Some(Err(format!("write: {e}"))),
        }
    }
    loop {
        match c.stream.read(buf) {
            Ok(0) => {
                return Some(if c.reply == expected {
                    Ok(())
                } else {
                    Err(format!("unexpected reply of {} bytes", c.reply.len()))
                })
            }
            Ok(k) => c.reply.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(format!("read: {e}"))),
        }
    }
}
