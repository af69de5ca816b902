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
  [fleet-updated]=1.6 [fleet-recorderd]=0.9 [fleet-retentiond]=0.7 [fleet-boot-check]=1.3 [fleet-reboot]=1.1
  [fleet-uploaderd]=1.6
  [fleet-reporterd]=1.3 [fleet-nvme-smart]=1.4 [fleet-config-restart]=1.0)
declare -A writable=(
  [fleet-updated]="/data/fleet/updated /data/fleet/downloads /data/fleet/base /data/fleet/boot /data/fleet/update /data/fleet/config /data/fleet/retention /run/fleet /boot/firmware"
  [fleet-recorderd]="/data/fleet/recordings"
  [fleet-retentiond]="/data/fleet/recordings /data/fleet/retention"
  [fleet-boot-check]="/data/fleet/boot /run/fleet /boot/firmware"
  [fleet-reboot]="/run/fleet /run/systemd"
  [fleet-config-restart]="/run/fleet"
  [fleet-uploaderd]="/data/fleet/uploader /data/fleet/retention"
  [fleet-reporterd]=""
  [fleet-nvme-smart]="")

if ! command -v systemd-analyze >/dev/null; then
  ko systemd_analyze_is_installed "run tests/setup.d/55-hardening.sh"; echo "$pass passed, $fail failed"; exit 1
