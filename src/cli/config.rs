//! The validated configuration: command-line values merged with the environment
//! (`ERL_EPMD_PORT`, `ERL_EPMD_ADDRESS`, `ERL_EPMD_RELAXED_COMMAND_CHECK`), with epmd's
//! `atoi` number rules (spec §7.1–7.2).

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::legacy::atoi;
use super::{Cli, Command, DoctorArgs, QueryWhat};
use crate::admin::socket_path::{default_path, running_as_root};
use crate::admin::{ConfigEntry, Source, View};
use crate::protocol::tag::DEFAULT_PORT;
use crate::server::policy::AccessPolicy;

/// Default `-packet_timeout` in seconds.
pub const DEFAULT_PACKET_TIMEOUT: u64 = 60;

/// What the process should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the daemon.
    Daemon(Box<DaemonConfig>),
    /// Run one epmd client command against the local daemon.
    Client {
        /// The port to connect to.
        port: u16,
        /// The command.
        command: ClientCommand,
    },
    /// Show an admin view of the running daemon.
    Admin {
        /// The admin socket, if one could be derived.
        socket: Option<PathBuf>,
        /// The view.
        view: View,
        /// With `history`: only this node's events.
        name: Option<String>,
        /// JSON instead of a table.
        json: bool,
    },
    /// Write the man page and shell completions into a directory.
    Generate(PathBuf),
    /// Ask an epmd with NAMES or PORT_PLEASE2.
    Query {
        /// What to ask (its port resolved).
        what: QueryWhat,
        /// The epmd port.
        port: u16,
    },
    /// Wait for a name to be registered or gone (`wait`).
    Wait {
        /// The arguments as given.
        args: super::WaitArgs,
        /// The epmd port.
        port: u16,
    },
    /// Diagnose one node (`doctor`).
    Doctor {
        /// The arguments as given.
        args: DoctorArgs,
        /// The epmd port.
        port: u16,
    },
}

/// An epmd client command (spec §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCommand {
    /// `-names`.
    Names,
    /// `-dump`.
    Dump,
    /// `-started`.
    Started,
    /// `-kill`.
    Kill,
    /// `-stop NAME`.
    Stop(String),
}

