#!/usr/bin/env bash
# The fleet units running under a real systemd (252, Debian 12) in a systemd-nspawn container
# whose root is this machine's, under a throw-away overlay: the units, tmpfiles entries,
# configuration, provisioning, RAUC D-Bus policy and reboot hand-off exactly as meta-fleet
# installs them (WatchdogSec=3s so the watchdog is proved within seconds), with the real
# fleet-updated, fleet-retentiond, fleet-bootctl and `rauc service` (file-backed slots, fleet-bootctl
# as its backend) on the container's own system bus.
#   - fleet-provision.service moves the station's provisioning folder (device id, updated.toml,
#     an S3 uploader's uploaderd.toml and credentials) from /boot/firmware to /data/fleet/identity
#     after fleet-updated and fleet-uploaderd checked it, the credentials 0400 fleet-uploader;
#   - fleet-recorderd.service with the image's recorderd.toml and no station settings (no
#     microphone provisioned) starts, says what it waits for in its status and is not restarted;
#     so do fleet-updated with only the image's updated.toml and fleet-reporterd with no
#     provisioned identity (transient units);
#   - fleet-boot-check.service runs fleet-bootctl boot-check (U-Boot flow) inside its sandbox;
#   - fleet-retentiond.service and fleet-updated.service come up (Type=notify) and survive three
#     watchdog periods; fleet-updated reads RAUC over D-Bus through the narrowed policy (no
#     broker is reachable: it keeps retrying MQTT, which is fine here);
#   - fleet-updated's probe of systemd's system state (`--system-state`, what its health gate
#     reads), in its unit's sandbox, reads `starting` during the boot and `stopping` as the
#     container reboots;
#   - a process running as fleet-updated (with its unit's UMask=0077) requests a trial reboot
#     ("0 tryboot"); fleet-reboot.path
#     starts fleet-reboot.service (root), the container reboots (systemd-nspawn exits 133) and
#     systemd holds "0 tryboot" as its reboot argument.
# Not here: recording itself (no sound device in the container). Needs root, systemd-nspawn
# (tests/setup.d/55-hardening.sh), overlayfs, rauc, openssl. Prints "N passed, N failed".
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
files=$repo/meta-fleet/recipes-fleet/fleet-firmware/files
pass=0; fail=0
ok() { echo "PASS: $1"; pass=$((pass + 1)); }
ko() { echo "FAIL: $1${2:+ ($2)}"; fail=$((fail + 1)); }
finish() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; exit; }

command -v systemd-nspawn >/dev/null || { ko systemd_nspawn_is_installed "run tests/setup.d/55-hardening.sh"; finish; }
bins=${FLEET_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}
if [ ! -x "$bins/fleet-retentiond" ] || [ ! -x "$bins/fleet-bootctl" ] || [ ! -x "$bins/fleet-updated" ] \
   || [ ! -x "$bins/fleet-recorderd" ] || [ ! -x "$bins/fleet-uploaderd" ] || [ ! -x "$bins/fleet-reporterd" ]; then
  (cd "$repo" && cargo build -q -p fleet-retentiond -p fleet-bootctl -p fleet-updated -p fleet-recorderd \
     -p fleet-uploaderd -p fleet-reporterd) \
    || { ko the_daemons_build; finish; }
fi

scratch=$(mktemp -d /tmp/fleet-nspawn.XXXXXX)
root=$scratch/root
cleanup() {
  umount "$root" 2>/dev/null; umount "$scratch/upper" 2>/dev/null
  rm -rf "$scratch"
}
trap cleanup EXIT
mkdir -p "$scratch/upper" "$root" "$scratch/out"
mount -t tmpfs tmpfs "$scratch/upper" && mkdir -p "$scratch/upper/u" "$scratch/upper/w" &&
  mount -t overlay overlay -o "lowerdir=/,upperdir=$scratch/upper/u,workdir=$scratch/upper/w" "$root" ||
  { ko an_overlay_of_this_machine_mounts; finish; }

