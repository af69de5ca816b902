# fleet: only with the `fleet` distro feature (the content is in rauc_fleet.inc).
require ${@bb.utils.contains('DISTRO_FEATURES', 'fleet', 'rauc_fleet.inc', '', d)}
