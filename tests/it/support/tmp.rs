//! Unique file names for captured process output.
//!
//! Files live in Cargo's per-target scratch directory (`CARGO_TARGET_TMPDIR`), are named
//! after the test process ID and a counter so parallel tests never share one, and are
//! removed by the handle that created them.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counter that makes every name handed out by this test process unique.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A number unique within this test process, for file and node names.
pub(crate) fn unique_id() -> u64 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// A fresh path `<CARGO_TARGET_TMPDIR>/epmd-it-<pid>-<n>-<label>` that no other test uses.
pub(crate) fn unique_path(label: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).expect("create CARGO_TARGET_TMPDIR");
    dir.join(format!(
        "epmd-it-{}-{}-{label}",
        std::process::id(),
        unique_id()
    ))
}

/// Creates a new file opened in append mode, so that clones of the handle can be given to a
/// child as both stdout and stderr without overwriting each other.
pub(crate) fn create_log(path: &Path) -> File {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()))
}

/// Reads a captured-output file as lossy UTF-8; empty if it cannot be read.
pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// A fresh directory, removed with its contents when dropped.
#[derive(Debug)]
pub(crate) struct TempDir {
    /// The directory.
    path: PathBuf,
}

impl TempDir {
    /// Creates `<CARGO_TARGET_TMPDIR>/epmd-it-<pid>-<n>-<label>`.
    pub(crate) fn new(label: &str) -> TempDir {
        TempDir::create(unique_path(label))
    }

    /// Creates `<system temp dir>/epmd-it-<pid>-<n>-<label>`: a short path, for Unix sockets
    /// (whose paths are limited to 107 bytes) and for users other than the test's, who may
    /// not be able to reach the target directory.
    pub(crate) fn short(label: &str) -> TempDir {
        TempDir::create(std::env::temp_dir().join(format!(
            "epmd-it-{}-{}-{label}",
            std::process::id(),
            unique_id()
        )))
    }

    fn create(path: PathBuf) -> TempDir {
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        TempDir { path }
    }

    /// The same directory with permission bits `mode` (e.g. 0o777 for a shared directory).
    pub(crate) fn with_mode(self, mode: u32) -> TempDir {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", self.path.display()));
        self
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// `dir/rel`.
    pub(crate) fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
