//! epmd-rs: a drop-in replacement for Erlang's EPMD (Erlang Port Mapper Daemon).
//!
//! Layers, from the wire up:
//! - [`protocol`]: the sans-IO codec (frames, requests, replies, NAMES/DUMP text).
//! - [`registry`]: the pure registry of names, connections and creations.
//! - [`server`]: the single-threaded mio loop that moves bytes between sockets and the two
//!   above; [`daemon`] starts it (fd limit, listeners, `-daemon`).
//! - [`client`]: the epmd-compatible client commands; [`query`] asks any epmd;
//!   [`admin`] inspects the running daemon over its Unix socket.
//! - [`cli`]: argv (with epmd's single-dash flags) → validated [`cli::config::Config`] → action.
//!
//! `protocol` and `registry` never touch a socket, a clock or the environment.

pub mod admin;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod doctor;
pub mod epmd_log;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod handover;
#[cfg(test)]
mod layering;
pub mod logging;
pub mod protocol;
pub mod query;
pub mod registry;
pub mod server;
pub mod systemd;
#[cfg(test)]
mod test_env;
pub mod wait;
