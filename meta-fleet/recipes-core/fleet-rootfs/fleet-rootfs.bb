SUMMARY = "Station runtime of the fleet read-only root filesystem"
DESCRIPTION = "Mounts of the data and firmware partitions (derived from the root device, so one \
image serves SD and NVMe), first-boot growth of the data partition, first-boot provisioning from \
the boot partition, state bound from /data, journald limits, the hardware watchdog."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://fleet-mount-generator \
           file://fleet-grow-data \
           file://fleet-grow-data.service \
           file://fleet-provision \
           file://fleet-provision.service \
           file://fleet-machine-id-commit.service \
           file://etc-machine-id.mount \
           file://var-lib-systemd.mount \
           file://fleet-persist.tmpfiles \
           file://journald-fleet.conf \
           file://watchdog-fleet.conf \
           "
S = "${UNPACKDIR}"

inherit systemd

# Partition numbers of the layout (docs/adr/0001-boot-flow.md); the layer check compares them with
# the machine's wks files.
FLEET_PART_FIRMWARE ??= "1"
FLEET_PART_EXTENDED ??= ""
FLEET_PART_DATA ??= "4"
FLEET_PART_EXTENDED:raspberrypi5 ??= "4"
FLEET_PART_DATA:raspberrypi5 ??= "7"

# At most the BCM2712's limit (about 15 s); QEMU's i6300esb accepts the same.
FLEET_RUNTIME_WATCHDOG_SEC ??= "15s"

PACKAGE_ARCH = "${MACHINE_ARCH}"

do_install() {
    install -d ${D}${nonarch_libdir}/fleet ${D}${libexecdir} ${D}${systemd_system_unitdir} \
               ${D}${systemd_unitdir}/system-generators ${D}${nonarch_libdir}/tmpfiles.d \
               ${D}${nonarch_libdir}/systemd/journald.conf.d ${D}${nonarch_libdir}/systemd/system.conf.d \
               ${D}${FLEET_DATA_DIR} ${D}/boot/firmware
    printf '%s\n' "FLEET_DATA_DIR=${FLEET_DATA_DIR}" "FLEET_PART_FIRMWARE=${FLEET_PART_FIRMWARE}" \
                  "FLEET_PART_EXTENDED=${FLEET_PART_EXTENDED}" "FLEET_PART_DATA=${FLEET_PART_DATA}" \
                  > ${D}${nonarch_libdir}/fleet/layout.conf
    # The image's version (the bundle's RAUC_BUNDLE_VERSION too): what a freshly flashed station
    # reports, read by fleet-updated (version-file in /etc/fleet/updated.toml).
    install -d ${D}${sysconfdir}
    printf '%s\n' "${FLEET_VERSION}" > ${D}${sysconfdir}/fleet-version
    chmod 0644 ${D}${sysconfdir}/fleet-version
    install -m 0755 ${S}/fleet-mount-generator ${D}${systemd_unitdir}/system-generators/
    install -m 0755 ${S}/fleet-grow-data ${S}/fleet-provision ${D}${libexecdir}/
    for f in fleet-grow-data.service fleet-provision.service fleet-machine-id-commit.service \
             var-lib-systemd.mount; do
        install -m 0644 ${S}/$f ${D}${systemd_system_unitdir}/$f
    done
    install -m 0644 ${S}/etc-machine-id.mount ${D}${systemd_system_unitdir}/etc-machine\\x2did.mount
    install -m 0644 ${S}/fleet-persist.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/fleet-persist.conf
    install -m 0644 ${S}/journald-fleet.conf ${D}${nonarch_libdir}/systemd/journald.conf.d/50-fleet.conf
    install -m 0644 ${S}/watchdog-fleet.conf ${D}${nonarch_libdir}/systemd/system.conf.d/50-fleet-watchdog.conf
    sed -i -e 's,@DATADIR@,${FLEET_DATA_DIR},g' -e 's,@LIBEXECDIR@,${libexecdir},g' \
           -e 's,@RUNTIME_WATCHDOG_SEC@,${FLEET_RUNTIME_WATCHDOG_SEC},g' \
           ${D}${systemd_system_unitdir}/*.service ${D}${systemd_system_unitdir}/*.mount \
           ${D}${nonarch_libdir}/tmpfiles.d/fleet-persist.conf \
           ${D}${nonarch_libdir}/systemd/system.conf.d/50-fleet-watchdog.conf
}

SYSTEMD_SERVICE:${PN} = "fleet-grow-data.service fleet-provision.service fleet-machine-id-commit.service \
                         etc-machine\\x2did.mount var-lib-systemd.mount"

FILES:${PN} += "${sysconfdir}/fleet-version ${systemd_unitdir}/system-generators ${nonarch_libdir}/fleet ${nonarch_libdir}/tmpfiles.d \
                ${nonarch_libdir}/systemd ${FLEET_DATA_DIR} /boot/firmware"

RDEPENDS:${PN} = "util-linux-sfdisk util-linux-partx util-linux-findmnt e2fsprogs-resize2fs coreutils"
