#!/usr/bin/env bash
# Benchmark (not a test): fleet-recorderd against arecord on the same paced input.
#
# Both record the same raw file through alsa-lib's file PCM, paced in real time by one dummy JACK
# server at 384 kHz, 16-bit, mono, side by side in one run, with the same period (40 ms) and buffer
# (2 s). Prints CPU seconds per audio hour and peak RSS for each (from wait4 rusage).
#
#   BENCH_SECONDS=60 tests/bench/recorder.sh      (default 30 s of audio)
#   FLEET_RECORDERD=/path/to/fleet-recorderd     (default: cargo build --release)
#   BENCH_PROFILE_EXTRA='sync-interval-seconds = 60'   (extra profile keys, to see what costs)
#
# Target (issue 5): fleet-recorderd uses no more CPU than arecord and at most 8 MiB RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${BENCH_SECONDS:-30}
rate=384000

if [ -z "${FLEET_RECORDERD:-}" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
  cargo build --release --locked -q -p fleet-recorderd
  FLEET_RECORDERD=$CARGO_TARGET_DIR/release/fleet-recorderd
fi

work=$(mktemp -d)
server="fleetbench$$"
jack_pid=""
cleanup() {
  if [ -n "$jack_pid" ]; then
    kill -TERM "$jack_pid" 2>/dev/null || true
    wait "$jack_pid" 2>/dev/null || true
  fi
  rm -f /dev/shm/jack*_"${server}"_* 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A test-only ALSA configuration (never the machine's).
mkdir -p "$work/xdg/alsa"
cat > "$work/xdg/alsa/asoundrc" <<'ASOUNDRC'
pcm.jackcap { type jack  capture_ports { 0 system:capture_1 } }
pcm.vmic_rt {
    @args [ INFILE ]
    @args.INFILE { type string }
    type file
    slave.pcm { type plug slave.pcm "jackcap" }
    file "/dev/null"
    infile $INFILE
}
ASOUNDRC
# Longer than the take: the file PCM repeats its last buffer past the end.
head -c $(( rate * 2 * (seconds + 5) )) /dev/urandom > "$work/src.raw"

mkdir -p "$work/rec" "$work/arecord"
cat > "$work/recorderd.toml" <<TOML
station-id = "bench"
data-dir = "$work/rec"
clock-trust = "always"
[profiles.bats]
rate = $rate
segment-seconds = 60
period-ms = 40
buffer-ms = 2000
${BENCH_PROFILE_EXTRA:-}
[[devices]]
id = "mic0"
alsa-name = "vmic_rt:INFILE=$work/src.raw"
profile = "bats"
TOML
"$FLEET_RECORDERD" --config "$work/recorderd.toml" --check-config >/dev/null

jackd -n "$server" --no-realtime -d dummy -r "$rate" -p 4096 >"$work/jackd.log" 2>&1 &
jack_pid=$!
jack_wait -s "$server" -w -t 10 >/dev/null

export XDG_CONFIG_HOME="$work/xdg" JACK_DEFAULT_SERVER="$server" JACK_NO_START_SERVER=1
echo "recording ${seconds} s at ${rate} Hz/16-bit/mono with both, side by side..."
python3 - "$seconds" "$FLEET_RECORDERD" "$work" <<'PY'
import os, subprocess, sys, time
seconds, recorder, work = float(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = {
    "fleet-recorderd": [recorder, "--config", f"{work}/recorderd.toml", "--duration", str(seconds)],
    "arecord": ["arecord", "-q", "-D", f"vmic_rt:INFILE={work}/src.raw", "-f", "S16_LE",
                "-r", "384000", "-c", "1", "-F", "40000", "-B", "2000000",
                "-d", str(int(seconds)), "-t", "wav", f"{work}/arecord/take.wav"],
}
env = dict(os.environ, RUST_LOG="warn")
pids = {name: subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL).pid
        for name, cmd in runs.items()}
# Peak RSS from rusage counts JACK's shared-memory pool that both clients map (about 100 MiB with
# this server, absent with a real microphone): sample the private part (RssAnon) as well.
peak_anon = {name: 0 for name in pids}
done = {}
while len(done) < len(pids):
    for name, pid in pids.items():
        if name in done:
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak_anon[name] = max(peak_anon[name], int(line.split()[1]))
        except OSError:
            pass
        got, status, ru = os.wait4(pid, os.WNOHANG)
        if got == pid:
            done[name] = (os.waitstatus_to_exitcode(status), ru)
    time.sleep(0.05)
print(f"{'':16} {'exit':>4} {'cpu s':>7} {'cpu s/audio h':>14} {'peak RSS MiB':>13} "
      f"{'peak private MiB':>17}")
for name, (code, ru) in done.items():
    cpu = ru.ru_utime + ru.ru_stime
    print(f"{name:16} {code:>4} {cpu:>7.3f} {cpu * 3600 / seconds:>14.1f} "
          f"{ru.ru_maxrss / 1024:>13.2f} {peak_anon[name] / 1024:>17.2f}")
sys.exit(1 if any(code != 0 for code, _ in done.values()) else 0)
PY
rec_bytes=$(find "$work/rec/data" -name '*.wav' -printf '%s\n' | awk '{s += $1 - 4096} END {print s}')
are_bytes=$(( $(stat -c %s "$work/arecord/take.wav") - 44 ))
echo "audio bytes written: fleet-recorderd $rec_bytes, arecord $are_bytes (expected $(( rate * 2 * seconds )))"
