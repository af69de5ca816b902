SUMMARY = "Network of fleet stations: Ethernet, Wi-Fi and cellular"
DESCRIPTION = "systemd-networkd configuration (wired and wireless DHCP), wpa_supplicant started \
with the Wi-Fi network provisioning put on the data partition, ModemManager connecting a \
cellular modem with the provisioned APN (fleet-cellular), and network-online meaning one \
link. See docs/adr/0009-network.md."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://80-fleet-wired.network \
           file://80-fleet-wlan.network \
           file://fleet-wifi.service \
           file://wait-online-fleet.conf \
           file://fleet-cellular \
           file://fleet-cellular.service \
           file://fleet-cellular.timer \
           file://fleet-network.tmpfiles \
           "
S = "${UNPACKDIR}"

inherit systemd

do_install() {
    install -d ${D}${nonarch_libdir}/systemd/network ${D}${systemd_system_unitdir} \
               ${D}${systemd_system_unitdir}/systemd-networkd-wait-online.service.d \
               ${D}${libexecdir} ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/80-fleet-wired.network ${S}/80-fleet-wlan.network ${D}${nonarch_libdir}/systemd/network/
    sed -e 's,@DATADIR@,${FLEET_DATA_DIR},g' -e 's,@SBINDIR@,${sbindir},g' \
        ${S}/fleet-wifi.service > ${D}${systemd_system_unitdir}/fleet-wifi.service
    sed -e 's,@LIBDIR_SYSTEMD@,${nonarch_libdir}/systemd,g' ${S}/wait-online-fleet.conf \
        > ${D}${systemd_system_unitdir}/systemd-networkd-wait-online.service.d/50-fleet.conf
    install -m 0755 ${S}/fleet-cellular ${D}${libexecdir}/
    sed -e 's,@DATADIR@,${FLEET_DATA_DIR},g' -e 's,@LIBEXECDIR@,${libexecdir},g' \
        ${S}/fleet-cellular.service > ${D}${systemd_system_unitdir}/fleet-cellular.service
    install -m 0644 ${S}/fleet-cellular.timer ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/fleet-network.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/fleet-network.conf
    chmod 0644 ${D}${systemd_system_unitdir}/fleet-cellular.service \
               ${D}${systemd_system_unitdir}/fleet-wifi.service \
               ${D}${systemd_system_unitdir}/systemd-networkd-wait-online.service.d/50-fleet.conf
}

SYSTEMD_SERVICE:${PN} = "fleet-wifi.service fleet-cellular.timer"

FILES:${PN} += "${nonarch_libdir}/systemd/network ${systemd_system_unitdir} ${libexecdir}/fleet-cellular \
                ${nonarch_libdir}/tmpfiles.d"

# Cellular: ModemManager (meta-oe) with its QMI and MBIM support (the common USB and M.2 LTE
# modems), mmcli for fleet-cellular.
RDEPENDS:${PN} = "wpa-supplicant modemmanager"
