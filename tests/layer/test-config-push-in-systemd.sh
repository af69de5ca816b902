#!/usr/bin/env bash
# A signed configuration push on the station as shipped (ADR 0011): a systemd-nspawn container
# whose root is this machine's under a throw-away overlay, with the layer's own units, tmpfiles
# entries, image configs, provisioning and root helper (fleet-config-restart.path/.service), a
# mosquitto on the container's loopback, and a recording fleet-recorderd: its microphone is an
# ALSA file PCM (/etc/asound.conf) reading a FIFO that a pacer unit fills with 8 kHz noise in real
# time (docs: /work/shared/notes/alsa-without-hardware.md; a FIFO paces the unpaced plugin).
# fleet-updated takes the pushes with the image's [config-push] and runs the real
# `fleet-recorderd --check-config` as its checker. The operator side is `fleetctl config push`.
#   - a push of position.lat is accepted: the pushed layer is written, the recorder restarted by
#     the root helper, healthy within the deadline, `config-accepted` reported, and the running
#     recorder's new segments carry the pushed position in their GUANO;
#   - a push the recorder's own checker refuses (lat 95) is `config-refused` / `rejected-by-daemon`
#     and changes nothing;
#   - a push after which the recorder is not healthy (its microphone feed stops with it: no
#     pushable recorder key breaks the recorder by itself, its checker catches those) is restored
#     within its deadline and reported as `config-restored`, the previous layer back;
#   - the replay of the accepted push is `config-refused` / `replayed`.
# Needs root, systemd-nspawn, overlayfs, mosquitto and mosquitto_sub. Prints "N passed, N failed".
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
files=$repo/meta-fleet/recipes-fleet/fleet-firmware/files
pass=0; fail=0
ok() { echo "PASS: $1"; pass=$((pass + 1)); }
ko() { echo "FAIL: $1${2:+ ($2)}"; fail=$((fail + 1)); }
finish() { echo "$pass passed, $fail failed"; [ "$fail" = 0 ]; exit; }

command -v systemd-nspawn >/dev/null || { ko systemd_nspawn_is_installed "run tests/setup.d/55-hardening.sh"; finish; }
command -v mosquitto >/dev/null && command -v mosquitto_sub >/dev/null \
  || { ko mosquitto_is_installed "run tests/setup.d/00-apt.sh"; finish; }
bins=${FLEET_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}
if [ ! -x "$bins/fleet-updated" ] || [ ! -x "$bins/fleet-recorderd" ] || [ ! -x "$bins/fleetctl" ]; then
  (cd "$repo" && cargo build -q -p fleet-updated -p fleet-recorderd -p fleetctl) || { ko the_daemons_build; finish; }
fi

scratch=$(mktemp -d /tmp/fleet-push.XXXXXX)
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
# Every user the tmpfiles entries name (fleet-retentiond and fleet-uploader own directories that
# fleet-updated's sandbox binds).
for u in fleet-updated fleet-recorderd fleet-retentiond fleet-uploader; do
  if grep -q "^$u:" "$root/etc/passwd"; then
    usermod --root "$root" -a -G fleet-data,audio "$u"
  else
    useradd --root "$root" --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --user-group --groups fleet-data,audio "$u"
  fi
done
usermod --root "$root" -a -G fleet-mqtt fleet-updated
install -m 0755 "$bins/fleet-updated" "$bins/fleet-recorderd" "$bins/fleetctl" "$root/usr/bin/"
install -d "$root/usr/libexec/fleet" "$root/etc/fleet" "$root/boot/firmware" "$root/data" \
  "$root/var/lib/fleet-proof"
install -m 0755 "$files/fleet-request-reboot" "$files/fleet-config-restart" "$root/usr/libexec/fleet/"
subst() { sed -e 's,@BINDIR@,/usr/bin,g' -e 's,@LIBEXECDIR@,/usr/libexec,g' -e 's,@DATADIR@,/data,g' \
  -e 's,@WATCHDOG_SEC@,10s,g' -e 's,@ATTEMPTS@,3,g' -e 's,@COMPATIBLE@,fleet-push-proof,g' \
  -e 's,@BOOT_FLOW@,uboot,g' "$1"; }
