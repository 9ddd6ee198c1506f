//! Where the admin socket lives by default: `$RUNTIME_DIRECTORY` (systemd's
//! `RuntimeDirectory=`), else `/run/epmd-rs/` for root, else `$XDG_RUNTIME_DIR/epmd-rs/`.
//! The file name carries the epmd port, so daemons on different ports never share it.

use std::ffi::OsString;
use std::path::PathBuf;

/// The default admin socket path for a daemon on `port`; `None` when no runtime directory
/// is known (a non-root user without `XDG_RUNTIME_DIR`).
pub fn default_path(
    port: u16,
    is_root: bool,
    env: impl Fn(&str) -> Option<OsString>,
) -> Option<PathBuf> {
    let file = format!("admin-{port}.sock");
    if let Some(dir) = env("RUNTIME_DIRECTORY").filter(|d| !d.is_empty()) {
        // systemd may pass several colon-separated directories; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return Some(PathBuf::from(first).join(file));
    }
    if is_root {
        return Some(PathBuf::from("/run/epmd-rs").join(file));
    }
    env("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("epmd-rs").join(file))
}

/// True when the process runs as root.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_env::fake_env as env;

    #[test]
    fn defaults() {
        assert_eq!(
            default_path(4369, true, env(&[])),
            Some(PathBuf::from("/run/epmd-rs/admin-4369.sock"))
        );
        assert_eq!(
            default_path(5, false, env(&[("XDG_RUNTIME_DIR", "/run/user/1000")])),
            Some(PathBuf::from("/run/user/1000/epmd-rs/admin-5.sock"))
        );
        assert_eq!(default_path(5, false, env(&[])), None);
        assert_eq!(
            default_path(5, true, env(&[("RUNTIME_DIRECTORY", "/run/x:/run/y")])),
            Some(PathBuf::from("/run/x/admin-5.sock"))
        );
    }
}
