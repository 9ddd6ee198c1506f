# Runs inside the real-systemd container (bash, as root, systemd 252 as PID 1, the host's
# erlang-base and erl) started by tests/it/deb_package.rs with run-unit-test.sh: the
# packages of debian/build-debs.sh in /root/debs (version V1 and a higher V2), the
# real-systemd test helpers (lookups.py, node-loop.erl) in $LIB. Four scenarios:
#   1. install epmd-rs on a host whose erlang-base epmd.socket is enabled and serving a
#      node: nothing changes; starting epmd-rs.socket stops epmd.socket (Conflicts=) and
#      the reverse; real nodes register with epmd-rs and ping each other;
#   2. upgrade to V2 while the nodes are registered: the daemon is reloaded (hand-over),
#      same connections and creations, lookups in a loop with 0 failures;
#   3. install epmd-rs-as-epmd: epmd.socket replaced by epmd-rs.socket, every epmd
#      diverted (and, through the trigger, a runtime that appears; a runtime that goes is
#      dropped); `erl -sname x` with no epmd running starts epmd-rs, `epmd -names` is
#      epmd-rs answering; its removal restores the C epmd and epmd.socket as they were;
#   4. remove and purge both: no file, diversion, unit or user left; the C epmd works.
# FIGURE lines are the figures the report quotes; exit 1 if any check failed.
set -u
fail=0
T_START=$(date +%s.%N)
DEBS=/root/debs
LIB=/usr/local/lib/epmd-rs-test
V1=$(cat $DEBS/V1) V2=$(cat $DEBS/V2)
ARCH=$(dpkg --print-architecture)
ERTS_EPMD=$(ls /usr/lib/erlang/erts-*/bin/epmd)
COOKIE=epmdrsdeb

check() { if "$@"; then echo "ok: $*"; else echo "FAIL: $*"; fail=1; fi; }
fail() { echo "FAIL: $*"; fail=1; }
ms_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", (b-a)*1000}'; }
prop() { systemctl show -p "$2" --value "$1"; }
active() { systemctl is-active "$1" 2>/dev/null; }
enabled() { systemctl is-enabled "$1" 2>/dev/null; }
# Polls (every 50 ms, at most $1 s) until the rest of the line succeeds.
wait_for() { local n=$(( $1 * 20 )); shift; while ! "$@" 2>/dev/null; do n=$((n - 1)); [ "$n" -gt 0 ] || return 1; sleep 0.05; done; }
# The processes (not systemd) listening on TCP port 4369, and their executables.
listeners() { ss -Hltnp 'sport = :4369' | grep -o 'pid=[0-9]*' | cut -d= -f2 | grep -vx 1 | sort -u; }
listener_exes() { local p; for p in $(listeners); do readlink "/proc/$p/exe"; done | sort -u | tr '\n' ' '; }
sum_of() { sha256sum "$(readlink -f "$1")" | cut -d' ' -f1; }
# The names epmd -names lists (epmd on PATH: /usr/bin/epmd).
names() { epmd -names 2>/dev/null | sed -n 's/^name \([^ ]*\) at port.*/\1/p' | sort | tr '\n' ' '; }
has_names() { [ "$(names)" = "$1" ]; }

# A real Erlang node NAME@localhost running node-loop.erl; $2: extra erl arguments.
start_node() {
  local n=$1 peer=$2; shift 2
  rm -f "/tmp/$n."*
  ME=$n PEER="$peer@localhost" HOME=/root erl -sname "$n@localhost" -setcookie $COOKIE -noinput \
    "$@" -eval "$(cat "$LIB/node-loop.erl")" > "/tmp/$n.log" 2>&1 &
  eval "NODE_$n=$!"
}
stop_node() { # $1 name: asks the node to halt, waits for its erl process (bounded)
  local pid; eval "pid=\${NODE_$1:-}"; [ -n "$pid" ] || return 0
  touch "/tmp/$1.stop"
  wait_for 20 test ! -d "/proc/$pid" || { fail "node $1 ($pid) did not halt"; kill -9 "$pid"; }
  wait "$pid" 2>/dev/null; eval "NODE_$1="
}
pings() { cat "/tmp/$1.count" 2>/dev/null || echo "0 0"; }
pongs_at_least() { local ok; read -r ok _ < <(pings "$1"); [ "$ok" -ge "$2" ]; }
# name creation peer, per registration with epmd-rs.
registrations() {
  epmd-rs admin nodes --json | python3 -c '
import json, sys
for n in sorted(json.load(sys.stdin), key=lambda n: n["name"]):
    print(n["name"], n["creation"], n["peer"])'
}
port_of() { epmd-rs admin nodes --json | python3 -c 'import json,sys; print([n["port"] for n in json.load(sys.stdin) if n["name"]==sys.argv[1]][0])' "$1"; }
# Every file name that a package could leave behind.
# dpkg's own database changes (except info/, the packages' files); systemd's caches.
snapshot() {
  { find /usr /etc /var/lib /opt /srv -xdev 2>/dev/null | grep -v -e '^/var/lib/dpkg/' \
      -e '^/var/lib/systemd/\(catalog\|random-seed\|timers\)'; find /var/lib/dpkg/info; } | sort
}

