//! A pair of daemons (the C epmd and epmd-rs) running the same wire scenarios: the
//! comparison of their transcripts (see [`super::wire_run`]), and the shrinking of a
//! scenario whose transcripts differ.

use super::deliberate::Deliberate;
use super::twin::Side;
use super::wire_run::{Target, ACCEPTED_KEYS};
use super::wire_scenario::{Scenario, Step};

/// The C epmd and epmd-rs, relaxed or strict, started alike.
#[derive(Debug)]
pub(crate) struct Pair {
    /// The C epmd.
    pub(crate) c: Target,
    /// epmd-rs.
    pub(crate) ours: Target,
}

/// A scenario whose transcripts differ.
#[derive(Debug)]
pub(crate) struct Divergence {
    /// The scenario.
    pub(crate) scenario: Scenario,
    /// The C epmd's transcript.
    pub(crate) c: Vec<String>,
    /// epmd-rs's transcript.
    pub(crate) ours: Vec<String>,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "scenario: {}", self.scenario)?;
        let n = self.c.len().max(self.ours.len());
        for i in 0..n {
            let c = self.c.get(i).map_or("-", String::as_str);
            let o = self.ours.get(i).map_or("-", String::as_str);
            let mark = if c == o { "  " } else { "!!" };
            writeln!(f, "{mark} C:    {}", clip(c))?;
            if c != o {
                writeln!(f, "{mark} ours: {}", clip(o))?;
                let at = c.bytes().zip(o.bytes()).take_while(|(a, b)| a == b).count();
                let from = at.saturating_sub(60) & !1;
                let end = |s: &str| (at + 200).min(s.len());
                writeln!(f, "   first difference at char {at}:")?;
                writeln!(f, "   C:    ...{}", &c[from.min(c.len())..end(c)])?;
                writeln!(f, "   ours: ...{}", &o[from.min(o.len())..end(o)])?;
            }
        }
        Ok(())
    }
}

/// A long transcript line shortened for display.
fn clip(s: &str) -> String {
    if s.len() > 200 {
        format!("{}...({} chars)", &s[..200], s.len())
    } else {
        s.to_owned()
    }
}

impl Pair {
    /// Both daemons, relaxed or strict.
    pub(crate) fn start(relaxed: bool) -> Pair {
        Pair {
            c: Target::start(Side::C, relaxed),
            ours: Target::start(Side::Ours, relaxed),
        }
    }

    /// Restarts both (a KILL ended one or both, or a clean state is wanted).
    pub(crate) fn restart(&mut self) {
        self.c.restart();
        self.ours.restart();
    }

    /// Runs `scenario` on both at once: epmd-rs's transcript if they agree, `Err` with
    /// both if they differ. Restarts the pair if a daemon exited.
    pub(crate) fn compare(
        &mut self,
        scenario: &Scenario,
        allow: &Deliberate,
    ) -> Result<Vec<String>, Divergence> {
        let (c, ours) = std::thread::scope(|s| {
            let c = s.spawn(|| self.c.run(scenario, allow));
            let ours = self.ours.run(scenario, allow);
            (c.join().expect("C side panicked"), ours)
        });
        if !self.c.alive() || !self.ours.alive() {
            self.restart();
        }
        let same = c.len() == ours.len()
            && c.iter()
                .zip(&ours)
                .all(|(c, o)| c == o || cut_by_reset(c, o, allow));
        if same {
            Ok(ours)
        } else {
            Err(Divergence {
                scenario: scenario.clone(),
                c,
                ours,
            })
        }
    }

    /// Shrinks a diverging scenario: drops steps (and whole connections) while it still
    /// diverges from a fresh pair of daemons. Returns the smallest divergence found.
    pub(crate) fn shrink(&mut self, found: Divergence, allow: &Deliberate) -> Divergence {
        let mut best = found;
        self.restart();
        // The divergence may need earlier scenarios' state; keep it if it does not replay.
        match self.compare(&best.scenario, allow) {
            Err(d) => best = d,
            Ok(_) => return best,
        }
        loop {
            let mut progressed = false;
            let conns: Vec<u8> = {
                let mut c: Vec<u8> = best.scenario.steps.iter().map(Step::conn).collect();
                c.sort_unstable();
                c.dedup();
                c
            };
            let mut candidates: Vec<Scenario> = conns
                .iter()
                .map(|&conn| without(&best.scenario, |s| s.conn() == conn))
                .collect();
            for i in (0..best.scenario.steps.len()).rev() {
                let mut s = best.scenario.clone();
                s.steps.remove(i);
                candidates.push(s);
            }
            for candidate in candidates {
                if candidate.steps.is_empty() || candidate.steps.len() >= best.scenario.steps.len()
                {
                    continue;
                }
                self.restart();
                if let Err(d) = self.compare(&candidate, allow) {
                    best = d;
                    progressed = true;
                    break;
                }
            }
            if !progressed {
                return best;
            }
        }
    }
}

/// Whether C's observation `c` is epmd-rs's `ours` cut short by a reset: the C epmd
/// writes NAMES and DUMP one line per write, Nagle holds lines back until the client
/// acknowledges, and a close with unread bytes (a RST) drops what was still held; epmd-rs
/// writes its reply at once (`reply-writes` in docs/PROTOCOL.md).
fn cut_by_reset(c: &str, ours: &str, allow: &Deliberate) -> bool {
    let (Some(c), Some(o)) = (c.strip_suffix(" RST"), ours.strip_suffix(" RST")) else {
        return false;
    };
    if o.starts_with(c) {
        allow.allow(ACCEPTED_KEYS[1]);
        true
    } else {
        false
    }
}

/// `scenario` without the steps `drop` selects.
fn without(scenario: &Scenario, drop: impl Fn(&Step) -> bool) -> Scenario {
    Scenario {
        relaxed: scenario.relaxed,
        steps: scenario
            .steps
            .iter()
            .filter(|s| !drop(s))
            .cloned()
            .collect(),
        requests: scenario.requests,
    }
}
