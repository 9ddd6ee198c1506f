//! Installation (issue 4): `make install` / `make uninstall` into a temporary `DESTDIR`
//! (binary, units, man page, completions), and `make install-as-epmd` /
//! `uninstall-as-epmd` on a temporary copy of the erts `bin` directory, through which a
//! real `erl -sname` starts our binary as its epmd and registers with it.
//!
//! make runs from the repository root with `BIN=` the binary under test, so nothing is
//! built; `GEN=` points the generated files at a temporary directory so that concurrent
//! runs never share `target/generated`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::c_epmd::CmdOutput;
use crate::support::daemon::BIN;
use crate::support::erl::{erl_path, unique_name, COOKIE, NODE_READY_TIMEOUT};
use crate::support::ports::free_port;
use crate::support::procnet::{exe_of, listening_pids, runs_executable};
use crate::support::raw::{hex, names, parse_names, parse_port2, port_please};
use crate::support::tmp;
use crate::support::wait::{poll_true, poll_until};
use crate::sysd_support::{assert_success, clean_env, is_alive, run, signal, tool, TempDir};

/// How long one make invocation may take (nothing is compiled).
const MAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The repository root, where the Makefile is.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `make -s <args>` in the repository root.
fn make(args: &[String]) -> CmdOutput {
    let mut cmd = Command::new(tool("make", "make"));
    clean_env(&mut cmd)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .current_dir(repo())
        .arg("-s")
        .args(args);
    run(&mut cmd, MAKE_TIMEOUT)
}

/// Every regular file and symlink under `root`, relative to it.
fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.strip_prefix(root).expect("under root").to_path_buf());
            }
        }
    }
    out
}

/// The files `make install` lays out under a prefix, relative to `DESTDIR`.
fn documented_files(prefix: &str) -> BTreeSet<PathBuf> {
    let p = prefix.trim_start_matches('/');
    [
        "bin/epmd-rs",
        "lib/systemd/system/epmd-rs.service",
        "lib/systemd/system/epmd-rs.socket",
        "share/man/man1/epmd-rs.1",
        "share/bash-completion/completions/epmd-rs",
        "share/zsh/site-functions/_epmd-rs",
        "share/fish/vendor_completions.d/epmd-rs.fish",
    ]
    .iter()
    .map(|f| Path::new(p).join(f))
    .collect()
}

