#!/usr/bin/env bash
# fleet-reporterd's log responder tests write real journal files with systemd-journal-remote
# (no journald runs in the test container) and read them back with journalctl. Idempotent.
. "$(dirname "$0")/lib.sh"
setup_apt_install systemd systemd-journal-remote
