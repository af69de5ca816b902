#!/usr/bin/env bash
# What the QEMU system tests (tests/qemu/, tests/suites.d/60-qemu.sh) need on a Debian 12 host.
# Idempotent: adds what is missing, changes nothing that is already there.
#  - qemu-system-arm from bookworm-backports: the machine image carries qemu-utils from backports,
#    which breaks bookworm's own qemu-system 7.2
#  - Debian's U-Boot for qemu_arm64, mkimage/mkenvimage, fw_printenv, mtools, dosfstools, debugfs
#  - mmdebstrap (the arm64 userland and kernel of the test image, extracted without scripts)
#  - the cross toolchain of ../shared/notes: rustc-web with its arm64 standard library, gcc for
#    aarch64 (linker), qemu-user-static (also runs the image's fleet-updated --check-config)
#  - mosquitto and mosquitto-clients: the broker the guest reaches, and the harness's recorder
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt_opts=(-o DPkg::Lock::Timeout=900)
updated=0
update() { [ $updated = 1 ] || { apt-get "${apt_opts[@]}" update -qq; updated=1; }; }

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
  cat >/etc/apt/sources.list.d/bookworm-backports.sources <<EOS
Types: deb
URIs: ${mirror:-http://deb.debian.org/debian}
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOS
  echo "added the bookworm-backports source"
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  dpkg --add-architecture arm64
  echo "added the arm64 architecture"
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

if ! installed qemu-system-arm; then
  update
  echo "installing: qemu-system-arm (bookworm-backports)"
  apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends -t bookworm-backports \
    qemu-system-arm qemu-utils >/dev/null
fi

pkgs=(u-boot-qemu u-boot-tools libubootenv-tool mtools dosfstools e2fsprogs fdisk cpio kmod
  mmdebstrap rauc squashfs-tools openssl mosquitto mosquitto-clients python3
  rustc-web gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstd-rust-web-dev:arm64 qemu-user-static)
missing=()
for p in "${pkgs[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  update
  echo "installing: ${missing[*]}"
  apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "qemu for the system tests: $(qemu-system-aarch64 --version | head -n1)"