# The station's side of the image, into the overlay (this machine's files stay untouched).
rm -f "$root/etc/machine-id"
for g in fleet-data fleet-mqtt audio; do groupadd --root "$root" -f --system "$g"; done
for u in fleet-updated fleet-retentiond fleet-recorderd fleet-uploader fleet-reporterd; do
  if grep -q "^$u:" "$root/etc/passwd"; then
    usermod --root "$root" -a -G fleet-data "$u"
  else
    useradd --root "$root" --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --user-group --groups fleet-data "$u"
  fi
done
# The two daemons that connect as the station (the recipe's USERADD_PARAM).
for u in fleet-updated fleet-reporterd; do usermod --root "$root" -a -G fleet-mqtt "$u"; done
install -m 0755 "$bins/fleet-retentiond" "$bins/fleet-bootctl" "$bins/fleet-updated" "$bins/fleet-recorderd" \
  "$bins/fleet-uploaderd" "$bins/fleet-reporterd" "$root/usr/bin/"
install -d "$root/usr/libexec/fleet" "$root/etc/fleet" "$root/boot/firmware" "$root/data"
install -m 0755 "$files/fleet-reboot" "$files/fleet-request-reboot" "$root/usr/libexec/fleet/"
subst() { sed -e 's,@BINDIR@,/usr/bin,g' -e 's,@LIBEXECDIR@,/usr/libexec,g' -e 's,@DATADIR@,/data,g' \
  -e 's,@WATCHDOG_SEC@,3s,g' -e 's,@ATTEMPTS@,3,g' -e 's,@COMPATIBLE@,fleet-units-proof,g' \
  -e 's,@BOOT_FLOW@,uboot,g' "$1"; }
for unit in fleet-updated.service fleet-retentiond.service fleet-recorderd.service fleet-boot-check.service \
            fleet-reboot.service fleet-reboot.path; do
  subst "$files/$unit" > "$root/etc/systemd/system/$unit"
done
subst "$files/reporterd.toml" > "$root/etc/fleet/reporterd.toml"
rootfs=$repo/meta-fleet/recipes-core/fleet-rootfs/files
subst "$rootfs/fleet-provision.service" > "$root/etc/systemd/system/fleet-provision.service"
install -m 0755 "$rootfs/fleet-provision" "$root/usr/libexec/fleet-provision"
install -D -m 0644 "$repo/meta-fleet/recipes-core/rauc/files/de.pengutronix.rauc.conf" \
  "$root/usr/share/dbus-1/system.d/fleet-rauc.conf"
echo "1.0.0" > "$root/etc/fleet-version"
# RAUC as meta-rauc runs it (a D-Bus service), with two file-backed slots and fleet-bootctl as
# its bootloader backend.
install -d "$root/var/lib/fleet-proof"
truncate -s 1M "$root/var/lib/fleet-proof/slot-a.img" "$root/var/lib/fleet-proof/slot-b.img"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=fleet-units-proof -days 1 \
  -keyout "$scratch/ca.key.pem" -out "$root/var/lib/fleet-proof/ca.cert.pem" >/dev/null 2>&1
cat > "$root/etc/fleet/rauc-system.conf" <<'CONF'
[system]
compatible=fleet-units-proof
bootloader=custom
data-directory=/data/rauc
mountprefix=/run/rauc/mnt

[keyring]
path=/var/lib/fleet-proof/ca.cert.pem

[handlers]
bootloader-custom-backend=/usr/bin/fleet-bootctl

[slot.rootfs.0]
device=/var/lib/fleet-proof/slot-a.img
type=ext4
bootname=A

[slot.rootfs.1]
device=/var/lib/fleet-proof/slot-b.img
type=ext4
bootname=B
CONF
cat > "$root/etc/systemd/system/rauc.service" <<'UNIT'
[Unit]
Description=RAUC update service (as meta-rauc installs it, configuration of this test)
After=fleet-boot-check.service
[Service]
Type=dbus
BusName=de.pengutronix.rauc
ExecStart=/usr/bin/rauc --conf=/etc/fleet/rauc-system.conf service --override-boot-slot=A
UNIT
# The station's provisioning folder on the boot partition, as `fleetctl provision` writes it: its
# id and fleet-updated's station settings (a plain broker on loopback, none listening).
install -d "$root/boot/firmware/fleet-provision"
echo stn-proof > "$root/boot/firmware/fleet-provision/device-id"
cat > "$root/boot/firmware/fleet-provision/updated.toml" <<'CONF'
device-id = "stn-proof"
groups = []
trusted-keys = ["5866666666666666666666666666666666666666666666666666666666666666"]

