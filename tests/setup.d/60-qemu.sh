#!/usr/bin/env bash
# What the QEMU system tests (tests/qemu/, tests/suites.d/60-qemu.sh) need on a Debian 12 host.
# Idempotent: adds what is missing, changes nothing that is already there.
#  - qemu-system-arm from bookworm-backports: the machine image carries qemu-utils from backports,
#    which breaks bookworm's own qemu-system 7.2; ipxe-qemu for virtio-net-pci's efi-virtio.rom
#    (only a Recommends of qemu-system-arm)
#  - Debian's U-Boot for qemu_arm64, mkimage/mkenvimage, fw_printenv, mtools, dosfstools, debugfs,
#    sfdisk, cpio, modprobe/depmod
#  - mmdebstrap (the arm64 userland and kernel of the test image, extracted without scripts)
#  - the cross toolchain of ../shared/notes: rustc-web with its arm64 standard library, gcc for
#    aarch64 (linker, strip, readelf), qemu-user-static (also runs the image's fleet-updated
#    --check-config)
#  - mosquitto and mosquitto-clients: the broker the guest reaches, and the harness's recorder
#  - the Pi 5 systemd station (tests/qemu/build-pi5.sh): alsa-lib and OpenSSL for aarch64
#    (the cross build of fleet-recorderd and fleet-uploaderd), device-tree-compiler (fdtput: the firmware's /chosen/bootloader), systemd and
#    passwd on the host (systemd-sysusers --root, systemctl --root enable, useradd --prefix)
. "$(dirname "$0")/lib.sh"

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(setup_debian_mirror)
  cat >/etc/apt/sources.list.d/bookworm-backports.sources <<EOS
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  echo "$setup_step: added the bookworm-backports source ($mirror)"
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  echo "$setup_step: added the arm64 architecture"
fi

setup_apt_install -t bookworm-backports qemu-system-arm qemu-utils
pkgs=(ipxe-qemu u-boot-qemu u-boot-tools libubootenv-tool mtools dosfstools e2fsprogs fdisk cpio
  kmod gzip mmdebstrap rauc squashfs-tools openssl mosquitto mosquitto-clients python3
  rustc-web gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross
  libstd-rust-web-dev:arm64 qemu-user-static binutils
  libasound2-dev:arm64 libssl-dev:arm64 device-tree-compiler systemd passwd)
setup_apt_install "${pkgs[@]}"
echo "qemu for the system tests: $(qemu-system-aarch64 --version | head -n1)"
