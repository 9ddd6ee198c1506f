//! The non-local path for real (issue 6, item 5): each test creates its own network
//! namespace with a veth link to the host namespace and addresses it assigns itself
//! (a /29 in 10.250.0.0/16: the host end `.1`, two peer addresses `.2` and `.3` in the
//! namespace). The daemon runs in the host namespace on `-address <host end>`; clients run
//! in the namespace, so the daemon sees a genuinely non-local peer (spec §5):
//!
//! - ALIVE2, DUMP, KILL and STOP from the peer are closed without a reply (even with the
//!   relaxed command check) and counted in `non_local_refusals`; NAMES and PORT_PLEASE2
//!   are answered by default (raw, and with `epmd-rs query` run via `ip netns exec`);
//! - `--names-allow` / `--port-please-allow` (and `EPMD_RS_PORT_PLEASE_ALLOW`) refuse the
//!   peer with `local`, allow it again with a CIDR block that holds it, refuse it with one
//!   that does not; refusals are silent and counted in `policy_refusals`;
//! - connection caps: a flood from the peer is capped below `--max-connections` so local
//!   nodes can still register (the room reserved for local peers), and
//!   `--max-connections-per-source` caps one peer address and not another.
//!
//! Raw clients enter the namespace with `setns(CLONE_NEWNET)` on a thread of their own
//! (sockets keep the namespace they were created in). Where `ip netns add` is not permitted
//! (no root, no CAP_SYS_ADMIN, no iproute2), each test prints why and returns. The
//! namespace (and with it the veth pair) is deleted by a drop guard.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::hostile::{assert_no_panic, connection_count, request_count, AdminSocket};
use crate::support::c_epmd::{run_command, CmdOutput};
use crate::support::daemon::{Daemon, DaemonBuilder, BIN};
use crate::support::raw::{
    alive2_req, hex, names_req, port_please_req, register, request, Conn, IO_TIMEOUT,
};
use crate::support::tmp;
use crate::support::wait::{poll_true, poll_until};
use crate::wire::{assert_bytes_eq, req, unhex, x_creation};

/// How long one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `ip args`.
fn ip(args: &[&str]) -> CmdOutput {
    run_command(Path::new("ip"), args, IP_TIMEOUT)
}

/// Runs `ip args` and panics (with its stderr) if it fails.
fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        out.stderr_text()
    );
}

/// A network namespace linked to the host namespace by a veth pair. Dropping it deletes the
/// namespace, which destroys the veth pair too.
#[derive(Debug)]
struct TestNet {
    /// The namespace name (`epmdrs-<pid>-<n>`).
    ns: String,
    /// The host end of the veth pair.
    host_if: String,
    /// The host end's address.
    host_ip: Ipv4Addr,
    /// The two addresses of the namespace end.
    peers: [Ipv4Addr; 2],
}

