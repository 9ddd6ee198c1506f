//! Wire differential test: seeded scenarios run against the C epmd and epmd-rs side by
//! side (each on its own free port, kept running across scenarios), every reply and every
//! close compared (see `support::wire_run`). A divergence is shrunk to a minimal scenario
//! and printed in the one-line form of `difftest_wire_regressions.txt`, where found cases
//! stay as regression cases.
//!
//! `make test` runs a short seeded budget ([`SHORT_SECONDS`]); `make difftest SECONDS=N`
//! runs [`long_run`] for N seconds with a time-based seed and prints the statistics.

use std::time::{Duration, Instant};

use crate::support::deliberate::Deliberate;
use crate::support::twin::{Foreground, Side};
use crate::support::wire_gen::{frame, Generator};
use crate::support::wire_pair::{Divergence, Pair};
use crate::support::wire_scenario::{Scenario, Step};

/// Seconds of generated scenarios in `make test`.
const SHORT_SECONDS: u64 = 20;

/// The seed of the short run (fixed, so that `make test` is reproducible).
const SHORT_SEED: u64 = 0x11_2026;

/// The committed regression cases.
const REGRESSIONS: &str = include_str!("difftest_wire_regressions.txt");

/// What a run compared.
#[derive(Debug, Default)]
struct Stats {
    scenarios: u64,
    requests: u64,
    sync_requests: u64,
    divergences: Vec<Divergence>,
}

/// Runs generated scenarios for `budget` on `workers` threads, worker `w` with its own
/// relaxed and strict pairs and the seed `seed + w`.
fn run_generated(seed: u64, budget: Duration, workers: u64, allow: &Deliberate) -> Stats {
    let parts: Vec<Stats> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| s.spawn(move || run_worker(seed + w, budget, allow)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a wire worker panicked"))
            .collect()
    });
    let mut total = Stats::default();
    for part in parts {
        total.scenarios += part.scenarios;
        total.requests += part.requests;
        total.sync_requests += part.sync_requests;
        total.divergences.extend(part.divergences);
    }
    total
}

/// One worker of [`run_generated`].
fn run_worker(seed: u64, budget: Duration, allow: &Deliberate) -> Stats {
    let mut strict = Pair::start(false);
    let mut relaxed = Pair::start(true);
    let mut generator = Generator::new(seed);
    let mut stats = Stats::default();
    let start = Instant::now();
    let verbose = std::env::var_os("DIFFTEST_VERBOSE").is_some();
    while start.elapsed() < budget && stats.divergences.len() < 5 {
        let scenario = generator.scenario();
        if verbose {
            eprintln!("seed {seed} scenario {}: {scenario}", stats.scenarios + 1);
        }
        let pair = if scenario.relaxed {
            &mut relaxed
        } else {
            &mut strict
        };
        stats.scenarios += 1;
        stats.requests += scenario.requests;
        if let Err(d) = pair.compare(&scenario, allow) {
            eprintln!(
                "DIVERGENCE (seed {seed}, scenario {}), before shrinking:\n{d}",
                stats.scenarios
            );
            let shrunk = pair.shrink(d, allow);
            eprintln!(
                "DIVERGENCE (seed {seed}, scenario {}), shrunk:\n{shrunk}",
                stats.scenarios
            );
            stats.divergences.push(shrunk);
            pair.restart();
        }
    }
    for pair in [&strict, &relaxed] {
        stats.sync_requests += pair.c.requests;
    }
    stats
}

/// Fails with every divergence, each shrunk and printed as a regression line.
fn assert_no_divergence(stats: &Stats) {
    assert!(
        stats.divergences.is_empty(),
        "{} divergence(s) between the C epmd and epmd-rs:\n{}",
        stats.divergences.len(),
        stats
            .divergences
            .iter()
            .map(|d| format!("{d}\nregression line: {}\n", d.scenario))
            .collect::<String>()
    );
}

