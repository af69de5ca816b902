# fleet: only with the `fleet` distro feature (the content is in u-boot_fleet.inc).
require ${@bb.utils.contains('DISTRO_FEATURES', 'fleet', 'u-boot_fleet.inc', '', d)}
