#!/usr/bin/env python3
"""Consistency and hygiene checks of meta-fleet that need no bitbake.

  layercheck.py layout  LAYERDIR   wks files vs RAUC system.conf vs fleet-rootfs partition numbers
                                   vs autoboot.txt (docs/adr/0001-boot-flow.md)
  layercheck.py hygiene LAYERDIR   what yocto-check-layer enforces, plus the house rules
  layercheck.py kas     FILE...    kas files against kas's own JSON schema

Prints one line per check and exits 1 when any fails.
"""
import configparser
import glob
import json
import os
import re
import shlex
import sys

failures = 0
passes = 0


def ok(msg):
    global passes
    passes += 1
    print("ok    " + msg)


def fail(msg):
    global failures
    failures += 1
    print("FAIL  " + msg)


# ---------------------------------------------------------------------------------------- wks
def parse_wks(path):
    """Partitions of a wks file, numbered as wic numbers them (msdos, more than four partitions:
    the fourth and later become logical partitions 5, 6, ... inside an extended partition 4)."""
    parts, ptable = [], None
    for raw in open(path):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = shlex.split(line)
        if words[0] == "bootloader":
            if "--ptable" in words:
                ptable = words[words.index("--ptable") + 1]
        elif words[0] == "part":
            opts, i = {}, 1
            if i < len(words) and not words[i].startswith("--"):
                opts["mountpoint"] = words[i]
                i += 1
            while i < len(words):
                key = words[i][2:]
                if "=" in key:
                    key, value = key.split("=", 1)
                    opts[key] = value
                    i += 1
                elif i + 1 < len(words) and not words[i + 1].startswith("--"):
                    opts[key] = words[i + 1]
                    i += 2
                else:
                    opts[key] = True
                    i += 1
            parts.append(opts)
    real = [p for p in parts if not p.get("no-table")]
    n = 0
    for p in real:
        n += 1
        p["number"] = n + 1 if (ptable == "msdos" and n > 3 and len(real) > 4) else n
    return ptable, real


def parse_system_conf(path):
    cp = configparser.ConfigParser(interpolation=None, strict=True)
    text = open(path).read()
    cp.read_string(text)
    return cp


