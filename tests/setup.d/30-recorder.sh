#!/usr/bin/env bash
# fleet-recorderd tests: the reference GUANO reader (PyPI `guano`) that the integration tests run
# over recorded files. jackd2, sox and alsa-lib come from 00-apt.sh. Idempotent.
set -euo pipefail
if ! python3 -c 'import guano' 2>/dev/null; then
  echo "installing: guano (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check guano==1.0.16 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages guano==1.0.16
fi
