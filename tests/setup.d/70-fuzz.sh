#!/usr/bin/env bash
# cargo-fuzz for tests/fuzz (the fuzz targets). Idempotent: installs only when missing.
# No nightly toolchain is needed: tests/fuzz/run.sh sets RUSTC_BOOTSTRAP=1 for the sanitizer
# flags on stable. libFuzzer itself is built from source by libfuzzer-sys (needs a C++ compiler).
set -euo pipefail
if ! command -v c++ >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
