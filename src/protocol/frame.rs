//! 2-byte length framing of requests (spec §1), as a push parser: "need more bytes" is a value.
//!
//! The C epmd's read sizes are part of its observable behaviour: while the length is unknown
//! one read takes up to [`FIRST_READ_BYTES`]; once it is known, reads take only what is still
//! missing, so bytes beyond the request are never read. Bytes beyond the request that came in
//! a read made before the length was known close the connection without a reply.
//! [`read_limit`] and [`decode_frame`] together reproduce that.

use super::error::FrameError;
use super::tag::{FIRST_READ_BYTES, MAX_PAYLOAD};

/// The outcome of feeding bytes to a push parser.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status<T> {
    /// A whole value was decoded.
    Complete(T),
    /// More bytes are needed.
    Partial,
}

/// Decodes one request frame from everything received so far on a connection.
///
/// Returns the payload (without its length prefix) once `buf` holds the whole frame. `buf`
/// must hold exactly what was received: bytes beyond the declared length are an error, since
/// the daemon only ever reads them when they came in the same read as the length (see
/// [`read_limit`]).
pub fn decode_frame(buf: &[u8]) -> Result<Status<&[u8]>, FrameError> {
    let Some(len) = declared_len(buf) else {
        return Ok(Status::Partial);
    };
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if usize::from(len) > MAX_PAYLOAD {
        return Err(FrameError::TooLong(len));
    }
    let payload = &buf[2..];
    match payload.len().cmp(&usize::from(len)) {
        std::cmp::Ordering::Less => Ok(Status::Partial),
        std::cmp::Ordering::Equal => Ok(Status::Complete(payload)),
        std::cmp::Ordering::Greater => Err(FrameError::TrailingBytes {
            expected: len,
            got: payload.len(),
        }),
    }
}

/// How many bytes the next read on a connection may take, given what it holds (`buf`).
///
/// While the length prefix is incomplete, up to `FIRST_READ_BYTES - buf.len()`; afterwards
/// only the bytes still missing from the frame (0 once it is complete or invalid).
pub fn read_limit(buf: &[u8]) -> usize {
    match declared_len(buf) {
        None => FIRST_READ_BYTES - buf.len(),
        Some(len) if len == 0 || usize::from(len) > MAX_PAYLOAD => 0,
        Some(len) => (usize::from(len) + 2).saturating_sub(buf.len()),
    }
}

/// Prepends the 2-byte big-endian length to `payload` (used by clients and tests).
///
/// # Panics
/// If `payload` is longer than `u16::MAX` bytes.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(payload.len()).expect("payload longer than u16::MAX");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

fn declared_len(buf: &[u8]) -> Option<u16> {
    match buf {
        [hi, lo, ..] => Some(u16::from_be_bytes([*hi, *lo])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_until_complete() {
        assert_eq!(decode_frame(&[]), Ok(Status::Partial));
        assert_eq!(decode_frame(&[0x00]), Ok(Status::Partial));
        assert_eq!(decode_frame(&[0x00, 0x01]), Ok(Status::Partial));
        assert_eq!(
            decode_frame(&[0x00, 0x01, 0x6E]),
            Ok(Status::Complete(&[0x6E][..]))
        );
    }

    #[test]
    fn length_limits() {
        assert_eq!(decode_frame(&[0x00, 0x00]), Err(FrameError::Empty));
        // 3057 = 0x0BF1 is the largest payload; 3058 is refused as soon as the prefix is in.
        assert_eq!(decode_frame(&[0x0B, 0xF1]), Ok(Status::Partial));
        assert_eq!(decode_frame(&[0x0B, 0xF2]), Err(FrameError::TooLong(3058)));
        let mut big = vec![0x0B, 0xF1];
        big.resize(2 + 3057, b'n');
        assert_eq!(decode_frame(&big), Ok(Status::Complete(&big[2..])));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        assert_eq!(
            decode_frame(&[0x00, 0x01, 0x6E, 0x00]),
            Err(FrameError::TrailingBytes {
                expected: 1,
                got: 2
            })
        );
    }

    #[test]
    fn read_limits_follow_the_c_epmd() {
        assert_eq!(read_limit(&[]), 3059);
        assert_eq!(read_limit(&[0x00]), 3058);
        assert_eq!(read_limit(&[0x00, 0x05]), 5);
        assert_eq!(read_limit(&[0x00, 0x05, 1, 2]), 3);
        assert_eq!(read_limit(&[0x00, 0x01, 0x6E]), 0);
        assert_eq!(read_limit(&[0x00, 0x00]), 0);
        assert_eq!(read_limit(&[0xFF, 0xFF]), 0);
    }

    #[test]
    fn encode_prepends_length() {
        let mut out = Vec::new();
        encode_frame(&[0x6E], &mut out);
        assert_eq!(out, [0x00, 0x01, 0x6E]);
    }
}
