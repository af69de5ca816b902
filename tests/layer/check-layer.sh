#!/usr/bin/env bash
# The layer check of meta-fleet.
#
# Registry-only tier (always; needs only the packages tests/setup.d/50-layer.sh installs):
#   real BitBake parser over every recipe, append, include, class and conf file; oelint-adv with
#   the committed suppression list; crate list vs Cargo.lock; kas files vs kas's schema; wks vs
#   RAUC system.conf vs fleet-rootfs partition numbers; layer hygiene as yocto-check-layer wants it.
# Deeper tier (only with FLEET_UPSTREAM=<dir> holding bitbake/, openembedded-core/,
#   meta-raspberrypi/ and meta-rauc/ checkouts; SKIP otherwise; never fetches anything):
#   bitbake -p, -e, -g and -S none for fleet-image and fleet-bundle, per machine (also
#   meta-openembedded/ since fleet-network needs meta-oe's ModemManager).
#
#   LAYER=<dir>        layer to check (default: meta-fleet of this repository)
#   FLEET_LAYER_VENV   python venv with the tools (default /opt/fleet/layer-venv)
#   FLEET_UPSTREAM     upstream checkouts for the deeper tier
#   FLEET_BBUSER       unprivileged user bitbake runs as when this script runs as root (yoctoci)
# Prints one line per check and a last line "N passed, N failed, N skipped".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
layer=$(cd "${LAYER:-$root/meta-fleet}" && pwd)
venv=${FLEET_LAYER_VENV:-/opt/fleet/layer-venv}
py=$venv/bin/python
pass=0; fail=0; skip=0
ok()  { echo "PASS: $*"; pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
skp() { echo "SKIP: $*"; skip=$((skip + 1)); }
run() { # name, command...: the command's output is shown only when it fails
  local name=$1; shift
  local out
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name"; echo "$out" | grep -v '^ok ' | sed 's/^/    /' | head -40; fi
}

if [ ! -x "$py" ]; then
  bad "tools: no venv at $venv (run tests/setup.d/50-layer.sh)"
  echo "$pass passed, $fail failed, $skip skipped"; exit 1
fi

run "bitbake parser: every recipe, append and conf file" "$py" "$here/bbparse.py" "$layer"
mapfile -t recipes < <(find "$layer" \( -name '*.bb' -o -name '*.bbappend' -o -name '*_fleet.inc' \) | sort)
mapfile -t suppress < <(grep -o '^oelint[^ ]*' "$here/oelint-suppressions.txt" | sed 's/^/--suppress=/')
run "oelint-adv (wrynose, committed suppressions)" \
  "$venv/bin/oelint-adv" --release wrynose --quiet --relpaths --jobs 1 "${suppress[@]}" "${recipes[@]}"
inc=$(find "$layer" -name 'fleet-firmware-crates.inc' | head -1)
run "crate list matches Cargo.lock" "$py" "$here/gen-crates.py" --check --lock "${CARGO_LOCK:-$root/Cargo.lock}" --out "${inc:-$layer/missing-crates.inc}"
mapfile -t kasfiles < <(find "${KAS_DIR:-$root/kas}" -name '*.yml' | sort)
run "kas files against kas's schema, upstream pinned" "$py" "$here/layercheck.py" kas "${kasfiles[@]}"
run "wks partitions vs RAUC system.conf vs fleet-rootfs" "$py" "$here/layercheck.py" layout "$layer"
run "layer hygiene (yocto-check-layer rules, gated appends)" "$py" "$here/layercheck.py" hygiene "$layer"

# The configuration files the image ships, checked by the daemons that read them (when built:
# CI's cargo test builds them into target/debug; FLEET_BIN_DIR points elsewhere).
bindir=${FLEET_BIN_DIR:-$root/target/debug}
files=$layer/recipes-fleet/fleet-firmware/files
# The image defaults of recorderd and updated lack the station's settings on purpose: their
# check must say "incomplete" (exit 3: the daemon starts and waits), never "invalid" (2).
# tests/layer/test-runtime.sh checks them again with a provisioned station's settings.
incomplete() { "$@"; [ $? = 3 ]; }
for pair in fleet-bootctl:bootctl-tryboot.toml fleet-bootctl:bootctl-uboot.toml fleet-retentiond:retentiond.toml \
            fleet-recorderd:recorderd.toml fleet-updated:updated.toml \
            fleet-uploaderd:uploaderd.toml; do
  bin=${pair%%:*}; conf=${pair#*:}
  if [ ! -x "$bindir/$bin" ]; then skp "$conf: $bin not built in $bindir"; continue; fi
  tmpconf=$(mktemp --suffix=.toml)
  sed -e 's,@DATADIR@,/data,g' -e 's,@ATTEMPTS@,3,g' -e 's,@LIBEXECDIR@,/usr/libexec,g' \
      -e 's,@COMPATIBLE@,fleet-qemuarm64,g' -e 's,@BOOT_FLOW@,uboot,g' "$files/$conf" > "$tmpconf"
  case $conf in
    recorderd.toml | updated.toml)
      run "$conf (image defaults) is incomplete, not invalid, for $bin --check-config" \
        incomplete "$bindir/$bin" --config "$tmpconf" --check-config ;;
    *) run "$conf passes $bin --check-config" "$bindir/$bin" --config "$tmpconf" --check-config ;;
  esac
  rm -f "$tmpconf"
done

