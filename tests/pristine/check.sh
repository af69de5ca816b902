#!/usr/bin/env bash
# The install steps proved from zero: a pristine Debian bookworm root (mmdebstrap minbase, nothing
# from this machine's installed packages), every tests/setup.d step run inside it, then
# tests/pristine/verify.sh checks that what they installed works the way the suites use it.
#
#   tests/pristine/check.sh [--setup-dir DIR] [--force]
#
#   --setup-dir DIR        the steps to prove (default tests/setup.d); a run on another DIR records
#                          no pass
#   --force, FLEET_PRISTINE=1   run even when the cache records a pass for these steps
#   FLEET_PRISTINE_CACHE   cache folder (default /var/cache/fleet/pristine): the bootstrapped root
#                          (base-<key>.tar), downloaded .debs (apt-archives/), the build folder of
#                          `cargo install` (cargo-target/), passes (pass-<key>)
#   FLEET_PRISTINE_KEEP=1  keep the root after the run (printed), for a look inside
#
# The pass is keyed on a hash of tests/setup.d/*, tests/setup.sh, tests/pristine/* and the two files
# that say how the suites call the tools checked here (tests/qemu/harness.py, tests/layer/bbparse.py):
# an unchanged setup costs a second. Needs root (mount namespaces, chroot) and mmdebstrap (60-qemu.sh installs it);
# the Rust toolchain is a stated precondition (README), so the host's rustup toolchain is mounted
# read-only into the root, with a fresh ~/.cargo of the root's own for `cargo install`.
# Prints "pristine: ..." progress lines, the steps' own output, verify.sh's PASS/FAIL lines, and
# a last line that is either "pristine: passed ..." or "pristine: FAILED: <cause>" (for a failed
# step: "pristine: setup FAILED: <step>: <command>: <cause>"). Exit 1 when it failed.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
setup_dir=$root/tests/setup.d
force=${FLEET_PRISTINE:-0}
while [ $# -gt 0 ]; do
  case $1 in
    --setup-dir) setup_dir=$(cd "$2" && pwd); shift 2 ;;
    --force) force=1; shift ;;
    *) echo "usage: tests/pristine/check.sh [--setup-dir DIR] [--force]" >&2; exit 2 ;;
  esac
