#!/usr/bin/env bash
# Tools of the hardening checks in tests/layer (idempotent: installs only what is missing):
#   - test-dbus-policy.sh calls RAUC as the station's update agent: the policy names the user
#     fleet-updated, so this machine needs one;
#   - test-unit-hardening.sh needs systemd-analyze (security --offline, verify);
#   - test-units-in-systemd.sh boots this machine's systemd in systemd-nspawn.
. "$(dirname "$0")/lib.sh"
setup_apt_install systemd systemd-container util-linux passwd
if ! getent passwd fleet-updated >/dev/null; then
  echo "$setup_step: adding the system user fleet-updated"
  setup_run "useradd fleet-updated" useradd --system --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin fleet-updated
fi
