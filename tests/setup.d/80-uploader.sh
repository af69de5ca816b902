#!/usr/bin/env bash
# fleet-uploaderd tests and benchmarks: a real S3 server (s3s-fs from crates.io, built once into
# /opt/fleet-test/s3s-fs), the reference FLAC tools (`flac -t` checks what the uploader encodes,
# `metaflac` reads the GUANO comment back, `flac -5` is the benchmark's reference), OpenSSH (a
# private sshd with its sftp-server is the SFTP tests' server; `sftp` is the benchmark's reference)
# OpenSSL's headers (libssh2-sys builds its libssh2 against them) and libFLAC's (the uploader's
# encoder links the system libFLAC, as the image links oe-core's `flac`), for arm64 too when
# 60-qemu.sh set up the cross build. The reference GUANO reader comes from 30-recorder.sh.
# Idempotent.
. "$(dirname "$0")/lib.sh"
setup_apt_install flac libflac-dev openssh-server openssh-client openssl ca-certificates libssl-dev pkg-config
if dpkg --print-foreign-architectures | grep -qx arm64; then
  setup_apt_install libssl-dev:arm64 libflac-dev:arm64
fi
command -v cargo >/dev/null ||
  setup_fail "command -v cargo" "cargo is not on PATH: install the Rust toolchain with rustup (README)"
# s3s-fs 0.14.1 is the newest release that builds with the toolchain here (0.17 needs Rust 1.96).
S3S_ROOT=${FLEET_S3S_ROOT:-/opt/fleet-test/s3s-fs}
S3S_VERSION=0.14.1
if ! "$S3S_ROOT/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  echo "$setup_step: installing (crates.io): s3s-fs $S3S_VERSION (a few minutes to build)"
  setup_run "cargo install s3s-fs --version $S3S_VERSION" \
    cargo install s3s-fs --version "$S3S_VERSION" --locked --features binary --root "$S3S_ROOT" --quiet
fi
