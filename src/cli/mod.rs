//! The command line: argv → ([`legacy`] rewrite) → clap [`Cli`] → validated [`Config`] →
//! [`Action`]. No sockets here.

pub mod config;
pub mod legacy;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admin::View;

/// The usage text of the C epmd, printed to stderr (exit 1) for `-h` and every usage error.
pub const EPMD_USAGE: &[u8] = include_bytes!("usage.txt");

/// epmd-rs: a drop-in replacement for Erlang's EPMD (Erlang Port Mapper Daemon).
///
/// Without a client option it runs the daemon. epmd's single-dash spellings (`-port 4369`,
/// `-names`, `-relaxed_command_check`) are accepted too.
#[derive(Parser, Debug, Default, PartialEq, Eq)]
// `args_override_self`: like the C epmd, a flag given again replaces its earlier value
// (`-port 1 -port 2` is port 2); `-d` still counts up.
#[command(
    name = "epmd-rs",
    version,
    about,
    long_about = None,
    args_override_self = true
)]
pub struct Cli {
    /// Port to listen on and to query [default: $ERL_EPMD_PORT or 4369].
    #[arg(long, value_name = "PORT", allow_hyphen_values = true)]
    pub port: Option<String>,

    /// Listen only on these addresses (comma- or space-separated) and on the loopback
    /// interface [default: $ERL_EPMD_ADDRESS, else every interface].
    #[arg(long, value_name = "LIST")]
    pub address: Option<String>,

    /// Raise the log level (repeatable); also shortens the list of remembered old names to 5.
    #[arg(short = 'd', long = "debug", action = clap::ArgAction::Count)]
    pub debug: u8,

    /// Detach and run in the background once the listening sockets are bound.
    #[arg(long)]
    pub daemon: bool,

    /// Allow KILL with registered nodes, and STOP [also: $ERL_EPMD_RELAXED_COMMAND_CHECK].
    #[arg(long = "relaxed-command-check")]
    pub relaxed_command_check: bool,

    /// Seconds a request may take from accept to reply before the connection is closed
    /// [default: 60].
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub packet_timeout: Option<String>,

    /// Seconds to wait before reading a newly accepted connection (busy-server simulation).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub delay_accept: Option<String>,

    /// Seconds to wait before writing each reply (busy-server simulation).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub delay_write: Option<String>,

    /// Take the listening sockets from systemd socket activation.
    #[arg(long)]
    pub systemd: bool,

    /// Client: list the names registered with the running epmd.
    #[arg(long, group = "client")]
    pub names: bool,

    /// Client: dump the running epmd's registered and old names.
    #[arg(long, group = "client")]
    pub dump: bool,

    /// Client: exit 0 if an epmd answers, 1 otherwise, printing nothing.
    #[arg(long, group = "client")]
    pub started: bool,

    /// Client: ask the running epmd to exit.
    #[arg(long, group = "client")]
    pub kill: bool,

