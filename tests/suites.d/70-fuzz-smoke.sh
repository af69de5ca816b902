#!/usr/bin/env bash
# Every fuzz target in tests/fuzz for a few seconds (FUZZ_SMOKE_SECONDS, default 5): proves
# the targets build and their seed corpora run clean. The long runs are tests/fuzz/run.sh
# <seconds>, run by hand (see docs/security.md); CI does not fuzz for long.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$root/target/fuzz}"
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}" exec "$root/tests/fuzz/run.sh" "${FUZZ_SMOKE_SECONDS:-5}"
