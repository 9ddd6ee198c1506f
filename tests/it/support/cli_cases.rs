//! The command-line cases of the differential test, generated from the C epmd's flag
//! grammar (spec §7.1): every flag with every kind of value (missing, empty, not a
//! number, negative, 0, huge, trailing junk, given twice equal and different), the client
//! commands in every position, unknown flags, and each `ERL_EPMD_*` variable alone, empty,
//! junk and against its flag; in client mode (against no daemon, an empty one and one
//! holding nodes) and in daemon mode.
//!
//! Arguments and values may hold placeholders, replaced per side: `{P}` is the port of
//! that side's daemon (client mode) or a free port (daemon mode), `{NEG}` is `{P}` − 65536
//! and `{HUGE}` is `{P}` + 1000·2³², both of which C's `atoi` and the `u16` bind wrap to
//! `{P}`.

/// The daemon a client-mode case talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Context {
    /// Nothing listens on the port.
    NoDaemon,
    /// A daemon with no registered node.
    Empty,
    /// A daemon (strict command check) holding two registered nodes.
    WithNodes,
}

/// Client mode (a client command against a context) or daemon mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The program runs as a client (or fails to parse) against this context.
    Client(Context),
    /// The program is started as a daemon on a free port.
    Daemon,
}

/// One command line with its environment.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    /// The arguments (with placeholders).
    pub(crate) args: Vec<String>,
    /// Environment variables set for the run (with placeholders).
    pub(crate) env: Vec<(String, String)>,
    /// How it runs.
    pub(crate) mode: Mode,
    /// The key of docs/PROTOCOL.md's table when the outputs may differ on purpose.
    pub(crate) deliberate: Option<&'static str>,
}

impl Case {
    fn new(mode: Mode, args: &[&str]) -> Case {
        Case {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            mode,
            deliberate: None,
        }
    }

    fn env(mut self, key: &str, value: &str) -> Case {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn deliberate(mut self, key: &'static str) -> Case {
        self.deliberate = Some(key);
        self
    }

    /// The arguments with the placeholders filled in for `port`.
    pub(crate) fn render_args(&self, port: u16) -> Vec<String> {
        self.args.iter().map(|a| render(a, port)).collect()
    }

    /// The environment with the placeholders filled in for `port`.
    pub(crate) fn render_env(&self, port: u16) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|(k, v)| (k.clone(), render(v, port)))
            .collect()
    }

    /// A one-line description: `VAR=value ... args [mode]`.
    pub(crate) fn describe(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let args: Vec<String> = self.args.iter().map(|a| format!("{a:?}")).collect();
        format!(
            "{} epmd {} [{:?}]",
            env.join(" "),
            args.join(" "),
            self.mode
        )
    }
}

/// `text` with `{P}`, `{NEG}` and `{HUGE}` replaced for `port`.
fn render(text: &str, port: u16) -> String {
    let p = i64::from(port);
    text.replace("{P}", &p.to_string())
        .replace("{NEG}", &(p - 65536).to_string())
        .replace("{HUGE}", &(p + 1000 * (1i64 << 32)).to_string())
}

/// The valued flags and, for each, the values tried; each value list covers missing
/// (handled separately), empty, not a number, negative, 0, huge, trailing junk.
const TIMING_FLAGS: [&str; 3] = ["-packet_timeout", "-delay_accept", "-delay_write"];

/// Values of the timing flags (all but the valid ones are usage errors in any mode).
const TIMING_VALUES: [&str; 9] = [
    "",
    "abc",
    "-5",
    "0",
    "99999999999999999999",
    "-99999999999999999999",
    "5x",
    " 7",
    "4294967296",
];

/// Values of `-port` in client mode.
const PORT_VALUES: [&str; 11] = [
    "",
    "abc",
    "-5",
    "0",
    "99999999999999999999",
    "-99999999999999999999",
    "{P}x",
    "{NEG}",
    "{HUGE}",
    " {P}",
    "+{P}",
];

/// Values of `-address` (in client mode the client ignores them).
const ADDRESS_VALUES: [&str; 8] = [
    "",
    "abc",
    "-5",
    "0",
    "99999999999999999999",
    "127.0.0.1x",
    "127.0.0.1,::1",
    " , ,",
];

