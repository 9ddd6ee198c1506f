//! The ceiling: the least work a correct epmd-like server can do per connection, run as a
//! separate process (this binary with `EPMD_BENCH_CEILING_PORT=P`) so that its CPU time and
//! RSS are measured like the daemons' and it has its own fd limit.
//!
//! One thread, one mio poll, a slab of connections, accept drained to `WouldBlock`, one
//! read per request, one write per reply, then close. It answers:
//! - PORT_PLEASE2 with a reply rendered once at registration (or `w 1`);
//! - NAMES with a reply rendered once per change of the registrations (newest first);
//! - ALIVE2 with a fixed success reply, keeping the connection as the registration, which
//!   ends at the first readable event (EOF or data).
//!
//! There is no locality check, no timeout, no logging, no old list and no validation beyond
//! what is needed to answer the bench's requests.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use epmd_rs::protocol::text::{push_names_line, push_port_header};

/// Tokens below this are listeners.
const LISTENERS: usize = 2;

struct Conn {
    stream: TcpStream,
    rx: Vec<u8>,
    /// Reply bytes left after a short write (only large NAMES replies).
    tx: Vec<u8>,
    /// The name this connection registered, if it is a registration connection.
    registered: Option<Vec<u8>>,
    registration: bool,
}

struct Entry {
    seq: u64,
    port2: Vec<u8>,
}

struct Ceiling {
    port: u16,
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    nodes: HashMap<Vec<u8>, Entry>,
    order: BTreeMap<u64, (Vec<u8>, u16)>,
    next_seq: u64,
    names: Option<Vec<u8>>,
    accept_paused: bool,
    scratch: Vec<u8>,
}

/// Runs the ceiling server on 127.0.0.1:`port` and [::1]:`port` until killed.
pub(crate) fn serve(port: u16) -> io::Result<()> {
    raise_fd_limit();
    let poll = Poll::new()?;
    let mut listeners = Vec::new();
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ];
    for (i, addr) in addrs.into_iter().enumerate() {
        match bind(addr) {
            Ok(l) => {
                let mut l = TcpListener::from_std(l);
                poll.registry()
                    .register(&mut l, Token(i), Interest::READABLE)?;
                listeners.push(l);
            }
            Err(e) if i == 0 => return Err(e),
            Err(_) => {}
        }
    }
    let mut server = Ceiling {
        port,
        poll,
        listeners,
        conns: Vec::new(),
        free: Vec::new(),
        nodes: HashMap::new(),
        order: BTreeMap::new(),
        next_seq: 0,
        names: None,
        accept_paused: false,
        scratch: vec![0; 4096],
    };
    server.run()
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

