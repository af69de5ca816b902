#!/usr/bin/env python3
"""Reads meta-fleet the way BitBake would, for the systemd test station (no BitBake here).

    layer.py vars    LAYER MACHINE [NAME=VALUE...]           print the resolved variables
    layer.py install LAYER MACHINE RECIPE DEST [NAME=VALUE...]  run the recipe's do_install
                                                             (and its bbappend's :append) into DEST
    layer.py users   LAYER MACHINE                           groupadd/useradd lines of fleet-firmware
    layer.py units   LAYER MACHINE                           SYSTEMD_SERVICE of the image's recipes
    layer.py wks     LAYER MACHINE WKS [NAME=VALUE...]       the disk layout of a .wks.in as JSON
                                                             (variables from fleet-image.bb)
    layer.py expand  LAYER MACHINE FILE [NAME=VALUE...]      the file with its ${NAME}s filled
                                                             in, as wic gets it (fleet-image.bb)

Only the BitBake syntax the layer uses: `NAME[:override] (=|?=|??=|:=|+=) "value"` with
backslash continuations, `${NAME}` expansion (a name BitBake does not know stays for the
shell, as in BitBake's shell functions), and `do_install() { ... }` / `do_install:append() {
... }` bodies. Variables set from the command line win (they stand in for kas's local.conf).
Overrides: the machine's name. A `${@...}` Python expression is refused where it would be used.
"""
import json
import os
import re
import shlex
import subprocess
import sys

ASSIGN = re.compile(r'^([A-Za-z_][A-Za-z0-9_\-]*)((?::[A-Za-z0-9_\-${}.]+)*)\s*(\?\?=|\?=|:=|\+=|=)\s*"(.*)"\s*$')
REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_\-]*(?::[A-Za-z0-9_\-]+)*)\}")

# oe-core's bitbake.conf paths (usrmerge, as the fleet distro's systemd image) and what the
# build directory would hold.
OE_PATHS = {
    "prefix": "/usr", "bindir": "/usr/bin", "sbindir": "/usr/sbin", "libexecdir": "/usr/libexec",
    "sysconfdir": "/etc", "datadir": "/usr/share", "nonarch_libdir": "/usr/lib",
    "systemd_unitdir": "/usr/lib/systemd", "systemd_system_unitdir": "/usr/lib/systemd/system",
    "COMMON_LICENSE_DIR": "/nonexistent",
}


# Machines of the layer: an override naming another machine is inactive.
MACHINES = ("qemuarm64", "raspberrypi5")


def logical_lines(path):
    text = open(path).read().replace("\\\n", " ")
    return text.split("\n")


class Layer:
    def __init__(self, layer, machine, extra=()):
        self.layer = layer
        self.machine = machine
        self.vars = dict(OE_PATHS, MACHINE=machine)
        self.fixed = {}
        for item in extra:
            k, _, v = item.partition("=")
            self.fixed[k] = v
        self.read(os.path.join(layer, "conf/distro/fleet.conf"))

    def read(self, path):
        """Applies a recipe/conf file's assignments (machine overrides after plain ones)."""
        plain, over = [], []
        for line in logical_lines(path):
            m = ASSIGN.match(line.strip())
            if not m:
                continue
            name, overrides, op, value = m.groups()
            ov = [o for o in overrides.split(":") if o]
            if not ov:
                plain.append((name, op, value))
            elif ov == [self.machine]:
                over.append((name, op, value))
            elif len(ov) == 1 and ov[0] not in MACHINES and ov[0] not in ("append", "prepend", "remove"):
                # NAME:pkg (FILES:fleet, SYSTEMD_SERVICE:fleet-updated): a flag of its own name.
                plain.append((f"{name}:{ov[0]}", op, value))
        for name, op, value in plain:
            if op in ("??=", "?=") and name in self.vars:
                continue
            if op == "+=":
                self.vars[name] = (self.vars.get(name, "") + " " + value).strip()
            else:
                self.vars[name] = value
        # NAME:<machine> replaces NAME whatever its operator (BitBake's override rule).
        for name, op, value in over:
            self.vars[name] = (self.vars.get(name, "") + " " + value).strip() if op == "+=" else value
        self.vars.update(self.fixed)

    def expand(self, text, strict=True, depth=0):
        if depth > 20:
            raise SystemExit(f"layer.py: recursive expansion in {text!r}")

        def sub(m):
            name = m.group(1)
            if name in self.vars:
                return self.expand(self.vars[name], strict, depth + 1)
            return m.group(0)

        out = REF.sub(sub, text)
        if strict and "${@" in out:
            raise SystemExit(f"layer.py: Python expression in {text!r}: not supported")
        return out

    def get(self, name):
        return self.expand(self.vars.get(name, ""))

    def functions(self, path):
        """Shell function bodies by name: do_install, do_install:append, do_compile..."""
        funcs = {}
        lines = open(path).read().split("\n")
        i = 0
        while i < len(lines):
            m = re.match(r"^([a-z_]+(?::append|:prepend)?)\(\)\s*\{\s*$", lines[i])
            if m:
                body = []
                i += 1
                while i < len(lines) and lines[i] != "}":
                    body.append(lines[i])
                    i += 1
                funcs[m.group(1)] = "\n".join(body)
            i += 1
        return funcs


def recipe_files(layer, recipe):
    """The recipe, its includes (`require`) and every bbappend's include of the fleet distro."""
    files = [recipe]
    for line in open(recipe):
        m = re.match(r"^require\s+(\S+)", line)
        if m:
            files.append(os.path.join(os.path.dirname(recipe), m.group(1)))
    return files