/// The switches.
const SWITCHES: [&str; 5] = [
    "-d",
    "-debug",
    "-daemon",
    "-relaxed_command_check",
    "-systemd",
];

/// Every client command, with `-stop`'s name.
const COMMANDS: [&[&str]; 6] = [
    &["-names"],
    &["-dump"],
    &["-started"],
    &["-kill"],
    &["-stop", "nosuch"],
    &["-stop", "node1"],
];

/// Arguments the C epmd does not know.
const UNKNOWN: [&str; 10] = [
    "-h", "-help", "-x", "-", "-Port", "-names2", "stray", "-port=5", "-D", "-dd",
];

/// Every client-mode case.
pub(crate) fn client_cases() -> Vec<Case> {
    use Context::*;
    let mut out = Vec::new();
    let c = |ctx| Mode::Client(ctx);
    // Each command against each context, with -port and with ERL_EPMD_PORT.
    for ctx in [NoDaemon, Empty, WithNodes] {
        for cmd in COMMANDS {
            let mut args = vec!["-port", "{P}"];
            args.extend_from_slice(cmd);
            out.push(Case::new(c(ctx), &args));
            out.push(Case::new(c(ctx), cmd).env("ERL_EPMD_PORT", "{P}"));
        }
    }
    // Client commands in every position, and two of them.
    for cmd in COMMANDS {
        let name = cmd.get(1).copied();
        for ctx in [Empty, WithNodes] {
            let mut before = cmd.to_vec();
            before.extend(["-port", "{P}"]);
            out.push(Case::new(c(ctx), &before));
            let mut middle = vec!["-port", "{P}"];
            middle.extend_from_slice(cmd);
            middle.push("-d");
            out.push(Case::new(c(ctx), &middle));
            let mut debug_first = vec!["-d", "-port", "{P}"];
            debug_first.extend_from_slice(cmd);
            out.push(Case::new(c(ctx), &debug_first));
        }
        let mut twice = vec!["-port", "{P}"];
        twice.extend_from_slice(cmd);
        twice.push("-names");
        out.push(Case::new(c(Empty), &twice));
        if let Some(name) = name {
            out.push(Case::new(c(Empty), &["-port", "{P}", "-stop"]));
            out.push(Case::new(c(Empty), &["-port", "{P}", "-stop", name, "x"]));
        }
    }
    // -port: every kind of value, missing, and twice.
    for v in PORT_VALUES {
        for cmd in [&["-names"][..], &["-kill"]] {
            let mut args = vec!["-port", v];
            args.extend_from_slice(cmd);
            out.push(Case::new(c(WithNodes), &args));
        }
        out.push(Case::new(c(NoDaemon), &["-port", v, "-started"]));
    }
    out.push(Case::new(c(Empty), &["-names", "-port"]));
    out.push(Case::new(c(Empty), &["-port"]));
    out.push(Case::new(c(Empty), &["-port", "-names"]));
    out.push(Case::new(
        c(Empty),
        &["-port", "{P}", "-port", "{P}", "-names"],
    ));
    out.push(Case::new(
        c(Empty),
        &["-port", "1", "-port", "{P}", "-names"],
    ));
    out.push(Case::new(
        c(Empty),
        &["-port", "{P}", "-port", "1", "-names"],
    ));
    out.push(Case::new(
        c(Empty),
        &["-port", "0", "-port", "{P}", "-names"],
    ));
    out.push(Case::new(
        c(WithNodes),
        &["-port", "{P}", "-d", "-port", "{P}", "-dump"],
    ));
    // The timing flags: every value, missing, twice; before -names and -started.
    for flag in TIMING_FLAGS {
        for v in TIMING_VALUES {
            out.push(Case::new(c(Empty), &["-port", "{P}", flag, v, "-names"]));
            out.push(Case::new(
                c(NoDaemon),
                &[flag, v, "-port", "{P}", "-started"],
            ));
        }
        out.push(Case::new(c(Empty), &["-port", "{P}", flag]));
        out.push(Case::new(c(Empty), &["-port", "{P}", flag, "-names"]));
        for (a, b) in [("5", "5"), ("5", "7"), ("0", "5"), ("5", "0"), ("abc", "5")] {
            out.push(Case::new(
                c(Empty),
                &["-port", "{P}", flag, a, flag, b, "-names"],
            ));
        }
    }
    // -address: ignored by the client whatever its value, but its value is required.
    for v in ADDRESS_VALUES {
        out.push(Case::new(
            c(WithNodes),
            &["-port", "{P}", "-address", v, "-names"],
        ));
    }
    out.push(Case::new(c(Empty), &["-port", "{P}", "-address"]));
    out.push(Case::new(
        c(Empty),
        &["-address", "a", "-address", "b", "-port", "{P}", "-names"],
    ));
    // The switches, once and twice, before a command.
    for s in SWITCHES {
        out.push(Case::new(c(Empty), &[s, "-port", "{P}", "-names"]));
        out.push(Case::new(c(WithNodes), &[s, s, "-port", "{P}", "-dump"]));
        out.push(Case::new(c(NoDaemon), &["-port", "{P}", s, "-started"]));
    }
    // Unknown flags alone and before a command.
    for u in UNKNOWN {
        out.push(Case::new(c(Empty), &[u]));
        out.push(Case::new(c(Empty), &[u, "-names"]));
        out.push(Case::new(c(Empty), &["-port", "{P}", u, "-names"]));
    }
    // The environment: alone, empty, junk, against the flag.
    for (v, ctx) in [
        ("{P}", Empty),
        ("", NoDaemon),
        ("junk", NoDaemon),
        ("{P}junk", WithNodes),
        ("{NEG}", Empty),
        ("0", NoDaemon),
    ] {
        out.push(Case::new(c(ctx), &["-names"]).env("ERL_EPMD_PORT", v));
        out.push(Case::new(c(ctx), &["-kill"]).env("ERL_EPMD_PORT", v));
    }
    out.push(Case::new(c(Empty), &["-port", "{P}", "-names"]).env("ERL_EPMD_PORT", "1"));
    out.push(Case::new(c(Empty), &["-port", "1", "-names"]).env("ERL_EPMD_PORT", "{P}"));
    out.push(Case::new(c(Empty), &["-port", "0", "-names"]).env("ERL_EPMD_PORT", "{P}"));
    for v in ["127.0.0.1", "", "junk"] {
        out.push(Case::new(c(WithNodes), &["-port", "{P}", "-names"]).env("ERL_EPMD_ADDRESS", v));
        out.push(
            Case::new(c(WithNodes), &["-port", "{P}", "-address", "x", "-names"])
                .env("ERL_EPMD_ADDRESS", v),
        );
        out.push(
            Case::new(c(WithNodes), &["-port", "{P}", "-kill"])
                .env("ERL_EPMD_RELAXED_COMMAND_CHECK", v),
        );
        out.push(
            Case::new(
                c(WithNodes),
                &["-port", "{P}", "-relaxed_command_check", "-stop", "nosuch"],
            )
            .env("ERL_EPMD_RELAXED_COMMAND_CHECK", v),
        );
    }
    // The modern spellings and subcommands of epmd-rs (the C epmd prints its usage).
    for args in [
        &["--port", "{P}", "--names"][..],
        &["-port", "{P}", "--dump"],
        &["--help"],
        &["--version"],
        &["help"],
        &["--names", "--kill"],
    ] {
        out.push(Case::new(c(Empty), args).deliberate("long-spellings"));
    }
    out
}

