#!/usr/bin/env bash
# The one test command (README, .ci/run). Installs what it needs, idempotently, then runs:
# format and lint gates, every cargo test in the workspace, and every suite in tests/suites.d.
#
#   FLEET_SKIP_SETUP=1   skip the install steps (you know the machine has everything)
#   FLEET_PRISTINE=1     run the pristine-root check of the install steps even when its cache
#                        says they passed; FLEET_PRISTINE=0 skips it (tests/pristine/check.sh)
#   FLEET_SUITES=a,b     run only the named suites from tests/suites.d (default: all)
#   FLEET_PREBUILD=0     build the QEMU suite's firmware and images and the fuzz targets in
#                        their suites' turn, not in the background from the start (tests/prebuild.sh)
#   FLEET_DISK_CHECK=0   skip the free-space check below
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
started=$(date +%s)
stamp() { echo "==> [$(( $(date +%s) - started ))s] $*"; }

# Free disk, checked before anything is built: a full disk would otherwise stop the run half-way
# with "No space left on device" from whichever build hit it. A fresh clone's run grows target/
# to about COLD_GIB and needs SCRATCH_GIB more in TMPDIR at the QEMU suite's peak (each
# scenario's disk copies; the suite removes them). Measured 2026-12-07 (commit a112cb2, sampled
# every 30 s): target/ 9.7 GiB, the QEMU suite's work directory 5.6 GiB.
COLD_GIB=12 SCRATCH_GIB=7
disk_check() {
  [ "${FLEET_DISK_CHECK:-1}" != 0 ] || return 0
  local target=${CARGO_TARGET_DIR:-$root/target} tmp=${TMPDIR:-/tmp} built_kib=0 need_kib dev at
  [ -d "$target" ] && built_kib=$(du -sk "$target" | cut -f1)
  declare -A need=() where=()
  # (the file system a directory is or will be made on: its nearest existing ancestor's)
  at=$target; until [ -d "$at" ]; do at=$(dirname "$at"); done
  dev=$(stat -c %d "$at")
  need_kib=$(( COLD_GIB * 1048576 - built_kib ))
  need[$dev]=$(( need_kib > 0 ? need_kib : 0 )) where[$dev]=$at
  at=$tmp; until [ -d "$at" ]; do at=$(dirname "$at"); done
  dev=$(stat -c %d "$at")
  need[$dev]=$(( ${need[$dev]:-0} + SCRATCH_GIB * 1048576 )) where[$dev]=${where[$dev]:-$at}
  for dev in "${!need[@]}"; do
    local free_kib
    free_kib=$(df -Pk "${where[$dev]}" | awk 'NR == 2 { print $4 }')
    if [ "$free_kib" -lt "${need[$dev]}" ]; then
      echo "tests: not enough free disk on the file system of ${where[$dev]}: $((free_kib / 1048576)) GiB free," \
        "the run needs about $(( (need[$dev] + 1048575) / 1048576 )) GiB (a fresh clone's run builds about" \
        "$COLD_GIB GiB in $target, which holds $((built_kib / 1048576)) GiB now; the QEMU suite needs" \
        "$SCRATCH_GIB GiB in $tmp)." \
        "Free space (failed QEMU runs' logs in $tmp/fleet-qemu.*, other clones' target/), point" \
        "CARGO_TARGET_DIR or TMPDIR elsewhere, or skip this check with FLEET_DISK_CHECK=0." >&2
      return 1
    fi
  done
}
disk_check || exit 1

if [ "${FLEET_SKIP_SETUP:-0}" != 1 ]; then
  stamp "setup: tests/setup.d"
  # The last line of a failed setup names the step, the command and the cause.
  bash tests/setup.sh || exit 1
fi

wanted() { # suite file name: run it?
  local name=$1
  [ -z "${FLEET_SUITES:-}" ] || [[ ",${FLEET_SUITES}," == *",${name#*-},"* ]] || [[ ",${FLEET_SUITES}," == *",${name},"* ]]
}

# The slow builds of the QEMU and fuzz suites start now, at the lowest priority, in the CPU time
# the lints, the cargo tests and the suites before them leave idle (tests/prebuild.sh); the first
# of those suites waits until they have all ended, and each then finds its build done (logs:
# target/prebuild-*.log). All of them: the QEMU suite's figures (the 15-minute budget) are for a
# machine running nothing else, and the fuzz targets' link beside a TCG guest slowed its boots.
prebuild=() prebuild_pid=
wanted 60-qemu && prebuild+=(qemu)
wanted 70-fuzz-smoke && prebuild+=(fuzz)
if [ ${#prebuild[@]} -gt 0 ] && [ "${FLEET_PREBUILD:-1}" != 0 ]; then
  mkdir -p target
  # (its own process group, so that a failed run stops its builds too)
  setsid nice -n 19 tests/prebuild.sh "${prebuild[@]}" &
  prebuild_pid=$!
  trap '[ -z "$prebuild_pid" ] || kill -- "-$prebuild_pid" 2>/dev/null || true' EXIT
fi
prebuilt() { # wait until the background builds have ended (a failure is the suite's to report)
  [ -n "$prebuild_pid" ] || return 0
  stamp "waiting for the builds started in the background (${prebuild[*]}: target/prebuild-*.log)"
  wait "$prebuild_pid" || true
  prebuild_pid=
}

stamp "cargo fmt --check"
cargo fmt --all --check

stamp "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

stamp "cargo test"
cargo test --workspace --locked 2>&1 | tee target/cargo-test.log
# One closing line over all test binaries, for people and for CI.
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "cargo: %d passed, %d failed, %d ignored\n", p, f, i }' target/cargo-test.log

failed=0
for suite in tests/suites.d/*.sh; do
  name=$(basename "$suite" .sh)
  wanted "$name" || continue
  case $name in 60-qemu | 70-fuzz-smoke) prebuilt ;; esac
  stamp "suite: $name"
  if ! bash "$suite"; then
    echo "suite FAILED: $name"
    failed=$((failed + 1))
  fi
done
stamp "done"
[ "$failed" -eq 0 ]