[mqtt]
host = "127.0.0.1"
port = 1883

[rauc]
dbus-address = "unix:path=/run/dbus/system_bus_socket"
manifest-hash = "where-supported"
CONF
# An S3 uploader's settings and credentials, as `fleetctl provision --uploader-s3-credentials`
# writes them (fleetctl's tests/provision.rs checks that side).
install -d "$root/boot/firmware/fleet-provision/uploader"
cat > "$root/boot/firmware/fleet-provision/uploaderd.toml" <<'CONF'
credentials-file = "/data/fleet/identity/uploader/credentials.toml"

[destination]
kind = "s3"
endpoint = "https://s3.example.org"
bucket = "field-recordings"
CONF
printf 'access-key-id = "AKIAPROOF"\nsecret-access-key = "proof"\n' \
  > "$root/boot/firmware/fleet-provision/uploader/credentials.toml"
# The station's TLS client key (this proof's broker is plain: only its owner and mode matter here).
install -d "$root/boot/firmware/fleet-provision/mqtt"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
  -out "$root/boot/firmware/fleet-provision/mqtt/client.key" 2>/dev/null
# The image defaults meta-fleet ships (ADR 0008).
for c in updated.toml recorderd.toml uploaderd.toml; do subst "$files/$c" > "$root/etc/fleet/$c"; done
subst "$files/fleet-firmware.tmpfiles" > "$root/usr/lib/tmpfiles.d/fleet-firmware.conf"
subst "$files/retentiond.toml" > "$root/etc/fleet/retentiond.toml"
# The U-Boot flow; the booted slot comes from this file instead of the host's /proc/cmdline.
{ subst "$files/bootctl-uboot.toml"; echo 'cmdline = "/etc/fleet/cmdline"'; } > "$root/etc/fleet/bootctl.toml"
echo "console=ttyAMA0 root=/dev/vda2 rauc.slot=A" > "$root/etc/fleet/cmdline"
# /boot/firmware as fleet-mount-generator mounts the FAT partition: root's, group fleet-updated.
gid=$(sed -n 's/^fleet-updated:[^:]*:\([0-9]*\):.*/\1/p' "$root/etc/group")
chown "0:$gid" "$root/boot/firmware"; chmod 0770 "$root/boot/firmware"

cat > "$root/etc/systemd/system/fleet-proof.target" <<'UNIT'
[Unit]
Description=fleet units under systemd
Requires=basic.target fleet-proof.service
Wants=fleet-boot-check.service fleet-retentiond.service fleet-reboot.path fleet-provision.service
Wants=fleet-recorderd.service
Wants=rauc.service fleet-updated.service fleet-proof-shutdown.service
After=basic.target fleet-proof.service
UNIT
cat > "$root/etc/systemd/system/fleet-proof.service" <<'UNIT'
[Unit]
After=fleet-boot-check.service fleet-retentiond.service fleet-reboot.path fleet-updated.service
After=fleet-recorderd.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fleet-proof
UNIT
# fleet-updated's sandbox (every [Service] setting but how it starts and restarts), for a
# busctl call made from inside exactly that sandbox: fleet-updated itself connects to RAUC only
# when it installs.
sed -n '/^\[Service\]/,/^\[/p' "$root/etc/systemd/system/fleet-updated.service" \
  | grep -E '^[A-Z][A-Za-z]*=' \
  | grep -vE '^(Type|NotifyAccess|ExecStart|ExecStopPost|WatchdogSec|Restart|RestartSec|RestartPreventExitStatus|TimeoutStopSec)=' \
  | sed 's/^/-p\n/' > "$root/etc/fleet/updated-sandbox.args"