/// Every daemon-mode case. Each listens on loopback addresses only: `-address` or
/// `ERL_EPMD_ADDRESS` is always given (the runner adds `ERL_EPMD_ADDRESS=127.0.0.1`
/// unless the case sets an address), and values that would bind a wildcard or a fixed
/// port are left to client mode.
pub(crate) fn daemon_cases() -> Vec<Case> {
    let d = Mode::Daemon;
    let mut out = Vec::new();
    let base = ["-port", "{P}"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let case = |args: Vec<String>| Case {
        args,
        env: Vec::new(),
        mode: Mode::Daemon,
        deliberate: None,
    };
    out.push(case(with(&[])));
    // -port: values that wrap to the free port, junk, twice, missing.
    for v in [
        "{P}x",
        "{NEG}",
        "{HUGE}",
        " {P}",
        "+{P}",
        "",
        "abc",
        "0",
        "-99999999999999999999",
    ] {
        out.push(Case::new(d, &["-port", v]));
    }
    out.push(Case::new(d, &["-port"]));
    out.push(Case::new(d, &["-port", "1", "-port", "{P}"]));
    out.push(Case::new(d, &["-port", "{P}", "-port", "{P}"]));
    out.push(Case::new(d, &["-port", "0", "-port", "{P}"]));
    out.push(Case::new(
        d,
        &[
            "-packet_timeout",
            "1",
            "-port",
            "{P}",
            "-packet_timeout",
            "10",
        ],
    ));
    // The timing flags: every value (invalid ones are usage errors), twice.
    // (A negative delay, as `atoi` makes of a value past 2^63, is left to client mode:
    // the C epmd sleeps (unsigned) seconds, ~136 years; see `delay-flags`.)
    for flag in TIMING_FLAGS {
        for v in ["", "abc", "0", "5x", "4294967296"] {
            out.push(case(with(&[flag, v])));
        }
        out.push(case(with(&[flag])));
        out.push(case(with(&[flag, "0", flag, "5"])));
        out.push(case(with(&[flag, "5", flag, "0"])));
    }
    out.push(case(with(&["-packet_timeout", "-5"])));
    out.push(case(with(&["-packet_timeout", "99999999999999999999"])));
    out.push(case(with(&[
        "-packet_timeout",
        "3",
        "-packet_timeout",
        "3",
    ])));
    out.push(case(with(&["-delay_accept", "1", "-delay_accept", "1"])));
    out.push(case(with(&["-delay_write", "1", "-delay_write", "1"])));
    // -address: every kind of value, twice, duplicates.
    for v in [
        "abc",
        "-5",
        "0",
        "99999999999999999999",
        "127.0.0.1x",
        "127.0.0.2",
        "127.0.0.1,::1",
        "::1",
        "127.0.0.2 127.0.0.3",
    ] {
        out.push(case(with(&["-address", v])));
    }
    out.push(case(with(&["-address"])));
    out.push(case(with(&[
        "-address",
        "127.0.0.3",
        "-address",
        "127.0.0.2",
    ])));
    out.push(case(with(&[
        "-address",
        "127.0.0.2",
        "-address",
        "127.0.0.2",
    ])));
    out.push(case(with(&["-address", "junk", "-address", "127.0.0.2"])));
    out.push(case(with(&["-address", "127.0.0.2,127.0.0.2"])).deliberate("address-duplicate"));
    // The switches, once and twice.
    for s in SWITCHES {
        out.push(case(with(&[s])));
        out.push(case(with(&[s, s])));
    }
    out.push(case(with(&["-d", "-debug", "-d"])));
    // The environment: alone, empty, junk, against the flag.
    out.push(Case::new(d, &[]).env("ERL_EPMD_PORT", "{P}"));
    out.push(Case::new(d, &[]).env("ERL_EPMD_PORT", "{P}junk"));
    out.push(Case::new(d, &[]).env("ERL_EPMD_PORT", "junk"));
    out.push(Case::new(d, &[]).env("ERL_EPMD_PORT", ""));
    out.push(case(with(&[])).env("ERL_EPMD_PORT", "junk"));
    out.push(Case::new(d, &["-port", "1", "-port", "{P}"]).env("ERL_EPMD_PORT", "1"));
    for v in ["127.0.0.2", "junk", "127.0.0.2,127.0.0.3"] {
        out.push(case(with(&[])).env("ERL_EPMD_ADDRESS", v));
    }
    out.push(case(with(&["-address", "127.0.0.3"])).env("ERL_EPMD_ADDRESS", "127.0.0.2"));
    out.push(case(with(&["-address", "127.0.0.3"])).env("ERL_EPMD_ADDRESS", "junk"));
    for v in ["", "0", "junk", "yes"] {
        out.push(case(with(&[])).env("ERL_EPMD_RELAXED_COMMAND_CHECK", v));
        out.push(case(with(&["-relaxed_command_check"])).env("ERL_EPMD_RELAXED_COMMAND_CHECK", v));
    }
    // Unknown flags start nothing.
    for u in UNKNOWN {
        out.push(case(with(&[u])));
    }
    out
}
