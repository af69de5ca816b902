SUMMARY = "RAUC system configuration and keyring of fleet stations"
DESCRIPTION = "One system.conf per boot medium of the machine (slot devices as in the machine's \
wks files), the bundle-verification keyring, and the U-Boot environment location for the U-Boot flow."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Only machines with a layout in files/<machine>/ (FILESOVERRIDES picks the directory).
COMPATIBLE_MACHINE = "^(raspberrypi5|qemuarm64)$"

FLEET_RAUC_MEDIA ??= "vda"
FLEET_RAUC_MEDIA:raspberrypi5 ??= "mmcblk0 nvme0n1"

SRC_URI = "${@' '.join('file://system-%s.conf' % m for m in d.getVar('FLEET_RAUC_MEDIA').split())} \
           file://fw_env.config \
           file://de.pengutronix.rauc.conf \
           "
S = "${UNPACKDIR}"

# The keyring comes from the kas option (development: keys/ of this repository; release: the
# environment). fleet-sanity.bbclass refuses a development CA in release builds.
RAUC_KEYRING_FILE ??= ""
do_install[file-checksums] += "${RAUC_KEYRING_FILE}:True"

RPROVIDES:${PN} += "virtual-rauc-conf"
INHIBIT_DEFAULT_DEPS = "1"
PACKAGE_ARCH = "${MACHINE_ARCH}"
do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${nonarch_libdir}/fleet/rauc ${D}${nonarch_libdir}/rauc ${D}${datadir}/dbus-1/system.d
    for m in ${FLEET_RAUC_MEDIA}; do
        sed -e 's,@FLEET_COMPATIBLE@,${FLEET_COMPATIBLE},g' -e 's,@FLEET_DATA_DIR@,${FLEET_DATA_DIR},g' \
            -e 's,@FLEET_BOOT_ATTEMPTS@,${FLEET_BOOT_ATTEMPTS},g' \
            ${S}/system-$m.conf > ${D}${nonarch_libdir}/fleet/rauc/system-$m.conf
        chmod 0644 ${D}${nonarch_libdir}/fleet/rauc/system-$m.conf
    done
    if [ -z "${RAUC_KEYRING_FILE}" ] || [ ! -f "${RAUC_KEYRING_FILE}" ]; then
        bbfatal "RAUC_KEYRING_FILE must name the CA certificate bundles are verified with (kas/opt/*.yml)"
    fi
    install -m 0644 ${RAUC_KEYRING_FILE} ${D}${nonarch_libdir}/rauc/ca.cert.pem
    # Only root and the update agent may talk to RAUC (replaces RAUC's own policy, see rauc bbappend).
    install -m 0644 ${S}/de.pengutronix.rauc.conf ${D}${datadir}/dbus-1/system.d/fleet-rauc.conf
    if [ "${FLEET_BOOT_FLOW}" = "uboot" ]; then
        install -d ${D}${sysconfdir}
        install -m 0644 ${S}/fw_env.config ${D}${sysconfdir}/fw_env.config
    fi
}

FILES:${PN} = "${nonarch_libdir}/fleet/rauc ${nonarch_libdir}/rauc ${datadir}/dbus-1/system.d ${sysconfdir}/fw_env.config"
CONFFILES:${PN} = ""
