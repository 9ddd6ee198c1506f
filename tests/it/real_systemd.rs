//! The project's own `systemd/epmd-rs.{socket,service}` under a real systemd (issue 10):
//! `tests/real-systemd/run-unit-test.sh --preset epmd-rs` boots the machine's systemd as
//! PID 1 of a throwaway `systemd-nspawn` container (private network, so 4369 inside is not
//! the host's), installs the daemon binary of this build and the units, and runs
//! `tests/real-systemd/epmd-rs-service.sh` inside: socket activation, READY and STATUS, the
//! sandbox, `admin`, two real Erlang nodes across 50 reloads, an `admin upgrade`, a
//! restart, a `kill -9` and a watchdog expiry with lookups in a loop, the watchdog after a
//! reload, a failed reload, journal levels, and a clean stop. See
//! tests/real-systemd/README.md.
//!
//! Needs root, `systemd-nspawn` (Debian `systemd-container`) and mount namespaces; without
//! them the test says so on stderr and passes without running (`make test` prints which
//! before it starts).
//! `EPMD_RS_SKIP_REAL_SYSTEMD=1` skips it explicitly.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::daemon::BIN;
use crate::sysd_support::run;

/// Above the script's own limits (60 s boot, 240 + 30 s test, 30 s teardown), which end
/// the container in order first.
const RUN_TIMEOUT: Duration = Duration::from_secs(400);

/// How long the mount-namespace probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the real-systemd tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if std::env::var_os("EPMD_RS_SKIP_REAL_SYSTEMD").is_some() {
        return Some("EPMD_RS_SKIP_REAL_SYSTEMD is set".to_owned());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".to_owned());
    }
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    if !on_path("systemd-nspawn") {
        return Some("no systemd-nspawn (apt-get install systemd-container)".to_owned());
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Some("no /lib/systemd/systemd".to_owned());
    }
    // Root without the right to make mount namespaces (an unprivileged container).
    let probe = run(
        Command::new("unshare").args(["--mount", "true"]),
        PROBE_TIMEOUT,
    );
    if !probe.status.success() {
        return Some(format!(
            "`unshare --mount true` failed ({}): no mount namespaces here",
            probe.status
        ));
    }
    None
}

#[test]
fn units_under_a_real_systemd_keep_erlang_nodes_across_reload_restart_crash_and_watchdog() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED real-systemd test: {why}");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real-systemd/run-unit-test.sh");
    let out = run(
        Command::new(&script)
            .args(["--preset", "epmd-rs", "--timeout", "240"])
            .env("EPMD_RS_BIN", BIN),
        RUN_TIMEOUT,
    );
    let stdout = out.stdout_text();
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty() && stdout.contains("epmd-rs-service: PASS"),
        "the real-systemd test failed ({}): {failed:#?}\n--- stdout ---\n{stdout}--- stderr ---\n{}--- end ---",
        out.status,
        out.stderr_text()
    );
    for figure in stdout.lines().filter(|l| l.starts_with("FIGURE")) {
        eprintln!("{figure}");
    }
}
