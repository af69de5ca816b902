#!/usr/bin/env bash
# fleet-uploaderd tests and benchmarks: a real S3 server (s3s-fs from crates.io, built once into
# /opt/fleet-test/s3s-fs), the reference FLAC tools (`flac -t` checks what the uploader encodes,
# `metaflac` reads the GUANO comment back, `flac -5` is the benchmark's reference) and OpenSSH's
# sftp-server. The reference GUANO reader comes from 30-recorder.sh. Idempotent.
set -euo pipefail
pkgs=(flac openssh-server openssh-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# s3s-fs 0.14.1 is the newest release that builds with the toolchain here (0.17 needs Rust 1.96).
S3S_ROOT=${FLEET_S3S_ROOT:-/opt/fleet-test/s3s-fs}
S3S_VERSION=0.14.1
if ! "$S3S_ROOT/bin/s3s-fs" --version 2>/dev/null | grep -q "$S3S_VERSION"; then
  echo "installing: s3s-fs $S3S_VERSION (crates.io; a few minutes to build)"
  cargo install s3s-fs --version "$S3S_VERSION" --locked --features binary --root "$S3S_ROOT" --quiet
fi
