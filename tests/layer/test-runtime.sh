#!/usr/bin/env bash
# The station-runtime scripts of fleet-rootfs, run on this machine against scratch roots:
# the mount generator (one image, three media) and first-boot provisioning.
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

# provisioning
boot=$scratch/boot; data=$scratch/data
mkdir -p "$boot/fleet-provision/mqtt" "$data"
echo 'device-id = "stn-1"' > "$boot/fleet-provision/updated.toml"
echo key > "$boot/fleet-provision/mqtt/client.key"
FLEET_PROVISION_SRC=$boot/fleet-provision FLEET_DATA_DIR=$data FLEET_DATA_GROUP=$(id -gn) sh "$files/fleet-provision" >/dev/null
expect "provisioning_moves_the_identity_to_the_data_partition" \
  "grep -q stn-1 '$data/fleet/identity/updated.toml' && [ -f '$data/fleet/identity/mqtt/client.key' ]"
expect "provisioning_removes_the_credentials_from_the_boot_partition" "[ ! -e '$boot/fleet-provision' ]"
expect "provisioned_files_are_not_world_readable" \
  "[ \"\$(stat -c %a '$data/fleet/identity/mqtt/client.key')\" = 640 ] && [ \"\$(stat -c %a '$data/fleet/identity')\" = 750 ]"
FLEET_PROVISION_SRC=$boot/fleet-provision FLEET_DATA_DIR=$data sh "$files/fleet-provision"
expect "provisioning_without_a_provisioning_directory_changes_nothing" "grep -q stn-1 '$data/fleet/identity/updated.toml'"
mkdir -p "$boot/fleet-provision"; echo x > "$boot/fleet-provision/other"
FLEET_PROVISION_SRC=$boot/fleet-provision FLEET_DATA_DIR=$data FLEET_DATA_GROUP=$(id -gn) sh "$files/fleet-provision" 2>/dev/null
st=$?
expect "provisioning_without_updated_toml_fails_and_keeps_the_old_identity" \
  "[ $st -ne 0 ] && grep -q stn-1 '$data/fleet/identity/updated.toml' && [ -e '$boot/fleet-provision/other' ]"
mkdir -p "$boot/fleet-provision"; echo 'device-id = "stn-2"' > "$boot/fleet-provision/updated.toml"; rm -f "$boot/fleet-provision/other"
FLEET_PROVISION_SRC=$boot/fleet-provision FLEET_DATA_DIR=$data FLEET_DATA_GROUP=$(id -gn) sh "$files/fleet-provision" >/dev/null
expect "reprovisioning_replaces_the_whole_identity" \
  "grep -q stn-2 '$data/fleet/identity/updated.toml' && [ ! -e '$data/fleet/identity/mqtt' ] && [ ! -e '$data/fleet/.identity.old' ]"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
