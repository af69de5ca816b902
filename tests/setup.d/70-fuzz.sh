#!/usr/bin/env bash
# cargo-fuzz for tests/fuzz (the fuzz targets). Idempotent: installs only when missing.
# No nightly toolchain is needed: tests/fuzz/run.sh sets RUSTC_BOOTSTRAP=1 for the sanitizer
# flags on stable. libFuzzer itself is built from source by libfuzzer-sys (needs a C++ compiler).
. "$(dirname "$0")/lib.sh"
setup_apt_install g++ ca-certificates
command -v cargo >/dev/null ||
  setup_fail "command -v cargo" "cargo is not on PATH: install the Rust toolchain with rustup (README)"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "$setup_step: installing (crates.io): cargo-fuzz"
  setup_run "cargo install cargo-fuzz --locked" cargo install --quiet cargo-fuzz --locked
fi
