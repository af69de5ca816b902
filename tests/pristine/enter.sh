#!/usr/bin/env bash
# Runs inside `unshare --mount --pid --fork` (tests/pristine/check.sh): mounts what a machine has
# into the pristine root, then runs every setup step and verify.sh in it with chroot. The mounts
# and every process started in the root (daemons too) end with this namespace.
#   enter.sh ROOT REPO SETUP_DIR RUSTUP_HOME CACHE
set -euo pipefail
r=$1 repo=$2 setup_dir=$3 rustup_home=$4 cache=$5
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
ro_bind() { # source target
  mkdir -p "$2"
  mount --bind "$1" "$2"
  mount -o remount,bind,ro "$2"
}
ro_bind "$repo" "$r/fleet"
ro_bind "$setup_dir" "$r/setup.d"
ro_bind "$rustup_home" "$r/root/.rustup"
# Downloaded .debs only (checked against the root's own lists): a re-run downloads less.
mount --bind "$cache/apt-archives" "$r/var/cache/apt/archives"
# The build folder of `cargo install` (70-fuzz.sh): a re-run compiles only what changed and still
# installs into the root's own ~/.cargo/bin.
mkdir -p "$r/var/cache/fleet-cargo-target"
mount --bind "$cache/cargo-target" "$r/var/cache/fleet-cargo-target"
cp -L /etc/resolv.conf "$r/etc/resolv.conf"
env=(HOME=/root USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8
  PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && env+=("$v=${!v}")
done
in_root() { chroot "$r" /usr/bin/env -i "${env[@]}" "$@"; }
in_root CARGO_TARGET_DIR=/var/cache/fleet-cargo-target bash -c 'cd /fleet && exec bash tests/setup.sh /setup.d'
# The steps passed: what they installed must work the way the suites use it.
in_root bash /fleet/tests/pristine/verify.sh /setup.d
