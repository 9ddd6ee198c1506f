//! The multi-host network of `cluster`: one namespace holding a bridge (the switch), one
//! namespace per host with a veth link to it and an address in 10.77.0.0/24 that the test
//! assigns, and processes started inside the hosts with `ip netns exec` (which execs, so the
//! PID we hold is the program's). Nothing touches the test runner's own namespace: the
//! subnet exists only behind the switch. Dropping a [`Net`] deletes its namespaces (and
//! with them every veth pair); every process is killed by PID when its handle drops.

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::c_epmd::{run, CmdOutput};
use crate::support::daemon::BIN;
use crate::support::tmp;
use crate::support::wait::poll_until;

/// How long one `ip`/`tc` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `program args` and returns its output.
pub(crate) fn cmd(program: &str, args: &[&str]) -> CmdOutput {
    run(Command::new(program).args(args), IP_TIMEOUT)
}

/// Runs `program args` and panics with its stderr if it fails.
pub(crate) fn cmd_ok(program: &str, args: &[&str]) {
    let out = cmd(program, args);
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}",
        args.join(" "),
        out.stderr_text()
    );
}

/// A switch namespace with a bridge and hosts linked to it.
#[derive(Debug)]
pub(crate) struct Net {
    /// The switch namespace.
    switch: String,
    /// Every host namespace created, in order.
    hosts: Vec<Host>,
}

/// One host: a namespace with `eth0` on the bridge.
#[derive(Clone, Debug)]
pub(crate) struct Host {
    /// The namespace name.
    pub(crate) ns: String,
    /// Its address on the bridge.
    pub(crate) ip: Ipv4Addr,
}

impl Net {
    /// Creates the switch, or prints why namespaces are unavailable and returns `None`.
    pub(crate) fn create(test: &str) -> Option<Net> {
        let prefix = format!("epmdrs-{}-{}", std::process::id(), tmp::unique_id());
        let switch = format!("{prefix}-sw");
        let added = Command::new("ip")
            .args(["netns", "add", &switch])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        match added {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                println!(
                    "SKIPPED {test}: `ip netns add` failed ({}); the multi-host cluster is not \
                     tested. Run the tests as root with iproute2 to test it.",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                return None;
            }
            Err(e) => {
                println!("SKIPPED {test}: no `ip` command ({e}); the cluster is not tested.");
                return None;
            }
        }
        let net = Net {
            switch,
            hosts: Vec::new(),
        };
        cmd_ok(
            "ip",
            &["-n", &net.switch, "link", "add", "br0", "type", "bridge"],
        );
        cmd_ok("ip", &["-n", &net.switch, "link", "set", "br0", "up"]);
        Some(net)
    }

