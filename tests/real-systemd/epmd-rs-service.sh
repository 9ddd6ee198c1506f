# Runs inside the container (bash, as root, under a real systemd 252 as PID 1) after
# run-unit-test.sh --preset epmd-rs installed the project's units, the test drop-in
# (WatchdogSec=3s, RUST_LOG=info, LimitCORE=0) and the binary. Everything is asserted from
# `systemctl show`, the journal, /proc and the network; exit 1 on the first failed phase's
# end. FIGURE lines are the measured figures docs/OPERATIONS.md quotes.
set -u
fail=0
T_START=$(date +%s.%N)
U=epmd-rs.service
LIB=/usr/local/lib/epmd-rs-test
RELOADS=${RELOADS:-50}
WATCHDOG_SEC=3

check() { if "$@"; then echo "ok: $*"; else echo "FAIL: $*"; fail=1; fi; }
fail() { echo "FAIL: $*"; fail=1; }
prop() { systemctl show -p "$1" --value "$U"; }
mainpid() { prop MainPID; }
show() { systemctl show "$U" -p ActiveState,SubState,Result,MainPID,NRestarts,ExecMainCode,ExecMainStatus,StatusText --no-pager | tr '\n' ' '; echo; }
ms_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.0f", (b-a)*1000}'; }
# journal lines of the unit (and of systemd about it) since the boot, without the test's own.
jcount() { journalctl -b -q --no-pager -u "$U" -u epmd-rs.socket | grep -c -- "$1"; }
cgroup_procs() { cat "/sys/fs/cgroup$(prop ControlGroup)/cgroup.procs" 2>/dev/null; }

# Waits (bounded, polling every 10 ms) until the main pid differs from $1 and the unit is
# active; prints the new pid. $2: seconds.
wait_new_mainpid() {
  local old=$1 limit=$2 p s t0
  t0=$(date +%s.%N)
  while :; do
    p=$(mainpid); s=$(prop ActiveState)
    if [ "$p" != "$old" ] && [ "$p" != 0 ] && [ "$s" = active ]; then echo "$p"; return 0; fi
    [ "$(ms_since "$t0")" -lt $((limit * 1000)) ] || { echo 0; return 1; }
    sleep 0.01
  done
}
ppid_of() { awk '/^PPid:/{print $2}' "/proc/$1/status" 2>/dev/null; }

# name creation peer, per registration (admin nodes over the runtime-directory socket).
registrations() {
  epmd-rs admin nodes --json | python3 -c '
import json, sys
for n in sorted(json.load(sys.stdin), key=lambda n: n["name"]):
    print(n["name"], n["creation"], n["peer"])'
}
port_of() { epmd-rs admin nodes --json | python3 -c 'import json,sys; print([n["port"] for n in json.load(sys.stdin) if n["name"]==sys.argv[1]][0])' "$1"; }

