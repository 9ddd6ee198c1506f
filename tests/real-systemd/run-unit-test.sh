#!/bin/bash
# run-unit-test.sh — boot a REAL systemd (PID 1 of its own PID namespace) in a throwaway
# systemd-nspawn container, install binaries and unit files into it, run a test script
# inside it, and tear everything down again.
#
#   * root file system: an overlayfs whose lower layer is the host's own "/" (read-only in
#     effect) and whose upper layer is a tmpfs: no debootstrap, nothing written to the
#     host's disk, the host's /etc/systemd/system enablements are hidden (opaque dir);
#   * network: --private-network, i.e. only "lo" (127.0.0.1, ::1) inside the container:
#     port 4369 inside is not the host's 4369;
#   * mounts: everything (tmpfs, overlay, nspawn's /run/systemd/nspawn state) is made in a
#     private mount namespace (unshare -m) and disappears with it;
#   * cgroups: the run gets its own child cgroup (sysd-test.PID) that is removed at the end;
#   * processes: only the ones this script starts; the container is powered off (then
#     SIGTERM/SIGKILL of *our* nspawn pid as a fallback).
#
# Usage:
#   run-unit-test.sh [options] [--preset epmd-rs]
#
# Adapted from the real-systemd recipe of the epmd-rs sessions (../shared/tools/real-systemd);
# the project runs this copy, see tests/real-systemd/README.md.
# Options:
#   --copy SRC:DEST   copy a host file into the container (DEST absolute; mode kept). Repeatable.
#   --unit FILE       install FILE as /etc/systemd/system/<basename>. Repeatable.
#   --test SCRIPT     bash script run inside the container once it has booted, as root, cwd /root,
#                     as a transient service (systemd-run --wait --pipe, RuntimeMaxSec=--timeout);
#                     its exit status is the result. Repeatable (run in order).
#   --preset epmd-rs  $EPMD_RS_BIN (default target/debug/epmd-rs of the project) as
#                     /usr/local/bin/epmd-rs, the project's systemd/epmd-rs.{socket,service}, the
#                     test drop-in (test-dropin.conf) and the test epmd-rs-service.sh with its
#                     helpers (lookups.py, node-loop.erl), all from this directory.
#   --cgroup MODE     unified (default: the container gets a pure cgroup v2 tree, as on current
#                     distributions) or hybrid (the host's v1+v2 layout, as nspawn picks by itself).
#   --systemd-arg A   extra argument for the container's systemd, e.g. systemd.log_level=debug.
#   --log-dir DIR     also save the container console and the whole journal (journal.txt) in DIR.
#   --boot-timeout S  seconds to wait for the boot (default 60).
#   --timeout S       time limit for each test script (default 300).
#   -h, --help
# Exit status: that of the first failing test script, 0 if all pass; 2 usage/setup error;
# 3 the container did not boot.
#
# Needs: root, systemd-nspawn (apt-get install --no-install-recommends systemd-container; the
# script installs it when missing), util-linux unshare/nsenter, python3 on the host root.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SELF="$HERE/$(basename "${BASH_SOURCE[0]}")"

die() { echo "run-unit-test: $*" >&2; exit 2; }
log() { echo "[run-unit-test $(date +%T.%N | cut -c1-12)] $*" >&2; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }

COPIES=() UNITS=() TESTS=() SDARGS=() PRESET="" CGMODE=unified LOGDIR="" BOOT_TIMEOUT=60 TEST_TIMEOUT=300
INNER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --copy) COPIES+=("$2"); shift 2 ;;
    --unit) UNITS+=("$2"); shift 2 ;;
    --test) TESTS+=("$2"); shift 2 ;;
    --preset) PRESET="$2"; shift 2 ;;
    --systemd-arg) SDARGS+=("$2"); shift 2 ;;
    --cgroup) CGMODE="$2"; shift 2 ;;
    --log-dir) LOGDIR="$2"; shift 2 ;;
    --boot-timeout) BOOT_TIMEOUT="$2"; shift 2 ;;
    --timeout) TEST_TIMEOUT="$2"; shift 2 ;;
    --__inner) INNER=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

case "$PRESET" in
  "") ;;
  epmd-rs)
    # The project's own units and service test, run from anywhere: paths relative to
    # this script (tests/real-systemd/ of the project).
    ROOT="$(cd "$HERE/../.." && pwd)"
    B="${EPMD_RS_BIN:-$ROOT/target/debug/epmd-rs}"
    [ -x "$B" ] || die "no epmd-rs binary at $B (cargo build, or set EPMD_RS_BIN)"
    COPIES+=("$B:/usr/local/bin/epmd-rs"
             "$HERE/lookups.py:/usr/local/lib/epmd-rs-test/lookups.py"
             "$HERE/node-loop.erl:/usr/local/lib/epmd-rs-test/node-loop.erl"
             "$HERE/test-dropin.conf:/etc/systemd/system/epmd-rs.service.d/test.conf")
    UNITS+=("$ROOT/systemd/epmd-rs.socket" "$ROOT/systemd/epmd-rs.service")
    TESTS+=("$HERE/epmd-rs-service.sh") ;;
  *) die "unknown preset $PRESET" ;;
