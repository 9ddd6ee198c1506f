//! One `--metrics-listen` HTTP connection: a GET request of at most [`MAX_REQUEST_BYTES`]
//! parsed with `httparse`, one response, then the connection closes. Anything else is
//! answered with its status (400, 404, 405, 431, 505) and closed; a client that has not
//! sent a whole request within [`HTTP_DEADLINE`] of its accept is closed unanswered.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::server::metrics::Format;

/// The largest request head read (request line and headers); a longer one is answered 431.
pub const MAX_REQUEST_BYTES: usize = 4096;

/// The most headers a request may have.
pub const MAX_HEADERS: usize = 32;

/// How long a client has from accept to its response written.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(5);

/// The most HTTP connections open at once; more are closed at accept.
pub const MAX_HTTP_CONNECTIONS: usize = 16;

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /metrics`, in this format.
    Metrics(Format),
    /// `GET /livez`.
    Livez,
    /// `GET /readyz`.
    Readyz,
}

/// What the bytes read so far are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole request head yet.
    Partial,
    /// A request to serve.
    Route(Route),
    /// A request answered with this error status.
    Error(Status),
}

/// An HTTP status this server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 400: not HTTP/1.x, or malformed.
    BadRequest,
    /// 404: no such path.
    NotFound,
    /// 405: a method other than GET.
    MethodNotAllowed,
    /// 431: the request head is larger than [`MAX_REQUEST_BYTES`] or has too many headers.
    TooLarge,
    /// 503: not ready.
    Unavailable,
}

impl Status {
    /// The status code and reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::Ok => (200, "OK"),
            Status::BadRequest => (400, "Bad Request"),
            Status::NotFound => (404, "Not Found"),
            Status::MethodNotAllowed => (405, "Method Not Allowed"),
            Status::TooLarge => (431, "Request Header Fields Too Large"),
            Status::Unavailable => (503, "Service Unavailable"),
        }
    }
}

/// Parses the request head in `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_BYTES => {
            Parsed::Error(Status::TooLarge)
        }
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Error(Status::TooLarge),
        Err(_) => Parsed::Error(Status::BadRequest),
        Ok(httparse::Status::Complete(_)) => {
            if req.method != Some("GET") {
                return Parsed::Error(Status::MethodNotAllowed);
            }
            let path = req.path.unwrap_or("");
            let path = path.split_once('?').map_or(path, |(p, _)| p);
            match path {
                "/metrics" => {
                    let accept = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("accept"))
                        .and_then(|h| std::str::from_utf8(h.value).ok());
                    Parsed::Route(Route::Metrics(Format::from_accept(accept)))
                }
                "/livez" => Parsed::Route(Route::Livez),
                "/readyz" => Parsed::Route(Route::Readyz),
                _ => Parsed::Error(Status::NotFound),
            }
        }
    }
}

/// A whole response: status line, headers (`Connection: close`) and body.
pub fn response(status: Status, content_type: &str, body: &[u8]) -> Vec<u8> {
    let (code, reason) = status.line();
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == Status::MethodNotAllowed {
        out.push_str("Allow: GET\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The response to a request answered with an error `status`.
pub fn error_response(status: Status) -> Vec<u8> {
    let (code, reason) = status.line();
    response(
        status,
        "text/plain; charset=utf-8",
        format!("{code} {reason}\n").as_bytes(),
    )
}

/// What reading did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadResult {
    /// Nothing to act on yet.
    Pending,
    /// The peer closed or failed before a whole request: close.
    Closed,
    /// A request head (or an error) to answer.
    Parsed(Parsed),
}

/// One HTTP connection.
#[derive(Debug)]
pub struct HttpConn {
    /// The socket.
    pub stream: TcpStream,
    /// The peer.
    pub peer: SocketAddr,
    /// Accept time + [`HTTP_DEADLINE`].
    pub deadline: Instant,
    rx: Vec<u8>,
    tx: Vec<u8>,
    tx_pos: usize,
    /// A response is queued: nothing more is read.
    answered: bool,
}

impl HttpConn {
    /// A connection accepted at `now`.
    pub fn new(stream: TcpStream, peer: SocketAddr, now: Instant) -> HttpConn {
        HttpConn {
            stream,
            peer,
            deadline: now + HTTP_DEADLINE,
            rx: Vec::new(),
            tx: Vec::new(),
            tx_pos: 0,
            answered: false,
        }
    }

    /// Whether a response is queued.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Reads what is there (never more than [`MAX_REQUEST_BYTES`] in all) and parses it.
    pub fn read(&mut self) -> ReadResult {
        if self.answered {
            return ReadResult::Pending; // pipelined bytes are not read
        }
        let mut chunk = [0u8; 1024];
        loop {
            let room = MAX_REQUEST_BYTES - self.rx.len();
            if room == 0 {
                return ReadResult::Parsed(parse(&self.rx));
            }
            let want = room.min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return ReadResult::Closed,
                Ok(n) => {
                    self.rx.extend_from_slice(&chunk[..n]);
                    match parse(&self.rx) {
                        Parsed::Partial => continue,
                        done => return ReadResult::Parsed(done),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadResult::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadResult::Closed,
            }
        }
    }

    /// Queues the response; nothing more is read.
    pub fn queue(&mut self, bytes: Vec<u8>) {
        self.tx = bytes;
        self.tx_pos = 0;
        self.answered = true;
        self.rx = Vec::new();
    }

    /// Writes what it can of the response; `Ok(true)` once all is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.tx_pos < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_errors() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Parsed::Route(Route::Metrics(Format::Text))
        );
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.0\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n"),
            Parsed::Route(Route::Metrics(Format::OpenMetrics))
        );
        assert_eq!(
            parse(b"GET /livez HTTP/1.1\r\n\r\n"),
            Parsed::Route(Route::Livez)
        );
        assert_eq!(
            parse(b"GET /readyz HTTP/1.1\r\n\r\n"),
            Parsed::Route(Route::Readyz)
        );
        assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), Parsed::Partial);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n\r\n"),
            Parsed::Error(Status::NotFound)
        );
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            Parsed::Error(Status::MethodNotAllowed)
        );
        assert_eq!(
            parse(b"\x00\x01\x02\x03\r\n\r\n"),
            Parsed::Error(Status::BadRequest)
        );
        assert_eq!(
            parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Parsed::Error(Status::BadRequest)
        );
        let mut long = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while long.len() < MAX_REQUEST_BYTES {
            long.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse(&long), Parsed::Error(Status::TooLarge));
        let many: Vec<u8> = std::iter::once(&b"GET /metrics HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"A: b\r\n"[..], MAX_HEADERS + 1))
            .chain(std::iter::once(&b"\r\n"[..]))
            .flatten()
            .copied()
            .collect();
        assert_eq!(parse(&many), Parsed::Error(Status::TooLarge));
    }

    #[test]
    fn responses_close_and_say_their_length() {
        let r = String::from_utf8(response(Status::Ok, "text/plain", b"ok\n")).unwrap();
        assert_eq!(
            r,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
        );
        let r = String::from_utf8(error_response(Status::MethodNotAllowed)).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(r.contains("\r\nAllow: GET\r\n"));
    }
}