/// The short seeded budget of `make test`.
#[test]
fn generated_scenarios_match() {
    let allow = Deliberate::load();
    let stats = run_generated(SHORT_SEED, Duration::from_secs(SHORT_SECONDS), 2, &allow);
    eprintln!(
        "difftest_wire: {} scenarios, {} requests + {} lookups and NAMES, {} divergences",
        stats.scenarios,
        stats.requests,
        stats.sync_requests,
        stats.divergences.len()
    );
    assert!(
        stats.scenarios >= 20,
        "too few scenarios: {}",
        stats.scenarios
    );
    assert_no_divergence(&stats);
}

/// `make difftest SECONDS=N`: N seconds (default 60) from a time-based seed, statistics
/// printed.
#[test]
#[ignore = "long; run by make difftest"]
fn long_run() {
    let seconds = std::env::var("DIFFTEST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed = std::env::var("DIFFTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_secs())
        });
    let allow = Deliberate::load();
    let workers = std::env::var("DIFFTEST_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let stats = run_generated(seed, Duration::from_secs(seconds), workers, &allow);
    println!(
        "difftest_wire: seed {seed}, {seconds} s, {workers} workers: {} scenarios, {} requests \
         ({} scenario requests + {} lookups and NAMES after the steps), {} divergences",
        stats.scenarios,
        stats.requests + stats.sync_requests,
        stats.requests,
        stats.sync_requests,
        stats.divergences.len()
    );
    assert_no_divergence(&stats);
}

/// Every committed regression case matches.
#[test]
fn regression_cases_match() {
    let allow = Deliberate::load();
    let mut strict = Pair::start(false);
    let mut relaxed = Pair::start(true);
    let mut divergences = Vec::new();
    let mut cases = 0;
    for line in REGRESSIONS.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let scenario = Scenario::parse(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let pair = if scenario.relaxed {
            &mut relaxed
        } else {
            &mut strict
        };
        cases += 1;
        if let Err(d) = pair.compare(&scenario, &allow) {
            divergences.push(d);
        }
    }
    assert!(cases >= 10, "only {cases} regression cases");
    assert!(
        divergences.is_empty(),
        "{} regression case(s) diverge:\n{}",
        divergences.len(),
        divergences
            .iter()
            .map(|d| format!("{d}\n"))
            .collect::<String>()
    );
}

/// After an ALIVE2 reply, 1 to 3,060 more bytes on the registration connection are read
/// at once: the daemon unregisters and closes with FIN (the client sees EOF); more than
/// 3,060 leave bytes unread and the close is a RST, as with the C epmd. The same when the
/// last piece of a split ALIVE2 carries the extra bytes (issue 11).
#[test]
fn extra_bytes_after_a_registration_close_as_the_c_epmd() {
    let allow = Deliberate::load();
    let mut pair = Pair::start(false);
    let alive2 = |name: &str| {
        let mut p = vec![b'x', 0, 0, 0x4d, 0, 0, 6, 0, 5];
        p.extend_from_slice(&(name.len() as u16).to_be_bytes());
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&[0, 0]);
        frame(&p)
    };
    // The reproducer of the issue, byte for byte.
    assert_eq!(
        crate::support::wire_scenario::to_hex(&alive2("a")),
        "000e7800004d00000600050001610000"
    );
    for n in [1, 64, 65, 1000, 3059, 3060, 3061, 5000] {
        for split in [false, true] {
            let name = format!("extra{n}{}", if split { "s" } else { "" });
            let request = alive2(&name);
            let steps = if split {
                let mut tail = request[5..].to_vec();
                tail.extend(vec![0u8; n]);
                vec![Step::Send(0, request[..5].to_vec()), Step::Send(0, tail)]
            } else {
                vec![Step::Send(0, request), Step::Send(0, vec![0; n])]
            };
            let scenario = Scenario {
                relaxed: false,
                steps: steps.into_iter().chain([Step::Close(0)]).collect(),
                requests: 1,
            };
            let transcript = pair
                .compare(&scenario, &allow)
                .unwrap_or_else(|d| panic!("{n} extra bytes (split: {split}):\n{d}"));
            let expected_close = if n <= 3060 { "FIN" } else { "RST" };
            assert!(
                transcript.iter().any(|l| l.ends_with(expected_close)),
                "{n} extra bytes (split: {split}): no {expected_close}: {transcript:#?}"
            );
        }
    }
}

