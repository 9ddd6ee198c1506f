//! The per-source connection cap for IPv6 peers (issue 15, L4), from a network namespace
//! the test creates: a veth link whose host end holds `<p>:1::1/64` and `<p>:2::1/64`, and
//! whose namespace end holds two addresses of the first /64 (`<p>:1::2`, `<p>:1::3`) and
//! one of the second (`<p>:2::2`), where `<p>` is a unique-local prefix of the test. The
//! daemon runs in the host namespace on `-address <p>:1::1`.
//!
//! - by default a whole /64 is one source: two addresses of one /64 share the cap, another
//!   /64 has a cap of its own;
//! - `--ipv6-source-prefix 128` counts exact addresses again.
//!
//! Where namespaces or IPv6 are not available the test prints why and returns.

use std::fs::File;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::hostile::{assert_no_panic, connection_count, AdminSocket};
use crate::support::c_epmd::{run_command, CmdOutput};
use crate::support::daemon::Daemon;
use crate::support::raw::IO_TIMEOUT;
use crate::support::tmp;
use crate::support::wait::{poll_true, poll_until};

/// How long one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `ip args`.
fn ip(args: &[&str]) -> CmdOutput {
    run_command(Path::new("ip"), args, IP_TIMEOUT)
}

/// A namespace with an IPv6 veth link to the host namespace; deleted on drop.
struct Net6 {
    /// The namespace name.
    ns: String,
    /// The host end of the veth pair.
    host_if: String,
    /// The host end's address in the first /64 (the daemon listens there).
    host: Ipv6Addr,
    /// Two namespace addresses in the first /64, one in the second.
    same_a: Ipv6Addr,
    same_b: Ipv6Addr,
    other: Ipv6Addr,
}

impl Net6 {
    /// Creates the namespace and its link, or prints why it cannot and returns `None`.
    fn create(test: &str) -> Option<Net6> {
        let skip = |why: String| {
            println!("SKIPPED {test}: {why}; the IPv6 per-source cap is not tested here");
            None
        };
        if Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return skip("no `ip` command".into());
        }
        let pid = std::process::id();
        let n = tmp::unique_id();
        let ns = format!("epmdrs6-{pid}-{n}");
        let added = ip(&["netns", "add", &ns]);
        if !added.status.success() {
            return skip(format!("`ip netns add`: {}", added.stderr_text().trim()));
        }
        // A unique-local prefix of this test: fdXX:XXXX:XXXX::/48 from the pid and counter.
        let (g1, g2) = ((pid >> 16) as u16 | 0xfd00, pid as u16);
        let g3 = n as u16;
        let addr = |subnet: u16, host: u16| Ipv6Addr::new(g1, g2, g3, subnet, 0, 0, 0, host);
        let net = Net6 {
            host_if: format!("e6h{pid:x}{n:x}"),
            ns,
            host: addr(1, 1),
            same_a: addr(1, 2),
            same_b: addr(1, 3),
            other: addr(2, 2),
        };
        let peer_if = format!("e6p{pid:x}{n:x}");
        let veth = ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer_if,
        ]);
        if !veth.status.success() {
            return skip(format!("no veth pair: {}", veth.stderr_text().trim()));
        }
        let ns = net.ns.as_str();
        let mut steps: Vec<Vec<String>> = vec![vec!["link", "set", &peer_if, "netns", ns]
            .into_iter()
            .map(String::from)
            .collect()];
        for host_addr in [addr(1, 1), addr(2, 1)] {
            steps.push(
                [
                    "addr",
                    "add",
                    &format!("{host_addr}/64"),
                    "dev",
                    &net.host_if,
                    "nodad",
                ]
                .map(String::from)
                .to_vec(),
            );
        }
        steps.push(
            ["link", "set", &net.host_if, "up"]
                .map(String::from)
                .to_vec(),
        );
        for peer in [net.same_a, net.same_b, net.other] {
            steps.push(
                [
                    "netns",
                    "exec",
                    ns,
                    "ip",
                    "addr",
                    "add",
                    &format!("{peer}/64"),
                    "dev",
                    &peer_if,
                    "nodad",
                ]
                .map(String::from)
                .to_vec(),
            );
        }
        steps.push(
            ["netns", "exec", ns, "ip", "link", "set", &peer_if, "up"]
                .map(String::from)
                .to_vec(),
        );
        for step in steps {
            let args: Vec<&str> = step.iter().map(String::as_str).collect();
            let out = ip(&args);
            if !out.status.success() {
                return skip(format!(
                    "`ip {}`: {}",
                    args.join(" "),
                    out.stderr_text().trim()
                ));
            }
        }
        let listener = match std::net::TcpListener::bind((net.host, 0)) {
            Ok(l) => l,
            Err(e) => return skip(format!("cannot bind {}: {e}", net.host)),
        };
        let target = listener.local_addr().expect("local_addr");
        let reached = poll_true(Duration::from_secs(15), || {
            net.inside(move |src| connect_bound(src, target), net.same_a)
                .is_ok()
        });
        assert!(reached, "the namespace cannot reach {target} over IPv6");
        Some(net)
    }

    /// `/run/netns/<ns>`.
    fn netns_path(&self) -> PathBuf {
        ["/run/netns", "/var/run/netns"]
            .iter()
            .map(|d| Path::new(d).join(&self.ns))
            .find(|p| p.exists())
            .expect("namespace path")
    }

    /// Runs `f(src)` on a thread inside the namespace.
    fn inside<T: Send + 'static>(
        &self,
        f: impl FnOnce(Ipv6Addr) -> T + Send + 'static,
        src: Ipv6Addr,
    ) -> T {
        let path = self.netns_path();
        std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: setns changes this thread's network namespace only; the fd is open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", io::Error::last_os_error());
            f(src)
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// `n` connections from `src` in the namespace to `dst`.
    fn connect_many(&self, src: Ipv6Addr, dst: SocketAddr, n: usize) -> Vec<TcpStream> {
        self.inside(
            move |src| {
                (0..n)
                    .map(|i| {
                        connect_bound(src, dst)
                            .unwrap_or_else(|e| panic!("connection {i} from {src}: {e}"))
                    })
                    .collect()
            },
            src,
        )
    }
}

