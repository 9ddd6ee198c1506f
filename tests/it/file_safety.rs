//! The files the daemon writes by name (issue 15, L9): the pid file and the log file are
//! never opened through a symlink, and a user's fallback log (`-daemon` without syslog or
//! `--log-file`) is never a predictable name in a shared directory such as `/tmp`.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::c_epmd::run;
use crate::support::daemon::{Daemon, DetachedDaemon, BIN, EPMD_ENV_VARS};
use crate::support::ports::free_port;
use crate::support::tmp::TempDir;
use crate::support::wait::poll_true;

/// How long a daemon may take to refuse to start, or a `-daemon` command to return.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The unprivileged uid and gid the fallback-log test runs the daemon as.
const NOBODY: u32 = 65534;

/// A file with known contents and a symlink to it, in `dir`.
fn target_and_link(dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
    let target = dir.join(format!("{name}.target"));
    fs::write(&target, b"precious\n").expect("write the target");
    let link = dir.join(name);
    symlink(&target, &link).expect("symlink");
    (target, link)
}

/// Starts the daemon with `args` and expects it to exit 1 without touching `target`.
fn refuses_to_start(args: &[&str], target: &Path) -> String {
    let mut daemon = Daemon::builder()
        .args(["--admin-socket", "none"])
        .args(args)
        .spawn();
    let status = daemon.wait_exit(EXIT_TIMEOUT);
    let stderr = daemon.stderr_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "the daemon started with {args:?}: {status:?}\n{stderr}"
    );
    assert_eq!(
        fs::read(target).expect("read the target"),
        b"precious\n",
        "the symlink's target was written"
    );
    stderr
}

/// A pid file path that is a symlink: the daemon refuses to start and writes nothing
/// through it.
#[test]
fn the_pid_file_is_never_written_through_a_symlink() {
    let dir = TempDir::new("pidsym").with_mode(0o777);
    let (target, link) = target_and_link(&dir, "epmd.pid");
    let stderr = refuses_to_start(&["--pid-file", link.to_str().expect("utf-8")], &target);
    assert!(stderr.contains("pid file"), "{stderr}");
}

/// A log file path that is a symlink: the daemon refuses to start and writes nothing
/// through it.
#[test]
fn the_log_file_is_never_opened_through_a_symlink() {
    let dir = TempDir::new("logsym").with_mode(0o777);
    let (target, link) = target_and_link(&dir, "epmd.log");
    let stderr = refuses_to_start(&["--log-file", link.to_str().expect("utf-8")], &target);
    assert!(stderr.contains("cannot open the log"), "{stderr}");
}

/// A user's `-daemon` with no syslog (no `/dev/log`) and no `--log-file` logs to
/// `$XDG_RUNTIME_DIR/epmd-rs.log`, and without `XDG_RUNTIME_DIR` to no file at all: never
/// to `$TMPDIR/epmd-rs-UID.log`, a name anyone could create first.
#[test]
fn a_users_fallback_log_is_never_in_a_shared_directory() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || Path::new("/dev/log").exists() {
        eprintln!("skipped: needs root (to run as another user) and no syslog socket");
        return;
    }
    let shared = TempDir::new("sharedtmp").with_mode(0o777);
    let runtime = TempDir::new("xdgruntime").with_mode(0o777);
    for with_runtime_dir in [false, true] {
        let port = free_port();
        let guard = DetachedDaemon::on_port(port);
        let mut cmd = Command::new(BIN);
        for var in EPMD_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.args(["-daemon", "-d", "-port", &port.to_string()])
            .args(["-address", "127.0.0.1", "--admin-socket", "none"])
            .env("TMPDIR", shared.path())
            .env_remove("XDG_RUNTIME_DIR")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .uid(NOBODY)
            .gid(NOBODY);
        if with_runtime_dir {
            cmd.env("XDG_RUNTIME_DIR", runtime.path());
        }
        let out = run(&mut cmd, EXIT_TIMEOUT);
        assert!(
            out.status.success(),
            "-daemon as uid {NOBODY}: {}",
            out.status
        );
        assert!(
            guard.wait_pid(EXIT_TIMEOUT).is_some(),
            "the detached daemon does not listen on {port}"
        );
        let in_shared: Vec<_> = fs::read_dir(shared.path())
            .expect("read the shared dir")
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert!(
            in_shared.is_empty(),
            "the fallback log went to the shared directory: {in_shared:?}"
        );
        if with_runtime_dir {
            let log = runtime.join("epmd-rs.log");
            assert!(
                poll_true(EXIT_TIMEOUT, || fs::read_to_string(&log)
                    .is_ok_and(|t| t.contains("syslog unavailable"))),
                "no fallback log in XDG_RUNTIME_DIR"
            );
        }
    }
}
