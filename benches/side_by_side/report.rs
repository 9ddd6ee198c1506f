//! The side-by-side tables (plain text for stdout, Markdown for docs/PERFORMANCE.md) and the
//! issue's targets checked against the medians.

use crate::daemon::Kind;
use crate::scenarios::churn::Churn;
use crate::scenarios::hold::{Hold, Probe};
use crate::scenarios::storm::{StormRow, DEADLINE};
use crate::scenarios::{idx, Row};
use crate::sim::SimRow;
use crate::stats::{ratio, Run};
use crate::svg::si;

/// Everything a bench run measured.
#[derive(Default)]
pub(crate) struct Results {
    /// Lookup rows (K, C).
    pub(crate) lookup: Vec<Row>,
    /// NAMES rows (N).
    pub(crate) names: Vec<Row>,
    /// Churn rows.
    pub(crate) churn: Option<Churn>,
    /// Hold, per server.
    pub(crate) hold: Vec<Hold>,
    /// Slowloris.
    pub(crate) slowloris: Option<Row>,
    /// Storm bursts.
    pub(crate) storm: Vec<StormRow>,
    /// In-process simulation.
    pub(crate) sim: Vec<SimRow>,
}

/// A table with a title and optional notes under it.
pub(crate) struct Table {
    /// Title.
    pub(crate) title: String,
    /// Column headers.
    pub(crate) headers: Vec<String>,
    /// Cells.
    pub(crate) rows: Vec<Vec<String>>,
    /// Notes printed under the table.
    pub(crate) notes: Vec<String>,
}