for unit in fleet-updated.service fleet-recorderd.service fleet-config-restart.path fleet-config-restart.service; do
  subst "$files/$unit" > "$root/etc/systemd/system/$unit"
done
rootfs=$repo/meta-fleet/recipes-core/fleet-rootfs/files
subst "$rootfs/fleet-provision.service" > "$root/etc/systemd/system/fleet-provision.service"
install -m 0755 "$rootfs/fleet-provision" "$root/usr/libexec/fleet-provision"
for c in updated.toml recorderd.toml; do subst "$files/$c" > "$root/etc/fleet/$c"; done
subst "$files/fleet-firmware.tmpfiles" > "$root/usr/lib/tmpfiles.d/fleet-firmware.conf"
echo "1.0.0" > "$root/etc/fleet-version"

# The operator's offer key; the station trusts its public half.
"$bins/fleetctl" keys gen --out-dir "$scratch" --name offer >/dev/null || { ko fleetctl_makes_a_key; finish; }
install -m 0600 "$scratch/offer.key.pem" "$root/var/lib/fleet-proof/offer.key.pem"
pub=$(tr -d ' \n' < "$scratch/offer.pub")

# The provisioning folder as `fleetctl provision` writes it. The updater's ports are the simulated
# ones (the RAUC and boot-flow path under systemd is test-units-in-systemd.sh's); everything a
# configuration push touches is the image's.
install -d "$root/boot/firmware/fleet-provision"
echo stn-proof > "$root/boot/firmware/fleet-provision/device-id"
cat > "$root/boot/firmware/fleet-provision/updated.toml" <<CONF
device-id = "stn-proof"
groups = ["field"]
trusted-keys = ["$pub"]
installer = "sim"
boot-flow = "sim"

[sim]
root = "/data/fleet/updated/sim"

[mqtt]
host = "127.0.0.1"
port = 1883
CONF
cat > "$root/boot/firmware/fleet-provision/recorderd.toml" <<'CONF'
station-id-file = "/data/fleet/identity/device-id"

[position]
lat = 52.5
lon = -1.25

[profiles.field]
rate = 8000
channels = 1
segment-seconds = 2

[[devices]]
id = "mic0"
alsa-name = "fleetmic"
profile = "field"
CONF
# The microphone: an ALSA file PCM on a FIFO, filled in real time by fleet-proof-mic.service
# (which holds the FIFO open read-write, so the recorder's reopen never sees end-of-file).
cat > "$root/etc/asound.conf" <<'CONF'
pcm.fleetmic {
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "/var/lib/fleet-proof/mic.fifo"
}
CONF
cat > "$root/etc/systemd/system/fleet-proof-mic.service" <<'UNIT'
[Unit]
Description=a paced microphone feed (8 kHz, 16-bit, mono noise)
Before=fleet-recorderd.service
[Service]
ExecStartPre=/bin/sh -c 'rm -f /var/lib/fleet-proof/mic.fifo; mkfifo -m 0644 /var/lib/fleet-proof/mic.fifo'
ExecStart=/usr/bin/python3 -c 'import os, time\nfd = os.open("/var/lib/fleet-proof/mic.fifo", os.O_RDWR)\nt = time.monotonic()\nwhile True:\n    os.write(fd, os.urandom(1600))\n    t += 0.1\n    time.sleep(max(0.0, t - time.monotonic()))'
UNIT
# The simulated board's first power-on (what `--sim-boot` does for simulated stations).
cat > "$root/etc/systemd/system/fleet-proof-sim.service" <<'UNIT'
[Unit]
After=fleet-provision.service systemd-tmpfiles-setup.service
Before=fleet-updated.service
[Service]
Type=oneshot
User=fleet-updated
ExecStart=/usr/bin/fleet-updated --config /etc/fleet/updated.toml --station-config /data/fleet/identity/updated.toml --sim-boot
UNIT
cat > "$root/etc/systemd/system/fleet-proof-broker.service" <<'UNIT'
[Unit]
Description=the fleet's broker, on the container's loopback
Before=fleet-updated.service
[Service]
ExecStart=/usr/sbin/mosquitto -c /var/lib/fleet-proof/mosquitto.conf
UNIT
printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\n' \
  > "$root/var/lib/fleet-proof/mosquitto.conf"

