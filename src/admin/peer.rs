//! Who is at the other end of the admin socket, for both sides: the daemon decides what a
//! client may do by its uid, and the client decides whether to trust the daemon.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED`: the
/// credentials it had when it connected, or when it called `listen`).
pub fn peer_uid(fd: &impl AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cred`, a ucred as SO_PEERCRED
    // expects, and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether the client may trust a daemon running as `daemon_uid` that serves the socket
/// at `path`: root and the client's own user are trusted; another user only when the
/// socket's directory is that user's own and nobody else may write in it (a service's
/// private runtime directory, such as systemd's `RuntimeDirectory=` of a `DynamicUser`).
/// Anything else may be a socket planted by another user in a shared directory.
pub fn daemon_trusted(daemon_uid: u32, path: &Path) -> bool {
    if daemon_uid == 0 || daemon_uid == euid() {
        return true;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::metadata(dir).is_ok_and(|m| m.uid() == daemon_uid && m.mode() & 0o022 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn peer_uid_is_our_own_for_a_pair() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(peer_uid(&a).unwrap(), euid());
        let dir = std::env::temp_dir().join(format!("epmd-rs-peer-{}", std::process::id()));
        let _ = fs::create_dir(&dir);
        let path = dir.join("s.sock");
        let _ = fs::remove_file(&path);
        let _l = UnixListener::bind(&path).unwrap();
        let c = UnixStream::connect(&path).unwrap();
        assert_eq!(peer_uid(&c).unwrap(), euid());
        assert!(daemon_trusted(euid(), &path));
        let _ = fs::remove_dir_all(&dir);
    }
}