# Inside the container, as root: record what happened, then request a reboot as fleet-updated.
cat > "$root/usr/local/sbin/fleet-proof" <<'SH'
#!/bin/sh
if [ -e /out/booted ]; then echo second > /out/second-boot; exec systemctl --no-block poweroff; fi
touch /out/booted
sleep 10
for u in fleet-provision.service fleet-boot-check.service fleet-retentiond.service \
         fleet-updated.service rauc.service fleet-reboot.path fleet-recorderd.service; do
  systemctl show -p Id,ActiveState,SubState,Result,NRestarts "$u" | tr '\n' ' '; echo
done > /out/units
systemctl show -p StatusText --value fleet-recorderd.service > /out/recorder-status
# An updater on a station that was never provisioned: the image defaults only, under the same
# watchdog. It must come up, say what it waits for and keep running.
systemd-run --unit=fleet-updated-unprovisioned -p Type=notify -p NotifyAccess=main -p WatchdogSec=3s \
  -p User=fleet-updated /usr/bin/fleet-updated --config /etc/fleet/updated.toml \
  --station-config /data/fleet/nothing-here/updated.toml > /out/unprovisioned-start 2>&1
# The reporter on the same station: its configuration names a station file that is not there.
sed 's#/fleet/identity/updated.toml#/fleet/nothing-here/updated.toml#' /etc/fleet/reporterd.toml \
  > /run/reporterd-unprovisioned.toml
chmod 0644 /run/reporterd-unprovisioned.toml
systemd-run --unit=fleet-reporterd-unprovisioned -p Type=notify -p NotifyAccess=main -p WatchdogSec=3s \
  -p User=fleet-reporterd /usr/bin/fleet-reporterd --config /run/reporterd-unprovisioned.toml \
  > /out/reporter-unprovisioned-start 2>&1
sleep 8
systemctl show -p ActiveState,SubState,NRestarts,StatusText fleet-updated-unprovisioned.service \
  > /out/unprovisioned 2>&1
systemctl show -p ActiveState,SubState,NRestarts,StatusText fleet-reporterd-unprovisioned.service \
  > /out/reporter-unprovisioned 2>&1
stat -c '%n %a %U:%G' /run/fleet /run/fleet/bootctl.lock /data/fleet/retention \
  /boot/firmware/uboot.env /data/fleet/identity/updated.toml /data/fleet/identity/device-id \
  /data/fleet/identity/uploaderd.toml /data/fleet/identity/uploader /data/fleet/identity/mqtt/client.key \
  /data/fleet/identity/uploader/credentials.toml > /out/stat 2>&1
setpriv --reuid=fleet-uploader --regid=fleet-uploader --init-groups \
  fleet-uploaderd --config /etc/fleet/uploaderd.toml --station-config /data/fleet/identity/uploaderd.toml \
  --check-config > /out/uploader-check 2>&1
echo "rc=$?" >> /out/uploader-check
# fleet-reporterd connects as the station too (group fleet-mqtt): it reads updated.toml and the
# client key; the recorder cannot read the key.
setpriv --reuid=fleet-reporterd --regid=fleet-reporterd --init-groups \
  sh -c 'fleet-reporterd --config /etc/fleet/reporterd.toml --check-config && cat /data/fleet/identity/mqtt/client.key > /dev/null' \
  > /out/reporter-identity 2>&1
echo "rc=$?" >> /out/reporter-identity
setpriv --reuid=fleet-recorderd --regid=fleet-recorderd --init-groups \
  cat /data/fleet/identity/mqtt/client.key > /out/recorder-key 2>&1
echo "rc=$?" >> /out/recorder-key
# fleet-updated's applier of configuration pushes runs the same checker on the station file.
setpriv --reuid=fleet-updated --regid=fleet-updated --init-groups \
  fleet-uploaderd --config /etc/fleet/uploaderd.toml --station-config /data/fleet/identity/uploaderd.toml \
  --check-config > /out/uploader-check-applier 2>&1
echo "rc=$?" >> /out/uploader-check-applier
setpriv --reuid=fleet-retentiond --regid=fleet-retentiond --init-groups \
  cat /data/fleet/identity/uploader/credentials.toml > /out/uploader-other 2>&1
