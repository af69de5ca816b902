#!/usr/bin/env bash
# The one test command (README, .ci/run). Installs what it needs, idempotently, then runs:
# format and lint gates, every cargo test in the workspace, and every suite in tests/suites.d.
#
#   FLEET_SKIP_SETUP=1   skip the install steps (you know the machine has everything)
#   FLEET_PRISTINE=1     run the pristine-root check of the install steps even when its cache
#                        says they passed; FLEET_PRISTINE=0 skips it (tests/pristine/check.sh)
#   FLEET_SUITES=a,b     run only the named suites from tests/suites.d (default: all)
#   FLEET_QEMU_PREPARE=0 build the QEMU suite's firmware and images in its turn, not in the
#                        background beside the cargo tests (tests/qemu/prepare.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
started=$(date +%s)
stamp() { echo "==> [$(( $(date +%s) - started ))s] $*"; }

if [ "${FLEET_SKIP_SETUP:-0}" != 1 ]; then
  stamp "setup: tests/setup.d"
  # The last line of a failed setup names the step, the command and the cause.
  bash tests/setup.sh || exit 1
fi

wanted() { # suite file name: run it?
  local name=$1
  [ -z "${FLEET_SUITES:-}" ] || [[ ",${FLEET_SUITES}," == *",${name#*-},"* ]] || [[ ",${FLEET_SUITES}," == *",${name},"* ]]
}

# The QEMU suite's builds (the firmware's cross build, the station images) start now, at the
# lowest priority, in the CPU time the lints, the cargo tests and the suites before it leave
# idle; the suite waits for them and then finds them in their caches. Their log is
# target/qemu-prepare.log; a failure there is the suite's to report (it builds again).
prepare=
if wanted 60-qemu && [ "${FLEET_QEMU_PREPARE:-1}" != 0 ]; then
  mkdir -p target
  # (its own process group, so that a failed run stops its builds too)
  setsid nice -n 19 tests/qemu/prepare.sh >target/qemu-prepare.log 2>&1 &
  prepare=$!
  trap '[ -z "$prepare" ] || kill -- "-$prepare" 2>/dev/null || true' EXIT
fi

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
  if [ "$name" = 60-qemu ] && [ -n "$prepare" ]; then
    stamp "waiting for the QEMU builds started at the beginning (target/qemu-prepare.log)"
    wait "$prepare" || true
    prepare=
  fi
  stamp "suite: $name"
  if ! bash "$suite"; then
    echo "suite FAILED: $name"
    failed=$((failed + 1))
  fi
done
stamp "done"
[ "$failed" -eq 0 ]