cat > "$root/etc/systemd/system/fleet-proof.target" <<'UNIT'
[Unit]
Description=a configuration push under systemd
Requires=basic.target fleet-proof.service
Wants=fleet-provision.service fleet-proof-sim.service fleet-proof-broker.service fleet-proof-mic.service
Wants=fleet-recorderd.service fleet-updated.service fleet-config-restart.path
After=basic.target fleet-proof.service
UNIT
cat > "$root/etc/systemd/system/fleet-proof.service" <<'UNIT'
[Unit]
After=fleet-updated.service fleet-recorderd.service fleet-config-restart.path fleet-proof-broker.service
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/fleet-proof
ExecStartPost=/bin/systemctl --no-block poweroff
UNIT
cat > "$root/usr/local/sbin/fleet-proof" <<'SH'
#!/bin/sh
# Inside the container, as root: the operator's pushes and what the station made of them.
out=/out
key=/var/lib/fleet-proof/offer.key.pem
layer=/data/fleet/config/recorderd.toml
status=/data/fleet/recordings/status.json
healthy() { grep -q '"healthy": *true' "$status" 2>/dev/null; }
i=0; until healthy || [ $i -ge 60 ]; do sleep 1; i=$((i + 1)); done
echo "healthy after ${i}s" > $out/start
systemctl show -p Id,ActiveState,SubState,NRestarts,StatusText fleet-updated.service fleet-recorderd.service \
  fleet-proof-sim.service fleet-provision.service fleet-proof-broker.service fleet-proof-mic.service >> $out/start
systemctl show -p ActiveState,NRestarts,InvocationID fleet-recorderd.service > $out/recorder-before
# One push: wait for the station's next config event (mosquitto_sub is subscribed first).
push() { # name, fleetctl config push arguments...
  name=$1; shift
  mosquitto_sub -h 127.0.0.1 -t fleet/v1/devices/stn-proof/events -C 1 -W 40 > $out/event-$name 2>&1 &
  sub=$!
  sleep 1
  start=$(date +%s.%N)
  fleetctl config push --broker 127.0.0.1:1883 --key $key --to device:stn-proof --daemon recorderd "$@" \
    > $out/push-$name 2>&1
  echo "rc=$?" >> $out/push-$name
  wait $sub
  echo "$(date +%s.%N) - $start" | bc > $out/took-$name
  cp $layer $out/layer-after-$name 2>/dev/null || echo absent > $out/layer-after-$name
}
push accepted --set position.lat=48.25 --deadline 30s
journalctl -b --no-pager -u fleet-updated -u fleet-recorderd -u fleet-config-restart -u fleet-provision \
  -u fleet-proof-sim > $out/journal 2>&1
# Nothing came back: the rest would only wait out its timeouts.
grep -q config-accepted $out/event-accepted || exit 0
systemctl show -p ActiveState,NRestarts,InvocationID fleet-recorderd.service > $out/recorder-after
sleep 5
grep -l -a "Loc Position: 48.250000 -1.250000" $(find /data/fleet/recordings/data -name '*.wav' -newer $layer) \
  > $out/guano 2>/dev/null
push checker --set position.lat=95 --deadline 30s
# The microphone feed stops with the next push: the recorder cannot come up healthy.
systemctl stop fleet-proof-mic.service
push restored --set profiles.field.segment-seconds=4 --deadline 15s
# The accepted push again, as a replay (its sequence is the station's last but two).
push replayed --set position.lat=48.25 --sequence 1 --deadline 30s
ls -la /data/fleet/config > $out/config-dir 2>&1
journalctl -b --no-pager -u fleet-updated -u fleet-recorderd -u fleet-config-restart -u fleet-provision \
  > $out/journal 2>&1
SH
chmod 0755 "$root/usr/local/sbin/fleet-proof"