impl TestNet {
    /// Creates the namespace and its link, or prints why it cannot and returns `None`.
    fn create(test: &str) -> Option<TestNet> {
        let skip = |why: &str| {
            println!(
                "SKIPPED {test}: network namespaces are not available here ({why}); the \
                 non-local path is not tested. Run the tests as root with iproute2 to test it."
            );
            None
        };
        if Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            return skip("no `ip` command");
        }
        let n = tmp::unique_id();
        let pid = std::process::id();
        let ns = format!("epmdrs-{pid}-{n}");
        let added = ip(&["netns", "add", &ns]);
        if !added.status.success() {
            return skip(&format!(
                "`ip netns add` failed: {}",
                added.stderr_text().trim()
            ));
        }
        let (host_ip, peers) = free_block(pid, n);
        let net = TestNet {
            host_if: format!("eh{pid:x}{n:x}"),
            ns,
            host_ip,
            peers,
        };
        if net.netns_path().is_none() {
            return skip("no /run/netns entry for the namespace");
        }
        let peer_if = format!("ep{pid:x}{n:x}");
        let ns = net.ns.as_str();
        let host_cidr = format!("{host_ip}/29");
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
            return skip(&format!("no veth pair: {}", veth.stderr_text().trim()));
        }
        ip_ok(&["link", "set", &peer_if, "netns", ns]);
        ip_ok(&["addr", "add", &host_cidr, "dev", &net.host_if]);
        ip_ok(&["link", "set", &net.host_if, "up"]);
        for peer in peers {
            let cidr = format!("{peer}/29");
            ip_ok(&[
                "netns", "exec", ns, "ip", "addr", "add", &cidr, "dev", &peer_if,
            ]);
        }
        ip_ok(&["netns", "exec", ns, "ip", "link", "set", &peer_if, "up"]);
        ip_ok(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
        net.wait_link();
        Some(net)
    }

    /// `/run/netns/<ns>` (or `/var/run/netns/<ns>`).
    fn netns_path(&self) -> Option<PathBuf> {
        ["/run/netns", "/var/run/netns"]
            .iter()
            .map(|d| Path::new(d).join(&self.ns))
            .find(|p| p.exists())
    }

    /// Waits (bounded) until a connection from the namespace reaches the host end.
    fn wait_link(&self) {
        let listener = std::net::TcpListener::bind((self.host_ip, 0)).expect("bind host end");
        let target = listener.local_addr().expect("local_addr");
        let reached = poll_true(Duration::from_secs(15), || {
            self.connect_from(self.peers[0], target).is_ok()
        });
        assert!(
            reached,
            "the namespace cannot reach {target} over the veth link"
        );
    }

    /// Runs `f` on a thread that has entered the namespace: the sockets it creates live
    /// there, whichever thread uses them afterwards.
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.netns_path().expect("namespace path");
        let worker = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
            // SAFETY: setns changes this thread's network namespace only; the fd is open.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "setns({}): {}",
                path.display(),
                io::Error::last_os_error()
            );
            f()
        });
        worker
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    /// Connects from `src` in the namespace to `dst`.
    fn connect_from(&self, src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
        self.inside(move || connect_bound(src, dst))
    }

    /// `n` connections from `src` in the namespace to `dst`.
    fn connect_many(&self, src: Ipv4Addr, dst: SocketAddr, n: usize) -> Vec<TcpStream> {
        self.inside(move || {
            (0..n)
                .map(|i| {
                    connect_bound(src, dst)
                        .unwrap_or_else(|e| panic!("connection {i} from {src} to {dst}: {e}"))
                })
                .collect()
        })
    }

    /// Sends `bytes` from the first peer address to `dst` and reads until the daemon closes.
    fn exchange(&self, dst: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let stream = self
            .connect_from(self.peers[0], dst)
            .unwrap_or_else(|e| panic!("connect from the namespace to {dst}: {e}"));
        let mut conn = Conn::from(stream);
        let _ = conn.try_write(bytes);
        conn.read_to_eof(IO_TIMEOUT)
    }

    /// Runs `epmd-rs <args>` inside the namespace (`ip netns exec`).
    fn run_ours(&self, args: &[&str]) -> CmdOutput {
        let mut all = vec!["netns", "exec", self.ns.as_str(), BIN];
        all.extend_from_slice(args);
        ip(&all)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        // Normally gone with the namespace; removed here if the namespace end never moved.
        if ip(&["link", "show", &self.host_if]).status.success() {
            let _ = ip(&["link", "del", &self.host_if]);
        }
    }
}

/// A /29 in 10.250.0.0/16 that no interface of the host namespace uses: its `.1` for the
/// host end and `.2`, `.3` for the namespace.
fn free_block(pid: u32, n: u64) -> (Ipv4Addr, [Ipv4Addr; 2]) {
    let used = ip(&["-4", "-o", "addr", "show"]).stdout_text();
    let start = (u64::from(pid) * 97 + n * 13) % 8192;
    for k in 0..8192 {
        let block = (start + k) % 8192;
        let (third, fourth) = ((block / 32) as u8, (block % 32 * 8) as u8);
        let base = Ipv4Addr::new(10, 250, third, fourth);
        let prefix = format!(" 10.250.{third}.");
        let clash = used.lines().any(|l| {
            l.split_once(&prefix).is_some_and(|(_, rest)| {
                let host: u8 = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(0);
                host / 8 == fourth / 8
            })
        });
        if !clash {
            let o = base.octets();
            let at = |d: u8| Ipv4Addr::new(o[0], o[1], o[2], o[3] + d);
            return (at(1), [at(2), at(3)]);
        }
    }
    panic!("no free /29 in 10.250.0.0/16");
}

/// A TCP connection from `src` (port chosen by the kernel) to `dst`.
fn connect_bound(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddr::from((src, 0)).into())?;
    s.connect_timeout(&dst.into(), IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    Ok(s.into())
}

/// Whether the daemon has closed `s` (EOF or reset) without sending a byte, within
/// `timeout`; `false` when it is still open then. Panics if data arrives.
fn silently_closed(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).expect("set_read_timeout");
    let mut buf = [0u8; 64];
    loop {
        return match s.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => panic!("expected a silent close, received {}", hex(&buf[..n])),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                true
            }
            Err(e) => panic!("reading from {:?}: unexpected error {e}", s.peer_addr()),
        };
    }
}

