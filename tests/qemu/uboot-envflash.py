#!/usr/bin/env python3
"""U-Boot's own environment for QEMU's virt machine (the second pflash), for the test stations.

    uboot-envflash.py OUT [--script-at-once]

Debian's qemu_arm64 U-Boot (u-boot-qemu) keeps its environment in the second pflash. This writes
its built-in default environment with `bootdelay=0` (meta-fleet's u-boot fleet.cfg:
CONFIG_BOOTDELAY=0) as a 64 MiB pflash image. The station's A/B state is not there but in
uboot.env on p1, which boot.scr loads and saves itself.

--script-at-once (the shell guest of tests/qemu/build.sh) replaces distro boot by a bootcmd that
sources boot.scr from virtio 0:1 at once, and leaves room to inflate a gzipped Image
(kernel_comp_addr_r). Without it, U-Boot's distro boot finds boot.scr on the bootable partition,
as on the layer's qemuarm64 image.
"""
import os
import subprocess
import sys
import tempfile

UBOOT_BIN = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"


def main(argv):
    out_path = argv[1]
    at_once = "--script-at-once" in argv[2:]
    blob = open(UBOOT_BIN, "rb").read()
    start = blob.find(b"bootcmd=run distro_bootcmd")
    if start < 0:
        sys.exit(f"uboot-envflash: no default environment found in {UBOOT_BIN}")
    end = blob.find(b"\0\0", start)
    env = []
    for var in blob[start:end].split(b"\0"):
        var = var.decode()
        name = var.split("=", 1)[0]
        if name == "bootcmd" and at_once:
            var = "bootcmd=pci enum; virtio scan; load virtio 0:1 ${scriptaddr} boot.scr; source ${scriptaddr}; reset"
        elif name == "bootdelay":
            var = "bootdelay=0"
        env.append(var)
    if at_once:
        # Room to inflate a gzipped Image: load it at kernel_addr_r, booti moves it here and unpacks.
        env += ["kernel_comp_addr_r=0x50000000", "kernel_comp_size=0x4000000"]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(env) + "\n")
    try:
        subprocess.run(["mkenvimage", "-s", "0x40000", "-o", out_path, f.name], check=True)
    finally:
        os.unlink(f.name)
    os.truncate(out_path, 64 * 1024 * 1024)


if __name__ == "__main__":
    main(sys.argv)
