//! Slowloris: N connections that sent one byte (half a length prefix) and then nothing,
//! held open while one client measures lookups (10 nodes registered). The stalled
//! connections are opened afresh for every run and closed after it.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use super::{alternate, find, progress, Row, Server};
use crate::daemon::Kind;
use crate::load::Work;
use crate::settings::Settings;
use crate::wire::{self, Node};

/// Stalled connections.
pub(crate) const STALLED: usize = 1000;
/// Registrations held.
pub(crate) const REGISTERED: usize = 10;

/// Runs the scenario; the row's `clients` is the number of stalled connections.
pub(crate) fn run(settings: &Settings, kinds: &[Kind]) -> Row {
    let nodes: Vec<Node> = (0..REGISTERED).map(|i| Node::numbered("node", i)).collect();
    let requests: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| wire::port_please_frame(&n.name))
        .collect();
    let expected: Vec<Vec<u8>> = nodes.iter().map(wire::expected_port2).collect();
    let mut servers = Server::start_all(kinds, &nodes, STALLED + 1);
    let cells = alternate(settings.rounds, kinds, |kind| {
        let server = find(&mut servers, kind)?;
        let stalled = stall(server, STALLED);
        let work = Work::Exact {
            requests: &requests,
            expected: &expected,
        };
        let mut run = server.load(settings, 1, work);
        if stalled.len() < STALLED {
            run.first_error.get_or_insert(format!(
                "only {} of {STALLED} stalled connections opened",
                stalled.len()
            ));
        }
        Some(run)
    });
    let row = Row {
        registered: REGISTERED,
        clients: STALLED,
        cells,
        note: None,
    };
    progress("slowloris", &row, "/s");
    row
}

/// Opens `n` connections that each send the first byte of a length prefix.
fn stall(server: &Server, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect_timeout(&server.daemon.addr(), Duration::from_secs(1))
        else {
            break;
        };
        if s.write_all(&[0]).is_err() {
            break;
        }
        out.push(s);
    }
    // Let the server accept them all before the lookups start.
    std::thread::sleep(Duration::from_millis(100));
    out
}
