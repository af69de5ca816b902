#!/usr/bin/env bash
# Benchmark (not a test): what station health costs.
#
# 1. Health traffic per station per day at the default heartbeat (900 s): the reporter's real
#    message (read by `fleet-reporterd --once` from a fake Pi 5 tree with one recording device),
#    measured on the wire by a subscriber, times the heartbeats of a day, plus MQTT framing,
#    PUBACKs and keep-alive pings of the reporter's own connection (30 s).
# 2. The reporter's resident memory on an idle station: a running release binary against a
#    local mosquitto, VmRSS and VmHWM after BENCH_SECONDS (default 20).
# 3. `fleetctl status` over BENCH_STATIONS (default 1000) simulated stations (`fleetctl sim`),
#    wall time of one status read.
#
# Goals (issue 16): <= 1 MiB per station per day; <= 8 MiB RSS; status < 1 s at 1,000 stations.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${BENCH_SECONDS:-20}
stations=${BENCH_STATIONS:-1000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --locked -q -p fleet-reporterd -p fleetctl
bin=$CARGO_TARGET_DIR/release

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\nlog_dest none\n' "$port" >"$work/mosquitto.conf"
[ "$(id -u)" = 0 ] && echo "user root" >>"$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" >"$work/broker.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

# A fake Pi 5 station.
r=$work/root
mkdir -p "$r/proc/sys/kernel/random" "$r/sys/class/thermal/thermal_zone0" \
  "$r/sys/devices/platform/soc@107c000000/soc@107c000000:firmware" "$r/sys/block/mmcblk0/device" \
  "$r/run/systemd/timesync" "$r/var/lib/systemd/timesync" "$r/etc" "$work/state"
echo "86400.5 100.0" >"$r/proc/uptime"
echo "0.31 0.28 0.25 1/123 4567" >"$r/proc/loadavg"
printf 'MemTotal: 8245000 kB\nMemAvailable: 7600000 kB\n' >"$r/proc/meminfo"
echo "6c1a0e6f-d2ad-4b0c-9d1f-6d0f1c0e2a31" >"$r/proc/sys/kernel/random/boot_id"
echo "console=ttyAMA10 rauc.slot=A rootwait" >"$r/proc/cmdline"
echo cpu-thermal >"$r/sys/class/thermal/thermal_zone0/type"
echo 48300 >"$r/sys/class/thermal/thermal_zone0/temp"
echo 0 >"$r/sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled"
echo "0x02 0x02" >"$r/sys/block/mmcblk0/device/life_time"
echo 0x01 >"$r/sys/block/mmcblk0/device/pre_eol_info"
touch "$r/run/systemd/timesync/synchronized" "$r/var/lib/systemd/timesync/clock"
echo 1.3.2 >"$r/etc/fleet-version"
status_file=$work/status.json
write_status() {
  cat >"$status_file" <<JSON
{"version":1,"station":"stn-0042","healthy":true,"repaired-at-start":0,"written-monotonic-ms":100000,
"written-unix-ms":null,"devices":[{"id":"mic0","state":"recording","pcm":"hw:CARD=UltraMic,DEV=0",
"format":"384000/1/16","segments-written":288,"segments-repaired":0,"bytes-written":1,"frames-captured":1,
"xruns":0,"stalls":0,"device-losses":0,"discontinuities":0,"gaps":1,"gap-ms-total":0,"write-errors":0,
"last-segment":"a.wav","last-segment-unix-ms":1790000000000,"last-progress-monotonic-ms":99000,
"last-audio":{"rms-dbfs":-48.21,"peak-dbfs":-21.53,"clipped-fraction":0.0,"dc-offset":0.00041,"flat":false}}]}
JSON
}
write_status
cat >"$work/updated.toml" <<TOML
device-id = "stn-0042"
data-dir = "$work"
compatible = "fleet-rpi5"
trusted-keys = []
[mqtt]
host = "127.0.0.1"
port = $port
TOML
cat >"$work/reporterd.toml" <<TOML
station-config = "$work/updated.toml"
recorder-status = "$status_file"
version-file = "$r/etc/fleet-version"
root = "$r"
state-dir = "$work/state"
heartbeat-secs = 900
sample-secs = 30
TOML

# 1. Traffic.
mosquitto_sub -p "$port" -t 'fleet/v1/devices/+/health' -C 1 -W 20 >"$work/one.json" &
sub=$!
sleep 0.5
"$bin/fleet-reporterd" --config "$work/reporterd.toml" 2>"$work/reporter.log" &
rep=$!
pids+=($rep)
wait "$sub"
payload=$(stat -c %s "$work/one.json")
payload=$((payload - 1)) # mosquitto_sub's newline
topic="fleet/v1/devices/stn-0042/health"
# PUBLISH: fixed header 1 + remaining length 2 + topic length 2 + topic + packet id 2 + payload;
# PUBACK 4 bytes back; PINGREQ/PINGRESP 2 bytes each every keep-alive (30 s).
per_msg=$((1 + 2 + 2 + ${#topic} + 2 + payload + 4))
per_day_msgs=$((86400 / 900))
pings=$((86400 / 30 * 4))
total=$((per_msg * per_day_msgs + pings))
echo "health message: $payload bytes of JSON, $per_msg bytes per publish with MQTT framing and PUBACK"
echo "health traffic per station per day (heartbeat 900 s, no changes): $per_day_msgs messages, $((per_msg * per_day_msgs)) bytes + keep-alive $pings bytes = $total bytes ($(python3 -c "print(f'{$total/1048576:.3f}')") MiB; goal <= 1 MiB)"
echo "  (every state change costs one more message; at most one per min-interval-secs)"

# 2. Idle RSS.
sleep "$seconds"
rss=$(awk '/VmRSS/ {print $2}' "/proc/$rep/status")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$rep/status")
echo "fleet-reporterd idle after ${seconds} s: VmRSS ${rss} KiB, VmHWM ${hwm} KiB (goal <= 8192 KiB)"

# 3. Status over simulated stations.
"$bin/fleetctl" keys gen --out-dir "$work" --name bench >/dev/null
"$bin/fleetctl" sim --broker "127.0.0.1:$port" --trust "$work/bench.pub" --stations "$stations" \
  --group field --prefix sim --duration 1h >"$work/sim.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do
  n=$(mosquitto_sub -p "$port" -t 'fleet/v1/devices/+/health' -W 2 -v 2>/dev/null | wc -l || true)
  [ "$n" -ge "$stations" ] && break
  sleep 1
done
start=$(date +%s.%N)
"$bin/fleetctl" status --broker "127.0.0.1:$port" >"$work/status.txt"
end=$(date +%s.%N)
rows=$(grep -c '^ *sim-[0-9]* ' "$work/status.txt" || true)
echo "fleetctl status over $rows simulated stations (health, state, presence): $(python3 -c "print(f'{$end-$start:.2f}')") s wall (goal < 1 s)"
