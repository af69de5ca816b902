#!/usr/bin/env bash
# Tools the retention filesystem tests use (fleet-retentiond): mkfs.ext4 makes the small data
# filesystem that really fills, mount/umount/losetup loop-mount it (a tmpfs is the fallback).
# Idempotent: installs only what is missing.
. "$(dirname "$0")/lib.sh"
setup_apt_install e2fsprogs mount util-linux kmod
# Loop devices: the kernel module may need loading on a fresh machine (harmless if built in).
modprobe loop 2>/dev/null || true