/// Checks one `make install` + `make uninstall` round with `PREFIX` (or the default).
fn install_round(prefix: Option<&str>) {
    let expected_prefix = prefix.unwrap_or("/usr/local");
    let dest = TempDir::new("destdir");
    let gen = TempDir::new("gen");
    let mut vars = vec![
        format!("DESTDIR={}", dest.path().display()),
        format!("BIN={BIN}"),
        format!("GEN={}", gen.join("out").display()),
    ];
    if let Some(p) = prefix {
        vars.push(format!("PREFIX={p}"));
    }
    let install: Vec<String> = std::iter::once("install".to_owned())
        .chain(vars.iter().cloned())
        .collect();
    assert_success("make install", &make(&install));

    let root = dest.join(expected_prefix.trim_start_matches('/'));
    assert_eq!(
        files_under(dest.path()),
        documented_files(expected_prefix),
        "make install {vars:?} laid out other files"
    );

    // The binary: our binary, executable, and it runs.
    let bin = root.join("bin/epmd-rs");
    assert_eq!(
        fs::read(&bin).expect("installed binary"),
        fs::read(BIN).expect("BIN")
    );
    let mode = fs::metadata(&bin).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o755, "mode of {}", bin.display());
    let version = run(Command::new(&bin).arg("--version"), Duration::from_secs(10));
    assert_success("installed epmd-rs --version", &version);
    assert!(version.stdout_text().contains("epmd-rs"));

    // The units: the service runs $(PREFIX)/bin/epmd-rs, the socket is as shipped.
    let units = root.join("lib/systemd/system");
    let service = fs::read_to_string(units.join("epmd-rs.service")).expect("service");
    let shipped = fs::read_to_string(repo().join("systemd/epmd-rs.service")).expect("service");
    let exec_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("ExecStart="))
            .map(str::to_owned)
            .collect()
    };
    let shipped_exec = exec_lines(&shipped);
    assert_eq!(
        shipped_exec.len(),
        1,
        "shipped ExecStart lines: {shipped_exec:?}"
    );
    let args = shipped_exec[0]
        .strip_prefix("ExecStart=/usr/local/bin/epmd-rs")
        .unwrap_or_else(|| {
            panic!(
                "shipped {:?} does not run /usr/local/bin/epmd-rs",
                shipped_exec[0]
            )
        });
    assert_eq!(
        exec_lines(&service),
        vec![format!("ExecStart={expected_prefix}/bin/epmd-rs{args}")],
        "ExecStart of the installed service"
    );
    assert_eq!(
        service,
        shipped.replace(
            "ExecStart=/usr/local/bin/epmd-rs",
            &format!("ExecStart={expected_prefix}/bin/epmd-rs")
        ),
        "the installed service differs from the shipped one beyond ExecStart"
    );
    assert_eq!(
        fs::read(units.join("epmd-rs.socket")).expect("socket"),
        fs::read(repo().join("systemd/epmd-rs.socket")).expect("shipped socket")
    );

    // The man page renders.
    let man = run(
        Command::new(tool("man", "man-db"))
            .arg("-l")
            .arg(root.join("share/man/man1/epmd-rs.1"))
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .env("MANWIDTH", "80"),
        Duration::from_secs(30),
    );
    assert_success("man -l epmd-rs.1", &man);
    let page = man.stdout_text();
    assert!(
        page.contains("epmd-rs") && page.contains("NAME") && page.contains("--daemon"),
        "man -l output:\n{page}"
    );

    // The bash completion loads, registers for epmd-rs and completes an option.
    let bash_file = root.join("share/bash-completion/completions/epmd-rs");
    let script = r#"source "$1" || exit 3
spec=$(complete -p epmd-rs) || exit 4
echo "$spec"
f=$(printf '%s\n' "$spec" | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
COMP_WORDS=(epmd-rs --dae); COMP_CWORD=1; COMP_LINE='epmd-rs --dae'; COMP_POINT=${#COMP_LINE}
"$f" epmd-rs --dae epmd-rs
printf 'REPLY %s\n' "${COMPREPLY[@]}""#;
    let bash = run(
        Command::new(tool("bash", "bash"))
            .args(["-c", script, "bash"])
            .arg(&bash_file),
        Duration::from_secs(30),
    );
    assert_success("loading the bash completion", &bash);
    let text = bash.stdout_text();
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with("complete ") && l.ends_with(" epmd-rs")),
        "complete -p epmd-rs: {text:?}"
    );
    assert!(
        text.lines().any(|l| l == "REPLY --daemon"),
        "bash completion of `epmd-rs --dae`: {text:?}"
    );

    // zsh and fish completions (the shells may be absent): generated for epmd-rs.
    let zsh = fs::read_to_string(root.join("share/zsh/site-functions/_epmd-rs")).expect("zsh");
    assert!(
        zsh.starts_with("#compdef epmd-rs"),
        "zsh completion: {zsh:.80}"
    );
    let fish = fs::read_to_string(root.join("share/fish/vendor_completions.d/epmd-rs.fish"))
        .expect("fish");
    assert!(
        fish.contains("complete -c epmd-rs"),
        "fish completion: {fish:.200}"
    );

    // make uninstall with the same variables removes every file it installed.
    let uninstall: Vec<String> = std::iter::once("uninstall".to_owned())
        .chain(vars.iter().cloned())
        .collect();
    assert_success("make uninstall", &make(&uninstall));
    let left = files_under(dest.path());
    assert!(left.is_empty(), "make uninstall left {left:?}");
}