# The host image's policy-rc.d (Docker's "exit 101": no service actions during a build)
# would veto every deb-systemd-invoke of the maintainer scripts; this container is a
# booted system, where none belongs (the overlay keeps the host's file).
rm -f /usr/sbin/policy-rc.d
echo "== $(systemctl --version | head -1), erlang-base $(dpkg-query -W -f '${Version}' erlang-base), packages $V1 and $V2"
C_EPMD_SUM=$(sum_of "$ERTS_EPMD")

echo "== 1. a host with erlang-base's epmd.socket enabled, serving node c"
systemctl enable --now epmd.socket
USERS0=$(getent passwd | cut -d: -f1 | sort | tr '\n' ' ')
FILES0=$(snapshot)
DIVERSIONS0=$(dpkg-divert --list | sort)
check test "$(active epmd.socket)" = active
start_node c none -start_epmd false
check wait_for 30 has_names "c "
check test "$(listener_exes)" = "$ERTS_EPMD "

echo "== 1. install epmd-rs: nothing is enabled or started, the C epmd keeps serving"
t0=$(date +%s.%N)
check dpkg -i "$DEBS/epmd-rs_${V1}_$ARCH.deb"
echo "FIGURE install: dpkg -i epmd-rs took $(ms_since "$t0") ms"
check test "$(active epmd.socket)" = active
check test "$(active epmd-rs.socket)" = inactive
check test "$(enabled epmd-rs.socket)" = disabled
check has_names "c "
check test "$(listener_exes)" = "$ERTS_EPMD "
check test -x /usr/bin/epmd-rs
check test "$(prop epmd-rs.service ExecStart | grep -o 'path=[^ ;]*')" = "path=/usr/bin/epmd-rs"
check test "$(readlink -f "$(prop epmd-rs.service FragmentPath)")" = /usr/lib/systemd/system/epmd-rs.service
check test "$(man -w epmd-rs)" = /usr/share/man/man1/epmd-rs.1.gz
for f in /usr/share/bash-completion/completions/epmd-rs /usr/share/zsh/vendor-completions/_epmd-rs \
    /usr/share/fish/vendor_completions.d/epmd-rs.fish /usr/share/doc/epmd-rs/copyright /usr/share/doc/epmd-rs/changelog.gz; do
  check test -s "$f"
done
check grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' /usr/share/doc/epmd-rs/copyright

echo "== 1. starting epmd-rs.socket stops epmd.socket (Conflicts=), and the reverse"
check systemctl start epmd-rs.socket
check test "$(active epmd.socket)" = inactive
check test "$(active epmd.service)" = inactive
stop_node c
check systemctl start epmd.socket
check test "$(active epmd-rs.socket)" = inactive
check systemctl start epmd-rs.socket
check test "$(active epmd.socket)" = inactive

echo "== 1. two real nodes register with epmd-rs and ping each other"
start_node a b -start_epmd false
start_node b a -start_epmd false
check wait_for 30 has_names "a b "
check test "$(listener_exes)" = "/usr/bin/epmd-rs "
REGS0=$(registrations)
echo "registrations: $(echo "$REGS0" | tr '\n' ';')"
touch /tmp/b.run
check wait_for 20 pongs_at_least b 3
rm -f /tmp/b.run
touch /tmp/a.run   # from now on a pings b over a new connection every 50 ms
check wait_for 20 pongs_at_least a 2
read -r okb fb < <(pings b)
echo "FIGURE nodes: b pinged a $okb times through epmd-rs, $fb failed"
check test "$fb" = 0

