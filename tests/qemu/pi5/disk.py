#!/usr/bin/env python3
"""Lays out a disk image as wic would from a .wks (the JSON of `layer.py wks`) and fills it.

    disk.py WKS.json DISK.img LAYOUT.json LABEL=IMAGE...

msdos table with the wks's disk id; each partition starts on its --align (KiB) boundary; with more
than four partitions the fourth is an extended one and the rest are logical (p5...), as wic does:
two sectors kept for each logical partition's EBR before it is aligned, the extended partition
(type 0x0f, as parted makes it) from two sectors before the first logical partition to the end of
the last. Partition types: vfat 0x0c, ext4 0x83, the first --active one bootable.
tests/qemu/pi5/wic-compare.sh checks the table against wic's. Each IMAGE is written at its partition's start (sparse); a partition without one stays
empty. The image is sized to a power of two (QEMU's sd-card requires it for SD; NVMe takes any).
LAYOUT.json records each partition's number, label, start and size in bytes.
"""
import json
import os
import subprocess
import sys

SECTOR = 512


def main(argv):
    wks = json.load(open(argv[1]))
    disk, layout_path = argv[2], argv[3]
    images = dict(a.split("=", 1) for a in argv[4:])
    parts = wks["parts"]
    logical = wks["table"]["ptable"] == "msdos" and len(parts) > 4
    pos = 0
    rows, out = [], {}
    ext_start = None
    for i, p in enumerate(parts):
        align = int(p.get("align", "1024")) * 1024 // SECTOR
        size = int(p["mib"] * 1024 * 1024) // SECTOR
        if logical and i >= 3:
            pos += 2  # the logical partition's EBR, before the alignment
        start = -(-max(pos, 2048) // align) * align
        if logical and i == 3:
            ext_start = start - 2
        pos = start + size
        ptype = {"vfat": "c", "ext4": "83"}[p["fstype"]]
        boot = ", bootable" if p.get("active") else ""
        rows.append((p["number"], start, size, ptype, boot))
        out[p["label"]] = {"number": p["number"], "start": start * SECTOR, "size": size * SECTOR,
                           "fstype": p["fstype"]}
    total = pos + 2048
    nbytes = 1 << (total * SECTOR - 1).bit_length()
    with open(disk, "wb") as f:
        f.truncate(nbytes)
    lines = ["label: dos", f"label-id: {wks['table']['diskid']}", "unit: sectors", ""]
    for n, start, size, ptype, boot in rows:
        if logical and n == 5:
            lines.append(f"start={ext_start}, size={pos - ext_start}, type=f")
        lines.append(f"start={start}, size={size}, type={ptype}{boot}")
    subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", disk], input="\n".join(lines) + "\n",
                   text=True, check=True)
    # the table sfdisk wrote must be the one planned
    got = json.loads(subprocess.run(["sfdisk", "-J", disk], capture_output=True, text=True,
                                    check=True).stdout)["partitiontable"]["partitions"]
    for label, p in out.items():
        node = [q for q in got if q["node"].endswith(str(p["number"])) and q["start"] * SECTOR == p["start"]]
        if not node:
            raise SystemExit(f"disk.py: partition {p['number']} ({label}) not where planned: {got}")
    for label, img in images.items():
        p = out[label]
        if os.path.getsize(img) > p["size"]:
            raise SystemExit(f"disk.py: {img} does not fit partition {label}")
        subprocess.run(["dd", f"if={img}", f"of={disk}", "bs=1M", f"seek={p['start']}", "oflag=seek_bytes",
                        "conv=notrunc,sparse", "status=none"], check=True)
    json.dump(out, open(layout_path, "w"), indent=1)
    print(f"disk.py: {disk}: " + ", ".join(f"p{p['number']} {label} {p['size'] >> 20} MiB" for label, p in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
