//! A small service manager for the fd-store tests: it speaks the two documented systemd
//! protocols the daemon relies on, and nothing else.
//!
//! * `sd_notify(3)`: a Unix datagram socket passed as `NOTIFY_SOCKET`. Every datagram is
//!   kept; `FDSTORE=1` with `FDNAME=` and SCM_RIGHTS fds adds them to the store (an fd that
//!   is already stored, compared by `fstat` device and inode as systemd does, is ignored),
//!   `FDSTOREREMOVE=1` with `FDNAME=` removes every fd of that name.
//! * `sd_listen_fds(3)`: [`Supervisor::spawn`] starts the daemon with the listening socket
//!   at fd 3 (named `epmd`, as the socket unit names it) and every stored fd after it,
//!   `LISTEN_FDS`, `LISTEN_FDNAMES` (colon-separated, same order) and `LISTEN_PID` (set by
//!   an `sh -c 'LISTEN_PID=$$ exec "$0" "$@"'` wrapper, so it is the daemon's own pid).
//!
//! The listening socket belongs to the supervisor, as it belongs to systemd: it stays open
//! while the daemon is killed and restarted, and connections wait in its backlog.
//!
//! For fault tests it can also: start the daemon as pid 1 of a new PID namespace (a
//! container), read its socket slowly (a small receive buffer, read only when asked),
//! ignore removals of state documents (a crash between a store and a remove), hold fds
//! put there by the test, and report stored states that changed after they were stored
//! and connections stored before any stored state listed them.

use std::fs::File;
use std::io::ErrorKind;
use std::mem;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use epmd_rs::handover::fdpass::ControlBuf;

use crate::support::daemon::{BIN, EPMD_ENV_VARS};
use crate::support::tmp;

/// The fd name systemd gives the socket unit's listening socket in `LISTEN_FDNAMES`.
pub(crate) const LISTENER_NAME: &str = "epmd";

/// Most fds accepted with one notification (the kernel's SCM_MAX_FD).
const MAX_FDS_PER_MESSAGE: usize = 253;

/// Variables of the test runner's environment that a service manager would set; removed so
/// that only what the supervisor sets applies.
const MANAGER_ENV_VARS: [&str; 7] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "FDSTORE",
];

/// One fd in the store.
#[derive(Debug)]
pub(crate) struct Stored {
    /// Its `FDNAME=`.
    pub(crate) name: String,
    /// The fd itself (close-on-exec in the supervisor).
    pub(crate) fd: OwnedFd,
    /// `st_dev` and `st_ino`, to recognise the same file sent again.
    id: (u64, u64),
    /// For a state memfd: its contents when it was stored (to check it never changes).
    contents_when_stored: Option<Vec<u8>>,
}

/// One notification datagram.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    /// The text, as sent.
    pub(crate) text: String,
    /// Its `KEY=value` lines.
    pub(crate) fields: Vec<(String, String)>,
    /// How many fds came with it.
    pub(crate) fds: usize,
    /// The sender's pid (SCM_CREDENTIALS, as systemd gets it with SO_PASSCRED).
    pub(crate) pid: Option<u32>,
}

impl Message {
    /// The value of `key`, if the message has that line.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the message has `key=value`.
    pub(crate) fn has(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }
}

/// The test service manager: a notification socket, a listening socket and an fd store.
#[derive(Debug)]
pub(crate) struct Supervisor {
    /// The `NOTIFY_SOCKET`.
    notify: UnixDatagram,
    /// Its path (removed on drop).
    notify_path: PathBuf,
    /// The "socket unit": a listener on 127.0.0.1 and a port the kernel chose.
    listener: TcpListener,
    /// The fd store, in the order fds were stored.
    store: Vec<Stored>,
    /// Every notification so far.
    messages: Vec<Message>,
    /// Fds received that were already in the store (and so ignored).
    duplicates: usize,
    /// Connections stored while no stored state listed them (the daemon must store a
    /// state that lists a connection before the connection), by name.
    stored_before_listed: Vec<String>,
    /// Whether `FDSTOREREMOVE=1` of state names is ignored (as if the daemon had crashed
    /// right after storing a new state, before removing the old one).
    keep_old_states: bool,
}

