#!/usr/bin/env bash
# cargo-fuzz for tests/fuzz (the fuzz targets), pinned. Idempotent: installs only when missing.
# No nightly toolchain is needed: tests/fuzz/run.sh sets RUSTC_BOOTSTRAP=1 for the sanitizer
# flags on stable. libFuzzer itself is built from source by libfuzzer-sys (needs a C++ compiler).
. "$(dirname "$0")/lib.sh"
version=0.13.2
setup_apt_install g++ ca-certificates
command -v cargo >/dev/null ||
  setup_fail "command -v cargo" "cargo is not on PATH: install the Rust toolchain with rustup (README)"
if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $version" ]; then
  echo "$setup_step: installing (crates.io): cargo-fuzz $version"
  setup_run "cargo install cargo-fuzz --version $version --locked" \
    cargo install --quiet --force cargo-fuzz --version "$version" --locked
fi