/// The exact NAMES reply of a daemon on `port` that holds only `alpha` on port 4101.
fn alpha_names(port: u16) -> Vec<u8> {
    let mut out = u32::from(port).to_be_bytes().to_vec();
    out.extend_from_slice(b"name alpha at port 4101\n");
    out
}

/// The exact PORT2_RESP for `alpha` registered with [`register`] on port 4101, version 6.
fn alpha_port2() -> Vec<u8> {
    unhex("77 00 10 05 4D 00 00 06 00 05 00 05 61 6C 70 68 61 00 00")
}

/// Starts `builder` with `-address <host end>` and an admin socket; registers `alpha`
/// locally and returns the daemon, the held registration and the address to reach it at.
fn start_on(
    net: &TestNet,
    admin: &AdminSocket,
    builder: DaemonBuilder,
) -> (Daemon, TcpStream, SocketAddr) {
    let daemon = admin.start(builder.arg("-address").arg(net.host_ip.to_string()));
    let (alpha, reply) = register(daemon.port(), "alpha", 4101, 6);
    x_creation("alpha", &reply);
    let dst = SocketAddr::from((net.host_ip, daemon.port()));
    (daemon, alpha, dst)
}

#[test]
fn netns_local_only_requests_from_a_non_local_peer_are_refused() {
    let Some(net) = TestNet::create("netns_local_only_requests_from_a_non_local_peer_are_refused")
    else {
        return;
    };
    let admin = AdminSocket::new();
    // Relaxed: KILL and STOP would be honoured for a local peer; locality must still win.
    let (mut daemon, alpha, dst) = start_on(
        &net,
        &admin,
        Daemon::builder().arg("-relaxed_command_check"),
    );
    let port = daemon.port();
    let before = admin.stats();

    let refused = [
        ("ALIVE2", alive2_req(4200, 77, 0, 6, 5, b"intruder", b"")),
        ("DUMP", req("00 01 64")),
        ("KILL", req("00 01 6B")),
        ("STOP alpha", req("00 06 73 61 6C 70 68 61")),
    ];
    for (what, bytes) in &refused {
        let reply = net.exchange(dst, bytes);
        assert!(
            reply.is_empty(),
            "{what} from the non-local peer {} was answered: {}",
            net.peers[0],
            hex(&reply)
        );
    }
    // Anyone may list and look up.
    assert_bytes_eq(
        "NAMES from the peer",
        &alpha_names(port),
        &net.exchange(dst, &names_req()),
    );
    assert_bytes_eq(
        "PORT_PLEASE2 from the peer",
        &alpha_port2(),
        &net.exchange(dst, &port_please_req(b"alpha")),
    );
    // Our own client, run inside the namespace.
    let names = net.run_ours(&[
        "query",
        "names",
        "--host",
        &net.host_ip.to_string(),
        "--port",
        &port.to_string(),
        "--json",
    ]);
    assert!(
        names.status.success(),
        "query names: {}",
        names.stderr_text()
    );
    let json: serde_json::Value = serde_json::from_slice(&names.stdout).expect("query JSON");
    assert_eq!(
        json,
        serde_json::json!({"epmd_port": port, "nodes": [{"name": "alpha", "port": 4101}]})
    );
    let lookup = net.run_ours(&[
        "query",
        "port",
        "alpha",
        "--host",
        &net.host_ip.to_string(),
        "--port",
        &port.to_string(),
        "--json",
    ]);
    assert!(
        lookup.status.success(),
        "query port: {}",
        lookup.stderr_text()
    );
    let json: serde_json::Value = serde_json::from_slice(&lookup.stdout).expect("query JSON");
    assert_eq!(
        (json["found"].as_bool(), json["port"].as_u64()),
        (Some(true), Some(4101))
    );

    // A peer using the connection's own local address is local (spec §5): DUMP from the
    // host namespace to the host end is answered.
    let mut own = Conn::connect_to(dst);
    own.write(&req("00 01 64"));
    let dump = own.read_to_eof(IO_TIMEOUT);
    assert!(
        dump.starts_with(&u32::from(port).to_be_bytes()) && dump.len() > 4,
        "DUMP from the host's own address: {}",
        hex(&dump)
    );

    let after = admin.stats();
    assert_eq!(
        after.non_local_refusals - before.non_local_refusals,
        refused.len() as u64,
        "non_local_refusals: {before:#?} -> {after:#?}"
    );
    for key in [
        "alive2.registered",
        "kill.honoured",
        "stop.stopped",
        "stop.noexist",
    ] {
        assert_eq!(
            request_count(&after, key),
            request_count(&before, key),
            "{key}"
        );
    }
    assert_eq!(
        request_count(&after, "names") - request_count(&before, "names"),
        2
    );
    assert_eq!(
        request_count(&after, "port_please2.found") - request_count(&before, "port_please2.found"),
        2
    );
    assert_eq!(after.policy_refusals, 0);
    assert_eq!(
        after.registrations, 1,
        "alpha lost or intruder registered: {after:#?}"
    );
    assert!(daemon.is_running(), "a non-local KILL stopped the daemon");
    let mut alpha = Conn::from(alpha);
    assert!(
        !alpha.is_closed_within(Duration::from_millis(10)),
        "alpha's connection closed"
    );
    assert_bytes_eq(
        "NAMES locally",
        &alpha_names(port),
        &request(port, &names_req()),
    );
    assert_no_panic(&daemon);
    println!(
        "[netns] peer {} -> {dst}: ALIVE2/DUMP/KILL/STOP refused silently ({} non_local_refusals), \
         NAMES and PORT_PLEASE2 answered",
        net.peers[0],
        after.non_local_refusals
    );
}

