//! A real multi-host cluster (issue 13): four hosts as network namespaces on one bridge
//! ([`cluster_net`](crate::cluster_net)), epmd-rs on each host's address, three real Erlang
//! nodes per host with long names forming a full mesh (`net_kernel:connect_node`) and a
//! `global` name, while one host's epmd-rs is handed over again and again (SIGUSR2). Then,
//! from a fifth namespace (the prober), `doctor` and `query names --hosts` against the
//! healthy cluster (all `ok`) and against one injected fault each:
//!
//! | fault | how | verdict |
//! |---|---|---|
//! | wrong cookie | a node started with another cookie | `cookie_rejected` |
//! | dist port on loopback only | `-kernel inet_dist_use_interface {127,0,0,1}` | `dist_unreachable` |
//! | epmd on loopback only | a second epmd-rs `-address 127.0.0.1` | `epmd_unreachable` |
//! | policy refusing the prober | `--port-please-allow 10.77.0.0/29` (the prober is .100) | `epmd_refused` |
//! | dist port dropped | `tc`: the host's packets from that port go to a zero-length FIFO | `dist_unreachable` (no answer) |
//! | epmd port dropped | the same for the policy epmd's port, after its own row | `epmd_unreachable` (no answer) |
//! | TLS distribution | `-proto_dist inet_tls`, a self-signed certificate | `dist_tls` |
//! | host name mismatch | `-name alias@db4.cluster.test`, asked as `alias@10.77.0.4` | `host_name_mismatch` |
//! | unregistered name | nothing | `name_not_registered` |
//!
//! The figures (mesh size, formation time, hand-overs, fleet query times) are printed;
//! `cargo test --test it cluster:: -- --nocapture` shows them.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::cluster_net::{cmd_ok, Host, Net, NsProc};
use crate::support::daemon::BIN;
use crate::support::tmp::unique_path as scratch;
use crate::support::wait::{poll_true, poll_until};

/// Hosts in the cluster, and nodes per host.
const HOSTS: u8 = 4;
const NODES_PER_HOST: usize = 3;
/// The cluster's cookie.
const COOKIE: &str = "clustercookie";
/// The prober's address (outside the policy's 10.77.0.0/29).
const PROBER: u8 = 100;
/// How long a node may take to start (many start at once on a small machine).
const NODE_START: Duration = Duration::from_secs(60);
/// A doctor run against any fault must end within this ("within a few seconds").
const DOCTOR_BOUND: Duration = Duration::from_secs(5);

/// The `-eval` of a node that only says it is up.
fn idle_eval() -> String {
    "io:format(\"CLUSTER_READY ~s~n\", [node()]), receive after infinity -> ok end".to_owned()
}

/// The `-eval` of a mesh node: say it is up, wait for the go file (the list of peers),
/// connect to every peer, register (leader) or look up the `global` name, print the
/// outcome, then stay up.
fn mesh_eval(go: &str, leader: bool) -> String {
    let register = if leader {
        "yes = global:register_name(cluster_leader, self()),"
    } else {
        ""
    };
    format!(
        r#"io:format("CLUSTER_READY ~s~n", [node()]),
Wait = fun W(0) -> timeout; W(N) -> case file:consult("{go}") of {{ok, [Ps]}} -> Ps; _ -> timer:sleep(10), W(N - 1) end end,
case Wait(9000) of
  timeout -> io:format("CLUSTER_FAILED no go file~n"), halt(3);
  Peers ->
    T0 = erlang:monotonic_time(millisecond),
    Bad = [P || P <- Peers, P =/= node(), net_kernel:connect_node(P) =/= true],
    T1 = erlang:monotonic_time(millisecond),
    io:format("CLUSTER_CONNECTED ~b ~w~n", [T1 - T0, Bad]),
    {register}
    G = fun Gw(0) -> undefined; Gw(N) -> case global:whereis_name(cluster_leader) of undefined -> timer:sleep(20), Gw(N - 1); Pid -> Pid end end,
    L = G(1500),
    Leader = case L of undefined -> none; _ -> node(L) end,
    io:format("CLUSTER_MESH ~b ~s~n", [length(nodes()), Leader])
end,
receive after infinity -> ok end"#
    )
}

