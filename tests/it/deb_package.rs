//! The Debian packages (issue 14): `debian/build-debs.sh` builds `epmd-rs` and
//! `epmd-rs-as-epmd` from the binary of this test build (no second build), lintian checks
//! them, and `tests/deb/deb-packages.sh` installs, upgrades, diverts, removes and purges
//! them under a real systemd with the host's real `erl`, in the throwaway container of
//! `tests/real-systemd/run-unit-test.sh` (an overlay of the host's `/` with a tmpfs upper
//! layer: `dpkg -i` inside changes nothing on the host, which the test checks too).
//!
//! Skipped, with a line on stderr, where the machine cannot: the lintian test without
//! dpkg-dev or lintian, the install test without root, `systemd-nspawn`, dpkg-dev or `erl`.
//! `EPMD_RS_SKIP_DEB=1` skips both explicitly.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::c_epmd::CmdOutput;
use crate::support::daemon::BIN;
use crate::sysd_support::{assert_success, run, TempDir};

/// Building both packages twice (the debug binary is stripped and gzipped).
const BUILD_TIMEOUT: Duration = Duration::from_secs(180);
/// lintian on two packages.
const LINTIAN_TIMEOUT: Duration = Duration::from_secs(180);
/// Above the script's own limits (60 s boot, 240 + 30 s test, 30 s teardown).
const RUN_TIMEOUT: Duration = Duration::from_secs(400);

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether `program` is on `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Why the packages cannot be built here, if they cannot.
fn cannot_build() -> Option<String> {
    if std::env::var_os("EPMD_RS_SKIP_DEB").is_some() {
        return Some("EPMD_RS_SKIP_DEB is set".to_owned());
    }
    [
        "dpkg-deb",
        "dpkg-gencontrol",
        "dpkg-shlibdeps",
        "strip",
        "make",
    ]
    .into_iter()
    .find(|t| !on_path(t))
    .map(|t| format!("no {t} (apt-get install dpkg-dev binutils make)"))
}

/// Why the install test cannot run here, if it cannot.
fn cannot_install() -> Option<String> {
    if let Some(why) = cannot_build() {
        return Some(why);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".to_owned());
    }
    if !on_path("systemd-nspawn") {
        return Some("no systemd-nspawn (apt-get install systemd-container)".to_owned());
    }
    if !Path::new("/lib/systemd/systemd").exists() {
        return Some("no /lib/systemd/systemd".to_owned());
    }
    if !on_path("erl") || !on_path("dpkg") {
        return Some("no erl (apt-get install erlang-base)".to_owned());
    }
    None
}

/// The packages of one build: their directory and version.
struct Packages {
    /// The directory with the `.deb` files.
    dir: TempDir,
    /// The version of debian/changelog.
    version: String,
}

/// `debian/build-debs.sh BIN DIR [VERSION]`, gzip-compressed (fast, lintian-clean).
fn build(dir: &Path, version: Option<&str>) -> CmdOutput {
    let mut cmd = Command::new(repo().join("debian/build-debs.sh"));
    cmd.arg(BIN)
        .arg(dir)
        .args(version)
        .env("DEB_COMPRESS", "gzip")
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    let out = run(&mut cmd, BUILD_TIMEOUT);
    assert_success("debian/build-debs.sh", &out);
    out
}

/// Builds the packages at the changelog's version, and at `higher` too if given.
fn build_packages(label: &str, higher: Option<&str>) -> Packages {
    let dir = TempDir::new(label);
    let out = build(dir.path(), None);
    let first = out.stdout_text();
    let version = first
        .lines()
        .next()
        .and_then(|l| l.rsplit('/').next())
        .and_then(|f| f.split('_').nth(1))
        .expect("build-debs.sh prints the package paths")
        .to_owned();
    if let Some(v) = higher {
        build(dir.path(), Some(&format!("{version}{v}")));
    }
    Packages { dir, version }
}

/// What `dpkg -i` in the container must not change on the host: dpkg's database and
/// diversions, the epmd on PATH, and the files the packages install.
fn host_state() -> Vec<(&'static str, Option<(usize, u64)>)> {
    [
        "/var/lib/dpkg/status",
        "/var/lib/dpkg/diversions",
        "/usr/bin/epmd",
        "/usr/bin/epmd-rs",
        "/usr/lib/systemd/system/epmd-rs.socket",
        "/var/lib/epmd-rs-as-epmd/units",
    ]
    .into_iter()
    .map(|f| (f, fs::read(f).ok().map(|b| (b.len(), fnv(&b)))))
    .collect()
}

/// FNV-1a, to compare file contents.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The overrides in `debian/*.lintian-overrides` that no comment line precedes.
fn uncommented_overrides() -> Vec<String> {
    let mut bare = Vec::new();
    for entry in fs::read_dir(repo().join("debian")).expect("read debian/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "lintian-overrides") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("read overrides");
        let mut commented = false;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if line.starts_with('#') {
                commented = true;
            } else {
                if !commented {
                    bare.push(format!("{}: {line}", path.display()));
                }
                commented = false;
            }
        }
    }
    bare
}

#[test]
fn packages_pass_lintian_without_error_or_warning() {
    if let Some(why) = cannot_build().or_else(|| {
        (!on_path("lintian")).then(|| "no lintian (apt-get install lintian)".to_owned())
    }) {
        eprintln!("SKIPPED Debian package lintian test: {why}");
        return;
    }
    let pkgs = build_packages("deb-lintian", None);
    let mut cmd = Command::new("lintian");
    cmd.args(["--fail-on", "error,warning", "-I", "--show-overrides"]);
    for name in fs::read_dir(pkgs.dir.path()).expect("read package dir") {
        cmd.arg(name.expect("entry").path());
    }
    let out = run(&mut cmd, LINTIAN_TIMEOUT);
    let text = out.stdout_text();
    assert!(
        out.status.success()
            && !text
                .lines()
                .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian on the {} packages: {}\n{text}{}",
        pkgs.version,
        out.status,
        out.stderr_text()
    );
    let bare = uncommented_overrides();
    assert!(
        bare.is_empty(),
        "lintian overrides without a comment saying why: {bare:#?}"
    );
    let overrides = text.lines().filter(|l| l.starts_with("O:")).count();
    eprintln!("lintian: no error, no warning; {overrides} overrides, each with its reason");
}

#[test]
fn packages_install_upgrade_without_losing_a_node_replace_epmd_and_purge_cleanly() {
    if let Some(why) = cannot_install() {
        eprintln!("SKIPPED Debian package install test: {why}");
        return;
    }
    let pkgs = build_packages("deb-install", Some("+test.1"));
    let dir = pkgs.dir.path();
    fs::write(dir.join("V1"), &pkgs.version).expect("write V1");
    fs::write(dir.join("V2"), format!("{}+test.1", pkgs.version)).expect("write V2");
    let rs = repo().join("tests/real-systemd");
    let mut cmd = Command::new(rs.join("run-unit-test.sh"));
    for entry in fs::read_dir(dir).expect("read package dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        cmd.arg("--copy")
            .arg(format!("{}:/root/debs/{name}", path.display()));
    }
    for helper in ["lookups.py", "node-loop.erl"] {
        cmd.arg("--copy").arg(format!(
            "{}:/usr/local/lib/epmd-rs-test/{helper}",
            rs.join(helper).display()
        ));
    }
    cmd.arg("--test")
        .arg(repo().join("tests/deb/deb-packages.sh"));
    cmd.args(["--timeout", "240"]);
    let before = host_state();
    let out = run(&mut cmd, RUN_TIMEOUT);
    let stdout = out.stdout_text();
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        out.status.success() && failed.is_empty() && stdout.contains("deb-packages: PASS"),
        "the package test failed ({}): {failed:#?}\n--- stdout ---\n{stdout}--- stderr ---\n{}--- end ---",
        out.status,
        out.stderr_text()
    );
    assert_eq!(
        host_state(),
        before,
        "installing in the container changed the host"
    );
    for figure in stdout.lines().filter(|l| l.starts_with("FIGURE")) {
        eprintln!("{figure}");
    }
}