def check_layout(layer):
    wic = os.path.join(layer, "files", "wic")
    rauc = os.path.join(layer, "recipes-core", "rauc", "files")
    rootfs = open(os.path.join(layer, "recipes-core", "fleet-rootfs", "fleet-rootfs.bb")).read()
    # machine layout: wks file -> (system.conf, expected labels by partition number, boot flow)
    expected = {
        "fleet-rpi5-sd.wks.in": ("system-mmcblk0.conf", "mmcblk0", "p", "custom",
                                 {1: "config", 2: "boot-a", 3: "boot-b", 5: "root-a", 6: "root-b", 7: "data"}),
        "fleet-rpi5-nvme.wks.in": ("system-nvme0n1.conf", "nvme0n1", "p", "custom",
                                   {1: "config", 2: "boot-a", 3: "boot-b", 5: "root-a", 6: "root-b", 7: "data"}),
        "fleet-qemuarm64.wks.in": ("system-vda.conf", "vda", "", "custom",
                                   {1: "boot", 2: "root-a", 3: "root-b", 4: "data"}),
    }
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(wic, "*.wks*")))
    if found != sorted(expected):
        fail("layout: wks files %s, expected %s" % (found, sorted(expected)))
    for wks, (conf, disk, sep, bootloader, labels) in sorted(expected.items()):
        path = os.path.join(wic, wks)
        if not os.path.exists(path):
            continue
        ptable, parts = parse_wks(path)
        name = "layout %s" % wks
        if ptable != "msdos":
            fail("%s: partition table %s, the boot flow needs msdos (MBR)" % (name, ptable))
        by_label = {p.get("label"): p for p in parts}
        got = {p["number"]: p.get("label") for p in parts}
        if got != labels:
            fail("%s: partitions %s, the ADR layout is %s" % (name, got, labels))
        else:
            ok("%s: partitions %s" % (name, " ".join("p%d=%s" % kv for kv in sorted(got.items()))))
        for p in parts:
            if p.get("ondisk") != disk:
                fail("%s: partition %s is on %s, expected %s" % (name, p.get("label"), p.get("ondisk"), disk))
            if p.get("mountpoint") and p.get("mountpoint") != "/":
                fail("%s: partition %s has mount point %s: the slots' fstab must not name a medium"
                     % (name, p.get("label"), p.get("mountpoint")))
        try:
            sc = parse_system_conf(os.path.join(rauc, conf))
        except (OSError, configparser.Error) as e:
            fail("%s: unable to read %s: %s" % (name, conf, e))
            continue
        system = sc["system"] if sc.has_section("system") else {}
        if system.get("bootloader") != bootloader:
            fail("%s: %s has bootloader=%s, expected %s" % (name, conf, system.get("bootloader"), bootloader))
        if system.get("bundle-formats") != "-plain":
            fail("%s: %s must refuse plain bundles (bundle-formats=-plain)" % (name, conf))
        if not (system.get("data-directory") or "").startswith("@FLEET_DATA_DIR@"):
            fail("%s: %s must keep data-directory on the data partition" % (name, conf))
        if bootloader == "custom" and "fleet-bootctl" not in (sc.get("handlers", "bootloader-custom-backend", fallback="") or ""):
            fail("%s: %s must use fleet-bootctl as the custom bootloader backend" % (name, conf))
        slots = {s[len("slot."):]: sc[s] for s in sc.sections() if s.startswith("slot.")}
        want_slots = {"rootfs.0": ("root-a", "ext4", "A"), "rootfs.1": ("root-b", "ext4", "B")}
        if "boot-a" in by_label:
            want_slots.update({"bootfs.0": ("boot-a", "vfat", None), "bootfs.1": ("boot-b", "vfat", None)})
        if set(slots) != set(want_slots):
            fail("%s: %s has slots %s, expected %s" % (name, conf, sorted(slots), sorted(want_slots)))
            continue
        bad = 0
        for slot, (label, fstype, bootname) in sorted(want_slots.items()):
            s = slots[slot]
            part = by_label.get(label)
            want_dev = "/dev/%s%s%d" % (disk, sep, part["number"]) if part else None
            if s.get("device") != want_dev:
                bad += 1
                fail("%s: %s slot %s device=%s, but the wks puts %s at %s" % (name, conf, slot, s.get("device"), label, want_dev))
            if s.get("type") != fstype or (part and part.get("fstype") != fstype):
                bad += 1
                fail("%s: %s slot %s type=%s, wks fstype=%s, expected %s" % (name, conf, slot, s.get("type"), part and part.get("fstype"), fstype))
            if bootname and s.get("bootname") != bootname:
                bad += 1
                fail("%s: %s slot %s bootname=%s, expected %s" % (name, conf, slot, s.get("bootname"), bootname))
            if slot.startswith("bootfs.") and s.get("parent") != "rootfs." + slot[-1]:
                bad += 1
                fail("%s: %s slot %s must be a child of rootfs.%s" % (name, conf, slot, slot[-1]))
        if not bad:
            ok("%s: %s slots match (%s)" % (name, conf, ", ".join("%s=%s" % (k, slots[k]["device"]) for k in sorted(slots))))
        # fleet-rootfs: partition numbers the generator mounts
        machine = "raspberrypi5" if disk != "vda" else None
        data_no = by_label["data"]["number"]
        fw_no = by_label.get("config", by_label.get("boot"))["number"]
        var = "FLEET_PART_DATA:raspberrypi5" if machine else "FLEET_PART_DATA"
        m = re.search(r'^%s \?\?= "(\d+)"' % re.escape(var), rootfs, re.M)
        if not m or int(m.group(1)) != data_no:
            fail("%s: fleet-rootfs %s=%s, the wks puts data at p%d" % (name, var, m and m.group(1), data_no))
        m = re.search(r'^FLEET_PART_FIRMWARE \?\?= "(\d+)"', rootfs, re.M)
        if not m or int(m.group(1)) != fw_no:
            fail("%s: fleet-rootfs FLEET_PART_FIRMWARE=%s, the wks puts the firmware partition at p%d" % (name, m and m.group(1), fw_no))
    autoboot = glob.glob(os.path.join(layer, "dynamic-layers", "raspberrypi", "**", "autoboot.txt"), recursive=True)
    want = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    if len(autoboot) != 1 or open(autoboot[0]).read() != want:
        fail("layout: autoboot.txt must commit slot A (boot_partition=2, tryboot 3) exactly as ADR 0001")
    else:
        ok("layout: autoboot.txt commits slot A, tryboot B")