/// Starts epmd-rs in `host` with `args` (plus a private admin socket and a pid file) and
/// waits until `check_ip:port` accepts from inside the host.
fn start_epmd(host: &Host, label: &str, args: &[&str], check_ip: Ipv4Addr, port: u16) -> NsProc {
    let admin = scratch(&format!("{label}.sock"));
    let pid_file = scratch(&format!("{label}.pid"));
    let mut c = host.command(BIN);
    c.args(args)
        .arg("--admin-socket")
        .arg(&admin)
        .arg("--pid-file")
        .arg(&pid_file);
    let mut p = NsProc::spawn(label, c, Some(pid_file));
    let up = poll_true(Duration::from_secs(30), || {
        p.is_running() && host.can_connect(check_ip, port)
    });
    assert!(
        up,
        "{label} did not listen on {check_ip}:{port}:\n{}",
        p.output()
    );
    p
}

/// Starts `erl` in `host` without waiting.
fn spawn_node(host: &Host, name: &str, cookie: &str, extra: &[&str], eval: &str) -> NsProc {
    spawn_node_env(host, name, cookie, extra, eval, &[])
}

/// Starts `erl` in `host` with extra environment variables, without waiting.
fn spawn_node_env(
    host: &Host,
    name: &str,
    cookie: &str,
    extra: &[&str],
    eval: &str,
    env: &[(&str, &str)],
) -> NsProc {
    let mut c = host.command("erl");
    c.args([
        "-noshell",
        "-noinput",
        "-start_epmd",
        "false",
        "-name",
        name,
    ])
    .args(["-setcookie", cookie])
    .args(extra)
    .args(["-eval", eval]);
    for (k, v) in env {
        c.env(k, v);
    }
    NsProc::spawn(name, c, None)
}

/// Runs `doctor <args> --json` in the prober; checks the verdict, its exit code and the
/// time bound; returns the JSON.
fn doctor(prober: &Host, args: &[&str], word: &str, code: i32) -> serde_json::Value {
    let mut all = vec!["doctor"];
    all.extend_from_slice(args);
    all.push("--json");
    let (out, took) = prober.epmd_rs(&all, Duration::from_secs(30));
    let text = out.stdout_text();
    let json: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("doctor {args:?}: not JSON ({e}): {text}"));
    assert_eq!(json["verdict"], word, "doctor {args:?}: {text}");
    assert_eq!(out.status.code(), Some(code), "doctor {args:?}: {text}");
    // The run's own clock (process start-up in the namespace left out).
    let ms = json["elapsed_ms"].as_u64().unwrap();
    assert!(
        u128::from(ms) < DOCTOR_BOUND.as_millis(),
        "doctor {args:?} took {ms} ms"
    );
    println!(
        "  {word:<20} exit {code:<3} {ms:>5} ms ({:>5} ms with start-up)  doctor {}",
        took.as_millis(),
        args.join(" ")
    );
    json
}

/// Runs `query names --hosts <list> --json` in the prober: (exit code, JSON, the run's own
/// time from its JSON, process start-up left out).
fn fleet(prober: &Host, list: &str) -> (i32, serde_json::Value, Duration) {
    let (out, _) = prober.epmd_rs(
        &[
            "query",
            "names",
            "--hosts",
            list,
            "--json",
            "--timeout",
            "1",
        ],
        Duration::from_secs(30),
    );
    let json: serde_json::Value = serde_json::from_str(out.stdout_text().trim())
        .unwrap_or_else(|e| panic!("query {list}: not JSON ({e}): {}", out.stdout_text()));
    let took = Duration::from_millis(json["elapsed_ms"].as_u64().unwrap());
    (out.status.code().unwrap_or(-1), json, took)
}

