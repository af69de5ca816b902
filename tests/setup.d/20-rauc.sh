#!/usr/bin/env bash
# What fleet-rauc's integration tests (firmware/fleet-rauc/tests/rauc_service.rs) need on the host:
# the real RAUC service, a D-Bus daemon for the private bus, e2fsprogs for the file-backed ext4
# slots (mkfs.ext4 -d, debugfs), squashfs-tools for plain bundles and openssl for the dev PKI.
# Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(rauc dbus-daemon e2fsprogs squashfs-tools openssl)
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
echo "rauc for the integration tests: $(rauc --version)"
