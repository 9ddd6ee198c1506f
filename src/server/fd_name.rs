//! The names connection fds carry in systemd's fd store and in a hand-over's state.

use std::fs::File;
use std::io;

use mio::Token;

/// The default fd name of the connection with `token`: unique across processes (a restored
/// connection keeps its name while tokens start again), through this process's random
/// incarnation id rather than its pid, which repeats (pid 1 in every container start).
pub fn conn_name(token: Token) -> String {
    format!("conn-{:016x}-{}", incarnation(), token.0)
}

/// This process's incarnation id: 64 random bits, drawn once. Connection fd names carry
/// it (`conn-<id>-<token>`), so that names made by different processes never collide,
/// even when every process has the same pid (pid 1 in a container, pid reuse).
pub fn incarnation() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(random_u64)
}

/// 64 bits from the kernel's random source (`getrandom`, else `/dev/urandom`); if both
/// fail, the time in nanoseconds mixed with the pid, which still differs between two
/// processes started one after the other.
fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize
        || File::open("/dev/urandom")
            .and_then(|mut f| io::Read::read_exact(&mut f, &mut buf))
            .is_ok()
    {
        return u64::from_ne_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incarnation_ids_are_stable_in_a_process_and_random() {
        assert_eq!(incarnation(), incarnation());
        let drawn: std::collections::HashSet<u64> = (0..64).map(|_| random_u64()).collect();
        assert_eq!(drawn.len(), 64, "64 draws of 64 random bits repeated");
    }
}
