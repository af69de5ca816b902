#!/usr/bin/env bash
# Full-system tests of a station under qemu-system-aarch64: updates pushed with the host's fleetctl
# and carried out by the station's fleet-updated, U-Boot boot counting, fallback after reboots,
# panics and hangs, fleet-updated's health gate, power cuts during downloads and installs,
# serial-console recovery. Builds (or takes from target/qemu-cache/) the firmware and the image,
# takes the host's fleetctl the cargo tests built (debug; builds them if they are not), then runs
# the default tier (harness.py DEFAULT_TIER): three scenarios on the systemd station built from
# the layer (tests/qemu/build-pi5.sh, both machines: the Pi 5 tryboot flow on NVMe and on SD, the
# U-Boot flow) and the shell guest's quick U-Boot proofs, 20 power cuts among them.
#   FLEET_QEMU_TIER=full   every scenario: the rest of the systemd station's (fallbacks, power
#                          cuts, console recovery, upkeep on both flows; about 2 h on 2 cores)
#   FLEET_QEMU_ONLY=a,b    run only these scenarios (tests/qemu/harness.py --only); the systemd
#                          station is built only for the machines whose scenarios are named:
#                          pi5-* (raspberrypi5), qemuarm64-* (--machine qemuarm64)
#   FLEET_QEMU_CUTS=N      power cuts (default 20)
#   FLEET_QEMU_SEED=N      seed of the cut moments (default: random, printed)
#   FLEET_QEMU_FLEETCTL=P  the host fleetctl to push with (default: target/debug/fleetctl of
#                          cargo test --workspace --no-run)
#   FLEET_QEMU_KEEP=1      keep the work directory (disks, logs) even when every scenario passed;
#                          a failed run keeps its logs but not its disk images
# Prints each scenario's slot sequence and a final "N passed, N failed". docs/reference/qemu-harness.md
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
started=$(date +%s)
fail() { echo "qemu: $*"; echo "0 passed, 1 failed"; exit 1; }

# The firmware, the shell guest's image and the systemd stations (issue 15: the Pi 5 tryboot
# flow's and the U-Boot flow's, on the layer's qemuarm64 machine; each only when one of its
# scenarios is named): built, or already built by tests/run.sh in the background.
images=$("$root/tests/qemu/prepare.sh" | tail -n1)
msg=${images#qemu: }
[[ $images == --image\ * ]] || fail "${msg:-the builds printed nothing}"
read -ra image_args <<<"$images"
fleetctl=${FLEET_QEMU_FLEETCTL:-}
if [ -z "$fleetctl" ]; then
  # The fleetctl the cargo tests built: `cargo test --workspace` builds the binaries its
  # integration tests run, so the same command with --no-run is a no-op after it, where
  # `cargo build -p fleetctl` resolves the features of fleetctl alone and builds again (49 s
  # after a fresh checkout's tests).
  (cd "${FLEET_QEMU_SRC:-$root}" && cargo test --workspace --locked --no-run >&2) || fail "host build of fleetctl failed"
  fleetctl=${CARGO_TARGET_DIR:-${FLEET_QEMU_SRC:-$root}/target}/debug/fleetctl
fi
[ -x "$fleetctl" ] || fail "no fleetctl at $fleetctl"
echo "qemu: fleetctl $fleetctl ($(($(date +%s) - started)) s)"
work=$(mktemp -d "${TMPDIR:-/tmp}/fleet-qemu.XXXXXX")
keep=${FLEET_QEMU_KEEP:-0}
trap '[ "$keep" = 1 ] || rm -rf "$work"' EXIT
args=("${image_args[@]}" --fleetctl "$fleetctl" --work "$work" --cuts "${FLEET_QEMU_CUTS:-20}" --summary "$work/summary.json" --tier "${FLEET_QEMU_TIER:-default}")
[ -n "${FLEET_QEMU_ONLY:-}" ] && args+=(--only "$FLEET_QEMU_ONLY")
[ -n "${FLEET_QEMU_SEED:-}" ] && args+=(--seed "$FLEET_QEMU_SEED")
python3 "$root/tests/qemu/harness.py" "${args[@]}" | tee "$work/harness.out"
rc=${PIPESTATUS[0]}
last=$(tail -n1 "$work/harness.out")
[[ $last =~ ^[0-9]+\ passed,\ [0-9]+\ failed$ ]] || { last="0 passed, 1 failed"; rc=1; }
if [ $rc -ne 0 ] && [ "$keep" != 1 ]; then
  # A failed run keeps its logs for reading, not its stations' disks: those are gigabytes a run,
  # and failed runs on a CI machine would fill its disk. FLEET_QEMU_KEEP=1 keeps everything.
  dropped=$(find "$work" -type f -name '*.img' -printf '%k\n' -delete | awk '{ k += $1 } END { printf "%d", k / 1024 }')
  keep=1
  echo "qemu: logs kept in $work (its disk images, ${dropped} MiB, removed; FLEET_QEMU_KEEP=1 keeps them)"
elif [ "$keep" = 1 ]; then
  echo "qemu: everything kept in $work"
fi
echo "qemu: suite took $(($(date +%s) - started)) s"
echo "$last"
exit $rc
