SUMMARY = "Fleet station update bundle (RAUC, verity format)"
DESCRIPTION = "Signed RAUC bundle with the root filesystem of fleet-image (and, on the Pi 5, the \
slot's boot partition), installed by fleet-updated through RAUC."
LICENSE = "Apache-2.0"

inherit bundle

RAUC_BUNDLE_COMPATIBLE = "${FLEET_COMPATIBLE}"
RAUC_BUNDLE_VERSION = "${FLEET_VERSION}"
RAUC_BUNDLE_DESCRIPTION = "${DISTRO_NAME} ${FLEET_VERSION} for ${MACHINE}"
# verity: the payload is checked block by block as it is read; stations refuse plain bundles.
RAUC_BUNDLE_FORMAT = "verity"
# Uncompressed squashfs (ADR 0012): a delta between two bundles stays small only when their
# bytes are not scrambled by compression; the transfer is zstd-compressed instead (fleetctl).
# The arguments are those of bundles/mksquashfs-args (the test bundles'; tests/layer checks
# that they agree). BUNDLE_ARGS is meta-rauc's bundle class's extra `rauc bundle` arguments.
FLEET_MKSQUASHFS_ARGS = "-noI -noD -noF -noX"
BUNDLE_ARGS += ' --mksquashfs-args="${FLEET_MKSQUASHFS_ARGS}" '
# The build stamp must not make identical content differ.
RAUC_BUNDLE_BUILD = "${SOURCE_DATE_EPOCH}"

RAUC_BUNDLE_SLOTS = "rootfs"
RAUC_SLOT_rootfs = "fleet-image"
RAUC_SLOT_rootfs[fstype] = "ext4"
# Blocks the station already holds are not downloaded twice.
RAUC_SLOT_rootfs[adaptive] = "block-hash-index"

# Every bundle carries the repository's install-check hook (bundles/hooks/install-check, the one
# the test bundles carry too): the compatible must match exactly and the version must not be
# below the station's version floor (docs/recovery-guide.md). It also hands slot hooks on to
# the scripts the machine adds beside it (RAUC_BUNDLE_EXTRA_FILES).
FILESEXTRAPATHS:prepend := "${FLEET_REPO_DIR}/bundles/hooks:"
SRC_URI += "file://install-check"
RAUC_BUNDLE_HOOKS[file] = "install-check"
RAUC_BUNDLE_HOOKS[hooks] = "install-check"

# Keys: kas/opt/development.yml (keys/ of this repository) or kas/opt/release.yml (environment).
RAUC_KEY_FILE ??= ""
RAUC_CERT_FILE ??= ""
RAUC_KEYRING_FILE ??= ""

