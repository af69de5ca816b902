#!/usr/bin/env bash
# Builds the systemd test station of the Raspberry Pi 5 tryboot flow (issue 15) without Yocto, and
# caches it under target/qemu-cache/pi5-<hash of every input>/. Prints that directory last.
#
#   tests/qemu/build-pi5.sh [--firmware-dir DIR] [--machine raspberrypi5|qemuarm64]
#
# --machine qemuarm64 builds the same systemd station for the layer's other machine, whose boot
# flow is U-Boot (BOOT_ORDER and BOOT_x_LEFT in uboot.env): the layer's fleet-qemuarm64.wks.in,
# boot.scr and uboot.env of fleet-uboot-script.bb, system-vda.conf, bootctl-uboot.toml, the kernel
# and an initrd in /boot of each slot (qemuarm64's kernel-image); Debian's U-Boot for QEMU boots it
# (tests/qemu/pi5/uboot.py). Cached as uboot-image-<hash>/.
#
# PID 1 is Debian 12's systemd (arm64, extracted with mmdebstrap: the closest honest substitute for
# the image's). Everything fleet adds comes from meta-fleet at build time, by its recipes' own
# do_install bodies run through tests/qemu/pi5/layer.py with the raspberrypi5 values of the distro:
# fleet-rootfs (mount generator, provisioning, grow-data, machine id, journald and watchdog
# settings), fleet-firmware (units, tmpfiles, bootctl-tryboot.toml, every daemon's image config,
# the reboot path), fleet-rauc-conf (system.conf per medium, keyring, D-Bus policy) and the rauc
# bbappend, fleet-network; the users of fleet-firmware's USERADD_PARAM; the units of the recipes'
# SYSTEMD_SERVICE enabled; fleet-rpi-boot's autoboot.txt, cmdline.txt and bootfs-post-install.
# The disk follows the layer's fleet-rpi5-sd.wks.in and fleet-rpi5-nvme.wks.in (read by layer.py).
# Outputs: disk-mmcblk0.img, disk-nvme0n1.img (slot A 1.0.0, B empty), layout-<disk>.json,
# bundles/good.raucb (2.0.0, rootfs + bootfs), bundles/panic.raucb (2.0.2, its slot panics at
# boot), pki/, virt.dtb, info.json.
# What stands in for what: docs/reference/qemu-harness.md ("The Pi 5 station").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
layer=$root/meta-fleet
cache=${FLEET_QEMU_CACHE:-$root/target/qemu-cache}
fw=${FLEET_QEMU_FIRMWARE_DIR:-${FLEET_QEMU_TARGET_DIR:-$root/target/qemu-arm64}/aarch64-unknown-linux-gnu/release}
machine=raspberrypi5
while [ $# -gt 0 ]; do
  case $1 in
    --firmware-dir) fw=$2; shift 2 ;;
    --machine) machine=$2; shift 2 ;;
    *) echo "qemu-build-pi5: unknown argument $1" >&2; exit 2 ;;
  esac
done
case $machine in
  raspberrypi5) kind=pi5 ;;
  qemuarm64) kind=uboot ;;
  *) echo "qemu-build-pi5: no systemd station for machine $machine" >&2; exit 2 ;;
esac
suite=bookworm
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
packages=systemd,systemd-sysv,udev,dbus,rauc,rauc-service,linux-image-arm64,kmod,util-linux,fdisk,mount,e2fsprogs,dosfstools,coreutils,dash,bash,sed,grep,findutils,procps,base-files,base-passwd,login,passwd,libasound2,libflac12,alsa-utils,mawk,systemd-timesyncd,libc-bin,debianutils,tar,gzip,iproute2,busybox-static
# fleet-image.bb's FLEET_BOOT_FLOW_PACKAGES: the U-Boot flow's machine has fw_printenv/fw_setenv
[ $kind = pi5 ] || packages+=,libubootenv-tool
daemons="fleet fleet-bootctl fleet-updated fleet-recorderd fleet-retentiond fleet-reporterd fleet-uploaderd"
L() { python3 "$here/pi5/layer.py" "$@"; }
log() { echo "qemu-build-pi5 ($machine): $*" >&2; }
mkdir -p "$cache"