#[test]
fn make_install_lays_out_the_documented_files_and_uninstall_removes_them() {
    install_round(None);
    install_round(Some("/usr"));
}

/// The `bin` directory of the erts that `erl` runs (where erlexec looks for `epmd`).
fn erts_bin_dir() -> PathBuf {
    let erl = fs::canonicalize(erl_path()).expect("canonical erl");
    // <root>/bin/erl → <root>/erts-<vsn>/bin
    let root = erl
        .parent()
        .and_then(Path::parent)
        .expect("erl lives in <root>/bin")
        .to_path_buf();
    fs::read_dir(&root)
        .expect("read the Erlang root")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("erts-"))
        .map(|e| e.path().join("bin"))
        .find(|bin| bin.join("erlexec").is_file() && bin.join("epmd").is_file())
        .unwrap_or_else(|| panic!("no erts-*/bin with erlexec and epmd in {}", root.display()))
}

/// A stand-in erts `bin` directory in `dir`: the real epmd copied (so that
/// install-as-epmd can move it), everything else symlinked to the real erts.
fn fake_erts_bin(dir: &TempDir) -> (PathBuf, PathBuf) {
    let real = erts_bin_dir();
    let fake = dir.join("erts/bin");
    fs::create_dir_all(&fake).expect("mkdir erts/bin");
    for entry in fs::read_dir(&real).expect("read erts bin").flatten() {
        let name = entry.file_name();
        let target = fake.join(&name);
        if name == "epmd" {
            fs::copy(entry.path(), &target).expect("copy epmd");
        } else {
            std::os::unix::fs::symlink(entry.path(), &target).expect("symlink");
        }
    }
    let root = real
        .parent()
        .and_then(Path::parent)
        .expect("erts dir in root")
        .to_path_buf();
    (fake, root)
}

/// Kills, by PID, every process listening on `port` that runs our binary or a program
/// under `dir` (the copied C epmd, should erl have started that one instead).
struct PortGuard<'a> {
    /// The epmd port.
    port: u16,
    /// The stand-in erts directory.
    dir: &'a Path,
}

impl PortGuard<'_> {
    /// The PIDs this guard would kill.
    fn ours(&self) -> Vec<u32> {
        listening_pids(self.port)
            .into_iter()
            .filter(|&pid| {
                runs_executable(pid, BIN) || exe_of(pid).is_some_and(|e| e.starts_with(self.dir))
            })
            .collect()
    }

    /// Kills them and waits up to 5 s until none is left.
    fn kill(&self) -> bool {
        for pid in self.ours() {
            signal(pid, libc::SIGKILL);
        }
        poll_true(Duration::from_secs(5), || self.ours().is_empty())
    }
}

impl Drop for PortGuard<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A VM started through erlexec; killed by PID (SIGKILL) when dropped.
struct Vm {
    /// erlexec, which execs the VM.
    child: Child,
    /// stdout and stderr.
    output: PathBuf,
}

impl Vm {
    /// The output so far.
    fn text(&self) -> String {
        tmp::read_lossy(&self.output)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- erl output ---\n{}--- end ---", self.text());
        }
        let _ = fs::remove_file(&self.output);
    }
}