done
cache=${FLEET_PRISTINE_CACHE:-/var/cache/fleet/pristine}
suite=bookworm
started=$(date +%s)
say() { echo "pristine: [$(($(date +%s) - started))s] $*"; }
work=
cleanup() {
  [ -n "$work" ] && [ -d "$work" ] || return 0
  # The mounts lived in the namespace of enter.sh and ended with it; never delete through one.
  if findmnt -rn -o TARGET | grep -q "^$work"; then
    echo "pristine: $work still has mounts; left in place"
  elif [ "${FLEET_PRISTINE_KEEP:-0}" = 1 ]; then
    echo "pristine: root kept in $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
# The verdict is the last line: the root is cleaned up first.
finish() { # status line (@TOOK@ in the line: the seconds since the start, clean-up included)
  cleanup
  work=
  echo "${2//@TOOK@/$(($(date +%s) - started))}"
  exit "$1"
}
fail() { finish 1 "pristine: FAILED: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (a chroot with /proc, /sys and /dev mounted)"
command -v mmdebstrap >/dev/null || fail "mmdebstrap is not installed (tests/setup.d/60-qemu.sh installs it)"
command -v unshare >/dev/null || fail "unshare (util-linux) is not installed"

# ---- the host's toolchain and apt network settings --------------------------------------------
cargo_home=${CARGO_HOME:-$HOME/.cargo}
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
[ -x "$cargo_home/bin/rustup" ] && [ -d "$rustup_home/toolchains" ] ||
  fail "no rustup toolchain in $cargo_home and $rustup_home (the README's precondition)"
if [ -f /etc/apt/sources.list.d/debian.sources ]; then
  sources=/etc/apt/sources.list.d/debian.sources
elif [ -s /etc/apt/sources.list ]; then
  sources=/etc/apt/sources.list
else
  fail "no Debian source in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
fi
mkdir -p "$cache/apt-archives/partial" "$cache/cargo-target"
# Only what reaches the registry (proxies) and how this mirror's Release files are checked.
net_conf=$cache/host-network.conf
apt-config dump | grep -E '^Acquire::(http|https|ftp)::Proxy|^Acquire::Check-(Valid-Until|Date) ' >"$net_conf.new" || true
mv "$net_conf.new" "$net_conf"

# ---- keys: the bootstrapped root, and the pass of these steps ----------------------------------
base_key=$( (echo "$suite minbase v1"; mmdebstrap --version; cat "$sources" "$net_conf") | sha256sum | cut -c1-16)
base=$cache/base-$base_key.tar
pass_key=$( (echo "$base_key"
  cd "$setup_dir" && for f in *; do [ -f "$f" ] && echo "$f $(sha256sum <"$f")"; done
  cd "$root/tests" && sha256sum setup.sh pristine/* qemu/harness.py layer/bbparse.py) | sha256sum | cut -c1-16)
record=$cache/pass-$pass_key
[ "$setup_dir" = "$root/tests/setup.d" ] || record=
if [ -n "$record" ] && [ -f "$record" ] && [ "$force" != 1 ]; then
  echo "pristine: passed (cached $pass_key: $(cat "$record")); FLEET_PRISTINE=1 runs it again"
  exit 0
fi

# The root grows to about 3 GB; dpkg failing half-way for want of space says less than this.
need_kib=$((4 * 1024 * 1024))
free_kib=$(df -Pk "$cache" | awk 'NR == 2 { print $4 }')
[ "$free_kib" -ge "$need_kib" ] ||
  fail "needs 4 GB free in $cache for the root, has $((free_kib / 1024)) MB"

# ---- 1. the pristine root (bootstrapped once per mirror and mmdebstrap) -----------------------
if [ ! -f "$base" ]; then
  say "bootstrapping Debian $suite (minbase) into $base"
  # policy-rc.d: package scripts start no services in a chroot (mosquitto would take :1883).
  dest=etc/apt/sources.list.d/debian.sources
  [ "$sources" = /etc/apt/sources.list ] && dest=etc/apt/sources.list
  if ! FLEET_SOURCES=$sources FLEET_SOURCES_DEST=$dest mmdebstrap --quiet --mode=root --variant=minbase --format=tar \
    --aptopt="$net_conf" \
    --customize-hook='rm -rf "$1/etc/apt/sources.list" "$1/etc/apt/sources.list.d"' \
    --customize-hook='mkdir -p "$1/etc/apt/sources.list.d"; cp "$FLEET_SOURCES" "$1/$FLEET_SOURCES_DEST"' \
    --customize-hook='printf "#!/bin/sh\nexit 101\n" >"$1/usr/sbin/policy-rc.d"; chmod 0755 "$1/usr/sbin/policy-rc.d"' \
    "$suite" "$base.tmp" "$sources" >"$cache/bootstrap.log" 2>&1; then
    tail -n 20 "$cache/bootstrap.log" | sed 's/^/  | /'
    rm -f "$base.tmp"
    fail "mmdebstrap --variant=minbase $suite: see $cache/bootstrap.log"
  fi
  mv "$base.tmp" "$base"
  for old in "$cache"/base-*.tar; do [ "$old" = "$base" ] || rm -f "$old"; done
  say "bootstrapped ($(du -h "$base" | cut -f1))"
fi

work=$cache/root-$$
rm -rf "$work"
mkdir -p "$work"
tar -C "$work" -xf "$base"
# The rustup proxies (cargo, rustc, ...) only: the root installs every cargo tool itself.
mkdir -p "$work/root/.cargo/bin" "$work/root/.rustup"
cp "$cargo_home/bin/rustup" "$work/root/.cargo/bin/"
for f in "$cargo_home"/bin/*; do
  [ -L "$f" ] && [ "$(basename "$(readlink "$f")")" = rustup ] && ln -s rustup "$work/root/.cargo/bin/$(basename "$f")"
done
# A throwaway root needs no fsync after every file dpkg unpacks (mmdebstrap does the same while it
# bootstraps): the installs take half the time on a slow disk. What gets installed is the same.
echo force-unsafe-io >"$work/etc/dpkg/dpkg.cfg.d/fleet-pristine-unsafe-io"
# This machine's own trust anchors (a TLS-inspecting proxy's CA, say) are network settings like
# the apt proxy: ca-certificates in the root picks them up when a step installs it.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$work/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$work/usr/local/share/ca-certificates/"
fi
say "root ready in $work: running every step of ${setup_dir#"$root"/} inside it"

# ---- 2. the steps, then the checks, inside the root --------------------------------------------
log=$cache/last.log
unshare --mount --pid --fork --propagation private -- \
  bash "$here/enter.sh" "$work" "$root" "$setup_dir" "$rustup_home" "$cache" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
took=$(($(date +%s) - started))
if [ "$rc" != 0 ]; then
  line=$(grep -E '^setup FAILED: |^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n1)
  case $line in
    "setup FAILED: "*) finish 1 "pristine: $line" ;;
    *" passed, "*) fail "verify.sh: $line (FAIL lines above)" ;;
    *) fail "the root exited with status $rc after $took s (see $log)" ;;
  esac
fi
steps=$(sed -n 's/^    \([^ ]*\): ok in \([0-9]*\) s$/\1 \2s/p' "$log" | paste -sd, -)
[ -z "$record" ] || echo "$(date -u +%FT%TZ), $took s; steps: $steps" >"$record"
finish 0 "pristine: passed in @TOOK@ s (steps: $steps)"
