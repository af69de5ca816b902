#!/usr/bin/env python3
"""Starts qemu-system-aarch64 with exactly the command line of tests/qemu/harness.py (Station's
qemu_command, broker forward and watchdog included) on a blank disk, and waits for U-Boot's banner
on the serial console. A device whose ROM or module is missing ends QEMU before U-Boot prints.
usage: qemu_uboot.py WORKDIR   (exit 0 when the banner came within 90 s)
"""
import json
import os
import socket
import subprocess
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "qemu"))
import harness  # noqa: E402

work = sys.argv[1]
image = os.path.join(work, "image")
os.makedirs(image, exist_ok=True)
json.dump({}, open(os.path.join(image, "layout.json"), "w"))
for name, size in (("disk.img", 16 << 20), ("envflash.img", 64 << 20)):
    with open(os.path.join(image, name), "wb") as f:
        f.truncate(size)


class Broker:
    """Only its port goes into the command line; QEMU connects the guest forward at start."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]


station = harness.Station(image, os.path.join(work, "station"), broker=Broker(), watchdog=True)
cmd = station.qemu_command()
print(" ".join(cmd))
proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
os.set_blocking(proc.stdout.fileno(), False)
out = b""
deadline = time.monotonic() + 90
try:
    while time.monotonic() < deadline:
        chunk = proc.stdout.read()
        if chunk:
            out += chunk
        if b"U-Boot 20" in out:
            line = next(l for l in out.decode(errors="replace").splitlines() if "U-Boot 20" in l)
            print("banner: " + line.strip())
            sys.exit(0)
        if proc.poll() is not None and not chunk:
            sys.exit("qemu exited with status %s before U-Boot: %s"
                     % (proc.returncode, out.decode(errors="replace").strip()[-400:]))
        time.sleep(0.1)
    sys.exit("no U-Boot banner within 90 s: %s" % out.decode(errors="replace").strip()[-400:])
finally:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
