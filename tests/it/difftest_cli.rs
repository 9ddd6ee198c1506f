//! Command-line differential test: every case generated from the C epmd's flag grammar
//! (`support::cli_cases`) runs with `/usr/bin/epmd` and with epmd-rs, each on its own
//! free port, and the outcomes (`support::cli_run`) must be equal, except for cases whose
//! difference is a documented row of docs/PROTOCOL.md (`long-spellings`,
//! `address-duplicate`). Anything else fails, with every differing case listed.

use crate::support::cli_cases::{client_cases, daemon_cases, Case, Mode};
use crate::support::cli_run::{run_client, run_daemon, show, Contexts, Outcome};
use crate::support::deliberate::Deliberate;
use crate::support::twin::Side;

/// The documented differences (keys of docs/PROTOCOL.md's table) this test accepts.
pub(crate) const ACCEPTED_KEYS: &[&str] = &[
    "long-spellings",
    "address-duplicate",
    "error-prefix",
    "dump-fd",
];

/// The generated table holds at least this many cases in all.
const MIN_CASES: usize = 300;

/// Worker threads per side (each with its own client-mode daemons); the runs mostly wait
/// on processes and sockets.
const WORKERS: usize = 4;

/// Outcomes of one side for `cases`, in order; case `i` runs on worker `i % WORKERS`.
fn outcomes(cases: &[Case], side: Side, allow: &Deliberate) -> Vec<Outcome> {
    let mut results: Vec<Option<Outcome>> = vec![None; cases.len()];
    let done: Vec<Vec<(usize, Outcome)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                s.spawn(move || {
                    let mut contexts = Contexts::new(side);
                    (w..cases.len())
                        .step_by(WORKERS)
                        .map(|i| {
                            let case = &cases[i];
                            let outcome = match case.mode {
                                Mode::Client(ctx) => run_client(case, ctx, &mut contexts, allow),
                                Mode::Daemon => run_daemon(case, side),
                            };
                            (i, outcome)
                        })
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a worker panicked"))
            .collect()
    });
    for (i, outcome) in done.into_iter().flatten() {
        results[i] = Some(outcome);
    }
    results
        .into_iter()
        .map(|o| o.expect("every case ran"))
        .collect()
}

/// Runs `cases` on both sides (one thread each) and fails with every undocumented
/// difference. Returns (cases, deliberate differences).
fn compare(cases: &[Case], what: &str) -> (usize, usize) {
    let allow = Deliberate::load();
    let (c, ours) = std::thread::scope(|s| {
        let c = s.spawn(|| outcomes(cases, Side::C, &allow));
        let ours = outcomes(cases, Side::Ours, &allow);
        (c.join().expect("the C side panicked"), ours)
    });
    let mut failures = String::new();
    let mut deliberate = 0;
    for ((case, c), ours) in cases.iter().zip(&c).zip(&ours) {
        if c == ours {
            continue;
        }
        match case.deliberate {
            Some(key) => {
                allow.allow(key);
                deliberate += 1;
            }
            None => failures.push_str(&show(case, c, ours)),
        }
    }
    let differing = failures.matches("\n  C:").count();
    eprintln!(
        "difftest_cli {what}: {} cases, {differing} differences, {deliberate} documented",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{differing} of {} {what} cases differ from the C epmd:\n{failures}",
        cases.len()
    );
    (cases.len(), deliberate)
}

/// Client mode: exit status, stdout and stderr byte for byte, against no daemon, an empty
/// one and one holding nodes.
#[test]
fn client_mode_matches_the_c_epmd() {
    compare(&client_cases(), "client-mode");
}

/// Daemon mode: running or exit status, listening addresses, NAMES and STOP replies, a
/// detached process.
#[test]
fn daemon_mode_matches_the_c_epmd() {
    compare(&daemon_cases(), "daemon-mode");
}

/// The table is as large as promised, and each documented difference it expects is one.
#[test]
fn the_table_is_generated_and_large() {
    let all: Vec<Case> = client_cases().into_iter().chain(daemon_cases()).collect();
    assert!(all.len() >= MIN_CASES, "only {} cases", all.len());
    let allow = Deliberate::load();
    for case in &all {
        if let Some(key) = case.deliberate {
            assert!(ACCEPTED_KEYS.contains(&key), "{key} not in ACCEPTED_KEYS");
            allow.allow(key);
        }
    }
}
