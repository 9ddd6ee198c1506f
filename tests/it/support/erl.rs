//! Real Erlang/OTP nodes registered with the daemon under test.
//!
//! Nodes run `erl -noshell -noinput -start_epmd false <-sname|-name> NAME -setcookie
//! epmdrstest ...` with `ERL_EPMD_PORT` set to the daemon's port, so they register with our
//! daemon and never start an epmd of their own. A long-running node ([`ErlNode`]) is
//! started with an `-eval` that prints one `EPMDRS_READY <node> <dist port>` line once
//! distribution is up; since `erl` registers with epmd before it evaluates `-eval`, that
//! line also means the registration succeeded. Tests run Erlang code through short-lived
//! probe nodes ([`probe`]), which may `rpc:call` into the long-running ones and print what
//! the test parses. Output goes to files; every node is killed by PID when dropped.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::c_epmd::find_on_path;
use super::tmp;
use super::wait::poll_until;

/// The cookie shared by every node of the suite.
pub(crate) const COOKIE: &str = "epmdrstest";

/// How long a node may take to start distribution and register.
pub(crate) const NODE_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a probe node may take from start to `halt`.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The line prefix a long-running node prints once it is registered.
const READY_MARKER: &str = "EPMDRS_READY";

/// The line prefix a probe prints when its body raised an exception.
const PROBE_FAILED_MARKER: &str = "EPMDRS_PROBE_FAILED";

/// Variables of the test runner's environment that would change how `erl` and epmd behave;
/// removed so that only what a test sets applies.
const ERL_ENV_VARS: [&str; 8] = [
    "ERL_EPMD_PORT",
    "ERL_EPMD_ADDRESS",
    "ERL_EPMD_RELAXED_COMMAND_CHECK",
    "ERL_EPMD_DIST_HIGH",
    "ERL_EPMD_DIST_LOW",
    "ERL_FLAGS",
    "ERL_AFLAGS",
    "ERL_ZFLAGS",
];

/// The `-eval` of a long-running node: find the distribution listen socket (the only
/// listening `tcp_inet` port of a fresh node) and print the ready line.
const READY_EVAL: &str = r#"DistPort = hd([P || S <- erlang:ports(), erlang:port_info(S, name) =:= {name, "tcp_inet"}, {ok, St} <- [prim_inet:getstatus(S)], lists:member(listen, St), {ok, {_, P}} <- [inet:sockname(S)]]), io:format("EPMDRS_READY ~s ~b~n", [node(), DistPort])"#;

/// The `erl` program on `PATH`. Panics if there is none (Debian's erlang-base provides it).
pub(crate) fn erl_path() -> PathBuf {
    find_on_path("erl").expect("`erl` not found on PATH (install Debian's erlang-base)")
}

/// A node name that no other test of this run uses: `<prefix><test pid>x<counter>`.
pub(crate) fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), tmp::unique_id())
}

/// An Erlang atom literal for `text` (single-quoted), for building probe bodies.
pub(crate) fn atom(text: &str) -> String {
    assert!(
        !text.contains(['\'', '\\']),
        "atom text needs escaping: {text:?}"
    );
    format!("'{text}'")
}

