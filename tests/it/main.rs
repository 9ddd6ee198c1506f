//! The single integration-test binary of epmd-rs.
//!
//! Every test runs the real daemon binary (`CARGO_BIN_EXE_epmd-rs`) on a free port, talks to
//! it over sockets, and cleans up every process it started by PID. The modules below only
//! group tests by concern; the shared helpers live in `support`.

// Shared helpers: free ports, daemon processes, raw protocol bytes, Erlang nodes, /proc lookups.
mod support;

// Real Erlang/OTP nodes and the C epmd client (`epmd -names`) working against our daemon.
mod erlang;

// Byte-exact requests and replies through the running daemon, hex in and hex out (spec §1-§3).
mod wire;

// Registrations live and die with their connections; KILL, STOP and locality (spec §3.5-§5).
mod lifecycle;

// The packet deadline, many registrations, and -delay_write not blocking others (spec §6).
mod limits;

// Our epmd client against the C client, byte for byte, on every row of spec §8.
mod client_compat;

// Command-line differential test: 300+ generated command lines, C epmd vs epmd-rs.
mod difftest_cli;

// Wire differential test: generated scenarios against the C epmd and epmd-rs side by side.
mod difftest_wire;

// `epmd-rs admin` over the admin Unix socket: every view, permissions, stale and live sockets.
mod admin;

// Who may do what on the admin socket: the admin group reads views, never runs a program.
mod admin_trust;

// `epmd-rs doctor NODE@HOST` on loopback: each verdict and exit code against real nodes.
mod doctor;

// A multi-host cluster in network namespaces on a bridge: a full mesh of real nodes during a
// hand-over, then `doctor` and `query --hosts` against one injected fault each.
mod cluster;
mod cluster_net;

// `epmd-rs query` against our daemon and the C epmd; garbage, silence and refusal.
mod query;

// Helpers of the three modules below: signals, commands with a deadline, a NOTIFY_SOCKET.
mod sysd_support;

// Socket activation (systemd-socket-activate), sd_notify, and the units (systemd-analyze).
mod systemd;

// -daemon: returns once serving, pid file, a second -daemon, log file and SIGHUP.
mod daemonize;

// Pid and log files never opened through a symlink; a user's fallback log is private.
mod file_safety;

// make install/uninstall into a DESTDIR, and install-as-epmd with a real erl.
mod install;

// Live hand-over (SIGUSR2, `admin upgrade`) under load, 20 in a row, and failed ones.
mod handover;

// A test service manager speaking sd_notify (FDSTORE) and LISTEN_FDS, for `fdstore`.
mod supervisor;

// Registrations kept in the fd store across kill -9, STOP/close removal, hand-over + crash.
mod fdstore;

// Faults of the fd store: pid-1 restarts, torn or unusable states, a slow service manager,
// stray fds after a hand-over.
mod fdstore_faults;

// Hostile input: a table of 40+ malformed and abusive requests, outcomes and counters.
mod hostile;

// Resource exhaustion (fds, connection caps, slowloris, stalled readers, storms) and signals.
mod exhaustion;

// The non-local path from a peer in a network namespace: locality, policies, local reserve.
mod netns;

// The project's units under a real systemd 252 as PID 1 of a throwaway nspawn container:
// activation, sandbox, Erlang nodes across reloads, restart, crash, watchdog, stop.
mod real_systemd;

// The per-source cap counts an IPv6 /64 as one source (a namespace with IPv6 addresses).
mod netns_v6;

// The Debian packages: lintian, then install, upgrade under load, epmd-rs-as-epmd and purge
// in the real-systemd container with the host's erl.
mod deb_package;

// `--metrics-listen`: /metrics equal to admin stats, /livez, /readyz at the cap, hostile
// HTTP rows, a real Prometheus scraping real Erlang nodes, promtool.
mod metrics;

// `epmd-rs wait NAME [--gone]`: real nodes, timeouts, latency.
mod wait;

// Node events: JSON lines with --log-format json, admin history.
mod events;