impl Table {
    fn new(title: &str, headers: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Aligned plain text.
    pub(crate) fn to_text(&self) -> String {
        let cols = self.headers.len();
        let mut width = vec![0; cols];
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            for (i, cell) in row.iter().enumerate().take(cols) {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        let line = |row: &Vec<String>| {
            row.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = width[i]))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        let mut out = format!("{}\n{}\n", self.title, line(&self.headers));
        out += &format!(
            "{}\n",
            "-".repeat(width.iter().sum::<usize>() + 2 * (cols - 1))
        );
        for row in &self.rows {
            out += &line(row);
            out.push('\n');
        }
        for n in &self.notes {
            out += &format!("  note: {n}\n");
        }
        out
    }

    /// GitHub Markdown.
    pub(crate) fn to_markdown(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n", self.title, self.headers.join(" | "));
        out += &format!("|{}\n", "---|".repeat(self.headers.len()));
        for row in &self.rows {
            out += &format!("| {} |\n", row.join(" | "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                out += &format!("- {n}\n");
            }
        }
        out
    }
}

fn dash() -> String {
    "—".to_string()
}

fn rate(run: Option<&Run>) -> String {
    run.map_or_else(dash, |r| si(r.rate.round()))
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(dash, |r| format!("{r:.2}×"))
}

/// "a / b / c" of one figure for the three servers.
fn triple(row: &Row, f: impl Fn(&Run) -> f64, digits: usize) -> String {
    Kind::ALL
        .iter()
        .map(|&k| {
            row.get(k)
                .map_or_else(dash, |r| format!("{:.*}", digits, f(r)))
        })
        .collect::<Vec<_>>()
        .join(" / ")
}

fn rs_over(row: &Row, other: Kind, f: impl Fn(&Run) -> f64) -> Option<f64> {
    ratio(row.get(Kind::EpmdRs).map(&f), row.get(other).map(&f))
}

fn errors(row: &Row) -> String {
    let total: u64 = row.cells.iter().flatten().map(|r| r.errors).sum();
    if total == 0 {
        return "0".to_string();
    }
    let first = row
        .cells
        .iter()
        .zip(Kind::ALL)
        .find_map(|(r, k)| {
            let r = r.as_ref()?;
            r.first_error
                .as_ref()
                .map(|e| format!("{}: {e}", k.label()))
        })
        .unwrap_or_default();
    format!("{total} ({first})")
}

const TRIPLE: &str = "epmd-rs / C / ceiling";

fn throughput_table(
    title: &str,
    first: &[&str],
    rows: &[Row],
    unit: &str,
    keys: impl Fn(&Row) -> Vec<String>,
) -> Table {
    let mut headers: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    headers.extend([
        format!("epmd-rs {unit}"),
        format!("C epmd {unit}"),
        format!("ceiling {unit}"),
        "rs/C".into(),
        "rs/ceiling".into(),
        format!("p50 µs ({TRIPLE})"),
        format!("p99 µs ({TRIPLE})"),
        format!("server CPU µs/op ({TRIPLE})"),
        format!("server CPU % ({TRIPLE})"),
        format!("client CPU % ({TRIPLE})"),
        format!("client CPU µs/op ({TRIPLE})"),
        "errors".into(),
    ]);
    let mut t = Table {
        title: title.to_string(),
        headers,
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for row in rows {
        let mut cells = keys(row);
        cells.extend([
            rate(row.get(Kind::EpmdRs)),
            rate(row.get(Kind::CEpmd)),
            rate(row.get(Kind::Ceiling)),
            times(rs_over(row, Kind::CEpmd, |r| r.rate)),
            times(rs_over(row, Kind::Ceiling, |r| r.rate)),
            triple(row, |r| r.p50_us, 0),
            triple(row, |r| r.p99_us, 0),
            triple(row, |r| r.server_us_per_op, 1),
            triple(row, |r| r.server_cpu_pct, 0),
            triple(row, |r| r.client_cpu_pct, 0),
            triple(row, |r| r.client_us_per_op, 1),
            errors(row),
        ]);
        t.rows.push(cells);
        if let Some(n) = &row.note {
            if !t.notes.contains(n) {
                t.notes.push(n.clone());
            }
        }
    }
    t
}

/// Every table of the run, in order.
pub(crate) fn tables(r: &Results) -> Vec<Table> {
    let mut out = Vec::new();
    if !r.lookup.is_empty() {
        out.push(throughput_table(
            "Lookup (connect → PORT_PLEASE2 → read to close)",
            &["K registered", "C clients"],
            &r.lookup,
            "lookups/s",
            |row| vec![row.registered.to_string(), row.clients.to_string()],
        ));
    }
    if !r.names.is_empty() {
        out.push(throughput_table(
            "NAMES (connect → NAMES → read to close, 8 clients)",
            &["N registered"],
            &r.names,
            "req/s",
            |row| vec![row.registered.to_string()],
        ));
    }
    if let Some(c) = &r.churn {
        let mut t = throughput_table(
            "Churn (connect → ALIVE2 → reply → close)",
            &["C clients"],
            &c.rows,
            "reg/s",
            |row| vec![row.clients.to_string()],
        );
        let left: Vec<String> = Kind::ALL
            .iter()
            .filter_map(|&k| {
                c.leftover[idx(k)].map(|n| {
                    let state = match n {
                        0 => "empty".to_string(),
                        usize::MAX => "NAMES failed".to_string(),
                        n => format!("{n} names left"),
                    };
                    format!("{}: {state}", k.label())
                })
            })
            .collect();
        t.notes
            .push(format!("NAMES after the runs: {}", left.join(", ")));
        out.push(t);
    }
    if let Some(row) = &r.slowloris {
        out.push(throughput_table(
            "Slowloris (1000 stalled connections; 1 client looking up, 10 registered)",
            &["stalled"],
            std::slice::from_ref(row),
            "lookups/s",
            |row| vec![row.clients.to_string()],
        ));
    }
    if !r.hold.is_empty() {
        let mut t = Table::new(
            "Hold (as many simultaneous registrations as the server takes)",
            &[
                "server",
                "registrations",
                "fd limit",
                "% of fd limit",
                "time to reach",
                "RSS idle MiB",
                "RSS full MiB",
                "RSS B/registration",
                "RSS B/registration, last quarter",
                "full: lookups ok",
                "full: NAMES ok",
                "full: lookup p50/p99 µs",
                "full−16: lookups ok",
                "full−16: NAMES ok",
                "full−16: lookup p50/p99 µs",
                "full−16: NAMES ms",
                "stopped because",
            ],
        );
        let lat = |p: &Probe| {
            if p.lookups_ok > 0 {
                format!("{:.0} / {:.0}", p.p50_us, p.p99_us)
            } else {
                dash()
            }
        };
        for h in &r.hold {
            t.rows.push(vec![
                h.kind.label().to_string(),
                h.count.to_string(),
                h.fd_limit.map_or_else(dash, |l| l.to_string()),
                h.fd_limit.map_or_else(dash, |l| {
                    format!("{:.2} %", h.count as f64 * 100.0 / l as f64)
                }),
                format!("{:.2} s", h.seconds),
                format!("{:.2}", h.rss_idle as f64 / 1048576.0),
                format!("{:.2}", h.rss_full as f64 / 1048576.0),
                format!("{:.0}", h.bytes_per_registration()),
                h.marginal_bytes_per_registration()
                    .map_or_else(dash, |b| format!("{b:.0}")),
                format!("{}/{}", h.full.lookups_ok, h.full.lookups_tried),
                format!("{}/{}", h.full.names_ok, h.full.names_tried),
                lat(&h.full),
                format!("{}/{}", h.near_full.lookups_ok, h.near_full.lookups_tried),
                format!("{}/{}", h.near_full.names_ok, h.near_full.names_tried),
                lat(&h.near_full),
                if h.near_full.names_ok > 0 {
                    format!("{:.1}", h.near_full.names_ms)
                } else {
                    dash()
                },
                h.stop.clone(),
            ]);
        }
        t.notes.push(
            "full = until two registrations in a row fail; full−16 = after releasing 16 of them. \
             The C epmd serves at most min(fd limit, FD_SETSIZE = 1024) fds. Counts are summed \
             over rounds, latencies are medians"
                .into(),
        );
        out.push(t);
    }
    if !r.storm.is_empty() {
        out.push(storm_table(&r.storm));
    }
    if !r.sim.is_empty() {
        let mut t = Table::new(
            "In-process scale simulation (epmd_rs::registry::Registry, no sockets)",
            &[
                "registrations",
                "register ns/op",
                "lookup ns/op",
                "register+unregister ns/op",
                "unregister ns/op",
                "NAMES ms",
                "NAMES ns/line",
                "DUMP ms",
                "RSS B/registration",
            ],
        );
        for s in &r.sim {
            t.rows.push(vec![
                s.n.to_string(),
                format!("{:.0}", s.register_ns),
                format!("{:.0}", s.lookup_ns),
                format!("{:.0}", s.churn_ns),
                format!("{:.0}", s.unregister_ns),
                format!("{:.2}", s.names_ms),
                format!("{:.1}", s.names_ns_per_line()),
                format!("{:.2}", s.dump_ms),
                format!("{:.0}", s.rss_per_reg),
            ]);
        }
        out.push(t);
    }
    out
}

/// The storm table: one line per burst size and server.
fn storm_table(rows: &[StormRow]) -> Table {
    let mut t = Table::new(
        "Storm (a burst of simultaneous connect → PORT_PLEASE2 → read to close, 250 clients per source address in 127.0.10.0/24)",
        &[
            "burst",
            "server",
            "answered",
            "failed",
            "p50 ms",
            "p99 ms",
            "max ms",
            "listen overflows",
            "SYN retransmits",
            "burst wall s",
            "first failure",
        ],
    );
    for row in rows {
        if let Some(n) = &row.note {
            t.notes.push(format!("burst {}: {n}", row.burst));
        }
        for kind in Kind::ALL {
            let Some(c) = &row.cells[idx(kind)] else {
                continue;
            };
            t.rows.push(vec![
                row.burst.to_string(),
                kind.label().to_string(),
                format!(
                    "{} of {} ({:.2} %)",
                    c.answered,
                    c.attempted,
                    c.answered_pct()
                ),
                (c.attempted - c.answered).to_string(),
                format!("{:.1}", c.ms(0.5)),
                format!("{:.1}", c.ms(0.99)),
                format!("{:.0}", c.max_ms()),
                c.listen_overflows.to_string(),
                c.syn_retrans.to_string(),
                format!("{:.2}", c.wall.as_secs_f64()),
                c.first_error.clone().unwrap_or_else(dash),
            ]);
        }
    }
    t.notes.push(format!(
        "every client has {} s from the start of its burst; a fresh server per burst; counts \
         and kernel counters (TcpExtListenOverflows, TcpExtTCPSynRetrans of the whole network \
         namespace, as nstat reads them) summed over rounds, latencies pooled",
        DEADLINE.as_secs()
    ));
    t
}

/// One of the targets.
pub(crate) struct Target {
    /// The target as the issue states it.
    pub(crate) what: String,
    /// What was measured.
    pub(crate) measured: String,
    /// Met, not met, or not measured.
    pub(crate) met: Option<bool>,
}

fn clients(n: usize) -> String {
    if n == 1 {
        "1 client".into()
    } else {
        format!("{n} clients")
    }
}

fn row(rows: &[Row], k: usize, c: usize) -> Option<&Row> {
    rows.iter().find(|r| r.registered == k && r.clients == c)
}

/// The targets against this run's medians.
pub(crate) fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    for c in [1, 8, 32] {
        let x = row(&r.lookup, 10, c);
        let vs_ceil = x.and_then(|x| rs_over(x, Kind::Ceiling, |r| r.rate));
        let vs_c = x.and_then(|x| rs_over(x, Kind::CEpmd, |r| r.rate));
        let cpu = x.and_then(|x| rs_over(x, Kind::CEpmd, |r| r.server_us_per_op));
        out.push(Target {
            what: format!(
                "lookups, 10 registered, {}: ≥ 0.95× ceiling, ≥ 1.0× C epmd, CPU/lookup ≤ C epmd's",
                clients(c)
            ),
            measured: format!(
                "{} of ceiling, {} of C epmd, CPU/lookup {} of C epmd's",
                times(vs_ceil),
                times(vs_c),
                times(cpu)
            ),
            met: match (vs_ceil, vs_c, cpu) {
                (Some(a), Some(b), Some(c)) => Some(a >= 0.95 && b >= 1.0 && c <= 1.0),
                _ => None,
            },
        });
    }
    for c in [1, 8] {
        let v = row(&r.lookup, 1000, c).and_then(|x| rs_over(x, Kind::CEpmd, |r| r.rate));
        out.push(Target {
            what: format!("lookups, 1000 registered, {}: ≥ 3× C epmd", clients(c)),
            measured: format!("{} of C epmd", times(v)),
            met: v.map(|v| v >= 3.0),
        });
    }
    let v = r
        .names
        .iter()
        .find(|x| x.registered == 1000)
        .and_then(|x| rs_over(x, Kind::CEpmd, |r| r.rate));
    out.push(Target {
        what: "NAMES, 1000 registered: ≥ 10× C epmd".into(),
        measured: format!("{} of C epmd", times(v)),
        met: v.map(|v| v >= 10.0),
    });
    if let Some(c) = &r.churn {
        for x in &c.rows {
            let v = rs_over(x, Kind::CEpmd, |r| r.rate);
            let empty = c.leftover[idx(Kind::EpmdRs)] == Some(0);
            out.push(Target {
                what: format!(
                    "churn, {}: ≥ 1.0× C epmd, NAMES empty afterwards",
                    clients(x.clients)
                ),
                measured: format!(
                    "{} of C epmd, NAMES {}",
                    times(v),
                    if empty { "empty" } else { "NOT empty" }
                ),
                met: v.map(|v| v >= 1.0 && empty),
            });
        }
    }
    if let Some(h) = r.hold.iter().find(|h| h.kind == Kind::EpmdRs) {
        let share = h.fd_limit.map(|l| h.count as f64 / l as f64);
        out.push(Target {
            what: "hold: ≥ 99.9 % of the daemon's fd limit".into(),
            measured: format!(
                "{} registrations of {} ({})",
                h.count,
                h.fd_limit.map_or_else(dash, |l| l.to_string()),
                share.map_or_else(dash, |s| format!("{:.2} %", s * 100.0))
            ),
            met: share.map(|s| s >= 0.999),
        });
        out.push(Target {
            what: "hold: lookups and NAMES still answered while full".into(),
            measured: format!(
                "lookups {}/{}, NAMES {}/{} (after releasing 16: lookups {}/{}, NAMES {}/{})",
                h.full.lookups_ok,
                h.full.lookups_tried,
                h.full.names_ok,
                h.full.names_tried,
                h.near_full.lookups_ok,
                h.near_full.lookups_tried,
                h.near_full.names_ok,
                h.near_full.names_tried,
            ),
            met: Some(h.full.all_answered()),
        });
        out.push(Target {
            what: "hold: ≤ 512 B RSS per registration, idle RSS ≤ 4 MiB".into(),
            measured: format!(
                "{:.0} B/registration, idle {:.2} MiB",
                h.bytes_per_registration(),
                h.rss_idle as f64 / 1048576.0
            ),
            met: Some(h.bytes_per_registration() <= 512.0 && h.rss_idle <= 4 << 20),
        });
        out.push(Target {
            what: "lookup p99 ≤ 2 ms with the maximum registrations held".into(),
            measured: format!(
                "full: {}; full−16: {}",
                if h.full.lookups_ok > 0 {
                    format!("p99 {:.0} µs", h.full.p99_us)
                } else {
                    "no lookup answered".into()
                },
                if h.near_full.lookups_ok > 0 {
                    format!("p99 {:.0} µs", h.near_full.p99_us)
                } else {
                    "no lookup answered".into()
                }
            ),
            met: Some(h.full.all_answered() && h.full.p99_us <= 2000.0),
        });
    }
    if let Some(row) = r.storm.iter().max_by_key(|row| row.burst) {
        if let Some(c) = &row.cells[idx(Kind::EpmdRs)] {
            out.push(Target {
                what: format!(
                    "storm of {} simultaneous lookups: every one answered, no listen overflow",
                    row.burst
                ),
                measured: format!(
                    "{} of {} answered, p99 {:.1} ms, max {:.0} ms, {} listen overflows",
                    c.answered,
                    c.attempted,
                    c.ms(0.99),
                    c.max_ms(),
                    c.listen_overflows
                ),
                met: Some(c.answered == c.attempted && c.listen_overflows == 0),
            });
        }
    }
    if let Some(x) = &r.slowloris {
        let p99 = x.get(Kind::EpmdRs).map(|r| r.p99_us);
        let errs = x.get(Kind::EpmdRs).map_or(0, |r| r.errors);
        out.push(Target {
            what: "lookup p99 ≤ 2 ms with 1000 slowloris connections open".into(),
            measured: p99.map_or_else(dash, |p| format!("p99 {p:.0} µs, {errs} errors")),
            met: p99.map(|p| p <= 2000.0 && errs == 0),
        });
    }
    out
}

/// The targets as a table.
pub(crate) fn targets_table(r: &Results) -> Table {
    let mut t = Table::new(
        "Targets of the issue (this run)",
        &["target", "measured", "met"],
    );
    for x in targets(r) {
        t.rows.push(vec![
            x.what,
            x.measured,
            match x.met {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "not measured",
            }
            .to_string(),
        ]);
    }
    t
}
