#!/usr/bin/env bash
# Runs every install step of tests/setup.d (the files named [0-9]*.sh, in order), each as its own
# bash process, and stops at the first that fails. Each step installs only what is missing.
#
#   tests/setup.sh [DIR]     DIR: the steps to run (default: tests/setup.d next to this script)
#
# Prints one "==> setup: <step>" line per step with its duration; a failed step ends the run with
# one last line `setup FAILED: <step>: <command>: <cause>` (tests/setup.d/lib.sh) and exit 1.
set -uo pipefail
dir=${1:-$(cd "$(dirname "$0")" && pwd)/setup.d}
report=$(mktemp)
trap 'rm -f "$report"' EXIT
export FLEET_SETUP_REPORT=$report
shopt -s nullglob
steps=("$dir"/[0-9]*.sh)
[ ${#steps[@]} -gt 0 ] || { echo "setup FAILED: $dir: ls: no steps [0-9]*.sh"; exit 1; }
for step in "${steps[@]}"; do
  name=$(basename "$step")
  started=$(date +%s)
  echo "==> setup: $name"
  : >"$report"
  bash "$step" </dev/null
  rc=$?
  took=$(($(date +%s) - started))
  if [ "$rc" != 0 ]; then
    line=$(head -n1 "$report")
    echo "${line:-setup FAILED: $name: bash $step: exit status $rc (the step printed no cause)}"
    exit 1
  fi
  echo "    $name: ok in $took s"
done
