#!/usr/bin/env bash
# meta-fleet's RAUC D-Bus policy (recipes-core/rauc/files/de.pengutronix.rauc.conf) on a real
# dbus-daemon with the real `rauc service`: a private system-type bus whose default context
# denies method calls, as the system bus does, plus exactly our policy file (the image removes
# RAUC's own). Calls go through busctl as root, as fleet-updated and as an unrelated user
# (setpriv). A permissive policy in its place must let the unrelated user through: that proves
# the denials come from our file. Needs root, the user fleet-updated (tests/setup.d/55-hardening.sh),
# rauc, dbus-daemon, busctl, setpriv. Prints "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
policy=$here/../../meta-fleet/recipes-core/rauc/files/de.pengutronix.rauc.conf
pass=0; fail=0
ok() { echo "PASS: $1"; pass=$((pass + 1)); }
ko() { echo "FAIL: $1${2:+ ($2)}"; fail=$((fail + 1)); }

for tool in rauc dbus-daemon busctl setpriv; do
  command -v "$tool" >/dev/null || { ko "tools_are_installed" "$tool missing: run tests/setup.d/00-apt.sh"; echo "$pass passed, $fail failed"; exit 1; }
done
updater_uid=$(id -u fleet-updated 2>/dev/null) || {
  ko "the_user_fleet_updated_exists" "run tests/setup.d/55-hardening.sh"; echo "$pass passed, $fail failed"; exit 1; }
other_uid=$(id -u nobody)

scratch=$(mktemp -d /tmp/fleet-dbus-policy.XXXXXX)
chmod 0755 "$scratch"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$scratch"
}
trap cleanup EXIT

# RAUC with two file-backed slots and a custom backend that answers like a committed slot A.
truncate -s 1M "$scratch/slot-a.img" "$scratch/slot-b.img"
mkdir -p "$scratch/mnt" "$scratch/data"
cat > "$scratch/backend" <<'SH'
#!/bin/sh
case "$1" in
  get-primary|get-current) echo A ;;
  get-state) echo good ;;
  set-state|set-primary) exit 0 ;;
  *) exit 1 ;;
esac
SH
chmod 0755 "$scratch/backend"
openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=fleet-dbus-policy-test -days 1 \
  -keyout "$scratch/ca.key.pem" -out "$scratch/ca.cert.pem" >/dev/null 2>&1
cat > "$scratch/system.conf" <<CONF
[system]
compatible=fleet-dbus-policy-test
bootloader=custom
mountprefix=$scratch/mnt
data-directory=$scratch/data

[keyring]
path=$scratch/ca.cert.pem

[handlers]
bootloader-custom-backend=$scratch/backend

[slot.rootfs.0]
device=$scratch/slot-a.img
type=ext4
bootname=A

[slot.rootfs.1]
device=$scratch/slot-b.img
type=ext4
bootname=B
CONF

# bus <name> <policy file>: a system-type bus whose default context is the one of dbus's
# system.conf (method calls and name ownership denied, replies and signals allowed), with only
# <policy file> added. Sets $addr and starts rauc on it.
bus() {
  local dir=$scratch/$1
  mkdir -p "$dir"; chmod 0755 "$dir"
  cat > "$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/bus.sock</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Peer"/>
  </policy>
  <include>$2</include>
</busconfig>
CONF
  dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile >"$dir/dbus.log" 2>&1 &
  pids+=($!)
  addr=unix:path=$dir/bus.sock
  for _ in $(seq 100); do [ -S "$dir/bus.sock" ] && break; sleep 0.05; done
  chmod 0666 "$dir/bus.sock"
  DBUS_SYSTEM_BUS_ADDRESS=$addr rauc --conf="$scratch/system.conf" service --override-boot-slot=A \
    >"$dir/rauc.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do
    busctl --address="$addr" call de.pengutronix.rauc / de.pengutronix.rauc.Installer GetPrimary \
      >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "rauc did not come up on $addr:"; cat "$dir/dbus.log" "$dir/rauc.log"
  return 1
}

