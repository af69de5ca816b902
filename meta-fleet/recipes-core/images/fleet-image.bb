SUMMARY = "Fleet station image: read-only root filesystem with the fleet firmware and RAUC"
DESCRIPTION = "The root filesystem of one A/B slot (ext4, the bundle's rootfs image) and the \
whole disk image (wic, for bmaptool) of a fleet field station."
LICENSE = "Apache-2.0"

inherit core-image

IMAGE_FEATURES += "read-only-rootfs"
# Development conveniences come only from kas/opt/development.yml (EXTRA_IMAGE_FEATURES).

IMAGE_INSTALL = " \
    packagegroup-core-boot \
    fleet-firmware \
    fleet-rootfs \
    fleet-network \
    rauc \
    fleet-rauc-conf \
    ${FLEET_BOOT_FLOW_PACKAGES} \
    alsa-utils-arecord alsa-utils-amixer \
    systemd-extra-utils \
    e2fsprogs-e2fsck dosfstools \
    kernel-modules \
"
FLEET_BOOT_FLOW_PACKAGES ??= ""
FLEET_BOOT_FLOW_PACKAGES:qemuarm64 ??= "libubootenv-bin kernel-image"

# RAUC's unconditional commit unit: fleet-updated commits only a slot that passed its health checks.
BAD_RECOMMENDATIONS += "rauc-mark-good"

IMAGE_LINGUAS = ""
IMAGE_FSTYPES = "ext4 wic.zst wic.bmap"
# The ext4 image is the slot image of the bundle: fixed UUID and hash seed, mke2fs's clock
# pinned, so identical content gives identical bytes (adaptive updates, block-hash index).
EXTRA_IMAGECMD:ext4 = "-i 4096 -U ${FLEET_EXT4_UUID} -E hash_seed=${FLEET_EXT4_HASH_SEED}"
do_image_ext4[vardeps] += "FLEET_EXT4_UUID FLEET_EXT4_HASH_SEED"
export E2FSPROGS_FAKE_TIME = "${REPRODUCIBLE_TIMESTAMP_ROOTFS}"

# Slots are fixed-size partitions: fail the build, not the station, when the rootfs outgrows them.
IMAGE_ROOTFS_MAXSIZE = "${@int(d.getVar('FLEET_ROOTFS_SLOT_SIZE_MB')) * 1024}"
FLEET_ROOTFS_SLOT_SIZE_MB ??= "2048"
FLEET_ROOTFS_SLOT_SIZE = "${FLEET_ROOTFS_SLOT_SIZE_MB}M"
FLEET_DATA_INITIAL_SIZE ??= "256M"
# Disk and file-system identifiers of the wic image (reproducible disk images).
FLEET_DISK_ID ??= "0xf1ee7001"
FLEET_FSUUID_CONFIG ??= "0xF1EE0001"
FLEET_FSUUID_BOOT_A ??= "0xF1EE0002"
FLEET_FSUUID_BOOT_B ??= "0xF1EE0003"
FLEET_FSUUID_ROOT_A ??= "6d0c4a63-6c2f-4c0b-9a52-0f1ee7000005"
FLEET_FSUUID_ROOT_B ??= "6d0c4a63-6c2f-4c0b-9a52-0f1ee7000006"
FLEET_FSUUID_DATA ??= "6d0c4a63-6c2f-4c0b-9a52-0f1ee7000007"

# The disk layout of the machine (files/wic/). The Pi glue (dynamic-layers/raspberrypi) picks SD
# or NVMe with FLEET_BOOT_MEDIUM.
WKS_FILE = "fleet-${MACHINE}.wks.in"
WKS_FILE_DEPENDS:append = " dosfstools-native mtools-native e2fsprogs-native"

# qemuarm64 U-Boot flow: the FAT boot partition holds boot.scr and the initial uboot.env.
IMAGE_BOOT_FILES:qemuarm64 = "boot.scr uboot.env"
do_image_wic[depends] += "${@'fleet-uboot-script:do_deploy' if d.getVar('FLEET_BOOT_FLOW') == 'uboot' else ''}"
# The U-Boot flow needs U-Boot itself deployed (QEMU loads it with -bios; the Pi option from FAT).
EXTRA_IMAGEDEPENDS += "${@'virtual/bootloader' if d.getVar('FLEET_BOOT_FLOW') == 'uboot' else ''}"
WICVARS:append = " FLEET_ROOTFS_SLOT_SIZE FLEET_DATA_INITIAL_SIZE FLEET_EXT4_HASH_SEED FLEET_DISK_ID \
                   FLEET_FSUUID_CONFIG FLEET_FSUUID_BOOT_A FLEET_FSUUID_BOOT_B FLEET_FSUUID_ROOT_A \
                   FLEET_FSUUID_ROOT_B FLEET_FSUUID_DATA"

# Release images: no debugging features, a root password for the serial console from the
# environment (kas/opt/release.yml), nothing else to log in with.
inherit extrausers
FLEET_ROOT_PASSWORD_HASH ??= ""
EXTRA_USERS_PARAMS = "${@"usermod -p '%s' root;" % d.getVar('FLEET_ROOT_PASSWORD_HASH') if d.getVar('FLEET_ROOT_PASSWORD_HASH') else ''}"

python __anonymous() {
    if d.getVar("FLEET_RELEASE") != "1":
        return
    debug = set(d.getVar("FLEET_DEBUG_IMAGE_FEATURES").split()) & set(d.getVar("IMAGE_FEATURES").split())
    if debug:
        bb.fatal("fleet-image: a release image may not enable %s" % " ".join(sorted(debug)))
    if not d.getVar("FLEET_ROOT_PASSWORD_HASH"):
        bb.fatal("fleet-image: a release image needs FLEET_ROOT_PASSWORD_HASH for the serial console")
}