/// The rest of each output line that starts with `<tag> `, in order.
pub(crate) fn tagged_lines(output: &str, tag: &str) -> Vec<String> {
    let prefix = format!("{tag} ");
    output
        .lines()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Builds the command line of an `erl` node.
#[derive(Clone, Debug)]
pub(crate) struct ErlCommand {
    /// Passed as `ERL_EPMD_PORT`.
    epmd_port: u16,
    /// `-sname` or `-name`.
    name_flag: String,
    /// The value after the name flag.
    name: String,
    /// Extra arguments, after the cookie.
    args: Vec<OsString>,
    /// Extra environment variables.
    envs: Vec<(OsString, OsString)>,
    /// Whether to leave out `-start_epmd false`.
    start_epmd: bool,
}

impl ErlCommand {
    /// `erl -noshell -noinput -start_epmd false <name_flag> <name> -setcookie epmdrstest`
    /// with `ERL_EPMD_PORT=<epmd_port>`.
    pub(crate) fn new(epmd_port: u16, name_flag: &str, name: &str) -> Self {
        Self {
            epmd_port,
            name_flag: name_flag.to_owned(),
            name: name.to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            start_epmd: false,
        }
    }

    /// Appends one argument (after the cookie).
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub(crate) fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for `erl` (and so for any epmd it starts).
    pub(crate) fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// With `true`, leaves out `-start_epmd false`, so that erlexec runs `epmd -daemon` (or
    /// the `-epmd` program) before the VM starts.
    pub(crate) fn start_epmd(mut self, start: bool) -> Self {
        self.start_epmd = start;
        self
    }

    /// The `erl` command, with `-eval <eval>` appended when given.
    fn command(&self, eval: Option<&str>) -> Command {
        let mut cmd = Command::new(erl_path());
        for var in ERL_ENV_VARS {
            cmd.env_remove(var);
        }
        cmd.env("ERL_EPMD_PORT", self.epmd_port.to_string());
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.args(["-noshell", "-noinput"]);
        if !self.start_epmd {
            cmd.args(["-start_epmd", "false"]);
        }
        cmd.args([&self.name_flag, &self.name, "-setcookie", COOKIE]);
        cmd.args(&self.args);
        if let Some(eval) = eval {
            cmd.args(["-eval", eval]);
        }
        cmd
    }

    /// Spawns `cmd` with stdin closed and stdout+stderr appended to one fresh file.
    fn spawn_logged(cmd: &mut Command, label: &str) -> (Child, PathBuf, String) {
        let output_path = tmp::unique_path(label);
        let log = tmp::create_log(&output_path);
        let log2 = log.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let command_line = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command_line}: {e}"));
        (child, output_path, command_line)
    }

    /// Spawns a long-running node that prints its ready line once registered, without
    /// waiting; see [`ErlNode::wait_ready`].
    pub(crate) fn spawn(self) -> ErlNode {
        let mut cmd = self.command(Some(READY_EVAL));
        let (child, output_path, command_line) = Self::spawn_logged(&mut cmd, "erl.out");
        let epmd_name = self
            .name
            .split_once('@')
            .map_or(self.name.as_str(), |(alive, _)| alive)
            .to_owned();
        ErlNode {
            child,
            epmd_name,
            node: None,
            dist_port: None,
            output_path,
            command_line,
            reported: false,
        }
    }

    /// Spawns a long-running node and waits up to [`NODE_READY_TIMEOUT`] until it is
    /// registered. Panics, with the node's output, if it exits or times out first.
    pub(crate) fn start(self) -> ErlNode {
        let mut node = self.spawn();
        if let Err(why) = node.wait_ready(NODE_READY_TIMEOUT) {
            node.reported = true;
            panic!(
                "erl node did not become ready: {why}\n{}\n--- output ---\n{}--- end of output ---",
                node.command_line,
                node.output_text()
            );
        }
        node
    }

    /// Runs `erl` (with no `-eval` of ours) until it exits, for at most `timeout`; the node
    /// is killed and the test panics at the deadline.
    pub(crate) fn run(self, timeout: Duration) -> ErlRun {
        let mut cmd = self.command(None);
        let (mut child, output_path, command_line) = Self::spawn_logged(&mut cmd, "erl-run.out");
        let status = poll_until(timeout, || child.try_wait().ok().flatten());
        let output = tmp::read_lossy(&output_path);
        let _ = fs::remove_file(&output_path);
        match status {
            Some(status) => ErlRun { status, output },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{command_line} still running after {timeout:?}\n--- output ---\n{output}--- end of output ---"
                );
            }
        }
    }
}

/// The result of an `erl` run to completion.
#[derive(Debug)]
pub(crate) struct ErlRun {
    /// How it exited.
    pub(crate) status: ExitStatus,
    /// stdout and stderr, interleaved as written.
    pub(crate) output: String,
}

/// A long-running Erlang node. Dropping it kills the VM by PID (SIGKILL) and reaps it.
#[derive(Debug)]
pub(crate) struct ErlNode {
    /// The `erl` process (erlexec execs the VM, so this PID is the VM's).
    child: Child,
    /// The name epmd stores: the part of the node name before `@`.
    epmd_name: String,
    /// `name@host` as the node reported it; set once ready.
    node: Option<String>,
    /// The distribution listen port the node reported; set once ready.
    dist_port: Option<u16>,
    /// Where stdout and stderr go.
    output_path: PathBuf,
    /// The command, for messages.
    command_line: String,
    /// Whether a panic message already included the output.
    reported: bool,
}