# call <uid> <busctl call arguments...>: prints busctl's output, its status in $status.
call() {
  local uid=$1; shift
  if [ "$uid" = 0 ]; then
    out=$(timeout 10 busctl --address="$addr" "$@" 2>&1); status=$?
  else
    out=$(timeout 10 setpriv --reuid="$uid" --regid="$uid" --clear-groups busctl --address="$addr" "$@" 2>&1); status=$?
  fi
}
denied() { [ "$status" != 0 ] && grep -qi "access denied\|AccessDenied" <<<"$out"; }
allowed() { [ "$status" = 0 ] && ! grep -qi "access denied\|AccessDenied" <<<"$out"; }
expect_allowed() { local name=$1; shift; call "$@"; if allowed; then ok "$name"; else ko "$name" "$out"; fi; }
expect_denied() { local name=$1; shift; call "$@"; if denied; then ok "$name"; else ko "$name" "status $status: $out"; fi; }
idle() { # waits until RAUC's operation is idle again (an install of a missing bundle fails fast)
  for _ in $(seq 100); do
    call 0 get-property de.pengutronix.rauc / de.pengutronix.rauc.Installer Operation
    [ "$out" = 's "idle"' ] && return 0; sleep 0.05
  done
  return 1
}

I=de.pengutronix.rauc.Installer
P=org.freedesktop.DBus.Properties
bundle=$scratch/no-such-bundle.raucb
if bus fleet "$policy"; then
  expect_allowed root_may_mark_a_slot 0 call de.pengutronix.rauc / $I Mark ss good booted
  expect_allowed the_updater_may_mark_a_slot "$updater_uid" call de.pengutronix.rauc / $I Mark ss good booted
  expect_denied an_unrelated_user_may_not_mark_a_slot "$other_uid" call de.pengutronix.rauc / $I Mark ss good booted
  expect_allowed root_may_start_an_install 0 call de.pengutronix.rauc / $I InstallBundle 'sa{sv}' "$bundle" 0
  idle || ko "rauc_returns_to_idle_after_a_missing_bundle" "$out"
  expect_allowed the_updater_may_start_an_install "$updater_uid" call de.pengutronix.rauc / $I InstallBundle 'sa{sv}' "$bundle" 0
  idle || ko "rauc_returns_to_idle_after_a_missing_bundle" "$out"
  expect_denied an_unrelated_user_may_not_start_an_install "$other_uid" call de.pengutronix.rauc / $I InstallBundle 'sa{sv}' "$bundle" 0
  expect_denied an_unrelated_user_may_not_use_the_deprecated_install "$other_uid" call de.pengutronix.rauc / $I Install s "$bundle"
  expect_denied the_updater_may_not_use_the_deprecated_install "$updater_uid" call de.pengutronix.rauc / $I Install s "$bundle"
  expect_allowed the_updater_may_read_the_slot_status "$updater_uid" call de.pengutronix.rauc / $I GetPrimary
  expect_allowed the_updater_may_read_a_property "$updater_uid" get-property de.pengutronix.rauc / $I Operation
  expect_allowed the_updater_may_read_all_properties "$updater_uid" call de.pengutronix.rauc / $P GetAll s $I
  expect_denied the_updater_may_not_set_a_property "$updater_uid" call de.pengutronix.rauc / $P Set ssv $I Compatible s evil
  expect_allowed the_updater_may_introspect "$updater_uid" call de.pengutronix.rauc / org.freedesktop.DBus.Introspectable Introspect
  expect_denied an_unrelated_user_may_not_read_properties "$other_uid" get-property de.pengutronix.rauc / $I Operation
  expect_denied an_unrelated_user_may_not_read_the_primary_slot "$other_uid" call de.pengutronix.rauc / $I GetPrimary
  expect_denied the_updater_may_not_take_raucs_name "$updater_uid" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su de.pengutronix.rauc 0
  expect_denied an_unrelated_user_may_not_take_raucs_name "$other_uid" call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus RequestName su de.pengutronix.rauc 0
else
  ko rauc_starts_on_a_bus_with_the_fleet_policy
fi

# The control: RAUC's stock shape (any local user may call the Installer) lets the unrelated
# user through on the same bus, so the denials above are our policy's doing.
cat > "$scratch/permissive.conf" <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root"><allow own="de.pengutronix.rauc"/></policy>
  <policy context="default"><allow send_destination="de.pengutronix.rauc"/></policy>
</busconfig>
CONF
for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
pids=()
if bus permissive "$scratch/permissive.conf"; then
  expect_allowed a_permissive_policy_lets_an_unrelated_user_mark_a_slot "$other_uid" call de.pengutronix.rauc / $I Mark ss good booted
else
  ko rauc_starts_on_a_bus_with_a_permissive_policy
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