# ------------------------------------------------------------------------------------ hygiene
def check_hygiene(layer):
    conf = open(os.path.join(layer, "conf", "layer.conf")).read()
    for m in re.finditer(r"^\s*([A-Za-z_][\w\-:\[\]]*)\s*(?:\?\?=|\?=|:=|\+=|=\+|\.=|=\.|=)", conf, re.M):
        var = m.group(1)
        if not (var.startswith("BB") or var.startswith("LAYER")):
            fail("hygiene: conf/layer.conf sets %s: only BB* and LAYER* variables belong there "
                 "(yocto-check-layer test_signatures)" % var)
    if not re.search(r'^LAYERSERIES_COMPAT_fleet = "wrynose"$', conf, re.M):
        fail("hygiene: LAYERSERIES_COMPAT_fleet must be \"wrynose\"")
    if not re.search(r'^LAYERDEPENDS_fleet = ".*\bcore\b.*\brauc\b.*"$', conf, re.M):
        fail("hygiene: LAYERDEPENDS_fleet must name core and rauc")
    readme = os.path.join(layer, "README.md")
    text = open(readme).read() if os.path.exists(readme) else ""
    for what, pat in (("a maintainer", r"(?i)maintainer"), ("how to send patches", r"(?i)patch"),
                      ("an e-mail address", r"[\w.+-]+@[\w-]+\.[\w.]+")):
        if not re.search(pat, text):
            fail("hygiene: README.md must give %s (yocto-check-layer test_readme)" % what)
    if not os.path.exists(os.path.join(layer, "SECURITY.md")):
        fail("hygiene: SECURITY.md is missing (yocto-check-layer test_security)")
    for append in sorted(glob.glob(os.path.join(layer, "**", "*.bbappend"), recursive=True)):
        rel = os.path.relpath(append, layer)
        body = [ln.strip() for ln in open(append) if ln.strip() and not ln.strip().startswith("#")]
        gate = re.compile(r"^require \$\{@bb\.utils\.contains\('DISTRO_FEATURES', 'fleet', '([\w.%-]+\.inc)', '', d\)\}$")
        m = gate.match(body[0]) if len(body) == 1 else None
        if not m:
            fail("hygiene: %s must be one line requiring its .inc only with the fleet distro feature" % rel)
        elif not os.path.exists(os.path.join(os.path.dirname(append), m.group(1))):
            fail("hygiene: %s requires %s, which does not exist" % (rel, m.group(1)))
        if os.path.basename(append).startswith("core-image"):
            fail("hygiene: %s appends a core-image recipe: the image is our own" % rel)
    distros = [os.path.basename(p) for p in glob.glob(os.path.join(layer, "conf", "distro", "*.conf"))]
    if distros != ["fleet.conf"]:
        fail("hygiene: the only distro is fleet.conf, found %s" % distros)
    if glob.glob(os.path.join(layer, "conf", "machine", "*.conf")):
        fail("hygiene: machines come from BSP layers, not meta-fleet")
    fleet_conf = open(os.path.join(layer, "conf", "distro", "fleet.conf")).read()
    for feature in ("fleet", "rauc"):
        if not re.search(r'^DISTRO_FEATURES = ".*\b%s\b.*"' % feature, fleet_conf, re.M):
            fail("hygiene: fleet.conf must enable the %s distro feature" % feature)
    if not re.search(r'^INIT_MANAGER = "systemd"', fleet_conf, re.M):
        fail("hygiene: fleet.conf must use systemd")
    image = open(os.path.join(layer, "recipes-core", "images", "fleet-image.bb")).read()
    if "read-only-rootfs" not in image:
        fail("hygiene: fleet-image must have a read-only root filesystem")
    bundle = open(os.path.join(layer, "recipes-core", "bundles", "fleet-bundle.bb")).read()
    if not re.search(r'^RAUC_BUNDLE_FORMAT = "verity"', bundle, re.M):
        fail("hygiene: fleet-bundle must build verity bundles")
    # Uncompressed squashfs, as the test bundles (ADR 0012): the same arguments, passed on.
    want = open(os.path.join(os.path.dirname(layer), "bundles", "mksquashfs-args")).read().strip()
    m = re.search(r'^FLEET_MKSQUASHFS_ARGS = "([^"]*)"$', bundle, re.M)
    if not m or m.group(1) != want:
        fail("hygiene: fleet-bundle's FLEET_MKSQUASHFS_ARGS must be bundles/mksquashfs-args (%r)" % want)
    passed = "BUNDLE_ARGS += ' --mksquashfs-args=\"${FLEET_MKSQUASHFS_ARGS}\" '"
    if passed not in bundle.splitlines():
        fail("hygiene: fleet-bundle must pass FLEET_MKSQUASHFS_ARGS to rauc bundle: %s" % passed)
    for wks in glob.glob(os.path.join(layer, "files", "wic", "*")):
        if not wks.endswith((".wks", ".wks.in")):
            fail("hygiene: %s in files/wic is not a wks file" % os.path.relpath(wks, layer))
    if not failures:
        ok("hygiene: layer.conf, README, SECURITY.md, gated appends, distro, image, bundle")