# -k: a container that does not stop on the TERM (its PID 1 starved) is killed 30 s later
timeout -k 30 300 systemd-nspawn -q -D "$root" --private-network --register=no --keep-unit --link-journal=no \
  --tmpfs=/data:mode=0755 --bind="$scratch/out:/out" -b systemd.unit=fleet-proof.target \
  systemd.mask=systemd-networkd-wait-online.service > "$scratch/boot.log" 2>&1
status=$?
[ "${FLEET_NSPAWN_DEBUG:-0}" = 1 ] && for f in "$scratch/out/"*; do echo "--- $f"; tail -40 "$f"; done

o=$scratch/out
# The proof ends with `systemctl poweroff`: the station stops by itself, the recorder (restarted by
# every push, its capture perhaps blocked) included. A recorder whose stopping loop spun on
# watchdog pings starved PID 1 here, and the container never stopped.
[ "$status" = 0 ] \
  && ok the_station_powers_off_by_itself_after_the_pushes \
  || ko the_station_powers_off_by_itself_after_the_pushes "nspawn exit $status: $(tail -5 "$scratch/boot.log")"
grep -q '"event":"config-accepted"' "$o/event-accepted" 2>/dev/null \
  && grep -q "lat = 48.25" "$o/layer-after-accepted" \
  && ok a_pushed_recorder_setting_is_accepted_written_and_reported \
  || ko a_pushed_recorder_setting_is_accepted_written_and_reported "$(cat "$o/start" "$o/push-accepted" "$o/event-accepted" 2>/dev/null)"
before=$(sed -n 's/^InvocationID=//p' "$o/recorder-before" 2>/dev/null)
after=$(sed -n 's/^InvocationID=//p' "$o/recorder-after" 2>/dev/null)
[ -n "$before" ] && [ "$before" != "$after" ] && grep -qx "ActiveState=active" "$o/recorder-after" \
  && ok the_root_helper_restarted_the_recorder_which_came_up_active \
  || ko the_root_helper_restarted_the_recorder_which_came_up_active "$(cat "$o/recorder-before" "$o/recorder-after" 2>/dev/null)"
[ -s "$o/guano" ] \
  && ok the_running_recorder_writes_the_pushed_position_into_its_segments \
  || ko the_running_recorder_writes_the_pushed_position_into_its_segments
grep -q '"event":"config-refused"' "$o/event-checker" 2>/dev/null && grep -q '"code":"rejected-by-daemon"' "$o/event-checker" \
  && ! grep -q "lat = 95" "$o/layer-after-checker" \
  && ok a_push_the_recorders_checker_refuses_is_refused_and_changes_nothing \
  || ko a_push_the_recorders_checker_refuses_is_refused_and_changes_nothing "$(cat "$o/event-checker" 2>/dev/null)"
took=$(cat "$o/took-restored" 2>/dev/null || echo 999)
grep -q '"event":"config-restored"' "$o/event-restored" 2>/dev/null \
  && ! grep -q "segment-seconds" "$o/layer-after-restored" && grep -q "lat = 48.25" "$o/layer-after-restored" \
  && awk -v t="$took" 'BEGIN { exit !(t < 15 + 5) }' \
  && ok a_push_after_which_the_recorder_is_unhealthy_is_restored_within_its_deadline_and_reported \
  || ko a_push_after_which_the_recorder_is_unhealthy_is_restored_within_its_deadline_and_reported \
       "took ${took}s: $(cat "$o/event-restored" "$o/layer-after-restored" 2>/dev/null)"
echo "restored ${took}s after the push (deadline 15 s)"
grep -q '"code":"replayed"' "$o/event-replayed" 2>/dev/null \
  && ok a_replayed_push_is_refused \
  || ko a_replayed_push_is_refused "$(cat "$o/event-replayed" 2>/dev/null)"
if [ "$fail" != 0 ]; then
  echo "--- config dir"; cat "$o/config-dir" 2>/dev/null
  echo "--- journal"; tail -60 "$o/journal" 2>/dev/null
  echo "--- boot"; tail -20 "$scratch/boot.log"
fi
finish