echo "rc=$?" >> /out/uploader-other
ls /data/fleet/retention > /out/retention 2>&1
ls /boot/firmware > /out/boot-firmware 2>&1
IFS='
'
set -- $(cat /etc/fleet/updated-sandbox.args)
unset IFS
systemd-run --wait --pipe --quiet "$@" \
  busctl call de.pengutronix.rauc / de.pengutronix.rauc.Installer GetPrimary > /out/sandboxed-call 2>&1
echo "rc=$?" >> /out/sandboxed-call
# The narrowed policy on this system's own bus (Debian's system.conf plus fleet-rauc.conf).
setpriv --reuid=fleet-updated --regid=fleet-updated --clear-groups \
  busctl call de.pengutronix.rauc / de.pengutronix.rauc.Installer Mark ss good booted > /out/updater-mark 2>&1
echo "rc=$?" >> /out/updater-mark
setpriv --reuid=nobody --regid=nogroup --clear-groups \
  busctl call de.pengutronix.rauc / de.pengutronix.rauc.Installer Mark ss good booted > /out/other-mark 2>&1
echo "rc=$?" >> /out/other-mark
# fleet-updated's probe of the service manager's state (its health gate commits a trial only on
# a system that is up, never on one that is stopping), in its unit's sandbox: now, while this
# one-shot holds the boot (starting), and as the container reboots (its ExecStop: stopping).
probe="/usr/bin/fleet-updated --config /etc/fleet/updated.toml --station-config /data/fleet/identity/updated.toml --system-state"
systemd-run --unit=fleet-updated-state-probe "$@" -p StandardOutput=append:/out/system-state \
  -p StandardError=append:/out/system-state-errors -p "ExecStop=$probe" \
  /bin/sh -c "$probe; exec sleep infinity" > /out/state-probe-start 2>&1
sleep 2
journalctl -b --no-pager -u fleet-provision -u fleet-boot-check -u fleet-retentiond -u fleet-updated \
  -u rauc -u fleet-reboot -u fleet-recorderd > /out/journal 2>&1
systemctl start fleet-proof-request.service
sleep 20
echo "no reboot" > /out/no-reboot
SH
chmod 0755 "$root/usr/local/sbin/fleet-proof"
# Records, while the container shuts down, the argument the reboot was asked with.
cat > "$root/etc/systemd/system/fleet-proof-shutdown.service" <<'UNIT'
[Unit]
RequiresMountsFor=/out
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'cat /run/systemd/reboot-param > /out/reboot-param 2>&1 || echo none > /out/reboot-param'
UNIT
cat > "$root/etc/systemd/system/fleet-proof-request.service" <<'UNIT'
[Service]
Type=oneshot
User=fleet-updated
Group=fleet-updated
UMask=0077
ExecStart=/usr/libexec/fleet/fleet-request-reboot "0 tryboot"
UNIT

timeout -k 30 120 systemd-nspawn -q -D "$root" --private-network --register=no --keep-unit --link-journal=no \
  --tmpfs=/data:mode=0755 --bind="$scratch/out:/out" -b systemd.unit=fleet-proof.target systemd.mask=systemd-networkd-wait-online.service \
  > "$scratch/boot.log" 2>&1
status=$?
[ "${FLEET_NSPAWN_DEBUG:-0}" = 1 ] && cat "$scratch/out/"* "$scratch/boot.log"

units=$(cat "$scratch/out/units" 2>/dev/null)
has() { grep "Id=$1 " <<<"$units" | tr ' ' '\n' | grep -qx "$2"; }
has fleet-boot-check.service ActiveState=active && has fleet-boot-check.service Result=success \
  && ok the_boot_check_runs_in_its_sandbox || ko the_boot_check_runs_in_its_sandbox "$(grep boot-check <<<"$units")"
grep -q "^/boot/firmware/uboot.env " "$scratch/out/stat" 2>/dev/null \
  && ok the_boot_check_writes_the_uboot_env_on_the_boot_partition \
  || ko the_boot_check_writes_the_uboot_env_on_the_boot_partition "$(cat "$scratch/out/stat" 2>/dev/null)"
