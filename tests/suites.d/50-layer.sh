#!/usr/bin/env bash
# The layer check of meta-fleet, registry-only tier (and the deeper tier when FLEET_UPSTREAM is
# set), then the proof that the check fails on broken inputs, then the hardening of the units and
# the RAUC D-Bus policy (systemd-analyze, a real dbus-daemon with rauc, the units under systemd).
set -uo pipefail
cd "$(dirname "$0")/../.."
pass=0; fail=0
tally() { # output of a checker whose last line is "N passed, N failed..."
  local last; last=$(tail -1 "$1")
  pass=$((pass + $(echo "$last" | sed -n 's/^\([0-9]*\) passed.*/\1/p')))
  fail=$((fail + $(echo "$last" | sed -n 's/^[0-9]* passed, \([0-9]*\) failed.*/\1/p')))
}
log=$(mktemp); trap 'rm -f "$log"' EXIT
bash tests/layer/check-layer.sh | tee "$log"; tally "$log"
bash tests/layer/test-checker.sh | tee "$log"; tally "$log"
python3 tests/layer/test_release_guard.py | tee "$log"; tally "$log"
bash tests/layer/test-runtime.sh | tee "$log"; tally "$log"
bash tests/layer/test-unit-hardening.sh | tee "$log"; tally "$log"
bash tests/layer/test-dbus-policy.sh | tee "$log"; tally "$log"
bash tests/layer/test-units-in-systemd.sh | tee "$log"; tally "$log"
bash tests/layer/test-config-push-in-systemd.sh | tee "$log"; tally "$log"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
