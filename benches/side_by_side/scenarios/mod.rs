//! The scenarios and what they share: servers holding a set of registrations, the
//! alternating A/B/C driver, and the result rows the report prints.
//!
//! Every throughput configuration runs `rounds` times per server; the order of the servers
//! rotates each round (A B C, B C A, C A B, ...), and the report takes the median of each
//! figure across rounds.

pub(crate) mod churn;
pub(crate) mod hold;
pub(crate) mod lookup;
pub(crate) mod names;
pub(crate) mod slowloris;
pub(crate) mod storm;

use std::net::TcpStream;

use crate::daemon::{Daemon, Kind};
use crate::load::{self, Spec, Work};
use crate::settings::Settings;
use crate::stats::Run;
use crate::wire::{self, Node};

/// Medians per server, indexed like [`Kind::ALL`]; `None` where the server did not run.
pub(crate) type Cells = [Option<Run>; 3];

/// The position of `kind` in [`Kind::ALL`] (and in [`Cells`]).
pub(crate) fn idx(kind: Kind) -> usize {
    Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// One configuration of a throughput scenario.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    /// Registrations held during the run (K or N).
    pub(crate) registered: usize,
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Medians per server.
    pub(crate) cells: Cells,
    /// Why a server has no figure, if one has none.
    pub(crate) note: Option<String>,
}

impl Row {
    /// The median run of `kind`, if it ran.
    pub(crate) fn get(&self, kind: Kind) -> Option<&Run> {
        self.cells[idx(kind)].as_ref()
    }
}

/// Runs `measure` for every round and server, rotating the order of the servers each
/// round, and returns the medians.
pub(crate) fn alternate(
    rounds: usize,
    kinds: &[Kind],
    mut measure: impl FnMut(Kind) -> Option<Run>,
) -> Cells {
    let mut runs: [Vec<Run>; 3] = Default::default();
    for round in 0..rounds {
        for j in 0..kinds.len() {
            let kind = kinds[(round + j) % kinds.len()];
            if let Some(run) = measure(kind) {
                runs[idx(kind)].push(run);
            }
        }
    }
    runs.map(|v| Run::median(&v))
}

/// A server with registrations held by the bench, each over its own open connection.
pub(crate) struct Server {
    /// The process.
    pub(crate) daemon: Daemon,
    /// The connections that hold the registrations open.
    _held: Vec<TcpStream>,
}

impl Server {
    /// Starts `kind` and registers `nodes` on it.
    pub(crate) fn start(kind: Kind, nodes: &[Node]) -> Result<Server, String> {
        let daemon = Daemon::spawn(kind)?;
        let held = wire::register_all(daemon.addr(), nodes);
        Ok(Server {
            daemon,
            _held: held,
        })
    }

    /// Starts one server per kind that can hold `nodes` plus `clients` connections.
    pub(crate) fn start_all(kinds: &[Kind], nodes: &[Node], clients: usize) -> Vec<Server> {
        kinds
            .iter()
            .filter(|k| k.can_hold(nodes.len(), clients))
            .map(|&k| Server::start(k, nodes).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    /// Runs one load against this server.
    pub(crate) fn load(&mut self, settings: &Settings, clients: usize, work: Work<'_>) -> Run {
        let spec = Spec {
            addr: self.daemon.addr(),
            pid: self.daemon.pid,
            concurrency: clients,
            warmup: settings.warmup,
            window: settings.window,
            work,
        };
        let outcome = load::run(&spec).unwrap_or_else(|e| panic!("load generator: {e}"));
        let mut run = Run::from_outcome(outcome);
        if !self.daemon.is_running() {
            run.errors += 1;
            run.first_error = Some(format!(
                "{} exited: {}",
                self.daemon.kind.label(),
                self.daemon.log_tail()
            ));
        }
        run
    }
}

/// Finds the server of `kind`.
pub(crate) fn find(servers: &mut [Server], kind: Kind) -> Option<&mut Server> {
    servers.iter_mut().find(|s| s.daemon.kind == kind)
}

/// Prints one finished row as a progress line on stderr.
pub(crate) fn progress(scenario: &str, row: &Row, unit: &str) {
    let mut line = format!(
        "  {scenario:<9} registered={:<5} clients={:<3}",
        row.registered, row.clients
    );
    for kind in Kind::ALL {
        if let Some(run) = row.get(kind) {
            line += &format!(
                "  {}: {:>8.0} {unit} p99 {:>6.0} µs{}",
                kind.label(),
                run.rate,
                run.p99_us,
                if run.errors > 0 {
                    format!(
                        " ({} errors: {})",
                        run.errors,
                        run.first_error.as_deref().unwrap_or("")
                    )
                } else {
                    String::new()
                }
            );
        }
    }
    eprintln!("{line}");
}
