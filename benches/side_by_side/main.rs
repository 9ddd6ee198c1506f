//! `make bench`: epmd-rs side by side with the C epmd (`/usr/bin/epmd`) and a minimal
//! ceiling server, on loopback, with one load generator for all three.
//!
//! Scenarios (see `scenarios/`): lookup (K registered × C clients), names, churn, hold,
//! slowloris, storm (bursts of simultaneous lookups), and an in-process scale simulation of the registry (`sim.rs`). Each
//! throughput configuration alternates the servers over at least 3 rounds and reports
//! medians, the ratio epmd-rs / C epmd and epmd-rs / ceiling, latency percentiles, and
//! server and client CPU so that the bottleneck side is visible.
//!
//! Environment: see `settings.rs` (`BENCH_QUICK=1`, `BENCH_ONLY=lookup,...`,
//! `BENCH_ROUNDS`, `BENCH_WINDOW_MS`, `BENCH_DOCS`). The tables go to stdout, progress to
//! stderr; a full run also rewrites the generated part of docs/PERFORMANCE.md and the plots
//! in docs/perf/.
//!
//! This binary doubles as the ceiling server when `EPMD_BENCH_CEILING_PORT` is set.

mod ceiling;
mod daemon;
mod docs;
mod limits;
mod load;
mod procstat;
mod report;
mod scenarios;
mod settings;
mod sim;
mod stats;
mod svg;
mod wire;

use std::process::ExitCode;
use std::time::Instant;

use daemon::Kind;
use report::Results;
use settings::Settings;

fn main() -> ExitCode {
    if let Ok(port) = std::env::var(daemon::CEILING_ENV) {
        let Ok(port) = port.parse::<u16>() else {
            eprintln!("{}: not a port: {port}", daemon::CEILING_ENV);
            return ExitCode::from(2);
        };
        if let Err(e) = ceiling::serve(port) {
            eprintln!("ceiling server: {e}");
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --all-targets` runs bench targets without `--bench`: a debug build
        // on a busy machine measures nothing worth printing, and must not rewrite the docs.
        println!("side_by_side: skipped (not run by `cargo bench`; use `make bench`)");
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("side_by_side: {e}");
            return ExitCode::from(2);
        }
    };
    let (server_fds, raised) = limits::init();
    if !raised {
        eprintln!(
            "side_by_side: cannot raise the bench's fd limit ({}) above its hard limit, so \
             the servers get {server_fds} fds and NAMES with many nodes runs one server at a \
             time",
            limits::bench_limit()
        );
    }
    let machine = docs::Machine::describe();
    let mut kinds = vec![Kind::EpmdRs, Kind::CEpmd, Kind::Ceiling];
    if !daemon::c_epmd_available() {
        eprintln!(
            "side_by_side: {} is missing, so the C epmd column stays empty. Install it with \
             `make deps` (or `sudo apt-get install erlang-base`).",
            daemon::C_EPMD
        );
        kinds.retain(|k| *k != Kind::CEpmd);
    }
    eprintln!(
        "side_by_side: {}; {} rounds × {} ms windows; scenarios: {}; CPU {}; load average {}",
        machine.revision,
        settings.rounds,
        settings.window.as_millis(),
        settings.only.join(", "),
        machine.cpu,
        machine.load_before
    );

    let busy: f64 = machine
        .load_before
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(0.0);
    if busy > 1.0 {
        eprintln!(
            "side_by_side: the machine is busy (load average {busy:.1} on {}); the bench needs \
             about two idle cores, so treat the figures as preliminary",
            machine.cpu
        );
    }
    let start = Instant::now();
    let results = run(&settings, &kinds);
    let minutes = start.elapsed().as_secs_f64() / 60.0;

    println!();
    for table in report::tables(&results) {
        println!("{}", table.to_text());
    }
    println!("{}", report::targets_table(&results).to_text());
    println!(
        "{:.1} min; load average at start {}, at end {}",
        minutes,
        machine.load_before,
        docs::load_average()
    );
    if settings.write_docs {
        match docs::write(&results, &machine, &settings, minutes) {
            Ok(path) => println!("wrote {} and docs/perf/*.svg", path.display()),
            Err(e) => {
                eprintln!("side_by_side: cannot write docs: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        println!("docs/PERFORMANCE.md not updated (partial run; BENCH_DOCS=1 forces it)");
    }
    ExitCode::SUCCESS
}

fn run(settings: &Settings, kinds: &[Kind]) -> Results {
    let mut r = Results::default();
    if settings.runs("lookup") {
        eprintln!("lookup:");
        r.lookup = scenarios::lookup::run(settings, kinds);
    }
    if settings.runs("names") {
        eprintln!("names:");
        r.names = scenarios::names::run(settings, kinds);
    }
    if settings.runs("churn") {
        eprintln!("churn:");
        r.churn = Some(scenarios::churn::run(settings, kinds));
    }
    if settings.runs("slowloris") {
        eprintln!("slowloris:");
        r.slowloris = Some(scenarios::slowloris::run(settings, kinds));
    }
    if settings.runs("hold") {
        eprintln!("hold:");
        r.hold = scenarios::hold::run(settings, kinds);
    }
    if settings.runs("storm") {
        eprintln!("storm:");
        r.storm = scenarios::storm::run(settings, kinds);
    }
    if settings.runs("sim") {
        eprintln!("sim:");
        r.sim = sim::run(&settings.sim_sizes);
    }
    r
}