echo "== 2. upgrade $V1 -> $V2 while the nodes are registered"
U=epmd-rs.service
PID0=$(prop $U MainPID) INV0=$(prop $U InvocationID) NR0=$(prop $U NRestarts)
read -r pa0 fa0 < <(pings a)
rm -f /tmp/lookups.stop /tmp/lookups.out
python3 "$LIB/lookups.py" /tmp/lookups.stop /tmp/lookups.out "a=$(port_of a)" "b=$(port_of b)" &
LOOKUPS=$!
sleep 0.3
t0=$(date +%s.%N)
check dpkg -i "$DEBS/epmd-rs_${V2}_$ARCH.deb"
echo "FIGURE upgrade: dpkg -i epmd-rs $V2 took $(ms_since "$t0") ms"
new_pid() { local p; p=$(prop $U MainPID); [ "$p" != "$PID0" ] && [ "$p" != 0 ] && [ "$(active $U)" = active ]; }
check wait_for 10 new_pid
PID1=$(prop $U MainPID)
sleep 0.5
touch /tmp/lookups.stop; wait "$LOOKUPS"
read -r ok failed slowest < /tmp/lookups.out || { ok=0 failed=unknown slowest=unknown; }
tail -n +2 /tmp/lookups.out
read -r pa1 fa1 < <(pings a)
REGS1=$(registrations)
echo "FIGURE upgrade: lookups $ok, failed $failed, slowest $slowest ms; node a pinged b $((pa1 - pa0)) times, $((fa1 - fa0)) failed; nodes kept $(comm -12 <(echo "$REGS0") <(echo "$REGS1") | wc -l) of $(echo "$REGS0" | wc -l) (same name, creation and connection)"
check test "$(dpkg-query -W -f '${Version}' epmd-rs)" = "$V2"
check test "$ok" -gt 0
check test "$failed" = 0
check test $((pa1 - pa0)) -gt 0
check test "$fa1" = "$fa0"
check test "$REGS1" = "$REGS0"
# A reload (hand-over to the new binary), not a restart: same job, no restart counted.
check test "$(prop $U InvocationID)" = "$INV0"
check test "$(prop $U NRestarts)" = "$NR0"
check test "$(readlink "/proc/$PID1/exe")" = /usr/bin/epmd-rs
check test "$(stat -L -c %i "/proc/$PID1/exe")" = "$(stat -c %i /usr/bin/epmd-rs)"
check test ! -d "/proc/$PID0"
check test "$(journalctl -b -q --no-pager -u $U | grep -c 'Reloaded epmd-rs.service')" = 1
rm -f /tmp/a.run
stop_node a
stop_node b

echo "== 3. erlang-base's epmd.socket serving node c again, then install epmd-rs-as-epmd"
check systemctl start epmd.socket
check test "$(active epmd-rs.socket)" = inactive
start_node c none -start_epmd false
check wait_for 30 has_names "c "
check test "$(listener_exes)" = "$ERTS_EPMD "
check dpkg -i "$DEBS/epmd-rs-as-epmd_${V2}_all.deb"
check test "$(active epmd.socket)" = inactive
check test "$(enabled epmd.socket)" = disabled
check test "$(active epmd-rs.socket)" = active
check test "$(enabled epmd-rs.socket)" = enabled
stop_node c
dpkg-divert --list | grep epmd-rs-as-epmd
check test "$(dpkg-divert --listpackage /usr/bin/epmd)" = epmd-rs-as-epmd
check test "$(dpkg-divert --listpackage "$ERTS_EPMD")" = epmd-rs-as-epmd
check test "$(readlink -f /usr/bin/epmd)" = /usr/bin/epmd-rs
check test "$(readlink -f "$ERTS_EPMD")" = /usr/bin/epmd-rs
check test "$(sum_of "$ERTS_EPMD.c-epmd")" = "$C_EPMD_SUM"
check test "$(readlink -f "$(man -w epmd)")" = /usr/share/man/man1/epmd-rs.1.gz
check test "$(readlink /usr/share/man/man1/epmd.1.gz)" = epmd-rs.1.gz

echo "== 3. the trigger on /usr/lib/erlang: a runtime that appears is diverted, one that goes is dropped"
NEW_ERTS=/usr/lib/erlang/erts-99.0-test/bin
mkdir -p $NEW_ERTS && cp "$ERTS_EPMD.c-epmd" $NEW_ERTS/epmd
check dpkg-trigger --no-await /usr/lib/erlang
check dpkg --triggers-only --pending
check test "$(dpkg-divert --listpackage $NEW_ERTS/epmd)" = epmd-rs-as-epmd
check test "$(readlink $NEW_ERTS/epmd)" = /usr/bin/epmd-rs
check test "$(sum_of $NEW_ERTS/epmd.c-epmd)" = "$C_EPMD_SUM"
rm -f $NEW_ERTS/epmd.c-epmd   # what dpkg does with a runtime's files when an upgrade drops it
check dpkg-trigger --no-await /usr/lib/erlang
check dpkg --triggers-only --pending
check test -z "$(dpkg-divert --listpackage $NEW_ERTS/epmd)"
check test ! -e /usr/lib/erlang/erts-99.0-test
check test "$(dpkg-divert --listpackage "$ERTS_EPMD")" = epmd-rs-as-epmd

