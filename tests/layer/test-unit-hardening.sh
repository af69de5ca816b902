#!/usr/bin/env bash
# The fleet daemons' systemd units (meta-fleet/recipes-fleet/fleet-firmware/files/*.service) as
# the recipe installs them (@BINDIR@, @DATADIR@, @WATCHDOG_SEC@ substituted), checked by this
# machine's systemd: `systemd-analyze security --offline=yes` scores each unit's exposure and a
# unit fails above its ceiling (set just above what the unit reaches now: a change that loosens
# the sandbox must lower another setting or raise the ceiling here, on purpose);
# `systemd-analyze verify` must print nothing (an unknown or misspelled directive is ignored by
# systemd with only a warning: here it fails). Writable paths are checked against what each
# daemon writes. Prints the scores and "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
files=$(cd "$here/../../meta-fleet/recipes-fleet/fleet-firmware/files" && pwd)
pass=0; fail=0
ok() { echo "PASS: $1"; pass=$((pass + 1)); }
ko() { echo "FAIL: $1${2:+ ($2)}"; fail=$((fail + 1)); }

# unit, exposure ceiling, the paths it may write (besides what systemd gives every unit).
declare -A ceiling=(
  [fleet-updated]=1.9 [fleet-recorderd]=0.9 [fleet-retentiond]=0.7 [fleet-boot-check]=1.3)
declare -A writable=(
  [fleet-updated]="/data/fleet/updated /data/fleet/downloads /data/fleet/boot /data/fleet/update /run/fleet /boot/firmware"
  [fleet-recorderd]="/data/fleet/recordings"
  [fleet-retentiond]="/data/fleet/recordings /data/fleet/retention"
  [fleet-boot-check]="/data/fleet/boot /run/fleet /boot/firmware /run/systemd")

if ! command -v systemd-analyze >/dev/null; then
  ko systemd_analyze_is_installed "run tests/setup.d/55-hardening.sh"; echo "$pass passed, $fail failed"; exit 1
fi
echo "systemd-analyze: $(systemd-analyze --version | head -1)"
scratch=$(mktemp -d /tmp/fleet-units.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/bin"
for b in fleet-updated fleet-recorderd fleet-retentiond fleet-bootctl; do
  printf '#!/bin/sh\nexit 0\n' > "$scratch/bin/$b"; chmod 0755 "$scratch/bin/$b"
done
# As fleet-firmware_git.bb installs them; the binaries are stand-ins so verify finds them.
install_unit() { # unit bindir -> $scratch/<unit>.service
  sed -e "s,@BINDIR@,$2,g" -e 's,@DATADIR@,/data,g' -e 's,@WATCHDOG_SEC@,30s,g' \
    "$files/$1.service" > "$scratch/$1.service"
}

for unit in fleet-updated fleet-recorderd fleet-retentiond fleet-boot-check; do
  install_unit "$unit" "$scratch/bin"
  score=$(systemd-analyze security --offline=yes --no-pager "$scratch/$unit.service" 2>&1 \
    | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
  echo "exposure $unit: ${score:-?} (ceiling ${ceiling[$unit]})"
  if [ -n "$score" ] && awk -v s="$score" -v c="${ceiling[$unit]}" 'BEGIN { exit !(s <= c) }'; then
    ok "${unit//-/_}_exposure_stays_at_or_below_${ceiling[$unit]}"
  else
    ko "${unit//-/_}_exposure_stays_at_or_below_${ceiling[$unit]}" "scored ${score:-nothing}"
  fi
  out=$(cd "$scratch" && systemd-analyze verify "./$unit.service" 2>&1)
  if [ -z "$out" ]; then ok "${unit//-/_}_passes_systemd_analyze_verify"; else ko "${unit//-/_}_passes_systemd_analyze_verify" "$out"; fi
  grep -qx 'ProtectSystem=strict' "$scratch/$unit.service" \
    && ok "${unit//-/_}_sees_the_os_read_only" || ko "${unit//-/_}_sees_the_os_read_only"
  extra=""
  for p in $(sed -n 's/^ReadWritePaths=//p' "$scratch/$unit.service"); do
    [[ " ${writable[$unit]} " == *" ${p#-} "* ]] || extra="$extra $p"
  done
  [ -z "$extra" ] && ok "${unit//-/_}_writes_only_its_own_paths" || ko "${unit//-/_}_writes_only_its_own_paths" "also:$extra"
done

# The control: a unit without the sandbox scores far above every ceiling, and a misspelled
# directive makes verify talk, so the checks above can fail.
printf '[Service]\nExecStart=%s/bin/fleet-updated\nProtectSytem=strict\n' "$scratch" > "$scratch/bare.service"
score=$(systemd-analyze security --offline=yes --no-pager "$scratch/bare.service" 2>&1 \
  | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
awk -v s="${score:-0}" 'BEGIN { exit !(s > 5) }' && ok "an_unsandboxed_unit_scores_above_5" || ko "an_unsandboxed_unit_scores_above_5" "scored ${score:-nothing}"
out=$(cd "$scratch" && systemd-analyze verify ./bare.service 2>&1)
grep -q "Unknown key" <<<"$out" && ok "verify_reports_a_misspelled_directive" || ko "verify_reports_a_misspelled_directive" "$out"

# fleet-updated exits 10 once the journal holds a reboot intent: its ExecStopPost (run as root)
# reboots then, and only then.
post=$(sed -n 's/^ExecStopPost=+//p' "$scratch/fleet-updated.service" | sed -e 's/\$\$/$/g' \
  -e "s,/bin/systemctl,$scratch/systemctl,")
printf '#!/bin/sh\necho "$*" > %s/systemctl.called\n' "$scratch" > "$scratch/systemctl"; chmod 0755 "$scratch/systemctl"
eval "EXIT_STATUS=1 $post"
[ ! -e "$scratch/systemctl.called" ] && ok "the_updater_unit_does_not_reboot_after_a_plain_failure" \
  || ko "the_updater_unit_does_not_reboot_after_a_plain_failure"
eval "EXIT_STATUS=10 $post"
[ "$(cat "$scratch/systemctl.called" 2>/dev/null)" = "--no-block reboot" ] \
  && ok "the_updater_unit_reboots_as_root_after_exit_10" || ko "the_updater_unit_reboots_as_root_after_exit_10"
grep -qx 'RestartPreventExitStatus=2 10' "$scratch/fleet-updated.service" \
  && ok "the_updater_is_not_restarted_while_the_station_reboots" || ko "the_updater_is_not_restarted_while_the_station_reboots"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
