#!/usr/bin/env bash
# Debian packages the tests use. Idempotent: installs only what is missing.
set -euo pipefail
pkgs=(
  mosquitto mosquitto-clients   # the real MQTT broker for integration tests
  rauc dbus squashfs-tools openssl  # real RAUC on a private D-Bus, bundle building, dev PKI
  libasound2-dev alsa-utils libasound2-plugins pkg-config sox jackd2  # alsa-lib fed from files
  python3-pip                   # reference readers (guano)
)
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
# mosquitto's package starts a system broker on :1883; tests start their own on free ports.