def cmd_install(layer_dir, machine, recipe, dest, extra):
    lay = Layer(layer_dir, machine, extra)
    recipe = os.path.join(layer_dir, recipe)
    files = recipe_files(layer_dir, recipe)
    for f in files:
        lay.read(f)
    lay.vars.update(lay.fixed)
    funcs = {}
    for f in files:
        for k, v in lay.functions(f).items():
            funcs[k] = funcs.get(k, "") + "\n" + v if k.endswith(":append") else v
    base = os.path.dirname(recipe)
    unpack = os.path.join(base, "files")
    script = ["set -e", "bbfatal() { echo \"bbfatal: $*\" >&2; exit 1; }",
              f"D={dest!r}", f"S={unpack!r}", f"UNPACKDIR={unpack!r}", f"B={lay.fixed.get('B', '/nonexistent')!r}"]
    lay.vars.setdefault("D", dest)
    lay.vars["D"] = dest
    lay.vars["S"] = lay.vars["UNPACKDIR"] = unpack
    if "B" in lay.fixed:
        lay.vars["B"] = lay.fixed["B"]
    for name in ("do_compile", "do_install", "do_install:append"):
        if name in funcs and name in lay.fixed.get("FUNCS", "do_install do_install:append").split():
            script.append(f"# {name} of {os.path.relpath(recipe, layer_dir)}")
            script.append(lay.expand(funcs[name]))
    out = subprocess.run(["bash", "-c", "\n".join(script)])
    return out.returncode


def cmd_users(layer_dir, machine):
    lay = Layer(layer_dir, machine)
    recipe = os.path.join(layer_dir, "recipes-fleet/fleet-firmware/fleet-firmware_git.bb")
    lay.read(recipe)
    # The useradd class takes several groups or users in one value, separated by ";".
    for pkg in lay.get("USERADD_PACKAGES").split():
        for g in lay.get(f"GROUPADD_PARAM:{pkg}").split(";"):
            if g.strip():
                print("groupadd " + " ".join(g.split()))
    for pkg in lay.get("USERADD_PACKAGES").split():
        for u in lay.get(f"USERADD_PARAM:{pkg}").split(";"):
            if u.strip():
                print("useradd " + " ".join(u.split()))
    return 0


def cmd_units(layer_dir, machine, recipes):
    units = []
    for r in recipes:
        one = Layer(layer_dir, machine)
        one.read(os.path.join(layer_dir, r))
        for key, value in one.vars.items():
            if key.startswith("SYSTEMD_SERVICE:"):
                units += one.expand(value).replace("\\\\", "\\").split()
    print(" ".join(dict.fromkeys(units)))
    return 0


def cmd_expand(layer_dir, machine, path, extra):
    lay = Layer(layer_dir, machine, extra)
    lay.read(os.path.join(layer_dir, "recipes-core/images/fleet-image.bb"))
    for line in logical_lines(path):
        print(line if line.lstrip().startswith("#") else lay.expand(line))
    return 0


def cmd_wks(layer_dir, machine, wks, extra):
    # The variables wic gets (WICVARS) come from the image recipe.
    lay = Layer(layer_dir, machine, extra)
    lay.read(os.path.join(layer_dir, "recipes-core/images/fleet-image.bb"))
    parts, table = [], None
    for line in logical_lines(wks):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = shlex.split(lay.expand(line))
        if words[0] == "bootloader":
            opts = dict(zip(words[1::2], words[2::2]))
            table = {"ptable": opts.get("--ptable"), "diskid": opts.get("--diskid")}
        elif words[0] == "part":
            p, i = {}, 1
            if not words[1].startswith("--"):
                p["mount"] = words[1]
                i = 2
            while i < len(words):
                k = words[i]
                if "=" in k:
                    name, _, value = k.partition("=")
                    p[name[2:]] = value
                    i += 1
                elif k in ("--active", "--no-fstab-update"):
                    p[k[2:]] = True
                    i += 1
                else:
                    p[k[2:]] = words[i + 1]
                    i += 2
            size = p.get("fixed-size") or p.get("size")
            m = re.match(r"^(\d+)([KMG]?)$", size or "")
            if not m:
                raise SystemExit(f"layer.py: unsupported size {size!r} in {wks}")
            p["mib"] = int(m.group(1)) * {"K": 1 / 1024, "M": 1, "G": 1024, "": 1}[m.group(2)]
            parts.append(p)
    # wic on msdos: with more than four partitions the fourth becomes an extended partition
    # holding the rest as logical ones (p5, p6, ...), as the wks comments say.
    numbered = []
    for i, p in enumerate(parts):
        n = i + 1 if table["ptable"] != "msdos" or len(parts) <= 4 or i < 3 else i + 2
        numbered.append(dict(p, number=n))
    print(json.dumps({"table": table, "parts": numbered}, indent=1))
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "vars":
        lay = Layer(argv[2], argv[3], argv[4:])
        for k in sorted(lay.vars):
            print(f"{k}={lay.get(k)}")
        return 0
    if cmd == "install":
        return cmd_install(argv[2], argv[3], argv[4], argv[5], argv[6:])
    if cmd == "users":
        return cmd_users(argv[2], argv[3])
    if cmd == "units":
        return cmd_units(argv[2], argv[3], argv[4:])
    if cmd == "wks":
        return cmd_wks(argv[2], argv[3], argv[4], argv[5:])
    if cmd == "expand":
        return cmd_expand(argv[2], argv[3], argv[4], argv[5:])
    raise SystemExit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
