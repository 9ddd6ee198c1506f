//! The `/metrics` exposition: the daemon's counters in the Prometheus text format
//! (version 0.0.4) or OpenMetrics 1.0 when the scraper asks for it. Pure: the loop lends
//! what is rendered; no per-node labels, so a scrape costs the same at 10 or 10,000 nodes
//! (only the connection phases are counted by walking the connections).
//!
//! Hand-written rather than `prometheus-client`: that crate encodes OpenMetrics only (not
//! the 0.0.4 text most scrapers ask for by default), and its registry of atomic metrics
//! would duplicate the counters [`Stats`] already keeps for `admin stats`; rendering
//! `Stats` directly keeps the two equal by construction.

use std::fmt::Write as _;

use crate::server::histogram::{Histogram, DURATION_BUCKETS};
use crate::server::stats::{Stats, REQUEST_KEYS};

/// The content type of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type of OpenMetrics text.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which exposition format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text`, the Prometheus text format otherwise.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The content type of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// The process's own figures (`process_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcessFigures {
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on open file descriptors.
    pub max_fds: u64,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: u64,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessFigures {
    /// This process's figures, from `getrusage`, `getrlimit` and `/proc/self`.
    pub fn current(start_time_seconds: f64) -> ProcessFigures {
        // Since Linux 6.2 the size of /proc/self/fd is the number of open fds, counted
        // without listing them (listing 10,000 fds costs milliseconds); older kernels say
        // 0 there, and the directory is listed.
        let open_fds = match std::fs::metadata("/proc/self/fd").map(|m| m.len()) {
            Ok(n) if n > 0 => n,
            _ => std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64),
        };
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into `limit`.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
        let resident_pages = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes one rusage into `usage`.
        let cpu_seconds = if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            tv(usage.ru_utime) + tv(usage.ru_stime)
        } else {
            0.0
        };
        ProcessFigures {
            open_fds,
            max_fds,
            resident_memory_bytes: resident_pages * page,
            cpu_seconds,
            start_time_seconds,
        }
    }
}

/// What a scrape renders.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The counters `admin stats` shows.
    pub stats: &'a Stats,
    /// Registered nodes now.
    pub registered: u64,
    /// Open connections by kind (`reading`, `registration`, `admin`, `http`...).
    pub connections: &'a [(&'static str, u64)],
    /// Unregistrations by reason.
    pub unregistrations: &'a [(&'static str, u64)],
    /// Request durations, from accept to reply written, by request.
    pub durations: &'a [(&'static str, &'a Histogram)],
    /// The process's figures.
    pub process: ProcessFigures,
}

/// The exposition of `inputs` in `format`.
pub fn render(inputs: &Inputs<'_>, format: Format) -> String {
    let mut w = Writer {
        out: String::with_capacity(8192),
        format,
    };
    let stats = inputs.stats;
    w.family("epmd_registered_nodes", "gauge", "Nodes registered now.");
    w.sample("epmd_registered_nodes", &[], inputs.registered as f64);
    w.family(
        "epmd_open_connections",
        "gauge",
        "Open connections by kind (epmd connection phases, admin, http).",
    );
    for (kind, n) in inputs.connections {
        w.sample("epmd_open_connections", &[("kind", kind)], *n as f64);
    }
    w.family(
        "epmd_requests_total",
        "counter",
        "Requests by request and outcome, as admin stats counts them; malformed ones and ones refused by an access policy are closed without a reply.",
    );
    // Every known request and outcome, 0 included, so that rates exist from the start.
    for key in REQUEST_KEYS {
        let n = stats.requests.get(key).unwrap_or(&0);
        let (request, outcome) = key.split_once('.').unwrap_or((key, "answered"));
        w.sample(
            "epmd_requests_total",
            &[("request", request), ("outcome", outcome)],
            *n as f64,
        );
    }
    w.sample(
        "epmd_requests_total",
        &[("request", "malformed"), ("outcome", "closed")],
        stats.malformed_requests as f64,
    );
    w.sample(
        "epmd_requests_total",
        &[("request", "refused"), ("outcome", "policy")],
        stats.policy_refusals as f64,
    );
    w.sample(
        "epmd_requests_total",
        &[("request", "refused"), ("outcome", "non_local")],
        stats.non_local_refusals as f64,
    );
    w.family(
        "epmd_registrations_total",
        "counter",
        "Names registered (ALIVE2 accepted, including a dead owner's name taken over).",
    );
    let registered = ["alive2.registered", "alive2.replaced_dead_owner"]
        .iter()
        .filter_map(|k| stats.requests.get(k))
        .sum::<u64>();
    w.sample("epmd_registrations_total", &[], registered as f64);
    w.family(
        "epmd_unregistrations_total",
        "counter",
        "Names unregistered, by reason.",
    );
    for (reason, n) in inputs.unregistrations {
        w.sample(
            "epmd_unregistrations_total",
            &[("reason", reason)],
            *n as f64,
        );
    }
    w.family(
        "epmd_refused_connections_total",
        "counter",
        "Connections or requests refused, by reason: a connection cap, the room reserved for local peers, the per-source cap, an access policy, a local-only request from a non-local peer.",
    );
    for (reason, n) in [
        ("cap", stats.capped_cap),
        ("local_reserve", stats.capped_reserve),
        ("per_source_cap", stats.capped_per_source),
        ("policy", stats.policy_refusals),
        ("non_local", stats.non_local_refusals),
    ] {
        w.sample(
            "epmd_refused_connections_total",
            &[("reason", reason)],
            n as f64,
        );
    }
    w.family(
        "epmd_accepted_connections_total",
        "counter",
        "epmd connections accepted.",
    );
    w.sample(
        "epmd_accepted_connections_total",
        &[],
        stats.accepted as f64,
    );
    w.family(
        "epmd_accept_errors_total",
        "counter",
        "accept() failures (accepting pauses, the daemon goes on).",
    );
    w.sample("epmd_accept_errors_total", &[], stats.accept_errors as f64);
    w.family(
        "epmd_deadline_expiries_total",
        "counter",
        "Connections closed at their deadline.",
    );
    w.sample(
        "epmd_deadline_expiries_total",
        &[],
        stats.deadline_expiries as f64,
    );
    w.family(
        "epmd_handovers_total",
        "counter",
        "Hand-overs this daemon's state has gone through.",
    );
    w.sample("epmd_handovers_total", &[], stats.handovers as f64);
    w.family(
        "epmd_request_duration_seconds",
        "histogram",
        "Time from accept to reply written, by request (this process only).",
    );
    for (request, h) in inputs.durations {
        let mut cumulative = 0;
        for (bound, n) in DURATION_BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            w.sample(
                "epmd_request_duration_seconds_bucket",
                &[("request", request), ("le", &format_float(*bound))],
                cumulative as f64,
            );
        }
        w.sample(
            "epmd_request_duration_seconds_bucket",
            &[("request", request), ("le", "+Inf")],
            h.count as f64,
        );
        w.sample(
            "epmd_request_duration_seconds_sum",
            &[("request", request)],
            h.sum,
        );
        w.sample(
            "epmd_request_duration_seconds_count",
            &[("request", request)],
            h.count as f64,
        );
    }
    let p = inputs.process;
    w.family("process_open_fds", "gauge", "Open file descriptors.");
    w.sample("process_open_fds", &[], p.open_fds as f64);
    w.family(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
    );
    w.sample("process_max_fds", &[], p.max_fds as f64);
    w.family(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
    );
    w.sample(
        "process_resident_memory_bytes",
        &[],
        p.resident_memory_bytes as f64,
    );
    w.family(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
    );
    w.sample("process_cpu_seconds_total", &[], p.cpu_seconds);
    w.family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    );
    w.sample("process_start_time_seconds", &[], p.start_time_seconds);
    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

