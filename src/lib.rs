//! epmd-rs: a drop-in replacement for Erlang's EPMD (Erlang Port Mapper Daemon).
//!
//! Layers, from the wire up:
//! - [`protocol`]: the sans-IO codec (frames, requests, replies, NAMES/DUMP text).
//! - [`registry`]: the pure registry of names, connections and creations.
//! - [`server`]: the single-threaded mio loop that moves bytes between sockets and the two above.
//! - [`cli`]: argv (with epmd's single-dash flags) → validated [`cli::Config`] → action.
//!
//! `protocol` and `registry` never touch a socket, a clock or the environment.

pub mod protocol;
pub mod registry;
