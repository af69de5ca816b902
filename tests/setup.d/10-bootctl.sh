#!/usr/bin/env bash
# Tools the boot-flow tests cross-check against (fleet-bootctl): mkimage compiles the U-Boot
# boot script, fw_printenv/fw_setenv (libubootenv) read and write the env file we write.
# Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(u-boot-tools libubootenv-tool)
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
