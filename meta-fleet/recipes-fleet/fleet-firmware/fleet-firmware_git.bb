SUMMARY = "Fleet station firmware: daemons, boot control and the recovery CLI"
DESCRIPTION = "Builds the Rust workspace of this repository with oe-core's cargo class. \
Every crate comes from a crate:// entry of fleet-firmware-crates.inc, generated from Cargo.lock, \
so do_compile never touches the network."
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The firmware source is this repository, at the commit the distro names (FLEET_SRCREV).
SRC_URI = "git://${FLEET_GIT_URL};protocol=${FLEET_GIT_PROTOCOL};branch=${FLEET_GIT_BRANCH};name=fleet;destsuffix=fleet \
           file://fleet-updated.service \
           file://fleet-recorderd.service \
           file://fleet-retentiond.service \
           file://fleet-boot-check.service \
           file://fleet-reboot.service \
           file://fleet-reboot.path \
           file://fleet-reboot \
           file://fleet-request-reboot \
           file://fleet-firmware.tmpfiles \
           file://bootctl-${FLEET_BOOT_FLOW}.toml \
           file://retentiond.toml \
           file://recorderd.toml \
           file://updated.toml \
           "
SRCREV_fleet = "${FLEET_SRCREV}"
SRCREV_FORMAT = "fleet"
PV = "${FLEET_VERSION}+git"

S = "${UNPACKDIR}/fleet"

require fleet-firmware-crates.inc

inherit cargo cargo-update-recipe-crates systemd useradd

# Only the station's programs: fleetctl (operator CLI), fleet-sim and fleet-testkit stay on hosts.
FLEET_DEVICE_CRATES = "fleet fleet-bootctl fleet-updated fleet-recorderd fleet-retentiond"
CARGO_BUILD_FLAGS += "${@' '.join('-p ' + c for c in d.getVar('FLEET_DEVICE_CRATES').split())}"
CARGO_LOCK_SRC_DIR = "${S}"

DEPENDS += "alsa-lib sqlite3"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    for unit in fleet-updated.service fleet-recorderd.service fleet-retentiond.service \
                fleet-boot-check.service fleet-reboot.service fleet-reboot.path \
                fleet-uploaderd.service fleet-reporterd.service \
                fleet-nvme-smart.service fleet-nvme-smart.timer \
                fleet-config-restart.path fleet-config-restart.service; do
        sed -e 's,@BINDIR@,${bindir},g' -e 's,@DATADIR@,${FLEET_DATA_DIR},g' \
            -e 's,@LIBEXECDIR@,${libexecdir},g' -e 's,@WATCHDOG_SEC@,${FLEET_WATCHDOG_SEC},g' \
            ${UNPACKDIR}/$unit > ${D}${systemd_system_unitdir}/$unit
        chmod 0644 ${D}${systemd_system_unitdir}/$unit
    done
    install -d ${D}${libexecdir}/fleet
    install -m 0755 ${UNPACKDIR}/fleet-reboot ${UNPACKDIR}/fleet-request-reboot \
        ${UNPACKDIR}/fleet-config-restart ${D}${libexecdir}/fleet/
    install -D -m 0644 ${UNPACKDIR}/fleet-firmware.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/fleet-firmware.conf
    sed -i -e 's,@DATADIR@,${FLEET_DATA_DIR},g' ${D}${nonarch_libdir}/tmpfiles.d/fleet-firmware.conf
    install -d ${D}${sysconfdir}/fleet
    sed -e 's,@DATADIR@,${FLEET_DATA_DIR},g' -e 's,@ATTEMPTS@,${FLEET_BOOT_ATTEMPTS},g' \
        -e 's,@LIBEXECDIR@,${libexecdir},g' ${UNPACKDIR}/bootctl-${FLEET_BOOT_FLOW}.toml > ${D}${sysconfdir}/fleet/bootctl.toml
    # Image defaults of every daemon (ADR 0008); station settings come from provisioning.
    for conf in retentiond.toml recorderd.toml updated.toml uploaderd.toml reporterd.toml; do
        sed -e 's,@DATADIR@,${FLEET_DATA_DIR},g' -e 's,@COMPATIBLE@,${FLEET_COMPATIBLE},g' \
            -e 's,@BOOT_FLOW@,${FLEET_BOOT_FLOW},g' -e 's,@LIBEXECDIR@,${libexecdir},g' \
            ${UNPACKDIR}/$conf > ${D}${sysconfdir}/fleet/$conf
        chmod 0644 ${D}${sysconfdir}/fleet/$conf
    done
    chmod 0644 ${D}${sysconfdir}/fleet/bootctl.toml
}

