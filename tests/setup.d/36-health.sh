#!/usr/bin/env bash
# fleet-reporterd's log responder tests write real journal files with systemd-journal-remote
# (no journald runs in the test container) and read them back with journalctl.
set -euo pipefail
if [ ! -x /lib/systemd/systemd-journal-remote ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd-journal-remote
fi
