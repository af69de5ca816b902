#!/usr/bin/env bash
# Checks the disk layout the Pi 5 test station is built with (layer.py wks + disk.py) against what
# wic makes of the same .wks files: the partition table (disk id, every partition's number, start,
# size, type and boot flag) must be the same. wic runs without BitBake: the .wks expanded by
# `layer.py expand` (the variables of fleet-image.bb), the per-label IMAGE_BOOT_FILES of
# fleet-image_fleet.inc given in a --vars file, tiny stand-ins for the boot files and the root,
# the host's tools as the native sysroot. Not part of the suite: it needs a wic checkout.
#
#   FLEET_WIC=<wic script> [FLEET_WIC_PYTHONPATH=<bitbake/lib>] tests/qemu/pi5/wic-compare.sh
#
# wic was in openembedded-core's scripts/ until it moved to its own repository (wrynose, the
# release kas/base.yml pins, builds it as wic 0.3.1); an oe-core checkout from before that move
# needs bitbake's lib/ on PYTHONPATH (for its `bb` and `oe` modules) and parted on the host.
# Prints both tables and "same layout" or the differences; exit 1 on a difference.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
layer=$root/meta-fleet
wic=${FLEET_WIC:?set FLEET_WIC to the wic script of an openembedded-core or wic checkout}
command -v parted >/dev/null || { echo "wic-compare: wic needs parted on the host" >&2; exit 2; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fleet-wic.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/deploy/fleet" "$tmp/rootfs" "$tmp/vars" "$tmp/build"
echo "[all]" >"$tmp/deploy/fleet/autoboot.txt"
for f in kernel_2712.img config.txt fleet/cmdline-a.txt fleet/cmdline-b.txt; do echo "$f" >"$tmp/deploy/$f"; done
echo station >"$tmp/rootfs/etc-fleet-version"
inc=$layer/dynamic-layers/raspberrypi/recipes-core/images/fleet-image_fleet.inc
# fleet-image_fleet.inc's IMAGE_BOOT_FILES_label-*, with FLEET_RPI_BOOT_FILES as the two files above
sed -n 's/^\(IMAGE_BOOT_FILES_label-[a-z-]*\):raspberrypi5 = "\(.*\)"$/\1="\2"/p' "$inc" |
  sed 's/\${FLEET_RPI_BOOT_FILES}/kernel_2712.img config.txt/' >"$tmp/vars/fleet-image.env"
[ "$(grep -c . "$tmp/vars/fleet-image.env")" = 3 ] || { echo "wic-compare: IMAGE_BOOT_FILES_label-* not found in $inc" >&2; exit 2; }
printf 'DEPLOY_DIR_IMAGE="%s"\nIMAGE_ROOTFS="%s"\n' "$tmp/deploy" "$tmp/rootfs" >>"$tmp/vars/fleet-image.env"
cat >"$tmp/table.py" <<'EOF'
import json, sys
t = json.load(sys.stdin)["partitiontable"]
print("disk-id", t["id"])
for p in t["partitions"]:
    n = p["node"][len(sys.argv[1]):]
    boot = " boot" if p.get("bootable") else ""
    print(f"p{n} start={p['start']} size={p['size']} type={p['type']}{boot}")
EOF
table() { # image -> the disk id, then one line per partition
  sfdisk -J "$1" | python3 "$tmp/table.py" "$1"
}
rc=0
for medium in sd nvme; do
  wks_in=$layer/files/wic/fleet-rpi5-$medium.wks.in
  python3 "$here/layer.py" expand "$layer" raspberrypi5 "$wks_in" >"$tmp/fleet-rpi5-$medium.wks"
  rm -rf "$tmp/out"
  BUILDDIR=$tmp/build PYTHONPATH=${FLEET_WIC_PYTHONPATH:-} "$wic" create "$tmp/fleet-rpi5-$medium.wks" \
    -e fleet-image --vars "$tmp/vars" -o "$tmp/out" -r "$tmp/rootfs" -b "$tmp/deploy" -k "$tmp/deploy" -n / \
    >"$tmp/wic-$medium.log" 2>&1 || { cat "$tmp/wic-$medium.log" >&2; exit 2; }
  wic_img=$(ls "$tmp"/out/*.direct)
  python3 "$here/layer.py" wks "$layer" raspberrypi5 "$wks_in" >"$tmp/wks-$medium.json"
  python3 "$here/disk.py" "$tmp/wks-$medium.json" "$tmp/ours-$medium.img" "$tmp/ours-$medium.json" >/dev/null
  table "$wic_img" >"$tmp/wic-$medium.table"
  table "$tmp/ours-$medium.img" >"$tmp/ours-$medium.table"
  echo "== $medium ($(basename "$wks_in")): wic $(stat -c %s "$wic_img") bytes, disk.py $(stat -c %s "$tmp/ours-$medium.img") bytes"
  if diff -u --label wic --label disk.py "$tmp/wic-$medium.table" "$tmp/ours-$medium.table"; then
    sed 's/^/  /' "$tmp/wic-$medium.table"
    echo "same layout"
  else
    rc=1
  fi
  rm -f "$wic_img" "$tmp"/out/* "$tmp/ours-$medium.img"
done
exit $rc