# ---- 1. Debian arm64 userland with systemd (cached by package list) --------------------------
ukey=$(printf '%s\n' pi5 "$suite" "$mirror" "$packages" | sha256sum | cut -c1-16)
userland=$cache/pi5-userland-$ukey
if [ ! -f "$userland/.done" ]; then
  log "extracting Debian arm64 packages ($packages)"
  rm -rf "$userland" "$userland.tar"
  mmdebstrap --quiet --mode=root --variant=extract --architectures=arm64 --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    "$suite" "$userland.tar" "deb $mirror $suite main" \
    "deb ${mirror%/debian}/debian-security $suite-security main" >&2
  mkdir -p "$userland"
  tar -C "$userland" -xf "$userland.tar"
  rm -f "$userland.tar"
  # merged /usr, as every systemd image (Yocto's usrmerge, Debian's own installs) has it
  for d in bin sbin lib; do
    if [ -d "$userland/$d" ] && [ ! -L "$userland/$d" ]; then
      mkdir -p "$userland/usr/$d"
      cp -a "$userland/$d/." "$userland/usr/$d/"
      rm -rf "${userland:?}/$d"
      ln -s "usr/$d" "$userland/$d"
    fi
  done
  touch "$userland/.done"
fi
kver=$(basename "$(ls -d "$userland"/usr/lib/modules/*-arm64 | head -n1)")
# No maintainer scripts ran: build the module index the module steps read.
[ -f "$userland/usr/lib/modules/$kver/modules.dep" ] || depmod -b "$userland" "$kver"

# ---- 2. the image key: a hash over every input -------------------------------------------------
for b in $daemons; do
  [ -x "$fw/$b" ] || { log "missing $fw/$b: run tests/qemu/build-firmware.sh"; exit 2; }
done
"$root/keys/gen-dev-pki.sh" "$cache/pki" >/dev/null
# (tests/qemu/pi5 without the harness's own files, flow.py, uboot.py, upkeep.py and wic-compare.sh, and without the
# __pycache__ the harness leaves there: changing a scenario does not rebuild the image)
key=$( (echo "$ukey $kver"; cd "$root" && find meta-fleet bundles tests/qemu/build-pi5.sh tests/qemu/uboot-envflash.py tests/qemu/mksquashfs-args tests/qemu/pi5 keys/gen-dev-pki.sh \
  -type f -not -path '*/__pycache__/*' -not -name flow.py -not -name uboot.py -not -name upkeep.py -not -name wic-compare.sh -print0 |
  sort -z | xargs -0 sha256sum; sha256sum "$cache/pki/ca.cert.pem" "$cache/pki/offer.pub.pem";
  for b in $daemons; do sha256sum "$fw/$b"; done) | sha256sum | cut -c1-16)
key=$(echo "$key $machine" | sha256sum | cut -c1-16)
out=$cache/$kind-image-$key
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
cp -a "$cache/pki" "$out/pki"

# ---- 3. kernel modules: what the Yocto kernel of the Pi builds in or the station loads -------
# (the Debian kernel has them as modules; the initrd loads the disk and file-system ones).
# (xhci_pci, usb_storage, sd_mod: a USB stick on the Pi 5's USB 3 ports, docs/recovery-guide.md
# section 5; udev loads them when QEMU's qemu-xhci and usb-storage are there)
mods="sdhci sdhci_pci mmc_block nvme virtio_pci virtio_blk virtio_net virtio_rng ext4 vfat nls_cp437 nls_iso8859_1 nls_ascii
  loop squashfs dm_mod dm_verity overlay i6300esb af_packet rtc_pl031 snd_aloop xhci_pci usb_storage sd_mod"
