# Release guards of the fleet distro (inherited by conf/distro/fleet.conf).
#
# A release build (FLEET_RELEASE = "1") stops before anything is built when:
#   - the RAUC keyring, signing key or certificate is not given (kas/opt/release.yml takes them
#     from the environment), or the keyring holds a development CA: the development PKI
#     generator (keys/) writes the word DEVELOPMENT into its CA's subject;
#   - the firmware revision is not pinned (FLEET_SRCREV left at AUTOREV);
#   - a debugging image feature is enabled globally (EXTRA_IMAGE_FEATURES).
# Images check their own IMAGE_FEATURES (fleet-image.bbclass).

FLEET_DEV_CA_MARKER ??= "DEVELOPMENT"

def fleet_pem_certificates(path):
    """DER bytes of every certificate in a PEM file."""
    import base64
    ders, block, inside = [], [], False
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line == "-----BEGIN CERTIFICATE-----":
                inside, block = True, []
            elif line == "-----END CERTIFICATE-----" and inside:
                ders.append(base64.b64decode("".join(block)))
                inside = False
            elif inside:
                block.append(line)
    return ders

def fleet_is_development_ca(path, marker):
    """True when any certificate of the PEM file carries the development marker (its subject is
    plain text inside the DER encoding)."""
    return any(marker.encode() in der for der in fleet_pem_certificates(path))

def fleet_release_problems(d):
    problems = []
    for var in ("RAUC_KEYRING_FILE", "RAUC_KEY_FILE", "RAUC_CERT_FILE"):
        value = d.getVar(var) or ""
        if not value:
            problems.append("%s is not set (release keys come from the environment)" % var)
        elif not value.startswith("pkcs11:") and not os.path.isfile(value):
            problems.append("%s names %s, which does not exist" % (var, value))
    keyring = d.getVar("RAUC_KEYRING_FILE") or ""
    if keyring and os.path.isfile(keyring):
        if not fleet_pem_certificates(keyring):
            problems.append("RAUC_KEYRING_FILE %s holds no certificate" % keyring)
        elif fleet_is_development_ca(keyring, d.getVar("FLEET_DEV_CA_MARKER")):
            problems.append("RAUC_KEYRING_FILE %s is the development CA" % keyring)
    if (d.getVar("FLEET_SRCREV", False) or "").strip() in ("${AUTOREV}", "AUTOINC", ""):
        problems.append("FLEET_SRCREV is not pinned to a commit")
    debug = set((d.getVar("FLEET_DEBUG_IMAGE_FEATURES") or "").split())
    enabled = debug & set((d.getVar("EXTRA_IMAGE_FEATURES") or "").split())
    if enabled:
        problems.append("EXTRA_IMAGE_FEATURES enables debugging features: %s" % " ".join(sorted(enabled)))
    return problems

addhandler fleet_release_check
fleet_release_check[eventmask] = "bb.event.ConfigParsed"
python fleet_release_check() {
    d = e.data
    if "fleet" not in (d.getVar("DISTRO_FEATURES") or "").split():
        return
    if d.getVar("FLEET_RELEASE") != "1":
        return
    problems = fleet_release_problems(d)
    if problems:
        bb.fatal("fleet release build refused:\n  " + "\n  ".join(problems))
}
