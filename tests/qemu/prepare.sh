#!/usr/bin/env bash
# Builds (or takes from their caches) what the QEMU suite boots: the firmware cross build, the
# shell guest's image and the systemd stations (both boot flows), and prints the harness's
# image arguments as its last line:
#   --image DIR [--pi5-image DIR] [--qemuarm64-image DIR]
# FLEET_QEMU_ONLY=a,b builds a systemd station only for the machines whose scenarios are named:
# pi5-* (raspberrypi5), qemuarm64-* (--machine qemuarm64). Every build is keyed by a hash of its
# inputs, so a second run after a finished one only checks the keys (tests/run.sh runs this, through
# tests/prebuild.sh, in the background while the cargo tests run; tests/suites.d/60-qemu.sh runs it again).
# On failure the last line says what failed and the exit status is 1.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
started=$(date +%s)
fail() { echo "qemu: $*"; exit 1; }

pi5_wanted=1 qemuarm64_wanted=1
if [ -n "${FLEET_QEMU_ONLY:-}" ]; then
  pi5_wanted=0 qemuarm64_wanted=0
  [[ ,${FLEET_QEMU_ONLY}, == *,pi5-* ]] && pi5_wanted=1
  [[ ,${FLEET_QEMU_ONLY}, == *,qemuarm64-* ]] && qemuarm64_wanted=1
fi
fw=$(FLEET_QEMU_ALL_DAEMONS=${FLEET_QEMU_ALL_DAEMONS:-$((pi5_wanted | qemuarm64_wanted))} "$here/build-firmware.sh") || fail "cross build of the firmware failed"
echo "qemu: firmware built ($(($(date +%s) - started)) s)" >&2
image=$("$here/build.sh" --firmware-dir "$fw" | tail -n1) || fail "image build failed"
[ -f "$image/.done" ] || fail "image build failed"
echo "qemu: image $image ($(($(date +%s) - started)) s)" >&2
args=(--image "$image")
# The two systemd stations build side by side: most of each build is one process at a time
# (Debian's extraction, mke2fs, RAUC's signing), so two of them share the two cores well.
pids=() outs=()
built=$(mktemp -d "${TMPDIR:-/tmp}/fleet-qemu-built.XXXXXX")
trap 'rm -rf "$built"' EXIT
for m in raspberrypi5 qemuarm64; do
  [ $m = raspberrypi5 ] && [ $pi5_wanted = 0 ] && continue
  [ $m = qemuarm64 ] && [ $qemuarm64_wanted = 0 ] && continue
  "$here/build-pi5.sh" --firmware-dir "$fw" --machine $m >"$built/$m" &
  pids+=($!) outs+=("$m")
done
for i in "${!pids[@]}"; do
  m=${outs[$i]}
  wait "${pids[$i]}" || { wait; fail "$m systemd image build failed"; }
  dir=$(tail -n1 "$built/$m")
  [ -f "$dir/.done" ] || { wait; fail "$m systemd image build failed"; }
  if [ $m = raspberrypi5 ]; then args+=(--pi5-image "$dir"); else args+=(--qemuarm64-image "$dir"); fi
  echo "qemu: $m systemd image $dir ($(($(date +%s) - started)) s)" >&2
done
echo "${args[*]}"
