//! Free TCP ports for the daemons under test.
//!
//! A port is "free" when it can be bound on the IPv4 and the IPv6 wildcard addresses, so a
//! daemon can bind it whatever `-address` it is given (wildcards or loopbacks). The port is
//! released before it is returned: a race with another process is possible but rare, and
//! [`crate::support::daemon`] retries with a new port when the daemon reports the port taken.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};

/// How many candidate ports to try before giving up.
const ATTEMPTS: usize = 100;

/// Returns a TCP port that is free on `0.0.0.0` and, when the host has IPv6, on `[::]`.
///
/// Panics if no such port turns up after a hundred tries.
pub(crate) fn free_port() -> u16 {
    for _ in 0..ATTEMPTS {
        let port = candidate();
        // Each listener is dropped before the next bind: with dual-stack sockets an IPv6
        // wildcard bind conflicts with a live IPv4 wildcard bind of the same port.
        if bindable_v4(port) && bindable_v6(port) {
            return port;
        }
    }
    panic!("no TCP port free on both 0.0.0.0 and [::] after {ATTEMPTS} attempts");
}

/// Asks the kernel for an unused port, preferring the IPv6 wildcard (dual-stack on Linux).
fn candidate() -> u16 {
    let listener = TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0))
        .or_else(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("bind an ephemeral port on [::] or 0.0.0.0");
    listener
        .local_addr()
        .expect("local_addr of an ephemeral listener")
        .port()
}

/// Whether `0.0.0.0:port` can be bound right now.
fn bindable_v4(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
}

/// Whether `[::]:port` can be bound right now; true when the host has no IPv6 at all.
fn bindable_v6(port: u16) -> bool {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, port)) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::AddrInUse => false,
        // EAFNOSUPPORT / EADDRNOTAVAIL: no IPv6 here, so only IPv4 matters.
        Err(_) => true,
    }
}
