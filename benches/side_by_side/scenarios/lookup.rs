//! Lookup: K nodes registered, C clients each looping connect → PORT_PLEASE2 → read to
//! close, cycling through the K names; every reply must be the exact PORT2_RESP.
//!
//! The C epmd has 1019 connection slots for registrations and clients together, so it is
//! left out of configurations that need more.

use super::{alternate, find, progress, Row, Server};
use crate::daemon::Kind;
use crate::load::Work;
use crate::settings::Settings;
use crate::wire::{self, Node};

/// Registrations held (K).
pub(crate) const REGISTERED: [usize; 2] = [10, 1000];
/// Concurrent clients (C).
pub(crate) const CLIENTS: [usize; 4] = [1, 8, 32, 128];

/// Runs every (K, C) configuration.
pub(crate) fn run(settings: &Settings, kinds: &[Kind]) -> Vec<Row> {
    let mut rows = Vec::new();
    for k in REGISTERED {
        let nodes: Vec<Node> = (0..k).map(|i| Node::numbered("node", i)).collect();
        let requests: Vec<Vec<u8>> = nodes
            .iter()
            .map(|n| wire::port_please_frame(&n.name))
            .collect();
        let expected: Vec<Vec<u8>> = nodes.iter().map(wire::expected_port2).collect();
        let mut servers = Server::start_all(kinds, &nodes, 1);
        for c in CLIENTS {
            let cells = alternate(settings.rounds, kinds, |kind| {
                if !kind.can_hold(k, c) {
                    return None;
                }
                let server = find(&mut servers, kind)?;
                let work = Work::Exact {
                    requests: &requests,
                    expected: &expected,
                };
                Some(server.load(settings, c, work))
            });
            let note = kinds.iter().find(|kind| !kind.can_hold(k, c)).map(|kind| {
                format!(
                    "{}: {k} registrations + {c} clients exceed its 1019 connection slots",
                    kind.label()
                )
            });
            let row = Row {
                registered: k,
                clients: c,
                cells,
                note,
            };
            progress("lookup", &row, "/s");
            rows.push(row);
        }
    }
    rows
}
