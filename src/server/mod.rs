//! The daemon: one `Poll` on one thread moves bytes between sockets and the pure
//! [`protocol`](crate::protocol) and [`registry`](crate::registry).
//!
//! Every request has a total deadline measured from accept (not refreshed per byte); a
//! registration connection has none and lives until its peer closes it or sends anything.
//! Accept errors never end the process: accepting pauses briefly and resumes.
//!
//! Parts, each with its own state; the loop ([`event_loop`]) owns them and hands them
//! events:
//! - the loop and its connections: [`event_loop`], [`connection`], [`dispatch`],
//!   [`token`], [`stats`], [`listener`];
//! - admission: [`admission`] (caps, per-source counts, [`policy`], [`source`], [`peer`]);
//! - the operator plane: [`operator`] (the admin socket's clients, [`admin`]) and the
//!   views it serves ([`admin_views`]);
//! - supervision: [`supervision`] (sd_notify, watchdog, `STATUS`);
//! - the lifecycle: [`lifecycle`] (shutdown, hand-over state, the fd store).
//!
//! No module here imports its parent or a module that imports it back (`src/layering.rs`
//! checks the whole crate): this file only declares and re-exports.

pub mod admin;
mod admin_bind;
pub mod admin_views;
pub mod admission;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod event_loop;
pub mod events;
pub mod fd_name;
pub mod histogram;
pub mod http;
pub mod http_plane;
pub mod lifecycle;
pub mod listener;
pub mod metrics;
pub mod operator;
pub mod peer;
pub mod policy;
pub mod source;
pub mod stats;
pub mod supervision;
pub mod token;

pub use config::{Caps, ServerConfig, FD_MARGIN, SHORT_REQUEST_RESERVE};
pub use event_loop::{Server, ACCEPT_PAUSE};
pub use lifecycle::fdstore;
pub use lifecycle::{HandOverRequest, Shutdown};
pub use supervision::STATUS_INTERVAL;
