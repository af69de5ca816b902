#!/usr/bin/env bash
# Builds the QEMU test station (qemu-system-aarch64 -M virt, U-Boot flow) without Yocto, and
# caches it under target/qemu-cache/image-<hash of every input>/. Prints that directory last.
#
#   tests/qemu/build.sh [--firmware-dir DIR]
#
# Inputs: Debian bookworm arm64 packages (kernel, rauc, dbus, libubootenv, busybox) extracted with
# mmdebstrap; the firmware cross-built for aarch64 (fleet-bootctl, fleet-updated, fleet; see
# tests/qemu/build-firmware.sh); meta-fleet's boot.cmd.in, system-vda.conf and bootctl-uboot.toml;
# bundles/station/qemuarm64.raucm.in and bundles/hooks/install-check; the development PKI
# (keys/gen-dev-pki.sh); the guest files in tests/qemu/guest/.
# Outputs (docs/reference/qemu-harness.md): disk.img (pristine station on slot A, 1.0.0),
# envflash.img (U-Boot's own env in pflash: boot boot.scr at once), bundles/*.raucb, pki/, layout.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${FLEET_QEMU_CACHE:-$root/target/qemu-cache}
fw=${FLEET_QEMU_FIRMWARE_DIR:-${FLEET_QEMU_TARGET_DIR:-$root/target/qemu-arm64}/aarch64-unknown-linux-gnu/release}
[ "${1:-}" = --firmware-dir ] && fw=$2
suite=bookworm
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
packages=linux-image-arm64,rauc,libubootenv-tool,busybox-static,dbus-daemon,kmod
compatible=fleet-qemuarm64
log() { echo "qemu-build: $*" >&2; }
mkdir -p "$cache"

