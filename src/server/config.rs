//! The daemon loop's settings and connection caps.

use std::time::Duration;

use crate::admin::{ConfigEntry, Source as ConfigSource};
use crate::registry::Limits;
use crate::server::dispatch::DispatchConfig;
use crate::server::policy::AccessPolicy;
use crate::server::source::DEFAULT_IPV6_SOURCE_PREFIX;

/// Settings of the daemon loop.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How requests are answered.
    pub dispatch: DispatchConfig,
    /// Total time a non-registration connection may take, from accept to reply written.
    pub packet_timeout: Duration,
    /// `-delay_accept`: a new connection is not read before this much time has passed.
    pub delay_accept: Option<Duration>,
    /// `-delay_write`: each reply waits this long before it is written (without blocking
    /// other connections, unlike the C epmd's sleep).
    pub delay_write: Option<Duration>,
    /// Registry bounds.
    pub limits: Limits,
    /// The effective configuration, for `admin config`.
    pub report: Vec<ConfigEntry>,
    /// NAMES and DUMP report the port the client connected to instead of the configured
    /// one (socket activation, where the two may differ).
    pub header_from_socket: bool,
    /// Who may send NAMES.
    pub names_policy: AccessPolicy,
    /// Who may send PORT_PLEASE2.
    pub port_please_policy: AccessPolicy,
    /// Connection caps.
    pub caps: Caps,
    /// Where the listening sockets came from, for `admin config`.
    pub listen_source: ConfigSource,
}

/// Bounds on open epmd connections (admin connections are not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Most open connections in total; above it a new connection is closed at once.
    pub max_connections: usize,
    /// Most open connections from one non-local source: an IPv4 address, or an IPv6
    /// network of `ipv6_source_prefix` bits.
    pub max_per_source: usize,
    /// The prefix length that makes IPv6 addresses one source (64 by default).
    pub ipv6_source_prefix: u8,
    /// Connections kept for local peers: non-local peers are refused once
    /// `max_connections - local_reserve` connections are open, so a remote flood cannot
    /// keep local nodes from registering.
    pub local_reserve: usize,
}

/// Connections kept free of registrations, so that lookups and NAMES are answered even
/// when registrations fill every other fd.
pub const SHORT_REQUEST_RESERVE: usize = 4;

/// Spare fds beyond those open when the daemon starts serving (a log file reopened, a
/// hand-over's socket pair).
pub const FD_MARGIN: usize = 1;

impl Caps {
    /// Caps for a process allowed `fd_limit` open files of which `fds_in_use` are taken by
    /// listeners, the poll, signals, logging and the admin socket; a tenth (at least 16)
    /// reserved for local peers; 1024 per remote source.
    pub fn for_fd_limit(fd_limit: u64, fds_in_use: usize) -> Caps {
        let max = usize::try_from(fd_limit)
            .unwrap_or(usize::MAX)
            .saturating_sub(fds_in_use + FD_MARGIN)
            .max(64);
        Caps {
            max_connections: max,
            max_per_source: 1024,
            ipv6_source_prefix: DEFAULT_IPV6_SOURCE_PREFIX,
            local_reserve: (max / 10).max(16),
        }
    }
}
