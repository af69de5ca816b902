#!/usr/bin/env bash
# Proves the layer check fails on broken inputs: each case copies the layer (and what the check
# reads beside it) into a scratch directory, breaks one thing, and expects check-layer.sh to fail
# on exactly the check that guards it. Prints "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
pass=0; fail=0
scratch=$(mktemp -d /tmp/layer-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

fresh() { # a pristine copy of the layer, Cargo.lock, kas files and the bundles' squashfs args
  rm -rf "$scratch/case"; mkdir -p "$scratch/case/bundles"
  cp -r "$root/meta-fleet" "$root/kas" "$root/Cargo.lock" "$root/Cargo.toml" "$scratch/case/"
  cp "$root/bundles/mksquashfs-args" "$scratch/case/bundles/"
}
check() { # expect-status, description, failing check's name
  local want=$1 name=$2 pattern=$3 out status
  out=$(LAYER="$scratch/case/meta-fleet" KAS_DIR="$scratch/case/kas" CARGO_LOCK="$scratch/case/Cargo.lock" \
        FLEET_UPSTREAM= "$here/check-layer.sh" 2>&1); status=$?
  if [ "$want" = fail ] && [ $status -ne 0 ] && echo "$out" | grep -q "^FAIL: $pattern"; then
    echo "PASS: $name"; pass=$((pass + 1))
  elif [ "$want" = pass ] && [ $status -eq 0 ]; then
    echo "PASS: $name"; pass=$((pass + 1))
  else
    echo "FAIL: $name (exit $status)"; echo "$out" | sed 's/^/    /' | head -30; fail=$((fail + 1))
  fi
}
l=$scratch/case/meta-fleet

fresh
check pass "an_unmodified_copy_of_the_layer_passes" ""

fresh
printf 'do_install() {\n    echo unterminated\n' >> "$l/recipes-core/fleet-rootfs/fleet-rootfs.bb"
check fail "a_recipe_with_an_unterminated_function_fails_the_parser" "bitbake parser"

fresh
echo 'IMAGE_INSTALL += "fleet-firmware' >> "$l/recipes-core/images/fleet-image.bb"
check fail "a_recipe_with_an_unclosed_quote_fails_the_parser" "bitbake parser"

fresh
echo 'SRC_URI += "https://example.com/tool-1.0.tar.gz"' >> "$l/recipes-core/fleet-rootfs/fleet-rootfs.bb"
check fail "a_remote_source_without_a_checksum_fails_the_linter" "oelint-adv"

fresh
# the first package's version changes: the crate list no longer matches
python3 - "$scratch/case/Cargo.lock" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
s = re.sub(r'(\[\[package\]\]\nname = "[^"]+"\nversion = ")([^"]+)(")', lambda m: m.group(1) + m.group(2) + "-drift" + m.group(3), s, count=1)
open(p, "w").write(s)
PY
check fail "a_cargo_lock_change_without_regenerating_the_crate_list_fails" "crate list"

fresh
# the recipe's squashfs arguments drift from the test bundles' (compressed squashfs again)
sed -i 's,^FLEET_MKSQUASHFS_ARGS = .*,FLEET_MKSQUASHFS_ARGS = "-comp xz",' "$l/recipes-core/bundles/fleet-bundle.bb"
check fail "a_bundle_recipe_whose_squashfs_args_drift_from_the_test_bundles_fails" "layer hygiene"

fresh
sed -i "/^BUNDLE_ARGS += /d" "$l/recipes-core/bundles/fleet-bundle.bb"
check fail "a_bundle_recipe_that_does_not_pass_its_squashfs_args_fails" "layer hygiene"

fresh
sed -i 's,^device=/dev/mmcblk0p6$,device=/dev/mmcblk0p4,' "$l/recipes-core/rauc/files/system-mmcblk0.conf"
check fail "a_system_conf_slot_on_another_partition_than_the_wks_fails" "wks partitions"

fresh
sed -i '/--label root-b/d' "$l/files/wic/fleet-rpi5-nvme.wks.in"
check fail "a_wks_missing_slot_b_fails" "wks partitions"

fresh
sed -i 's/^bundle-formats=-plain$/bundle-formats=plain verity/' "$l/recipes-core/rauc/files/system-vda.conf"
check fail "a_system_conf_accepting_plain_bundles_fails" "wks partitions"

fresh
sed -i 's/^FLEET_PART_DATA:raspberrypi5 ??= "7"/FLEET_PART_DATA:raspberrypi5 ??= "6"/' "$l/recipes-core/fleet-rootfs/fleet-rootfs.bb"
check fail "a_data_partition_number_disagreeing_with_the_wks_fails" "wks partitions"

fresh
echo 'RAUC_KEY_FILE ?= "${LAYERDIR}/keys/dev.key.pem"' >> "$l/conf/layer.conf"
check fail "a_policy_variable_in_layer_conf_fails_hygiene" "layer hygiene"

fresh
echo 'PACKAGECONFIG:remove = "network"' > "$l/recipes-core/rauc/rauc_%.bbappend"
check fail "an_append_not_gated_on_the_fleet_feature_fails_hygiene" "layer hygiene"

fresh
sed -i 's/^    commit: ef022bf82d79015802309d14c28b13373ebe53f5$/    commit: wrynose/' "$scratch/case/kas/base.yml"
check fail "an_upstream_repository_not_pinned_by_commit_fails_the_kas_check" "kas files"

fresh
sed -i 's/^  version: 14$/  version: banana/' "$scratch/case/kas/opt/nvme.yml"
check fail "a_kas_file_violating_the_schema_fails" "kas files"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
