//! The reference C epmd binary (Debian's `erlang-base`), used here as a client, and a
//! runner for short client commands with a bounded wait.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use super::daemon::EPMD_ENV_VARS;
use super::tmp;
use super::wait::poll_until;

/// How long a client command may run before the test gives up on it.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// Finds the C `epmd`: `/usr/bin/epmd`, else `epmd` on `PATH`, else
/// `/usr/lib/erlang/erts-*/bin/epmd`. Panics if none exists (erlang-base is required).
pub(crate) fn c_epmd_path() -> PathBuf {
    let fixed = Path::new("/usr/bin/epmd");
    if fixed.is_file() {
        return fixed.to_path_buf();
    }
    if let Some(found) = find_on_path("epmd") {
        return found;
    }
    let erts_dirs = std::fs::read_dir("/usr/lib/erlang")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("erts-"));
    for dir in erts_dirs {
        let candidate = dir.path().join("bin/epmd");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("the C epmd was not found (install Debian's erlang-base)");
}

/// The first file called `program` in the directories of `PATH`.
pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// What a finished client command printed, and how it exited.
#[derive(Debug)]
pub(crate) struct CmdOutput {
    /// How it exited.
    pub(crate) status: ExitStatus,
    /// Everything written to stdout.
    pub(crate) stdout: Vec<u8>,
    /// Everything written to stderr.
    pub(crate) stderr: Vec<u8>,
}

impl CmdOutput {
    /// stdout as lossy UTF-8.
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as lossy UTF-8.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Runs `program args` with the `ERL_EPMD_*` variables removed, stdin closed and output
/// captured to files, and waits up to `timeout` for it to exit. At the deadline the
/// process is killed by PID and the test panics.
pub(crate) fn run_command(program: &Path, args: &[&str], timeout: Duration) -> CmdOutput {
    let mut cmd = Command::new(program);
    for var in EPMD_ENV_VARS {
        cmd.env_remove(var);
    }
    cmd.args(args);
    run(&mut cmd, timeout)
}

/// Runs `cmd` with stdin closed and its output captured to files, waiting up to `timeout`
/// for it to exit. At the deadline the process is killed by PID and the test panics.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    let stdout_path = tmp::unique_path("cmd.stdout");
    let stderr_path = tmp::unique_path("cmd.stderr");
    cmd.stdin(Stdio::null())
        .stdout(tmp::create_log(&stdout_path))
        .stderr(tmp::create_log(&stderr_path));
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = poll_until(timeout, || child.try_wait().ok().flatten());
    let stdout = fs::read(&stdout_path).unwrap_or_default();
    let stderr = fs::read(&stderr_path).unwrap_or_default();
    let _ = fs::remove_file(&stdout_path);
    let _ = fs::remove_file(&stderr_path);
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{cmd:?} still running after {timeout:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    CmdOutput {
        status,
        stdout,
        stderr,
    }
}

/// Runs the C epmd with `args` (e.g. `["-port", "4369", "-names"]`); see [`run_command`].
pub(crate) fn run_c_epmd(args: &[&str]) -> CmdOutput {
    run_command(&c_epmd_path(), args, CLIENT_TIMEOUT)
}
