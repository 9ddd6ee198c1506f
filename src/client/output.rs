//! The C epmd client's exact messages and exit codes (spec §8), kept apart from the
//! transport so that they can be tested without sockets.

use std::io;

use crate::cli::config::ClientCommand;

/// What a client command prints, and its exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes for stdout.
    pub stdout: Vec<u8>,
    /// Bytes for stderr.
    pub stderr: Vec<u8>,
    /// The exit code.
    pub code: u8,
}

impl Outcome {
    /// Output on stdout.
    pub fn stdout(bytes: Vec<u8>, code: u8) -> Outcome {
        Outcome {
            stdout: bytes,
            stderr: Vec::new(),
            code,
        }
    }

    /// Output on stderr.
    pub fn stderr(bytes: Vec<u8>, code: u8) -> Outcome {
        Outcome {
            stdout: Vec::new(),
            stderr: bytes,
            code,
        }
    }

    /// No output at all.
    pub fn silent(code: u8) -> Outcome {
        Outcome::stdout(Vec::new(), code)
    }
}

/// `-names`, `-dump` and `-started`, given everything the daemon sent before closing.
pub fn listing(command: &ClientCommand, reply: &[u8]) -> Outcome {
    let Some((header, rest)) = reply.split_first_chunk::<4>() else {
        return match command {
            ClientCommand::Started => Outcome::silent(1),
            _ => Outcome::stdout(b"epmd: no response from local epmd\n".to_vec(), 1),
        };
    };
    if *command == ClientCommand::Started {
        return Outcome::silent(0);
    }
    let port = u32::from_be_bytes(*header);
    let mut out = format!("epmd: up and running on port {port} with data:\n").into_bytes();
    out.extend_from_slice(rest);
    Outcome::stdout(out, 0)
}

/// `-kill`, given the (up to) 2 bytes read.
pub fn kill(read: io::Result<Vec<u8>>) -> Outcome {
    match read {
        Ok(b) if b == b"OK" => Outcome::stdout(b"Killed\n".to_vec(), 0),
        Ok(b) if b.len() == 2 => Outcome::stdout(
            b"Killing not allowed - living nodes in database.\n".to_vec(),
            1,
        ),
        Ok(_) => responded_with(),
        Err(_) => failed_to_read(),
    }
}

/// `-stop`, given the (up to) 7 bytes read.
pub fn stop(read: io::Result<Vec<u8>>) -> Outcome {
    match read {
        Ok(b) if b.len() == 7 => {
            // printf("%s\n") stops at a NUL.
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            let mut out = b[..end].to_vec();
            out.push(b'\n');
            Outcome::stdout(out, 0)
        }
        Ok(_) => responded_with(),
        Err(_) => failed_to_read(),
    }
}

/// The answer ended early. The C client's `read_fill` returns 0 at end of stream whatever
/// it had read, so the bytes between the brackets are always empty.
fn responded_with() -> Outcome {
    Outcome::stdout(b"epmd: local epmd responded with <>\n".to_vec(), 1)
}

fn failed_to_read() -> Outcome {
    Outcome::stdout(b"epmd: failed to read answer from local epmd\n".to_vec(), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_output() {
        let o = listing(&ClientCommand::Names, b"\x00\x00\x38\x21name a at port 1\n");
        assert_eq!(
            o,
            Outcome::stdout(
                b"epmd: up and running on port 14369 with data:\nname a at port 1\n".to_vec(),
                0
            )
        );
        assert_eq!(
            listing(&ClientCommand::Dump, b"\x00\x00"),
            Outcome::stdout(b"epmd: no response from local epmd\n".to_vec(), 1)
        );
        assert_eq!(
            listing(&ClientCommand::Started, b"\x00\x00\x00\x01"),
            Outcome::silent(0)
        );
        assert_eq!(listing(&ClientCommand::Started, b""), Outcome::silent(1));
    }

    #[test]
    fn kill_and_stop_output() {
        assert_eq!(kill(Ok(b"OK".to_vec())).stdout, b"Killed\n");
        assert_eq!(kill(Ok(b"NO".to_vec())).code, 1);
        assert_eq!(
            kill(Ok(Vec::new())).stdout,
            b"epmd: local epmd responded with <>\n"
        );
        assert_eq!(
            stop(Ok(b"STOPPED".to_vec())),
            Outcome::stdout(b"STOPPED\n".to_vec(), 0)
        );
        assert_eq!(stop(Ok(b"NOEXIST".to_vec())).stdout, b"NOEXIST\n");
        assert_eq!(
            stop(Err(io::ErrorKind::ConnectionReset.into())).stdout,
            b"epmd: failed to read answer from local epmd\n"
        );
    }
}
