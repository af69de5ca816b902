#!/usr/bin/env bash
# The delta-update benchmark: one table of bytes over MQTT and station apply cost per method, for
# the two real bundle pairs make-pairs.sh builds (base → one: one security update; base → many:
# tens of packages). Run by hand; it takes a few minutes and a few GiB under OUT.
#
#   tests/bench/delta/bench.sh [OUT]     (default OUT: /var/cache/fleet/delta-bench)
#
# Methods:
#   full bundle            the signed verity bundle with RAUC's default squashfs compression (before ADR 0012)
#   fleet compressed       what a station without a base fetches now: the uncompressed-squashfs bundle
#                          compressed by fleetctl (the product's code, make_compressed), decoded by the
#                          station's rebuild
#   fleet delta            what a station with the base fetches: fleetctl's patch (make_patch), applied
#                          by the station's rebuild (fleet_updated::rebuild, memory-mapped)
#   full bundle, zstd      the uncompressed-squashfs bundle compressed with zstd -19 --long (CLI)
#   rauc-block-index       RAUC adaptive's block-hash-index estimate (changed 4 KiB blocks of the slot image)
#   xdelta3 -9             xdelta3 -9 -S djw -B 512MiB (source window over the whole file) from the old to the new uncompressed-squashfs bundle (peer)
#   zstd --patch-from      zstd -19 --long --patch-from, same inputs (peer; candidate (a))
#   cdc-16k / cdc-64k      content-defined chunks of the uncompressed bundle (candidate (b))
# Apply cost: CPU seconds and peak RSS of the station-side command rebuilding the new bundle.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/var/cache/fleet/delta-bench}
"$here/make-pairs.sh" "$out" >&2
for tool in xdelta3 zstd /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench: missing $tool (apt-get install xdelta3 zstd time)" >&2; exit 2; }
done
(cd "$here" && cargo build --release --quiet)
tool=${CARGO_TARGET_DIR:-$here/target}/release/fleet-delta-bench
work=$(mktemp -d "$out/run.XXXXXX")
trap 'rm -rf "$work"' EXIT

size() { stat -c %s "$1"; }
timed() { # CMD... → "cpu_s peak_mib" of the command
  /usr/bin/time -f '%U %S %M' -o "$work/time" "$@" >/dev/null 2>&1
  awk '{ printf "%.1f %.0f", $1 + $2, $3 / 1024 }' "$work/time"
}
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f%%", 100 * a / b }'; }

printf '| pair | method | bytes over MQTT | of full bundle | of fleet compressed | apply CPU s | apply peak MiB |\n'
printf '|---|---|---:|---:|---:|---:|---:|\n'
for pair in one many; do
  old=$out/base.raw.raucb new=$out/$pair.raw.raucb
  full=$(size "$out/$pair.compressed.raucb")
  read -r cpu mib <<<"$(timed "$tool" compress "$new" "$work")"
  printf 'bench: base→%s fleet compressed, made by the operator in %s CPU s, peak %s MiB\n' "$pair" "$cpu" "$mib" >&2
  comp=$(size "$work/compressed.zst")
  row() { printf '| base→%s | %s | %s | %s | %s | %s | %s |\n' "$pair" "$1" "$2" "$(pct "$2" "$full")" "$(pct "$2" "$comp")" "$3" "$4"; }
  row "full bundle (RAUC default squashfs compression)" "$full" - -
  read -r cpu mib <<<"$(timed "$tool" apply - "$work/compressed.zst" "$work/c.out")"
  cmp -s "$work/c.out" "$new" || { echo "bench: the compressed transfer did not rebuild $new" >&2; exit 1; }
  row "fleet compressed full transfer" "$comp" "$cpu" "$mib"
  rm -f "$work/c.out"
  read -r cpu mib <<<"$(timed "$tool" patch "$old" "$new" "$work")"
  printf 'bench: base→%s fleet delta, made by the operator in %s CPU s, peak %s MiB\n' "$pair" "$cpu" "$mib" >&2
  patch=$(ls "$work"/patch-*.zst)
  read -r cpu mib <<<"$(timed "$tool" apply "$old" "$patch" "$work/d.out")"
  cmp -s "$work/d.out" "$new" || { echo "bench: the fleet delta did not rebuild $new" >&2; exit 1; }
  row "fleet delta" "$(size "$patch")" "$cpu" "$mib"
  rm -f "$work/d.out"
  zstd -q -19 --long=31 -T2 "$new" -o "$work/full.zst"
  read -r cpu mib <<<"$(timed zstd -q -d --long=31 "$work/full.zst" -o "$work/full.out" -f)"
  row "full bundle, zstd" "$(size "$work/full.zst")" "$cpu" "$mib"
  xdelta3 -q -9 -S djw -B 536870912 -e -f -s "$old" "$new" "$work/x.vcdiff"
  read -r cpu mib <<<"$(timed xdelta3 -q -d -B 536870912 -f -s "$old" "$work/x.vcdiff" "$work/x.out")"
  cmp -s "$work/x.out" "$new" || { echo "bench: xdelta3 did not rebuild $new" >&2; exit 1; }
  row "xdelta3 -9" "$(size "$work/x.vcdiff")" "$cpu" "$mib"
  zstd -q -19 --long=31 -T2 --patch-from="$old" "$new" -o "$work/p.zst" -f
  read -r cpu mib <<<"$(timed zstd -q -d --long=31 --patch-from="$old" "$work/p.zst" -o "$work/p.out" -f)"
  cmp -s "$work/p.out" "$new" || { echo "bench: zstd did not rebuild $new" >&2; exit 1; }
  row "zstd --patch-from" "$(size "$work/p.zst")" "$cpu" "$mib"
  "$tool" "$out/base.ext4" "$out/$pair.ext4" "$old" "$new" | while IFS=$'\t' read -r method bytes cpu mib; do
    row "$method" "$bytes" "$cpu" "$mib"
  done
  rm -f "$work"/*
done
