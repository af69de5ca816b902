#!/usr/bin/env bash
# Full-system tests of a station under qemu-system-aarch64: updates pushed with the host's fleetctl
# and carried out by the station's fleet-updated, U-Boot boot counting, fallback after reboots,
# panics and hangs, fleet-updated's health gate, power cuts during downloads and installs,
# serial-console recovery. Builds (or takes from target/qemu-cache/) the firmware and the image,
# builds the host's fleetctl (debug, as the cargo tests do: usually already built), then runs
# every scenario.
#   FLEET_QEMU_ONLY=a,b    run only these scenarios (tests/qemu/harness.py --only); naming a pi5-*
#                          one builds the Pi 5 systemd station (tests/qemu/build-pi5.sh) and runs it;
#                          a qemuarm64-* one the same station on the U-Boot flow (--machine qemuarm64)
#   FLEET_QEMU_CUTS=N      power cuts (default 20)
#   FLEET_QEMU_SEED=N      seed of the cut moments (default: random, printed)
#   FLEET_QEMU_FLEETCTL=P  the host fleetctl to push with (default: cargo build -p fleetctl)
# Prints each scenario's slot sequence and a final "N passed, N failed". docs/reference/qemu-harness.md
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
started=$(date +%s)
fail() { echo "qemu: $*"; echo "0 passed, 1 failed"; exit 1; }

# The Pi 5 tryboot flow's systemd station (issue 15) runs when a pi5-* scenario is named.
pi5_wanted=0 qemuarm64_wanted=0
[[ ,${FLEET_QEMU_ONLY:-}, == *,pi5-* ]] && pi5_wanted=1
# ... and its U-Boot flow on the layer's qemuarm64 machine when a qemuarm64-* scenario is named.
[[ ,${FLEET_QEMU_ONLY:-}, == *,qemuarm64-* ]] && qemuarm64_wanted=1
fw=$(FLEET_QEMU_ALL_DAEMONS=${FLEET_QEMU_ALL_DAEMONS:-$((pi5_wanted | qemuarm64_wanted))} "$root/tests/qemu/build-firmware.sh") || fail "cross build of the firmware failed"
echo "qemu: firmware built ($(($(date +%s) - started)) s)"
image=$("$root/tests/qemu/build.sh" --firmware-dir "$fw" | tail -n1) || fail "image build failed"
[ -f "$image/.done" ] || fail "image build failed"
echo "qemu: image $image ($(($(date +%s) - started)) s)"
pi5=()
if [ $pi5_wanted = 1 ]; then
  pi5_image=$("$root/tests/qemu/build-pi5.sh" --firmware-dir "$fw" | tail -n1) || fail "Pi 5 image build failed"
  [ -f "$pi5_image/.done" ] || fail "Pi 5 image build failed"
  pi5=(--pi5-image "$pi5_image")
  echo "qemu: Pi 5 image $pi5_image ($(($(date +%s) - started)) s)"
fi
if [ $qemuarm64_wanted = 1 ]; then
  arm_image=$("$root/tests/qemu/build-pi5.sh" --firmware-dir "$fw" --machine qemuarm64 | tail -n1) ||
    fail "qemuarm64 systemd image build failed"
  [ -f "$arm_image/.done" ] || fail "qemuarm64 systemd image build failed"
  pi5+=(--qemuarm64-image "$arm_image")
  echo "qemu: qemuarm64 systemd image $arm_image ($(($(date +%s) - started)) s)"
fi
fleetctl=${FLEET_QEMU_FLEETCTL:-}
if [ -z "$fleetctl" ]; then
  (cd "${FLEET_QEMU_SRC:-$root}" && cargo build --locked -p fleetctl >&2) || fail "host build of fleetctl failed"
  fleetctl=${CARGO_TARGET_DIR:-${FLEET_QEMU_SRC:-$root}/target}/debug/fleetctl
fi
[ -x "$fleetctl" ] || fail "no fleetctl at $fleetctl"
echo "qemu: fleetctl $fleetctl ($(($(date +%s) - started)) s)"
work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-qemu.XXXXXX")
keep=${FLEET_QEMU_KEEP:-0}
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT
args=(--image "$image" "${pi5[@]}" --fleetctl "$fleetctl" --work "$work" --cuts "${FLEET_QEMU_CUTS:-20}" --summary "$work/summary.json")
[ -n "${FLEET_QEMU_ONLY:-}" ] && args+=(--only "$FLEET_QEMU_ONLY")
[ -n "${FLEET_QEMU_SEED:-}" ] && args+=(--seed "$FLEET_QEMU_SEED")
python3 "$root/tests/qemu/harness.py" "${args[@]}" | tee "$work/harness.out"
rc=${PIPESTATUS[0]}
[ $rc -eq 0 ] || { keep=1; echo "qemu: logs kept in $work"; }
echo "qemu: suite took $(($(date +%s) - started)) s"
last=$(tail -n1 "$work/harness.out")
[[ $last =~ ^[0-9]+\ passed,\ [0-9]+\ failed$ ]] || { last="0 passed, 1 failed"; rc=1; }
echo "$last"
exit $rc
