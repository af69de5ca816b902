#!/usr/bin/env python3
"""Parse every .bb, .bbappend, .inc, .bbclass and .conf of a layer with the real BitBake parser.

bb comes from PyPI's bitbake-setup wheel (bitbake itself is not on PyPI); classes the layer
inherits from other layers are stubbed empty, so this checks syntax and the layer's own logic
that runs at parse time, not the upstream classes. usage: bbparse.py LAYERDIR
"""
import glob
import logging
import os
import re
import sys
import tempfile

stub = tempfile.mkdtemp(prefix="bbparse-")
os.makedirs(os.path.join(stub, "hashserv"))  # the wheel lacks lib/hashserv, which bb.siggen imports
for name in ("__init__.py", "client.py"):
    open(os.path.join(stub, "hashserv", name), "w").close()
sys.path.insert(0, stub)
import bb  # noqa: E402
import bb.data  # noqa: E402
import bb.parse  # noqa: E402
import bb.siggen  # noqa: E402

logging.basicConfig(level=logging.ERROR)
layer = os.path.abspath(sys.argv[1])


def find(*patterns):
    out = []
    for p in patterns:
        out += glob.glob(os.path.join(layer, "**", p), recursive=True)
    return sorted(set(out))


recipes = find("*.bb", "*.bbappend")
own_classes = {os.path.basename(c)[:-len(".bbclass")] for c in find("*.bbclass")}
inherited = set()
for f in recipes + find("*.inc", "*.bbclass", "*.conf"):
    for m in re.finditer(r"^\s*(?:inherit|inherit_defer|INHERIT\s*\+=)\s*\"?([^\"\n]+)", open(f).read(), re.M):
        inherited.update(c for c in m.group(1).split() if "$" not in c)
for kind in ("classes", "classes-recipe", "classes-global"):
    os.makedirs(os.path.join(stub, kind), exist_ok=True)
for c in inherited - own_classes:
    open(os.path.join(stub, "classes", c + ".bbclass"), "w").close()
# Files other layers provide (oe-core's distro includes): empty stubs at the same relative path.
for f in find("*.conf", "*.bbclass", "*.inc"):
    for m in re.finditer(r"^\s*(?:require|include)\s+(conf/\S+)", open(f).read(), re.M):
        if not os.path.exists(os.path.join(layer, m.group(1))):
            os.makedirs(os.path.dirname(os.path.join(stub, m.group(1))), exist_ok=True)
            open(os.path.join(stub, m.group(1)), "w").close()
bb.parse.siggen = bb.siggen.init(bb.data.init())


def base(pn="x"):
    d = bb.data.init()
    d.setVar("BBPATH", stub + ":" + layer)
    d.setVar("LAYERDIR", layer)
    d.setVar("__bbclasstype", "recipe")
    for var, val in dict(WORKDIR="/w", UNPACKDIR="/w/sources", COMMON_LICENSE_DIR="/lic", PN=pn, BPN=pn,
                         PV="1", BP=pn + "-1", MACHINE="qemuarm64", DISTRO_FEATURES="fleet rauc systemd",
                         OVERRIDES="qemuarm64:fleet", SERIAL_CONSOLES="115200;ttyAMA0").items():
        d.setVar(var, val)
    return d


passed = failed = 0


def report(ok, rel, err=None):
    global passed, failed
    if ok:
        passed += 1
        print("ok    " + rel)
    else:
        failed += 1
        print("FAIL  %s: %s: %s" % (rel, type(err).__name__, err))


for conf in find("*.conf"):
    rel = os.path.relpath(conf, layer)
    if "/files/" in conf or rel.startswith("files/"):
        continue  # payload (RAUC, journald, ...), not BitBake metadata
    try:
        d = base()
        bb.parse.handle(conf, d, include=True)
        report(True, rel)
    except Exception as e:  # the parser raises many kinds; each is a finding
        report(False, rel, e)

for f in recipes:
    rel = os.path.relpath(f, layer)
    pn = os.path.basename(f).split("_")[0].rsplit(".", 1)[0]
    try:
        d = base(pn)
        bb.parse.handle(os.path.join(layer, "conf", "layer.conf"), d, include=True)
        if f.endswith(".bbappend"):  # bb.parse has no handler for appends: parse as an include
            tmp = os.path.join(stub, os.path.basename(f) + ".inc")
            with open(f) as i, open(tmp, "w") as o:
                o.write(i.read())
            d.setVar("FILE", f)
            d.setVar("FILE_DIRNAME", os.path.dirname(f))
            d.setVar("THISDIR", os.path.dirname(f))
            d.setVar("BBPATH", d.getVar("BBPATH") + ":" + os.path.dirname(f))
            bb.parse.handle(tmp, d, include=True)
        else:
            bb.parse.handle(f, d)
        report(True, rel)
    except Exception as e:
        report(False, rel, e)

print("bbparse: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
