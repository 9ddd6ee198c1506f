//! epmd-compatible client commands (spec §8): `-names`, `-dump`, `-started`, `-kill`,
//! `-stop NAME`, with the C client's exact output and exit codes.
//!
//! Blocking `std::net` with timeouts; output text lives in [`output`].

pub mod output;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::cli::config::ClientCommand;
use crate::protocol::{encode_frame, Request};
use output::Outcome;

/// How long a client command waits for the daemon to answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest name `-stop` sends (the C client's check).
pub const MAX_STOP_NAME: usize = 1000;

/// Connects to the local epmd: `::1` first, then `127.0.0.1`, as the C client does.
pub fn connect_local(port: u16) -> io::Result<TcpStream> {
    let addrs = [
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    ];
    let mut last = io::Error::from(io::ErrorKind::ConnectionRefused);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT))?;
                s.set_write_timeout(Some(IO_TIMEOUT))?;
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Runs `command` against the epmd on `port` and returns what to print and the exit code.
pub fn run(port: u16, command: &ClientCommand) -> Outcome {
    if let ClientCommand::Stop(name) = command {
        if name.len() > MAX_STOP_NAME {
            return Outcome::stdout(b"epmd: Name too long!".to_vec(), 1);
        }
    }
    let Ok(mut stream) = connect_local(port) else {
        return match command {
            ClientCommand::Started => Outcome::silent(1),
            _ => Outcome::stderr(b"epmd: Cannot connect to local epmd\n".to_vec(), 1),
        };
    };
    let request = match command {
        ClientCommand::Names | ClientCommand::Started => vec![0, 1, b'n'],
        ClientCommand::Dump => vec![0, 1, b'd'],
        ClientCommand::Kill => vec![0, 1, b'k'],
        ClientCommand::Stop(name) => {
            let mut payload = Vec::new();
            Request::Stop(name.as_bytes().to_vec()).encode_payload(&mut payload);
            if name.is_empty() {
                payload.pop(); // the C client sends the bare tag for an empty name
            }
            let mut frame = Vec::new();
            encode_frame(&payload, &mut frame);
            frame
        }
    };
    if stream.write_all(&request).is_err() {
        return Outcome::stdout(b"epmd: Can't write to epmd\n".to_vec(), 1);
    }
    match command {
        ClientCommand::Names | ClientCommand::Dump | ClientCommand::Started => {
            // The C client reads the header with one read(fd, &i, 4): a shorter first
            // chunk is "no response".
            let mut header = [0u8; 4];
            let got = loop {
                match stream.read(&mut header) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other.unwrap_or(0),
                }
            };
            if got < 4 {
                return output::listing(command, &header[..got]);
            }
            let mut reply = header.to_vec();
            reply.extend(read_to_close(&mut stream));
            output::listing(command, &reply)
        }
        ClientCommand::Kill => output::kill(read_fill(&mut stream, 2)),
        ClientCommand::Stop(_) => output::stop(read_fill(&mut stream, 7)),
    }
}

/// Reads until the peer closes (or an error or timeout ends the read).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    out
}

/// Reads exactly `n` bytes unless the peer closes first (C's `read_fill`): `Ok` with what
/// was read (fewer than `n` on EOF), or `Err` on a read error.
fn read_fill(stream: &mut TcpStream, n: usize) -> io::Result<Vec<u8>> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match stream.read(&mut out[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    out.truncate(got);
    Ok(out)
}
