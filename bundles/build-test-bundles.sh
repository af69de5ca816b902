#!/usr/bin/env bash
# Builds small RAUC test bundles, good and deliberately broken, for the integration tests.
#
# Usage: bundles/build-test-bundles.sh <keys-dir> <out-dir>
#   <keys-dir>  holds ca.cert.pem, dev.cert.pem, dev.key.pem (keys/gen-dev-pki.sh makes them)
#   <out-dir>   receives the bundles and index.txt: one line per bundle, its name, a tab, and the
#               text RAUC's refusal must contain ("ok" for good bundles; texts as rauc 1.8 words them)
# Environment:
#   BUNDLE_FORMAT  plain (default) or verity. Installing a verity bundle needs dm-verity in the
#                  kernel; the development host has no device-mapper, so host tests use plain and
#                  the QEMU tests use verity. Stations refuse plain (`bundle-formats=-plain`).
#   COMPATIBLE     compatible of the good bundles (default: fleet-test-host)
#
# Every bundle's squashfs is uncompressed (the arguments in bundles/mksquashfs-args, the same the
# layer's fleet-bundle.bb passes): deltas between bundles stay small, and the transfer is
# compressed instead (ADR 0012).
#
# Bundles (all from a 4 MiB ext4 root filesystem holding /etc/fleet-version and 64 KiB filler):
#   good-2.0.0, good-2.1.0     signed by the development CA, installable
#   bad-signature              good-2.0.0 with a byte of the CMS signature flipped
#   tampered-payload           good-2.0.0 with a byte of the payload flipped
#   untrusted-ca               signed by a throwaway CA the station does not trust
#   wrong-compatible           compatible "fleet-some-other-station"
#   truncated                  good-2.0.0 cut in half
#   downgrade                  version 0.9.0 (the tests set the version floor to 1.0.0)
#   not-semver                 version "banana"
#   delta-3.0.0, delta-3.1.0, delta-3.2.0
#                              installable, built for deltas (ADR 0012): an 8 MiB root file system sharing 2 MiB of filler, each with
#                              128 KiB of its own; a patch between two is a few % of a bundle
# Takes a few seconds; rebuilds everything each run.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 <keys-dir> <out-dir>" >&2
  exit 2
fi
keys=$(cd "$1" && pwd)
mkdir -p "$2"
out=$(cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
format=${BUNDLE_FORMAT:-plain}
compatible=${COMPATIBLE:-fleet-test-host}
case "$format" in plain | verity) ;; *) echo "BUNDLE_FORMAT must be plain or verity" >&2; exit 2 ;; esac
for f in ca.cert.pem dev.cert.pem dev.key.pem; do
  [ -s "$keys/$f" ] || { echo "missing $keys/$f: run keys/gen-dev-pki.sh first" >&2; exit 2; }
done
for tool in rauc mkfs.ext4 openssl; do
  command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 2; }
done

