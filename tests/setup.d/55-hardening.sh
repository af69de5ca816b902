#!/usr/bin/env bash
# Tools of the hardening checks in tests/layer (idempotent: installs only what is missing):
#   - test-dbus-policy.sh calls RAUC as the station's update agent: the policy names the user
#     fleet-updated, so this machine needs one;
#   - test-unit-hardening.sh needs systemd-analyze (security --offline, verify);
#   - test-units-in-systemd.sh boots this machine's systemd in systemd-nspawn.
set -euo pipefail
if ! getent passwd fleet-updated >/dev/null; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fleet-updated
fi
need=()
command -v systemd-analyze >/dev/null && command -v busctl >/dev/null || need+=(systemd)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v setpriv >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