    /// Adds a host namespace with address `10.77.0.<last>/24` on the bridge.
    pub(crate) fn add_host(&mut self, last: u8) -> Host {
        let ns = format!("{}-h{last}", self.switch.trim_end_matches("-sw"));
        cmd_ok("ip", &["netns", "add", &ns]);
        let host = Host {
            ns: ns.clone(),
            ip: Ipv4Addr::new(10, 77, 0, last),
        };
        self.hosts.push(host.clone());
        let port = format!("p{last}");
        let sw = self.switch.as_str();
        cmd_ok(
            "ip",
            &[
                "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ],
        );
        cmd_ok("ip", &["-n", sw, "link", "set", &port, "master", "br0"]);
        cmd_ok("ip", &["-n", sw, "link", "set", &port, "up"]);
        let cidr = format!("{}/24", host.ip);
        cmd_ok("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
        cmd_ok("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        cmd_ok("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        host
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = cmd("ip", &["netns", "del", &h.ns]);
        }
        let _ = cmd("ip", &["netns", "del", &self.switch]);
    }
}

impl Host {
    /// `ip netns exec <ns> <program>` with the epmd variables of the runner removed.
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        for var in [
            "ERL_EPMD_PORT",
            "ERL_EPMD_ADDRESS",
            "ERL_FLAGS",
            "ERL_AFLAGS",
        ] {
            c.env_remove(var);
        }
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    /// Runs `epmd-rs <args>` in this host and waits (bounded) for it to exit.
    pub(crate) fn epmd_rs(&self, args: &[&str], timeout: Duration) -> (CmdOutput, Duration) {
        let started = Instant::now();
        let out = run(self.command(BIN).args(args), timeout);
        (out, started.elapsed())
    }

    /// Whether a TCP connect from inside this host to `addr:port` succeeds within 200 ms
    /// (`bash`'s `/dev/tcp` through `timeout`, so no helper binary is needed).
    pub(crate) fn can_connect(&self, addr: Ipv4Addr, port: u16) -> bool {
        let script = format!("exec 3<>/dev/tcp/{addr}/{port}");
        let out = run(
            self.command("timeout").args(["0.2", "bash", "-c", &script]),
            IP_TIMEOUT,
        );
        out.status.success()
    }

    /// Drops every packet this host sends from TCP port `port` (the SYN-ACKs of a listener
    /// there), so that connecting to it gets no answer rather than a refusal: an HTB root
    /// qdisc whose class 1:20 ends in a zero-length FIFO, and a u32 filter sending source
    /// port `port` into it (no tc action module needed).
    pub(crate) fn drop_source_port(&self, port: u16) {
        let ns = self.ns.as_str();
        let tc = |args: &[&str]| {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            cmd_ok("tc", &all);
        };
        tc(&[
            "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "htb", "default", "10",
        ]);
        for class in ["1:10", "1:20"] {
            tc(&[
                "class", "add", "dev", "eth0", "parent", "1:", "classid", class, "htb", "rate",
                "1gbit", "quantum", "60000",
            ]);
        }
        tc(&[
            "qdisc", "add", "dev", "eth0", "parent", "1:20", "handle", "20:", "pfifo", "limit", "0",
        ]);
        let sport = port.to_string();
        tc(&[
            "filter", "add", "dev", "eth0", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
            "match", "ip", "sport", &sport, "0xffff", "flowid", "1:20",
        ]);
    }
}

/// A process started in a host; killed by PID (and reaped) when dropped. A daemon that
/// handed over to a successor is followed through its pid file.
#[derive(Debug)]
pub(crate) struct NsProc {
    /// What it is, for messages.
    pub(crate) label: String,
    /// The process we spawned.
    child: Child,
    /// stdout and stderr.
    log: PathBuf,
    /// The pid file a daemon keeps, naming its successor after a hand-over.
    pid_file: Option<PathBuf>,
}

impl NsProc {
    /// Spawns `cmd` with its output in a fresh log file.
    pub(crate) fn spawn(label: &str, mut cmd: Command, pid_file: Option<PathBuf>) -> NsProc {
        let log = tmp::unique_path(&format!("{label}.log"));
        let out = tmp::create_log(&log);
        let err = out.try_clone().expect("clone log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label}: {cmd:?}: {e}"));
        NsProc {
            label: label.to_owned(),
            child,
            log,
            pid_file,
        }
    }

    /// Everything it printed so far.
    pub(crate) fn output(&self) -> String {
        tmp::read_lossy(&self.log)
    }

    /// The PID we spawned.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid its pid file names (the current daemon after hand-overs).
    pub(crate) fn current_pid(&self) -> Option<u32> {
        let path = self.pid_file.as_deref()?;
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// Waits (bounded) until a line starting with `tag ` appears; the rest of it.
    pub(crate) fn wait_line(&mut self, tag: &str, timeout: Duration) -> Result<String, String> {
        let prefix = format!("{tag} ");
        let log = self.log.clone();
        let child = &mut self.child;
        let found = poll_until(timeout, || {
            let text = tmp::read_lossy(&log);
            if let Some(l) = text.lines().find_map(|l| l.strip_prefix(&prefix)) {
                return Some(Ok(l.to_owned()));
            }
            match child.try_wait() {
                Ok(Some(status)) => Some(Err(format!("exited with {status}"))),
                _ => None,
            }
        });
        found.unwrap_or_else(|| Err(format!("no `{tag}` line within {timeout:?}")))
    }

    /// Whether the process we spawned is still running (reaps it if not).
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NsProc {
    fn drop(&mut self) {
        if let Some(pid) = self.current_pid() {
            if pid != self.child.id() {
                // SAFETY: kill(2) with a pid read from the daemon's own pid file.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- output of {} (pid {}) ---\n{}--- end ---",
                self.label,
                self.child.id(),
                self.output()
            );
        }
        let _ = std::fs::remove_file(&self.log);
        if let Some(p) = &self.pid_file {
            let _ = std::fs::remove_file(p);
        }
    }
}