#[test]
fn netns_names_and_port_please_policies() {
    let Some(net) = TestNet::create("netns_names_and_port_please_policies") else {
        return;
    };
    let peer = net.peers[0];
    let o = net.host_ip.octets();
    let block = format!("{}.{}.{}.{}/29", o[0], o[1], o[2], o[3] - 1);
    // (label, daemon settings, NAMES allowed for the peer, lookups allowed for the peer,
    // NAMES allowed locally)
    let configs: Vec<(&str, DaemonBuilder, bool, bool, bool)> = vec![
        (
            "--names-allow local --port-please-allow local",
            Daemon::builder().args(["--names-allow", "local", "--port-please-allow", "local"]),
            false,
            false,
            true,
        ),
        (
            "--names-allow <peer's /29> EPMD_RS_PORT_PLEASE_ALLOW=local,<peer>",
            Daemon::builder()
                .args(["--names-allow", &block])
                .env("EPMD_RS_PORT_PLEASE_ALLOW", format!("local,{peer}")),
            true,
            true,
            false,
        ),
        (
            "--names-allow local,10.251.0.0/16 --port-please-allow 10.250.0.0/16",
            Daemon::builder().args([
                "--names-allow",
                "local,10.251.0.0/16",
                "--port-please-allow",
                "10.250.0.0/16",
            ]),
            false,
            true,
            true,
        ),
    ];
    for (label, builder, names_ok, lookup_ok, local_names_ok) in configs {
        let admin = AdminSocket::new();
        let (daemon, _alpha, dst) = start_on(&net, &admin, builder);
        let port = daemon.port();
        let port_text = port.to_string();
        let host_text = net.host_ip.to_string();

        let names = net.exchange(dst, &names_req());
        let lookup = net.exchange(dst, &port_please_req(b"alpha"));
        let local_names = request(port, &names_req());
        let mut refusals = 0;
        for (what, ok, reply, expected) in [
            ("NAMES from the peer", names_ok, &names, alpha_names(port)),
            (
                "PORT_PLEASE2 from the peer",
                lookup_ok,
                &lookup,
                alpha_port2(),
            ),
            (
                "NAMES from 127.0.0.1",
                local_names_ok,
                &local_names,
                alpha_names(port),
            ),
        ] {
            if ok {
                assert_bytes_eq(&format!("{label}: {what}"), &expected, reply);
            } else {
                refusals += 1;
                assert!(
                    reply.is_empty(),
                    "{label}: {what} must be refused silently, got {}",
                    hex(reply)
                );
            }
        }
        let query = net.run_ours(&[
            "query", "names", "--host", &host_text, "--port", &port_text, "--json",
        ]);
        assert_eq!(
            query.status.success(),
            names_ok,
            "{label}: `query names` from the namespace: {} {}",
            query.stdout_text(),
            query.stderr_text()
        );
        let stats = admin.stats();
        // Plus the refused `query names` run.
        let expected_refusals = refusals + u64::from(!names_ok);
        assert_eq!(
            stats.policy_refusals, expected_refusals,
            "{label}: policy_refusals: {stats:#?}"
        );
        assert_eq!(stats.non_local_refusals, 0, "{label}");
        assert_eq!(stats.registrations, 1, "{label}");
        assert_no_panic(&daemon);
        println!(
            "[netns] {label}: peer NAMES {}, peer PORT_PLEASE2 {}, local NAMES {}; \
             policy_refusals {}",
            if names_ok { "allowed" } else { "refused" },
            if lookup_ok { "allowed" } else { "refused" },
            if local_names_ok { "allowed" } else { "refused" },
            stats.policy_refusals
        );
    }
}

