SUMMARY = "Network of fleet stations: Ethernet by DHCP always, Wi-Fi when provisioned"
DESCRIPTION = "systemd-networkd configuration (wired and wireless DHCP), wpa_supplicant started \
with the Wi-Fi network provisioning put on the data partition, and network-online meaning one \
link. See docs/adr/0009-network.md."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "file://80-fleet-wired.network \
           file://80-fleet-wlan.network \
           file://fleet-wifi.service \
           file://wait-online-fleet.conf \
           "
S = "${UNPACKDIR}"

inherit systemd

do_install() {
    install -d ${D}${nonarch_libdir}/systemd/network ${D}${systemd_system_unitdir} \
               ${D}${systemd_system_unitdir}/systemd-networkd-wait-online.service.d
    install -m 0644 ${S}/80-fleet-wired.network ${S}/80-fleet-wlan.network ${D}${nonarch_libdir}/systemd/network/
    sed -e 's,@DATADIR@,${FLEET_DATA_DIR},g' -e 's,@SBINDIR@,${sbindir},g' \
        ${S}/fleet-wifi.service > ${D}${systemd_system_unitdir}/fleet-wifi.service
    sed -e 's,@LIBDIR_SYSTEMD@,${nonarch_libdir}/systemd,g' ${S}/wait-online-fleet.conf \
        > ${D}${systemd_system_unitdir}/systemd-networkd-wait-online.service.d/50-fleet.conf
    chmod 0644 ${D}${systemd_system_unitdir}/fleet-wifi.service \
               ${D}${systemd_system_unitdir}/systemd-networkd-wait-online.service.d/50-fleet.conf
}

SYSTEMD_SERVICE:${PN} = "fleet-wifi.service"

FILES:${PN} += "${nonarch_libdir}/systemd/network ${systemd_system_unitdir}"

RDEPENDS:${PN} = "wpa-supplicant"
