#!/usr/bin/env bash
# Makes the real bundle pairs the delta benchmark measures (issue: delta updates over MQTT).
#
#   tests/bench/delta/make-pairs.sh [OUT]      (default OUT: /var/cache/fleet/delta-bench)
#
# Three aarch64 root file systems from Debian's packages, unpacked without maintainer scripts
# (mmdebstrap --variant=extract, so no arm64 emulation is needed), made reproducible with
# SOURCE_DATE_EPOCH, a fixed ext4 UUID and hash seed:
#   base      a station-like package set from bookworm
#   one       the same set with openssl and libssl3 from bookworm-security (one security update of
#             one source package; libc6 stays the base's)
#   many      the same set with every bookworm-security and bookworm-updates upgrade plus ten
#             more packages (tens of packages changed)
# Each becomes an ext4 slot image and a signed RAUC verity bundle (development PKI of keys/),
# twice: with RAUC's default squashfs compression, and uncompressed (`-noI -noD -noF -noX`), the
# form a delta is computed against. Nothing here is committed; OUT holds the images and bundles.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${1:-/var/cache/fleet/delta-bench}
mkdir -p "$out"
export SOURCE_DATE_EPOCH=1700000000
for tool in mmdebstrap mkfs.ext4 rauc openssl; do
  command -v "$tool" >/dev/null || { echo "make-pairs: missing tool $tool (apt-get install mmdebstrap e2fsprogs rauc openssl)" >&2; exit 2; }
done

pkgs=systemd,systemd-sysv,dbus,udev,openssl,libssl3,ca-certificates,iproute2,e2fsprogs,dosfstools
pkgs+=,squashfs-tools,kmod,libasound2,alsa-utils,rauc,mosquitto-clients,modemmanager,wpasupplicant
pkgs+=,systemd-timesyncd,curl,sqlite3,flac,xz-utils,zstd,less,nano,procps,iputils-ping
more=sox,libsox-fmt-all,python3-minimal,jq,rsync,openssh-client,htop,lsof,strace,tcpdump
mirrors=("deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main")

rootfs() { # NAME EXTRA-MMDEBSTRAP-ARGS...
  local name=$1; shift
  if [ ! -s "$out/$name.tar" ]; then
    echo "make-pairs: unpacking root file system '$name'"
    mmdebstrap --quiet --format=tar --variant=extract --architectures=arm64 "$@" bookworm "$out/$name.tar.part" "${mirrors[@]}"
    mv "$out/$name.tar.part" "$out/$name.tar"
  fi
}
rootfs base --aptopt='APT::Default-Release "bookworm"' --include="$pkgs"
# `pkg/suite` makes apt take the package's dependencies from that suite too: without libc6 named
# from bookworm, "one" got bookworm-security's older libc6 (a glibc change no station would see).
rootfs one --aptopt='APT::Default-Release "bookworm"' \
  --include="$pkgs,openssl/bookworm-security,libssl3/bookworm-security,libc6/bookworm"
rootfs many --include="$pkgs,$more"

# Which packages differ from base, for the record: an extracted root has no dpkg status, so a
# package counts as new or upgraded when its Debian changelog is new or changed.
changelogs() {
  python3 - "$out/$1.tar" <<'PY' > "$out/$1.changelogs"
import hashlib, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        parts = m.name.lstrip("./").split("/")
        if m.isfile() and len(parts) == 5 and parts[:3] == ["usr", "share", "doc"] and parts[4] == "changelog.Debian.gz":
            print(parts[3], hashlib.sha256(t.extractfile(m).read()).hexdigest())
PY
  sort -o "$out/$1.changelogs" "$out/$1.changelogs"
}
changelogs base
for n in one many; do
  changelogs "$n"
  comm -13 "$out/base.changelogs" "$out/$n.changelogs" | cut -d' ' -f1 > "$out/$n.changed"
  echo "make-pairs: $n differs from base in $(wc -l < "$out/$n.changed") packages: $(tr '\n' ' ' < "$out/$n.changed")"
done

pki=$out/pki
[ -s "$pki/dev.key.pem" ] || "$root/keys/gen-dev-pki.sh" "$pki" >/dev/null
cat > "$out/sign.conf" <<EOC
[system]
compatible=fleet-delta-bench
bootloader=noop

[keyring]
path=$pki/ca.cert.pem
check-purpose=codesign
EOC

image() { # NAME: ext4 slot image from the tarball, byte-for-byte reproducible
  local name=$1 dir
  [ -s "$out/$name.ext4" ] && return 0
  dir=$(mktemp -d "$out/unpack.XXXXXX")
  tar -xf "$out/$name.tar" -C "$dir"
  # 512 MiB slot, fixed UUID and directory hash seed, times from SOURCE_DATE_EPOCH.
  E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mkfs.ext4 -q -F -b 4096 -L rootfs \
    -U 6b1f4c2e-0d1a-4c55-9a53-5b9f1e2d3c4b -E hash_seed=2a7c9e1b-3f4d-4e5a-8b6c-7d8e9f0a1b2c,root_owner=0:0 \
    -d "$dir" "$out/$name.ext4.part" 512M >/dev/null
  rm -rf "$dir"
  mv "$out/$name.ext4.part" "$out/$name.ext4"
}

bundle() { # NAME VARIANT(compressed|raw)
  local name=$1 variant=$2 dir args=()
  local file=$out/$name.$variant.raucb
  [ -s "$file" ] && return 0
  [ "$variant" = raw ] && args=(--mksquashfs-args="-noI -noD -noF -noX")
  dir=$(mktemp -d "$out/bundle.XXXXXX")
  cp "$out/$name.ext4" "$dir/rootfs.ext4"
  cat > "$dir/manifest.raucm" <<EOM
[update]
compatible=fleet-delta-bench
version=1.0.0-$name
build=$SOURCE_DATE_EPOCH

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
EOM
  rauc bundle --conf="$out/sign.conf" --cert="$pki/dev.cert.pem" --key="$pki/dev.key.pem" \
    "${args[@]}" "$dir" "$file.part" >"$dir/rauc.log" 2>&1 || { cat "$dir/rauc.log" >&2; exit 1; }
  rm -rf "$dir"
  mv "$file.part" "$file"
}

for n in base one many; do
  image "$n"
  bundle "$n" compressed
  bundle "$n" raw
done
ls -l "$out"/*.ext4 "$out"/*.raucb
