//! The load generator: `C` concurrent clients on one thread (one mio poll), each looping
//! connect → send one request → read the reply → close, with every reply verified.
//!
//! The same client drives every server. A run has a warm-up, then a measurement window;
//! only exchanges that complete inside the window count. Latency is from `connect()` to the
//! end of the reply (EOF, or the 6-byte ALIVE2 reply for registrations). CPU time of the
//! server (by PID) and of this process is sampled at the edges of the window.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::procstat;
use crate::wire;

/// What each exchange sends and expects.
pub(crate) enum Work<'a> {
    /// Request `i` of `requests` (cycled) must be answered with exactly `expected[i]`,
    /// then EOF.
    Exact {
        /// Request frames.
        requests: &'a [Vec<u8>],
        /// The reply each must get.
        expected: &'a [Vec<u8>],
    },
    /// Register a fresh name (`<prefix><n>`) and expect a successful ALIVE2 reply, then
    /// close the connection, which ends the registration.
    Churn {
        /// Unique per run, so that names never repeat on a daemon.
        prefix: &'a str,
    },
}

/// One run.
pub(crate) struct Spec<'a> {
    /// The server.
    pub(crate) addr: SocketAddr,
    /// Its PID, for CPU time.
    pub(crate) pid: u32,
    /// Simultaneous clients.
    pub(crate) concurrency: usize,
    /// Time before the window opens.
    pub(crate) warmup: Duration,
    /// The measurement window.
    pub(crate) window: Duration,
    /// What to do.
    pub(crate) work: Work<'a>,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Outcome {
    /// Verified exchanges completed in the window.
    pub(crate) ops: u64,
    /// Failed exchanges (wrong reply, reset, refused, timeout) in the window.
    pub(crate) errors: u64,
    /// The first failure, for the report.
    pub(crate) first_error: Option<String>,
    /// Latency of each verified exchange, in nanoseconds.
    pub(crate) latencies_ns: Vec<u32>,
    /// Length of the window.
    pub(crate) wall: Duration,
    /// Server CPU time in the window.
    pub(crate) server_cpu: Duration,
    /// Bench (client) CPU time in the window.
    pub(crate) client_cpu: Duration,
}

/// An exchange that takes longer than this fails.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

struct Slot {
    stream: Option<TcpStream>,
    /// Request bytes written so far.
    sent: usize,
    /// Which request (Exact) or the frame of this exchange (Churn).
    req: usize,
    frame: Vec<u8>,
    reply: Vec<u8>,
    started: Instant,
    /// When a failed connect may be retried.
    retry_at: Option<Instant>,
    /// The stream is registered for writable events too (its handshake was not done when
    /// the request was first written).
    wants_write: bool,
}

struct Client<'a> {
    spec: &'a Spec<'a>,
    poll: Poll,
    slots: Vec<Slot>,
    next_req: usize,
    scratch: Vec<u8>,
    measuring: bool,
    out: Outcome,
}

/// Runs one load and returns what it measured.
pub(crate) fn run(spec: &Spec<'_>) -> io::Result<Outcome> {
    let now = Instant::now();
    let mut client = Client {
        spec,
        poll: Poll::new()?,
        slots: (0..spec.concurrency)
            .map(|_| Slot {
                stream: None,
                sent: 0,
                req: 0,
                frame: Vec::with_capacity(64),
                reply: Vec::with_capacity(256),
                started: now,
                retry_at: None,
                wants_write: false,
            })
            .collect(),
        next_req: 0,
        scratch: vec![0; 64 * 1024],
        measuring: false,
        out: Outcome {
            latencies_ns: Vec::with_capacity(1 << 16),
            ..Outcome::default()
        },
    };
    for i in 0..spec.concurrency {
        client.start(i);
    }
    client.run_until(now + spec.warmup, now + spec.warmup + spec.window)?;
    Ok(client.out)
}