impl ErlNode {
    /// Starts `erl ... <name_flag> <name> <extra_args>` against the daemon on `epmd_port` and
    /// waits until it is registered. `name_flag` is `-sname` or `-name`.
    pub(crate) fn start(
        epmd_port: u16,
        name_flag: &str,
        name: &str,
        extra_args: &[&str],
    ) -> ErlNode {
        ErlCommand::new(epmd_port, name_flag, name)
            .args(extra_args)
            .start()
    }

    /// Waits up to `timeout` for the ready line; an error describes why it did not come.
    pub(crate) fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let path = self.output_path.clone();
        let child = &mut self.child;
        let outcome = poll_until(timeout, || {
            let output = tmp::read_lossy(&path);
            if let Some(line) = tagged_lines(&output, READY_MARKER).into_iter().next() {
                return Some(Ok(line));
            }
            match child.try_wait() {
                Ok(Some(status)) => Some(Err(format!("erl exited with {status}"))),
                _ => None,
            }
        });
        let line = match outcome {
            Some(result) => result?,
            None => return Err(format!("no ready line within {timeout:?}")),
        };
        let (node, port) = line
            .split_once(' ')
            .ok_or_else(|| format!("bad ready line {line:?}"))?;
        self.dist_port = Some(
            port.parse()
                .map_err(|_| format!("bad ready line {line:?}"))?,
        );
        self.node = Some(node.to_owned());
        Ok(())
    }

    /// The full node name (`name@host`) as the node reports it. Panics before it is ready.
    pub(crate) fn node(&self) -> &str {
        self.node.as_deref().expect("node not ready yet")
    }

    /// The name the node registers with epmd: the part of its name before `@`.
    pub(crate) fn name(&self) -> &str {
        &self.epmd_name
    }

    /// The node's distribution listen port. Panics before it is ready.
    pub(crate) fn dist_port(&self) -> u16 {
        self.dist_port.expect("node not ready yet")
    }

    /// The VM's process ID.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the VM is still running (reaps it if it has exited).
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGKILL to the VM's PID and reaps it. Harmless if it already exited.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the VM to exit; its status, or `None` if still running.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll_until(timeout, || self.child.try_wait().ok().flatten())
    }

    /// Everything the node printed so far (stdout and stderr, lossy UTF-8).
    pub(crate) fn output_text(&self) -> String {
        tmp::read_lossy(&self.output_path)
    }
}

impl Drop for ErlNode {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() && !self.reported {
            eprintln!(
                "--- output of erl node {} (pid {}) ---\n{}--- end of output ---",
                self.epmd_name,
                self.pid(),
                self.output_text()
            );
        }
        let _ = fs::remove_file(&self.output_path);
    }
}

/// Runs `body` on a short-lived hidden `-sname` probe node registered with the daemon on
/// `epmd_port` and returns its output. See [`probe_with`].
pub(crate) fn probe(epmd_port: u16, body: &str) -> String {
    probe_with(epmd_port, "-sname", body)
}

/// Runs `body` on a short-lived hidden probe node (`-sname probe..` or, with `-name`,
/// `-name probe..@127.0.0.1`) and returns its output.
///
/// `body` is a sequence of Erlang expressions without a final period; it prints what the
/// test needs with `io:format`, one tagged line per fact (see [`tagged_lines`]). The
/// probe halts with status 0 after it. Panics, with the output, if the body raises, the
/// probe fails to start, or it runs longer than [`PROBE_TIMEOUT`].
pub(crate) fn probe_with(epmd_port: u16, name_flag: &str, body: &str) -> String {
    let name = match name_flag {
        "-name" => format!("{}@127.0.0.1", unique_name("probe")),
        _ => unique_name("probe"),
    };
    let eval = format!(
        "try {body} catch C:R:S -> io:format(\"{PROBE_FAILED_MARKER} ~p~n\", [{{C, R, S}}]), halt(2) end, halt(0)"
    );
    let run = ErlCommand::new(epmd_port, name_flag, &name)
        .args(["-hidden", "-eval", &eval])
        .run(PROBE_TIMEOUT);
    assert!(
        run.status.success(),
        "probe {name} failed with {}\n--- body ---\n{body}\n--- output ---\n{}--- end of output ---",
        run.status,
        run.output
    );
    run.output
}