# Lookups in a loop (lookups.py) around a phase.
lookups_start() { rm -f /tmp/lookups.stop /tmp/lookups.out; python3 "$LIB/lookups.py" /tmp/lookups.stop /tmp/lookups.out "a=$PORT_A" "b=$PORT_B" & LOOKUPS=$!; }
lookups_stop() { # $1 phase name; prints and checks the counts
  touch /tmp/lookups.stop; wait "$LOOKUPS"
  read -r ok failed slowest < /tmp/lookups.out
  echo "FIGURE $1: lookups $ok, failed $failed, slowest ${slowest} ms"
  tail -n +2 /tmp/lookups.out
  [ "$ok" -gt 0 ] || fail "$1: no lookup at all"
  [ "$failed" = 0 ] || fail "$1: $failed lookups failed"
}
pings() { cat "/tmp/$1.count" 2>/dev/null || echo "0 0"; }
# Node a pings b (a new connection, so an epmd lookup, each time): no pang during a phase.
pings_check() { # $1 phase, $2 "pongs pangs" at the start
  local ok0 f0 ok1 f1
  read -r ok0 f0 <<< "$2"; read -r ok1 f1 < <(pings a)
  echo "FIGURE $1: node a pinged b $((ok1 - ok0)) times, $((f1 - f0)) failed"
  [ $((ok1 - ok0)) -gt 0 ] || fail "$1: node a did not ping b"
  [ "$f1" = "$f0" ] || fail "$1: $((f1 - f0)) pings of node a failed"
}
regs_check() { # $1 phase: same names, creations and connections (peer address) as at first
  local now; now=$(registrations)
  if [ "$now" = "$REGS0" ]; then echo "ok: $1: registrations kept ($(echo "$now" | tr '\n' ';'))"
  else fail "$1: registrations changed: was [$REGS0] now [$now]"; fi
}
phase_end() { # $1 phase
  local ok0 ok
  # At least two pings after the event, however slow the machine (bounded: 10 s).
  read -r ok0 _ <<< "$PINGS0"
  for _ in $(seq 1 200); do read -r ok _ < <(pings a); [ "$ok" -ge $((ok0 + 2)) ] && break; sleep 0.05; done
  lookups_stop "$1"; pings_check "$1" "$PINGS0"; regs_check "$1"
  check test "$(prop ActiveState)" = active
}
phase_start() { PINGS0=$(pings a); lookups_start; sleep 0.2; }

echo "== epmd-rs $(epmd-rs --version 2>&1), $(systemctl --version | head -1)"
systemctl daemon-reload
check systemctl start epmd-rs.socket
check test "$(prop ActiveState)" = inactive

echo "== socket activation on the first connection"
check epmd-rs -names
P=$(wait_new_mainpid 0 10)
check test "$P" != 0
show
check test "$(prop Type)" = notify
# Type=notify: active only after READY=1; STATUS= from the daemon.
check test "$(prop SubState)" = running
case "$(prop StatusText)" in "Processing port mapping requests"*) echo "ok: STATUS $(prop StatusText)" ;; *) fail "STATUS is '$(prop StatusText)'" ;; esac

echo "== the sandbox in force (pid $P)"
grep -E '^(Uid|NoNewPrivs|Seccomp|CapEff|CapPrm|CapBnd):' "/proc/$P/status" | tr '\t' ' '
uid=$(awk '/^Uid:/{print $2}' "/proc/$P/status")
check test "$uid" -ge 61184 -a "$uid" -le 65519   # systemd's DynamicUser= range
check test "$(awk '/^NoNewPrivs:/{print $2}' "/proc/$P/status")" = 1
check test "$(awk '/^Seccomp:/{print $2}' "/proc/$P/status")" = 2
check test "$(awk '/^CapEff:/{print $2}' "/proc/$P/status")" = 0000000000000000
check test "$(awk '/^CapBnd:/{print $2}' "/proc/$P/status")" = 0000000000000000
check test "$(prop DynamicUser)" = yes

echo "== admin over the runtime-directory socket"
ls -l /run/epmd-rs/
check epmd-rs admin stats
epmd-rs admin config
listen=$(epmd-rs admin config --json | python3 -c 'import json,sys; print(*[e["value"]+" "+e["source"] for e in json.load(sys.stdin) if e["key"] in ("address","listen")], sep="|")')
check test "$listen" = "127.0.0.1,::1 systemd|127.0.0.1:4369 [::1]:4369 systemd"

echo "== two real Erlang nodes (erl -sname) register and ping each other"
rm -f /tmp/a.* /tmp/b.*
CODE=$(cat "$LIB/node-loop.erl")
for n in a b; do
  peer=$([ $n = a ] && echo b || echo a)
  ME=$n PEER="$peer@localhost" HOME=/root erl -sname "$n@localhost" -setcookie epmdrstest -noinput \
    -start_epmd false -eval "$CODE" > "/tmp/$n.log" 2>&1 &
