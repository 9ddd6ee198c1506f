//! The operator plane's HTTP side (`--metrics-listen`): its listeners and connections.
//! It accepts (at most [`MAX_HTTP_CONNECTIONS`] at once), reads and parses requests,
//! answers `/livez` and every error itself, and returns `/metrics` and `/readyz` for the
//! loop to answer with [`HttpPlane::reply`].

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, warn};
use mio::net::TcpListener;
use mio::{Interest, Token};

use crate::server::http::{
    error_response, response, HttpConn, Parsed, ReadResult, Route, Status, MAX_HTTP_CONNECTIONS,
};
use crate::server::token::{self, ConnTokens, TokenMap};

/// What accepting did, for the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Connections refused because [`MAX_HTTP_CONNECTIONS`] were open.
    pub capped: u64,
}

/// The HTTP listeners and connections.
#[derive(Debug, Default)]
pub struct HttpPlane {
    listeners: Vec<TcpListener>,
    conns: TokenMap<HttpConn>,
}

impl HttpPlane {
    /// The plane on already bound listeners, registered with `poll`.
    pub fn new(
        listeners: Vec<std::net::TcpListener>,
        poll: &mio::Registry,
    ) -> io::Result<HttpPlane> {
        let mut out = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.register(&mut l, token::metrics_listener(i), Interest::READABLE)?;
            out.push(l);
        }
        Ok(HttpPlane {
            listeners: out,
            conns: TokenMap::default(),
        })
    }

    /// The addresses listened on.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The listening sockets' fds, for a snapshot.
    pub fn listener_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.listeners.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Whether `token` is an HTTP connection.
    pub fn has(&self, token: Token) -> bool {
        self.conns.contains_key(&token)
    }

    /// Open HTTP connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether no HTTP connection is open.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Accepts every waiting client of listener `index`.
    pub fn accept(
        &mut self,
        index: usize,
        poll: &mio::Registry,
        tokens: &mut ConnTokens,
    ) -> Accepted {
        let mut done = Accepted::default();
        loop {
            let accepted = match self.listeners.get(index) {
                Some(l) => l.accept(),
                None => return done,
            };
            match accepted {
                Ok((stream, peer)) if self.conns.len() >= MAX_HTTP_CONNECTIONS => {
                    done.capped += 1;
                    debug!("refusing HTTP client {peer}: {} open", self.conns.len());
                    drop(stream);
                }
                Ok((mut stream, peer)) => {
                    let token = tokens.allocate();
                    if poll
                        .register(&mut stream, token, Interest::READABLE)
                        .is_ok()
                    {
                        // Bytes already there are reported by the registration.
                        self.conns
                            .insert(token, HttpConn::new(stream, peer, Instant::now()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return done,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of fds: the client stays in the backlog; the next one retries.
                    warn!("error in HTTP accept: {e}");
                    return done;
                }
            }
        }
    }

    /// Handles readiness of the HTTP connection `token`: a request for the loop to
    /// answer, or `None` when it was answered here (or is not whole yet).
    pub fn ready(&mut self, poll: &mio::Registry, token: Token) -> Option<Route> {
        let conn = self.conns.get_mut(&token)?;
        if conn.answered() {
            self.flush(poll, token);
            return None;
        }
        match conn.read() {
            ReadResult::Pending => None,
            ReadResult::Closed => {
                self.close(poll, token);
                None
            }
            ReadResult::Parsed(Parsed::Partial) => None,
            ReadResult::Parsed(Parsed::Route(Route::Livez)) => {
                self.reply(
                    poll,
                    token,
                    Status::Ok,
                    "text/plain; charset=utf-8",
                    b"ok\n",
                );
                None
            }
            ReadResult::Parsed(Parsed::Route(route)) => Some(route),
            ReadResult::Parsed(Parsed::Error(status)) => {
                debug!("HTTP client {}: {status:?}", conn.peer);
                conn.queue(error_response(status));
                self.flush(poll, token);
                None
            }
        }
    }

    /// Sends a response to `token` and closes it once written.
    pub fn reply(
        &mut self,
        poll: &mio::Registry,
        token: Token,
        status: Status,
        content_type: &str,
        body: &[u8],
    ) {
        if let Some(conn) = self.conns.get_mut(&token) {
            conn.queue(response(status, content_type, body));
        }
        self.flush(poll, token);
    }

    fn flush(&mut self, poll: &mio::Registry, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        match conn.flush() {
            Ok(true) | Err(_) => self.close(poll, token),
            Ok(false) => {
                let _ = poll.reregister(&mut conn.stream, token, Interest::WRITABLE);
            }
        }
    }

    fn close(&mut self, poll: &mio::Registry, token: Token) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = poll.deregister(&mut conn.stream);
        }
    }

    /// The earliest HTTP connection deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().map(|c| c.deadline).min()
    }

    /// Closes the connections whose deadline has passed; returns how many.
    pub fn expire(&mut self, poll: &mio::Registry, now: Instant) -> u64 {
        let expired: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in &expired {
            debug!("closing an HTTP client at its deadline");
            self.close(poll, *t);
        }
        expired.len() as u64
    }
}