struct Writer {
    out: String,
    format: Format,
}

impl Writer {
    /// `# HELP` and `# TYPE` of a family; OpenMetrics names a counter family without its
    /// `_total` suffix.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let name = match (self.format, kind) {
            (Format::OpenMetrics, "counter") => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_float(value));
        self.out.push('\n');
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A sample value: integers without a fraction, others in Rust's shortest form.
fn format_float(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn inputs(stats: &Stats, h: &Histogram) -> String {
        let durations = [("port_please2", h)];
        render(
            &Inputs {
                stats,
                registered: 2,
                connections: &[("registration", 2), ("http", 1)],
                unregistrations: &[("closed", 3)],
                durations: &durations,
                process: ProcessFigures::default(),
            },
            Format::Text,
        )
    }

    #[test]
    fn counters_are_those_of_admin_stats() {
        let mut stats = Stats::default();
        stats.requests.insert("alive2.registered", 5);
        stats.requests.insert("port_please2.found", 7);
        stats.requests.insert("names", 1);
        stats.malformed_requests = 4;
        stats.capped_per_source = 2;
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        let text = inputs(&stats, &h);
        for line in [
            "epmd_registered_nodes 2",
            "epmd_requests_total{request=\"alive2\",outcome=\"registered\"} 5",
            "epmd_requests_total{request=\"port_please2\",outcome=\"found\"} 7",
            "epmd_requests_total{request=\"names\",outcome=\"answered\"} 1",
            "epmd_requests_total{request=\"malformed\",outcome=\"closed\"} 4",
            "epmd_registrations_total 5",
            "epmd_unregistrations_total{reason=\"closed\"} 3",
            "epmd_refused_connections_total{reason=\"per_source_cap\"} 2",
            "epmd_open_connections{kind=\"http\"} 1",
            "epmd_request_duration_seconds_bucket{request=\"port_please2\",le=\"0.00025\"} 0",
            "epmd_request_duration_seconds_bucket{request=\"port_please2\",le=\"0.0005\"} 1",
            "epmd_request_duration_seconds_bucket{request=\"port_please2\",le=\"0.005\"} 2",
            "epmd_request_duration_seconds_bucket{request=\"port_please2\",le=\"+Inf\"} 2",
            "epmd_request_duration_seconds_count{request=\"port_please2\"} 2",
            "# TYPE epmd_requests_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(!text.contains("# EOF"));
        // Requests never made are there, at 0.
        assert!(text.contains("epmd_requests_total{request=\"stop\",outcome=\"stopped\"} 0\n"));
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let stats = Stats::default();
        let text = render(
            &Inputs {
                stats: &stats,
                registered: 0,
                connections: &[],
                unregistrations: &[],
                durations: &[],
                process: ProcessFigures::current(1.5),
            },
            Format::OpenMetrics,
        );
        assert!(text.contains("# TYPE epmd_requests counter\n"));
        assert!(text.contains("\nprocess_start_time_seconds 1.5\n"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }

    #[test]
    fn process_figures_are_read() {
        let p = ProcessFigures::current(0.0);
        assert!(p.open_fds >= 3 && p.max_fds >= p.open_fds, "{p:?}");
        assert!(p.resident_memory_bytes > 0);
    }
}