#[test]
fn netns_connection_caps_keep_room_for_local_nodes() {
    let Some(net) = TestNet::create("netns_connection_caps_keep_room_for_local_nodes") else {
        return;
    };
    let [peer, other_peer] = net.peers;

    // The local reserve: --max-connections 40, a flood of 100 from the peer.
    {
        const MAX: usize = 40;
        const FLOOD: usize = 100;
        const LOCAL_NODES: u16 = 10;
        let admin = AdminSocket::new();
        let (daemon, _alpha, dst) = start_on(
            &net,
            &admin,
            Daemon::builder().args(["--max-connections", "40"]),
        );
        let port = daemon.port();
        let mut flood = net.connect_many(peer, dst, FLOOD);
        let stats = poll_until(Duration::from_secs(10), || {
            let s = admin.stats();
            (s.capped_connections + connection_count(&s, "reading") >= FLOOD as u64).then_some(s)
        })
        .expect("the daemon did not account for the flood within 10 s");
        let admitted = connection_count(&stats, "reading");
        let capped = stats.capped_connections;
        assert_eq!(admitted + capped, FLOOD as u64, "{stats:#?}");
        assert!(
            admitted + 1 + u64::from(LOCAL_NODES) <= MAX as u64,
            "the peer got {admitted} of {MAX} connections: no room kept for local nodes"
        );
        let closed = flood
            .iter_mut()
            .map(|s| silently_closed(s, Duration::from_millis(100)))
            .filter(|closed| *closed)
            .count();
        assert_eq!(
            closed as u64, capped,
            "capped connections that the peer saw closed"
        );

        // While the flood is held, local nodes still register.
        let regs: Vec<TcpStream> = (0..LOCAL_NODES)
            .map(|i| {
                let name = format!("local{i}");
                let (conn, reply) = register(port, &name, 4300 + i, 6);
                x_creation(&name, &reply);
                conn
            })
            .collect();
        // And the peer is still capped.
        let mut more = net.connect_many(peer, dst, 1);
        assert!(
            silently_closed(&mut more[0], IO_TIMEOUT),
            "a new connection from the flooding peer was admitted"
        );
        let stats = admin.stats();
        assert_eq!(
            stats.registrations,
            u64::from(LOCAL_NODES) + 1,
            "{stats:#?}"
        );
        assert_no_panic(&daemon);
        println!(
            "[netns] --max-connections {MAX}: flood of {FLOOD} from {peer}: {admitted} admitted, \
             {capped} capped; {LOCAL_NODES} local registrations succeeded during the flood"
        );
        drop(regs);
    }

    // The per-source cap: 30 from one peer address, 5 from another.
    {
        const PER_SOURCE: usize = 10;
        let admin = AdminSocket::new();
        let (daemon, _alpha, dst) = start_on(
            &net,
            &admin,
            Daemon::builder().args(["--max-connections-per-source", "10"]),
        );
        let mut first = net.connect_many(peer, dst, 30);
        let stats = poll_until(Duration::from_secs(10), || {
            let s = admin.stats();
            (s.capped_connections + connection_count(&s, "reading") >= 30).then_some(s)
        })
        .expect("the daemon did not account for the 30 connections");
        assert_eq!(
            connection_count(&stats, "reading"),
            PER_SOURCE as u64,
            "{stats:#?}"
        );
        assert_eq!(stats.capped_connections, 20, "{stats:#?}");
        let closed = first
            .iter_mut()
            .map(|s| silently_closed(s, Duration::from_millis(100)))
            .filter(|closed| *closed)
            .count();
        assert_eq!(closed, 20);
        let mut second = net.connect_many(other_peer, dst, 5);
        assert!(
            second
                .iter_mut()
                .all(|s| !silently_closed(s, Duration::from_millis(100))),
            "connections from {other_peer} were capped by {peer}'s count"
        );
        let stats = admin.stats();
        assert_eq!(stats.capped_connections, 20, "{stats:#?}");
        assert_eq!(connection_count(&stats, "reading"), PER_SOURCE as u64 + 5);
        let (_late, reply) = register(daemon.port(), "late", 4400, 6);
        x_creation("late", &reply);
        assert_no_panic(&daemon);
        println!(
            "[netns] --max-connections-per-source {PER_SOURCE}: 30 from {peer}: 10 admitted, \
             20 capped; 5 from {other_peer}: all admitted"
        );
    }
}
