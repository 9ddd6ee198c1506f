#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) with libFuzzer for SECONDS each, on the stable
# toolchain: no nightly and no cargo-fuzz. The targets are built the way cargo-fuzz builds
# them with `--sanitizer none` (SanitizerCoverage through -Cpasses/-Cllvm-args, which stable
# rustc accepts; libfuzzer-sys compiles libFuzzer with the C++ compiler), then each binary is
# run directly.
#
#   fuzz/run.sh SECONDS [TARGET...]
#
# New inputs go to $FUZZ_WORK_CORPUS/<target> (default fuzz/work-corpus/, ignored by git);
# the committed seeds in fuzz/corpus/ are only read. A crash stops the run (exit 1) and
# leaves its input in fuzz/artifacts/<target>/.
#
# FUZZ_FALLBACK=1 (CI): if there is no working C++ compiler (libFuzzer cannot be built), say
# so and run the fuzz bodies in-process instead (`cargo test --lib fuzzing::`: the committed corpus
# and a bounded pseudo-random loop), so the step still checks the oracles.
# FUZZ_QUIET=1 (CI): libFuzzer's progress goes to a log, shown (its end) only on failure.
# FUZZ_TARGET_DIR: where the targets are built (default fuzz/target).
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	targets=(decode_frame decode_request roundtrip session state)
fi
cargo=${CARGO:-cargo}
work=${FUZZ_WORK_CORPUS:-work-corpus}
target_dir=${FUZZ_TARGET_DIR:-target}
host=$($cargo --version >/dev/null && rustc -vV | sed -n 's/^host: //p')

# The flags cargo-fuzz passes for `--sanitizer none` (coverage counters, the PC table and
# comparison tracing that libFuzzer feeds on; `cfg(fuzzing)`; debug assertions and
# overflow checks so arithmetic bugs panic).
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares"
flags+=" --cfg fuzzing -Cdebug-assertions -Coverflow-checks"

# FUZZ_FALLBACK covers a machine without a working C++ compiler only (libFuzzer cannot be
# built there); any other build failure (a stale fuzz/Cargo.lock, a compile error) fails.
cxx=${CXX:-c++}
if ! echo 'int main() { return 0; }' | "$cxx" -x c++ - -o /dev/null 2>/dev/null; then
	if [ "${FUZZ_FALLBACK:-0}" = 1 ]; then
		echo "fuzz: no working C++ compiler ($cxx), so libFuzzer cannot be built;" \
			"running the fuzz bodies in-process instead (cargo test --lib fuzzing::)" >&2
		cd .. && exec $cargo test --locked --lib fuzzing::
	fi
	echo "fuzz: no working C++ compiler ($cxx): libFuzzer cannot be built" >&2
	exit 1
fi

# --target: the flags apply to the targets only, not to build scripts.
RUSTFLAGS="$flags" $cargo build --locked --release --target "$host" \
	--target-dir "$target_dir" --bins

summary=()
for t in "${targets[@]}"; do
	mkdir -p "$work/$t" "artifacts/$t"
	log=$(mktemp)
	show=(tee "$log")
	if [ "${FUZZ_QUIET:-0}" = 1 ]; then
		show=(cp /dev/stdin "$log")
	fi
	# -max_total_time ends the run; the timeout is a guard against a hung target.
	if ! timeout $((seconds + 60)) "$target_dir/$host/release/$t" "$work/$t" "corpus/$t" \
		-max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
		2>&1 | "${show[@]}"; then
		[ "${FUZZ_QUIET:-0}" = 1 ] && tail -n 60 "$log" >&2
		echo "fuzz: target $t FAILED; its input is in fuzz/artifacts/$t/" >&2
		rm -f "$log"
		exit 1
	fi
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	rm -f "$log"
	summary+=("fuzz $t: ${runs:-?} executions in ${seconds} s, no failure")
done
printf '%s\n' "${summary[@]}"
