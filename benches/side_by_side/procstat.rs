//! Per-process CPU time and memory from `/proc`, for the daemons (by PID) and for the bench
//! itself (the load generator).
//!
//! CPU time is `utime + stime` of `/proc/PID/stat` (all threads), in clock ticks of
//! `sysconf(_SC_CLK_TCK)` (usually 100 Hz, so 10 ms resolution: a 2 s window measures a
//! busy daemon to about 1 %). RSS is `VmRSS` of `/proc/PID/status`.

use std::fs;
use std::time::Duration;

/// `utime + stime` of a process, or `None` once it has gone.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    parse_cpu(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime + stime` of the bench process (all its threads).
pub(crate) fn self_cpu_time() -> Duration {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_cpu(&s))
        .unwrap_or_default()
}

/// Resident set size in bytes (`VmRSS`), or `None` once the process has gone.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    status_kib(&format!("/proc/{pid}/status"), "VmRSS:").map(|k| k * 1024)
}

/// Resident set size of the bench process in bytes.
pub(crate) fn self_rss_bytes() -> u64 {
    status_kib("/proc/self/status", "VmRSS:").map_or(0, |k| k * 1024)
}

/// The soft `Max open files` limit of a process, from `/proc/PID/limits`.
pub(crate) fn fd_limit(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Number of open fds of a process (entries of `/proc/PID/fd`).
pub(crate) fn open_fds(pid: u32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn status_kib(path: &str, key: &str) -> Option<u64> {
    let text = fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Fields 14 and 15 (`utime`, `stime`) of a `stat` line. The command name in field 2 may
/// contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_cpu(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After `)`: field 3 (state) is index 0, so utime (14) is index 11.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(ticks(utime + stime))
}

fn ticks(n: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_nanos(n.saturating_mul(1_000_000_000) / hz)
}
