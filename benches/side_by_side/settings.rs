//! Run settings from the environment.
//!
//! | variable | effect |
//! |---|---|
//! | `BENCH_QUICK=1` | smoke run (~1 min): 0.3 s windows, one hold and storm round, storms up to 5,000, smaller simulation |
//! | `BENCH_ONLY=lookup,names` | only these scenarios (lookup, names, churn, hold, slowloris, storm, sim) |
//! | `BENCH_ROUNDS=N` | rounds per configuration (default 3; at least 1) |
//! | `BENCH_WINDOW_MS=N` | measurement window per run (default 2000, quick 300) |
//! | `BENCH_DOCS=0/1` | write docs/PERFORMANCE.md and docs/perf/*.svg (default: only for a full run) |

use std::time::Duration;

/// The scenarios, in run order.
pub(crate) const SCENARIOS: [&str; 7] = [
    "lookup",
    "names",
    "churn",
    "hold",
    "slowloris",
    "storm",
    "sim",
];

/// What to run and for how long.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// `BENCH_QUICK` was set.
    pub(crate) quick: bool,
    /// Scenarios to run.
    pub(crate) only: Vec<&'static str>,
    /// Rounds per configuration for the throughput scenarios.
    pub(crate) rounds: usize,
    /// Rounds of the hold and storm scenarios.
    pub(crate) hold_rounds: usize,
    /// Time before each measurement window.
    pub(crate) warmup: Duration,
    /// Measurement window.
    pub(crate) window: Duration,
    /// Registration counts of the in-process simulation.
    pub(crate) sim_sizes: Vec<usize>,
    /// Whether to write docs/PERFORMANCE.md and the plots.
    pub(crate) write_docs: bool,
}

impl Settings {
    /// Reads the environment; an unknown scenario name is an error.
    pub(crate) fn from_env() -> Result<Settings, String> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let quick = var("BENCH_QUICK").is_some_and(|v| v != "0");
        let only: Vec<&'static str> = match var("BENCH_ONLY") {
            None => SCENARIOS.to_vec(),
            Some(list) => {
                let mut picked = Vec::new();
                for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    let Some(s) = SCENARIOS.iter().find(|s| **s == word) else {
                        return Err(format!(
                            "BENCH_ONLY: unknown scenario {word:?} (known: {})",
                            SCENARIOS.join(", ")
                        ));
                    };
                    picked.push(*s);
                }
                picked
            }
        };
        let number = |k: &str| -> Result<Option<u64>, String> {
            var(k)
                .map(|v| v.parse::<u64>().map_err(|e| format!("{k}={v}: {e}")))
                .transpose()
        };
        let rounds = number("BENCH_ROUNDS")?.map_or(3, |n| n.max(1) as usize);
        let window_ms = number("BENCH_WINDOW_MS")?.unwrap_or(if quick { 300 } else { 2000 });
        let full = !quick && only.len() == SCENARIOS.len();
        let write_docs = match var("BENCH_DOCS") {
            Some(v) => v != "0",
            None => full,
        };
        Ok(Settings {
            quick,
            only,
            rounds,
            hold_rounds: if quick { 1 } else { rounds },
            warmup: Duration::from_millis(if quick { 100 } else { 300 }),
            window: Duration::from_millis(window_ms.max(50)),
            sim_sizes: if quick {
                vec![10_000, 100_000]
            } else {
                vec![10_000, 100_000, 1_000_000]
            },
            write_docs,
        })
    }

    /// True when `scenario` is selected.
    pub(crate) fn runs(&self, scenario: &str) -> bool {
        self.only.contains(&scenario)
    }
}