esac
case "$CGMODE" in unified|hybrid) ;; *) die "--cgroup unified|hybrid" ;; esac
[ ${#TESTS[@]} -gt 0 ] || die "nothing to test: give --test SCRIPT or --preset NAME"

# Arguments passed on to the inner half (re-executed in a private mount namespace).
pass_args() {
  local a
  for a in "${COPIES[@]}"; do printf '%s\0%s\0' --copy "$a"; done
  for a in "${UNITS[@]}"; do printf '%s\0%s\0' --unit "$a"; done
  for a in "${TESTS[@]}"; do printf '%s\0%s\0' --test "$a"; done
  for a in "${SDARGS[@]}"; do printf '%s\0%s\0' --systemd-arg "$a"; done
  printf '%s\0%s\0' --cgroup "$CGMODE" --boot-timeout "$BOOT_TIMEOUT" --timeout "$TEST_TIMEOUT"
  [ -z "$LOGDIR" ] || printf '%s\0%s\0' --log-dir "$LOGDIR"
}

###########################################################################################
# Outer half: preflight, own cgroup, private mount namespace, cleanup of what survives it.
###########################################################################################
if [ "$INNER" = 0 ]; then
  [ "$(id -u)" = 0 ] || die "must run as root"
  T0=$(now)
  if ! command -v systemd-nspawn >/dev/null; then
    log "installing systemd-container (systemd-nspawn)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd-container >/dev/null \
      || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd-container >/dev/null; } \
      || die "cannot install systemd-container"
  fi
  [ -x /lib/systemd/systemd ] || die "no /lib/systemd/systemd on the host root (apt-get install systemd)"
  for f in "${UNITS[@]}" "${TESTS[@]}"; do [ -r "$f" ] || die "cannot read $f"; done
  for c in "${COPIES[@]}"; do [ -r "${c%%:*}" ] || die "cannot read ${c%%:*}"; done
  [ -z "$LOGDIR" ] || mkdir -p "$LOGDIR"

  # A cgroup of our own in every writable hierarchy that nspawn uses (name=systemd v1 and/or
  # cgroup2), as a child of the cgroup we are in. Only nspawn is moved into it (the scripts
  # stay where they are); nspawn (--keep-unit) then creates payload/ (the container) and
  # supervisor/ (itself) below it. Nothing is created at the host's cgroup root.
  CGDIRS=()
  add_cg() { # $1 mount point, $2 our path in it
    local d="$1$2/sysd-test.$$"; d="${d//\/\//\/}"
    mkdir "$d" && CGDIRS+=("$d")
  }
  fstype() { stat -f -c %T "$1" 2>/dev/null || true; }
  if [ "$(fstype /sys/fs/cgroup)" = cgroup2fs ]; then
    add_cg /sys/fs/cgroup "$(sed -n 's/^0:://p' /proc/self/cgroup)"
  else
    [ "$(fstype /sys/fs/cgroup/unified)" = cgroup2fs ] && add_cg /sys/fs/cgroup/unified "$(sed -n 's/^0:://p' /proc/self/cgroup)"
    [ -d /sys/fs/cgroup/systemd ] && add_cg /sys/fs/cgroup/systemd "$(sed -n 's/^[0-9]*:name=systemd://p' /proc/self/cgroup)"
  fi

  # nspawn keeps its state in /run/systemd/nspawn; a tmpfs over it (in the private mount
  # namespace) keeps that off the host. The mount point itself is removed by the last run
  # to finish if a run of this script made it (marker file).
  NSPAWN_MARK=/run/systemd/nspawn/.made-by-run-unit-test
  [ -d /run/systemd/nspawn ] || { mkdir -p /run/systemd/nspawn && : > "$NSPAWN_MARK"; }
  WORK=$(mktemp -d /tmp/real-systemd.XXXXXX)
  PIDFILE="$WORK.nspawn-pid"
  : > "$PIDFILE"

  cleanup_outer() {
    local rc=$? p
    set +e
    # Only our own nspawn, if the inner half died without stopping it.
    if [ -s "$PIDFILE" ]; then
      p=$(cat "$PIDFILE")
      if [ -d "/proc/$p" ] && grep -q systemd-nspawn "/proc/$p/cmdline" 2>/dev/null; then
        log "nspawn $p still alive: SIGTERM (it halts the container), SIGKILL after 30 s"
        kill -TERM "$p" 2>/dev/null
        for _ in $(seq 1 300); do [ -d "/proc/$p" ] || break; sleep 0.1; done
        [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null
      fi
    fi
    # Remove our cgroups (deepest first); their processes must be gone by now.
    local d
    for d in "${CGDIRS[@]}"; do
      for _ in 1 2 3 4 5; do
        [ -d "$d" ] || break
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$d" ] && sleep 1
      done
      [ -d "$d" ] && { log "WARNING: could not remove cgroup $d (processes left?)"; [ "$rc" != 0 ] || rc=4; }
    done
    rm -rf "$WORK" "$PIDFILE"
    if [ -e "$NSPAWN_MARK" ] && ! compgen -G '/tmp/real-systemd.*.nspawn-pid' >/dev/null; then
      rm -f "$NSPAWN_MARK"; rmdir /run/systemd/nspawn 2>/dev/null
    fi
    log "total (setup + boot + tests + teardown): $(secs "$T0" "$(now)") s, exit $rc"
    exit "$rc"
  }
  trap cleanup_outer EXIT
  # bash runs traps only between commands: the inner half runs in the background and we
  # wait for it, so that a SIGTERM/SIGINT is passed on at once (it then powers off).
  INNER_PID=""
  on_signal() {
    trap '' INT TERM
    [ -z "$INNER_PID" ] || { kill -TERM "$INNER_PID" 2>/dev/null; wait "$INNER_PID"; }
    exit 130
  }
  trap on_signal INT TERM

  set +e
  mapfile -d '' ARGS < <(pass_args)
  CGLIST=$(IFS=:; echo "${CGDIRS[*]}")
  WORK="$WORK" PIDFILE="$PIDFILE" CGLIST="$CGLIST" unshare --mount --propagation private -- "$SELF" --__inner "${ARGS[@]}" &
  INNER_PID=$!
  wait "$INNER_PID"
  rc=$?
  set -e
  exit $rc
fi

###########################################################################################
# Inner half: runs in a private mount namespace; all mounts die with it.
###########################################################################################
: "${WORK:?}" "${PIDFILE:?}" "${CGLIST?}"
mount -n -t tmpfs -o mode=0755,size=2g real-systemd "$WORK"
mount -n -t tmpfs -o mode=0755,size=16m real-systemd-nspawn /run/systemd/nspawn
mkdir -p "$WORK/upper/etc/systemd/system" "$WORK/work" "$WORK/root"
# Hide the host's own unit enablements (/etc/systemd/system/*.wants: postgresql, epmd.socket,
# timers, gettys, ...): only the distribution's static units plus ours are seen.
python3 -c 'import os,sys; os.setxattr(sys.argv[1], "trusted.overlay.opaque", b"y")' "$WORK/upper/etc/systemd/system"
# A machine id of its own (nspawn refuses to share the host's journal otherwise).
tr -d '-' < /proc/sys/kernel/random/uuid > "$WORK/upper/etc/machine-id"
cat > "$WORK/upper/etc/systemd/system/sysd-test.target" <<'EOF'
[Unit]
Description=run-unit-test: basic system, nothing else
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
mount -n -t overlay -o "lowerdir=/,upperdir=$WORK/upper,workdir=$WORK/work" real-systemd-root "$WORK/root"
R="$WORK/root"
for c in "${COPIES[@]}"; do
  src="${c%%:*}" dst="${c#*:}"
  mkdir -p "$R$(dirname "$dst")"; cp -p --remove-destination "$src" "$R$dst"
done
for u in "${UNITS[@]}"; do cp "$u" "$R/etc/systemd/system/"; done
mkdir -p "$R/root/run-unit-test"
i=0; INTESTS=()
for t in "${TESTS[@]}"; do i=$((i+1)); cp "$t" "$R/root/run-unit-test/$i-$(basename "$t")"; INTESTS+=("/root/run-unit-test/$i-$(basename "$t")"); done

NSPAWN_ENV=()
[ "$CGMODE" = unified ] && NSPAWN_ENV=(SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1)
CONSOLE="$WORK/console.log"
T1=$(now)
log "booting systemd in nspawn (cgroup $CGMODE, private network: lo only)"
# setsid: a signal to our process group (timeout(1), ^C) reaches only the script, which
# then powers the container off in order.
# sh -c: move just this process (it execs nspawn) into the run's cgroups.
sh -c 'IFS=:; for d in $CGLIST; do echo $$ > "$d/cgroup.procs" || exit 1; done; exec "$@"' sh \
setsid env "${NSPAWN_ENV[@]}" systemd-nspawn --quiet -D "$R" --register=no --keep-unit --private-network --link-journal=no \
  --machine="sysd-test-$$" --console=read-only --tmpfs=/tmp:mode=1777 \
  -b systemd.unit=sysd-test.target systemd.show_status=1 "${SDARGS[@]}" < /dev/null > "$CONSOLE" 2>&1 &
NSPID=$!
echo "$NSPID" > "$PIDFILE"

CPID="" TPID=""
inner_cleanup() {
  local rc=$?
  set +e
  trap '' INT TERM   # a second signal (e.g. timeout(1) signals the whole group) must not cut this short
  if [ -n "$TPID" ]; then
    # Interrupted during a test: stop the test's unit so that its systemd-run client returns.
    in_ct systemctl stop 'run-unit-test-*.service' >/dev/null 2>&1
    for _ in $(seq 1 50); do kill -0 "$TPID" 2>/dev/null || break; sleep 0.1; done
    kill -TERM "$TPID" 2>/dev/null
  fi
  if [ -n "$CPID" ] && [ -n "$LOGDIR" ]; then
    in_ct journalctl -b --no-pager -o short-monotonic > "$LOGDIR/journal.txt" 2>&1
  fi
  local T3; T3=$(now)
  if kill -0 "$NSPID" 2>/dev/null; then
    if [ -n "$CPID" ]; then in_ct systemctl poweroff --no-block >/dev/null 2>&1; else kill -TERM "$NSPID"; fi
    for _ in $(seq 1 150); do kill -0 "$NSPID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$NSPID" 2>/dev/null; then
      log "container did not power off in 30 s: SIGTERM to nspawn"; kill -TERM "$NSPID"; sleep 3; kill -TERM "$NSPID" 2>/dev/null; sleep 2
      kill -KILL "$NSPID" 2>/dev/null
    fi
  fi
  wait "$NSPID" 2>/dev/null; local nrc=$?
  log "teardown: $(secs "$T3" "$(now)") s (nspawn exit $nrc)"
  [ -z "$LOGDIR" ] || cp "$CONSOLE" "$LOGDIR/console.log"
  if [ "$rc" = 3 ]; then echo "---- container console ----" >&2; tail -50 "$CONSOLE" >&2; fi
  exit "$rc"
}
trap inner_cleanup EXIT
trap 'exit 130' INT TERM

in_ct() { # run a command inside the container (all its namespaces, its root), clean env
  nsenter -t "$CPID" -m -u -i -n -p -C -r -w \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER=cat SYSTEMD_COLORS=0 SYSTEMD_LOG_COLOR=0 "$@"
}

# The container's PID 1: the child of nspawn that lives in another PID namespace.
MYPIDNS=$(readlink /proc/self/ns/pid)
deadline=$(( $(date +%s) + BOOT_TIMEOUT ))
while [ -z "$CPID" ]; do
  kill -0 "$NSPID" 2>/dev/null || { log "nspawn exited during boot"; exit 3; }
  for c in $(pgrep -P "$NSPID" || true); do
    [ "$(readlink "/proc/$c/ns/pid" 2>/dev/null)" != "$MYPIDNS" ] && CPID=$c && break
  done
  [ -n "$CPID" ] || { [ "$(date +%s)" -lt "$deadline" ] || { log "no container init after ${BOOT_TIMEOUT}s"; exit 3; }; sleep 0.05; }
done
state=""
while :; do
  state=$(in_ct systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  kill -0 "$NSPID" 2>/dev/null || { log "nspawn exited during boot"; exit 3; }
  [ "$(date +%s)" -lt "$deadline" ] || { log "boot not finished after ${BOOT_TIMEOUT}s (state: $state)"; exit 3; }
  sleep 0.1
done
T2=$(now)
log "booted: system $state in $(secs "$T1" "$T2") s (container init = host pid $CPID)"
if [ "$state" = degraded ]; then in_ct systemctl --failed --no-pager >&2 || true; fi

rc=0 i=0
for t in "${INTESTS[@]}"; do
  i=$((i+1))
  log "test $t"
  set +e
  # As a transient service of the container's systemd (its own cgroup, killed as a whole
  # at RuntimeMaxSec=), its output piped here; systemd-run returns the script's exit status.
  setsid timeout --foreground $((TEST_TIMEOUT + 30)) nsenter -t "$CPID" -m -u -i -n -p -C -r -w \
    env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    systemd-run --quiet --wait --pipe --collect --unit="run-unit-test-$i" \
      -p RuntimeMaxSec="$TEST_TIMEOUT" -p WorkingDirectory=/root \
      -E PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin -E HOME=/root \
      -E LANG=C.UTF-8 -E TERM=dumb -E SYSTEMD_PAGER=cat -E SYSTEMD_COLORS=0 \
      /bin/bash "$t" < /dev/null &
  TPID=$!
  wait "$TPID"
  trc=$?
  TPID=""
  set -e
  log "test $t: exit $trc ($(secs "$T2" "$(now)") s since boot)"
  [ "$trc" = 0 ] || { [ "$rc" != 0 ] || rc=$trc; }
done
exit "$rc"