#[test]
fn install_as_epmd_makes_erl_start_epmd_rs_and_uninstall_restores_the_c_epmd() {
    let dir = TempDir::new("erts");
    let (bin_dir, root) = fake_erts_bin(&dir);
    let epmd = bin_dir.join("epmd");
    let original = fs::read(&epmd).expect("read copied epmd");
    let our_dir = Path::new(BIN).parent().expect("BIN has a directory");
    let vars = [
        format!("ERTS_EPMD={}", epmd.display()),
        "DIVERT=mv".to_owned(),
        format!("BINDIR={}", our_dir.display()),
    ];
    let with = |target: &str| -> Vec<String> {
        std::iter::once(target.to_owned())
            .chain(vars.iter().cloned())
            .collect()
    };

    assert_success("make install-as-epmd", &make(&with("install-as-epmd")));
    let link = fs::read_link(&epmd).expect("erts epmd is a symlink after install-as-epmd");
    assert_eq!(link, our_dir.join("epmd-rs"));
    let aside = bin_dir.join("epmd.c-epmd");
    assert_eq!(fs::read(&aside).expect("C epmd moved aside"), original);
    // Installing twice is refused, and changes nothing.
    let again = make(&with("install-as-epmd"));
    assert!(
        !again.status.success(),
        "a second install-as-epmd succeeded"
    );
    assert_eq!(fs::read_link(&epmd).expect("still a symlink"), link);

    // A plain `erl -sname` (the erl script's erlexec, with BINDIR at the stand-in) starts
    // `$BINDIR/epmd -daemon`, which is now epmd-rs, and registers with it.
    let port = free_port();
    let guard = PortGuard {
        port,
        dir: dir.path(),
    };
    let name = unique_name("inst");
    let output = tmp::unique_path("erl-as-epmd.out");
    let log = tmp::create_log(&output);
    let mut cmd = Command::new(bin_dir.join("erlexec"));
    clean_env(&mut cmd);
    for var in ["ERL_FLAGS", "ERL_AFLAGS", "ERL_ZFLAGS"] {
        cmd.env_remove(var);
    }
    cmd.env("ROOTDIR", &root)
        .env("BINDIR", &bin_dir)
        .env("EMU", "beam")
        .env("PROGNAME", "erl")
        .env("ERL_EPMD_PORT", port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        // Keep the detached epmd-rs away from /run.
        .env("EPMD_RS_ADMIN_SOCKET", "none")
        .args([
            "-noshell",
            "-noinput",
            "-sname",
            &name,
            "-setcookie",
            COOKIE,
        ])
        .args(["-eval", r#"io:format("EPMDRS_UP ~s~n", [node()])"#])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("clone log"))
        .stderr(log);
    let mut vm = Vm {
        child: cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}")),
        output,
    };
    let up = poll_until(NODE_READY_TIMEOUT, || {
        if vm.text().contains("EPMDRS_UP ") {
            return Some(true);
        }
        matches!(vm.child.try_wait(), Ok(Some(_))).then_some(false)
    });
    assert_eq!(up, Some(true), "the node did not come up:\n{}", vm.text());

    let daemons = listening_pids(port);
    assert!(
        !daemons.is_empty() && daemons.iter().all(|&pid| runs_executable(pid, BIN)),
        "the epmd on {port} is not epmd-rs: {:?}",
        daemons.iter().map(|&p| exe_of(p)).collect::<Vec<_>>()
    );
    assert!(
        !daemons.contains(&vm.child.id()),
        "the VM itself listens on {port}"
    );
    let reply = names(port);
    let (header, entries) = parse_names(&reply);
    assert_eq!(header, u32::from(port), "NAMES: {}", hex(&reply));
    let entry = entries
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} not registered: {entries:?}"));
    let info = parse_port2(&port_please(port, &name)).expect("PORT_PLEASE2 finds the node");
    assert_eq!(info.port, entry.1);

    drop(vm);
    assert!(guard.kill(), "epmd-rs on {port} survived SIGKILL");
    for pid in &daemons {
        assert!(!is_alive(*pid) || !runs_executable(*pid, BIN));
    }

    assert_success("make uninstall-as-epmd", &make(&with("uninstall-as-epmd")));
    let meta = fs::symlink_metadata(&epmd).expect("erts epmd restored");
    assert!(
        meta.file_type().is_file(),
        "erts epmd is not a regular file again"
    );
    assert_eq!(fs::read(&epmd).expect("read restored epmd"), original);
    assert!(!aside.exists(), "{} left behind", aside.display());
    let again = make(&with("uninstall-as-epmd"));
    assert!(
        !again.status.success(),
        "a second uninstall-as-epmd succeeded"
    );
    assert_eq!(fs::read(&epmd).expect("read restored epmd"), original);
}