echo "== 3. no epmd running: erl -sname x starts epmd-rs as its epmd"
check systemctl stop epmd-rs.socket epmd-rs.service
check test -z "$(listeners)"
start_node x none
check wait_for 30 has_names "x "
EPMD_PID=$(listeners)
check test -n "$EPMD_PID"
check test "$(listener_exes)" = "/usr/bin/epmd-rs "
cmdline=$(tr '\0' ' ' < "/proc/${EPMD_PID:-0}/cmdline")
echo "the epmd erl started: pid $EPMD_PID, $cmdline, exe $(readlink "/proc/${EPMD_PID:-0}/exe")"
check test "$cmdline" = "$ERTS_EPMD -daemon "
case "$(epmd --version 2>&1)" in epmd-rs*) echo "ok: epmd is $(epmd --version 2>&1)" ;; *) fail "epmd --version: $(epmd --version 2>&1)" ;; esac
echo "epmd -names: $(epmd -names | tr '\n' ';')"
stop_node x
[ -z "$EPMD_PID" ] || { kill "$EPMD_PID"; wait_for 10 test ! -d "/proc/$EPMD_PID" || fail "epmd-rs $EPMD_PID did not stop"; }
check systemctl start epmd-rs.socket

echo "== 3. remove epmd-rs-as-epmd: the C epmd and epmd.socket back as they were"
check dpkg -r epmd-rs-as-epmd
check test -z "$(dpkg-divert --list | grep epmd-rs-as-epmd)"
check test "$(readlink -f /usr/bin/epmd)" = "$ERTS_EPMD"
check test "$(sum_of /usr/bin/epmd)" = "$C_EPMD_SUM"
check test ! -e "$ERTS_EPMD.c-epmd"
check test ! -e /usr/bin/epmd.c-epmd
check test "$(readlink -f "$(man -w epmd)")" = /usr/share/man/man1/epmd.1.gz
check test ! -L /usr/share/man/man1/epmd.1.gz
check test "$(active epmd.socket)" = active
check test "$(enabled epmd.socket)" = enabled
check test "$(active epmd-rs.socket)" = inactive
check test "$(enabled epmd-rs.socket)" = disabled
check test ! -e /var/lib/epmd-rs-as-epmd
start_node c none -start_epmd false
check wait_for 30 has_names "c "
check test "$(listener_exes)" = "$ERTS_EPMD "
stop_node c

echo "== 4. remove and purge both packages"
check systemctl stop epmd.socket epmd.service
check dpkg -i "$DEBS/epmd-rs-as-epmd_${V2}_all.deb"
check test "$(active epmd-rs.socket)" = active
check epmd -names
check test "$(listener_exes)" = "/usr/bin/epmd-rs "
t0=$(date +%s.%N)
check dpkg --purge epmd-rs-as-epmd epmd-rs
echo "FIGURE purge: dpkg --purge of both took $(ms_since "$t0") ms"
check test "$(dpkg-query -W -f '${db:Status-Status}' epmd-rs epmd-rs-as-epmd 2>/dev/null)" = ""
check test "$(dpkg-divert --list | sort)" = "$DIVERSIONS0"
check test -z "$(systemctl list-unit-files --no-legend 'epmd-rs*')"
check test -z "$(systemctl list-units --all --no-legend 'epmd-rs*')"
check test "$(getent passwd | cut -d: -f1 | sort | tr '\n' ' ')" = "$USERS0"
left=$(comm -13 <(echo "$FILES0") <(snapshot))
gone=$(comm -23 <(echo "$FILES0") <(snapshot))
echo "files added: [$left] removed: [$gone]"
check test -z "$left"
check test -z "$gone"
check test ! -e /run/epmd-rs
check test "$(sum_of /usr/bin/epmd)" = "$C_EPMD_SUM"
check test "$(sum_of "$ERTS_EPMD")" = "$C_EPMD_SUM"
check test "$(enabled epmd.socket)" = enabled
echo "== 4. the C epmd works: erl -sname y starts it"
start_node y none
check wait_for 30 has_names "y "
EPMD_PID=$(listeners)
check test "$(listener_exes)" = "$ERTS_EPMD "
stop_node y
[ -z "$EPMD_PID" ] || kill $EPMD_PID

echo "FIGURE total: $(ms_since "$T_START") ms inside the container"
[ "$fail" = 0 ] && echo "deb-packages: PASS" || echo "deb-packages: FAIL"
exit $fail
