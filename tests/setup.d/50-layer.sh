#!/usr/bin/env bash
# Tools of the layer check (tests/layer/check-layer.sh). Idempotent: installs only what is missing.
#   - a venv with BitBake's parser (PyPI bitbake-setup carries bitbake's `bb` package; bitbake
#     itself is not on PyPI), oelint-adv, kas (for its JSON schema) and jsonschema;
#   - only when FLEET_UPSTREAM is set (the deeper tier): the en_US.UTF-8 locale and the host
#     tools bitbake's sanity check requires.
# A venv left half made (an interrupted `python3 -m venv` leaves a python without pip) is rebuilt;
# an interrupted pip install is finished: the pins are recorded in the venv only after it worked.
. "$(dirname "$0")/lib.sh"
venv=${FLEET_LAYER_VENV:-/opt/fleet/layer-venv}
pins=(bitbake-setup==2.19.0 oelint-adv==9.11.2 kas==5.5 jsonschema==4.26.0)
stamp=$venv/.fleet-pins
setup_apt_install python3 python3-venv

if [ -e "$venv" ] && ! { "$venv/bin/python" -c '' && "$venv/bin/python" -m pip --version; } >/dev/null 2>&1; then
  echo "$setup_step: $venv is half made (no working python or pip): rebuilding it"
  rm -rf "$venv"
fi
if [ ! -e "$venv" ]; then
  echo "$setup_step: creating the venv $venv"
  mkdir -p "$(dirname "$venv")"
  setup_run "python3 -m venv $venv" /usr/bin/python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ] ||
  ! "$venv/bin/python" -c 'import bb, oelint_adv, kas, jsonschema' >/dev/null 2>&1; then
  echo "$setup_step: installing (PyPI, into $venv): ${pins[*]}"
  rm -f "$stamp"
  setup_run "pip install ${pins[*]}" "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
  echo "${pins[*]}" >"$stamp"
fi

if [ -n "${FLEET_UPSTREAM:-}" ]; then
  setup_apt_install locales chrpath cpio diffstat gawk lz4 zstd file patch git
  if ! locale -a | grep -qi '^en_US.utf8$'; then
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    setup_run locale-gen locale-gen
  fi
fi
