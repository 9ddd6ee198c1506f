//! Restarts and upgrades that lose no registration.
//!
//! A live hand-over (SIGUSR2 or `epmd-rs admin upgrade`): the running daemon stops serving
//! (it blocks, so nothing changes underneath), starts the new binary with one end of a
//! Unix socket pair (`EPMD_RS_HANDOVER_FD`), and sends it the [`state::State`] document
//! and, with SCM_RIGHTS ([`fdpass`]), every listening socket, the admin socket and every
//! epmd connection. The successor checks the document, rebuilds its server, answers
//! `READY`; the old process answers `GO` and exits without closing anything the successor
//! holds. Anything else (the binary is missing, dies, refuses, or is too slow) and the old
//! process kills it and keeps serving exactly as before.
//!
//! Wire protocol on the socket pair: old → new `EPMDRS-HANDOVER 1\n`, the state length
//! (u32 big-endian) and the state JSON, then the fds in batches; new → old `READY\n` or
//! `REFUSED <reason>\n`; old → new `GO\n`.

pub mod fdpass;
pub mod state;
pub mod transfer;
