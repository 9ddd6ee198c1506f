//! Summaries: one run's figures from a load [`Outcome`], and medians across rounds.

use crate::load::Outcome;

/// The figures of one run.
#[derive(Clone, Debug, Default)]
pub(crate) struct Run {
    /// Verified exchanges per second.
    pub(crate) rate: f64,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
    /// Server CPU per exchange, µs.
    pub(crate) server_us_per_op: f64,
    /// Server CPU time / wall time, %.
    pub(crate) server_cpu_pct: f64,
    /// Client (bench) CPU time / wall time, % (100 % = one core).
    pub(crate) client_cpu_pct: f64,
    /// Client (bench) CPU per exchange, µs.
    pub(crate) client_us_per_op: f64,
    /// Verified exchanges.
    pub(crate) ops: u64,
    /// Failed exchanges.
    pub(crate) errors: u64,
    /// The first failure, if any.
    pub(crate) first_error: Option<String>,
}

impl Run {
    /// Summarises a load outcome.
    pub(crate) fn from_outcome(mut o: Outcome) -> Run {
        o.latencies_ns.sort_unstable();
        let wall = o.wall.as_secs_f64().max(1e-9);
        let ops = o.ops.max(1) as f64;
        Run {
            rate: o.ops as f64 / wall,
            p50_us: percentile(&o.latencies_ns, 0.50) / 1e3,
            p99_us: percentile(&o.latencies_ns, 0.99) / 1e3,
            server_us_per_op: o.server_cpu.as_secs_f64() * 1e6 / ops,
            server_cpu_pct: o.server_cpu.as_secs_f64() * 100.0 / wall,
            client_cpu_pct: o.client_cpu.as_secs_f64() * 100.0 / wall,
            client_us_per_op: o.client_cpu.as_secs_f64() * 1e6 / ops,
            ops: o.ops,
            errors: o.errors,
            first_error: o.first_error,
        }
    }

    /// The median of each figure across runs (errors are summed, not medianed).
    pub(crate) fn median(runs: &[Run]) -> Option<Run> {
        if runs.is_empty() {
            return None;
        }
        let m = |f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Some(Run {
            rate: m(|r| r.rate),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            server_us_per_op: m(|r| r.server_us_per_op),
            server_cpu_pct: m(|r| r.server_cpu_pct),
            client_cpu_pct: m(|r| r.client_cpu_pct),
            client_us_per_op: m(|r| r.client_us_per_op),
            ops: runs.iter().map(|r| r.ops).sum(),
            errors: runs.iter().map(|r| r.errors).sum(),
            first_error: runs.iter().find_map(|r| r.first_error.clone()),
        })
    }
}

/// The median of `values` (mean of the two middle values for an even count); 0 if empty.
pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The `q` quantile (nearest rank) of sorted nanosecond samples; 0 if empty.
pub(crate) fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    f64::from(sorted[rank - 1])
}

/// `a / b`, or `None` when either side is missing or `b` is zero.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}