# ------------------------------------------------------------------------------ deeper tier
up=${FLEET_UPSTREAM:-}
if [ -z "$up" ]; then
  skp "deeper tier (bitbake): FLEET_UPSTREAM not set"
elif [ ! -d "$up/bitbake" ] || [ ! -d "$up/openembedded-core" ] || [ ! -d "$up/meta-rauc" ] \
     || [ ! -d "$up/meta-openembedded/meta-oe" ]; then
  skp "deeper tier (bitbake): $up lacks bitbake/, openembedded-core/, meta-rauc/ or meta-openembedded/"
else
  work=${FLEET_LAYER_WORK:-/tmp/fleet-layer-check}
  mkdir -p "$work"
  for d in bitbake openembedded-core meta-raspberrypi meta-rauc meta-openembedded; do
    [ -d "$up/$d/.git" ] && echo "upstream $d $(git -C "$up/$d" rev-parse HEAD)"
  done
  runas=(bash -c)
  if [ "$(id -u)" = 0 ]; then   # oe-core's sanity class refuses to run bitbake as root
    user=${FLEET_BBUSER:-yoctoci}
    id "$user" >/dev/null 2>&1 || useradd -m "$user"
    chown -R "$user" "$work"
    runas=(runuser -u "$user" -- bash -c)
  fi
  srcrev=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo 0000000000000000000000000000000000000000)
  devkeys=$work/keys
  [ -s "$devkeys/ca.cert.pem" ] || bash "$root/keys/gen-dev-pki.sh" "$devkeys" >/dev/null 2>&1
  [ "$(id -u)" = 0 ] && chown -R "$user" "$work"
  for machine in ${FLEET_MACHINES:-qemuarm64 raspberrypi5}; do
    b=$work/build-$machine
    mkdir -p "$b/conf"
    layers="$up/openembedded-core/meta $up/meta-openembedded/meta-oe $up/meta-rauc $layer"
    [ "$machine" = raspberrypi5 ] && layers="$up/openembedded-core/meta $up/meta-openembedded/meta-oe $up/meta-raspberrypi $up/meta-rauc $layer"
    printf 'BBPATH = "${TOPDIR}"\nBBFILES ?= ""\nBBLAYERS = "%s"\n' "$layers" > "$b/conf/bblayers.conf"
    cat > "$b/conf/local.conf" <<CONF
MACHINE = "$machine"
DISTRO = "fleet"
CONF_VERSION = "2"
BB_NO_NETWORK = "1"
INHERIT:remove = "uninative"
FLEET_SRCREV = "$srcrev"
FLEET_GIT_URL = "$root"
RAUC_KEYRING_FILE = "$devkeys/ca.cert.pem"
RAUC_CERT_FILE = "$devkeys/dev.cert.pem"
RAUC_KEY_FILE = "$devkeys/dev.key.pem"
LICENSE_FLAGS_ACCEPTED = "synaptics-killswitch"
CONF
    [ "$(id -u)" = 0 ] && chown -R "$user" "$b"
    bb=". '$up/openembedded-core/oe-init-build-env' '$b' >/dev/null && export PATH='$up/bitbake/bin':\$PATH &&"
    if "${runas[@]}" "$bb bitbake -p" > "$b/parse.log" 2>&1 && ! grep -q '^ERROR' "$b/parse.log"; then
      ok "$machine: bitbake -p parses every recipe with no error"
    else bad "$machine: bitbake -p"; grep -E '^(ERROR|WARNING)' "$b/parse.log" | head -20 | sed 's/^/    /'; fi
    if "${runas[@]}" "$bb bitbake -e fleet-image" > "$b/env.txt" 2> "$b/e.log"; then
      ok "$machine: bitbake -e fleet-image"
      grep -E '^(DISTRO_FEATURES|IMAGE_FEATURES|WKS_FULL_PATH|IMAGE_FSTYPES)=' "$b/env.txt" | cut -c1-160 | sed 's/^/    /'
    else bad "$machine: bitbake -e fleet-image"; tail -15 "$b/e.log" | sed 's/^/    /'; fi
    if "${runas[@]}" "cd '$b' && $bb bitbake -g fleet-image" > "$b/g.log" 2>&1; then
      ok "$machine: bitbake -g fleet-image"
      want="fleet-firmware fleet-rootfs fleet-rauc-conf rauc virtual/kernel"
      [ "$machine" = raspberrypi5 ] && want="$want linux-raspberrypi rpi-bootfiles fleet-rpi-boot" || want="$want linux-yocto fleet-uboot-script u-boot"
      for p in $want; do
        [ "$p" = virtual/kernel ] && continue
        if grep -qx "$p" "$b/pn-buildlist"; then ok "$machine: image graph has $p"; else bad "$machine: image graph lacks $p"; fi
      done
    else bad "$machine: bitbake -g fleet-image"; grep ERROR "$b/g.log" | head -10 | sed 's/^/    /'; fi
    for target in fleet-image fleet-bundle; do
      if "${runas[@]}" "$bb bitbake -S none $target" > "$b/S-$target.log" 2>&1; then
        ok "$machine: every task signature of $target computes"
      else bad "$machine: bitbake -S none $target"; grep ERROR "$b/S-$target.log" | head -10 | sed 's/^/    /'; fi
    done
    "${runas[@]}" "$bb bitbake -m" >/dev/null 2>&1 || true   # stop the bitbake server we started
  done
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
