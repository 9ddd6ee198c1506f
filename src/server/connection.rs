//! One accepted TCP connection: its phase, its buffers and the non-blocking reads and writes
//! that move bytes between the socket and the codec.
//!
//! The phases and what closes a connection in each are described in `docs/LIFECYCLE.md`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::Interest;

use super::dispatch::After;
use crate::protocol::tag::INBUF_SIZE;
use crate::protocol::{decode_frame, read_limit, FrameError, Request, RequestError, Status};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `-delay_accept`: accepted, but not read before [`Connection::delay_until`].
    AcceptDelay,
    /// Collecting the bytes of the one request a connection may send.
    Reading,
    /// `-delay_write`: the reply is ready but not written before
    /// [`Connection::delay_until`].
    WriteDelay(After),
    /// Writing the reply; then doing what `After` says.
    Writing(After),
    /// A registration connection (after an ALIVE2 reply, whether or not it registered): no
    /// deadline; any readable event (data, EOF, error) ends it.
    Registered,
}

/// Why a connection is closed without a reply (for logs and counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed or reset before the request was complete.
    PeerClosed,
    /// A read or write failed.
    IoError,
    /// The framing was violated.
    Frame(FrameError),
    /// The payload is not a request we answer.
    Request(RequestError),
}

/// The result of reading from a connection in the [`Phase::Reading`] phase.
#[derive(Debug)]
pub enum ReadOutcome {
    /// The request is not complete yet.
    Pending,
    /// A complete, decoded request.
    Request(Request),
    /// Close without a reply.
    Close(CloseReason),
}

/// An accepted connection.
///
/// Kept small, since a registration connection lives as long as its node: request and
/// reply buffers sit in a box that exists only while a request or reply is in flight, and
/// the local address is asked of the socket when needed rather than stored.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: TcpStream,
    /// The phase.
    pub phase: Phase,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Bytes read so far.
    pub bytes_in: u64,
    /// Bytes written so far.
    pub bytes_out: u64,
    /// The fd name this connection has in a saved state (kept across hand-overs and
    /// restarts, so the fd store's name stays valid); `None` means the default name.
    pub store_name: Option<Box<str>>,
    /// Buffers and timers of a request or reply in flight; `None` for a registration
    /// connection at rest, which needs neither.
    io: Option<Box<Buffers>>,
    /// The interest currently registered with the poll.
    pub interest: Interest,
    /// Whether the socket is registered with the poll (it is not while the request that
    /// arrived with the accept is answered).
    pub in_poll: bool,
    /// Whether the peer is local (spec §5), decided at accept time.
    pub local: bool,
    /// The access policy lets this peer send NAMES.
    pub may_list: bool,
    /// The access policy lets this peer send PORT_PLEASE2.
    pub may_lookup: bool,
}

/// A connection's request and reply buffers, and its timers.
#[derive(Debug, Default)]
struct Buffers {
    /// The key of this connection's entry in the server's timer set, if it has one.
    timer: Option<Instant>,
    /// The request deadline (accept time + packet timeout).
    deadline: Option<Instant>,
    /// The end of a `-delay_accept` or `-delay_write` wait.
    delay_until: Option<Instant>,
    /// Bytes of a request that came in more than one read.
    rx: Vec<u8>,
    /// Reply bytes not yet written.
    tx: Output,
    /// When the request being answered was accepted, and its kind (for `/metrics`).
    request: Option<(Instant, &'static str)>,
    tx_pos: usize,
}

/// A reply being written: owned, or shared with other connections (a NAMES reply rendered
/// once per registry change), so that many slow readers of a large reply cost one copy.
#[derive(Debug, Clone)]
pub enum Output {
    /// Bytes owned by this connection.
    Owned(Vec<u8>),
    /// Bytes shared with other connections.
    Shared(Rc<Vec<u8>>),
}

impl Default for Output {
    fn default() -> Self {
        Output::Owned(Vec::new())
    }
}

impl Output {
    fn bytes(&self) -> &[u8] {
        match self {
            Output::Owned(v) => v,
            Output::Shared(v) => v,
        }
    }
}

impl Connection {
    /// A new connection in `phase`, with its request deadline; `local` is the peer's
    /// locality (spec §5).
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        local: bool,
        phase: Phase,
        deadline: Instant,
    ) -> Connection {
        Connection {
            stream,
            phase,
            peer,
            bytes_in: 0,
            bytes_out: 0,
            store_name: None,
            io: Some(Box::new(Buffers {
                deadline: Some(deadline),
                ..Buffers::default()
            })),
            interest: Interest::READABLE,
            in_poll: false,
            local,
            may_list: true,
            may_lookup: true,
        }
    }

