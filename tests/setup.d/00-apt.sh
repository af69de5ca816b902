#!/usr/bin/env bash
# Debian packages the workspace build and its tests use. Idempotent: installs only what is missing.
. "$(dirname "$0")/lib.sh"
pkgs=(
  gcc libc6-dev pkg-config ca-certificates  # the C compiler and linker cargo needs; TLS to crates.io
  mosquitto mosquitto-clients   # the real MQTT broker for integration tests
  rauc dbus dbus-daemon squashfs-tools openssl  # real RAUC on a private D-Bus, bundle building, dev PKI
  libasound2-dev alsa-utils libasound2-plugins sox jackd2  # alsa-lib fed from files
  python3 python3-pip           # reference readers (guano)
)
setup_apt_install "${pkgs[@]}"
# mosquitto's package starts a system broker on :1883; tests start their own on free ports.
