# fleet on the Raspberry Pi 5, only with the `fleet` distro feature (content: fleet-image_fleet.inc).
require ${@bb.utils.contains('DISTRO_FEATURES', 'fleet', 'fleet-image_fleet.inc', '', d)}
