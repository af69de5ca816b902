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
if grep -q '^pristine: passed (cached' "$out"; then
  echo "$pass passed, $fail failed"
  exit 0
fi

# A broken step: a package name that does not exist. The check must fail and name the step.
cp "$root/tests/setup.d/lib.sh" "$broken/"
cat >"$broken/00-broken.sh" <<'EOS'
#!/usr/bin/env bash
. "$(dirname "$0")/lib.sh"
setup_apt_install fleet-no-such-package
EOS
echo "pristine: a broken step must fail the check and be named"
bash "$root/tests/pristine/check.sh" --setup-dir "$broken" >"$out" 2>&1
rc=$?
sed 's/^/  | /' "$out" | tail -n 8
last=$(tail -n1 "$out")
want='^pristine: setup FAILED: 00-broken\.sh: apt-get install .*fleet-no-such-package: E: Unable to locate package fleet-no-such-package$'
if [ "$rc" != 0 ] && [[ $last =~ $want ]]; then
  echo "PASS: a broken step fails the check with a line naming the step"
  pass=$((pass + 1))
else
  echo "FAIL: a broken step fails the check with a line naming the step (exit $rc, last line: $last)"
  fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
