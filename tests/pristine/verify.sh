#!/usr/bin/env bash
# What the install steps put on a machine, used the way the suites use it (run by check.sh inside
# the pristine root after tests/setup.sh; runs on any machine the steps have run on, too).
# Prints PASS/FAIL lines and a last line "N passed, N failed"; exit 1 when any failed.
#   verify.sh [SETUP_DIR]   the steps that ran (default tests/setup.d), for the rebuild check
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
setup_dir=${1:-$root/tests/setup.d}
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { echo "PASS: $1"; pass=$((pass + 1)); }
bad() { echo "FAIL: $1: $2"; fail=$((fail + 1)); }
check() { # name command...: PASS, or FAIL with the command's last output line
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$(echo "$out" | tail -n 3 | paste -sd' ' -)"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- programs the tests and suites call ---------------------------------------------------------
missing=()
for prog in cc c++ pkg-config mosquitto mosquitto_pub mosquitto_sub mosquitto_passwd rauc dbus-daemon \
  openssl mksquashfs mkfs.ext4 debugfs mount umount losetup setpriv sox jackd alsaloop aplay \
  mkimage mkenvimage fw_printenv fw_setenv mcopy mkfs.vfat sfdisk cpio gzip modprobe depmod readelf \
  mmdebstrap qemu-system-aarch64 qemu-aarch64-static aarch64-linux-gnu-gcc aarch64-linux-gnu-strip \
  jack_wait systemctl journalctl systemd-analyze systemd-nspawn busctl python3 cargo rustc /usr/bin/rustc; do
  command -v "$prog" >/dev/null || missing+=("$prog")
done
[ ${#missing[@]} = 0 ] && ok "every program the tests call is installed" ||
  bad "every program the tests call is installed" "missing: ${missing[*]}"
pkg-config --exists alsa && ok "alsa-lib's pkg-config file (alsa-sys)" || bad "alsa-lib's pkg-config file (alsa-sys)" "pkg-config --exists alsa"
check "python3 imports guano (the recorder tests' reference reader)" python3 -c 'import guano'
check "rauc --version" rauc --version
check "flac and metaflac (the uploader tests' reference tools)" sh -c 'flac --version && metaflac --version'
check "OpenSSH's sshd, sftp-server, ssh-keygen and sftp (the uploader's SFTP tests and bench)" \
  sh -c 'test -x /usr/lib/openssh/sftp-server && test -x /usr/sbin/sshd && command -v ssh-keygen && command -v sftp'
pkg-config --exists openssl && ok "OpenSSL's pkg-config file (libssh2-sys, openssl-sys)" ||
  bad "OpenSSL's pkg-config file (libssh2-sys, openssl-sys)" "pkg-config --exists openssl"
check "s3s-fs (the uploader tests' S3 server)" "${FLEET_S3S_ROOT:-/opt/fleet-test/s3s-fs}/bin/s3s-fs" --version
check "systemd-journal-remote (the reporter's log tests)" test -x /lib/systemd/systemd-journal-remote

# ---- mosquitto starts and accepts a publish -----------------------------------------------------
port=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nuser root\n' "$port" >"$tmp/mosquitto.conf"
mosquitto -c "$tmp/mosquitto.conf" >"$tmp/mosquitto.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
mosquitto_sub -h 127.0.0.1 -p "$port" -t pristine/check -C 1 -W 10 >"$tmp/got" 2>&1 &
sub=$!
sleep 0.5
mosquitto_pub -h 127.0.0.1 -p "$port" -t pristine/check -q 1 -m hello >"$tmp/pub.log" 2>&1
wait "$sub"
[ "$(cat "$tmp/got")" = hello ] && ok "mosquitto starts and delivers a publish" ||
  bad "mosquitto starts and delivers a publish" "got '$(cat "$tmp/got")'; broker: $(tail -n2 "$tmp/mosquitto.log" | paste -sd' ' -); pub: $(cat "$tmp/pub.log")"

# ---- the layer venv: BitBake's parser (tests/layer/bbparse.py) on a small layer, oelint-adv -----
venv=${FLEET_LAYER_VENV:-/opt/fleet/layer-venv}
layer=$tmp/meta-check
mkdir -p "$layer/conf" "$layer/recipes-check/hello"
cat >"$layer/conf/layer.conf" <<'EOL'
BBPATH .= ":${LAYERDIR}"
BBFILES += "${LAYERDIR}/recipes-*/*/*.bb"
BBFILE_COLLECTIONS += "check"
BBFILE_PATTERN_check = "^${LAYERDIR}/"
LAYERSERIES_COMPAT_check = "wrynose"
EOL
printf 'SUMMARY = "hello"\nLICENSE = "MIT"\ninherit allarch\npython do_hello() {\n    bb.note(d.getVar("PN"))\n}\naddtask hello\n' \
  >"$layer/recipes-check/hello/hello_1.0.bb"
check "the layer venv's BitBake parser parses a layer (bbparse.py)" "$venv/bin/python" "$root/tests/layer/bbparse.py" "$layer"
check "the layer venv's oelint-adv, kas and jsonschema import" "$venv/bin/python" -c 'import oelint_adv, kas, jsonschema, yaml'
check "oelint-adv runs" "$venv/bin/oelint-adv" --version

# A venv left half made (an interrupted `python3 -m venv`: a python without pip) is rebuilt.
half=$tmp/half-venv
python3 -m venv --without-pip "$half"
check "50-layer.sh rebuilds a venv left half made (python without pip)" sh -c \
  "FLEET_LAYER_VENV='$half' bash '$setup_dir/50-layer.sh' && '$half/bin/python' -m pip --version && '$half/bin/python' -c 'import bb, kas'"

# ---- qemu-system-aarch64 with the harness's own command line reaches U-Boot --------------------
check "qemu-system-aarch64 -M virt with the harness's devices reaches U-Boot's banner" \
  python3 "$root/tests/pristine/qemu_uboot.py" "$tmp/qemu"

# ---- the cross toolchain (tests/qemu/build-firmware.sh's way) links, qemu-user runs it ---------
mkdir -p "$tmp/hello/src"
printf '[package]\nname = "hello"\nversion = "0.1.0"\nedition = "2021"\n[workspace]\n' >"$tmp/hello/Cargo.toml"
echo 'fn main() { println!("hello from {}", std::env::consts::ARCH); }' >"$tmp/hello/src/main.rs"
cross() {
  cd "$tmp/hello" && RUSTC=/usr/bin/rustc CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc CARGO_TARGET_DIR="$tmp/hello/target" \
    cargo build --quiet --offline --release --target aarch64-unknown-linux-gnu &&
    out=$(qemu-aarch64-static -L /usr/aarch64-linux-gnu target/aarch64-unknown-linux-gnu/release/hello) &&
    [ "$out" = "hello from aarch64" ] || { echo "ran: '${out:-}'"; return 1; }
}
check "Rust for aarch64 (rustc-web) links with aarch64-linux-gnu-gcc and runs under qemu-aarch64-static" cross
printf '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n' >"$tmp/hello.c"
check "aarch64-linux-gnu-gcc links C (the cc crate's way) and it runs under qemu-aarch64-static" \
  sh -c "aarch64-linux-gnu-gcc -o '$tmp/hello-arm64' '$tmp/hello.c' && qemu-aarch64-static -L /usr/aarch64-linux-gnu '$tmp/hello-arm64'"
check "cc links for this machine (cargo's linker)" sh -c "cc -o '$tmp/hello-host' '$tmp/hello.c' && '$tmp/hello-host'"
# binfmt_misc is the host kernel's, not the root's: the tests call qemu-aarch64-static explicitly,
# and so does this check; a transparent ./arm64-binary is not relied on anywhere.

# ---- mmdebstrap extracts arm64 packages the way tests/qemu/build.sh does ----------------------
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
check "mmdebstrap extracts an arm64 package (tests/qemu/build.sh's userland)" \
  mmdebstrap --quiet --mode=root --variant=extract --architectures=arm64 --include=busybox-static \
  bookworm "$tmp/extract.tar" "deb ${mirror:-http://deb.debian.org/debian} bookworm main"

# ---- cargo-fuzz ----------------------------------------------------------------------------------
check "cargo fuzz --version" cargo fuzz --version

# ---- two suites that need only what the steps installed ---------------------------------------
check "suite 20-keys-bundles (openssl, the dev PKI, the install-check hook)" bash "$root/tests/suites.d/20-keys-bundles.sh"
check "suite 75-mqtt-security (mosquitto with TLS and the ACL)" bash "$root/tests/suites.d/75-mqtt-security.sh"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