impl Client<'_> {
    fn run_until(&mut self, open: Instant, close: Instant) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut opened_at = open;
        let (mut server0, mut client0) = (Duration::ZERO, Duration::ZERO);
        let mut last_sweep = Instant::now();
        loop {
            let now = Instant::now();
            if !self.measuring && now >= open {
                self.measuring = true;
                opened_at = now;
                server0 = procstat::cpu_time(self.spec.pid).unwrap_or_default();
                client0 = procstat::self_cpu_time();
            }
            if now >= close {
                self.out.server_cpu = procstat::cpu_time(self.spec.pid)
                    .unwrap_or_default()
                    .saturating_sub(server0);
                self.out.client_cpu = procstat::self_cpu_time().saturating_sub(client0);
                self.out.wall = now - opened_at;
                return Ok(());
            }
            let edge = if self.measuring { close } else { open };
            let mut timeout = (edge - now).min(Duration::from_millis(50));
            if self.slots.iter().any(|s| s.retry_at.is_some()) {
                timeout = timeout.min(Duration::from_millis(1));
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for event in events.iter() {
                self.ready(
                    event.token().0,
                    event.is_readable() || event.is_error(),
                    event.is_read_closed(),
                );
            }
            let now = Instant::now();
            if now.duration_since(last_sweep) >= Duration::from_millis(50) {
                last_sweep = now;
                self.sweep(now);
            }
        }
    }

    /// Retries failed connects and fails exchanges that took too long.
    fn sweep(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.retry_at.is_some_and(|t| t <= now) {
                self.start(i);
            } else if slot.stream.is_some() && now.duration_since(slot.started) > OP_TIMEOUT {
                self.fail(i, "timeout".to_string());
            }
        }
    }

    /// Opens a new connection on slot `i` for the next exchange.
    fn start(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.stream = None;
        slot.sent = 0;
        slot.reply.clear();
        slot.retry_at = None;
        slot.wants_write = false;
        match self.spec.work {
            Work::Exact { requests, .. } => {
                slot.req = self.next_req % requests.len();
            }
            Work::Churn { prefix } => {
                slot.frame.clear();
                let name = format!("{prefix}{}", self.next_req);
                wire::push_alive2_frame(name.as_bytes(), 4000, &mut slot.frame);
            }
        }
        self.next_req += 1;
        slot.started = Instant::now();
        match TcpStream::connect(self.spec.addr) {
            Ok(mut stream) => {
                // Readable only: the request is written at once (below); only if the
                // handshake is not done yet does the slot ask for a writable event.
                let registered =
                    self.poll
                        .registry()
                        .register(&mut stream, Token(i), Interest::READABLE);
                match registered {
                    Ok(()) => {
                        slot.stream = Some(stream);
                        // On loopback the handshake is usually done by now: send at once
                        // rather than wait for the writable event.
                        self.send(i);
                    }
                    Err(e) => self.fail(i, format!("register: {e}")),
                }
            }
            Err(e) => self.fail(i, format!("connect: {e}")),
        }
    }

    /// Writes what is left of slot `i`'s request; false if the exchange failed.
    fn send(&mut self, i: usize) -> bool {
        let spec = self.spec;
        let slot = &mut self.slots[i];
        let Some(stream) = slot.stream.as_mut() else {
            return false;
        };
        let frame: &[u8] = match spec.work {
            Work::Exact { requests, .. } => &requests[slot.req],
            Work::Churn { .. } => &slot.frame,
        };
        while slot.sent < frame.len() {
            match stream.write(&frame[slot.sent..]) {
                Ok(n) => slot.sent += n,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::NotConnected =>
                {
                    if !slot.wants_write {
                        slot.wants_write = true;
                        let again = self.poll.registry().reregister(
                            stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        );
                        if let Err(e) = again {
                            self.fail(i, format!("reregister: {e}"));
                            return false;
                        }
                    }
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.fail(i, format!("write: {e}"));
                    return false;
                }
            }
        }
        true
    }

    fn fail(&mut self, i: usize, what: String) {
        let slot = &mut self.slots[i];
        slot.stream = None;
        if self.measuring {
            self.out.errors += 1;
            if self.out.first_error.is_none() {
                self.out.first_error = Some(what);
            }
        }
        // Back off a little so that a refusing server does not turn into a busy loop.
        slot.retry_at = Some(Instant::now() + Duration::from_millis(1));
    }

    fn ready(&mut self, i: usize, readable: bool, read_closed: bool) {
        let spec = self.spec;
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        if slot.stream.is_none() {
            return;
        }
        let frame_len = match spec.work {
            Work::Exact { requests, .. } => requests[slot.req].len(),
            Work::Churn { .. } => slot.frame.len(),
        };
        if slot.sent < frame_len {
            // The reply cannot come before the request was sent: wait for its edge.
            self.send(i);
            return;
        }
        if !readable && !read_closed {
            // A writable event after the request went out: nothing to read yet.
            return;
        }
        let slot = &mut self.slots[i];
        let Some(stream) = slot.stream.as_mut() else {
            return;
        };
        let mut eof = false;
        loop {
            match stream.read(&mut self.scratch) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    slot.reply.extend_from_slice(&self.scratch[..n]);
                    if matches!(spec.work, Work::Churn { .. }) && slot.reply.len() >= 6 {
                        break;
                    }
                    // The event reported the peer's FIN, which comes after all its data:
                    // a read that did not fill the buffer has drained the socket, so the
                    // next read would return EOF. Skip that syscall.
                    if read_closed && n < self.scratch.len() {
                        eof = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(i, format!("read: {e}")),
            }
        }
        let ok = match spec.work {
            Work::Exact { expected, .. } => eof && slot.reply == expected[slot.req],
            Work::Churn { .. } => wire::is_alive2_ok(&slot.reply),
        };
        if !ok {
            let what = if slot.reply.is_empty() {
                "closed without a reply".to_string()
            } else {
                let n = slot.reply.len().min(24);
                format!(
                    "wrong reply ({} bytes): {:02x?}",
                    slot.reply.len(),
                    &slot.reply[..n]
                )
            };
            return self.fail(i, what);
        }
        if self.measuring {
            self.out.ops += 1;
            let ns = slot.started.elapsed().as_nanos().min(u128::from(u32::MAX));
            self.out.latencies_ns.push(ns as u32);
        }
        self.start(i);
    }
}