impl Supervisor {
    /// Binds the notification socket and the listening socket.
    pub(crate) fn new() -> Supervisor {
        let notify_path = tmp::unique_path("sup-notify.sock");
        assert!(
            notify_path.as_os_str().len() < 100,
            "socket path too long for sun_path: {}",
            notify_path.display()
        );
        let notify = UnixDatagram::bind(&notify_path)
            .unwrap_or_else(|e| panic!("bind {}: {e}", notify_path.display()));
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from a valid pointer of the size given.
        let rc = unsafe {
            libc::setsockopt(
                notify.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_PASSCRED: {}", std::io::Error::last_os_error());
        // Port 0: the kernel picks a free port, and we keep it bound from here on.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a listener");
        Supervisor {
            notify,
            notify_path,
            listener,
            store: Vec::new(),
            messages: Vec::new(),
            duplicates: 0,
            stored_before_listed: Vec::new(),
            keep_old_states: false,
        }
    }

    /// Binds a notification socket with a receive buffer of `bytes` (the kernel's minimum
    /// if smaller): a service manager slow to read fills up after a few notifications.
    pub(crate) fn with_receive_buffer(bytes: usize) -> Supervisor {
        let sup = Supervisor::new();
        let size = libc::c_int::try_from(bytes).expect("buffer size");
        // SAFETY: setsockopt reads an int from a valid pointer of the size given.
        let rc = unsafe {
            libc::setsockopt(
                sup.notify.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        sup
    }

    /// Whether to ignore `FDSTOREREMOVE=1` of state documents from now on (see
    /// `keep_old_states`).
    pub(crate) fn set_keep_old_states(&mut self, keep: bool) {
        self.keep_old_states = keep;
    }

    /// Puts `fd` in the store under `name` (as if the daemon had stored it).
    pub(crate) fn store_fd(&mut self, name: &str, fd: OwnedFd) {
        let id = file_id(&fd);
        let contents_when_stored = is_state_name(name).then(|| read_all(&fd));
        self.store.push(Stored {
            name: name.to_owned(),
            fd,
            id,
            contents_when_stored,
        });
    }

    /// The port of the listening socket (the daemon's epmd port).
    pub(crate) fn port(&self) -> u16 {
        self.listener.local_addr().expect("listener address").port()
    }

    /// Starts `epmd-rs <args>` the way systemd starts a socket-activated service with a
    /// file-descriptor store: listener and stored fds at 3.., `LISTEN_*`, `NOTIFY_SOCKET`,
    /// and `FDSTORE=<max>` when `fdstore_env` is given (systemd 254+ sets it when
    /// `FileDescriptorStoreMax=` is non-zero).
    pub(crate) fn spawn(&self, args: &[&str], fdstore_env: Option<usize>) -> Supervised {
        self.spawn_with(args, fdstore_env, false)
    }

    /// Like [`Supervisor::spawn`], in a new PID namespace when `pid_namespace` is set
    /// (`unshare --pid --fork --kill-child`): the daemon is pid 1 there, as in a container,
    /// every time it starts. Its notifications then say `MAINPID=1`;
    /// [`Supervised::pid`] is the pid of `unshare`, whose death kills the daemon.
    pub(crate) fn spawn_with(
        &self,
        args: &[&str],
        fdstore_env: Option<usize>,
        pid_namespace: bool,
    ) -> Supervised {
        let mut fds: Vec<RawFd> = vec![self.listener.as_raw_fd()];
        let mut names: Vec<&str> = vec![LISTENER_NAME];
        for s in &self.store {
            fds.push(s.fd.as_raw_fd());
            names.push(&s.name);
        }
        let count = fds.len();
        let mut cmd = if pid_namespace {
            let mut c = Command::new("unshare");
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                // Unprivileged: a user namespace grants the right to make a PID namespace.
                c.args(["--user", "--map-root-user"]);
            }
            c.args(["--pid", "--fork", "--kill-child", "/bin/sh"]);
            c
        } else {
            Command::new("/bin/sh")
        };
        cmd.arg("-c")
            .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
            .arg(BIN)
            .args(args);
        for var in EPMD_ENV_VARS.iter().chain(MANAGER_ENV_VARS.iter()) {
            cmd.env_remove(var);
        }
        cmd.env("LISTEN_FDS", count.to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env("NOTIFY_SOCKET", &self.notify_path);
        if let Some(max) = fdstore_env {
            cmd.env("FDSTORE", max.to_string());
        }
        let stdout_path = tmp::unique_path("supervised.stdout");
        let stderr_path = tmp::unique_path("supervised.stderr");
        cmd.stdin(Stdio::null())
            .stdout(tmp::create_log(&stdout_path))
            .stderr(tmp::create_log(&stderr_path));
        // Scratch space for the pre_exec hook, allocated here: the hook must not allocate.
        let mut high = vec![-1 as RawFd; count];
        // SAFETY: the hook only calls fcntl and dup2 (async-signal-safe) and writes into
        // memory allocated before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // First move every fd above the target range (so that no dup2 below
                // overwrites an fd still to be moved), then put them at 3.. without
                // close-on-exec; the high copies are close-on-exec and vanish at exec.
                let first = libc::c_int::try_from(3 + count).unwrap_or(libc::c_int::MAX);
                for (slot, fd) in high.iter_mut().zip(&fds) {
                    let copy = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, first);
                    if copy < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    *slot = copy;
                }
                for (target, copy) in (3..).zip(&high) {
                    if libc::dup2(*copy, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let command_line = format!(
            "LISTEN_FDS={count} LISTEN_FDNAMES={} {BIN} {}",
            names.join(":"),
            args.join(" ")
        );
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn `{command_line}`: {e}"));
        Supervised {
            child,
            stdout_path,
            stderr_path,
            command_line,
        }
    }

    /// Receives one datagram, waiting until `deadline`; whether one arrived.
    fn receive_until(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        self.notify
            .set_read_timeout(Some(left))
            .expect("set_read_timeout");
        let mut buf = vec![0u8; 4096];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: CMSG_SPACE only computes sizes.
        let space = unsafe {
            libc::CMSG_SPACE((MAX_FDS_PER_MESSAGE * mem::size_of::<RawFd>()) as u32) as usize
                + libc::CMSG_SPACE(mem::size_of::<libc::ucred>() as u32) as usize
        };
        // Aligned for cmsghdr, which the CMSG_* macros read it as.
        let mut control = ControlBuf::with_len(space);
        // SAFETY: msghdr is plain data; the pointers set below outlive the recvmsg call.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr();
        msg.msg_controllen = control.len() as _;
        // SAFETY: msg points at live buffers of the sizes it declares.
        let n = unsafe { libc::recvmsg(self.notify.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::TimedOut => false,
                ErrorKind::Interrupted => true,
                _ => panic!("recvmsg on {}: {e}", self.notify_path.display()),
            };
        }
        let mut fds = Vec::new();
        let mut sender = None;
        // SAFETY: walking the control messages the kernel filled in, within
        // msg_controllen; every fd found is new in this process and owned by nothing else.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                {
                    let cred =
                        std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::ucred>());
                    sender = u32::try_from(cred.pid).ok();
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        assert!(
            msg.msg_flags & libc::MSG_CTRUNC == 0,
            "a notification carried more fds than the supervisor accepts"
        );
        let text = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
        let fields: Vec<(String, String)> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let message = Message {
            text,
            fields,
            fds: fds.len(),
            pid: sender,
        };
        self.apply(&message, fds);
        self.messages.push(message);
        true
    }

    /// What systemd does with a notification: store or remove fds.
    fn apply(&mut self, message: &Message, fds: Vec<OwnedFd>) {
        // systemd's default name for fds stored without FDNAME=.
        let name = message.get("FDNAME").unwrap_or("stored").to_owned();
        if message.has("FDSTORE", "1") {
            if name.starts_with("conn-") && !self.newest_state_lists(&name) {
                self.stored_before_listed.push(name.clone());
            }
            for fd in fds {
                let id = file_id(&fd);
                if self.store.iter().any(|s| s.id == id) {
                    // Already stored (under any name): systemd ignores it; ours closes.
                    self.duplicates += 1;
                    continue;
                }
                let contents_when_stored = is_state_name(&name).then(|| read_all(&fd));
                self.store.push(Stored {
                    name: name.clone(),
                    fd,
                    id,
                    contents_when_stored,
                });
            }
        }
        // Fds sent with anything but FDSTORE=1 are closed (dropped here), as systemd does.
        if message.has("FDSTOREREMOVE", "1") && !(self.keep_old_states && is_state_name(&name)) {
            self.store.retain(|s| s.name != name);
        }
    }

    /// Receives notifications for up to `timeout` until `cond` holds for the supervisor;
    /// whether it did.
    pub(crate) fn wait_until(
        &mut self,
        timeout: Duration,
        mut cond: impl FnMut(&Supervisor) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            self.receive_until(deadline.min(Instant::now() + Duration::from_millis(50)));
        }
    }

    /// Like [`Supervisor::wait_until`], panicking with every notification on timeout.
    pub(crate) fn expect(
        &mut self,
        what: &str,
        timeout: Duration,
        cond: impl FnMut(&Supervisor) -> bool,
    ) {
        if !self.wait_until(timeout, cond) {
            panic!(
                "supervisor: {what} did not happen within {timeout:?}\nstore: {:?}\nnotifications:\n{}",
                self.store_names(),
                self.transcript()
            );
        }
    }

    /// Waits for `READY=1` with `MAINPID=<pid>`, received after message index `from`.
    pub(crate) fn expect_ready(&mut self, pid: u32, from: usize, timeout: Duration) {
        let pid = pid.to_string();
        self.expect(&format!("READY=1 from pid {pid}"), timeout, |s| {
            s.messages[from.min(s.messages.len())..]
                .iter()
                .any(|m| m.has("READY", "1") && m.has("MAINPID", &pid))
        });
    }

    /// Every notification so far.
    pub(crate) fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The names of the stored fds, one entry per fd, in store order.
    pub(crate) fn store_names(&self) -> Vec<String> {
        self.store.iter().map(|s| s.name.clone()).collect()
    }

    /// How many fds of that name are stored.
    pub(crate) fn stored_count(&self, name: &str) -> usize {
        self.store.iter().filter(|s| s.name == name).count()
    }

    /// How many received fds were ignored because they were already stored.
    pub(crate) fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// The names removed with `FDSTOREREMOVE=1` so far, in order.
    pub(crate) fn removals(&self) -> Vec<String> {
        self.messages
            .iter()
            .filter(|m| m.has("FDSTOREREMOVE", "1"))
            .filter_map(|m| m.get("FDNAME").map(str::to_owned))
            .collect()
    }

    /// The names of the stored state documents (`state`, `state-<n>`), in store order.
    pub(crate) fn state_names(&self) -> Vec<String> {
        self.store
            .iter()
            .filter(|s| is_state_name(&s.name))
            .map(|s| s.name.clone())
            .collect()
    }

    /// The contents of the stored state memfd (read with `pread`, so the daemon's file
    /// offset is untouched), if exactly one is stored.
    pub(crate) fn state_bytes(&self) -> Option<Vec<u8>> {
        let mut stored = self.store.iter().filter(|s| is_state_name(&s.name));
        let s = stored.next()?;
        if stored.next().is_some() {
            return None;
        }
        Some(read_all(&s.fd))
    }

    /// The stored state document with the highest number (`state-<n>`), as JSON, if one
    /// is stored and parses.
    pub(crate) fn newest_state(&self) -> Option<serde_json::Value> {
        let newest = self
            .store
            .iter()
            .filter(|s| is_state_name(&s.name))
            .max_by_key(|s| {
                s.name
                    .strip_prefix("state-")
                    .and_then(|n| n.parse::<u64>().ok())
            })?;
        serde_json::from_slice(&read_all(&newest.fd)).ok()
    }

    /// Whether the newest stored state lists connection `name`.
    fn newest_state_lists(&self, name: &str) -> bool {
        self.newest_state().is_some_and(|st| {
            st["connections"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["fd"] == name))
        })
    }

    /// Connections that were stored while no stored state listed them.
    pub(crate) fn stored_before_listed(&self) -> &[String] {
        &self.stored_before_listed
    }

    /// Stored state documents whose contents changed after they were stored, by name.
    pub(crate) fn changed_states(&self) -> Vec<String> {
        self.store
            .iter()
            .filter(|s| {
                s.contents_when_stored
                    .as_ref()
                    .is_some_and(|c| *c != read_all(&s.fd))
            })
            .map(|s| s.name.clone())
            .collect()
    }

    /// The stored state document as JSON, if one is stored and it parses (the daemon may be
    /// rewriting it right now; poll).
    pub(crate) fn state(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.state_bytes()?).ok()
    }

    /// Every notification so far, one per line, for failure messages.
    pub(crate) fn transcript(&self) -> String {
        self.messages
            .iter()
            .map(|m| format!("  pid {:?}: {:?} (+{} fds)\n", m.pid, m.text, m.fds))
            .collect()
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.notify_path);
    }
}