# systemd's watchdog interval for every daemon; each daemon pings at half of it.
FLEET_WATCHDOG_SEC ??= "30s"

# One package per program: binary, crate, systemd unit and package share the name.
PACKAGE_BEFORE_PN = "fleet fleet-bootctl fleet-updated fleet-recorderd fleet-retentiond"
ALLOW_EMPTY:${PN} = "1"
RDEPENDS:${PN} = "fleet fleet-bootctl fleet-updated fleet-recorderd fleet-retentiond"

FILES:fleet = "${bindir}/fleet"
FILES:fleet-bootctl = "${bindir}/fleet-bootctl ${sysconfdir}/fleet/bootctl.toml ${systemd_system_unitdir}/fleet-boot-check.service \
                       ${libexecdir}/fleet ${systemd_system_unitdir}/fleet-reboot.service \
                       ${systemd_system_unitdir}/fleet-reboot.path"
FILES:fleet-updated = "${bindir}/fleet-updated ${systemd_system_unitdir}/fleet-updated.service \
                       ${nonarch_libdir}/tmpfiles.d/fleet-firmware.conf ${sysconfdir}/fleet/updated.toml"
FILES:fleet-recorderd = "${bindir}/fleet-recorderd ${systemd_system_unitdir}/fleet-recorderd.service \
                         ${sysconfdir}/fleet/recorderd.toml"
FILES:fleet-retentiond = "${bindir}/fleet-retentiond ${systemd_system_unitdir}/fleet-retentiond.service \
                          ${sysconfdir}/fleet/retentiond.toml"

RDEPENDS:fleet-updated = "rauc fleet-bootctl"
# fleet-reboot and fleet-request-reboot are shell scripts.
RDEPENDS:fleet-bootctl = "${VIRTUAL-RUNTIME_base-utils}"
RDEPENDS:fleet-recorderd = "alsa-lib"

SYSTEMD_PACKAGES = "fleet-bootctl fleet-updated fleet-recorderd fleet-retentiond"
SYSTEMD_SERVICE:fleet-bootctl = "fleet-boot-check.service fleet-reboot.path"
SYSTEMD_SERVICE:fleet-updated = "fleet-updated.service"
SYSTEMD_SERVICE:fleet-recorderd = "fleet-recorderd.service"
SYSTEMD_SERVICE:fleet-retentiond = "fleet-retentiond.service"

# Dedicated system users, created at build time (the root filesystem is read-only).
USERADD_PACKAGES = "fleet-updated fleet-recorderd fleet-retentiond"
# fleet-mqtt: the daemons that connect with the station's MQTT identity (updated, reporterd).
GROUPADD_PARAM:fleet-updated = "--system fleet-data; --system fleet-mqtt"
USERADD_PARAM:fleet-updated = "--system --no-create-home --home-dir /nonexistent --shell /sbin/nologin \
                               --user-group --groups fleet-data,fleet-mqtt fleet-updated"
USERADD_PARAM:fleet-recorderd = "--system --no-create-home --home-dir /nonexistent --shell /sbin/nologin \
                                 --user-group --groups fleet-data,audio fleet-recorderd"
USERADD_PARAM:fleet-retentiond = "--system --no-create-home --home-dir /nonexistent --shell /sbin/nologin \
                                  --user-group --groups fleet-data fleet-retentiond"

python __anonymous() {
    if d.getVar("FLEET_RELEASE") == "1" and (d.getVar("SRCREV_fleet") or "") in ("", "AUTOINC"):
        bb.fatal("fleet-firmware: a release build needs FLEET_SRCREV pinned to the release commit")
}