# ---- 1. Debian arm64 userland and kernel (cached by package list) ----------------------------
ukey=$(printf '%s\n' "$suite" "$mirror" "$packages" | sha256sum | cut -c1-16)
userland=$cache/userland-$ukey
if [ ! -f "$userland/.done" ]; then
  log "extracting Debian arm64 packages ($packages)"
  rm -rf "$userland" "$userland.tar"
  mmdebstrap --quiet --mode=root --variant=extract --architectures=arm64 --include="$packages" \
    "$suite" "$userland.tar" "deb $mirror $suite main" \
    "deb ${mirror%/debian}/debian-security $suite-security main" >&2
  mkdir -p "$userland"
  tar -C "$userland" -xf "$userland.tar"
  rm -f "$userland.tar"
  # No maintainer scripts ran: build the module index the initrd step reads.
  depmod -b "$userland" "$(basename "$(ls -d "$userland"/lib/modules/*-arm64 | head -n1)")"
  touch "$userland/.done"
fi
kver=$(basename "$(ls -d "$userland"/lib/modules/*-arm64 | head -n1)")
[ -f "$userland/lib/modules/$kver/modules.dep" ] || depmod -b "$userland" "$kver"

# ---- 2. the image key: a hash over every input -------------------------------------------------
for b in fleet-bootctl fleet-updated fleet; do
  [ -x "$fw/$b" ] || { log "missing $fw/$b: run tests/qemu/build-firmware.sh"; exit 2; }
done
# The development PKI is shared by every image (kept across input changes); its CA and offer key
# go into the image, so they are inputs too.
"$root/keys/gen-dev-pki.sh" "$cache/pki" >/dev/null
inputs=(
  "$here/build.sh" "$here/uboot-envflash.py" "$here/mksquashfs-args" "$here"/guest/* "$cache/pki/ca.cert.pem" "$cache/pki/offer.pub.pem"
  "$root/meta-fleet/recipes-bsp/u-boot/files/boot.cmd.in"
  "$root/meta-fleet/recipes-core/rauc/files/system-vda.conf"
  "$root/meta-fleet/recipes-fleet/fleet-firmware/files/bootctl-uboot.toml"
  "$root/bundles/station/qemuarm64.raucm.in" "$root/bundles/hooks/install-check"
  "$root/keys/gen-dev-pki.sh"
  "$fw/fleet-bootctl" "$fw/fleet-updated" "$fw/fleet"
)
key=$( (echo "$ukey $kver"; sha256sum "${inputs[@]}" | cut -d' ' -f1) | sha256sum | cut -c1-16)
out=$cache/image-$key
if [ -f "$out/.done" ]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi
log "building $out"
started=$(date +%s)
rm -rf "$out"
mkdir -p "$out/work" "$out/bundles"
w=$out/work

# ---- 3. development PKI (made above) --------------------------------------------------------
cp -a "$cache/pki" "$out/pki"

# ---- 4. initrd: busybox and the modules the kernel needs before root is mounted -------------
ird=$w/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,etc,lib/modules,newroot}
cp "$userland/bin/busybox" "$ird/bin/"
: >"$ird/etc/modules.order"
modules="virtio_pci virtio_blk virtio_net ext4 vfat nls_cp437 nls_iso8859-1 nls_ascii loop squashfs dm_verity i6300esb nvme"
for m in $(modprobe -d "$userland" -S "$kver" --show-depends -a $modules |
  awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++'); do
  cp "$m" "$ird/lib/modules/"
  name=$(basename "$m")
  case $name in i6300esb.ko) echo "$name heartbeat=10" ;; *) echo "$name" ;; esac >>"$ird/etc/modules.order"
done
install -m 0755 "$here/guest/initrd-init" "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$w/initrd.img"

# ---- 5. the root file system shared by every slot image -------------------------------------
base=$w/rootfs
mkdir -p "$base"/{bin,sbin,usr/bin,usr/sbin,usr/lib/aarch64-linux-gnu,lib,etc,proc,sys,dev,run,tmp,data,root,boot/firmware,var}
ln -s /run "$base/var/run"
ln -s usr/lib/aarch64-linux-gnu "$base/lib/aarch64-linux-gnu"
ln -s usr/lib "$base/lib64"
cp "$userland/bin/busybox" "$base/bin/busybox"
for applet in $("$userland/bin/busybox" --list 2>/dev/null || qemu-aarch64-static "$userland/bin/busybox" --list); do
  [ -e "$base/bin/$applet" ] || ln -s busybox "$base/bin/$applet"
done
# Programs from Debian and every shared library they need (readelf, recursively).
need() { readelf -d "$1" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
declare -A have=()
copy_libs() {
  local lib path
  for lib in $(need "$1"); do
    [ -n "${have[$lib]:-}" ] && continue
    have[$lib]=1
    path=$(ls "$userland"/usr/lib/aarch64-linux-gnu/"$lib" "$userland"/lib/aarch64-linux-gnu/"$lib" 2>/dev/null | head -n1 || true)
    [ -n "$path" ] || { log "library $lib (for $1) not found"; exit 1; }
    cp -L "$path" "$base/usr/lib/aarch64-linux-gnu/$lib"
    copy_libs "$path"
  done
}
for prog in usr/bin/rauc usr/bin/dbus-daemon usr/bin/dbus-send usr/bin/fw_printenv usr/bin/fw_setenv; do
  cp -L "$userland/$prog" "$base/$prog"
  copy_libs "$userland/$prog"
done
cp -L "$userland/lib/ld-linux-aarch64.so.1" "$base/lib/ld-linux-aarch64.so.1"
for b in fleet-bootctl fleet-updated fleet; do
  aarch64-linux-gnu-strip -o "$base/usr/bin/$b" "$fw/$b"
  copy_libs "$base/usr/bin/$b"
done
# Configuration, as meta-fleet installs it.
mkdir -p "$base/etc/fleet" "$base/etc/rauc" "$base/usr/lib/fleet/rauc" "$base/usr/lib/rauc" \
  "$base/etc/fleet-qemu" "$base/usr/lib/fleet-qemu" "$base/etc/fleet-test"
# RAUC: system-vda.conf with the distro's values. On this image fleet-bootctl is RAUC's backend
# (bootloader=custom), as docs/boot-flows.md specifies for both flows: the FLEET_TRIAL marker
# that tells a trial boot from a normal one is written by fleet-bootctl, not by fw_setenv.
sed -e "s,@FLEET_COMPATIBLE@,$compatible,g" -e 's,@FLEET_DATA_DIR@,/data,g' \
  -e 's,@FLEET_BOOT_ATTEMPTS@,3,g' \
  -e 's,^bootloader=uboot$,bootloader=custom,' \
  "$root/meta-fleet/recipes-core/rauc/files/system-vda.conf" >"$w/system-vda.conf"
# RAUC mounts bundles under mountprefix, /mnt/rauc by default: on a read-only root that fails
# ("Failed creating mount path"), so point it at /run unless the source already does.
grep -q '^mountprefix=' "$w/system-vda.conf" ||
  sed -i 's,^\[system\]$,[system]\nmountprefix=/run/rauc/mnt,' "$w/system-vda.conf"
grep -q '^bootloader-custom-backend=' "$w/system-vda.conf" ||
  printf '\n[handlers]\nbootloader-custom-backend=/usr/bin/fleet-bootctl\n' >>"$w/system-vda.conf"
install -m 0644 "$w/system-vda.conf" "$base/usr/lib/fleet/rauc/system-vda.conf"
ln -s /run/rauc/system.conf "$base/etc/rauc/system.conf"
install -m 0644 "$out/pki/ca.cert.pem" "$base/usr/lib/rauc/ca.cert.pem"
sed -e 's,@DATADIR@,/data,g' -e 's,@ATTEMPTS@,3,g' \
  "$root/meta-fleet/recipes-fleet/fleet-firmware/files/bootctl-uboot.toml" >"$base/etc/fleet/bootctl.toml"
install -m 0644 "$here/guest/fw_env.config" "$base/etc/fw_env.config"
install -m 0644 "$here/guest/dbus-system.conf" "$base/etc/fleet-qemu/dbus-system.conf"
install -m 0755 "$here/guest/fleet-init" "$base/sbin/fleet-init"
install -m 0755 "$here/guest/station-reboot" "$base/usr/sbin/station-reboot"
install -m 0755 "$here/guest/request-reboot" "$base/usr/lib/fleet-qemu/"
# fleet-updated: the broker forwarded from the host, RAUC, the U-Boot flow, the health gate; the
# development offer key as its trusted key (the harness pushes with its private half).
offer_pub=$(openssl pkey -pubin -in "$out/pki/offer.pub.pem" -outform DER | tail -c 32 | od -An -tx1 | tr -d ' \n')
[ ${#offer_pub} = 64 ] || { log "unable to read the offer public key"; exit 1; }
sed -e "s,@TRUSTED_KEY@,$offer_pub,g" -e "s,@COMPATIBLE@,$compatible,g" \
  "$here/guest/updated.toml.in" >"$base/etc/fleet/updated.toml"
# --check-config with the very binary that goes into the image (qemu-user), with the paths that
# exist only in the guest pointed at their copies here.
echo "qemu-check" >"$w/device-id"
sed -e "s,^device-id-file = .*,device-id-file = \"$w/device-id\"," \
  -e "s,^bootctl-config = .*,bootctl-config = \"$base/etc/fleet/bootctl.toml\"," \
  "$base/etc/fleet/updated.toml" >"$w/updated-check.toml"
if ! check=$(qemu-aarch64-static -L "$userland" "$base/usr/bin/fleet-updated" \
  --config "$w/updated-check.toml" --check-config 2>&1); then
  log "fleet-updated --check-config refused tests/qemu/guest/updated.toml.in: $check"
  exit 1
fi
log "fleet-updated --check-config: ok"
echo "root:x:0:0:root:/root:/bin/sh" >"$base/etc/passwd"
echo "root:x:0:" >"$base/etc/group"
echo "0123456789abcdef0123456789abcdef" >"$base/etc/machine-id"
# Debian's arm64 vmlinuz is an uncompressed Image (32 MiB); gzip it (booti inflates it through
# kernel_comp_addr_r, set in U-Boot's own env below) to keep slots and installs small.
gzip -6 -n -c "$userland/boot/vmlinuz-$kver" >"$base/boot/Image"
cp "$w/initrd.img" "$base/boot/initrd.img"

# ---- 6. slot images: 1.0.0 for slot A, and one bundle per test image ---------------------------
ext4opts=(-q -F -O ^metadata_csum_seed,^orphan_file -E root_owner=0:0 -T default)
export E2FSPROGS_FAKE_TIME=1700000000
slot_image() { # name version mode -> $w/<name>.ext4
  local tree=$w/tree-$1
  rm -rf "$tree"
  cp -a "$base" "$tree"
  echo "$2" >"$tree/etc/fleet-version"
  printf 'ID=fleet\nNAME="fleet QEMU test station"\nVERSION_ID=%s\n' "$2" >"$tree/etc/os-release"
  [ "$3" = healthy ] || echo "$3" >"$tree/etc/fleet-test/mode"
  local kib
  kib=$(du -sk "$tree" | cut -f1)
  mkfs.ext4 "${ext4opts[@]}" -L "root-$1" -d "$tree" "$w/$1.ext4" "$((kib * 11 / 10 + 4096))K"
  rm -rf "$tree"
}
slot_image factory 1.0.0 healthy
cat >"$w/sign.conf" <<EOC
[system]
compatible=$compatible
bootloader=noop

[keyring]
path=$out/pki/ca.cert.pem
check-purpose=codesign
EOC
bundle() { # name version mode
  slot_image "$1" "$2" "$3"
  local d=$w/bundle-$1
  mkdir -p "$d"
  mv "$w/$1.ext4" "$d/rootfs.ext4"
  sed -e "s,@COMPATIBLE@,$compatible,g" -e "s,@VERSION@,$2,g" -e "s,@BUILD@,qemu-$1,g" \
    "$root/bundles/station/qemuarm64.raucm.in" >"$d/manifest.raucm"
  install -m 0755 "$root/bundles/hooks/install-check" "$d/install-check"
  rauc --conf="$w/sign.conf" bundle --cert="$out/pki/dev.cert.pem" --key="$out/pki/dev.key.pem" \
    "--mksquashfs-args=$(cat "$here/mksquashfs-args")" "$d" "$out/bundles/$1.raucb" >"$w/bundle-$1.log" 2>&1 || { cat "$w/bundle-$1.log" >&2; exit 1; }
  rm -rf "$d"
}
bundle good 2.0.0 healthy
bundle reboot 2.0.1 reboot
bundle panic 2.0.2 panic
bundle hang 2.0.3 hang
bundle unhealthy 2.0.4 unhealthy
# The next release after good: the same tree with another version, pushed as a delta from good.
bundle good2 2.1.0 healthy

# ---- 7. boot partition: boot.scr from meta-fleet's source, a fresh uboot.env ------------------
sed -e 's/@@BOOT_DEVTYPE@@/virtio/g' -e 's/@@BOOT_DEVNUM@@/0/g' \
  -e 's/@@ROOT_DISK@@/vda/g' -e 's/@@ROOT_PART_PREFIX@@//g' \
  -e 's/@@BOOT_ATTEMPTS@@/3/g' -e 's/@@CONSOLE@@/ttyAMA0/g' \
  -e 's/@@KERNEL_IMAGETYPE@@/Image/g' -e 's/@@ENV_SIZE@@/0x4000/g' \
  "$root/meta-fleet/recipes-bsp/u-boot/files/boot.cmd.in" >"$w/boot.cmd"
if grep -q '@@' "$w/boot.cmd"; then log "boot.cmd.in has placeholders this build does not know"; exit 1; fi
mkimage -A arm64 -T script -C none -n "fleet A/B boot script" -d "$w/boot.cmd" "$w/boot.scr" >/dev/null
printf 'BOOT_ORDER=A B\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n' >"$w/uboot-env.txt"
mkenvimage -s 0x4000 -o "$w/uboot.env" "$w/uboot-env.txt"
mkfs.vfat -C -n BOOT "$w/boot.vfat" $((16 * 1024)) >/dev/null
mcopy -i "$w/boot.vfat" "$w/boot.scr" "$w/uboot.env" ::/

# ---- 8. the disk: p1 boot, p2 root-a, p3 root-b, p4 data (docs/adr/0001-boot-flow.md) ----------
slot_mib=$(($(stat -c %s "$w/factory.ext4") / 1048576 + 24))
mkfs.ext4 "${ext4opts[@]}" -L data "$w/data.ext4" 192M
cat >"$w/sfdisk.txt" <<EOS
label: dos
unit: sectors
start=2048, size=16MiB, type=c, bootable
size=${slot_mib}MiB, type=83
size=${slot_mib}MiB, type=83
size=192MiB, type=83
EOS
truncate -s $((2 + 16 + 2 * slot_mib + 192 + 1))M "$out/disk.img"
sfdisk -q "$out/disk.img" <"$w/sfdisk.txt"
sfdisk -J "$out/disk.img" | python3 -c '
import json, sys
parts = json.load(sys.stdin)["partitiontable"]["partitions"]
names = ["boot", "root-a", "root-b", "data"]
print(json.dumps({n: {"start": p["start"] * 512, "size": p["size"] * 512} for n, p in zip(names, parts)}, indent=1))
' >"$out/layout.json"
put() { # partition-index image
  local start
  start=$(sfdisk -J "$out/disk.img" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$1 - 1]['start'])")
  dd if="$2" of="$out/disk.img" bs=512 seek="$start" conv=notrunc,sparse status=none
}
put 1 "$w/boot.vfat"
put 2 "$w/factory.ext4"
put 4 "$w/data.ext4"

# ---- 9. U-Boot's own environment (pflash): no delay, straight to boot.scr ----------------------
# Debian's qemu_arm64 U-Boot keeps its env in the second pflash; the station's A/B state is not
# there but in uboot.env on p1, which boot.scr loads and saves itself.
python3 "$here/uboot-envflash.py" "$out/envflash.img" --script-at-once

cat >"$out/info.json" <<EOJ
{"kernel": "$kver", "compatible": "$compatible", "factory-version": "1.0.0",
 "bundles": {"good": "2.0.0", "reboot": "2.0.1", "panic": "2.0.2", "hang": "2.0.3", "unhealthy": "2.0.4", "good2": "2.1.0"},
 "slot-mib": $slot_mib}
EOJ
rm -rf "$w"
touch "$out/.done"
log "built in $(($(date +%s) - started)) s: slot images ${slot_mib} MiB"
# Keep the cache small: the previous images are of no further use.
for old in "$cache"/image-*; do [ "$old" = "$out" ] || rm -rf "$old"; done
echo "$out"
