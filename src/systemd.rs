//! Socket activation without libsystemd: the `LISTEN_PID` / `LISTEN_FDS` protocol of
//! `sd_listen_fds(3)`, read from the environment given by the caller.

use std::ffi::OsString;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// How many listening fds systemd passed to process `pid`, according to `env`; 0 when the
/// variables are absent, malformed, or meant for another process.
pub fn listen_fds_count(pid: u32, env: impl Fn(&str) -> Option<OsString>) -> usize {
    let get = |k: &str| env(k).and_then(|v| v.into_string().ok());
    let Some(listen_pid) = get("LISTEN_PID").and_then(|p| p.parse::<u32>().ok()) else {
        return 0;
    };
    if listen_pid != pid {
        return 0;
    }
    get("LISTEN_FDS")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0)
}

/// Takes ownership of `count` passed fds as listening sockets.
///
/// # Safety
/// The fds `3..3 + count` must be listening stream sockets passed by systemd and owned by
/// nobody else in this process.
pub unsafe fn adopt(count: usize) -> Vec<TcpListener> {
    (0..count)
        .map(|i| {
            let fd = LISTEN_FDS_START + i as RawFd;
            // SAFETY: the caller guarantees that fd is a passed socket nobody else owns.
            unsafe { TcpListener::from_raw_fd(fd) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn counts_only_fds_meant_for_us() {
        assert_eq!(
            listen_fds_count(42, env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "2")])),
            2
        );
        assert_eq!(
            listen_fds_count(42, env(&[("LISTEN_PID", "41"), ("LISTEN_FDS", "2")])),
            0
        );
        assert_eq!(listen_fds_count(42, env(&[("LISTEN_FDS", "2")])), 0);
        assert_eq!(
            listen_fds_count(42, env(&[("LISTEN_PID", "42"), ("LISTEN_FDS", "x")])),
            0
        );
    }
}