impl Ceiling {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.accept_paused.then_some(Duration::from_millis(20));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if self.accept_paused {
                self.accept_paused = false;
                self.accept_all();
            }
            for event in events.iter() {
                let t = event.token().0;
                if t < LISTENERS {
                    self.accept(t);
                } else {
                    self.ready(t - LISTENERS, event.is_writable());
                }
            }
        }
    }

    fn accept_all(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept(i);
        }
    }

    fn accept(&mut self, index: usize) {
        if self.accept_paused {
            return;
        }
        loop {
            match self.listeners[index].accept() {
                Ok((mut stream, _)) => {
                    let slot = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    let token = Token(slot + LISTENERS);
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        self.free.push(slot);
                        continue;
                    }
                    self.conns[slot] = Some(Conn {
                        stream,
                        rx: Vec::new(),
                        tx: Vec::new(),
                        registered: None,
                        registration: false,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(_) => {
                    // EMFILE and friends: retry after a close or a short pause.
                    self.accept_paused = true;
                    return;
                }
            }
        }
    }

    fn ready(&mut self, slot: usize, writable: bool) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if conn.registration {
            let mut byte = [0u8; 1];
            match conn.stream.read(&mut byte) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                _ => self.close(slot),
            }
            return;
        }
        if !conn.tx.is_empty() {
            if writable {
                let pending = std::mem::take(&mut conn.tx);
                if write_out(&self.poll, conn, slot, &pending) {
                    self.close(slot);
                }
            }
            return;
        }
        // One read takes a whole request; a short read means the socket is drained, so
        // the next bytes (if any) raise a new edge.
        loop {
            match conn.stream.read(&mut self.scratch) {
                Ok(0) => return self.close(slot),
                Ok(n) => {
                    conn.rx.extend_from_slice(&self.scratch[..n]);
                    if n < self.scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.close(slot),
            }
        }
        if conn.rx.len() < 2 {
            return;
        }
        let len = usize::from(u16::from_be_bytes([conn.rx[0], conn.rx[1]]));
        if len == 0 || conn.rx.len() > len + 2 {
            return self.close(slot);
        }
        if conn.rx.len() < len + 2 {
            return;
        }
        let mut rx = std::mem::take(&mut conn.rx);
        let done = self.handle(slot, &rx[2..]);
        rx.clear();
        if let Some(conn) = self.conns[slot].as_mut() {
            // Keep the buffer's capacity for the next request on this slot.
            conn.rx = rx;
        }
        if done {
            self.close(slot);
        }
    }

    /// Answers one request; true when the connection is to be closed now.
    fn handle(&mut self, slot: usize, payload: &[u8]) -> bool {
        let Some(conn) = self.conns[slot].as_mut() else {
            return false;
        };
        match payload[0] {
            b'z' => {
                let name = payload[1..].strip_suffix(&[0]).unwrap_or(&payload[1..]);
                let reply: &[u8] = match self.nodes.get(name) {
                    Some(e) => &e.port2,
                    None => b"w\x01",
                };
                write_out(&self.poll, conn, slot, reply)
            }
            b'n' => {
                let port = self.port;
                let order = &self.order;
                let names = self.names.get_or_insert_with(|| {
                    let mut out = Vec::new();
                    push_port_header(u32::from(port), &mut out);
                    for (name, port) in order.values().rev() {
                        push_names_line(name, *port, &mut out);
                    }
                    out
                });
                write_out(&self.poll, conn, slot, names)
            }
            b'x' if payload.len() >= 13 => {
                let port = u16::from_be_bytes([payload[1], payload[2]]);
                let nlen = usize::from(u16::from_be_bytes([payload[9], payload[10]]));
                let name = payload.get(11..11 + nlen).unwrap_or_default();
                let elen = payload
                    .get(11 + nlen..13 + nlen)
                    .map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
                let end = (13 + nlen + elen).min(payload.len());
                let ok = !self.nodes.contains_key(name);
                conn.registration = true;
                let reply: &[u8] = if ok {
                    b"v\x00\x00\x00\x00\x04"
                } else {
                    b"v\x01\x00\x00\x00\x63"
                };
                // 6 bytes into an empty socket buffer: one write, never short.
                let _ = conn.stream.write(reply);
                if ok {
                    conn.registered = Some(name.to_vec());
                    // PORT2_RESP echoes the ALIVE2 fields after the tag: `w 0` + payload[1..].
                    let mut port2 = Vec::with_capacity(end + 1);
                    port2.extend_from_slice(b"w\x00");
                    port2.extend_from_slice(&payload[1..end]);
                    self.next_seq += 1;
                    let seq = self.next_seq;
                    self.order.insert(seq, (name.to_vec(), port));
                    self.nodes.insert(name.to_vec(), Entry { seq, port2 });
                    self.names = None;
                }
                false
            }
            _ => true,
        }
    }

    fn close(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].take() else {
            return;
        };
        if let Some(name) = &conn.registered {
            if let Some(e) = self.nodes.remove(name) {
                self.order.remove(&e.seq);
                self.names = None;
            }
        }
        drop(conn);
        self.free.push(slot);
        if self.accept_paused {
            self.accept_paused = false;
            self.accept_all();
        }
    }
}

/// Writes `bytes`; true when all of it went out (the connection can close). Otherwise the
/// rest waits in `conn.tx` for a writable event.
fn write_out(poll: &Poll, conn: &mut Conn, slot: usize, bytes: &[u8]) -> bool {
    let mut pos = 0;
    while pos < bytes.len() {
        match conn.stream.write(&bytes[pos..]) {
            Ok(n) => pos += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                conn.tx = bytes[pos..].to_vec();
                let _ = poll.registry().reregister(
                    &mut conn.stream,
                    Token(slot + LISTENERS),
                    Interest::READABLE | Interest::WRITABLE,
                );
                return false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    true
}
