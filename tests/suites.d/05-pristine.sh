#!/usr/bin/env bash
# The install steps proved from zero (tests/pristine/check.sh): every tests/setup.d step in a
# pristine Debian bookworm root, then their tools used the way the suites use them. Cached on the
# hash of the steps: it runs again only when tests/setup.d (or the check) changed, or with
# FLEET_PRISTINE=1; FLEET_PRISTINE=0 skips it. When it runs, it also proves that a broken step
# (apt refusing a package that does not exist) fails the check with a line naming that step.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ "${FLEET_PRISTINE:-}" = 0 ]; then
  echo "pristine: skipped (FLEET_PRISTINE=0)"
  echo "0 passed, 0 failed, 1 skipped"
  exit 0
fi
pass=0 fail=0
out=$(mktemp)
broken=$(mktemp -d)
trap 'rm -rf "$out" "$broken"' EXIT

bash "$root/tests/pristine/check.sh" | tee "$out"
rc=${PIPESTATUS[0]}
if [ "$rc" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); fi
ran=1
grep -q '^pristine: passed (cached' "$out" && ran=0

# A broken step: a package name that does not exist, which apt really refuses.
cp "$root/tests/setup.d/lib.sh" "$broken/"
cat >"$broken/00-broken.sh" <<'EOS'
#!/usr/bin/env bash
. "$(dirname "$0")/lib.sh"
setup_apt_install fleet-no-such-package
EOS
want='setup FAILED: 00-broken\.sh: apt-get install .*fleet-no-such-package: E: Unable to locate package fleet-no-such-package$'
expect_failure() { # description command...: the command must fail with the line as its last
  local what=$1 rc last
  shift
  "$@" >"$out" 2>&1
  rc=$?
  last=$(tail -n1 "$out")
  if [ "$rc" != 0 ] && [[ $last =~ $want ]]; then
    echo "PASS: $what ($last)"
    pass=$((pass + 1))
  else
    sed 's/^/  | /' "$out" | tail -n 8
    echo "FAIL: $what (exit $rc, last line: $last)"
    fail=$((fail + 1))
  fi
}
# On this machine (a second): tests/setup.sh ends with the step's failure line.
expect_failure "a broken step ends tests/setup.sh with a line naming the step" \
  bash "$root/tests/setup.sh" "$broken"
# In a pristine root (10 s to a minute; only when the check itself ran): the check fails the same way.
if [ "$ran" = 1 ]; then
  expect_failure "a broken step fails the pristine check with a line naming the step" \
    bash "$root/tests/pristine/check.sh" --setup-dir "$broken"
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
