#!/usr/bin/env bash
# Tools the retention filesystem tests use (fleet-retentiond): mkfs.ext4 makes the small data
# filesystem that really fills, mount/umount/losetup loop-mount it (a tmpfs is the fallback).
# Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(e2fsprogs mount util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Loop devices: the kernel module may need loading on a fresh machine (harmless if built in).
modprobe loop 2>/dev/null || true
