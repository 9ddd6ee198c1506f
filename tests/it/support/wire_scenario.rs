//! A wire scenario for the differential test: steps on numbered client connections, and
//! the one-line text form kept in `tests/it/difftest_wire_regressions.txt`.
//!
//! Text form: `relaxed` or `strict`, then the steps separated by spaces: `s<conn>=<hex>`
//! writes bytes (connecting first if needed), `c<conn>` closes, `h<conn>` half-closes
//! (`shutdown(SHUT_WR)`). Example: `strict s0=000e7800004d00000600050001610000 c0`.

use std::fmt;

/// One client action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Write these bytes on connection `conn` (connecting first if it is new).
    Send(u8, Vec<u8>),
    /// Close connection `conn`.
    Close(u8),
    /// Half-close connection `conn`.
    HalfClose(u8),
}

impl Step {
    /// The connection the step acts on.
    pub(crate) fn conn(&self) -> u8 {
        match self {
            Step::Send(c, _) | Step::Close(c) | Step::HalfClose(c) => *c,
        }
    }
}

/// A scenario: against a relaxed or a strict pair of daemons, a list of steps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scenario {
    /// Run against the daemons started with `-relaxed_command_check`.
    pub(crate) relaxed: bool,
    /// The steps, in order; after each one both daemons are synchronised and observed.
    pub(crate) steps: Vec<Step>,
    /// How many complete requests the steps carry (for the statistics).
    pub(crate) requests: u64,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.relaxed { "relaxed" } else { "strict" })?;
        for step in &self.steps {
            match step {
                Step::Send(c, bytes) => write!(f, " s{c}={}", to_hex(bytes))?,
                Step::Close(c) => write!(f, " c{c}")?,
                Step::HalfClose(c) => write!(f, " h{c}")?,
            }
        }
        Ok(())
    }
}

impl Scenario {
    /// Parses the text form (see the module doc).
    pub(crate) fn parse(line: &str) -> Result<Scenario, String> {
        let mut words = line.split_whitespace();
        let relaxed = match words.next() {
            Some("relaxed") => true,
            Some("strict") => false,
            other => return Err(format!("expected relaxed/strict, got {other:?}")),
        };
        let mut steps = Vec::new();
        for word in words {
            let conn = |s: &str| s.parse::<u8>().map_err(|e| format!("{word}: {e}"));
            let step = match word.split_at(1) {
                ("s", rest) => {
                    let (c, hex) = rest.split_once('=').ok_or(format!("{word}: no ="))?;
                    Step::Send(conn(c)?, from_hex(hex)?)
                }
                ("c", c) => Step::Close(conn(c)?),
                ("h", c) => Step::HalfClose(conn(c)?),
                _ => return Err(format!("unknown step {word}")),
            };
            steps.push(step);
        }
        let requests = steps.iter().filter(|s| matches!(s, Step::Send(..))).count() as u64;
        Ok(Scenario {
            relaxed,
            steps,
            requests,
        })
    }
}

/// Lower-case hex without separators.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex without separators.
pub(crate) fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err(format!("odd hex length: {text}"));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|e| format!("{text}: {e}")))
        .collect()
}