fi
echo "systemd-analyze: $(systemd-analyze --version | head -1)"
scratch=$(mktemp -d /tmp/fleet-units.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/bin" "$scratch/libexec/fleet" "$scratch/run"
for b in fleet-updated fleet-recorderd fleet-retentiond fleet-bootctl fleet-uploaderd fleet-reporterd fleet; do
  printf '#!/bin/sh\nexit 0\n' > "$scratch/bin/$b"; chmod 0755 "$scratch/bin/$b"
done
cp "$files/fleet-reboot" "$files/fleet-request-reboot" "$files/fleet-config-restart" "$scratch/libexec/fleet/"
# As fleet-firmware_git.bb installs them; the binaries are stand-ins so verify finds them.
install_unit() { # unit file -> $scratch/<unit file>
  sed -e "s,@BINDIR@,$scratch/bin,g" -e "s,@LIBEXECDIR@,$scratch/libexec,g" -e 's,@DATADIR@,/data,g' \
    -e 's,@WATCHDOG_SEC@,30s,g' "$files/$1" > "$scratch/$1"
}

for unit in fleet-updated fleet-recorderd fleet-retentiond fleet-boot-check fleet-reboot fleet-config-restart fleet-uploaderd fleet-reporterd \
            fleet-nvme-smart; do
  install_unit "$unit.service"
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

for other in fleet-reboot.path fleet-config-restart.path fleet-nvme-smart.timer; do
  install_unit "$other"
  out=$(cd "$scratch" && systemd-analyze verify "./$other" 2>&1)
  t=${other//[-.]/_}
  if [ -z "$out" ]; then ok "${t}_passes_systemd_analyze_verify"; else ko "${t}_passes_systemd_analyze_verify" "$out"; fi
done
# The NVMe one-shot keeps root for one capability only, and its files stay readable by the
# unprivileged reporter.
grep -qx 'CapabilityBoundingSet=CAP_SYS_ADMIN' "$scratch/fleet-nvme-smart.service" \
  && grep -qx 'RuntimeDirectoryMode=0755' "$scratch/fleet-nvme-smart.service" \
  && grep -q '^ExecStart=.*/fleet nvme-smart --write /run/fleet-nvme-smart$' "$scratch/fleet-nvme-smart.service" \
  && grep -q '^DeviceAllow=char-nvme r$' "$scratch/fleet-nvme-smart.service" \
  && ok the_nvme_smart_reader_holds_one_capability_and_writes_where_the_reporter_reads \
  || ko the_nvme_smart_reader_holds_one_capability_and_writes_where_the_reporter_reads
grep -q '^ExecStart=' "$scratch/fleet-updated.service" && ! grep -q '^AmbientCapabilities=' "$scratch/fleet-updated.service" \
  && grep -qx 'CapabilityBoundingSet=' "$scratch/fleet-updated.service" \
  && ok the_updater_runs_without_any_capability || ko the_updater_runs_without_any_capability

# The control: a unit without the sandbox scores far above every ceiling, and a misspelled
# directive makes verify talk, so the checks above can fail.
printf '[Service]\nExecStart=%s/bin/fleet-updated\nProtectSytem=strict\n' "$scratch" > "$scratch/bare.service"
score=$(systemd-analyze security --offline=yes --no-pager "$scratch/bare.service" 2>&1 \
  | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p')
awk -v s="${score:-0}" 'BEGIN { exit !(s > 5) }' && ok "an_unsandboxed_unit_scores_above_5" || ko "an_unsandboxed_unit_scores_above_5" "scored ${score:-nothing}"
out=$(cd "$scratch" && systemd-analyze verify ./bare.service 2>&1)
grep -q "Unknown key" <<<"$out" && ok "verify_reports_a_misspelled_directive" || ko "verify_reports_a_misspelled_directive" "$out"

# Reboots: fleet-updated and fleet-bootctl (reboot-command) leave a request in /run/fleet with
# fleet-request-reboot; fleet-reboot.path starts fleet-reboot (root), which runs systemctl.
export FLEET_RUN_DIR=$scratch/run FLEET_SYSTEMCTL=$scratch/systemctl
printf '#!/bin/sh\nprintf "%%s|" "$@" > %s/systemctl.called\n' "$scratch" > "$scratch/systemctl"; chmod 0755 "$scratch/systemctl"
req=$scratch/run/reboot-request
reboot_with() { rm -f "$scratch/systemctl.called"; sh "$scratch/libexec/fleet/fleet-reboot"; }
called() { cat "$scratch/systemctl.called" 2>/dev/null; }
sh "$scratch/libexec/fleet/fleet-request-reboot" "0 tryboot"; reboot_with
[ "$(called)" = "reboot|0 tryboot|" ] && [ ! -e "$req" ] \
  && ok a_trial_reboot_request_reaches_systemctl_with_the_tryboot_argument \
  || ko a_trial_reboot_request_reaches_systemctl_with_the_tryboot_argument "$(called)"
# As on the station: the updater writes its request as its own user under its unit's UMask=0077
# into /run/fleet (tmpfiles: 0770 root, the updater's group); fleet-reboot is root with only its
# unit's CapabilityBoundingSet (CAP_SYS_BOOT, no CAP_DAC_OVERRIDE), so it reads the request as
# "others" may. (Seen in the Pi 5 guest: "head: cannot open ... Permission denied", and a plain
# reboot instead of "0 tryboot".)
caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$scratch/fleet-reboot.service" | tr 'A-Z ' 'a-z,' | sed 's/cap_/+/g')
umask_updater=$(sed -n 's/^UMask=//p' "$scratch/fleet-updated.service")
chmod 0755 "$scratch" "$scratch/libexec" "$scratch/libexec/fleet"
chown root:nogroup "$scratch/run"; chmod 0770 "$scratch/run"
setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all \
  sh -c "umask $umask_updater; FLEET_RUN_DIR=$scratch/run sh $scratch/libexec/fleet/fleet-request-reboot '0 tryboot'"
rm -f "$scratch/systemctl.called" "$scratch/run/reboot-taken"
out=$(setpriv --bounding-set=-all,$caps --inh-caps=-all sh "$scratch/libexec/fleet/fleet-reboot" 2>&1)
[ -n "$caps" ] && [ "$(called)" = "reboot|0 tryboot|" ] && [ ! -e "$req" ] \
  && ok the_updaters_trial_request_is_read_by_the_reboot_service_without_dac_override \
  || ko the_updaters_trial_request_is_read_by_the_reboot_service_without_dac_override "caps=$caps called=$(called) $out"
chown root:root "$scratch/run"
# fleet-updated exits 10 after its trial request was taken: its ExecStopPost (--keep) must not
# queue a plain reboot that would drop "0 tryboot", and a plain request meanwhile is dropped.
sh "$scratch/libexec/fleet/fleet-request-reboot" --keep; [ ! -e "$req" ] && kept_quiet=1 || kept_quiet=0
sh "$scratch/libexec/fleet/fleet-request-reboot"; reboot_with
[ "$kept_quiet" = 1 ] && [ -z "$(called)" ] && [ ! -e "$req" ] \
  && ok a_trial_reboot_on_its_way_is_not_replaced_by_a_plain_one \
  || ko a_trial_reboot_on_its_way_is_not_replaced_by_a_plain_one "kept_quiet=$kept_quiet called=$(called)"
rm -f "$scratch/run/reboot-taken" # the reboot clears /run
sh "$scratch/libexec/fleet/fleet-request-reboot"; reboot_with
[ "$(called)" = "reboot|" ] && ok a_plain_reboot_request_reaches_systemctl || ko a_plain_reboot_request_reaches_systemctl "$(called)"
reboot_with
[ -z "$(called)" ] && ok no_request_means_no_reboot || ko no_request_means_no_reboot "$(called)"
sh "$scratch/libexec/fleet/fleet-request-reboot" "0 tryboot; rm -rf /" 2>/dev/null
[ $? = 2 ] && [ ! -e "$req" ] && ok an_unknown_reboot_argument_is_not_requested || ko an_unknown_reboot_argument_is_not_requested
printf 'kexec\n' > "$req"; reboot_with 2>/dev/null
[ -z "$(called)" ] && [ ! -e "$req" ] && ok a_forged_request_with_another_argument_is_refused_and_removed \
  || ko a_forged_request_with_another_argument_is_refused_and_removed "$(called)"
echo secret > "$scratch/secret"; ln -s "$scratch/secret" "$req"; out=$(reboot_with 2>&1)
[ -z "$(called)" ] && [ ! -e "$req" ] && ! grep -q secret <<<"$out" && [ -f "$scratch/secret" ] \
  && ok a_symlinked_request_is_refused_without_reading_its_target \
  || ko a_symlinked_request_is_refused_without_reading_its_target "$out"

# Restarts after a configuration push (ADR 0011): fleet-updated leaves the unit's name in
# /run/fleet/config-restart; fleet-config-restart.path starts fleet-config-restart (root), which
# restarts only the daemons a push may configure.
crdir=$scratch/run/config-restart; mkdir -p "$crdir"
restart_with() { rm -f "$scratch/systemctl.called"; FLEET_CONFIG_RESTART_DIR=$crdir sh "$scratch/libexec/fleet/fleet-config-restart" 2>/dev/null; }
echo restart > "$crdir/fleet-recorderd.service"; restart_with
[ "$(called)" = "--no-block|restart|fleet-recorderd.service|" ] && [ -z "$(ls -A "$crdir")" ] \
  && ok a_config_restart_request_restarts_the_named_daemon_and_is_removed \
  || ko a_config_restart_request_restarts_the_named_daemon_and_is_removed "$(called)"
echo restart > "$crdir/sshd.service"; restart_with
[ -z "$(called)" ] && [ -z "$(ls -A "$crdir")" ] \
  && ok a_config_restart_request_for_any_other_unit_is_refused_and_removed \
  || ko a_config_restart_request_for_any_other_unit_is_refused_and_removed "$(called)"
ln -s "$scratch/secret" "$crdir/fleet-retentiond.service"; restart_with
[ -z "$(called)" ] && [ -z "$(ls -A "$crdir")" ] && [ -f "$scratch/secret" ] \
  && ok a_symlinked_config_restart_request_is_refused \
  || ko a_symlinked_config_restart_request_is_refused "$(called)"

# fleet-updated exits 10 once the journal holds a reboot intent: its ExecStopPost requests a
# reboot then, and only then, and keeps a pending trial request.
post=$(sed -n 's/^ExecStopPost=//p' "$scratch/fleet-updated.service" | sed -e 's/\$\$/$/g')
rm -f "$scratch/run/reboot-taken" # a new boot: nothing on its way
eval "EXIT_STATUS=1 $post"
[ ! -e "$req" ] && ok the_updater_unit_does_not_reboot_after_a_plain_failure \
  || ko the_updater_unit_does_not_reboot_after_a_plain_failure
eval "EXIT_STATUS=10 $post"; reboot_with
[ "$(called)" = "reboot|" ] && ok the_updater_unit_reboots_after_exit_10 || ko the_updater_unit_reboots_after_exit_10 "$(called)"
sh "$scratch/libexec/fleet/fleet-request-reboot" "0 tryboot"; eval "EXIT_STATUS=10 $post"; reboot_with
[ "$(called)" = "reboot|0 tryboot|" ] && ok the_updater_unit_keeps_a_pending_trial_reboot \
  || ko the_updater_unit_keeps_a_pending_trial_reboot "$(called)"
grep -qx 'reboot-command = \["@LIBEXECDIR@/fleet/fleet-request-reboot", "0 tryboot"\]' "$files/bootctl-tryboot.toml" \
  && ok the_tryboot_flow_requests_its_trial_reboots || ko the_tryboot_flow_requests_its_trial_reboots
grep -qx 'RestartPreventExitStatus=2 10' "$scratch/fleet-updated.service" \
  && ok "the_updater_is_not_restarted_while_the_station_reboots" || ko "the_updater_is_not_restarted_while_the_station_reboots"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