/// A self-signed certificate and an `-ssl_dist_optfile` for a TLS distribution node.
fn tls_optfile() -> std::path::PathBuf {
    let cert = scratch("tls-cert.pem");
    let key = scratch("tls-key.pem");
    cmd_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=tls-node",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    let optfile = scratch("ssl_dist.conf");
    std::fs::write(
        &optfile,
        format!(
            "[{{server,[{{certfile,\"{}\"}},{{keyfile,\"{}\"}}]}},{{client,[{{verify,verify_none}}]}}].\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    optfile
}

#[test]
fn cluster_mesh_with_a_hand_over_then_doctor_and_fleet_against_each_fault() {
    let t_start = Instant::now();
    let Some(mut net) = Net::create("cluster_mesh_with_a_hand_over_then_doctor_and_fleet") else {
        return;
    };
    let hosts: Vec<Host> = (1..=HOSTS).map(|i| net.add_host(i)).collect();
    let prober = net.add_host(PROBER);
    let ip = |i: usize| hosts[i].ip;

    // epmd-rs on every host (port 4369: the namespaces are a private network), plus the
    // loopback-only epmd on host 3 and the policy epmd on host 4.
    let mut epmds: Vec<NsProc> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| start_epmd(h, &format!("epmd-h{}", i + 1), &[], h.ip, 4369))
        .collect();
    let lo_epmd = start_epmd(
        &hosts[2],
        "epmd-lo",
        &["-port", "4370", "-address", "127.0.0.1"],
        Ipv4Addr::LOCALHOST,
        4370,
    );
    let policy = "10.77.0.0/29";
    let pol_epmd = start_epmd(
        &hosts[3],
        "epmd-pol",
        &[
            "-port",
            "4371",
            "--port-please-allow",
            policy,
            "--names-allow",
            policy,
        ],
        hosts[3].ip,
        4371,
    );

    // Every node at once: 4 x 3 mesh nodes and the fault nodes.
    let go = scratch("go.term");
    let go_s = go.to_str().unwrap().to_owned();
    let mut mesh: Vec<(String, NsProc)> = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for n in 0..NODES_PER_HOST {
            let name = format!("n{n}@{}", host.ip);
            let eval = mesh_eval(&go_s, h == 0 && n == 0);
            let p = spawn_node(host, &name, COOKIE, &[], &eval);
            mesh.push((name, p));
        }
    }
    let optfile = tls_optfile();
    let idle = idle_eval();
    let mut faults: Vec<NsProc> = vec![
        spawn_node(
            &hosts[1],
            &format!("cookie@{}", ip(1)),
            "othercookie",
            &[],
            &idle,
        ),
        spawn_node(
            &hosts[1],
            &format!("lodist@{}", ip(1)),
            COOKIE,
            &["-kernel", "inet_dist_use_interface", "{127,0,0,1}"],
            &idle,
        ),
        spawn_node(
            &hosts[2],
            &format!("dropped@{}", ip(2)),
            COOKIE,
            &[
                "-kernel",
                "inet_dist_listen_min",
                "4500",
                "inet_dist_listen_max",
                "4500",
            ],
            &idle,
        ),
        spawn_node_env(
            &hosts[2],
            &format!("loepmd@{}", ip(2)),
            COOKIE,
            &[],
            &idle,
            &[("ERL_EPMD_PORT", "4370")],
        ),
        spawn_node(
            &hosts[3],
            &format!("tls@{}", ip(3)),
            COOKIE,
            &[
                "-proto_dist",
                "inet_tls",
                "-ssl_dist_optfile",
                optfile.to_str().unwrap(),
            ],
            &idle,
        ),
        spawn_node(&hosts[3], "alias@db4.cluster.test", COOKIE, &[], &idle),
        spawn_node_env(
            &hosts[3],
            &format!("pol@{}", ip(3)),
            COOKIE,
            &[],
            &idle,
            &[("ERL_EPMD_PORT", "4371")],
        ),
    ];
    for (name, p) in &mut mesh {
        p.wait_line("CLUSTER_READY", NODE_START)
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", p.output()));
    }
    for p in &mut faults {
        p.wait_line("CLUSTER_READY", NODE_START)
            .unwrap_or_else(|e| panic!("{}: {e}\n{}", p.label, p.output()));
    }
    let started_in = t_start.elapsed();

    // Form the mesh while host 1's epmd-rs hands over, again and again, until every node
    // has connected to every other. The first SIGUSR2 goes out before the go file.
    let peers: Vec<String> = mesh.iter().map(|(n, _)| format!("'{n}'")).collect();
    let tmp_go = scratch("go.tmp");
    std::fs::write(&tmp_go, format!("[{}].\n", peers.join(","))).unwrap();
    let h1 = &mut epmds[0];
    let mut pid = h1.current_pid().expect("host 1's pid file");
    let t_go = Instant::now();
    let mut handovers = 0;
    let mut handover_ms = Vec::new();
    let mut go_written = false;
    loop {
        let sent = Instant::now();
        // SAFETY: kill(2) on the pid host 1's daemon wrote into its own pid file.
        assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR2) }, 0);
        if !go_written {
            std::fs::rename(&tmp_go, &go).unwrap();
            go_written = true;
        }
        let next = poll_until(Duration::from_secs(10), || {
            h1.current_pid().filter(|&p| p != pid)
        })
        .unwrap_or_else(|| {
            panic!(
                "hand-over {} of host 1's epmd-rs did not happen",
                handovers + 1
            )
        });
        handover_ms.push(sent.elapsed().as_secs_f64() * 1e3);
        handovers += 1;
        pid = next;
        let all_connected = mesh
            .iter()
            .all(|(_, p)| p.output().contains("CLUSTER_CONNECTED "));
        if all_connected || handovers >= 50 {
            break;
        }
    }
    let mut formation_ms = 0u64;
    let mut failed_connects = 0usize;
    let mut report = String::new();
    for (name, p) in &mut mesh {
        let connected = p
            .wait_line("CLUSTER_CONNECTED", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", p.output()));
        let (ms, bad) = connected.split_once(' ').unwrap();
        formation_ms = formation_ms.max(ms.parse().unwrap());
        if bad != "[]" {
            failed_connects += bad.matches('@').count();
        }
        let line = p
            .wait_line("CLUSTER_MESH", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", p.output()));
        let _ = writeln!(
            report,
            "    {name}: connected in {ms} ms, failed {bad}; mesh {line}"
        );
        let (size, leader) = line.split_once(' ').unwrap();
        assert_eq!(
            size.parse::<usize>().unwrap(),
            mesh_len() - 1,
            "{name} sees {size} nodes"
        );
        assert_eq!(leader, format!("n0@{}", ip(0)), "{name}: global name");
    }
    let wall_ms = t_go.elapsed().as_millis();
    assert!(handovers >= 1);
    assert_eq!(
        failed_connects, 0,
        "connects failed during the hand-over:\n{report}"
    );
    println!(
        "mesh: {} nodes on {HOSTS} hosts, all started in {:.1} s; full mesh + global name: \
         {formation_ms} ms per node at most, {wall_ms} ms wall; {handovers} hand-overs of host \
         1's epmd-rs meanwhile (each {:.1}-{:.1} ms); failed connects: {failed_connects}\n{report}",
        mesh.len(),
        started_in.as_secs_f64(),
        handover_ms.iter().cloned().fold(f64::MAX, f64::min),
        handover_ms.iter().cloned().fold(0.0, f64::max),
    );
    assert!(epmds[0].current_pid() != Some(epmds[0].pid()));

    // The healthy cluster from the prober: every mesh node is `ok`, cookie included.
    println!("doctor from the prober ({}):", prober.ip);
    for (name, _) in &mesh {
        doctor(&prober, &[name, "--cookie", COOKIE], "ok", 0);
    }
    let all_hosts: Vec<String> = hosts.iter().map(|h| h.ip.to_string()).collect();
    let (code, json, took) = fleet(&prober, &all_hosts.join(","));
    assert_eq!(code, 0, "{json}");
    for (h, host_json) in json["hosts"].as_array().unwrap().iter().enumerate() {
        assert_eq!(host_json["state"], "ok");
        let names: Vec<&str> = host_json["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        for n in 0..NODES_PER_HOST {
            assert!(
                names.contains(&format!("n{n}").as_str()),
                "host {}: {names:?}",
                h + 1
            );
        }
    }
    println!("query --hosts (4 healthy hosts): {} ms", took.as_millis());

    // One fault each.
    hosts[2].drop_source_port(4500);
    let c = ["--cookie", COOKIE];
    doctor(
        &prober,
        &[&format!("cookie@{}", ip(1)), c[0], c[1]],
        "cookie_rejected",
        17,
    );
    doctor(
        &prober,
        &[&format!("lodist@{}", ip(1))],
        "dist_unreachable",
        14,
    );
    let j = doctor(
        &prober,
        &[&format!("dropped@{}", ip(2))],
        "dist_unreachable",
        14,
    );
    assert!(
        j["steps"][3]["detail"]
            .as_str()
            .unwrap()
            .contains("no answer"),
        "{j}"
    );
    doctor(
        &prober,
        &[&format!("loepmd@{}", ip(2)), "--port", "4370"],
        "epmd_unreachable",
        11,
    );
    doctor(
        &prober,
        &[&format!("pol@{}", ip(3)), "--port", "4371"],
        "epmd_refused",
        12,
    );
    doctor(&prober, &[&format!("tls@{}", ip(3))], "dist_tls", 15);
    let j = doctor(
        &prober,
        &[&format!("alias@{}", ip(3))],
        "host_name_mismatch",
        18,
    );
    assert!(j["steps"][5]["detail"]
        .as_str()
        .unwrap()
        .contains("alias@db4.cluster.test"));
    let j = doctor(
        &prober,
        &[&format!("n9@{}", ip(0))],
        "name_not_registered",
        13,
    );
    assert!(j["steps"][2]["detail"]
        .as_str()
        .unwrap()
        .contains("near misses: n0, n1, n2"));
    // The same policy lets the cluster's own hosts in.
    let (out, _) = hosts[0].epmd_rs(
        &[
            "doctor",
            &format!("pol@{}", ip(3)),
            "--port",
            "4371",
            "--cookie",
            COOKIE,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", out.stdout_text());

    // The fleet with some hosts down: about the time of the slowest host, not the sum.
    let down = [
        format!("{}:4370", ip(2)), // loopback-only epmd: refused
        format!("{}:4371", ip(3)), // the policy: closed without a reply
        "10.77.0.200".to_owned(),  // no such host: no answer
        "10.77.0.201".to_owned(),  // another one
    ];
    let mixed: Vec<String> = all_hosts.iter().chain(&down).cloned().collect();
    let (code, json, took) = fleet(&prober, &mixed.join(","));
    assert_eq!(code, 2, "{json}");
    let states: Vec<&str> = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "ok",
            "ok",
            "ok",
            "ok",
            "refused",
            "closed",
            "no_answer",
            "no_answer"
        ],
        "{json}"
    );
    let singles: Vec<u128> = mixed
        .iter()
        .map(|h| fleet(&prober, h).2.as_millis())
        .collect();
    let slowest = *singles.iter().max().unwrap();
    let sum: u128 = singles.iter().sum();
    println!(
        "query --hosts over {} hosts (4 down): {} ms; each alone: {singles:?} ms (slowest {slowest}, sum {sum})",
        mixed.len(),
        took.as_millis()
    );
    assert!(
        took.as_millis() < slowest + 700,
        "fleet {} ms, slowest host alone {slowest} ms",
        took.as_millis()
    );
    // epmd behind a firewall that drops its packets: no answer rather than refused.
    hosts[3].drop_source_port(4371);
    let j = doctor(
        &prober,
        &[&format!("pol@{}", ip(3)), "--port", "4371"],
        "epmd_unreachable",
        11,
    );
    assert!(
        j["steps"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("no answer"),
        "{j}"
    );
    drop(lo_epmd);
    drop(pol_epmd);
    println!(
        "cluster test: {:.1} s in all",
        t_start.elapsed().as_secs_f64()
    );
}

/// The number of mesh nodes.
fn mesh_len() -> usize {
    usize::from(HOSTS) * NODES_PER_HOST
}