impl Drop for Net6 {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        if ip(&["link", "show", &self.host_if]).status.success() {
            let _ = ip(&["link", "del", &self.host_if]);
        }
    }
}

/// A TCP connection from `src` to `dst`.
fn connect_bound(src: Ipv6Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((src, 0)).into())?;
    s.connect_timeout(&dst.into(), IO_TIMEOUT)?;
    Ok(s.into())
}

/// Opens `first` connections from `a`, then `second` from `b` (both to `dst`) and waits
/// until the daemon has admitted or capped them all; returns (admitted, capped) since
/// start, with the streams (held open).
fn flood(
    net: &Net6,
    admin: &AdminSocket,
    dst: SocketAddr,
    from: &[(Ipv6Addr, usize)],
) -> (u64, u64, Vec<TcpStream>) {
    let mut held = Vec::new();
    let total: usize = from.iter().map(|(_, n)| n).sum();
    for (src, n) in from {
        held.extend(net.connect_many(*src, dst, *n));
    }
    let stats = poll_until(Duration::from_secs(10), || {
        let s = admin.stats();
        (s.capped_connections + connection_count(&s, "reading") >= total as u64).then_some(s)
    })
    .expect("the daemon did not account for every connection within 10 s");
    (
        connection_count(&stats, "reading"),
        stats.capped_connections,
        held,
    )
}

#[test]
fn netns_ipv6_sources_are_capped_per_64() {
    let Some(net) = Net6::create("netns_ipv6_sources_are_capped_per_64") else {
        return;
    };
    const PER_SOURCE: u64 = 10;

    // Default: one /64 is one source.
    {
        let admin = AdminSocket::new();
        let daemon = admin.start(
            Daemon::builder()
                .args(["--max-connections-per-source", "10"])
                .arg("-address")
                .arg(net.host.to_string()),
        );
        let dst = SocketAddr::from((net.host, daemon.port()));
        let (admitted, capped, _held) =
            flood(&net, &admin, dst, &[(net.same_a, 6), (net.same_b, 6)]);
        assert_eq!(
            (admitted, capped),
            (PER_SOURCE, 2),
            "12 connections from two addresses of one /64 with a cap of 10 per source"
        );
        // Another /64 is another source.
        let (admitted, capped, _more) = flood(&net, &admin, dst, &[(net.other, 5)]);
        assert_eq!((admitted, capped), (PER_SOURCE + 5, 2));
        assert_no_panic(&daemon);
        println!(
            "[netns6] per-source cap 10: 6 + 6 from two addresses of one /64: 10 admitted, \
             2 capped; 5 from another /64: all admitted"
        );
    }

    // --ipv6-source-prefix 128: exact addresses again.
    {
        let admin = AdminSocket::new();
        let daemon = admin.start(
            Daemon::builder()
                .args(["--max-connections-per-source", "10"])
                .args(["--ipv6-source-prefix", "128"])
                .arg("-address")
                .arg(net.host.to_string()),
        );
        let dst = SocketAddr::from((net.host, daemon.port()));
        let (admitted, capped, _held) =
            flood(&net, &admin, dst, &[(net.same_a, 6), (net.same_b, 6)]);
        assert_eq!((admitted, capped), (12, 0));
        assert_no_panic(&daemon);
    }
}
