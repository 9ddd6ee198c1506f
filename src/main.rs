//! The `epmd-rs` binary: parse, set up logging, dispatch, map the result to an exit code.

use std::io::Write;
use std::process::ExitCode;

use epmd_rs::cli::config::{Action, Config, ConfigError};
use epmd_rs::cli::{self, ParseError};
use epmd_rs::{client, daemon, logging};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    // Resolved now: after an upgrade replaces the file, the path names the new binary.
    let self_exe = std::env::current_exe().ok();
    let cli = match cli::parse(&args) {
        Ok(cli) => cli,
        Err(ParseError::Usage) => return usage(),
        Err(ParseError::Clap(e)) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    let config = match Config::resolve(&cli, |k| std::env::var_os(k)) {
        Ok(c) => c,
        Err(ConfigError::Usage) => return usage(),
        Err(e) => {
            eprintln!("epmd-rs: {e}");
            return ExitCode::from(1);
        }
    };
    let target = match &config.action {
        Action::Daemon(d) => match (&d.log_file, d.daemon) {
            (Some(path), _) => logging::LogTarget::File(path.clone()),
            (None, true) => logging::LogTarget::Syslog,
            (None, false) => logging::LogTarget::Stderr,
        },
        _ => logging::LogTarget::Stderr,
    };
    if let Action::Daemon(d) = &config.action {
        logging::set_format(d.log_format);
    }
    match logging::init(config.debug, &target) {
        Ok(()) => {}
        Err(e) if target == logging::LogTarget::Syslog => {
            // No syslog here (a container, say): still start, as erl needs an epmd, and
            // log to a file rather than to nowhere.
            let is_root = epmd_rs::admin::socket_path::running_as_root();
            let fallback = logging::fallback_log_file(is_root, |k| std::env::var_os(k));
            let opened = fallback.as_ref().map(|f| {
                logging::init(config.debug, &logging::LogTarget::File(f.clone())).map(|()| f)
            });
            match opened {
                Some(Ok(f)) => log::info!("syslog unavailable ({e}): logging to {}", f.display()),
                _ => {
                    let _ = logging::init(config.debug, &logging::LogTarget::Stderr);
                }
            }
        }
        Err(e) => {
            eprintln!("epmd-rs: cannot open the log ({target:?}): {e}");
            return ExitCode::from(1);
        }
    }
    match config.action {
        Action::Client { port, command } => {
            let out = client::run(port, &command);
            let _ = std::io::stdout().write_all(&out.stdout);
            let _ = std::io::stderr().write_all(&out.stderr);
            ExitCode::from(out.code)
        }
        Action::Admin {
            socket,
            view,
            name,
            json,
        } => {
            let Some(path) = socket else {
                eprintln!(
                    "epmd-rs: {}",
                    epmd_rs::admin::client::AdminClientError::NoPath
                );
                return ExitCode::from(1);
            };
            let mut out = std::io::stdout().lock();
            let result = if view == epmd_rs::admin::View::History {
                epmd_rs::admin::client::history(&path, name.as_deref(), json, &mut out)
            } else if view == epmd_rs::admin::View::Upgrade {
                epmd_rs::admin::client::upgrade(&path, json, &mut out)
            } else {
                epmd_rs::admin::client::run(&path, view, json, &mut out)
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("epmd-rs: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Action::Generate(dir) => match cli::generate(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("epmd-rs: cannot generate into {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
        Action::Query {
            what:
                cli::QueryWhat::Names {
                    hosts,
                    hosts_file,
                    timeout,
                    json,
                    ..
                },
            port,
        } if hosts.is_some() || hosts_file.is_some() => {
            use epmd_rs::query::fanout;
            match fanout::fleet_args(hosts.as_deref(), hosts_file.as_deref(), &timeout, port) {
                Ok((targets, timeout)) => {
                    let fleet = fanout::names_all(&targets, timeout);
                    if json {
                        println!("{}", serde_json::to_string(&fleet).unwrap_or_default());
                    } else {
                        print!("{}", fleet.table());
                    }
                    ExitCode::from(if fleet.all_ok() { 0 } else { 2 })
                }
                Err(e) => {
                    eprintln!("epmd-rs: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Action::Query { what, port } => match query(&what, port) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("epmd-rs: {e}");
                ExitCode::from(1)
            }
        },
        Action::Wait { args, port } => wait(&args, port),
        Action::Doctor { args, port } => match epmd_rs::doctor::Options::from_args(&args, port) {
            Ok(opts) => {
                let report = epmd_rs::doctor::probe::run(&opts);
                if args.json {
                    println!("{}", serde_json::to_string(&report).unwrap_or_default());
                } else {
                    print!("{}", report.text());
                }
                ExitCode::from(report.exit_code)
            }
            Err(e) => {
                eprintln!("epmd-rs: doctor: {e}");
                ExitCode::from(1)
            }
        },
        Action::Daemon(d) => {
            match daemon::run(&d, &args, self_exe.as_deref(), |k| std::env::var_os(k)) {
                Ok(daemon::Exit::Killed) => {
                    // The C epmd's line, on stderr even without -d (spec §7.6).
                    if target == logging::LogTarget::Stderr {
                        let line = epmd_rs::epmd_log::line(epmd_rs::epmd_log::KILL_MESSAGE);
                        let _ = std::io::stderr().write_all(line.as_bytes());
                    } else {
                        log::warn!("{}", epmd_rs::epmd_log::KILL_MESSAGE);
                    }
                    ExitCode::SUCCESS
                }
                Ok(_) => ExitCode::SUCCESS,
                Err(e) if e.exit_code() == 0 && d.daemon => {
                    // `erl` runs `epmd -daemon` at every start: stay quiet, as epmd does.
                    log::info!("{e}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("epmd-rs: {e}");
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

fn query(what: &cli::QueryWhat, port: u16) -> Result<String, epmd_rs::query::QueryError> {
    use epmd_rs::query;
    let json = |v: serde_json::Result<String>| v.unwrap_or_default() + "\n";
    Ok(match what {
        cli::QueryWhat::Names { host, json: j, .. } => {
            let a = query::names(host, port)?;
            if *j {
                json(serde_json::to_string(&a))
            } else {
                query::names_table(&a)
            }
        }
        cli::QueryWhat::Port {
            name,
            host,
            json: j,
            ..
        } => {
            let a = query::port(host, port, name)?;
            if *j {
                json(serde_json::to_string(&a))
            } else {
                query::port_table(&a)
            }
        }
    })
}

fn usage() -> ExitCode {
    let _ = std::io::stderr().write_all(cli::EPMD_USAGE);
    ExitCode::from(1)
}

/// `epmd-rs wait`: 0 once reached, 1 at the timeout, 2 for bad arguments.
fn wait(args: &cli::WaitArgs, port: u16) -> ExitCode {
    use epmd_rs::wait::{self, WaitFor, Waited};
    let what = match wait::parse_timeout(&args.timeout) {
        Ok(timeout) => WaitFor {
            host: args.host.clone(),
            port,
            name: args.name.clone(),
            gone: args.gone,
            timeout,
        },
        Err(e) => {
            eprintln!("epmd-rs: wait: {e}");
            return ExitCode::from(2);
        }
    };
    match wait::wait(&what) {
        Ok(Waited::Reached { .. }) => ExitCode::SUCCESS,
        Ok(Waited::TimedOut) => {
            let state = if what.gone {
                "still registered"
            } else {
                "not registered"
            };
            eprintln!(
                "epmd-rs: wait: {} {state} with the epmd at {}:{} after {:?}",
                what.name, what.host, what.port, what.timeout
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("epmd-rs: wait: {e}");
            ExitCode::from(2)
        }
    }
}
