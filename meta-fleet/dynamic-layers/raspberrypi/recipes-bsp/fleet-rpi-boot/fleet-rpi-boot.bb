SUMMARY = "Raspberry Pi 5 tryboot files of fleet stations"
DESCRIPTION = "autoboot.txt of the config partition (slot A committed), cmdline.txt of each slot's \
boot partition, and the boot partition image (vfat) that the bundle installs into bootfs.N."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

COMPATIBLE_MACHINE = "^raspberrypi5$"
INHIBIT_DEFAULT_DEPS = "1"
DEPENDS = "dosfstools-native mtools-native"
PACKAGE_ARCH = "${MACHINE_ARCH}"

SRC_URI = "file://autoboot.txt file://bootfs-post-install"
S = "${UNPACKDIR}"

inherit deploy nopackages

# Kernel command line of a slot; root= names the slot's root partition on the boot medium
# (p5 for boot-a, p6 for boot-b). The bundle's bootfs hook rewrites root= for the slot it fills.
FLEET_RPI_CMDLINE ??= "console=ttyAMA10,115200 rootfstype=ext4 rootwait ro panic=10 fsck.repair=yes"
FLEET_DISK ??= "${@{'sd': 'mmcblk0', 'nvme': 'nvme0n1'}[d.getVar('FLEET_BOOT_MEDIUM')]}"
FLEET_BOOT_MEDIUM ??= "sd"
# Size of the boot partition image in the bundle (the partitions are 256 MiB).
FLEET_BOOTFS_SIZE_KB ??= "131072"

# Files of a slot's boot partition, from the kernel's and rpi-bootfiles' deploy directories.
FLEET_RPI_BOOT_FILES = "${KERNEL_IMAGETYPE};${SDIMG_KERNELIMAGE} ${@make_dtb_boot_files(d)} ${BOOTFILES_DIR_NAME}/config.txt"

do_compile() {
    for slot in a:5 b:6; do
        echo "root=/dev/${FLEET_DISK}p${slot#*:} ${FLEET_RPI_CMDLINE}" > ${B}/cmdline-${slot%:*}.txt
    done
}

do_deploy() {
    install -d ${DEPLOYDIR}/fleet
    install -m 0644 ${S}/autoboot.txt ${DEPLOYDIR}/fleet/autoboot.txt
    install -m 0644 ${B}/cmdline-a.txt ${B}/cmdline-b.txt ${DEPLOYDIR}/fleet/
    # The bootfs slot image: same files as boot-a, reproducible (fixed volume id, fixed mtimes).
    img=${B}/fleet-bootfs.vfat
    rm -rf $img ${B}/stage
    mkfs.vfat -n BOOT -i F1EE0010 -C $img ${FLEET_BOOTFS_SIZE_KB}
    # entries are "<deployed file>[;<name in the image>]", as IMAGE_BOOT_FILES
    entries="${FLEET_RPI_BOOT_FILES} fleet/cmdline-a.txt;cmdline.txt"
    for entry in $entries; do
        src=${entry%%;*}; dst=${entry#*;}
        [ "$dst" = "$entry" ] && dst=$(basename $src)
        if [ -e ${DEPLOY_DIR_IMAGE}/$src ]; then from=${DEPLOY_DIR_IMAGE}/$src; else from=${DEPLOYDIR}/$src; fi
        case $dst in */*) mmd -D s -i $img ::$(dirname $dst) 2>/dev/null || true ;; esac
        # a staged copy with a fixed mtime, so the FAT image is reproducible
        install -m 0644 -D $from ${B}/stage/$dst
        touch -d @${SOURCE_DATE_EPOCH} ${B}/stage/$dst
        mcopy -m -i $img ${B}/stage/$dst ::$dst
    done
    install -m 0644 $img ${DEPLOYDIR}/fleet-bootfs-${MACHINE}.vfat
    install -m 0755 ${S}/bootfs-post-install ${DEPLOYDIR}/fleet/bootfs-post-install
}
do_deploy[depends] += "virtual/kernel:do_deploy rpi-bootfiles:do_deploy"
addtask deploy after do_compile before do_build
