#!/usr/bin/env bash
# fleet-recorderd tests: the reference GUANO reader (PyPI `guano`) that the integration tests run
# over recorded files, for the python3 first on PATH (the one the tests call). jackd2, sox and
# alsa-lib come from 00-apt.sh. Idempotent.
. "$(dirname "$0")/lib.sh"
setup_apt_install python3 python3-pip
if ! python3 -c 'import guano' 2>/dev/null; then
  echo "$setup_step: installing (PyPI, for $(command -v python3)): guano==1.0.16"
  pip=(python3 -m pip install --quiet --disable-pip-version-check guano==1.0.16)
  # Debian's own python3 refuses a plain pip install (PEP 668); a pyenv or venv python takes it.
  if ! "${pip[@]}" >/dev/null 2>&1; then
    setup_run "${pip[*]} --break-system-packages" "${pip[@]}" --break-system-packages
  fi
  python3 -c 'import guano' 2>/dev/null || setup_fail "python3 -c 'import guano'" "guano installed but does not import"
fi