    /// The fd name of this connection (connection `token`) in saved states and systemd's
    /// fd store: the name it was restored under, else the default name. The one place
    /// this rule lives, so a registration and its connection always agree.
    pub fn fd_name(&self, token: mio::Token) -> String {
        self.store_name
            .as_deref()
            .map_or_else(|| super::fd_name::conn_name(token), str::to_owned)
    }

    /// The local address the connection arrived on (asked of the socket).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    fn buffers(&mut self) -> &mut Buffers {
        self.io.get_or_insert_with(Box::default)
    }

    /// Notes the request being answered: its kind, and when its connection was accepted.
    pub fn mark_request(&mut self, kind: &'static str, accepted: Instant) {
        self.buffers().request = Some((accepted, kind));
    }

    /// The mark of [`mark_request`](Self::mark_request), taken once its reply is written.
    pub fn take_request_mark(&mut self) -> Option<(Instant, &'static str)> {
        self.io.as_mut().and_then(|b| b.request.take())
    }

    /// The request deadline; `None` for a registration connection.
    pub fn deadline(&self) -> Option<Instant> {
        self.io.as_ref().and_then(|b| b.deadline)
    }

    /// Sets (or, with `None`, removes) the request deadline.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        if deadline.is_some() || self.io.is_some() {
            self.buffers().deadline = deadline;
        }
        self.release_idle_buffers();
    }

    /// The key of this connection's entry in the server's timer set.
    pub fn timer(&self) -> Option<Instant> {
        self.io.as_ref().and_then(|b| b.timer)
    }

    /// Records the key of this connection's entry in the server's timer set.
    pub fn set_timer(&mut self, timer: Option<Instant>) {
        if timer.is_some() || self.io.is_some() {
            self.buffers().timer = timer;
        }
        self.release_idle_buffers();
    }

    /// When a `-delay_accept` or `-delay_write` wait ends.
    pub fn delay_until(&self) -> Option<Instant> {
        self.io.as_ref().and_then(|b| b.delay_until)
    }

    /// Enters a delayed phase that ends at `until`.
    pub fn delay(&mut self, phase: Phase, until: Instant) {
        self.phase = phase;
        self.buffers().delay_until = Some(until);
    }

    /// Leaves a delayed phase for `phase`.
    pub fn end_delay(&mut self, phase: Phase) {
        self.phase = phase;
        if let Some(b) = self.io.as_mut() {
            b.delay_until = None;
        }
    }

    /// Frees the box once nothing is in it (a registration connection at rest).
    fn release_idle_buffers(&mut self) {
        let idle = self.io.as_ref().is_some_and(|b| {
            b.rx.is_empty()
                && b.tx_pos >= b.tx.bytes().len()
                && b.timer.is_none()
                && b.deadline.is_none()
                && b.delay_until.is_none()
        });
        if idle {
            self.io = None;
        }
    }

    fn rx(&self) -> &[u8] {
        self.io.as_ref().map_or(&[], |b| &b.rx)
    }

    /// Reads what the C epmd would read (see [`read_limit`]) until the request is complete,
    /// the socket would block, or the connection must close.
    pub fn read_request(&mut self, scratch: &mut [u8]) -> ReadOutcome {
        loop {
            let limit = read_limit(self.rx()).min(scratch.len());
            if limit == 0 {
                // Only reachable if the buffer already holds an invalid or complete frame.
                return decode(self.rx());
            }
            match self.stream.read(&mut scratch[..limit]) {
                Ok(0) => return ReadOutcome::Close(CloseReason::PeerClosed),
                Ok(n) => {
                    self.bytes_in += n as u64;
                    let got = &scratch[..n];
                    let outcome = if self.rx().is_empty() {
                        // The common case: the whole request in one read, decoded in place.
                        decode(got)
                    } else {
                        self.buffers().rx.extend_from_slice(got);
                        decode(self.rx())
                    };
                    match outcome {
                        ReadOutcome::Pending => {
                            if self.rx().is_empty() {
                                self.buffers().rx.extend_from_slice(got);
                            }
                        }
                        done => {
                            if let Some(b) = self.io.as_mut() {
                                b.rx = Vec::new();
                            }
                            return done;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Close(CloseReason::IoError),
            }
        }
    }

    /// Checks a registration connection: true when the peer has closed, reset or sent data,
    /// any of which ends the registration (spec §4.6). Reads (and discards) what is there
    /// with one read of up to `INBUF_SIZE` bytes, as the C epmd does: up to 3060 pending
    /// bytes are consumed, so the close that follows is a FIN, and more leave the kernel
    /// to send a RST, as they do with the C epmd.
    pub fn registration_ended(&mut self) -> bool {
        let mut buf = [0u8; INBUF_SIZE];
        loop {
            match self.stream.read(&mut buf) {
                Ok(n) => {
                    self.bytes_in += n as u64;
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Like [`registration_ended`](Self::registration_ended) but without consuming anything:
    /// used to detect a registration whose peer is already gone (upstream issue #11083).
    pub fn peer_gone(&self) -> bool {
        let mut buf = [0u8; 1];
        match self.stream.peek(&mut buf) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ),
        }
    }

    /// Bytes of a request received so far (for a hand-over).
    pub fn pending_rx(&self) -> &[u8] {
        self.rx()
    }

    /// Reply bytes not yet written (for a hand-over).
    pub fn pending_tx(&self) -> &[u8] {
        self.io.as_ref().map_or(&[], |b| &b.tx.bytes()[b.tx_pos..])
    }

    /// Puts back the buffers of a connection taken over from another process.
    pub fn restore_buffers(&mut self, rx: Vec<u8>, tx: Vec<u8>) {
        let b = self.buffers();
        b.rx = rx;
        b.tx = Output::Owned(tx);
        b.tx_pos = 0;
        self.release_idle_buffers();
    }

    /// Queues `reply` to be written.
    pub fn queue(&mut self, reply: Output) {
        let b = self.buffers();
        b.tx = reply;
        b.tx_pos = 0;
    }

    /// True while reply bytes wait to be written.
    pub fn has_pending_output(&self) -> bool {
        !self.pending_tx().is_empty()
    }

    /// Writes queued bytes until done (`Ok(true)`) or the socket would block (`Ok(false)`).
    pub fn flush(&mut self) -> io::Result<bool> {
        let Some(b) = self.io.as_mut() else {
            return Ok(true);
        };
        while b.tx_pos < b.tx.bytes().len() {
            match self.stream.write(&b.tx.bytes()[b.tx_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    b.tx_pos += n;
                    self.bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        b.tx = Output::default();
        b.tx_pos = 0;
        self.release_idle_buffers();
        Ok(true)
    }

    /// The interest this connection needs: readable always (EOF must be seen), writable
    /// while output is pending.
    pub fn wanted_interest(&self) -> Interest {
        if self.has_pending_output() {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        }
    }

    /// When this connection next needs attention from the timer: its delay, if any, or its
    /// deadline.
    pub fn next_timer(&self) -> Option<Instant> {
        let delay = match self.phase {
            Phase::AcceptDelay | Phase::WriteDelay(_) => self.delay_until(),
            _ => None,
        };
        match (delay, self.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

fn decode(buf: &[u8]) -> ReadOutcome {
    match decode_frame(buf) {
        Ok(Status::Partial) => ReadOutcome::Pending,
        Ok(Status::Complete(payload)) => match Request::decode(payload) {
            Ok(req) => ReadOutcome::Request(req),
            Err(e) => ReadOutcome::Close(CloseReason::Request(e)),
        },
        Err(e) => ReadOutcome::Close(CloseReason::Frame(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registration connection lives as long as its node: keep it small (the hold
    /// benchmark's RSS per registration depends on it).
    #[test]
    fn connections_stay_small() {
        assert!(
            std::mem::size_of::<Connection>() <= 96,
            "{}",
            std::mem::size_of::<Connection>()
        );
    }
}
