SUMMARY = "U-Boot A/B boot script and initial environment of the fleet U-Boot boot flow"
DESCRIPTION = "boot.scr from files/boot.cmd.in (the same source the QEMU system tests use) and \
uboot.env (0x4000 bytes, CRC32 header, as fw_setenv writes it) with BOOT_ORDER and BOOT_x_LEFT."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://boot.cmd.in"
S = "${UNPACKDIR}"

DEPENDS = "u-boot-mkimage-native u-boot-tools-native"
INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"

inherit kernel-arch deploy nopackages

# Device names of the machine's layout (files/wic/fleet-qemuarm64.wks.in): U-Boot's view
# (interface, device number) and Linux's (disk name, partition prefix).
FLEET_UBOOT_DEVTYPE ??= "virtio"
FLEET_UBOOT_DEVNUM ??= "0"
FLEET_UBOOT_ROOT_DISK ??= "vda"
FLEET_UBOOT_ROOT_PART_PREFIX ??= ""
FLEET_UBOOT_DEVTYPE:rpi ??= "mmc"
FLEET_UBOOT_ROOT_DISK:rpi ??= "mmcblk0"
FLEET_UBOOT_ROOT_PART_PREFIX:rpi ??= "p"
FLEET_UBOOT_CONSOLE ??= "${@d.getVar('SERIAL_CONSOLES').split()[0].split(';')[1]}"
FLEET_UBOOT_ENV_SIZE = "0x4000"

do_compile() {
    sed -e 's/@@BOOT_DEVTYPE@@/${FLEET_UBOOT_DEVTYPE}/g' \
        -e 's/@@BOOT_DEVNUM@@/${FLEET_UBOOT_DEVNUM}/g' \
        -e 's/@@ROOT_DISK@@/${FLEET_UBOOT_ROOT_DISK}/g' \
        -e 's/@@ROOT_PART_PREFIX@@/${FLEET_UBOOT_ROOT_PART_PREFIX}/g' \
        -e 's/@@BOOT_ATTEMPTS@@/${FLEET_BOOT_ATTEMPTS}/g' \
        -e 's/@@CONSOLE@@/${FLEET_UBOOT_CONSOLE}/g' \
        -e 's/@@KERNEL_IMAGETYPE@@/${KERNEL_IMAGETYPE}/g' \
        -e 's/@@ENV_SIZE@@/${FLEET_UBOOT_ENV_SIZE}/g' \
        ${S}/boot.cmd.in > ${B}/boot.cmd
    if grep -n '@@[A-Z_]*@@' ${B}/boot.cmd; then
        bbfatal "boot.cmd.in uses a placeholder this recipe does not substitute"
    fi
    mkimage -A ${UBOOT_ARCH} -T script -C none -n "fleet A/B boot script" -d ${B}/boot.cmd ${B}/boot.scr
    printf '%s\n' "BOOT_ORDER=A B" "BOOT_A_LEFT=${FLEET_BOOT_ATTEMPTS}" "BOOT_B_LEFT=${FLEET_BOOT_ATTEMPTS}" > ${B}/uboot.env.txt
    mkenvimage -s ${FLEET_UBOOT_ENV_SIZE} -o ${B}/uboot.env ${B}/uboot.env.txt
}

do_deploy() {
    install -m 0644 ${B}/boot.scr ${B}/uboot.env ${DEPLOYDIR}/
}
addtask deploy after do_compile before do_build