has fleet-retentiond.service ActiveState=active && has fleet-retentiond.service SubState=running \
  && has fleet-retentiond.service NRestarts=0 \
  && ok retentiond_runs_in_its_sandbox_through_three_watchdog_periods \
  || ko retentiond_runs_in_its_sandbox_through_three_watchdog_periods "$(grep retentiond <<<"$units")"
grep -q "index" "$scratch/out/retention" 2>/dev/null \
  && ok retentiond_keeps_its_index_in_its_writable_state_dir \
  || ko retentiond_keeps_its_index_in_its_writable_state_dir "$(cat "$scratch/out/retention" 2>/dev/null)"
grep -q "^/run/fleet/bootctl.lock 660 root:fleet-updated" "$scratch/out/stat" 2>/dev/null \
  && grep -q "^/run/fleet 770 root:fleet-updated" "$scratch/out/stat" \
  && ok tmpfiles_gives_the_updater_the_bootctl_lock \
  || ko tmpfiles_gives_the_updater_the_bootctl_lock "$(cat "$scratch/out/stat" 2>/dev/null)"
grep -q "Installed: Provision\|^" /dev/null
grep -q "^/data/fleet/identity/updated.toml 640 root:fleet-mqtt" "$scratch/out/stat" 2>/dev/null \
  && grep -q "^/data/fleet/identity/device-id 640 root:fleet-data" "$scratch/out/stat" \
  && ! grep -q fleet-provision "$scratch/out/boot-firmware" \
  && ok provisioning_moves_the_identity_from_the_boot_partition_to_data \
  || ko provisioning_moves_the_identity_from_the_boot_partition_to_data "$(cat "$scratch/out/stat" "$scratch/out/boot-firmware" 2>/dev/null)"
grep -q "^rc=0" "$scratch/out/reporter-identity" 2>/dev/null && grep -q "^rc=1" "$scratch/out/recorder-key" \
  && grep -q "^/data/fleet/identity/mqtt/client.key 440 root:fleet-mqtt" "$scratch/out/stat" \
  && ok the_reporter_reads_the_stations_mqtt_identity_and_the_recorder_does_not \
  || ko the_reporter_reads_the_stations_mqtt_identity_and_the_recorder_does_not \
       "$(cat "$scratch/out/reporter-identity" "$scratch/out/recorder-key" "$scratch/out/stat" 2>/dev/null)"
grep -q "^/data/fleet/identity/uploaderd.toml 640 root:fleet-data" "$scratch/out/stat" 2>/dev/null \
  && grep -q "^/data/fleet/identity/uploader 750 root:fleet-uploader" "$scratch/out/stat" \
  && grep -q "^/data/fleet/identity/uploader/credentials.toml 400 fleet-uploader:fleet-uploader" "$scratch/out/stat" \
  && grep -q "^rc=0" "$scratch/out/uploader-check" && grep -q "^rc=1" "$scratch/out/uploader-other" \
  && grep -q "^rc=0" "$scratch/out/uploader-check-applier" \
  && ok provisioning_gives_the_uploader_its_credentials_readable_by_its_user_only \
  || ko provisioning_gives_the_uploader_its_credentials_readable_by_its_user_only \
       "$(cat "$scratch/out/stat" "$scratch/out/uploader-check" "$scratch/out/uploader-other" "$scratch/out/uploader-check-applier" 2>/dev/null)"
has fleet-recorderd.service ActiveState=active && has fleet-recorderd.service NRestarts=0 \
  && grep -q "waiting for station settings" "$scratch/out/recorder-status" 2>/dev/null \
  && ok an_unprovisioned_recorder_waits_with_its_status_instead_of_crash_looping \
  || ko an_unprovisioned_recorder_waits_with_its_status_instead_of_crash_looping \
       "$(grep recorderd <<<"$units"; cat "$scratch/out/recorder-status" 2>/dev/null)"
