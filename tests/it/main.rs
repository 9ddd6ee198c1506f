//! The single integration-test binary of epmd-rs.
//!
//! Every test runs the real daemon binary (`CARGO_BIN_EXE_epmd-rs`) on a free port, talks to
//! it over sockets, and cleans up every process it started by PID. The modules below only
//! group tests by concern; the shared helpers live in `support`.

// Shared helpers: free ports, daemon processes, raw protocol bytes, Erlang nodes, /proc lookups.
mod support;

// Real Erlang/OTP nodes and the C epmd client (`epmd -names`) working against our daemon.
mod erlang;

// Byte-exact requests and replies through the running daemon, hex in and hex out (spec §1-§3).
mod wire;

// Registrations live and die with their connections; KILL, STOP and locality (spec §3.5-§5).
mod lifecycle;

// The packet deadline, many registrations, and -delay_write not blocking others (spec §6).
mod limits;
