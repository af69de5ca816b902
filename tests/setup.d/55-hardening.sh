#!/usr/bin/env bash
# The D-Bus policy test (tests/layer/test-dbus-policy.sh) calls RAUC as the station's update agent:
# the policy names the user fleet-updated, so this machine needs one. Idempotent.
set -euo pipefail
if ! getent passwd fleet-updated >/dev/null; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fleet-updated
fi
# systemd-analyze (security --offline, verify) for tests/layer/test-unit-hardening.sh, and busctl.
if ! command -v systemd-analyze >/dev/null || ! command -v busctl >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