/// Everything the daemon needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// The port as configured (`atoi` of the flag or environment); reported in the NAMES
    /// and DUMP headers as a `u32`, as the C epmd does even when it exceeds 65535.
    pub configured_port: i32,
    /// Addresses to listen on besides the loopbacks; `None` means every interface.
    pub addresses: Option<Vec<IpAddr>>,
    /// Relaxed command check.
    pub relaxed: bool,
    /// Total time allowed per request.
    pub packet_timeout: Duration,
    /// `-delay_accept`.
    pub delay_accept: Option<Duration>,
    /// `-delay_write`.
    pub delay_write: Option<Duration>,
    /// Number of `-d` flags.
    pub debug: u8,
    /// `-daemon`.
    pub daemon: bool,
    /// `-systemd`.
    pub systemd: bool,
    /// The admin socket path; `None` when disabled or no runtime directory is known.
    pub admin_socket: Option<PathBuf>,
    /// The group allowed to use the admin socket.
    pub admin_group: Option<String>,
    /// Every effective setting with its source, for `admin config`.
    pub report: Vec<ConfigEntry>,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--log-file`.
    pub log_file: Option<PathBuf>,
    /// Who may send NAMES.
    pub names_policy: AccessPolicy,
    /// Who may send PORT_PLEASE2.
    pub port_please_policy: AccessPolicy,
    /// `--max-connections` (default from the fd limit).
    pub max_connections: Option<usize>,
    /// `--max-connections-per-source`.
    pub max_connections_per_source: Option<usize>,
    /// `--ipv6-source-prefix` (default 64).
    pub ipv6_source_prefix: Option<u8>,
    /// Keep registrations in systemd's fd store.
    pub fd_store: bool,
    /// `--log-format`.
    pub log_format: crate::logging::LogFormat,
    /// `--metrics-listen`: where to serve `/metrics`, `/livez` and `/readyz` (none: off).
    pub metrics_listen: Vec<std::net::SocketAddr>,
}

impl DaemonConfig {
    /// The port the sockets bind: the configured value truncated to 16 bits, as epmd's
    /// `htons` does (`-port 70000` listens on 4464).
    pub fn bind_port(&self) -> u16 {
        self.configured_port as u16
    }

    /// The port NAMES and DUMP report.
    pub fn header_port(&self) -> u32 {
        self.configured_port as u32
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// epmd's usage error (a zero or non-numeric port or number of seconds).
    Usage,
    /// An address in the list does not parse.
    ParseAddress(String),
    /// An access policy does not parse, or a number is invalid.
    Invalid {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Usage => f.write_str("invalid arguments"),
            ConfigError::ParseAddress(a) => write!(f, "cannot parse IP address \"{a}\""),
            ConfigError::Invalid { key, value } => {
                write!(f, "invalid value \"{value}\" for {key}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Resolves `cli` against the environment given by `env` (a variable lookup).
    pub fn resolve(
        cli: &Cli,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Config, ConfigError> {
        let env_str = |k: &str| env(k).map(|v| v.to_string_lossy().into_owned());
        let port = match &cli.port {
            Some(p) => match atoi(p) {
                0 => return Err(ConfigError::Usage),
                n => n,
            },
            // The environment value is not validated: garbage gives 0 (ephemeral ports).
            None => env_str("ERL_EPMD_PORT").map_or(i32::from(DEFAULT_PORT), |p| atoi(&p)),
        };
        let env_port = || env_str("ERL_EPMD_PORT").map_or(DEFAULT_PORT, |p| atoi(&p) as u16);
        match &cli.command {
            Some(Command::Admin {
                view,
                name,
                socket,
                port,
                json,
            }) => {
                let socket = socket
                    .clone()
                    .or_else(|| env("EPMD_RS_ADMIN_SOCKET").map(PathBuf::from))
                    .or_else(|| {
                        default_path(port.unwrap_or_else(env_port), running_as_root(), &env)
                    });
                return Ok(Config {
                    action: Action::Admin {
                        socket,
                        view: *view,
                        name: name.clone(),
                        json: *json,
                    },
                    debug: cli.debug,
                });
            }
            Some(Command::Generate { dir }) => {
                return Ok(Config {
                    action: Action::Generate(dir.clone()),
                    debug: cli.debug,
                });
            }
            Some(Command::Query { what }) => {
                let port = match what {
                    QueryWhat::Names { port, .. } | QueryWhat::Port { port, .. } => *port,
                };
                return Ok(Config {
                    action: Action::Query {
                        what: what.clone(),
                        port: port.unwrap_or_else(env_port),
                    },
                    debug: cli.debug,
                });
            }
            Some(Command::Wait(args)) => {
                return Ok(Config {
                    action: Action::Wait {
                        args: args.clone(),
                        port: args.port.unwrap_or_else(env_port),
                    },
                    debug: cli.debug,
                });
            }
            Some(Command::Doctor(args)) => {
                return Ok(Config {
                    action: Action::Doctor {
                        args: args.clone(),
                        port: args.port.unwrap_or_else(env_port),
                    },
                    debug: cli.debug,
                });
            }
            None => {}
        }
        // Checked before a client command runs: the C epmd refuses `-packet_timeout 0
        // -names` with its usage text.
        let seconds = |v: &Option<String>| -> Result<Option<Duration>, ConfigError> {
            match v {
                None => Ok(None),
                Some(s) => match atoi(s) {
                    0 => Err(ConfigError::Usage),
                    n => Ok(Some(Duration::from_secs(u64::from(n.unsigned_abs())))),
                },
            }
        };
        let packet_timeout =
            seconds(&cli.packet_timeout)?.unwrap_or(Duration::from_secs(DEFAULT_PACKET_TIMEOUT));
        let delay_accept = seconds(&cli.delay_accept)?;
        let delay_write = seconds(&cli.delay_write)?;
        let client = if cli.names {
            Some(ClientCommand::Names)
        } else if cli.dump {
            Some(ClientCommand::Dump)
        } else if cli.started {
            Some(ClientCommand::Started)
        } else if cli.kill {
            Some(ClientCommand::Kill)
        } else {
            cli.stop.clone().map(ClientCommand::Stop)
        };
        if let Some(command) = client {
            return Ok(Config {
                action: Action::Client {
                    port: port as u16,
                    command,
                },
                debug: cli.debug,
            });
        }
        let address_list = cli.address.clone().or_else(|| env_str("ERL_EPMD_ADDRESS"));
        let addresses = match address_list {
            Some(list) => parse_address_list(&list)?,
            None => None,
        };
        let relaxed_env = env("ERL_EPMD_RELAXED_COMMAND_CHECK").is_some();
        let admin_socket_source = match (&cli.admin_socket, env("EPMD_RS_ADMIN_SOCKET")) {
            (Some(p), _) if p.as_os_str() == "none" => Some((p.clone(), Source::Flag)),
            (Some(p), _) => Some((absolute(p), Source::Flag)),
            (None, Some(p)) => Some((PathBuf::from(p), Source::Environment)),
            (None, None) => {
                default_path(port as u16, running_as_root(), &env).map(|p| (p, Source::Default))
            }
        };
        let admin_socket_source = admin_socket_source.filter(|(p, _)| p.as_os_str() != "none");
        let admin_group = cli
            .admin_group
            .clone()
            .map(|g| (g, Source::Flag))
            .or_else(|| env_str("EPMD_RS_ADMIN_GROUP").map(|g| (g, Source::Environment)));
        let setting = |flag: &Option<String>, var: &str| -> Option<(String, Source)> {
            match flag {
                Some(v) => Some((v.clone(), Source::Flag)),
                None => env_str(var).map(|v| (v, Source::Environment)),
            }
        };
        let policy = |key: &'static str, v: &Option<(String, Source)>| match v {
            None => Ok(AccessPolicy::any()),
            Some((text, _)) => AccessPolicy::parse(text).map_err(|_| ConfigError::Invalid {
                key,
                value: text.clone(),
            }),
        };
        let (metrics_text, metrics_src) = if cli.metrics_listen.is_empty() {
            match env_str("EPMD_RS_METRICS_LISTEN") {
                Some(v) => (v, Source::Environment),
                None => (String::new(), Source::Default),
            }
        } else {
            (cli.metrics_listen.join(","), Source::Flag)
        };
        let metrics_listen = metrics_text
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                a.parse::<std::net::SocketAddr>()
                    .map_err(|_| ConfigError::Invalid {
                        key: "metrics-listen",
                        value: a.to_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let log_format_setting = setting(&cli.log_format, "EPMD_RS_LOG_FORMAT");
        let log_format = match log_format_setting.as_ref().map(|(v, _)| v.as_str()) {
            None | Some("text") => crate::logging::LogFormat::Text,
            Some("json") => crate::logging::LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    key: "log-format",
                    value: other.to_owned(),
                })
            }
        };
        let names_allow = setting(&cli.names_allow, "EPMD_RS_NAMES_ALLOW");
        let port_please_allow = setting(&cli.port_please_allow, "EPMD_RS_PORT_PLEASE_ALLOW");
        let count = |key: &'static str, flag: Option<usize>, var: &str| match (flag, env_str(var)) {
            (Some(n), _) => Ok(Some((n, Source::Flag))),
            (None, Some(v)) => v
                .trim()
                .parse::<usize>()
                .map(|n| Some((n, Source::Environment)))
                .map_err(|_| ConfigError::Invalid { key, value: v }),
            (None, None) => Ok(None),
        };
        let max_connections = count(
            "max-connections",
            cli.max_connections,
            "EPMD_RS_MAX_CONNECTIONS",
        )?;
        let max_per_source = count(
            "max-connections-per-source",
            cli.max_connections_per_source,
            "EPMD_RS_MAX_CONNECTIONS_PER_SOURCE",
        )?;
        let ipv6_prefix = count(
            "ipv6-source-prefix",
            cli.ipv6_source_prefix,
            "EPMD_RS_IPV6_SOURCE_PREFIX",
        )?;
        let ipv6_prefix = match ipv6_prefix {
            Some((n, src)) => match u8::try_from(n) {
                Ok(bits) if bits <= 128 => Some((bits, src)),
                _ => {
                    return Err(ConfigError::Invalid {
                        key: "ipv6-source-prefix",
                        value: n.to_string(),
                    })
                }
            },
            None => None,
        };
        let mut daemon = DaemonConfig {
            configured_port: port,
            addresses,
            relaxed: cli.relaxed_command_check || relaxed_env,
            packet_timeout,
            delay_accept,
            delay_write,
            debug: cli.debug,
            daemon: cli.daemon,
            systemd: cli.systemd,
            admin_socket: admin_socket_source.as_ref().map(|(p, _)| p.clone()),
            admin_group: admin_group.as_ref().map(|(g, _)| g.clone()),
            report: Vec::new(),
            // Absolute now: -daemon changes directory to / before it writes or reopens them.
            pid_file: cli.pid_file.as_deref().map(absolute),
            log_file: cli.log_file.as_deref().map(absolute),
            names_policy: policy("names-allow", &names_allow)?,
            port_please_policy: policy("port-please-allow", &port_please_allow)?,
            max_connections: max_connections.map(|(n, _)| n),
            max_connections_per_source: max_per_source.map(|(n, _)| n),
            ipv6_source_prefix: ipv6_prefix.map(|(n, _)| n),
            fd_store: cli.fd_store || env("FDSTORE").is_some(),
            metrics_listen,
            log_format,
        };
        let shown = |v: &Option<(String, Source)>| match v {
            Some((text, src)) => (text.clone(), *src),
            None => ("any".to_owned(), Source::Default),
        };
        let shown_count = |v: Option<(usize, Source)>, default: &str| match v {
            Some((n, src)) => (n.to_string(), src),
            None => (default.to_owned(), Source::Default),
        };
        let (names_text, names_src) = shown(&names_allow);
        let (lookup_text, lookup_src) = shown(&port_please_allow);
        let (max_text, max_src) = shown_count(max_connections, "fd limit - fds in use - 1");
        let (per_text, per_src) = shown_count(max_per_source, "1024");
        let (v6_text, v6_src) = shown_count(ipv6_prefix.map(|(n, s)| (usize::from(n), s)), "64");
        let flag_or_env = |flag: bool, var: &str| {
            if flag {
                Source::Flag
            } else if env(var).is_some() {
                Source::Environment
            } else {
                Source::Default
            }
        };
        let flag_or_default = |flag: bool| if flag { Source::Flag } else { Source::Default };
        let secs = |d: Option<Duration>| d.map_or("0".to_owned(), |d| d.as_secs().to_string());
        let entry = |key: &str, value: String, source: Source| ConfigEntry {
            key: key.to_owned(),
            value,
            source,
        };
        daemon.report = vec![
            entry(
                "port",
                port.to_string(),
                flag_or_env(cli.port.is_some(), "ERL_EPMD_PORT"),
            ),
            entry(
                "address",
                daemon
                    .addresses
                    .as_ref()
                    .map_or("0.0.0.0 ::".to_owned(), |a| {
                        a.iter()
                            .map(|ip| ip.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    }),
                flag_or_env(cli.address.is_some(), "ERL_EPMD_ADDRESS"),
            ),
            entry(
                "relaxed-command-check",
                daemon.relaxed.to_string(),
                flag_or_env(cli.relaxed_command_check, "ERL_EPMD_RELAXED_COMMAND_CHECK"),
            ),
            entry(
                "packet-timeout",
                packet_timeout.as_secs().to_string(),
                flag_or_default(cli.packet_timeout.is_some()),
            ),
            entry(
                "delay-accept",
                secs(daemon.delay_accept),
                flag_or_default(cli.delay_accept.is_some()),
            ),
            entry(
                "delay-write",
                secs(daemon.delay_write),
                flag_or_default(cli.delay_write.is_some()),
            ),
            entry(
                "debug",
                cli.debug.to_string(),
                flag_or_default(cli.debug > 0),
            ),
            entry(
                "daemon",
                cli.daemon.to_string(),
                flag_or_default(cli.daemon),
            ),
            entry(
                "systemd",
                cli.systemd.to_string(),
                flag_or_default(cli.systemd),
            ),
            match &admin_socket_source {
                Some((p, src)) => entry("admin-socket", p.display().to_string(), *src),
                None => entry("admin-socket", "none".to_owned(), Source::Default),
            },
            match &admin_group {
                Some((g, src)) => entry("admin-group", g.clone(), *src),
                None => entry("admin-group", "none".to_owned(), Source::Default),
            },
            entry(
                "fd-store",
                daemon.fd_store.to_string(),
                flag_or_env(cli.fd_store, "FDSTORE"),
            ),
            match &log_format_setting {
                Some((v, src)) => entry("log-format", v.clone(), *src),
                None => entry("log-format", "text".to_owned(), Source::Default),
            },
            entry(
                "metrics-listen",
                if metrics_text.is_empty() {
                    "none".to_owned()
                } else {
                    metrics_text.clone()
                },
                metrics_src,
            ),
            entry("names-allow", names_text, names_src),
            entry("port-please-allow", lookup_text, lookup_src),
            entry("max-connections", max_text, max_src),
            entry("max-connections-per-source", per_text, per_src),
            entry("ipv6-source-prefix", v6_text, v6_src),
            entry(
                "pid-file",
                cli.pid_file
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string()),
                flag_or_default(cli.pid_file.is_some()),
            ),
            entry(
                "log-file",
                match (&cli.log_file, cli.daemon) {
                    (Some(p), _) => p.display().to_string(),
                    (None, true) => "syslog".into(),
                    (None, false) => "stderr".into(),
                },
                flag_or_default(cli.log_file.is_some()),
            ),
        ];
        Ok(Config {
            action: Action::Daemon(Box::new(daemon)),
            debug: cli.debug,
        })
    }
}

