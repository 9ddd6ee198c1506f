//! The top-level error of the process and its exit code. Only `main.rs` turns these into
//! text and an exit status.

use std::fmt;
use std::io;

use crate::cli::config::ConfigError;
use crate::server::listener::ListenError;

/// Everything that can stop the daemon from starting or running.
#[derive(Debug)]
pub enum Error {
    /// The configuration was refused.
    Config(ConfigError),
    /// The listening sockets could not be set up.
    Listen(ListenError),
    /// Detaching with `-daemon` failed.
    Daemonize(daemonize::Error),
    /// The admin socket could not be created.
    Admin(crate::server::admin::AdminSocketError),
    /// Taking over from a running daemon failed.
    Handover(crate::handover::transfer::ReceiveError),
    /// `-systemd` was given but systemd passed no sockets.
    NoSystemdSockets,
    /// An I/O operation failed.
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: io::Error,
    },
}

impl Error {
    /// The process exit status for this error: 0 when another epmd already serves the
    /// port (what `erl`'s `epmd -daemon` relies on), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Listen(ListenError::AddressInUse { .. }) => 0,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(e) => e.fmt(f),
            Error::Listen(e) => e.fmt(f),
            Error::Daemonize(e) => write!(f, "cannot detach: {e}"),
            Error::Admin(e) => e.fmt(f),
            Error::Handover(e) => e.fmt(f),
            Error::NoSystemdSockets => f.write_str("systemd provides no sockets"),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(e) => Some(e),
            Error::Listen(e) => Some(e),
            Error::Daemonize(e) => Some(e),
            Error::Admin(e) => Some(e),
            Error::Handover(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            Error::NoSystemdSockets => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<ListenError> for Error {
    fn from(e: ListenError) -> Self {
        Error::Listen(e)
    }
}
