//! Rewrites epmd's single-dash long flags (`-port 4369`, `-names`, `-relaxed_command_check`)
//! into the `--long=value` spelling clap parses, and enforces epmd's placement rules.
//!
//! epmd reads its arguments strictly left to right, and a client option (`-names`, `-dump`,
//! `-started`, `-kill`, `-stop NAME`) must end the command line. Anything epmd would not
//! accept (`-h`, `-help`, unknown flags, a missing value) is a [`UsageError`]: the caller
//! prints epmd's usage text to stderr and exits 1, as epmd does.

use std::ffi::OsString;
use std::fmt;

/// epmd would print its usage and exit 1 for these arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UsageError;

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid arguments")
    }
}

impl std::error::Error for UsageError {}

/// Subcommands of epmd-rs; from one of these on, arguments are passed to clap unchanged.
pub const SUBCOMMANDS: &[&str] = &["help", "admin", "query", "generate", "doctor", "wait"];

/// Flags without a value: epmd spelling → clap spelling.
const SWITCHES: &[(&str, &str)] = &[
    ("-d", "--debug"),
    ("-debug", "--debug"),
    ("-daemon", "--daemon"),
    ("-relaxed_command_check", "--relaxed-command-check"),
    ("-systemd", "--systemd"),
];

/// Flags with one value: epmd spelling → clap spelling.
const VALUED: &[(&str, &str)] = &[
    ("-port", "--port"),
    ("-address", "--address"),
    ("-packet_timeout", "--packet-timeout"),
    ("-delay_accept", "--delay-accept"),
    ("-delay_write", "--delay-write"),
];

/// Valued flags whose value the C epmd checks where it reads it, left to right: `atoi`
/// of 0 (zero or not a number) is a usage error, even when a later occurrence would be
/// valid and in client mode (`-packet_timeout 0 -names`).
const NUMERIC: &[&str] = &["-port", "-packet_timeout", "-delay_accept", "-delay_write"];

/// Client options without a value; each must be the last argument.
const CLIENT: &[(&str, &str)] = &[
    ("-names", "--names"),
    ("-dump", "--dump"),
    ("-started", "--started"),
    ("-kill", "--kill"),
];