done
for _ in $(seq 1 300); do [ "$(registrations | wc -l)" = 2 ] && break; sleep 0.05; done
REGS0=$(registrations)
echo "registrations: $(echo "$REGS0" | tr '\n' ';')"
check test "$(echo "$REGS0" | wc -l)" = 2
PORT_A=$(port_of a) PORT_B=$(port_of b)
# STATUS= follows the registrations (at most once a second).
for _ in $(seq 1 300); do case "$(prop StatusText)" in *"2 nodes registered"*) break ;; esac; sleep 0.01; done
check test "$(prop StatusText)" = "Processing port mapping requests; 2 nodes registered"
touch /tmp/b.run   # b pings a
for _ in $(seq 1 200); do read -r ok _ < <(pings b); [ "$ok" -ge 3 ] && break; sleep 0.05; done
rm -f /tmp/b.run; sleep 0.3
read -r okb fb < <(pings b)
echo "node b pinged a: $okb pongs, $fb pangs"
check test "$okb" -ge 3 -a "$fb" = 0
touch /tmp/a.run   # from now on a pings b over a new connection every 50 ms
for _ in $(seq 1 200); do read -r ok _ < <(pings a); [ "$ok" -ge 2 ] && break; sleep 0.05; done

echo "== $RELOADS consecutive reloads (systemctl reload: SIGUSR2 hand-over)"
NR0=$(prop NRestarts)
phase_start
times=()
for i in $(seq 1 "$RELOADS"); do
  old=$(mainpid); t0=$(date +%s.%N)
  systemctl reload "$U" || fail "reload $i: systemctl reload failed"
  new=$(wait_new_mainpid "$old" 10) || { fail "reload $i: MainPID still $old after 10 s"; show; break; }
  times+=("$(ms_since "$t0")")
  pp=$(ppid_of "$new")
  [ "$pp" = 1 ] || fail "reload $i: the new main process $new is the child of $pp, not of systemd"
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "FIGURE reload: $RELOADS reloads, systemctl reload -> new MainPID active: min $(echo "$sorted" | head -1) ms, median $(echo "$sorted" | sed -n "$(( (${#times[@]} + 1) / 2 ))p") ms, max $(echo "$sorted" | tail -1) ms"
phase_end "$RELOADS reloads"
# Inside the daemon: from the hand-over request to the successor's READY, as the old
# process logs it ("handed over to pid N in T ms").
journalctl -b -q --no-pager -u "$U" | sed -n 's/.*handed over to pid [0-9]* in \([0-9.]*\) ms.*/\1/p' \
  | sort -n > /tmp/handover.ms
n=$(wc -l < /tmp/handover.ms)
echo "FIGURE hand-over: $n hand-overs inside the daemon (request -> successor READY): min $(head -1 /tmp/handover.ms) ms, median $(sed -n "$(( (n + 1) / 2 ))p" /tmp/handover.ms) ms, max $(tail -1 /tmp/handover.ms) ms"
check test "$n" = "$RELOADS"
check test "$(prop NRestarts)" = "$NR0"
for _ in $(seq 1 100); do [ "$(cgroup_procs | wc -l)" = 1 ] && break; sleep 0.02; done
check test "$(cgroup_procs | wc -l)" = 1    # one daemon, not two
check test "$(jcount 'not our child')" = 0

echo "== epmd-rs admin upgrade (the hand-over asked for over the admin socket)"
phase_start
old=$(mainpid)
check epmd-rs admin upgrade
new=$(wait_new_mainpid "$old" 10) || fail "admin upgrade: no new MainPID"
check test "$(ppid_of "$new")" = 1
phase_end "admin upgrade"
check test "$(jcount 'not our child')" = 0

echo "== systemctl restart (fd store)"
phase_start
old=$(mainpid); t0=$(date +%s.%N)
check systemctl restart "$U"
new=$(wait_new_mainpid "$old" 20) || fail "restart: no new MainPID"
echo "FIGURE restart: systemctl restart -> new MainPID active in $(ms_since "$t0") ms"
phase_end restart
# The old process got SIGTERM and exited on its own (not killed).
check grep -q "epmd-rs\[$old\]: signal 15: shutting down" < <(journalctl -b -q --no-pager -u "$U")
check test "$(jcount 'with signal SIGKILL')" = 0
check test "$(jcount 'left-over process')" = 0

echo "== kill -9 of the daemon (fd store + Restart=on-failure)"
phase_start
old=$(mainpid); nr=$(prop NRestarts); t0=$(date +%s.%N)
kill -9 "$old"
new=$(wait_new_mainpid "$old" 20) || fail "kill -9: no new MainPID"
echo "FIGURE crash: kill -9 -> new MainPID active in $(ms_since "$t0") ms"
phase_end "kill -9"
check test "$(prop NRestarts)" = $((nr + 1))

echo "== watchdog expiry (WatchdogSec=${WATCHDOG_SEC}s, the daemon stopped with SIGSTOP)"
phase_start
old=$(mainpid); nr=$(prop NRestarts); wd=$(jcount 'Watchdog timeout'); t0=$(date +%s.%N)
kill -STOP "$old"
new=$(wait_new_mainpid "$old" 30) || fail "watchdog: no new MainPID"
echo "FIGURE watchdog: SIGSTOP -> new MainPID active in $(ms_since "$t0") ms"
phase_end watchdog
check test "$(jcount 'Watchdog timeout')" = $((wd + 1))
check test "$(prop NRestarts)" = $((nr + 1))
journalctl -b -q --no-pager -u "$U" | grep -E "Watchdog timeout|result 'watchdog'" | tail -3

echo "== a reload, then more than WatchdogSec: the successor pings the watchdog"
phase_start
old=$(mainpid); nr=$(prop NRestarts); wd=$(jcount 'Watchdog timeout')
check systemctl reload "$U"
new=$(wait_new_mainpid "$old" 10) || fail "reload: no new MainPID"
sleep $((WATCHDOG_SEC * 2))
phase_end "reload + $((WATCHDOG_SEC * 2)) s"
check test "$(mainpid)" = "$new"
check test "$(jcount 'Watchdog timeout')" = "$wd"
check test "$(prop NRestarts)" = "$nr"

echo "== a reload to a broken binary: the old process keeps serving, a warning in the journal"
phase_start
old=$(mainpid)
mv /usr/local/bin/epmd-rs /usr/local/bin/epmd-rs.good
printf '#!/bin/sh\nexit 3\n' > /usr/local/bin/epmd-rs; chmod 755 /usr/local/bin/epmd-rs
check systemctl reload "$U"
for _ in $(seq 1 500); do [ "$(jcount 'still serving')" -ge 1 ] && break; sleep 0.02; done
mv -f /usr/local/bin/epmd-rs.good /usr/local/bin/epmd-rs
phase_end "failed reload"
check test "$(mainpid)" = "$old"
check test "$(jcount 'still serving')" = 1

echo "== log levels in the journal"
warnings=$(journalctl -b -q --no-pager -u "$U" -p warning)
infos=$(journalctl -b -q --no-pager -u "$U" -p info)
echo "$warnings" | grep -- 'still serving'
check grep -q 'still serving' <<< "$warnings"
check grep -q 'handed over to pid' <<< "$infos"
if grep -q 'handed over to pid\|took over from' <<< "$warnings"; then fail "info lines shown by journalctl -p warning"; else echo "ok: no info line at priority warning"; fi

echo "== node events in the journal, with fields (EPMD_NODE=, EPMD_EVENT=...)"
# Node a registered at the start: journalctl finds it by field.
check test "$(journalctl -b -q --no-pager EPMD_NODE=a EPMD_EVENT=register -o cat | grep -c 'node a registered')" -ge 1
# 500 raw nodes register and go: 1000 events, each found by its fields.
python3 - <<'PY'
import socket, struct
for i in range(500):
    name = b"jev%d" % i
    req = bytes([120]) + struct.pack(">HBBHHH", 7000 + i, 77, 0, 6, 5, len(name)) + name + struct.pack(">H", 0)
    s = socket.create_connection(("127.0.0.1", 4369))
    s.sendall(struct.pack(">H", len(req)) + req)
    assert s.recv(6)[1] == 0
    s.close()
PY
jevents() { journalctl -b -q --no-pager _SYSTEMD_UNIT=$U EPMD_EVENT="$1" -o json | grep -c '"EPMD_NODE":"jev'; }
for _ in $(seq 1 300); do [ "$(jevents unregister)" -ge 500 ] && break; sleep 0.02; done
regs=$(jevents register) unregs=$(jevents unregister)
echo "FIGURE events: $regs register and $unregs unregister events of 500 raw nodes in the journal"
check test "$regs" = 500 -a "$unregs" = 500
j=$(journalctl -b -q --no-pager EPMD_NODE=jev7 EPMD_EVENT=unregister -o json)
check grep -q '"EPMD_REASON":"closed"' <<< "$j"
check grep -q '"PRIORITY":"6"' <<< "$j"
check grep -q '"EPMD_PORT":"7007"' <<< "$j"

echo "== node b pings a again; every registration is still the first one"
rm -f /tmp/a.run; sleep 0.3
read -r okb0 fb0 < <(pings b)
touch /tmp/b.run
for _ in $(seq 1 200); do read -r ok _ < <(pings b); [ "$ok" -ge $((okb0 + 3)) ] && break; sleep 0.05; done
rm -f /tmp/b.run
read -r okb fb < <(pings b)
check test "$okb" -ge $((okb0 + 3)) -a "$fb" = "$fb0"
regs_check "the end"
read -r oka fa < <(pings a)
echo "FIGURE nodes: a pinged b $oka times over the whole test, $fa failed; registrations kept: $(echo "$REGS0" | wc -l) of 2, same creation and connection"

echo "== systemctl stop: SIGTERM honoured, exit 0, Result=success, nothing left"
old=$(mainpid); cg=$(prop ControlGroup); killing=$(jcount 'Killing process'); t0=$(date +%s.%N)
check systemctl stop "$U"
echo "FIGURE stop: systemctl stop returned in $(ms_since "$t0") ms"
show
check test "$(prop Result)" = success
check test "$(prop ExecMainCode)" = 1     # CLD_EXITED
check test "$(prop ExecMainStatus)" = 0
check test "$(prop ActiveState)" = inactive
check test ! -e "/sys/fs/cgroup$cg/cgroup.procs" -o -z "$(cat "/sys/fs/cgroup$cg/cgroup.procs" 2>/dev/null)"
check test ! -d "/proc/$old"
check grep -q "epmd-rs\[$old\]: signal 15: shutting down" < <(journalctl -b -q --no-pager -u "$U")
check test "$(jcount 'with signal SIGKILL')" = 0
check test "$(jcount 'left-over process')" = 0
check test "$(jcount 'not our child')" = 0
check test "$(jcount 'Killing process')" = "$killing"   # no kill beyond the SIGTERM
journalctl -b -q --no-pager -u "$U" | grep 'Killing process' || true

touch /tmp/a.stop /tmp/b.stop
echo "== journal of the unit (last 25 lines)"
journalctl -b -q --no-pager -o short-monotonic -u "$U" -u epmd-rs.socket | tail -25
echo "FIGURE total: $(ms_since "$T_START") ms inside the container"
[ "$fail" = 0 ] && echo "epmd-rs-service: PASS" || echo "epmd-rs-service: FAIL"
exit $fail
