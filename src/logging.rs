//! Log setup: `env_logger`, one line per message, to stderr, to a log file (`--log-file`,
//! reopened on SIGHUP so that logrotate works), or to syslog (`-daemon` without a log
//! file, as the C epmd does).
//!
//! Verbosity follows epmd's `-d` count: none → warnings and errors, `-d` → info (what the
//! C epmd prints at debug level 0 and 1), `-d -d` → debug, more → trace (packet contents).
//! `RUST_LOG` overrides it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Text, as the target has always had it.
    #[default]
    Text,
    /// One JSON object per line: `time` (RFC 3339), `level`, `message`, and an event's
    /// fields.
    Json,
}

static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Sets the format of every line from now on (before [`init`]; once).
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Whether [`event`] writes anything: to the journal, as JSON, or as an info line the level
/// lets through. Callers skip building an event's message and fields when it does not (a
/// registration and an unregistration are on the hot path of a churning cluster).
pub fn events_shown() -> bool {
    stderr_is_journal_now() || format() == LogFormat::Json || log::log_enabled!(log::Level::Info)
}

static STDERR_IS_JOURNAL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// [`stderr_is_journal`] for this process, decided at the first event (after `-daemon` has
/// detached) and kept: neither the environment nor fd 2 changes afterwards.
fn stderr_is_journal_now() -> bool {
    *STDERR_IS_JOURNAL.get_or_init(|| stderr_is_journal(std::env::var_os("JOURNAL_STREAM")))
}

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// One structured event (a node registering or unregistering): `fields` are journal
/// field names (`EPMD_NODE`...) with their values.
///
/// Under systemd (stderr is the journal) it goes to the journal with its fields, so that
/// `journalctl EPMD_NODE=rabbit` finds it; with `--log-format json` it is one JSON object
/// (the fields lower-cased without `EPMD_`); both always, whatever the level. Otherwise
/// it is an info line (shown with `-d`).
pub fn event(message: &str, fields: &[(&'static str, String)]) {
    if stderr_is_journal_now() {
        match send_journal(Path::new(JOURNAL_SOCKET), 6, message, fields) {
            Ok(()) => return,
            Err(_) => {
                DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if format() == LogFormat::Json {
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), now_rfc3339().into());
        obj.insert("level".into(), "INFO".into());
        obj.insert("message".into(), message.into());
        for (k, v) in fields {
            let key = k.strip_prefix("EPMD_").unwrap_or(k).to_ascii_lowercase();
            obj.insert(key, v.clone().into());
        }
        let mut line = serde_json::Value::Object(obj).to_string();
        line.push('\n');
        write_line(line.as_bytes());
        return;
    }
    log::info!("{message}");
}

/// A line to the log file if there is one, else to stderr.
fn write_line(line: &[u8]) {
    let mut guard = LOG_FILE.lock().unwrap_or_else(|e| e.into_inner());
    let written = match guard.as_mut() {
        Some((_, f)) => f.write_all(line),
        None => io::stderr().write_all(line),
    };
    if written.is_err() {
        DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
    }
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now().to_string()
}

/// Sends one entry to the journal's native socket at `path`: `MESSAGE`, `PRIORITY`,
/// `SYSLOG_IDENTIFIER` and `fields`; a value holding a newline is sent in the protocol's
/// length-prefixed form.
pub fn send_journal(
    path: &Path,
    priority: u8,
    message: &str,
    fields: &[(&'static str, String)],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    let mut field = |k: &str, v: &str| {
        if v.contains('\n') {
            buf.extend_from_slice(k.as_bytes());
            buf.push(b'\n');
            buf.extend_from_slice(&(v.len() as u64).to_le_bytes());
            buf.extend_from_slice(v.as_bytes());
            buf.push(b'\n');
        } else {
            buf.extend_from_slice(format!("{k}={v}\n").as_bytes());
        }
    };
    field("MESSAGE", message);
    field("PRIORITY", &priority.to_string());
    field("SYSLOG_IDENTIFIER", "epmd-rs");
    for (k, v) in fields {
        field(k, v);
    }
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    socket.send_to(&buf, path)?;
    Ok(())
}

/// Installs the logger (once per process). Fails only when the log file cannot be opened.
pub fn init(debug: u8, target: &LogTarget) -> io::Result<()> {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level_for(debug)).parse_env("RUST_LOG");
    match target {
        _ if format() == LogFormat::Json && *target != LogTarget::Syslog => {
            if let LogTarget::File(path) = target {
                let file = open_append(path)?;
                *LOG_FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.clone(), file));
                builder.target(env_logger::Target::Pipe(Box::new(FileSink)));
            }
            builder.format(|buf, record| {
                let line = serde_json::json!({
                    "time": now_rfc3339(),
                    "level": record.level().as_str(),
                    "message": record.args().to_string(),
                });
                writeln!(buf, "{line}")
            });
        }
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
/// `/var/log/epmd-rs.log` for root, `$XDG_RUNTIME_DIR/epmd-rs.log` (a directory only the
/// user may write) otherwise; `None` for a user without `XDG_RUNTIME_DIR` (then the log
/// goes to stderr): never a predictable name in a shared directory such as `/tmp`.
pub fn fallback_log_file(
    is_root: bool,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if is_root {
        return Some(PathBuf::from("/var/log/epmd-rs.log"));
    }
    env("XDG_RUNTIME_DIR")
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join("epmd-rs.log"))
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

/// Opens the log file for appending, never through a symlink (`O_NOFOLLOW`; std opens
/// every file close-on-exec).
fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
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

/// Log lines dropped because syslog could not take them at once.
static DROPPED_LINES: AtomicU64 = AtomicU64::new(0);

/// How many log lines were dropped because syslog could not take them at once (its queue
/// was full, or it was gone).
pub fn dropped_lines() -> u64 {
    DROPPED_LINES.load(Ordering::Relaxed)
}

/// Sends each formatted record as one datagram to `/dev/log`, never waiting: the daemon's
/// loop logs, and a syslog that does not read must not stop it. A datagram that cannot be
/// sent at once is dropped and counted ([`dropped_lines`]).
struct SyslogSink {
    socket: UnixDatagram,
    pending: Vec<u8>,
}

impl SyslogSink {
    fn connect() -> io::Result<SyslogSink> {
        SyslogSink::connect_to(Path::new("/dev/log"))
    }

    fn connect_to(path: &Path) -> io::Result<SyslogSink> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
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
            // A lost log line must not stop the daemon: EAGAIN (syslog's queue is full)
            // and any other error drop the line.
            if self.socket.send(&self.pending).is_err() {
                DROPPED_LINES.fetch_add(1, Ordering::Relaxed);
            }
            self.pending.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_carry_their_fields_and_newlines_length_prefixed() {
        let dir = std::env::temp_dir().join(format!("epmd-rs-journal-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("socket");
        let _ = std::fs::remove_file(&path);
        let journal = UnixDatagram::bind(&path).unwrap();
        send_journal(
            &path,
            6,
            "node rabbit registered",
            &[
                ("EPMD_NODE", "rabbit".to_owned()),
                ("EPMD_PEER", "two\nlines".to_owned()),
            ],
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = journal.recv(&mut buf).unwrap();
        let got = &buf[..n];
        let mut want = b"MESSAGE=node rabbit registered\nPRIORITY=6\nSYSLOG_IDENTIFIER=epmd-rs\nEPMD_NODE=rabbit\nEPMD_PEER\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(got, &want[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use std::sync::mpsc;
    use std::time::Duration;

    /// The log file is never opened through a symlink: the link's target is untouched.
    #[test]
    fn the_log_file_is_not_opened_through_a_symlink() {
        let dir = std::env::temp_dir().join(format!("epmd-rs-logsym-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"precious\n").unwrap();
        let link = dir.join("epmd.log");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let opened = open_append(&link);
        let kept = std::fs::read(&target).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(opened.is_err(), "opened the log file through a symlink");
        assert_eq!(kept, b"precious\n");
    }

    /// The fallback log of a user is in its private runtime directory, never in `/tmp`.
    #[test]
    fn the_fallback_log_is_never_a_shared_directory_name() {
        use crate::test_env::fake_env as env;
        assert_eq!(
            fallback_log_file(false, env(&[("XDG_RUNTIME_DIR", "/run/user/1000")])),
            Some(PathBuf::from("/run/user/1000/epmd-rs.log"))
        );
        assert_eq!(fallback_log_file(false, env(&[("TMPDIR", "/tmp")])), None);
        assert_eq!(
            fallback_log_file(true, env(&[])),
            Some(PathBuf::from("/var/log/epmd-rs.log"))
        );
    }

    /// A syslog that never reads: once its queue is full, every line is dropped and
    /// counted at once instead of blocking the writer.
    #[test]
    fn a_syslog_that_does_not_read_never_blocks() {
        let dir = std::env::temp_dir().join(format!("epmd-rs-syslog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        let mut sink = SyslogSink::connect_to(&path).unwrap();
        let before = dropped_lines();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Far more datagrams than a Unix datagram queue holds.
            for i in 0..2000 {
                let _ = write!(sink, "<28>epmd-rs[1]: line {i}");
                let _ = sink.flush();
            }
            let _ = done_tx.send(());
        });
        let finished = done_rx.recv_timeout(Duration::from_secs(20)).is_ok();
        drop(receiver);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(finished, "logging blocked on a syslog that does not read");
        assert!(dropped_lines() > before, "no line was counted as dropped");
    }

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