    /// Client: forcibly unregister NAME (needs a relaxed command check in the daemon).
    #[arg(
        long,
        value_name = "NAME",
        group = "client",
        allow_hyphen_values = true
    )]
    pub stop: Option<String>,

    /// Path of the admin Unix socket [default: $RUNTIME_DIRECTORY, /run/epmd-rs (root) or
    /// $XDG_RUNTIME_DIR/epmd-rs, then admin-PORT.sock; `none` disables it].
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,

    /// Group allowed to use the admin socket (mode 0660 instead of 0600).
    #[arg(long, value_name = "GROUP")]
    pub admin_group: Option<String>,

    /// Who may send NAMES: `any` (default, as epmd), `local`, or CIDR blocks
    /// (comma-separated, e.g. `local,10.0.0.0/8`) [env: EPMD_RS_NAMES_ALLOW].
    #[arg(long, value_name = "RULES")]
    pub names_allow: Option<String>,

    /// Who may send PORT_PLEASE2 (look nodes up): `any` (default), `local`, or CIDR blocks
    /// [env: EPMD_RS_PORT_PLEASE_ALLOW].
    #[arg(long, value_name = "RULES")]
    pub port_please_allow: Option<String>,

    /// Most open connections [default: the fd limit minus the fds open at start minus 1;
    /// env: EPMD_RS_MAX_CONNECTIONS].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most open connections from one non-local address [default: 1024; env:
    /// EPMD_RS_MAX_CONNECTIONS_PER_SOURCE].
    #[arg(long, value_name = "N")]
    pub max_connections_per_source: Option<usize>,

    /// IPv6 peers in one network of this prefix length count as one source for
    /// --max-connections-per-source; 128 counts exact addresses [default: 64; env:
    /// EPMD_RS_IPV6_SOURCE_PREFIX].
    #[arg(long, value_name = "BITS")]
    pub ipv6_source_prefix: Option<usize>,

    /// Keep registrations in systemd's file-descriptor store, so that they survive
    /// `systemctl restart` and crashes (needs `FileDescriptorStoreMax=` in the unit; on by
    /// itself when systemd sets $FDSTORE).
    #[arg(long)]
    pub fd_store: bool,

    /// Write the daemon's pid to this file (with `-daemon`: before the command returns).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// Append logs to this file (reopened on SIGHUP) instead of stderr, or syslog with
    /// `-daemon`.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// `text` (default) or `json`: one JSON object per log line, node events with their
    /// fields [env: EPMD_RS_LOG_FORMAT].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,

    /// Serve Prometheus metrics (`/metrics`) and health (`/livez`, `/readyz`) over HTTP on
    /// this address, e.g. `127.0.0.1:9369` (repeatable; off by default) [env:
    /// EPMD_RS_METRICS_LISTEN, comma-separated].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Vec<String>,

    /// A subcommand (without one, epmd-rs is the daemon or an epmd client).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// Inspect the running daemon over its admin socket.
    Admin {
        /// What to show.
        #[arg(value_enum)]
        view: View,
        /// With `history`: only this node's events.
        name: Option<String>,
        /// The admin socket [default: derived from the port, as the daemon does].
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The daemon's epmd port, used to find its socket [default: $ERL_EPMD_PORT or 4369].
        #[arg(long, value_name = "PORT")]
        port: Option<u16>,
        /// Print JSON (JSON lines for `watch`) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the man page (epmd-rs.1) and shell completions (bash, zsh, fish) into DIR
    /// (used by `make install`).
    #[command(hide = true)]
    Generate {
        /// Output directory.
        dir: PathBuf,
    },
    /// Ask any epmd (this one or the C one, local or remote) with NAMES or PORT_PLEASE2.
    Query {
        /// What to ask.
        #[command(subcommand)]
        what: QueryWhat,
    },
    /// Say why NODE@HOST cannot be reached: resolve, epmd, PORT_PLEASE2, the distribution
    /// port and handshake (and the cookie, if given), one verdict line each.
    Doctor(DoctorArgs),
    /// Wait until NAME is registered with an epmd (exit 0), or give up at --timeout
    /// (exit 1); with --gone, until it is not.
    Wait(WaitArgs),
}

/// The arguments of `wait`.
#[derive(clap::Args, Debug, PartialEq, Eq, Clone)]
pub struct WaitArgs {
    /// The node name (the part before `@`).
    pub name: String,
    /// Host to ask.
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// epmd port [default: $ERL_EPMD_PORT or 4369].
    #[arg(long)]
    pub port: Option<u16>,
    /// Seconds to wait at most.
    #[arg(long, value_name = "SECONDS", default_value = "30")]
    pub timeout: String,
    /// Wait for the name to disappear instead.
    #[arg(long)]
    pub gone: bool,
}

