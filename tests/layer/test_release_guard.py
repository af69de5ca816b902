#!/usr/bin/env python3
"""The release guard of fleet-sanity.bbclass, run on real certificates: the development CA that
keys/gen-dev-pki.sh makes is refused, a CA without the marker is not. Prints "N passed, N failed"."""
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CLASS = os.path.join(ROOT, "meta-fleet", "classes-global", "fleet-sanity.bbclass")


def load_guard():
    """The plain Python functions of the class (def blocks up to the next top-level statement)."""
    text = open(CLASS).read()
    defs = re.findall(r"^def .*?(?=^\S)", text, re.S | re.M)
    ns = {"os": os}
    exec("\n".join(defs), ns)
    return ns


class Datastore:
    def __init__(self, values):
        self.values = values

    def getVar(self, name, expand=True):
        return self.values.get(name)


def main():
    guard = load_guard()
    passed = failed = 0

    def expect(name, cond):
        nonlocal passed, failed
        if cond:
            passed += 1
            print("PASS: " + name)
        else:
            failed += 1
            print("FAIL: " + name)

    with tempfile.TemporaryDirectory() as tmp:
        dev = os.path.join(tmp, "dev")
        subprocess.run(["bash", os.path.join(ROOT, "keys", "gen-dev-pki.sh"), dev], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rel = os.path.join(tmp, "release-ca.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", os.path.join(tmp, "release-ca.key"), "-out", rel, "-days", "1",
                        "-subj", "/O=fleet/CN=fleet release CA"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dev_ca = os.path.join(dev, "ca.cert.pem")
        expect("the_development_ca_is_recognised_by_its_subject_marker",
               guard["fleet_is_development_ca"](dev_ca, "DEVELOPMENT"))
        expect("a_release_ca_is_not_taken_for_the_development_ca",
               not guard["fleet_is_development_ca"](rel, "DEVELOPMENT"))
        both = os.path.join(tmp, "both.pem")
        with open(both, "w") as f:
            f.write(open(rel).read() + open(dev_ca).read())
        expect("a_keyring_that_also_holds_the_development_ca_is_refused",
               guard["fleet_is_development_ca"](both, "DEVELOPMENT"))
        base = {"RAUC_KEYRING_FILE": dev_ca, "RAUC_KEY_FILE": os.path.join(dev, "dev.key.pem"),
                "RAUC_CERT_FILE": os.path.join(dev, "dev.cert.pem"), "FLEET_SRCREV": "0" * 40,
                "FLEET_DEV_CA_MARKER": "DEVELOPMENT", "FLEET_DEBUG_IMAGE_FEATURES": "allow-root-login",
                "EXTRA_IMAGE_FEATURES": ""}
        problems = guard["fleet_release_problems"](Datastore(base))
        expect("a_release_build_with_the_development_ca_is_refused",
               any("development CA" in p for p in problems))
        ok = dict(base, RAUC_KEYRING_FILE=rel)
        expect("a_release_build_with_release_keys_and_a_pinned_commit_passes",
               guard["fleet_release_problems"](Datastore(ok)) == [])
        expect("a_release_build_following_autorev_is_refused",
               any("FLEET_SRCREV" in p for p in guard["fleet_release_problems"](Datastore(dict(ok, FLEET_SRCREV="${AUTOREV}")))))
        expect("a_release_build_without_a_signing_key_is_refused",
               any("RAUC_KEY_FILE" in p for p in guard["fleet_release_problems"](Datastore(dict(ok, RAUC_KEY_FILE="")))))
        expect("a_release_build_enabling_root_login_is_refused",
               any("allow-root-login" in p for p in guard["fleet_release_problems"](Datastore(dict(ok, EXTRA_IMAGE_FEATURES="allow-root-login")))))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