grep -qx "ActiveState=active" "$scratch/out/unprovisioned" 2>/dev/null \
  && grep -q "^StatusText=waiting for station settings: device-id or device-id-file is not set" "$scratch/out/unprovisioned" \
  && ok an_unprovisioned_updater_waits_through_its_watchdog_and_says_what_is_missing \
  || ko an_unprovisioned_updater_waits_through_its_watchdog_and_says_what_is_missing \
       "$(cat "$scratch/out/unprovisioned-start" "$scratch/out/unprovisioned" 2>/dev/null)"
grep -qx "ActiveState=active" "$scratch/out/reporter-unprovisioned" 2>/dev/null \
  && grep -q "^StatusText=waiting for station settings: device-id or device-id-file is not set; mqtt.host is not set" "$scratch/out/reporter-unprovisioned" \
  && ok an_unprovisioned_reporter_waits_through_its_watchdog_and_says_what_is_missing \
  || ko an_unprovisioned_reporter_waits_through_its_watchdog_and_says_what_is_missing \
       "$(cat "$scratch/out/reporter-unprovisioned-start" "$scratch/out/reporter-unprovisioned" 2>/dev/null)"
has fleet-updated.service ActiveState=active && has fleet-updated.service SubState=running \
  && has fleet-updated.service NRestarts=0 \
  && ok the_updater_runs_in_its_sandbox_through_three_watchdog_periods \
  || ko the_updater_runs_in_its_sandbox_through_three_watchdog_periods "$(grep fleet-updated <<<"$units")"
grep -q '^s "rootfs.0"' "$scratch/out/sandboxed-call" 2>/dev/null && grep -q "^rc=0" "$scratch/out/sandboxed-call" \
  && ok the_updaters_sandbox_reaches_rauc_over_the_system_bus \
  || ko the_updaters_sandbox_reaches_rauc_over_the_system_bus "$(cat "$scratch/out/sandboxed-call" 2>/dev/null)"
grep -q "^rc=0" "$scratch/out/updater-mark" 2>/dev/null \
  && ok the_updater_may_mark_a_slot_on_the_real_system_bus \
  || ko the_updater_may_mark_a_slot_on_the_real_system_bus "$(cat "$scratch/out/updater-mark" 2>/dev/null)"
grep -qi "access denied" "$scratch/out/other-mark" 2>/dev/null && ! grep -q "^rc=0" "$scratch/out/other-mark" \
  && ok an_unrelated_user_may_not_mark_a_slot_on_the_real_system_bus \
  || ko an_unrelated_user_may_not_mark_a_slot_on_the_real_system_bus "$(cat "$scratch/out/other-mark" 2>/dev/null)"
if [ "$status" = 133 ] && [ ! -e "$scratch/out/no-reboot" ]; then
  ok an_unprivileged_reboot_request_reboots_through_fleet_reboot_service
  [ "$(cat "$scratch/out/reboot-param" 2>/dev/null)" = "0 tryboot" ] \
    && ok the_trial_reboot_carries_the_tryboot_argument_to_systemd \
    || ko the_trial_reboot_carries_the_tryboot_argument_to_systemd "$(cat "$scratch/out/reboot-param" 2>/dev/null)"
else
  ko an_unprivileged_reboot_request_reboots_through_fleet_reboot_service "nspawn exit $status"
fi
# The state probe: one line at its start, one at its stop.
states=$(tr '\n' ' ' < "$scratch/out/system-state" 2>/dev/null)
[ "$states" = "starting stopping " ] \
  && ok the_updaters_state_probe_reads_starting_then_stopping_from_systemd_in_its_sandbox \
  || ko the_updaters_state_probe_reads_starting_then_stopping_from_systemd_in_its_sandbox \
       "read: $states; $(cat "$scratch/out/state-probe-start" "$scratch/out/system-state-errors" 2>/dev/null)"
if [ "$fail" != 0 ]; then
  echo "--- units"; cat "$scratch/out/units" 2>/dev/null
  echo "--- journal"; tail -40 "$scratch/out/journal" 2>/dev/null
  echo "--- boot"; tail -20 "$scratch/boot.log"
fi
finish