/// Normalises `args` (without the program name) for clap.
///
/// `--`-prefixed arguments and everything from a subcommand on pass through unchanged, so
/// the modern spelling keeps working.
pub fn normalise(args: &[OsString]) -> Result<Vec<OsString>, UsageError> {
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(text) = arg.to_str() else {
            return Err(UsageError);
        };
        let last = i + 1 == args.len();
        if SUBCOMMANDS.contains(&text) {
            out.extend(args[i..].iter().cloned());
            break;
        }
        if text.starts_with("--") {
            // The modern spelling: a following word that is not a flag or a subcommand is
            // its value (`--admin-socket /run/x.sock`).
            out.push(arg.clone());
            let next = args.get(i + 1).and_then(|a| a.to_str());
            if let Some(value) = next {
                if !text.contains('=') && !value.starts_with('-') && !SUBCOMMANDS.contains(&value) {
                    out.push(args[i + 1].clone());
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        if let Some((_, long)) = SWITCHES.iter().find(|(s, _)| *s == text) {
            out.push(OsString::from(long));
        } else if let Some((_, long)) = VALUED.iter().find(|(s, _)| *s == text) {
            let value = args.get(i + 1).ok_or(UsageError)?;
            if NUMERIC.contains(&text) && atoi(&value.to_string_lossy()) == 0 {
                return Err(UsageError);
            }
            out.push(joined(long, value));
            i += 1;
        } else if let Some((_, long)) = CLIENT.iter().find(|(s, _)| *s == text) {
            if !last {
                return Err(UsageError);
            }
            out.push(OsString::from(long));
        } else if text == "-stop" {
            // `-stop NAME` must be exactly the last two arguments.
            if i + 2 != args.len() {
                return Err(UsageError);
            }
            out.push(joined("--stop", &args[i + 1]));
            i += 1;
        } else {
            // -h, -help, unknown flags and stray words: epmd prints its usage.
            return Err(UsageError);
        }
        i += 1;
    }
    Ok(out)
}

fn joined(long: &str, value: &OsString) -> OsString {
    let mut s = OsString::from(long);
    s.push("=");
    s.push(value);
    s
}

/// glibc's `atoi`: `(int) strtol(s, NULL, 10)`. Optional leading white space and sign,
/// then digits up to the first other character; no digits gives 0. A value past the
/// 64-bit `long` saturates to `LONG_MAX` / `LONG_MIN` as `strtol` does, and the cast to
/// `int` keeps the low 32 bits (`-port 99999999999999999999` is -1, port 65535).
pub fn atoi(s: &str) -> i32 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    // The magnitude, saturated just past i64's range (enough to tell both limits apart).
    let limit = i128::from(i64::MAX) + 1;
    let mut n: i128 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = (n * 10 + i128::from(b - b'0')).min(limit);
    }
    let n = if negative { -n } else { n };
    let long = n.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    long as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Result<Vec<String>, UsageError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        normalise(&args).map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn every_switch_spelling() {
        assert_eq!(norm(&["-d"]).unwrap(), ["--debug"]);
        assert_eq!(norm(&["-debug", "-d"]).unwrap(), ["--debug", "--debug"]);
        assert_eq!(norm(&["-daemon"]).unwrap(), ["--daemon"]);
        assert_eq!(
            norm(&["-relaxed_command_check"]).unwrap(),
            ["--relaxed-command-check"]
        );
        assert_eq!(norm(&["-systemd"]).unwrap(), ["--systemd"]);
    }

    #[test]
    fn every_valued_spelling() {
        assert_eq!(norm(&["-port", "4369"]).unwrap(), ["--port=4369"]);
        assert_eq!(norm(&["-port", "-5"]).unwrap(), ["--port=-5"]);
        assert_eq!(norm(&["-port", "12x"]).unwrap(), ["--port=12x"]);
        assert_eq!(
            norm(&["-address", "127.0.0.1,::1"]).unwrap(),
            ["--address=127.0.0.1,::1"]
        );
        assert_eq!(
            norm(&["-packet_timeout", "5"]).unwrap(),
            ["--packet-timeout=5"]
        );
        assert_eq!(norm(&["-delay_accept", "1"]).unwrap(), ["--delay-accept=1"]);
        assert_eq!(norm(&["-delay_write", "2"]).unwrap(), ["--delay-write=2"]);
        assert_eq!(norm(&["-port"]), Err(UsageError));
        assert_eq!(norm(&["-address"]), Err(UsageError));
    }

    #[test]
    fn each_numeric_value_is_checked_where_it_stands() {
        for flag in NUMERIC {
            assert_eq!(norm(&[flag, "0", flag, "5"]), Err(UsageError), "{flag}");
            assert_eq!(norm(&[flag, "abc", "-names"]), Err(UsageError), "{flag}");
            assert_eq!(norm(&[flag, "", "-names"]), Err(UsageError), "{flag}");
            assert!(norm(&[flag, "5", flag, "6", "-names"]).is_ok(), "{flag}");
        }
        // The C epmd never checks an address list in client mode, nor twice.
        assert!(norm(&["-address", "junk", "-address", "junk", "-names"]).is_ok());
    }

    #[test]
    fn client_options_must_be_last() {
        assert_eq!(
            norm(&["-port", "1", "-names"]).unwrap(),
            ["--port=1", "--names"]
        );
        assert_eq!(norm(&["-dump"]).unwrap(), ["--dump"]);
        assert_eq!(norm(&["-started"]).unwrap(), ["--started"]);
        assert_eq!(norm(&["-kill"]).unwrap(), ["--kill"]);
        assert_eq!(norm(&["-stop", "foo"]).unwrap(), ["--stop=foo"]);
        assert_eq!(
            norm(&["-d", "-stop", "-x"]).unwrap(),
            ["--debug", "--stop=-x"]
        );
        assert_eq!(norm(&["-names", "-d"]), Err(UsageError));
        assert_eq!(norm(&["-kill", "-port", "1"]), Err(UsageError));
        assert_eq!(norm(&["-stop"]), Err(UsageError));
        assert_eq!(norm(&["-stop", "a", "b"]), Err(UsageError));
    }

    #[test]
    fn help_and_unknown_flags_are_usage_errors() {
        for bad in ["-h", "-help", "-x", "-", "-names2", "stray", "-p"] {
            assert_eq!(norm(&[bad]), Err(UsageError), "{bad}");
        }
    }

    #[test]
    fn modern_spellings_and_subcommands_pass_through() {
        assert_eq!(norm(&["--help"]).unwrap(), ["--help"]);
        assert_eq!(
            norm(&["-d", "--port", "5"]).unwrap(),
            ["--debug", "--port", "5"]
        );
        assert_eq!(
            norm(&["--admin-socket", "/x", "-relaxed_command_check"]).unwrap(),
            ["--admin-socket", "/x", "--relaxed-command-check"]
        );
        assert_eq!(
            norm(&["--debug", "admin", "nodes"]).unwrap(),
            ["--debug", "admin", "nodes"]
        );
        assert_eq!(norm(&["help", "-x"]).unwrap(), ["help", "-x"]);
        assert_eq!(
            norm(&["admin", "--json", "stats"]).unwrap(),
            ["admin", "--json", "stats"]
        );
    }
}