initrd_mods="sdhci sdhci_pci mmc_block nvme ext4 vfat nls_cp437 nls_iso8859_1"
[ $kind = pi5 ] || initrd_mods="virtio_pci virtio_blk ext4 vfat nls_cp437 nls_iso8859_1"
ird=$w/initrd
mkdir -p "$ird"/{bin,dev,proc,sys,etc,lib/modules,newroot}
cp "$userland/usr/bin/busybox" "$ird/bin/"
: >"$ird/etc/modules.order"
for m in $(for one in $initrd_mods; do modprobe -d "$userland" -S "$kver" --show-depends "$one"; done |
  awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++'); do
  cp "$m" "$ird/lib/modules/"
  basename "$m" >>"$ird/etc/modules.order"
done
install -m 0755 "$here/pi5/initrd-init" "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$w/initrd.img"

# ---- 4. the root file system -----------------------------------------------------------------
base=$w/rootfs
cp -a "$userland" "$base"
rm -f "$base/.done"
# only the modules above (and their dependencies), so slots and bundles stay small
keep=$(for one in $mods; do modprobe -d "$userland" -S "$kver" --show-depends "$one" 2>/dev/null || true; done |
  awk '$1 == "insmod" { print $2 }' | sed "s,^$userland,," | sort -u)
rm -rf "$base/usr/lib/modules/$kver"
mkdir -p "$base/usr/lib/modules/$kver"
cp "$userland/usr/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$base/usr/lib/modules/$kver/"
for m in $keep; do install -D -m 0644 "$userland$m" "$base$m"; done
depmod -b "$base" "$kver"
rm -rf "$base/boot"/* "$base/var/cache/apt"/* "$base/var/lib/apt/lists"/*
# passwd/group as base-passwd's postinst would make them, then systemd's own sysusers
# (systemd-journal, messagebus...), then the layer's users (fleet-firmware's USERADD_PARAM).
cp "$base/usr/share/base-passwd/passwd.master" "$base/etc/passwd"
cp "$base/usr/share/base-passwd/group.master" "$base/etc/group"
: >"$base/etc/shadow"
: >"$base/etc/gshadow"
chmod 0640 "$base/etc/shadow" "$base/etc/gshadow"
systemd-sysusers --root="$base" >&2
while read -r cmd args; do
  # shellcheck disable=SC2086
  "$cmd" --prefix "$base" $args
done < <(L users "$layer" "$machine")
log "users: $(grep -c fleet "$base/etc/passwd") fleet users from fleet-firmware_git.bb"
# the programs the cargo class installs into ${bindir}
for b in $daemons; do aarch64-linux-gnu-strip -o "$base/usr/bin/$b" "$fw/$b"; done
# the recipes' do_install, with the distro's raspberrypi5 values, each into its own ${D} (as
# BitBake does), then into the root as the packages would be
for r in recipes-core/fleet-rootfs/fleet-rootfs.bb recipes-fleet/fleet-firmware/fleet-firmware_git.bb \
  recipes-core/rauc/fleet-rauc-conf.bb recipes-connectivity/fleet-network/fleet-network.bb; do
  d=$w/image-$(basename "$r" .bb)
  mkdir -p "$d"
  L install "$layer" "$machine" "$r" "$d" "RAUC_KEYRING_FILE=$out/pki/ca.cert.pem" "FLEET_VERSION=1.0.0" >&2 ||
    { log "do_install of $r failed"; exit 1; }
  cp -a "$d/." "$base/"
done
# the rauc bbappend's do_install:append, on RAUC's own files (Debian's rauc-service here)
L install "$layer" "$machine" recipes-core/rauc/rauc_fleet.inc "$base" >&2 || { log "do_install of rauc_fleet.inc failed"; exit 1; }
# RAUC's bbappend removes its permissive D-Bus policy (checked: it must be gone) and the image
# leaves out rauc-mark-good (BAD_RECOMMENDATIONS of fleet-image.bb).
[ ! -e "$base/usr/share/dbus-1/system.d/de.pengutronix.rauc.conf" ] || { log "RAUC's own D-Bus policy is still there"; exit 1; }
rm -f "$base/usr/lib/systemd/system/rauc-mark-good.service"
# Stand-ins for what oe-core brings to a read-only systemd root (volatile-binds, base-files'
# fstab) and what this Debian RAUC (1.8) lacks (the search of /run/rauc/system.conf).
cat >"$base/etc/fstab" <<'EOF'
# stand-in for oe-core's read-only-rootfs: volatile directories in RAM (tests/qemu/build-pi5.sh)
tmpfs /tmp tmpfs mode=1777,nosuid,nodev 0 0
tmpfs /var/tmp tmpfs mode=1777,nosuid,nodev 0 0
tmpfs /var/log tmpfs mode=0755,nosuid,nodev 0 0
tmpfs /var/volatile tmpfs mode=0755,nosuid,nodev 0 0
EOF
cat >"$base/usr/lib/systemd/system/fleet-qemu-var-lib.service" <<'EOF'
# Stand-in for oe-core's volatile-binds on a read-only root: /var/lib writable in RAM (an
# overlay of the image's /var/lib), before anything binds into it (var-lib-systemd.mount).
[Unit]
DefaultDependencies=no
RequiresMountsFor=/var/volatile
Before=local-fs.target var-lib-systemd.mount systemd-tmpfiles-setup.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'mkdir -p /var/volatile/lib /var/volatile/.lib-work && mount -t overlay overlay -o lowerdir=/var/lib,upperdir=/var/volatile/lib,workdir=/var/volatile/.lib-work /var/lib'
[Install]
WantedBy=local-fs.target
EOF
mkdir -p "$base/etc/rauc"
ln -sf /run/rauc/system.conf "$base/etc/rauc/system.conf"
mkdir -p "$base/var/volatile"
# /var/run and /var/lock point into /run (base-files' postinst on Debian, oe-core's base-files):
# GLib programs (rauc) find the system bus at /var/run/dbus/system_bus_socket
rm -rf "$base/var/run" "$base/var/lock"
ln -s ../run "$base/var/run"
ln -s ../run/lock "$base/var/lock"
# shadow entries for the users made above (root without a password: the development image's
# empty-root-password, for the serial console and systemd's emergency shell)
awk -F: '{ print $1 ":" ($1 == "root" ? "" : "*") ":19000:0:99999:7:::" }' "$base/etc/passwd" >"$base/etc/shadow"
awk -F: '{ print $1 ":*::" }' "$base/etc/group" >"$base/etc/gshadow"
: >"$base/etc/machine-id"
echo fleet-station >"$base/etc/hostname"
# The development image's serial-autologin-root (kas/opt/development.yml): the harness types
# on the console. The image's console is ttyAMA10 on a Pi 5, ttyAMA0 on QEMU's virt machine.
mkdir -p "$base/etc/systemd/system/serial-getty@ttyAMA0.service.d"
# (a root shell straight away: without maintainer scripts PAM has no common-* files for login)
# (a shell that has not finished starting when a reboot comes holds the stop for systemd's 90 s
# default: the harness's stand-in, not login's session, so it gets 5 s)
printf '[Service]\nExecStart=\nExecStart=-/sbin/agetty -n -l /bin/bash --noclear --keep-baud 115200 %%I $TERM\nTimeoutStopSec=5s\n' \
  >"$base/etc/systemd/system/serial-getty@ttyAMA0.service.d/autologin.conf"
# Console markers for the harness (test only): the slot and version as soon as the root is up
# (and a test bundle's failing mode, /etc/fleet-qemu-failing), the units once the boot is done.
install -m 0755 "$here/pi5/fleet-qemu-booted" "$base/usr/libexec/fleet-qemu-booted"
cat >"$base/usr/lib/systemd/system/fleet-qemu-booted.service" <<'EOF'
[Unit]
Description=test station: report the slot on the console (tests/qemu/pi5)
DefaultDependencies=no
Before=sysinit.target
[Service]
Type=oneshot
ExecStart=/usr/libexec/fleet-qemu-booted
[Install]
WantedBy=sysinit.target
EOF
# The microphone (test only): snd-aloop fed with a known signal, see fleet-qemu-signal.
install -m 0755 "$here/pi5/fleet-qemu-signal" "$base/usr/libexec/fleet-qemu-signal"
mkdir -p "$base/usr/share/fleet-qemu"
python3 -c 'import math, struct, sys; sys.stdout.buffer.write(b"".join(struct.pack("<h", round(10000 * math.sin(2 * math.pi * i / 48))) for i in range(48000)))' \
  >"$base/usr/share/fleet-qemu/signal-1khz.s16"
cat >"$base/usr/lib/systemd/system/fleet-qemu-signal.service" <<'EOF'
[Unit]
Description=test station: a known signal into the loopback sound card (tests/qemu/pi5)
After=fleet-recorderd.service
[Service]
ExecStartPre=/usr/libexec/fleet-qemu-signal card
ExecStart=/usr/libexec/fleet-qemu-signal play
CPUSchedulingPolicy=fifo
CPUSchedulingPriority=10
Restart=always
RestartSec=2
[Install]
WantedBy=multi-user.target
EOF
# A test bundle's slot with failing mode "hang" hangs in its boot, 10 s after basic.target (PID 1
# has armed the i6300esb by then): a real-time spinner on the one CPU, with the kernel's real-time
# throttling off, starves everything, systemd's watchdog pings too; only the hardware watchdog
# ends this. A one-shot that multi-user.target waits for, so the boot is not up before the hang
# and the health gate, which commits only a system that is up, cannot commit it first (as a
# simple service it let the boot finish, and a quick gate committed B within the 10 s).
cat >"$base/usr/lib/systemd/system/fleet-qemu-hang.service" <<'EOF'
[Unit]
Description=test station: hang when the slot's failing mode says so (tests/qemu/pi5)
[Service]
Type=oneshot
TimeoutStartSec=infinity
ExecCondition=/bin/sh -c 'test "$(cat /etc/fleet-qemu-failing 2>/dev/null)" = hang'
ExecStart=/bin/sh -c 'sleep 10; echo "FLEET-QEMU hanging now" >/dev/console; echo -1 >/proc/sys/kernel/sched_rt_runtime_us; exec chrt -f 99 /bin/sh -c "while :; do :; done"'
[Install]
WantedBy=multi-user.target
EOF
# ... and with failing mode "reboot" the slot reboots itself (a plain reboot, no tryboot flag)
# 1 s after basic.target, before fleet-updated can start its health gate (at 10 s the gate
# committed B while the reboot was under way: see the faults in docs/reference/qemu-harness.md).
cat >"$base/usr/lib/systemd/system/fleet-qemu-reboot.service" <<'EOF'
[Unit]
Description=test station: reboot when the slot's failing mode says so (tests/qemu/pi5)
[Service]
ExecCondition=/bin/sh -c 'test "$(cat /etc/fleet-qemu-failing 2>/dev/null)" = reboot'
ExecStart=/bin/sh -c 'sleep 1; echo "FLEET-QEMU rebooting now" >/dev/console; exec systemctl reboot'
[Install]
WantedBy=multi-user.target
EOF
# ... and with failing mode "reboot-at-gate" it reboots itself (plainly) as soon as fleet-updated's
# health gate has started, while its boot is still under way: a one-shot that multi-user.target
# waits for, so systemd stays `starting` until the reboot makes it `stopping`. The gate commits
# only a system that is up and never one that is stopping (fleet_core::health::gate), so B is
# never committed; before that rule the gate committed whatever its checks saw pass in time.
cat >"$base/usr/lib/systemd/system/fleet-qemu-reboot-at-gate.service" <<'EOF'
[Unit]
Description=test station: reboot as the health gate runs when the slot's failing mode says so (tests/qemu/pi5)
After=fleet-updated.service
[Service]
Type=oneshot
TimeoutStartSec=600
ExecCondition=/bin/sh -c 'test "$(cat /etc/fleet-qemu-failing 2>/dev/null)" = reboot-at-gate'
ExecStart=/bin/sh -c 'until journalctl -b --no-pager -o cat -u fleet-updated | grep -q "health gate starts"; do sleep 0.5; done; echo "FLEET-QEMU rebooting now at the gate" >/dev/console; exec systemctl reboot'
[Install]
WantedBy=multi-user.target
EOF
install -m 0755 "$here/pi5/fleet-qemu-report" "$base/usr/libexec/fleet-qemu-report"
# and, just before the kernel reboots, the reboot argument and the reboot path's journal
install -D -m 0755 "$here/pi5/fleet-qemu-shutdown" "$base/usr/lib/systemd/system-shutdown/fleet-qemu-shutdown"
cat >"$base/usr/lib/systemd/system/fleet-qemu-report.service" <<'EOF'
[Unit]
Description=test station: report the boot on the console (tests/qemu/pi5)
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/libexec/fleet-qemu-report
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
EOF
units=$(L units "$layer" "$machine" recipes-fleet/fleet-firmware/fleet-firmware_git.bb \
  recipes-core/fleet-rootfs/fleet-rootfs.bb recipes-connectivity/fleet-network/fleet-network.bb)
log "enabling the layer's units: $units"
# shellcheck disable=SC2086
systemctl --root="$base" enable $units fleet-qemu-var-lib.service fleet-qemu-report.service fleet-qemu-booted.service fleet-qemu-signal.service fleet-qemu-hang.service fleet-qemu-reboot.service fleet-qemu-reboot-at-gate.service \
  systemd-networkd.service systemd-timesyncd.service dbus.socket >&2 2>/dev/null ||
  systemctl --root="$base" enable $units fleet-qemu-var-lib.service fleet-qemu-report.service fleet-qemu-booted.service fleet-qemu-signal.service fleet-qemu-hang.service fleet-qemu-reboot.service fleet-qemu-reboot-at-gate.service \
    systemd-networkd.service systemd-timesyncd.service dbus.socket >&2
systemctl --root="$base" set-default multi-user.target >&2
# check the shipped configs with the very binaries of the image (qemu-user)
check=$(qemu-aarch64-static -L "$base" "$base/usr/bin/fleet-updated" --config "$base/etc/fleet/updated.toml" --check-config 2>&1) ||
  log "fleet-updated --check-config on the image defaults alone: $check"

# ---- 5. slot images, bundles and the disk ---------------------------------------------------------
ext4opts=(-q -F -O ^metadata_csum_seed,^orphan_file -E root_owner=0:0 -T default)
export E2FSPROGS_FAKE_TIME=1700000000
slot_image() { # version image [failing mode]: the root with fleet-rootfs's /etc/fleet-version
  printf '%s\n' "$1" >"$base/etc/fleet-version"
  # Stand-in: oe-core's os-release with meta-fleet's distro (conf/distro/fleet.conf:
  # DISTRO_VERSION = FLEET_VERSION), not Debian's; `fleet status` reads VERSION_ID from it.
  rm -f "$base/usr/lib/os-release"
  printf 'ID=fleet\nNAME="Fleet station OS"\nVERSION="%s (wrynose)"\nVERSION_ID=%s\nVERSION_CODENAME="wrynose"\nPRETTY_NAME="Fleet station OS %s (wrynose)"\n' \
    "$1" "$1" "$1" >"$base/usr/lib/os-release"
  # a test bundle's slot that fails its trial (fleet-qemu-booted reads it): panic
  rm -f "$base/etc/fleet-qemu-failing"
  [ -z "${3:-}" ] || printf '%s\n' "$3" >"$base/etc/fleet-qemu-failing"
  local kib
  kib=$(du -sk "$base" | cut -f1)
  mkfs.ext4 "${ext4opts[@]}" -L root -U 6d0c4a63-6c2f-4c0b-9a52-0f1ee7000001 -d "$base" "$2" "$((kib * 12 / 10 + 16384))K"
}
cat >"$w/sign.conf" <<EOC
[system]
compatible=fleet-$machine
bootloader=noop

[keyring]
path=$out/pki/ca.cert.pem
check-purpose=codesign
EOC
bundle() { # name version [failing mode]: the slot (on the Pi 5 with its boot partition), signed
  local d=$w/bundle-$1 manifest=qemuarm64
  mkdir -p "$d"
  slot_image "$2" "$d/rootfs.ext4" "${3:-}"
  install -m 0755 "$root/bundles/hooks/install-check" "$d/install-check"
  if [ $kind = pi5 ]; then
    # rootfs + bootfs, the layer's bootfs-post-install (fleet-rpi-boot)
    manifest=rpi5
    bootfs "$w/rpi-mmcblk0/cmdline-a.txt" "$d/boot.vfat"
    install -m 0755 "$rpi/files/bootfs-post-install" "$d/bootfs-post-install"
  fi
  sed -e "s,@COMPATIBLE@,fleet-$machine,g" -e "s,@VERSION@,$2,g" -e "s,@BUILD@,qemu-$1,g" \
    "$root/bundles/station/$manifest.raucm.in" >"$d/manifest.raucm"
  rauc --conf="$w/sign.conf" bundle --cert="$out/pki/dev.cert.pem" --key="$out/pki/dev.key.pem" \
    "--mksquashfs-args=$(cat "$here/mksquashfs-args")" \
    "$d" "$out/bundles/$1.raucb" >"$w/bundle-$1.log" 2>&1 || { cat "$w/bundle-$1.log" >&2; exit 1; }
  rm -rf "$d"
}
finish() {
  rm -rf "$w"
  touch "$out/.done"
  log "built in $(($(date +%s) - started)) s"
  for old in "$cache/$kind"-image-*; do [ "$old" = "$out" ] || rm -rf "$old"; done
  echo "$out"
  exit 0
}

if [ $kind = uboot ]; then
  # qemuarm64's kernel-image: the kernel in /boot of each slot, where boot.scr loads it (with the
  # initrd beside it: the Debian kernel has virtio-blk and ext4 as modules, qemuarm64's Yocto
  # kernel builds them in). Uncompressed, as KERNEL_IMAGETYPE = "Image".
  cp "$userland/boot/vmlinuz-$kver" "$base/boot/Image"
  cp "$w/initrd.img" "$base/boot/initrd.img"
  slot_image 1.0.0 "$w/factory.ext4"
  # fleet-uboot-script's do_compile: boot.scr from boot.cmd.in and the initial uboot.env
  mkdir -p "$w/uboot"
  L install "$layer" "$machine" recipes-bsp/u-boot/fleet-uboot-script.bb "$w/uboot" FUNCS=do_compile "B=$w/uboot" \
    UBOOT_ARCH=arm64 KERNEL_IMAGETYPE=Image FLEET_UBOOT_CONSOLE=ttyAMA0 >&2 || { log "fleet-uboot-script's do_compile failed"; exit 1; }
  log "boot.scr: $(grep -c . "$w/uboot/boot.cmd") lines; uboot.env: $(tail -c +5 "$w/uboot/uboot.env" | tr '\0' '\n' | grep -a '=' | tr '\n' ' ')"
  bundle good 2.0.0
  bundle panic 2.0.2 panic
  bundle mute 2.0.3 mute
  bundle hang 2.0.4 hang
  bundle reboot 2.0.5 reboot
  # the disk from fleet-qemuarm64.wks.in: p1 boot (FAT: IMAGE_BOOT_FILES = boot.scr uboot.env)
  mkfs.vfat -n BOOT -i F1EE0001 -C "$w/boot.vfat" $((64 * 1024)) >/dev/null
  mcopy -i "$w/boot.vfat" "$w/uboot/boot.scr" "$w/uboot/uboot.env" ::/
  mkfs.ext4 "${ext4opts[@]}" -L data -U 6d0c4a63-6c2f-4c0b-9a52-0f1ee7000007 "$w/data.ext4" 256M
  L wks "$layer" "$machine" "$layer/files/wic/fleet-qemuarm64.wks.in" >"$w/wks-vda.json"
  python3 "$here/pi5/disk.py" "$w/wks-vda.json" "$out/disk-vda.img" "$out/layout-vda.json" \
    boot="$w/boot.vfat" root-a="$w/factory.ext4" data="$w/data.ext4" >&2
  # U-Boot's own environment (pflash): Debian's qemu_arm64 defaults with the layer's fleet.cfg
  # (CONFIG_BOOTDELAY=0); its distro boot finds boot.scr on the bootable p1.
  python3 "$here/uboot-envflash.py" "$out/envflash.img" >&2
  cat >"$out/info.json" <<EOJ
{"kernel": "$kver", "compatible": "fleet-$machine", "factory-version": "1.0.0", "machine": "$machine",
 "bundles": {"good": "2.0.0", "panic": "2.0.2", "mute": "2.0.3", "hang": "2.0.4", "reboot": "2.0.5"}}
EOJ
  finish
fi

# fleet-rpi-boot's do_compile: cmdline.txt of each slot (QEMU's console is ttyAMA0, not ttyAMA10)
rpi=$layer/dynamic-layers/raspberrypi/recipes-bsp/fleet-rpi-boot
vars_cmdline=$(sed -n 's/^FLEET_RPI_CMDLINE ??= "\(.*\)"$/\1/p' "$rpi/fleet-rpi-boot.bb")
[ -n "$vars_cmdline" ] || { log "no FLEET_RPI_CMDLINE in fleet-rpi-boot.bb"; exit 1; }
qemu_cmdline=${vars_cmdline//ttyAMA10/ttyAMA0}
for disk in mmcblk0 nvme0n1; do
  mkdir -p "$w/rpi-$disk"
  L install "$layer" "$machine" dynamic-layers/raspberrypi/recipes-bsp/fleet-rpi-boot/fleet-rpi-boot.bb "$w/rpi-$disk" \
    FUNCS=do_compile "B=$w/rpi-$disk" "FLEET_DISK=$disk" "FLEET_RPI_CMDLINE=$qemu_cmdline" >&2
done
log "cmdline.txt (A, SD): $(cat "$w/rpi-mmcblk0/cmdline-a.txt")"
bootfs() { # cmdline.txt -> image (fleet-rpi-boot's do_deploy: 128 MiB FAT, the slot's boot files)
  local img=$2
  rm -f "$img"
  mkfs.vfat -n BOOT -i F1EE0010 -C "$img" 131072 >/dev/null
  cp "$userland/boot/vmlinuz-$kver" "$w/kernel_2712.img"
  # config.txt of the Pi (rpi-bootfiles) names the kernel; on QEMU it also names the initramfs
  # (the Debian kernel needs its modules for the SD host and ext4).
  printf '# test station: the Pi 5 config.txt, read by the harness acting as the firmware\nkernel=kernel_2712.img\ninitramfs initrd.img followkernel\n' >"$w/config.txt"
  mcopy -i "$img" "$w/kernel_2712.img" "$w/initrd.img" "$w/config.txt" ::/
  mcopy -i "$img" "$1" ::/cmdline.txt
}
slot_image 1.0.0 "$w/factory.ext4"

# ---- 6. bundles: rootfs + bootfs, the layer's bootfs-post-install, the repository's hook --------
bundle good 2.0.0
bundle panic 2.0.2 panic
bundle mute 2.0.3 mute
bundle hang 2.0.4 hang
bundle reboot 2.0.5 reboot
bundle reboot-at-gate 2.0.6 reboot-at-gate
# the next release for pi5-delta-update: good's tree with another version, pushed as a delta
bundle good2 2.1.0
rm -f "$base/etc/fleet-qemu-failing"

# ---- 7. the disks, from the layer's wks files --------------------------------------------------
mkfs.vfat -n CONFIG -i F1EE0001 -C "$w/config.vfat" $((64 * 1024)) >/dev/null
mcopy -i "$w/config.vfat" "$rpi/files/autoboot.txt" ::/autoboot.txt
mkfs.vfat -n BOOT-B -i F1EE0003 -C "$w/empty-boot.vfat" $((256 * 1024)) >/dev/null
mkfs.ext4 "${ext4opts[@]}" -L data -U 6d0c4a63-6c2f-4c0b-9a52-0f1ee7000007 "$w/data.ext4" 256M
for disk in mmcblk0 nvme0n1; do
  medium=$([ $disk = mmcblk0 ] && echo sd || echo nvme)
  bootfs "$w/rpi-$disk/cmdline-a.txt" "$w/boot-a.vfat"
  L wks "$layer" "$machine" "$layer/files/wic/fleet-rpi5-$medium.wks.in" >"$w/wks-$disk.json"
  python3 "$here/pi5/disk.py" "$w/wks-$disk.json" "$out/disk-$disk.img" "$out/layout-$disk.json" \
    config="$w/config.vfat" boot-a="$w/boot-a.vfat" boot-b="$w/empty-boot.vfat" \
    root-a="$w/factory.ext4" data="$w/data.ext4" >&2
done

# ---- 8. the machine's device tree, for the firmware's /chosen/bootloader ----------------------
qemu-system-aarch64 -M virt,dumpdtb="$out/virt.dtb" -cpu cortex-a76 -smp 1 -m 1024 -nographic >/dev/null 2>&1

cat >"$out/info.json" <<EOJ
{"kernel": "$kver", "compatible": "fleet-$machine", "factory-version": "1.0.0",
 "bundles": {"good": "2.0.0", "panic": "2.0.2", "mute": "2.0.3", "hang": "2.0.4", "reboot": "2.0.5", "reboot-at-gate": "2.0.6", "good2": "2.1.0"}, "cmdline": "$qemu_cmdline"}
EOJ
finish
