#!/usr/bin/env bash
# The architecture's rules (docs/architecture.md, "Invariants"): no import circles between the
# modules of any crate, and the crate dependency rules over `cargo metadata`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
status=0
python3 "$root/tests/architecture/check.py" --root "$root" || status=1
# The checker itself: a circle it must find.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/firmware/demo/src"
printf '[package]\nname = "demo"\n' > "$tmp/firmware/demo/Cargo.toml"
printf 'mod a;\nmod b;\n' > "$tmp/firmware/demo/src/lib.rs"
printf 'use crate::b::B;\npub struct A;\n' > "$tmp/firmware/demo/src/a.rs"
printf 'use crate::a::A;\npub struct B;\n' > "$tmp/firmware/demo/src/b.rs"
out=$(python3 "$root/tests/architecture/check.py" --root "$tmp" --no-metadata || true)
if ! grep -q "demo has an import circle between modules a, b" <<<"$out"; then
  echo "FAIL: the architecture check missed an import circle between two modules: $out"
  exit 1
fi
echo "architecture: the check finds a planted circle"
exit "$status"