/// The resolved configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// What to do.
    pub action: Action,
    /// Number of `-d` flags (log verbosity).
    pub debug: u8,
}

/// Splits an address list on commas and spaces; `None` when it names no address.
pub fn parse_address_list(list: &str) -> Result<Option<Vec<IpAddr>>, ConfigError> {
    let mut out = Vec::new();
    for item in list.split([',', ' ']).filter(|s| !s.is_empty()) {
        let ip: IpAddr = item
            .parse()
            .map_err(|_| ConfigError::ParseAddress(item.to_owned()))?;
        out.push(ip);
    }
    Ok((!out.is_empty()).then_some(out))
}

/// `path` made absolute against the current directory (unchanged if that fails).
fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let cli = super::super::parse(&args).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(&cli, |k| {
            env.iter()
                .find(|(ek, _)| ek == k)
                .map(|(_, v)| OsString::from(v))
        })
    }

    fn daemon(args: &[&str], env: &[(&str, &str)]) -> DaemonConfig {
        match resolve(args, env).unwrap().action {
            Action::Daemon(d) => *d,
            other => panic!("not a daemon: {other:?}"),
        }
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi("4369"), 4369);
        assert_eq!(atoi("  12abc"), 12);
        assert_eq!(atoi("abc"), 0);
        assert_eq!(atoi("-5"), -5);
        assert_eq!(atoi("+7"), 7);
        assert_eq!(atoi(""), 0);
        // Past 2^31 the low 32 bits remain, as (int) strtol gives.
        assert_eq!(atoi("4294971665"), 4369);
        assert_eq!(atoi("4294967296"), 0);
        // Past 2^63 strtol saturates: LONG_MAX → -1, LONG_MIN → 0 (checked against
        // Debian's epmd: `-port 99999999999999999999 -names` connects to 65535, the
        // negative one is a usage error).
        assert_eq!(atoi("99999999999999999999"), -1);
        assert_eq!(atoi("9223372036854775808"), -1);
        assert_eq!(atoi("9223372036854775807"), -1);
        assert_eq!(atoi("-99999999999999999999"), 0);
        assert_eq!(atoi("-9223372036854775809"), 0);
    }

    #[test]
    fn defaults() {
        let d = daemon(&[], &[]);
        assert_eq!(d.configured_port, 4369);
        assert_eq!(d.addresses, None);
        assert!(!d.relaxed);
        assert_eq!(d.packet_timeout, Duration::from_secs(60));
        assert_eq!(d.delay_accept, None);
        assert_eq!(d.delay_write, None);
    }

    #[test]
    fn port_from_flag_env_and_wrapping() {
        assert_eq!(daemon(&["-port", "14369"], &[]).configured_port, 14369);
        assert_eq!(
            daemon(&[], &[("ERL_EPMD_PORT", "5000")]).configured_port,
            5000
        );
        assert_eq!(
            daemon(&["-port", "6000"], &[("ERL_EPMD_PORT", "5000")]).configured_port,
            6000
        );
        let wrapped = daemon(&["-port", "70000"], &[]);
        assert_eq!((wrapped.bind_port(), wrapped.header_port()), (4464, 70000));
        assert_eq!(daemon(&[], &[("ERL_EPMD_PORT", "junk")]).bind_port(), 0);
        assert_eq!(resolve(&["--port", "0"], &[]), Err(ConfigError::Usage));
        assert_eq!(resolve(&["--port", "x"], &[]), Err(ConfigError::Usage));
    }

    #[test]
    fn seconds_must_be_positive() {
        let d = daemon(
            &[
                "-packet_timeout",
                "5",
                "-delay_accept",
                "1",
                "-delay_write",
                "2",
            ],
            &[],
        );
        assert_eq!(d.packet_timeout, Duration::from_secs(5));
        assert_eq!(d.delay_accept, Some(Duration::from_secs(1)));
        assert_eq!(d.delay_write, Some(Duration::from_secs(2)));
        for flag in ["--packet-timeout", "--delay-accept", "--delay-write"] {
            assert_eq!(resolve(&[flag, "0"], &[]), Err(ConfigError::Usage));
            // In client mode too, as the C epmd checks them before running the command.
            assert_eq!(
                resolve(&[flag, "0", "--names"], &[]),
                Err(ConfigError::Usage)
            );
            assert_eq!(
                resolve(&[flag, "x", "--kill"], &[]),
                Err(ConfigError::Usage)
            );
            assert_eq!(resolve(&[flag, "soon"], &[]), Err(ConfigError::Usage));
        }
    }

    #[test]
    fn addresses_from_flag_or_env() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            daemon(&["-address", "127.0.0.2, ::1"], &[]).addresses,
            Some(vec![ip("127.0.0.2"), ip("::1")])
        );
        assert_eq!(
            daemon(&[], &[("ERL_EPMD_ADDRESS", "10.0.0.1")]).addresses,
            Some(vec![ip("10.0.0.1")])
        );
        assert_eq!(
            daemon(
                &["-address", "10.0.0.2"],
                &[("ERL_EPMD_ADDRESS", "10.0.0.1")]
            )
            .addresses,
            Some(vec![ip("10.0.0.2")])
        );
        assert_eq!(daemon(&["-address", " , ,"], &[]).addresses, None);
        assert_eq!(
            resolve(&["-address", "nope"], &[]),
            Err(ConfigError::ParseAddress("nope".into()))
        );
    }

    #[test]
    fn the_report_names_each_source() {
        let d = daemon(
            &["-port", "5000", "--admin-socket", "/tmp/a.sock"],
            &[("ERL_EPMD_ADDRESS", "127.0.0.2")],
        );
        let get = |k: &str| d.report.iter().find(|e| e.key == k).unwrap().clone();
        assert_eq!(
            (get("port").value, get("port").source),
            ("5000".into(), Source::Flag)
        );
        assert_eq!(get("address").source, Source::Environment);
        assert_eq!(get("packet-timeout").source, Source::Default);
        assert_eq!(get("admin-socket").value, "/tmp/a.sock");
        assert_eq!(d.admin_socket, Some(PathBuf::from("/tmp/a.sock")));
        let off = daemon(&["--admin-socket", "none"], &[]);
        assert_eq!(off.admin_socket, None);
    }

    #[test]
    fn relaxed_from_flag_or_env_presence() {
        assert!(daemon(&["-relaxed_command_check"], &[]).relaxed);
        assert!(daemon(&[], &[("ERL_EPMD_RELAXED_COMMAND_CHECK", "")]).relaxed);
    }

    #[test]
    fn client_commands() {
        let c = resolve(&["-port", "7", "-stop", "foo"], &[]).unwrap();
        assert_eq!(
            c.action,
            Action::Client {
                port: 7,
                command: ClientCommand::Stop("foo".into())
            }
        );
        let c = resolve(&["-names"], &[("ERL_EPMD_PORT", "9")]).unwrap();
        assert_eq!(
            c.action,
            Action::Client {
                port: 9,
                command: ClientCommand::Names
            }
        );
    }
}