def check_rust_version(layer):
    root = os.path.dirname(layer)
    cargo = open(os.path.join(root, "Cargo.toml")).read()
    m = re.search(r'^rust-version = "([\d.]+)"', cargo, re.M)
    if not m or m.group(1) != "1.94":
        fail("hygiene: workspace rust-version %s, wrynose ships Rust 1.94" % (m and m.group(1)))
    else:
        ok("hygiene: workspace rust-version 1.94 is wrynose's Rust")


# ---------------------------------------------------------------------------------------- kas
def check_kas(files):
    import jsonschema
    import kas
    import yaml
    schema = json.load(open(os.path.join(os.path.dirname(kas.__file__), "schema-kas.json")))
    for f in files:
        try:
            doc = yaml.safe_load(open(f))
            jsonschema.validate(doc, schema)
        except (OSError, yaml.YAMLError, jsonschema.ValidationError) as e:
            fail("kas %s: %s" % (f, str(e).splitlines()[0]))
            continue
        for name, repo in (doc.get("repos") or {}).items():
            if repo and repo.get("url") and not re.fullmatch(r"[0-9a-f]{40}", str(repo.get("commit", ""))):
                fail("kas %s: repo %s is not pinned to a commit" % (f, name))
        ok("kas %s" % f)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[0], argv[1:]
    if cmd == "layout":
        check_layout(os.path.abspath(args[0]))
    elif cmd == "hygiene":
        check_hygiene(os.path.abspath(args[0]))
        check_rust_version(os.path.abspath(args[0]))
    elif cmd == "kas":
        check_kas(args)
    else:
        print(__doc__)
        return 2
    print("%s: %d passed, %d failed" % (cmd, passes, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
