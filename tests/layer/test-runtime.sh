#!/usr/bin/env bash
# The station-runtime scripts of fleet-rootfs, run on this machine against scratch roots:
# the mount generator (one image, three media) and first-boot provisioning (with the daemons
# built from this repository: each checks its provisioned settings).
# Prints "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
files=$(cd "$here/../../meta-fleet/recipes-core/fleet-rootfs/files" && pwd)
pass=0; fail=0
scratch=$(mktemp -d /tmp/fleet-runtime.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
expect() { if eval "$2"; then echo "PASS: $1"; pass=$((pass + 1)); else echo "FAIL: $1 ($2)"; fail=$((fail + 1)); fi; }

generate() { # root-device data-part firmware-part extended-part -> $scratch/gen-<dev>
  local dev=$1 root=$scratch/root-$(basename "$1")
  mkdir -p "$root/usr/lib/fleet/rauc" "$root/gen"
  printf 'FLEET_DATA_DIR=/data\nFLEET_PART_FIRMWARE=%s\nFLEET_PART_EXTENDED=%s\nFLEET_PART_DATA=%s\n' "$3" "$4" "$2" \
    > "$root/usr/lib/fleet/layout.conf"
  for m in mmcblk0 nvme0n1 vda; do echo "[system]" > "$root/usr/lib/fleet/rauc/system-$m.conf"; done
  echo "console=ttyAMA10,115200 root=$dev rootfstype=ext4 rootwait ro" > "$root/cmdline"
  FLEET_ROOT=$root FLEET_CMDLINE=$root/cmdline sh "$files/fleet-mount-generator" "$root/gen"
  echo "$root"
}

r=$(generate /dev/mmcblk0p5 7 1 4)
expect "the_generator_mounts_p7_of_the_sd_card_as_data_when_booted_from_slot_a" \
  "grep -qx 'What=/dev/mmcblk0p7' '$r/gen/data.mount' && grep -qx 'Where=/data' '$r/gen/data.mount'"
expect "the_generator_mounts_the_config_partition_of_the_same_disk" \
  "grep -qx 'What=/dev/mmcblk0p1' '$r/gen/boot-firmware.mount'"
expect "the_generator_links_the_sd_cards_rauc_configuration" \
  "[ \"\$(readlink '$r/run/rauc/system.conf')\" = /usr/lib/fleet/rauc/system-mmcblk0.conf ]"
expect "the_generated_mounts_are_required_by_local_fs" \
  "[ -L '$r/gen/local-fs.target.requires/data.mount' ] && [ -L '$r/gen/local-fs.target.requires/boot-firmware.mount' ]"

expect "without_the_updater_group_the_firmware_partition_stays_roots_alone" \
  "grep -q '^Options=.*,umask=0077,' '$r/gen/boot-firmware.mount' && ! grep -q 'gid=' '$r/gen/boot-firmware.mount'"
mkdir -p "$r/etc"; printf 'root:x:0:\nfleet-updated:x:996:\n' > "$r/etc/group"
FLEET_ROOT=$r FLEET_CMDLINE=$r/cmdline sh "$files/fleet-mount-generator" "$r/gen"
expect "the_firmware_partition_is_writable_by_the_updaters_group_only" \
  "grep -q '^Options=.*,gid=996,umask=0007,' '$r/gen/boot-firmware.mount'"

r=$(generate /dev/nvme0n1p6 7 1 4)
expect "the_generator_follows_the_nvme_drive_when_booted_from_slot_b" \
  "grep -qx 'What=/dev/nvme0n1p7' '$r/gen/data.mount' && grep -qx 'What=/dev/nvme0n1p1' '$r/gen/boot-firmware.mount' && [ \"\$(readlink '$r/run/rauc/system.conf')\" = /usr/lib/fleet/rauc/system-nvme0n1.conf ]"

r=$(generate /dev/vda3 4 1 "")
expect "the_generator_uses_the_qemu_layout_without_a_partition_prefix" \
  "grep -qx 'What=/dev/vda4' '$r/gen/data.mount' && grep -qx 'What=/dev/vda1' '$r/gen/boot-firmware.mount' && [ \"\$(readlink '$r/run/rauc/system.conf')\" = /usr/lib/fleet/rauc/system-vda.conf ]"

root=$scratch/nfs; mkdir -p "$root/gen" "$root/usr/lib/fleet/rauc"
printf 'FLEET_DATA_DIR=/data\nFLEET_PART_FIRMWARE=1\nFLEET_PART_EXTENDED=\nFLEET_PART_DATA=4\n' > "$root/usr/lib/fleet/layout.conf"
echo "root=PARTUUID=1234-02 ro" > "$root/cmdline"
FLEET_ROOT=$root FLEET_CMDLINE=$root/cmdline sh "$files/fleet-mount-generator" "$root/gen" 2>/dev/null
expect "the_generator_writes_nothing_for_a_root_it_cannot_parse" "[ -z \"\$(ls '$root/gen')\" ]"

# provisioning: the folder `fleetctl provision` writes, checked by the real daemons against the
# image defaults meta-fleet ships, moved into <data>/fleet/identity/ with each file's mode.
repo=$(cd "$here/../.." && pwd)
bins=${FLEET_BIN_DIR:-${CARGO_TARGET_DIR:-$repo/target}/debug}
if [ ! -x "$bins/fleet-updated" ] || [ ! -x "$bins/fleet-recorderd" ] || [ ! -x "$bins/fleet-retentiond" ] \
   || [ ! -x "$bins/fleetctl" ] || [ ! -x "$bins/fleet-uploaderd" ]; then
  (cd "$repo" && cargo build -q -p fleet-updated -p fleet-recorderd -p fleet-retentiond -p fleetctl \
     -p fleet-uploaderd) \
    || expect the_daemons_and_fleetctl_build false
fi
fw=$repo/meta-fleet/recipes-fleet/fleet-firmware/files
boot=$scratch/boot; data=$scratch/data; conf=$scratch/etc-fleet
mkdir -p "$boot" "$data/fleet" "$conf"
subst() { sed -e "s,@DATADIR@,$data,g" -e 's,@COMPATIBLE@,fleet-qemuarm64,g' -e 's,@BOOT_FLOW@,uboot,g' \
  -e 's,@LIBEXECDIR@,/usr/libexec,g' -e 's,@ATTEMPTS@,3,g' -e "s,/etc/fleet/,$conf/,g" "$1"; }
for c in updated recorderd retentiond; do subst "$fw/$c.toml" > "$conf/$c.toml"; done
subst "$fw/bootctl-uboot.toml" > "$conf/bootctl.toml"
# The fleet's side, as docs/getting-started.md does it: PKI, offer key, fleet definition; each
# folder below is written by `fleetctl provision`.
fl=$scratch/fleet
"$bins/fleetctl" pki init --out "$fl/pki" --broker-host broker.example >/dev/null
"$bins/fleetctl" keys gen --out-dir "$fl/keys" >/dev/null
cat > "$fl/fleet.toml" <<EOF
trusted-key-files = ["keys/fleet-offer.pub"]
[image]
compatible = "fleet-qemuarm64"
boot-flow = "uboot"
data-dir = "$data"
[broker]
host = "broker.example"
ca-file = "pki/ca.crt"
[station-ca]
cert-file = "pki/ca.crt"
key-file = "pki/ca.key"
EOF
echo "correct horse battery" > "$fl/psk"
folder() { # device-id -> a complete provisioning folder in $boot/fleet-provision
  rm -rf "$boot/fleet-provision"
  "$bins/fleetctl" provision --fleet "$fl/fleet.toml" --station "$1" --group canary \
    --position 52.1,-1.5 --microphone usb:0869:0001 --profile ultrasonic \
    --wifi-ssid field --wifi-passphrase-file "$fl/psk" --out "$boot" >/dev/null
}
provision() { FLEET_PROVISION_SRC=$boot/fleet-provision FLEET_DATA_DIR=$data FLEET_BINDIR=$bins \
  FLEET_CONFIG_DIR=$conf FLEET_PROVISION_OWNERS=0 sh "$files/fleet-provision"; }
mode() { stat -c %a "$data/fleet/identity/$1"; }

folder stn-1
provision >/dev/null
expect "provisioning_puts_every_file_of_the_folder_under_the_identity_directory" \
  "grep -qx stn-1 '$data/fleet/identity/device-id' && grep -q stn-1 '$data/fleet/identity/updated.toml' && grep -q ultrasonic '$data/fleet/identity/recorderd.toml' && [ -f '$data/fleet/identity/network/wpa_supplicant-wlan0.conf' ]"
expect "provisioning_removes_the_folder_from_the_boot_partition" "[ ! -e '$boot/fleet-provision' ]"
expect "the_station_key_is_0440_for_the_two_daemons_that_connect_and_the_settings_0640" \
  "[ \"\$(mode mqtt/client.key)\" = 440 ] && [ \"\$(mode updated.toml)\" = 640 ] && [ \"\$(mode recorderd.toml)\" = 640 ] && [ \"\$(mode mqtt/client.crt)\" = 640 ]"
expect "identity_directories_are_closed_to_others_and_wifi_secrets_to_all_but_root" \
  "[ \"\$(mode .)\" = 750 ] && [ \"\$(mode mqtt)\" = 750 ] && [ \"\$(mode network)\" = 700 ] && [ \"\$(mode network/wpa_supplicant-wlan0.conf)\" = 600 ]"
all_check=1
for c in updated recorderd retentiond; do
  "$bins/fleet-$c" --config "$conf/$c.toml" --station-config "$data/fleet/identity/$c.toml" --check-config >"$scratch/check-$c" 2>&1 || all_check=0
done
[ $all_check = 1 ] || cat "$scratch"/check-*
expect "the_shipped_image_defaults_and_the_provisioned_settings_pass_every_daemons_check" "[ $all_check = 1 ]"
"$bins/fleet-updated" --config "$conf/updated.toml" --check-config >/dev/null 2>&1; st=$?
expect "the_image_defaults_alone_are_incomplete_not_invalid" "[ $st = 3 ]"

provision >/dev/null
expect "provisioning_without_a_provisioning_directory_changes_nothing" "grep -qx stn-1 '$data/fleet/identity/device-id'"

folder stn-2; echo x > "$boot/fleet-provision/other"
provision 2>/dev/null; st=$?
expect "a_folder_with_an_unknown_file_is_refused_and_kept" \
  "[ $st -ne 0 ] && grep -qx stn-1 '$data/fleet/identity/device-id' && [ -e '$boot/fleet-provision/other' ]"
folder stn-2; echo 'colour = "red"' >> "$boot/fleet-provision/updated.toml"
out=$(provision 2>&1); st=$?
expect "a_folder_the_updater_refuses_changes_nothing_and_says_why" \
  "[ $st -ne 0 ] && grep -qx stn-1 '$data/fleet/identity/device-id' && [ -e '$boot/fleet-provision' ] && grep -q 'fleet-updated refuses updated.toml' <<<\"\$out\" && grep -q colour <<<\"\$out\""
folder stn-3; echo operator > "$boot/fleet-provision/device-id"
provision 2>/dev/null; st=$?
expect "a_station_named_operator_is_refused" "[ $st -ne 0 ] && grep -qx stn-1 '$data/fleet/identity/device-id'"
folder stn-2; rm -r "$boot/fleet-provision/mqtt" "$boot/fleet-provision/network" "$boot/fleet-provision/recorderd.toml"
provision >/dev/null
expect "reprovisioning_replaces_the_whole_identity" \
  "grep -qx stn-2 '$data/fleet/identity/device-id' && [ -z \"\$(ls '$data/fleet/identity/mqtt')\" ] && [ ! -e '$data/fleet/identity/recorderd.toml' ] && [ ! -e '$data/fleet/.identity.old' ] && [ ! -e '$data/fleet/.identity.new' ]"

# fleet-uploaderd's settings and credentials (an SFTP destination for the fleet, the station's key
# and the server's host key) and a cellular APN, written by `fleetctl provision`, checked by the
# real uploader, put under the identity directory for the uploader's user only.
subst "$fw/uploaderd.toml" > "$conf/uploaderd.toml"
ssh-keygen -q -t ed25519 -N '' -C '' -f "$fl/sftp-key"
printf 'sftp.example %s\n' "$(cut -d' ' -f1,2 "$fl/sftp-key.pub")" > "$fl/known_hosts"
printf '[defaults.uploaderd.destination]\nkind = "sftp"\nhost = "sftp.example"\nuser = "fleet"\nremote-dir = "recordings"\n' \
  >> "$fl/fleet.toml"
uploader_folder() {
  rm -rf "$boot/fleet-provision"
  "$bins/fleetctl" provision --fleet "$fl/fleet.toml" --station stn-4 --uploader-sftp-key "$fl/sftp-key" \
    --uploader-sftp-known-hosts "$fl/known_hosts" --cellular-apn iot.example --out "$boot" >/dev/null
}
uploader_folder; rm "$boot/fleet-provision/uploader/sftp-key"
out=$(provision 2>&1); st=$?
expect "an_uploader_folder_missing_its_key_is_refused_and_changes_nothing" \
  "[ $st -ne 0 ] && grep -qx stn-2 '$data/fleet/identity/device-id' && grep -q 'uploader/sftp-key is missing' <<<\"\$out\""
uploader_folder
provision >/dev/null
expect "provisioning_gives_the_uploader_its_key_and_host_key_0400_in_a_0750_directory" \
  "[ \"\$(mode uploaderd.toml)\" = 640 ] && [ \"\$(mode uploader)\" = 750 ] && [ \"\$(mode uploader/sftp-key)\" = 400 ] && [ \"\$(mode uploader/known_hosts)\" = 400 ] && cmp -s '$fl/sftp-key' '$data/fleet/identity/uploader/sftp-key' && [ \"\$(mode network/cellular.conf)\" = 600 ]"
"$bins/fleet-uploaderd" --config "$conf/uploaderd.toml" --station-config "$data/fleet/identity/uploaderd.toml" \
  --check-config >"$scratch/check-uploaderd" 2>&1; st=$?
[ $st = 0 ] || cat "$scratch/check-uploaderd"
expect "the_provisioned_uploader_passes_its_own_check_with_its_station_file" \
  "[ $st = 0 ] && grep -q 'sftp-key' '$data/fleet/identity/uploaderd.toml'"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
