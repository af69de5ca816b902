#!/usr/bin/env bash
# Benchmark (not a test): a staged rollout over BENCH_STATIONS (default 1000) simulated stations
# on one mosquitto.
#
# One `fleetctl sim` process runs every station (one MQTT connection each, one shared tokio
# runtime); `fleetctl rollout start` pushes a small bundle (64 KiB in 4 KiB chunks) with a
# three-wave plan (5 %, 30 %, 100 %) and `fleetctl rollout run` drives it to completion.
# Prints: rollout time, broker traffic ($SYS byte counters), peak memory (VmHWM) of the
# simulator and of mosquitto, and how long `fleetctl status` / `rollout status` take.
#
#   BENCH_STATIONS=1000 tests/bench/rollout.sh
#   FLEETCTL=/path/to/fleetctl      (default: cargo build --release)
#   BENCH_SIM_ARGS='--flaky-rate 0.2 --flaky-every 5s --slow-rate 0.1'   (extra `fleetctl sim` options)
set -euo pipefail
cd "$(dirname "$0")/../.."
stations=${BENCH_STATIONS:-1000}
bundle_kib=${BENCH_BUNDLE_KIB:-64}

if [ -z "${FLEETCTL:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --release --locked -q -p fleetctl
  FLEETCTL=$CARGO_TARGET_DIR/release/fleetctl
fi

work=$(mktemp -d)
chmod 0777 "$work"
broker_pid=""
sim_pid=""
cleanup() {
  for p in $sim_pid $broker_pid; do
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ulimit -n "$(( stations * 2 + 1024 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
sys_interval 1
max_queued_messages 10000
log_dest none
CONF
/usr/sbin/mosquitto -c "$work/mosquitto.conf" >/dev/null 2>&1 &
broker_pid=$!
broker="mqtt://127.0.0.1:$port"
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break
  sleep 0.05
done

sys_bytes() { # $SYS/broker/bytes/{received,sent}
  local r s
  r=$(mosquitto_sub -p "$port" -t '$SYS/broker/bytes/received' -C 1 -W 5)
  s=$(mosquitto_sub -p "$port" -t '$SYS/broker/bytes/sent' -C 1 -W 5)
  echo "$r $s"
}
hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
now_ms() { date +%s%3N; }

"$FLEETCTL" keys gen --out-dir "$work" --name bench >/dev/null
head -c $(( bundle_kib * 1024 )) /dev/urandom > "$work/update-2.0.0.raucb"
cat > "$work/plan.toml" <<'PLAN'
group = "field"
min-stations = 10
success-percent = 95
failure-percent = 10
waves = [ { percent = 5 }, { percent = 30 }, { percent = 100 } ]
PLAN

t_sim=$(now_ms)
"$FLEETCTL" sim --broker "$broker" --trust "$work/bench.pub" --stations "$stations" \
  --group field --prefix stn --install-time 500ms --duration 1h ${BENCH_SIM_ARGS:-} >"$work/sim.log" 2>&1 &
sim_pid=$!
for _ in $(seq 600); do
  n=$("$FLEETCTL" status --broker "$broker" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
  [ "$n" -ge "$stations" ] && break
  sleep 1
done
t_up=$(now_ms)
read -r rx0 tx0 <<<"$(sys_bytes)"

t0=$(now_ms)
"$FLEETCTL" rollout start --broker "$broker" --key "$work/bench.key.pem" --plan "$work/plan.toml" \
  --version 2.0.0 --compatible fleet-sim --chunk-size 4096 "$work/update-2.0.0.raucb"
"$FLEETCTL" rollout run --broker "$broker" --key "$work/bench.key.pem" --interval 1s \
  --timeout 30m >"$work/run.log"
t1=$(now_ms)
sleep 1.5 # one $SYS interval
read -r rx1 tx1 <<<"$(sys_bytes)"

t_s0=$(now_ms)
"$FLEETCTL" status --broker "$broker" --json >"$work/status.json"
t_s1=$(now_ms)
"$FLEETCTL" rollout status --broker "$broker" --key "$work/bench.key.pem" >"$work/rollout-status.txt"
t_s2=$(now_ms)

committed=$(python3 -c 'import json,sys; rows=json.load(open(sys.argv[1])); print(sum(1 for r in rows if r.get("state",{}).get("version")=="2.0.0"))' "$work/status.json")
sim_hwm=$(hwm_kib "$sim_pid")
broker_hwm=$(hwm_kib "$broker_pid")
tail -n 6 "$work/rollout-status.txt"
echo "stations:                 $stations (committed 2.0.0: $committed)"
echo "bundle:                   $bundle_kib KiB in 4 KiB chunks, waves 5% / 30% / 100%"
echo "stations up:              $(( t_up - t_sim )) ms (connect, subscribe, first state)"
echo "rollout total:            $(( t1 - t0 )) ms (start to completed, 1 s decision interval)"
echo "broker traffic:           received $(( (rx1 - rx0) / 1024 )) KiB, sent $(( (tx1 - tx0) / 1024 )) KiB (\$SYS/broker/bytes during the rollout)"
echo "peak memory simulator:    $(( sim_hwm / 1024 )) MiB VmHWM ($(( sim_hwm / stations )) KiB per station)"
echo "peak memory mosquitto:    $(( broker_hwm / 1024 )) MiB VmHWM"
echo "fleetctl status:          $(( t_s1 - t_s0 )) ms over $stations stations"
echo "fleetctl rollout status:  $(( t_s2 - t_s1 )) ms"
