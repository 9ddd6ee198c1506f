//! Helpers shared by every integration-test module.
//!
//! Each submodule owns one kind of resource: a free port, a daemon process, a raw protocol
//! exchange, an Erlang node, a `/proc` lookup, or a bounded wait. Every process started here
//! is killed by PID when its handle drops, and every wait is a bounded poll.

// Not every test module uses every helper; the set is shared across modules on purpose.
#![allow(dead_code)]

pub(crate) mod c_epmd;
pub(crate) mod cli_cases;
pub(crate) mod cli_run;
pub(crate) mod daemon;
pub(crate) mod deliberate;
pub(crate) mod erl;
pub(crate) mod ports;
pub(crate) mod procnet;
pub(crate) mod raw;
pub(crate) mod rng;
pub(crate) mod tmp;
pub(crate) mod twin;
pub(crate) mod wait;
pub(crate) mod wire_gen;
pub(crate) mod wire_pair;
pub(crate) mod wire_run;
pub(crate) mod wire_scenario;
