#!/usr/bin/env bash
# Cross-builds the station's programs for the QEMU image (aarch64, release) with Debian's rustc-web
# and its arm64 standard library (docs: ../shared/notes/cross-aarch64.md in the project notes,
# docs/reference/qemu-harness.md here). Cargo's own incremental build is the cache.
#   FLEET_QEMU_TARGET_DIR   cargo target directory (default: target/qemu-arm64)
#   FLEET_QEMU_SRC          workspace to build (default: this checkout)
#   FLEET_QEMU_ALL_DAEMONS  1: also fleet-recorderd, -reporterd, -retentiond, -uploaderd
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
src=${FLEET_QEMU_SRC:-$root}
export CARGO_TARGET_DIR=${FLEET_QEMU_TARGET_DIR:-$root/target/qemu-arm64}
export RUSTC=${FLEET_QEMU_RUSTC:-/usr/bin/rustc}
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_PATH=/usr/lib/aarch64-linux-gnu/pkgconfig
# A test image needs no link-time optimisation: without it and with more codegen units a cold
# build takes a fraction of the release profile's time (the binaries are a little larger).
export CARGO_PROFILE_RELEASE_LTO=${FLEET_QEMU_LTO:-false}
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=${FLEET_QEMU_CODEGEN_UNITS:-16}
cd "$src"
# --locked for this checkout; a snapshot elsewhere (FLEET_QEMU_SRC) may resolve its own lock.
locked=--locked
[ "$src" = "$root" ] || locked=
# The U-Boot image runs these three; the Pi 5 systemd station (build-pi5.sh) every program the
# image ships (fleet-firmware_git.bb): FLEET_QEMU_ALL_DAEMONS=1.
crates=(-p fleet-bootctl -p fleet-updated -p fleet)
[ "${FLEET_QEMU_ALL_DAEMONS:-0}" = 1 ] &&
  crates+=(-p fleet-recorderd -p fleet-reporterd -p fleet-retentiond -p fleet-uploaderd)
cargo build --release $locked --target aarch64-unknown-linux-gnu "${crates[@]}" >&2
echo "$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release"