/// The arguments of `doctor`.
#[derive(clap::Args, Debug, PartialEq, Eq, Clone)]
pub struct DoctorArgs {
    /// The node, NAME@HOST.
    pub node: String,
    /// The epmd port on HOST [default: $ERL_EPMD_PORT or 4369].
    #[arg(long)]
    pub port: Option<u16>,
    /// Seconds each step may wait (the whole run is bounded by 8 of them).
    #[arg(long, value_name = "SECONDS", default_value = "1")]
    pub timeout: String,
    /// The cookie, to finish the challenge.
    #[arg(long, value_name = "COOKIE", conflicts_with = "cookie_file")]
    pub cookie: Option<String>,
    /// A file holding the cookie (e.g. ~/.erlang.cookie), to finish the challenge.
    #[arg(long, value_name = "PATH")]
    pub cookie_file: Option<PathBuf>,
    /// Print JSON instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// What `query` asks.
#[derive(Subcommand, Debug, PartialEq, Eq, Clone)]
pub enum QueryWhat {
    /// List the registered names (NAMES), of one host or of many at once.
    Names {
        /// Host to ask.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// epmd port [default: $ERL_EPMD_PORT or 4369].
        #[arg(long)]
        port: Option<u16>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Ask these hosts at once (`H1[:PORT],H2...`): a table of host, state and nodes;
        /// exit 2 when some host did not answer.
        #[arg(long, value_name = "LIST", conflicts_with_all = ["host", "hosts_file"])]
        hosts: Option<String>,
        /// Like --hosts, from a file: `.hosts.erlang` (`'host'.`) or one host per line.
        #[arg(long, value_name = "FILE", conflicts_with = "host")]
        hosts_file: Option<PathBuf>,
        /// Seconds each host may take with --hosts/--hosts-file.
        #[arg(long, value_name = "SECONDS", default_value = "1")]
        timeout: String,
    },
    /// Look one node up (PORT_PLEASE2).
    Port {
        /// The node name (the part before `@`).
        name: String,
        /// Host to ask.
        #[arg(long, default_value = "localhost")]
        host: String,
        /// epmd port [default: $ERL_EPMD_PORT or 4369].
        #[arg(long)]
        port: Option<u16>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Why the command line was refused.
#[derive(Debug)]
pub enum ParseError {
    /// epmd's usage error: print [`EPMD_USAGE`] to stderr and exit 1.
    Usage,
    /// clap's own error or help/version output (for `--` spellings).
    Clap(clap::Error),
}

/// Writes `epmd-rs.1` and the bash, zsh and fish completions into `dir`.
pub fn generate(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    let mut man = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut man)?;
    std::fs::write(dir.join("epmd-rs.1"), man)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd.clone(), "epmd-rs", dir)?;
    }
    Ok(())
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[std::ffi::OsString]) -> Result<Cli, ParseError> {
    let normalised = legacy::normalise(args).map_err(|_| ParseError::Usage)?;
    let argv = std::iter::once(std::ffi::OsString::from("epmd-rs")).chain(normalised);
    Cli::try_parse_from(argv).map_err(ParseError::Clap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn cli(args: &[&str]) -> Result<Cli, ParseError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        parse(&args)
    }

    #[test]
    fn epmd_spellings_parse() {
        let c = cli(&[
            "-d",
            "-debug",
            "-port",
            "4370",
            "-address",
            "127.0.0.2",
            "-relaxed_command_check",
            "-packet_timeout",
            "5",
            "-delay_accept",
            "1",
            "-delay_write",
            "2",
            "-daemon",
        ])
        .unwrap();
        assert_eq!(
            c,
            Cli {
                port: Some("4370".into()),
                address: Some("127.0.0.2".into()),
                debug: 2,
                daemon: true,
                relaxed_command_check: true,
                packet_timeout: Some("5".into()),
                delay_accept: Some("1".into()),
                delay_write: Some("2".into()),
                ..Cli::default()
            }
        );
    }

    #[test]
    fn modern_spellings_parse() {
        let c = cli(&["--port", "5", "-d", "--debug", "--relaxed-command-check"]).unwrap();
        assert_eq!(c.port.as_deref(), Some("5"));
        assert_eq!(c.debug, 2);
        assert!(c.relaxed_command_check);
    }

    #[test]
    fn client_options_parse() {
        assert!(cli(&["-port", "1", "-names"]).unwrap().names);
        assert!(cli(&["-dump"]).unwrap().dump);
        assert!(cli(&["-started"]).unwrap().started);
        assert!(cli(&["-kill"]).unwrap().kill);
        assert_eq!(cli(&["-stop", "n"]).unwrap().stop.as_deref(), Some("n"));
        assert!(matches!(
            cli(&["--names", "--kill"]),
            Err(ParseError::Clap(_))
        ));
    }

    #[test]
    fn every_flag_may_be_repeated_and_the_last_value_wins() {
        // OTP's epmd test suite starts `epmd -packet_timeout 1 -port 2243 -packet_timeout 10`.
        let c = cli(&[
            "-packet_timeout",
            "1",
            "-port",
            "2243",
            "-packet_timeout",
            "10",
        ])
        .unwrap();
        assert_eq!(c.packet_timeout.as_deref(), Some("10"));
        assert_eq!(c.port.as_deref(), Some("2243"));
        let c = cli(&[
            "-port",
            "1",
            "-port",
            "2",
            "-address",
            "127.0.0.2",
            "-address",
            "::1",
            "-delay_accept",
            "3",
            "-delay_accept",
            "4",
            "-delay_write",
            "5",
            "-delay_write",
            "6",
            "-relaxed_command_check",
            "-relaxed_command_check",
            "-daemon",
            "-daemon",
            "-systemd",
            "-systemd",
            "-d",
            "-debug",
            "-d",
        ])
        .unwrap();
        assert_eq!(
            c,
            Cli {
                port: Some("2".into()),
                address: Some("::1".into()),
                debug: 3,
                daemon: true,
                relaxed_command_check: true,
                delay_accept: Some("4".into()),
                delay_write: Some("6".into()),
                systemd: true,
                ..Cli::default()
            }
        );
        // Client mode too.
        let c = cli(&["-port", "7", "-port", "7", "-names"]).unwrap();
        assert!(c.names);
        assert_eq!(c.port.as_deref(), Some("7"));
        let c = cli(&["--port", "7", "--port=8", "--stop", "x"]).unwrap();
        assert_eq!(
            (c.port.as_deref(), c.stop.as_deref()),
            (Some("8"), Some("x"))
        );
    }

    #[test]
    fn usage_errors() {
        assert!(matches!(cli(&["-h"]), Err(ParseError::Usage)));
        assert!(matches!(cli(&["-names", "-d"]), Err(ParseError::Usage)));
        assert!(matches!(cli(&["--help"]), Err(ParseError::Clap(_))));
    }

    #[test]
    fn usage_text_is_epmds() {
        assert!(EPMD_USAGE.starts_with(b"usage: epmd [-d|-debug] [DbgExtra...] [-address List]\n"));
    }
}
