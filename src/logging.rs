//! Log setup: `env_logger` on stderr, one line per message prefixed `epmd-rs:`.
//!
//! Verbosity follows epmd's `-d` count: none → warnings and errors, `-d` → info (what the
//! C epmd prints at debug level 0 and 1), `-d -d` → debug, more → trace (packet contents).
//! `RUST_LOG` overrides it.

use std::io::Write;

use log::LevelFilter;

/// The level for a number of `-d` flags.
pub fn level_for(debug: u8) -> LevelFilter {
    match debug {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger (once per process).
pub fn init(debug: u8) {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(level_for(debug))
        .parse_env("RUST_LOG")
        .format(|buf, record| writeln!(buf, "epmd-rs: {}", record.args()));
    let _ = builder.try_init();
}
