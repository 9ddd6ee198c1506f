//! Which process listens on which TCP address, read from Linux `/proc`.
//!
//! `/proc/net/tcp` and `/proc/net/tcp6` map listening sockets to inode numbers, and
//! `/proc/<pid>/fd/*` links read `socket:[<inode>]`. Joining the two tells whether a given
//! process owns a listener, which lets the daemon helper tell its own daemon apart from
//! another process on the same port, and lets tests find a daemon that detached itself.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// The `st` value of a socket in the LISTEN state in `/proc/net/tcp*`.
const TCP_LISTEN: &str = "0A";

/// One listening TCP socket as seen in `/proc/net/tcp*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Listener {
    /// The bound address and port.
    pub(crate) addr: SocketAddr,
    /// The socket's inode number, which `/proc/<pid>/fd` links refer to.
    pub(crate) inode: u64,
}

/// Every listening TCP socket (IPv4 and IPv6) in this network namespace.
pub(crate) fn listeners() -> Vec<Listener> {
    let mut all = Vec::new();
    for (path, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(table) = fs::read_to_string(path) else {
            continue;
        };
        all.extend(
            table
                .lines()
                .skip(1)
                .filter_map(|line| parse_line(line, v6)),
        );
    }
    all
}

/// Parses one row of `/proc/net/tcp*`, keeping it only if it is in the LISTEN state.
fn parse_line(line: &str, v6: bool) -> Option<Listener> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
    if fields.len() < 10 || fields[3] != TCP_LISTEN {
        return None;
    }
    let (ip_hex, port_hex) = fields[1].split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let ip: IpAddr = if v6 {
        parse_ipv6(ip_hex)?.into()
    } else {
        parse_ipv4(ip_hex)?.into()
    };
    let inode = fields[9].parse().ok()?;
    Some(Listener {
        addr: SocketAddr::new(ip, port),
        inode,
    })
}

/// The kernel prints the address as one `%08X` of the in-memory (network order) word.
fn parse_ipv4(hex: &str) -> Option<Ipv4Addr> {
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(word.to_ne_bytes()))
}

/// The kernel prints the address as four `%08X` in-memory words.
fn parse_ipv6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    Some(Ipv6Addr::from(bytes))
}

/// The socket inodes among the open file descriptors of `pid` (empty if it is gone).
pub(crate) fn socket_inodes(pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let link = fs::read_link(entry.ok()?.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// The addresses on which process `pid` holds a listening TCP socket.
pub(crate) fn listen_addrs_of(pid: u32) -> Vec<SocketAddr> {
    let inodes = socket_inodes(pid);
    listeners()
        .into_iter()
        .filter(|l| inodes.contains(&l.inode))
        .map(|l| l.addr)
        .collect()
}

/// The processes that hold a listening TCP socket on `port` (any address, IPv4 or IPv6).
pub(crate) fn listening_pids(port: u16) -> Vec<u32> {
    let wanted: Vec<u64> = listeners()
        .into_iter()
        .filter(|l| l.addr.port() == port)
        .map(|l| l.inode)
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = proc_dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            socket_inodes(pid)
                .iter()
                .any(|inode| wanted.contains(inode))
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The executable of process `pid`, without the ` (deleted)` suffix the kernel adds once
/// the file was replaced (as a rebuild does). `None` if the process is gone.
pub(crate) fn exe_of(pid: u32) -> Option<PathBuf> {
    let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = exe.to_str()?;
    Some(PathBuf::from(
        text.strip_suffix(" (deleted)").unwrap_or(text),
    ))
}

/// Whether `pid` is running the executable at `path` (compared after canonicalisation).
pub(crate) fn runs_executable(pid: u32, path: &str) -> bool {
    let Some(exe) = exe_of(pid) else {
        return false;
    };
    let wanted = fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    exe == wanted
}
