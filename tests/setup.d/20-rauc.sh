#!/usr/bin/env bash
# What fleet-rauc's integration tests (firmware/fleet-rauc/tests/rauc_service.rs) need on the host:
# the real RAUC service, a D-Bus daemon for the private bus, e2fsprogs for the file-backed ext4
# slots (mkfs.ext4 -d, debugfs), squashfs-tools for plain bundles and openssl for the dev PKI.
# Idempotent: installs only what is missing.
. "$(dirname "$0")/lib.sh"
setup_apt_install rauc dbus-daemon e2fsprogs squashfs-tools openssl
echo "rauc for the integration tests: $(rauc --version)"