/// Whether `name` names a state document in the store.
pub(crate) fn is_state_name(name: &str) -> bool {
    name == "state" || name.starts_with("state-")
}

/// The whole contents of a file (with `pread`, so no file offset moves); empty if it
/// cannot be read.
fn read_all(fd: &OwnedFd) -> Vec<u8> {
    let Ok(copy) = fd.try_clone() else {
        return Vec::new();
    };
    let file = File::from(copy);
    let len = file.metadata().map_or(0, |m| m.len() as usize);
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    buf.truncate(got);
    buf
}

/// `st_dev` and `st_ino` of an fd.
fn file_id(fd: &OwnedFd) -> (u64, u64) {
    // SAFETY: stat is plain data; fstat fills it in for a valid fd.
    let mut st: libc::stat = unsafe { mem::zeroed() };
    // SAFETY: the fd is open and st is a valid out-pointer.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
    (st.st_dev, st.st_ino)
}

/// A daemon started by the [`Supervisor`]; killed (SIGKILL, by PID) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Supervised {
    /// The process (`sh` exec'd into the daemon, same pid).
    child: Child,
    /// Where its stdout goes.
    stdout_path: PathBuf,
    /// Where its stderr goes.
    stderr_path: PathBuf,
    /// For messages.
    command_line: String,
}

impl Supervised {
    /// The daemon's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL by PID, then reap.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for it to exit; its status, or `None` if still running.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        crate::support::wait::poll_until(timeout, || self.child.try_wait().ok().flatten())
    }

    /// What it wrote to stderr so far.
    pub(crate) fn stderr_text(&self) -> String {
        tmp::read_lossy(&self.stderr_path)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- stderr of supervised daemon `{}` (pid {}) ---\n{}--- end of stderr ---",
                self.command_line,
                self.pid(),
                self.stderr_text()
            );
        }
        let _ = std::fs::remove_file(&self.stdout_path);
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}