# ---- fleet-uploaderd (ADR 0007): its unit, image config, user; kept in one block.
SRC_URI += "file://fleet-uploaderd.service file://uploaderd.toml"
FLEET_DEVICE_CRATES += "fleet-uploaderd"
PACKAGE_BEFORE_PN += "fleet-uploaderd"
RDEPENDS:${PN} += "fleet-uploaderd"
FILES:fleet-uploaderd = "${bindir}/fleet-uploaderd ${systemd_system_unitdir}/fleet-uploaderd.service \
                         ${sysconfdir}/fleet/uploaderd.toml"
SYSTEMD_PACKAGES += "fleet-uploaderd"
SYSTEMD_SERVICE:fleet-uploaderd = "fleet-uploaderd.service"
USERADD_PACKAGES += "fleet-uploaderd"
USERADD_PARAM:fleet-uploaderd = "--system --no-create-home --home-dir /nonexistent --shell /sbin/nologin \
                                 --user-group --groups fleet-data fleet-uploader"
RDEPENDS:fleet-uploaderd = "fleet-retentiond"
# The SFTP destination (ssh2 -> libssh2-sys) links oe-core's libssh2, CVE-patched there, instead
# of the copy bundled in the crate; libssh2 and openssl-sys use OpenSSL (in the image for RAUC).
DEPENDS += "libssh2 openssl zlib flac"
export LIBSSH2_SYS_USE_PKG_CONFIG = "1"

# --- fleet-reporterd: station health over MQTT (ADR 0006) ------------------------------------
SRC_URI += "file://fleet-reporterd.service file://reporterd.toml"
FLEET_DEVICE_CRATES += "fleet-reporterd"
PACKAGE_BEFORE_PN += "fleet-reporterd"
RDEPENDS:${PN} += "fleet-reporterd"
FILES:fleet-reporterd = "${bindir}/fleet-reporterd ${systemd_system_unitdir}/fleet-reporterd.service \
                         ${sysconfdir}/fleet/reporterd.toml"
SYSTEMD_PACKAGES += "fleet-reporterd"
SYSTEMD_SERVICE:fleet-reporterd = "fleet-reporterd.service"
USERADD_PACKAGES += "fleet-reporterd"
# The journal group comes from systemd; fleet-data and fleet-mqtt from fleet-updated's
# GROUPADD_PARAM.
USERADD_PARAM:fleet-reporterd = "--system --no-create-home --home-dir /nonexistent --shell /sbin/nologin \
                                 --user-group --groups fleet-data,systemd-journal,fleet-mqtt fleet-reporterd"
# NVMe wear for the reporter: `fleet nvme-smart` as root (CAP_SYS_ADMIN only), every 15 min.
SRC_URI += "file://fleet-nvme-smart.service file://fleet-nvme-smart.timer"
FILES:fleet-reporterd += "${systemd_system_unitdir}/fleet-nvme-smart.service \
                          ${systemd_system_unitdir}/fleet-nvme-smart.timer"
SYSTEMD_SERVICE:fleet-reporterd += "fleet-nvme-smart.timer"
RDEPENDS:fleet-reporterd += "fleet"
# --- end fleet-reporterd ----------------------------------------------------------------------

# --- signed configuration pushes (ADR 0011): fleet-updated's applier asks this root helper to
# restart the daemon whose pushed layer it wrote (as reboots go through fleet-reboot.path).
SRC_URI += "file://fleet-config-restart.path file://fleet-config-restart.service file://fleet-config-restart"
# (installed by the do_install:append above; the script lands in fleet-bootctl's libexec dir,
# beside fleet-reboot)
FILES:fleet-updated += "${systemd_system_unitdir}/fleet-config-restart.path \
                        ${systemd_system_unitdir}/fleet-config-restart.service"
SYSTEMD_SERVICE:fleet-updated += "fleet-config-restart.path"
# --- end configuration pushes ------------------------------------------------------------------