/// The keys the differential tests accept are rows of the table in docs/PROTOCOL.md.
#[test]
fn accepted_differences_are_the_documented_ones() {
    let allow = Deliberate::load();
    for key in crate::difftest_cli::ACCEPTED_KEYS
        .iter()
        .chain(crate::support::wire_run::ACCEPTED_KEYS)
    {
        allow.allow(key);
    }
    // And the parser really reads the doc: a key that is not there is refused.
    assert!(!allow.has("no-such-difference"));
    assert!(allow.keys().len() >= 15, "{:?}", allow.keys());
}

/// Order across connections, as the C epmd keeps it: bytes sent on a registration
/// connection before a NAMES on a new connection are handled first, so the NAMES no
/// longer lists the name. epmd-rs used to answer every connection of an accept drain at
/// once, overtaking readiness its batch of events did not hold yet (found by the wire
/// differential test). Each round: register, NAMES, read the reply, send 65 bytes, one
/// NAMES at once.
#[test]
fn a_new_connection_is_answered_after_earlier_bytes() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let names = |port: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(&[0, 1, b'n']).expect("write NAMES");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).expect("read NAMES");
        reply
    };
    for side in Side::BOTH {
        let daemon = Foreground::start(side, &[]);
        let port = daemon.port();
        let mut stale = Vec::new();
        for round in 0..100 {
            let name = format!("order{round}");
            let mut p = vec![b'x', 0, 0, 0x4d, 0, 0, 6, 0, 5];
            p.extend_from_slice(&(name.len() as u16).to_be_bytes());
            p.extend_from_slice(name.as_bytes());
            p.extend_from_slice(&[0, 0]);
            let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            conn.set_nodelay(true).expect("nodelay");
            conn.write_all(&frame(&p)).expect("write ALIVE2");
            names(port);
            let mut reply = [0u8; 6];
            conn.read_exact(&mut reply).expect("ALIVE2 reply");
            conn.write_all(&[0; 65]).expect("write extra bytes");
            let listing = names(port);
            if listing.windows(name.len()).any(|w| w == name.as_bytes()) {
                stale.push(round);
            }
        }
        assert!(
            stale.is_empty(),
            "{side:?}: NAMES still listed the name in rounds {stale:?}"
        );
    }
}

/// Generated scenarios survive their one-line text form (the regression file's format).
#[test]
fn scenario_lines_round_trip() {
    let mut generator = Generator::new(7);
    for _ in 0..300 {
        let scenario = generator.scenario();
        let parsed = Scenario::parse(&scenario.to_string()).expect("parse a generated line");
        assert_eq!(
            (parsed.relaxed, &parsed.steps),
            (scenario.relaxed, &scenario.steps)
        );
    }
    assert!(Scenario::parse("lenient s0=00").is_err());
    assert!(Scenario::parse("strict s0=0").is_err());
    assert!(Scenario::parse("strict x0").is_err());
}

/// The allowlist is the doc's table: a key it does not hold is refused.
#[test]
#[should_panic(expected = "not in the table of docs/PROTOCOL.md")]
fn an_undocumented_difference_is_refused() {
    let doc = "## Deliberate differences from the C epmd 25.x\n\n\
               | key | behaviour | C epmd | epmd-rs | why |\n\
               |---|---|---|---|---|\n\
               | `dump-fd` | DUMP fd | a | b | c |\n";
    let allow = Deliberate::parse(doc);
    assert_eq!(allow.keys(), ["dump-fd"]);
    allow.allow("dump-fd");
    allow.allow("reply-writes");
}
