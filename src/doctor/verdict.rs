//! The doctor's verdicts: one fixed word (the JSON `verdict` field), one exit code and one
//! sentence saying what to check next, for each way a node can fail to be reached.

use std::fmt;

use serde::Serialize;

/// The outcome of `epmd-rs doctor NODE@HOST`: `Ok`, or the first probe that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every probe passed (the cookie too, when one was given).
    Ok,
    /// HOST does not resolve to an address.
    HostUnresolved,
    /// Nothing accepted a connection on HOST's epmd port (refused or no answer).
    EpmdUnreachable,
    /// epmd accepted the connection but closed it without answering (a policy, say).
    EpmdRefused,
    /// epmd answered but has no node of that name.
    NameNotRegistered,
    /// The node's distribution port refused the connection or did not answer.
    DistUnreachable,
    /// The distribution port speaks TLS (`-proto_dist inet_tls`), not the plain handshake.
    DistTls,
    /// The node refused the handshake: not allowed, name in use, or no common version.
    HandshakeRefused,
    /// The node closed the handshake after the challenge reply: the cookies differ.
    CookieRejected,
    /// The node calls itself by another host name than the one asked for.
    HostNameMismatch,
}

/// Every verdict, in probe order (`Ok` first).
pub const ALL: [Verdict; 10] = [
    Verdict::Ok,
    Verdict::HostUnresolved,
    Verdict::EpmdUnreachable,
    Verdict::EpmdRefused,
    Verdict::NameNotRegistered,
    Verdict::DistUnreachable,
    Verdict::DistTls,
    Verdict::HandshakeRefused,
    Verdict::CookieRejected,
    Verdict::HostNameMismatch,
];

impl Verdict {
    /// The fixed word printed and put in the JSON `verdict` field.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::HostUnresolved => "host_unresolved",
            Verdict::EpmdUnreachable => "epmd_unreachable",
            Verdict::EpmdRefused => "epmd_refused",
            Verdict::NameNotRegistered => "name_not_registered",
            Verdict::DistUnreachable => "dist_unreachable",
            Verdict::DistTls => "dist_tls",
            Verdict::HandshakeRefused => "handshake_refused",
            Verdict::CookieRejected => "cookie_rejected",
            Verdict::HostNameMismatch => "host_name_mismatch",
        }
    }

    /// The process exit code: 0 for `ok`, 10–18 in probe order for the failures (1 stays
    /// for usage errors, when no probe ran).
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Ok => 0,
            Verdict::HostUnresolved => 10,
            Verdict::EpmdUnreachable => 11,
            Verdict::EpmdRefused => 12,
            Verdict::NameNotRegistered => 13,
            Verdict::DistUnreachable => 14,
            Verdict::DistTls => 15,
            Verdict::HandshakeRefused => 16,
            Verdict::CookieRejected => 17,
            Verdict::HostNameMismatch => 18,
        }
    }

    /// What to check next, in one sentence.
    pub fn hint(self) -> &'static str {
        match self {
            Verdict::Ok => "The node is reachable as a distributed Erlang node from here.",
            Verdict::HostUnresolved => {
                "Check the host name in DNS or /etc/hosts on this machine (nodes resolve it the same way)."
            }
            Verdict::EpmdUnreachable => {
                "Check that epmd runs on that host, listens on this address (-address, ERL_EPMD_ADDRESS) and that a firewall lets the epmd port through."
            }
            Verdict::EpmdRefused => {
                "Check the epmd's access policy (--port-please-allow, --names-allow) or connection limits for this client's address."
            }
            Verdict::NameNotRegistered => {
                "Check that the node is started with this exact name (-name/-sname) and is still running."
            }
            Verdict::DistUnreachable => {
                "Check the node's inet_dist_use_interface and inet_dist_listen_min/max settings and that a firewall lets that port through."
            }
            Verdict::DistTls => {
                "The node runs TLS distribution: connect with -proto_dist inet_tls and matching ssl_dist options."
            }
            Verdict::HandshakeRefused => {
                "Check the node's allowed-nodes list (net_kernel:allow/1), that this name is not already connected, and the OTP versions."
            }
            Verdict::CookieRejected => {
                "Use the node's cookie (-setcookie, ~/.erlang.cookie of the user running it)."
            }
            Verdict::HostNameMismatch => {
                "Connect with the node's own name as it reports it, or start the node with -name NAME@HOST matching how others reach it."
            }
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_exit_codes_are_distinct_and_serde_agrees() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.word(), b.word());
                assert_ne!(a.exit_code(), b.exit_code());
            }
            assert_eq!(
                serde_json::to_string(a).unwrap(),
                format!("\"{}\"", a.word())
            );
            assert!(a.hint().ends_with('.'), "{a}: one sentence");
            assert!(!a.hint().contains(". "), "{a}: one sentence");
            assert!(a.exit_code() == 0 || a.exit_code() >= 10);
        }
        assert_eq!(Verdict::Ok.exit_code(), 0);
        assert_eq!(Verdict::HostNameMismatch.exit_code(), 18);
    }
}
