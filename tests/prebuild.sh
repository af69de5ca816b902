#!/usr/bin/env bash
# The suites' slow builds, which tests/run.sh starts in the background at the lowest priority as
# the run begins, so that they take the CPU the lints and the cargo tests leave idle (the cargo
# tests spend minutes waiting on brokers, RAUC and timers):
#   qemu  tests/qemu/prepare.sh: the firmware's cross build and the station images
#   fuzz  the fuzz targets, as tests/suites.d/70-fuzz-smoke.sh builds them
#
#   tests/prebuild.sh qemu fuzz
#
# In the order given; each writes target/prebuild-<what>.log. tests/run.sh waits for this script
# before the first suite that needs one of them. A failure is not reported here: that suite
# builds again and reports it.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
for what in "$@"; do
  case $what in
    qemu) tests/qemu/prepare.sh >target/prebuild-qemu.log 2>&1 ;;
    fuzz) FUZZ_BUILD_ONLY=1 bash tests/suites.d/70-fuzz-smoke.sh >target/prebuild-fuzz.log 2>&1 ;;
    *) echo "prebuild: no build named $what" >target/prebuild-"$what".log ;;
  esac
done
