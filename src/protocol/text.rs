//! NAMES and DUMP replies, byte-exact (spec §3.3, §3.4), shared by the daemon and the client.
//!
//! Both start with the configured epmd port as a big-endian `u32`, sent in the same write as
//! the lines (Erlang's client needs a first chunk of at least 4 bytes).

use std::io::Write;

/// Appends the 4-byte header: the configured port as a big-endian `u32`.
pub fn push_port_header(port: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(&port.to_be_bytes());
}

/// Appends one NAMES line: `name <NAME> at port <PORT>\n` (the name as raw bytes).
pub fn push_names_line(name: &[u8], port: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(b"name ");
    out.extend_from_slice(name);
    // Writing to a Vec cannot fail.
    let _ = writeln!(out, " at port {port}");
}

/// Appends one DUMP line for a registered node, with its trailing NUL byte, as the C epmd's
/// `len += r + 1` sends it: `active name     <NAME> at port P, fd = F\n\0`.
pub fn push_dump_active_line(name: &[u8], port: u16, fd: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"active name     <");
    out.extend_from_slice(name);
    let _ = write!(out, "> at port {port}, fd = {fd}\n\0");
}

/// Appends one DUMP line for an old/unused name, with the space before the newline and the
/// trailing NUL: `old/unused name <NAME>, port = P, fd = F \n\0`.
pub fn push_dump_old_line(name: &[u8], port: u16, fd: u32, out: &mut Vec<u8>) {
    out.extend_from_slice(b"old/unused name <");
    out.extend_from_slice(name);
    let _ = write!(out, ">, port = {port}, fd = {fd} \n\0");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_byte_exact() {
        let mut out = Vec::new();
        push_port_header(14369, &mut out);
        push_names_line(b"bar", 4242, &mut out);
        assert_eq!(out, b"\x00\x00\x38\x21name bar at port 4242\n");

        let mut out = Vec::new();
        push_dump_active_line(b"baz", 6000, 7, &mut out);
        push_dump_old_line(b"foo", 5555, 5, &mut out);
        assert_eq!(
            out,
            &b"active name     <baz> at port 6000, fd = 7\n\x00old/unused name <foo>, port = 5555, fd = 5 \n\x00"[..]
        );
    }
}
