//! Churn: C clients each looping connect → ALIVE2 (a fresh name) → successful reply →
//! close, which ends the registration. After every run NAMES must come back empty (the
//! server is given up to 2 s to notice the last closes).

use std::time::{Duration, Instant};

use super::{alternate, find, idx, progress, Row, Server};
use crate::daemon::Kind;
use crate::load::Work;
use crate::settings::Settings;
use crate::wire;

/// Concurrent clients.
pub(crate) const CLIENTS: [usize; 2] = [1, 8];

/// The churn rows and what NAMES still listed after the runs.
#[derive(Debug, Default)]
pub(crate) struct Churn {
    /// One row per client count.
    pub(crate) rows: Vec<Row>,
    /// Per server: the most names NAMES still listed 2 s after a run (0 = always empty);
    /// `None` if it did not run or NAMES failed.
    pub(crate) leftover: [Option<usize>; 3],
}

/// Runs every client count.
pub(crate) fn run(settings: &Settings, kinds: &[Kind]) -> Churn {
    let mut out = Churn::default();
    let mut servers = Server::start_all(kinds, &[], 0);
    let mut run_no = 0usize;
    for c in CLIENTS {
        let cells = alternate(settings.rounds, kinds, |kind| {
            let server = find(&mut servers, kind)?;
            run_no += 1;
            let prefix = format!("churn{run_no}_");
            let run = server.load(settings, c, Work::Churn { prefix: &prefix });
            let left = names_left(server);
            let slot = &mut out.leftover[idx(kind)];
            *slot = match (left, *slot) {
                (Some(l), Some(s)) => Some(l.max(s)),
                (Some(l), None) => Some(l),
                (None, _) => Some(usize::MAX),
            };
            Some(run)
        });
        let row = Row {
            registered: 0,
            clients: c,
            cells,
            note: None,
        };
        progress("churn", &row, "reg/s");
        out.rows.push(row);
    }
    out
}

/// Lines in the server's NAMES reply once it has settled (polled for up to 2 s).
fn names_left(server: &Server) -> Option<usize> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let frame = wire::names_frame();
    loop {
        let reply = wire::request(server.daemon.addr(), &frame, Duration::from_secs(2)).ok();
        let lines = reply.map(|(r, _)| r.iter().filter(|&&b| b == b'\n').count());
        if lines == Some(0) || Instant::now() >= deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
