#!/usr/bin/env bash
# Tools of the layer check (tests/layer/check-layer.sh). Idempotent: installs only what is missing.
#   - a venv with BitBake's parser (PyPI bitbake-setup carries bitbake's `bb` package; bitbake
#     itself is not on PyPI), oelint-adv, kas (for its JSON schema) and jsonschema;
#   - only when FLEET_UPSTREAM is set (the deeper tier): the en_US.UTF-8 locale and the host
#     tools bitbake's sanity check requires.
set -euo pipefail
venv=${FLEET_LAYER_VENV:-/opt/fleet/layer-venv}
pins=(bitbake-setup==2.19.0 oelint-adv==9.11.2 kas==5.5 jsonschema==4.26.0)
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
fi
missing=0
for p in "${pins[@]}"; do
  have=$("$venv/bin/python" -m pip show "${p%%==*}" 2>/dev/null | sed -n 's/^Version: //p')
  [ "$have" = "${p##*==}" ] || missing=1
done
if [ "$missing" = 1 ]; then
  echo "installing layer-check tools into $venv"
  "$venv/bin/python" -m pip install -q "${pins[@]}"
fi

if [ -n "${FLEET_UPSTREAM:-}" ]; then
  pkgs=(locales chrpath cpio diffstat gawk lz4 zstd file patch git)
  need=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if ! locale -a | grep -qi '^en_US.utf8$'; then
    sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen
    locale-gen >/dev/null
  fi
fi