squashfs_args=$(cat "$here/mksquashfs-args")
work=$out/work
rm -rf "$work" "$out"/*.raucb "$out/index.txt"
mkdir -p "$work"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

# `rauc bundle` verifies what it signed against --keyring; the leaf is a code-signing certificate,
# so that check needs `check-purpose=codesign`, which only a system.conf can set.
cat > "$work/sign.conf" <<EOC
[system]
compatible=$compatible
bootloader=noop

[keyring]
path=$keys/ca.cert.pem
check-purpose=codesign
EOC

# A throwaway CA + leaf the station does not trust.
untrusted=$work/untrusted-pki
mkdir -p "$untrusted"
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$untrusted/ca.key.pem"
openssl req -new -x509 -key "$untrusted/ca.key.pem" -out "$untrusted/ca.cert.pem" -days 30 \
  -subj "/O=nobody/CN=UNTRUSTED TEST CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign"
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$untrusted/leaf.key.pem"
openssl req -new -key "$untrusted/leaf.key.pem" -out "$untrusted/leaf.csr" -subj "/O=nobody/CN=untrusted signer"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=critical,codeSigning\n' > "$untrusted/leaf.ext"
openssl x509 -req -in "$untrusted/leaf.csr" -CA "$untrusted/ca.cert.pem" -CAkey "$untrusted/ca.key.pem" \
  -CAcreateserial -out "$untrusted/leaf.cert.pem" -days 30 -extfile "$untrusted/leaf.ext" 2>/dev/null

# make_bundle NAME VERSION COMPATIBLE CERT KEY KEYRING
# Optional, for the delta bundles: SHARED_KIB (filler shared by every bundle that sets it),
# OWN_KIB (filler of its own), ROOTFS_SIZE (default 4M).
make_bundle() {
  local name=$1 version=$2 compat=$3 cert=$4 key=$5 keyring=$6
  local dir=$work/$name
  mkdir -p "$dir/root/etc"
  echo "$version" > "$dir/root/etc/fleet-version"
  # 64 KiB that do not compress (deterministic: AES-CTR over zeros, keyed by the version), so the
  # bundle payload is larger than one verity block, as `rauc bundle` requires for verity.
  mkdir -p "$dir/root/usr/share/fleet"
  head -c 65536 /dev/zero | openssl enc -aes-128-ctr -nosalt -pass "pass:$version" -pbkdf2 \
    > "$dir/root/usr/share/fleet/filler"
  mkdir -p "$dir/content"
  if [ -n "${SHARED_KIB:-}" ]; then
    head -c $((SHARED_KIB * 1024)) /dev/zero | openssl enc -aes-128-ctr -nosalt -pass "pass:shared" -pbkdf2 \
      > "$dir/root/usr/share/fleet/shared"
    head -c $((OWN_KIB * 1024)) /dev/zero | openssl enc -aes-128-ctr -nosalt -pass "pass:own-$version" -pbkdf2 \
      > "$dir/root/usr/share/fleet/own"
  fi
  mkfs.ext4 -q -F -L "fleet-$version" -E root_owner=0:0 -U clear -d "$dir/root" "$dir/content/rootfs.ext4" "${ROOTFS_SIZE:-4M}"
  cp "$here/hooks/install-check" "$dir/content/install-check"
  sed -e "s|@COMPATIBLE@|$compat|" -e "s|@VERSION@|$version|" -e "s|@BUILD@|test-$SOURCE_DATE_EPOCH|" \
    -e "s|^format=verity$|format=$format|" "$here/station/qemuarm64.raucm.in" > "$dir/content/manifest.raucm"
  local conf=$work/sign.conf
  if [ "$keyring" != "$keys/ca.cert.pem" ]; then
    conf=$dir/sign.conf
    sed -e "s|^path=.*|path=$keyring|" "$work/sign.conf" > "$conf"
  fi
  rauc --conf="$conf" bundle --cert="$cert" --key="$key" --keyring="$keyring" \
    "--mksquashfs-args=$squashfs_args" \
    "$dir/content" "$out/$name.raucb" > "$dir/bundle.log" 2>&1 || { cat "$dir/bundle.log" >&2; exit 1; }
}

# flip_byte FILE OFFSET: inverts one byte in place.
flip_byte() {
  local file=$1 offset=$2 byte
  byte=$(od -An -tu1 -j "$offset" -N1 "$file" | tr -d ' ')
  printf "$(printf '\\%03o' $((255 - byte)))" | dd of="$file" bs=1 seek="$offset" conv=notrunc status=none
}

index() { printf '%s\t%s\n' "$1" "$2" >> "$out/index.txt"; }

dev_cert=$keys/dev.cert.pem dev_key=$keys/dev.key.pem ca=$keys/ca.cert.pem

make_bundle good-2.0.0 2.0.0 "$compatible" "$dev_cert" "$dev_key" "$ca"
index good-2.0.0 "ok"
make_bundle good-2.1.0 2.1.0 "$compatible" "$dev_cert" "$dev_key" "$ca"
index good-2.1.0 "ok"
for v in 3.0.0 3.1.0 3.2.0; do
  SHARED_KIB=2048 OWN_KIB=128 ROOTFS_SIZE=8M \
    make_bundle "delta-$v" "$v" "$compatible" "$dev_cert" "$dev_key" "$ca"
  index "delta-$v" "ok"
done
make_bundle wrong-compatible 2.0.0 fleet-some-other-station "$dev_cert" "$dev_key" "$ca"
index wrong-compatible "compatible mismatch"
make_bundle downgrade 0.9.0 "$compatible" "$dev_cert" "$dev_key" "$ca"
index downgrade "downgrade refused"
make_bundle not-semver banana "$compatible" "$dev_cert" "$dev_key" "$ca"
index not-semver "is not a semantic version"
make_bundle untrusted-ca 2.0.0 "$compatible" "$untrusted/leaf.cert.pem" "$untrusted/leaf.key.pem" "$untrusted/ca.cert.pem"
index untrusted-ca "unable to get local issuer certificate"

# Bundle layout: payload | CMS signature | CMS size (u64, big endian). The CMS ends with the
# signer's signature value, so its last byte is inside the signature itself.
good=$out/good-2.0.0.raucb
size=$(stat -c %s "$good")
cp "$good" "$out/bad-signature.raucb"
flip_byte "$out/bad-signature.raucb" $((size - 9))
index bad-signature "signature verification failed"

cp "$good" "$out/tampered-payload.raucb"
flip_byte "$out/tampered-payload.raucb" 2048
index tampered-payload "signature verification failed"

head -c $((size / 2)) "$good" > "$out/truncated.raucb"
index truncated "invalid bundle format"

# Manifest hashes for require-manifest-hash (rauc >= 1.14): sha256 of the manifest as `rauc bundle`
# rewrote it into the content directory. That is the signed manifest of a plain bundle; a verity
# bundle's signed manifest also carries the verity fields (`rauc info` on rauc >= 1.14 prints it).
for name in good-2.0.0 good-2.1.0; do
  sha256sum "$work/$name/content/manifest.raucm" | cut -d' ' -f1 > "$out/$name.manifest-hash"
done

echo "built $(ls "$out"/*.raucb | wc -l) $format bundles in $out"
