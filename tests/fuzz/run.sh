#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for a bounded time each.
#
#   tests/fuzz/run.sh <seconds> [target...]
#
# Builds with cargo-fuzz on the stable toolchain (RUSTC_BOOTSTRAP=1 unlocks the sanitizer
# flags; no nightly needed), AddressSanitizer on. Each target's corpus grows in
# corpus/<target>/ (not committed; seeded from seeds/<target>/), crashes land in
# artifacts/<target>/. Prints one line per target with its executions, then
# "N passed, N failed" (failed = the target crashed, leaked or timed out).
# FUZZ_JOBS=n runs n targets at once (default 1); FUZZ_SANITIZER=none builds without
# AddressSanitizer (the CI smoke run: faster to build); FUZZ_BUILD_ONLY=1 stops after the build
# (tests/prebuild.sh). Exit status 1 when any target failed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${1:?usage: run.sh <seconds> [target...]}"
shift
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-address}"
cd "$here"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir .)
fi

if ! cargo fuzz build --fuzz-dir . -O -s "$sanitizer" >"$here/build.log" 2>&1; then
    cat "$here/build.log" >&2
    echo "0 passed, ${#targets[@]} failed"
    exit 1
fi
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then
    echo "fuzz: ${#targets[@]} targets built"
    exit 0
fi

logs="$here/logs"
mkdir -p "$logs"

run_one() {
    local t="$1"
    mkdir -p "corpus/$t" "artifacts/$t"
    local seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    # -rss_limit_mb bounds memory; -timeout flags a single input that hangs for 10 s.
    cargo fuzz run --fuzz-dir . -O -s "$sanitizer" "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
        >"$logs/$t.log" 2>&1
}

pids=()
names=()
passed=0
failed=0
report() {
    local t="$1" rc="$2"
    local runs
    runs="$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -ao '[0-9]*$' | tail -1)"
    local cov
    cov="$(grep -ao 'cov: [0-9]*' "$logs/$t.log" | tail -1)"
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "ok   $t: ${runs:-?} executions in ${seconds} s (${cov:-cov: ?})"
    else
        failed=$((failed + 1))
        echo "FAIL $t: exit $rc after ${runs:-?} executions; see $logs/$t.log and artifacts/$t/"
    fi
}

for t in "${targets[@]}"; do
    run_one "$t" &
    pids+=("$!")
    names+=("$t")
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        wait "${pids[0]}"
        report "${names[0]}" "$?"
        pids=("${pids[@]:1}")
        names=("${names[@]:1}")
    fi
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    report "${names[$i]}" "$?"
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
