//! NAMES: N nodes registered, 8 clients each looping connect → NAMES → read to close; every
//! reply must be byte-exact (the port header, then every line, newest first).
//!
//! The C epmd can hold at most ~1019 connections, so it runs only where N + 8 fits. When
//! the bench has too few fds to hold N registrations on every server at once, the servers
//! run one at a time (their rounds then run back to back).

use super::{alternate, find, progress, Cells, Row, Server};
use crate::daemon::Kind;
use crate::limits;
use crate::load::Work;
use crate::settings::Settings;
use crate::wire::{self, Node};

/// Registrations held (N).
pub(crate) const REGISTERED: [usize; 3] = [100, 1000, 10_000];
/// Concurrent clients.
pub(crate) const CLIENTS: usize = 8;

/// Runs every N.
pub(crate) fn run(settings: &Settings, kinds: &[Kind]) -> Vec<Row> {
    let mut rows = Vec::new();
    let requests = vec![wire::names_frame()];
    for n in REGISTERED {
        let nodes: Vec<Node> = (0..n).map(|i| Node::numbered("node", i)).collect();
        let mut notes: Vec<String> = kinds
            .iter()
            .filter(|kind| !kind.can_hold(n, CLIENTS))
            .map(|kind| {
                format!(
                    "{}: cannot hold {n} registrations (1019 connection slots)",
                    kind.label()
                )
            })
            .collect();
        let runnable: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| k.can_hold(n, CLIENTS))
            .collect();
        let together = limits::bench_limit() as usize > n * runnable.len() + 256;
        let groups: Vec<Vec<Kind>> = if together {
            vec![runnable]
        } else {
            notes.push(format!(
                "N = {n}: one server at a time (the bench has too few fds to hold all)"
            ));
            runnable.iter().map(|k| vec![*k]).collect()
        };
        let mut cells = Cells::default();
        for group in groups {
            let mut servers = Server::start_all(&group, &nodes, CLIENTS);
            let expected: Vec<(Kind, Vec<Vec<u8>>)> = servers
                .iter()
                .map(|s| {
                    let reply = wire::expected_names(s.daemon.port, &nodes);
                    (s.daemon.kind, vec![reply])
                })
                .collect();
            let got = alternate(settings.rounds, &group, |kind| {
                let expected = &expected.iter().find(|(k, _)| *k == kind)?.1;
                let server = find(&mut servers, kind)?;
                let work = Work::Exact {
                    requests: &requests,
                    expected,
                };
                Some(server.load(settings, CLIENTS, work))
            });
            for (cell, got) in cells.iter_mut().zip(got) {
                if got.is_some() {
                    *cell = got;
                }
            }
        }
        let row = Row {
            registered: n,
            clients: CLIENTS,
            cells,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        };
        progress("names", &row, "/s");
        rows.push(row);
    }
    rows
}
