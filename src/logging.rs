//! Log setup: `env_logger`, one line per message, to stderr, to a log file (`--log-file`,
//! reopened on SIGHUP so that logrotate works), or to syslog (`-daemon` without a log
//! file, as the C epmd does).
//!
//! Verbosity follows epmd's `-d` count: none → warnings and errors, `-d` → info (what the
//! C epmd prints at debug level 0 and 1), `-d -d` → debug, more → trace (packet contents).
//! `RUST_LOG` overrides it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use log::LevelFilter;

/// Where log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error.
    Stderr,
    /// A file, appended to and reopened on SIGHUP.
    File(PathBuf),
    /// The local syslog socket (`/dev/log`), facility daemon.
    Syslog,
}

/// The level for a number of `-d` flags.
pub fn level_for(debug: u8) -> LevelFilter {
    match debug {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// The open log file and its path, for [`reopen`].
static LOG_FILE: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

/// Installs the logger (once per process). Fails only when the log file cannot be opened.
pub fn init(debug: u8, target: &LogTarget) -> io::Result<()> {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level_for(debug)).parse_env("RUST_LOG");
    match target {
        LogTarget::Stderr if stderr_is_journal(std::env::var_os("JOURNAL_STREAM")) => {
            // The journal reads the level from a `<N>` prefix (sd-daemon(3)) and names the
            // unit and pid itself.
            builder.format(|buf, record| {
                writeln!(buf, "<{}>{}", severity(record.level()), record.args())
            });
        }
        LogTarget::Stderr => {
            builder.format(|buf, record| writeln!(buf, "epmd-rs: {}", record.args()));
        }
        LogTarget::File(path) => {
            let file = open_append(path)?;
            *LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.clone(), file));
            builder
                .format(|buf, record| {
                    writeln!(
                        buf,
                        "{} epmd-rs[{}]: {}: {}",
                        buf.timestamp_seconds(),
                        std::process::id(),
                        record.level(),
                        record.args()
                    )
                })
                .target(env_logger::Target::Pipe(Box::new(FileSink)));
        }
        LogTarget::Syslog => {
            let sink = SyslogSink::connect()?;
            builder
                .format(|buf, record| {
                    // <priority>tag[pid]: message; facility daemon (3), severity by level.
                    let severity = severity(record.level());
                    write!(
                        buf,
                        "<{}>epmd-rs[{}]: {}",
                        3 * 8 + severity,
                        std::process::id(),
                        record.args()
                    )
                })
                .target(env_logger::Target::Pipe(Box::new(sink)));
        }
    }
    let _ = builder.try_init();
    Ok(())
}

/// The syslog severity of a log level (error 3, warning 4, info 6, debug 7).
fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether standard error is the journal stream systemd connected (`JOURNAL_STREAM` holds
/// its `device:inode`, see systemd.exec(5)).
fn stderr_is_journal(journal_stream: Option<std::ffi::OsString>) -> bool {
    let Some(value) = journal_stream.and_then(|v| v.into_string().ok()) else {
        return false;
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes into the buffer we pass; fd 2 may be closed (then -1).
    if unsafe { libc::fstat(2, st.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: fstat succeeded, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    value == format!("{}:{}", st.st_dev, st.st_ino)
}

/// Where `-daemon` logs when there is no syslog and no `--log-file`:
/// `/var/log/epmd-rs.log` for root, `$TMPDIR/epmd-rs-UID.log` otherwise.
pub fn fallback_log_file() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        PathBuf::from("/var/log/epmd-rs.log")
    } else {
        std::env::temp_dir().join(format!("epmd-rs-{uid}.log"))
    }
}

/// Reopens the log file at its path (after logrotate moved it); a no-op for other targets.
pub fn reopen() {
    let mut guard = LOG_FILE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, file)) = guard.as_mut() {
        match open_append(path) {
            Ok(f) => *file = f,
            Err(e) => log::warn!("cannot reopen {}: {e}", path.display()),
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Writes to the current log file.
struct FileSink;

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut guard = LOG_FILE.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some((_, f)) => f.write(buf),
            None => Ok(buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends each formatted record as one datagram to `/dev/log`.
struct SyslogSink {
    socket: UnixDatagram,
    pending: Vec<u8>,
}

impl SyslogSink {
    fn connect() -> io::Result<SyslogSink> {
        let socket = UnixDatagram::unbound()?;
        socket.connect("/dev/log")?;
        Ok(SyslogSink {
            socket,
            pending: Vec::new(),
        })
    }
}

impl Write for SyslogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.pending.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.pending.is_empty() {
            // A lost log line must not stop the daemon.
            let _ = self.socket.send(&self.pending);
            self.pending.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_our_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("0:0".into())));
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: as in stderr_is_journal.
        if unsafe { libc::fstat(2, st.as_mut_ptr()) } == 0 {
            // SAFETY: fstat succeeded.
            let st = unsafe { st.assume_init() };
            let ours = format!("{}:{}", st.st_dev, st.st_ino);
            assert!(stderr_is_journal(Some(ours.into())));
        }
    }
}
