#!/usr/bin/env python3
"""System tests of a fleet station under qemu-system-aarch64 (U-Boot flow, RAUC, fleet-bootctl).

One QEMU process per power cycle (-no-reboot: every reset, panic reboot or watchdog reset ends
the process), a timeout per boot, the U-Boot environment read from the disk image between boots
(mcopy + fw_printenv, no mounts), files on the data partition read and written with debugfs.
The guest reaches only the host's loopback broker, through QEMU's restricted user networking.
Updates go the real way: the host's `fleetctl push` leaves the bundle and a signed offer on the
broker, the station's fleet-updated downloads, installs through RAUC, arms the trial and runs its
health gate; the harness follows the station's MQTT state and events and asserts them.

    tests/qemu/harness.py --image DIR --fleetctl PATH [--work DIR] [--only NAME,...] [--cuts N] [--seed N]

Prints one line per boot, a PASS/FAIL line per scenario with its slot sequence and wall time,
and a final "N passed, N failed". Reference: docs/reference/qemu-harness.md.
"""
import argparse
import json
import os
import queue
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

UBOOT_BIN = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
MARK = "FLEET-QEMU "
BROKER_GUEST_ADDR = "10.0.2.100"
BROKER_GUEST_PORT = 1883


class ScenarioFailed(Exception):
    pass


def check(cond, what):
    if not cond:
        raise ScenarioFailed(what)


RELAY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "broker-relay")


def broker_netdev(port, log_dir):
    """QEMU's restricted user networking whose only way out is the broker: every connection the
    guest opens to BROKER_GUEST_ADDR:BROKER_GUEST_PORT starts its own `broker-relay` to
    127.0.0.1:port (guestfwd with `cmd:`). A character-device forward (`-tcp:127.0.0.1:port`)
    would put every guest connection into one host connection: two MQTT clients in one guest
    would share a TLS stream. One line per connection goes to <log_dir>/relay.log."""
    cmd = " ".join(shlex.quote(a) for a in (sys.executable, RELAY, "127.0.0.1", str(port),
                                             os.path.join(log_dir, "relay.log")))
    fwd = f"guestfwd=tcp:{BROKER_GUEST_ADDR}:{BROKER_GUEST_PORT}-cmd:{cmd}".replace(",", ",,")
    return f"user,id=net0,restrict=on,{fwd}"


def free_loopback_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1 only, and a recorder of everything under fleet/v1/devices/."""

    def __init__(self, workdir):
        self.port = free_loopback_port()
        self.dir = workdir
        conf = os.path.join(workdir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_packet_size 2000000\n")
        self.proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(workdir, "mosquitto.log"), "w"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        self.record_path = os.path.join(workdir, "mqtt.log")
        self.sub = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-v", "-q", "1",
             "-t", "fleet/v1/devices/+/state", "-t", "fleet/v1/devices/+/events",
             "-t", "fleet/v1/devices/+/presence"],
            stdout=open(self.record_path, "w"), stderr=subprocess.DEVNULL)

    def messages(self, kind=None, device=None):
        """(topic, payload) pairs received so far; payload parsed as JSON where it is JSON."""
        out = []
        with open(self.record_path, errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # a line still being written
                topic, _, payload = line.rstrip("\n").partition(" ")
                if kind and not topic.endswith("/" + kind):
                    continue
                if device and topic.split("/")[3:4] != [device]:
                    continue
                try:
                    payload = json.loads(payload)
                except ValueError:
                    pass
                out.append((topic, payload))
        return out

    def stop(self):
        for p in (self.sub, self.proc):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


class Boot:
    """One power cycle: a QEMU process reading the serial console line by line."""

    # Per scenario thread: every QEMU started and not yet reaped, killed on any way out.
    scope = threading.local()

    def __init__(self, station, number, timeout):
        self.station = station
        self.number = number
        self.timeout = timeout
        self.lines = []
        self.marks = queue.Queue()
        self.started = time.monotonic()
        self.log = open(os.path.join(station.dir, f"boot{number:02d}.log"), "w")
        self.proc = subprocess.Popen(station.qemu_command(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.scope_live = getattr(Boot.scope, "live", [])
        self.scope_live.append(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.end = None  # "exit" (reset or power-off), "cut" (killed by us), "timeout"

    def _read(self):
        buf = b""
        while True:
            chunk = self.proc.stdout.read1(4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\r", "", raw.decode("utf-8", "replace"))
                t = time.monotonic() - self.started
                self.lines.append((t, line))
                self.log.write(f"T+{t:7.2f} {line}\n")
                self.log.flush()
                at = line.find(MARK)
                if at >= 0:
                    self.marks.put((t, line[at + len(MARK):]))
        self.marks.put(None)

    def elapsed(self):
        return time.monotonic() - self.started

    def expect(self, pattern, timeout=None):
        """Waits for a FLEET-QEMU marker matching pattern; returns its match or None when the
        boot ended (or the time ran out) first."""
        deadline = self.started + self.timeout if timeout is None else time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                item = self.marks.get(timeout=left)
            except queue.Empty:
                return None
            if item is None:
                self.marks.put(None)
                return None
            m = rx.search(item[1])
            if m:
                return m

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def output_since(self, index):
        return [line for _, line in self.lines[index:]]

    def cut(self):
        """Power cut: the process dies with whatever the guest had not written yet."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.end = self.end or "cut"
        self._finish()

    def wait(self):
        """Waits for the machine to reset or power off by itself, within the boot timeout."""
        left = self.started + self.timeout - time.monotonic()
        try:
            self.proc.wait(max(left, 0.1))
            self.end = "exit"
        except subprocess.TimeoutExpired:
            self.end = "timeout"
            self.cut()
        self._finish()

    def _finish(self):
        if self in self.scope_live:
            self.scope_live.remove(self)
        self.reader.join(5)
        self.log.close()

    def matches(self, pattern):
        """The matches of pattern in this boot's FLEET-QEMU markers so far, in order (lazily)."""
        rx = re.compile(pattern)
        found = (rx.search(line[line.find(MARK) + len(MARK):]) for _, line in self.lines if MARK in line)
        return (m for m in found if m)

    def all(self, pattern):
        return list(self.matches(pattern))

    def first(self, pattern):
        return next(self.matches(pattern), None)

    @property
    def slot(self):
        m = self.first(r"^booted slot=(\w)")
        return m.group(1) if m else None

    @property
    def version(self):
        m = self.first(r"^booted slot=\w version=(\S+)")
        return m.group(1) if m else None


class Station:
    """A disk image and the power switch of one emulated station."""

    def __init__(self, image, workdir, broker=None, watchdog=False, disk_from=None, nvme=False):
        self.image = image
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.layout = json.load(open(os.path.join(image, "layout.json")))
        self.disk = os.path.join(workdir, "disk.img")
        src = disk_from or os.path.join(image, "disk.img")
        subprocess.run(["cp", "--sparse=always", src, self.disk], check=True)
        self.envflash = os.path.join(workdir, "envflash.img")
        subprocess.run(["cp", "--sparse=always", os.path.join(image, "envflash.img"), self.envflash],
                       check=True)
        self.broker = broker
        self.device = None
        self.watchdog = watchdog
        # An emulated NVMe drive (QEMU's nvme controller: a real SMART log over the real kernel
        # driver) and a QMP socket to change what the drive reports.
        self.nvme = nvme
        self.qmp_path = os.path.join(workdir, "qmp.sock")
        if nvme:
            self.nvme_disk = os.path.join(workdir, "nvme.img")
            with open(self.nvme_disk, "wb") as f:
                f.truncate(64 * 1024 * 1024)
        self.boots = []
        self.envs = []

    def qemu_command(self):
        cmd = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a76", "-smp", "1", "-m", "512",
               "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
               "-bios", UBOOT_BIN,
               "-drive", f"if=pflash,unit=1,format=raw,file={self.envflash}",
               "-drive", f"if=none,id=hd0,format=raw,file={self.disk},cache=unsafe",
               "-device", "virtio-blk-pci,drive=hd0",
               "-device", "virtio-rng-pci"]
        if self.broker:
            # Restricted user networking: the guest can reach nothing but this one forward.
            cmd += ["-netdev", broker_netdev(self.broker.port, self.dir),
                    "-device", "virtio-net-pci,netdev=net0"]
        if self.watchdog:
            cmd += ["-device", "i6300esb", "-action", "watchdog=reset"]
        if self.nvme:
            cmd += ["-drive", f"if=none,id=nvm0,format=raw,file={self.nvme_disk}",
                    "-device", "nvme,id=nvme0,serial=fleet-nvme0,drive=nvm0",
                    "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        return cmd

    def qmp(self, command, arguments=None):
        """One QMP command on the running QEMU; returns its "return" value (events skipped)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.qmp_path)
            stream = sock.makefile("rw")

            def reply():
                while True:
                    msg = json.loads(stream.readline())
                    if "return" in msg or "error" in msg:
                        return msg

            json.loads(stream.readline())  # the greeting
            for cmd in ({"execute": "qmp_capabilities"},
                        {"execute": command, "arguments": arguments or {}}):
                stream.write(json.dumps(cmd) + "\n")
                stream.flush()
                msg = reply()
                check("error" not in msg, f"QMP {cmd['execute']}: {msg.get('error')}")
            return msg["return"]

    def power_on(self, timeout=120):
        boot = Boot(self, len(self.boots) + 1, timeout)
        self.boots.append(boot)
        return boot

    def settle(self, boot, note=""):
        """After a boot ends: read the env and print the boot's line."""
        env = self.read_env()
        self.envs.append(env)
        say(f"  [{getattr(Boot.scope, 'name', '?')}] boot {boot.number:2d}: slot={boot.slot or '-'} version={boot.version or '-'} "
            f"end={boot.end} wall={boot.elapsed():5.1f}s env={fmt_env(env)}{note}")
        return env

    def run_boot(self, until_ready=True, timeout=120):
        """A boot that either ends by itself (reset) or reaches "ready", where it is powered off
        cleanly from the console."""
        boot = self.power_on(timeout)
        if until_ready:
            m = boot.expect(r"^ready ")
            if m:
                boot.send("station-reboot -p\n")
        boot.wait()
        self.settle(boot)
        return boot

    # -- the disk, from the host, without mounts --------------------------------------------
    def read_env(self):
        with tempfile.TemporaryDirectory() as tmp:
            env_file = os.path.join(tmp, "uboot.env")
            off = self.layout["boot"]["start"]
            subprocess.run(["mcopy", "-n", "-i", f"{self.disk}@@{off}", "::uboot.env", env_file],
                           check=True, capture_output=True)
            conf = os.path.join(tmp, "fw_env.config")
            with open(conf, "w") as f:
                f.write(f"{env_file} 0x0000 0x4000\n")
            out = subprocess.run(["fw_printenv", "-c", conf], capture_output=True, text=True)
            env = {}
            for line in out.stdout.splitlines():
                k, _, v = line.partition("=")
                env[k] = v
            if out.returncode != 0:
                env["<error>"] = out.stderr.strip()
            return env

    def _data(self):
        return f"{self.disk}?offset={self.layout['data']['start']}"

    def write_data_file(self, src, dest_dir, name):
        subprocess.run(["debugfs", "-w", "-R", f"mkdir {dest_dir}", self._data()],
                       capture_output=True)
        subprocess.run(["debugfs", "-w", "-R", f"rm {dest_dir}/{name}", self._data()], capture_output=True)
        out = subprocess.run(["debugfs", "-w", "-R", f"write {src} {dest_dir}/{name}", self._data()],
                             capture_output=True, text=True)
        check(out.returncode == 0 and "Allocated inode" in out.stdout + out.stderr,
              f"unable to write {dest_dir}/{name} on the data partition: {out.stderr}")

    def set_identity(self, device):
        """Provisioning's part: the station's device id on /data (updated.toml names the file)."""
        self.device = device
        subprocess.run(["debugfs", "-w", "-R", "mkdir /fleet", self._data()], capture_output=True)
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write(device + "\n")
        try:
            self.write_data_file(f.name, "/fleet/identity", "device-id")
        finally:
            os.unlink(f.name)

    def read_data_file(self, path):
        out = subprocess.run(["debugfs", "-R", f"cat {path}", self._data()],
                             capture_output=True, text=True, errors="replace")
        return out.stdout


def fmt_env(env):
    keys = ["BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT", "FLEET_TRIAL"]
    return " ".join(f"{k.replace('BOOT_', '')}={env[k]}" for k in keys if k in env) + \
        (f" ERROR={env['<error>']}" if "<error>" in env else "")


def env_is(env, order, a_left, b_left, trial=None):
    return (env.get("BOOT_ORDER") == order and env.get("BOOT_A_LEFT") == str(a_left)
            and env.get("BOOT_B_LEFT") == str(b_left) and env.get("FLEET_TRIAL") == trial)


# -- scenarios ------------------------------------------------------------------------------

class Context:
    def __init__(self, args):
        self.image = args.image
        self.work = args.work
        self.fleetctl = args.fleetctl
        self.pi5_image = os.path.abspath(args.pi5_image) if args.pi5_image else None
        self.qemuarm64_image = os.path.abspath(args.qemuarm64_image) if args.qemuarm64_image else None
        self.info = json.load(open(os.path.join(args.image, "info.json")))
        self.cuts = args.cuts
        self.rng = random.Random(args.seed)
        self.seed = args.seed
        self.results = {}
        # Seconds from fleet-updated's start to its reboot request on a boot that downloads and
        # installs the whole bundle (refined by every such boot seen).
        self.update_window_s = None
        self.download_s = None  # fleet-updated start to the bundle downloaded, same boots
        self.final_disks = {}

    def station(self, name, **kw):
        st = Station(self.image, os.path.join(self.work, name), broker=self.broker, **kw)
        st.set_identity(name)
        return st

    def bundle(self, name):
        return os.path.join(self.image, "bundles", f"{name}.raucb")

    def push(self, st, name, update_id=None, delta_from=None):
        """`fleetctl push` of a test bundle to one station, as an operator does: chunks, signed
        manifest and signed offer, retained on the broker, and with `delta_from` a signed delta
        from that test bundle. Returns (update id, sequence)."""
        cmd = [self.fleetctl, "push", self.bundle(name), "--to", f"device:{st.device}",
               "--version", self.info["bundles"][name], "--compatible", self.info["compatible"],
               "--broker", f"127.0.0.1:{self.broker.port}"]
        if update_id is not None:
            cmd += ["--update-id", update_id]
        if delta_from is not None:
            cmd += ["--delta-from", self.bundle(delta_from)]
        # The QEMU bundles carry compressed squashfs (tests/qemu/build.sh): a compressed
        # transfer of them saves next to nothing and costs a level-19 pass per push (ADR 0012).
        cmd += ["--no-compress"]
        t0 = time.monotonic()
        # The signing key by its environment variable (what `--key` would name).
        env = dict(os.environ, FLEET_SIGNING_KEY=os.path.join(self.image, "pki", "offer.key.pem"))
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        check(out.returncode == 0, f"fleetctl push {name}: {(out.stderr or out.stdout).strip()[-400:]}")
        m = re.search(r"\(update (\S+), sequence (\d+)", out.stdout)
        check(m, f"fleetctl push names the update and sequence: {out.stdout}")
        say(f"  [{scope_name()}] fleetctl push {name}.raucb --to device:{st.device}: update {m.group(1)} "
            f"sequence {m.group(2)} ({time.monotonic() - t0:.1f} s)")
        return m.group(1), int(m.group(2))


def scope_name():
    return getattr(Boot.scope, "name", "?")


# -- what the station says over MQTT ----------------------------------------------------------

def kinds(msgs):
    return [p["event"].get("kind") for k, p in msgs if k == "events" and isinstance(p, dict)
            and isinstance(p.get("event"), dict)]


def find_event(msgs, kind):
    for k, p in msgs:
        if k == "events" and isinstance(p, dict) and isinstance(p.get("event"), dict) \
                and p["event"].get("kind") == kind:
            return p["event"]
    return None


def last_state(msgs):
    states = [p for k, p in msgs if k == "state" and isinstance(p, dict)]
    return states[-1] if states else None


def outcome_is(result, update_id):
    """A predicate over messages: the newest state's last outcome is `result` for this update."""
    def pred(msgs):
        st = last_state(msgs)
        out = (st or {}).get("last-outcome") or {}
        return st if out.get("result") == result and out.get("update-id") == update_id else None
    return pred


# Where an update was, from the newest state or event: what a power cut interrupted.
PHASE_OF = {"offer-accepted": "startup", "download-started": "download", "download-progress": "download",
            "downloaded": "verify", "verified": "install", "install-started": "install",
            "install-progress": "install", "install-failed": "install", "installed": "after-install",
            "trial-armed": "after-install", "rebooting": "after-install",
            "downloading": "download", "verifying": "verify", "installing": "install",
            "arming-trial": "after-install", "idle": "startup"}


def ended_without_commit(update_id):
    """A predicate: the station is idle again and its last outcome for this update is not a commit."""
    def pred(msgs):
        st = last_state(msgs)
        out = (st or {}).get("last-outcome") or {}
        return st if st and st.get("phase") == "idle" and out.get("update-id") == update_id \
            and out.get("result") != "committed" else None
    return pred


def phase_now(msgs):
    for k, p in reversed(msgs):
        if not isinstance(p, dict):
            continue
        if k == "events" and isinstance(p.get("event"), dict) and p["event"].get("kind") in PHASE_OF:
            return PHASE_OF[p["event"]["kind"]]
        if k == "state" and p.get("phase") in PHASE_OF:
            return PHASE_OF[p["phase"]]
    return "startup"


def station_msgs(st, since):
    return [(t.rsplit("/", 1)[-1], p) for t, p in st.broker.messages(device=st.device)[since:]]


def mark(st):
    return len(st.broker.messages(device=st.device))


def wait_mqtt(st, boot, pred, timeout, since):
    """Polls the station's messages since `since` until pred returns something, the boot ends
    or `timeout` passes; returns pred's answer or None."""
    deadline = time.monotonic() + timeout
    while True:
        r = pred(station_msgs(st, since))
        if r or boot.proc.poll() is not None or time.monotonic() > deadline:
            return r or pred(station_msgs(st, since))
        time.sleep(0.25)


def power_off(boot):
    """Clean power-off from the console (a running boot), then wait for QEMU to exit."""
    if boot.proc.poll() is None:
        boot.send("station-reboot -p\n")
    boot.wait()


def uptime_mark(boot, pattern):
    m = boot.first(pattern + r".* uptime=([\d.]+)")
    return float(m.group(1)) if m else None


def boot_with_offer(st, update_id):
    """A boot with an offer on the broker, until the reboot the daemon asks for (or the station
    gives the update up). Returns (boot, messages since the power-on, event kinds)."""
    since = mark(st)
    boot = st.power_on(timeout=420)
    # Ends in the reboot the daemon asks for; an update the station gives up ends the wait early.
    failed = wait_mqtt(st, boot, ended_without_commit(update_id), 420, since)
    if failed:
        power_off(boot)
    boot.wait()
    st.settle(boot)
    msgs = station_msgs(st, since)
    seen = kinds(msgs)
    check(not failed, f"the update is not given up: {(failed or {}).get('last-outcome')}; events {seen}")
    return boot, msgs, seen


def update_boot(st, ctx, update_id, version):
    """Boot of the factory slot with an offer on the broker: fleet-updated downloads the bundle,
    verifies it, installs it through RAUC, arms the trial and asks for the reboot."""
    boot, msgs, seen = boot_with_offer(st, update_id)
    check(boot.slot == "A" and boot.version == "1.0.0", f"boot 1 on A 1.0.0, got {boot.slot} {boot.version}")
    check(boot.end == "exit", f"boot 1 ends in the reboot fleet-updated asks for, got {boot.end}; events {seen}")
    for kind in ("offer-accepted", "download-started", "downloaded", "verified", "install-started",
                 "installed", "trial-armed", "rebooting"):
        check(kind in seen, f"the station reports {kind}: got {seen}")
    acc = find_event(msgs, "offer-accepted")
    check(acc.get("update-id") == update_id and acc.get("version") == version,
          f"offer-accepted names {update_id} {version}: {acc}")
    inst = find_event(msgs, "installed")
    check(inst.get("slot") == "B" and inst.get("version") == version, f"installed into B {version}: {inst}")
    check((find_event(msgs, "rebooting") or {}).get("into") == "B", "rebooting into B")
    check(env_is(st.envs[-1], "B A", 3, 3, "B"), f"after install: B armed for a trial, got {fmt_env(st.envs[-1])}")
    measure_update(ctx, boot, msgs)
    return boot


def measure_update(ctx, boot, msgs):
    """Keeps what a whole update took on a boot of A (fleet-updated's start to its reboot
    request, and to `downloaded`): the windows the power cuts are drawn from."""
    start = uptime_mark(boot, r"^fleet-updated start")
    end = uptime_mark(boot, r"^reboot requested by fleet-updated")
    if start is not None and end is not None:
        ctx.update_window_s = end - start
    t = {k: find_event_at(msgs, k) for k in ("download-started", "downloaded", "install-started", "installed")}
    if start is not None and t["downloaded"] is not None:
        ctx.download_s = t["downloaded"] - start
    if all(v is not None for v in t.values()):
        say(f"  [{scope_name()}] update boot: download {t['downloaded'] - t['download-started']:.1f} s, "
            f"install {t['installed'] - t['install-started']:.1f} s, fleet-updated start to reboot "
            f"{ctx.update_window_s or 0:.1f} s")


def find_event_at(msgs, kind):
    for k, p in msgs:
        if k == "events" and isinstance(p, dict) and isinstance(p.get("event"), dict) \
                and p["event"].get("kind") == kind:
            return (p.get("at") or {}).get("monotonic-ms", 0) / 1000.0
    return None


def trial_commits(st, update_id, version, slot="B"):
    """The trial boot of `slot`: fleet-updated's health gate passes and it commits the slot."""
    since = mark(st)
    boot = st.power_on(timeout=180)
    done = wait_mqtt(st, boot, outcome_is("committed", update_id), 150, since)
    power_off(boot)
    st.settle(boot)
    msgs = station_msgs(st, since)
    check(boot.slot == slot and boot.version == version,
          f"trial boot on {slot} {version}, got {boot.slot} {boot.version}")
    check(done, f"the station reports committed for {update_id}: events {kinds(msgs)}")
    out = done["last-outcome"]
    check(out.get("slot") == slot and out.get("version") == version, f"committed {slot} {version}: {out}")
    for kind in ("trial-booted", "health-passed", "committed"):
        check(kind in kinds(msgs), f"the station reports {kind}: got {kinds(msgs)}")
    order = "B A" if slot == "B" else "A B"
    check(env_is(st.envs[-1], order, 3, 3), f"committed {slot}: got {fmt_env(st.envs[-1])}")
    return boot


def scenario_good_update(ctx):
    st = ctx.station("good-update")
    uid, _ = ctx.push(st, "good")
    update_boot(st, ctx, uid, "2.0.0")
    trial_commits(st, uid, "2.0.0")
    since = mark(st)
    again = st.power_on(timeout=120)
    idle = wait_mqtt(st, again, lambda m: (lambda s: s if s and s.get("booted") == "B"
                                           and s.get("phase") == "idle" else None)(last_state(m)), 90, since)
    power_off(again)
    st.settle(again)
    check(again.slot == "B" and idle, "the next boot is a normal boot of B, idle on MQTT")
    check(idle.get("version") == "2.0.0" and idle.get("committed") == "B",
          f"the station reports B 2.0.0 committed: {idle.get('committed')} {idle.get('version')}")
    check(env_is(st.envs[-1], "B A", 3, 3), f"B stays committed: got {fmt_env(st.envs[-1])}")
    ctx.final_disks["good-update"] = st.disk
    return st, ["A", "B", "B"]


def scenario_delta_update(ctx):
    """Issue 18 on a booted station: the good bundle arrives whole (a fresh station keeps no
    base) and, once committed, is kept on /data as the base; the next release (good2, the same
    tree with another version) is pushed with a delta from it, and the station fetches only the
    patch, rebuilds the bundle, and RAUC installs it into A, which commits."""
    st = ctx.station("delta-update")
    uid, _ = ctx.push(st, "good")
    since = mark(st)
    update_boot(st, ctx, uid, "2.0.0")
    first = find_event(station_msgs(st, since), "transport-chosen")
    check(first and first.get("transport") == "full" and (first.get("reason") or {}).get("code") == "no-base",
          f"the first update travels whole: a fresh station keeps no base: {first}")
    trial_commits(st, uid, "2.0.0")
    full_bytes = os.path.getsize(ctx.bundle("good2"))
    uid2, _ = ctx.push(st, "good2", delta_from="good")
    boot, msgs, seen = boot_with_offer(st, uid2)
    check(boot.slot == "B" and boot.version == "2.0.0", f"the update boot is on B 2.0.0, got {boot.slot} {boot.version}")
    chosen = find_event(msgs, "transport-chosen")
    check(chosen and chosen.get("transport") == "delta",
          f"the station takes the delta from its kept base: {chosen}; events {seen}")
    got = find_event(msgs, "delivered")
    check(got and got.get("transport") == "delta" and got.get("bundle-bytes") == full_bytes,
          f"the rebuilt bundle is delivered: {got}")
    received = got.get("received-bytes", full_bytes)
    check(received * 20 <= full_bytes,
          f"the delta is at most 5% of the {full_bytes}-byte bundle: {received} bytes received")
    inst = find_event(msgs, "installed")
    check(inst and inst.get("slot") == "A" and inst.get("version") == "2.1.0", f"installed into A 2.1.0: {inst}")
    check(env_is(st.envs[-1], "A B", 3, 3, "A"), f"after install: A armed for a trial, got {fmt_env(st.envs[-1])}")
    say(f"  [{scope_name()}] delta: {received} of {full_bytes} bytes received "
        f"({100.0 * received / full_bytes:.1f}%)")
    trial_commits(st, uid2, "2.1.0", slot="A")
    return st, ["A", "B", "B", "A"]


def back_on_a_rolled_back(st, update_id, code, check_name=None):
    """A boot of A after the trial ended badly: the station reports rolled-back with its cause."""
    since = mark(st)
    back = st.power_on(timeout=120)
    done = wait_mqtt(st, back, outcome_is("rolled-back", update_id), 90, since)
    power_off(back)
    st.settle(back)
    msgs = station_msgs(st, since)
    check(back.slot == "A" and back.version == "1.0.0", f"falls back to A 1.0.0, got {back.slot}")
    check(done, f"the station reports rolled-back for {update_id}: events {kinds(msgs)}")
    out = done["last-outcome"]
    cause = out.get("cause") or {}
    check(out.get("bad-slot") == "B" and cause.get("code") == code,
          f"rolled back from B because of {code}: {out}")
    if check_name:
        check(str(cause.get("check")).startswith(check_name), f"the cause names the check {check_name}: {cause}")
    rb = find_event(msgs, "rolled-back")
    check(rb and rb.get("from") == "B" and rb.get("to") == "A", f"rolled-back event from B to A: {rb}")
    say(f"  [{scope_name()}] reported: rolled-back {json.dumps(cause)}")
    return back


def scenario_fallback(ctx, mode):
    watchdog = mode == "hang"
    st = ctx.station(f"fallback-{mode}", watchdog=watchdog)
    uid, _ = ctx.push(st, mode)
    update_boot(st, ctx, uid, ctx.info["bundles"][mode])
    for left in (2, 1, 0):
        boot = st.power_on(timeout=90 if watchdog else 60)
        boot.wait()
        st.settle(boot)
        check(boot.slot == "B" and boot.first(rf"^failing mode={mode}"),
              f"trial boot of B fails by {mode}, got slot {boot.slot}")
        check(boot.end == "exit", f"the {mode} ends the boot by a reset, not the harness timeout ({boot.end})")
        check(env_is(st.envs[-1], "B A", 3, left, "B"), f"B has {left} boots left: got {fmt_env(st.envs[-1])}")
    since = mark(st)
    back_on_a_rolled_back(st, uid, "trial-did-not-boot")
    fell = find_event(station_msgs(st, since), "trial-fell-back")
    check(fell and fell.get("from") == "B" and fell.get("will-retry") is False,
          f"trial-fell-back from B, not retried: {fell}")
    check(env_is(st.envs[-1], "A B", 3, 0), f"A first, B marked bad: got {fmt_env(st.envs[-1])}")
    return st, ["A", "B", "B", "B", "A"]


def scenario_unhealthy(ctx):
    """A slot that boots but fails fleet-updated's health gate: with max-trial-attempts = 3 the
    gate runs on three boots of B (the U-Boot script spends one of its boots each time), then
    the daemon marks B bad and the station returns to A."""
    st = ctx.station("unhealthy")
    uid, _ = ctx.push(st, "unhealthy")
    update_boot(st, ctx, uid, "2.0.4")
    for attempt, left in ((1, 2), (2, 1), (3, 0)):
        last = attempt == 3
        since = mark(st)
        trial = st.power_on(timeout=150)
        trial.wait()
        st.settle(trial)
        msgs = station_msgs(st, since)
        failed = find_event(msgs, "health-failed")
        check(trial.slot == "B" and trial.end == "exit",
              f"trial boot {attempt} of B ends in a reboot: {trial.slot} {trial.end}")
        check(failed and str(failed.get("check")).startswith("command:rauc-status")
              and failed.get("attempt") == attempt and failed.get("will-retry") is (not last),
              f"attempt {attempt}: the health gate fails on command:rauc-status: {failed}; events {kinds(msgs)}")
        if last:
            check((find_event(msgs, "marked-bad") or {}).get("slot") == "B", f"B marked bad: {kinds(msgs)}")
            check(env_is(st.envs[-1], "A B", 3, 0), f"B bad, A first: got {fmt_env(st.envs[-1])}")
        else:
            check(env_is(st.envs[-1], "B A", 3, left, "B"),
                  f"B still on trial with {left} boots left: got {fmt_env(st.envs[-1])}")
    back_on_a_rolled_back(st, uid, "health-check-failed", "command:rauc-status")
    check(env_is(st.envs[-1], "A B", 3, 0), f"A refreshed: got {fmt_env(st.envs[-1])}")
    return st, ["A", "B", "B", "B", "A"]


def gave_up(seq):
    """Predicate: the station ended the offer with this sequence without a commit."""
    def pred(msgs):
        s = last_state(msgs)
        out = (s or {}).get("last-outcome") or {}
        return s if s and s.get("phase") == "idle" and s.get("last-sequence") == seq \
            and out.get("result") not in (None, "committed") else None
    return pred


def scenario_power_cuts(ctx):
    """Rounds on fresh stations with the good bundle pushed: the power is cut at a random moment
    of each boot of A (uniform over 0..1.1 x the time fleet-updated takes from its start to the
    reboot request for a whole download and install), so cuts land in the download, the
    verification, the install and just after it. After every cut the station must come up on a
    good slot; the update must resume or be retried and end committed. An update the station
    gives up on its own (three interrupted installs) is offered again with a new sequence.
    Without a window measured by another scenario's update boot, the first boot of round 1 is
    not cut: it measures the window."""
    per_round = max(1, -(-ctx.cuts // 2))
    cuts, after, sequence = [], [], []
    reoffers = resumed = retried_installs = 0
    rounds = 0
    st = None
    while len(cuts) < ctx.cuts:
        rounds += 1
        st = ctx.station(f"power-cuts-{rounds}")
        uid, seq = ctx.push(st, "good")
        first_uid = uid
        say(f"  [power-cuts] round {rounds}: fresh station")
        round_cuts = 0
        after_cut = False
        round_since = mark(st)
        while True:
            check(len(st.boots) < 40, "the round ends")
            since = mark(st)
            boot = st.power_on(timeout=420)
            note = ""
            check(boot.expect(r"^fleet-updated start", timeout=120), f"fleet-updated starts (boot {boot.number})")
            if boot.slot == "A":
                cut_at = None
                measuring = ctx.update_window_s is None
                if round_cuts < per_round and len(cuts) < ctx.cuts and not measuring:
                    # What this boot has left to do: the whole update, or (bundle complete) the
                    # verification and the install.
                    window = ctx.update_window_s or 20.0
                    if "downloaded" in kinds(station_msgs(st, round_since)):
                        window = max(window - (ctx.download_s or 0.0), 5.0)
                    cut_at = ctx.rng.uniform(0.0, window * 1.1)
                # Until the cut moment: the boot may end by itself (reboot into the trial) or the
                # station may give the update up (then it idles on A).
                r = wait_mqtt(st, boot, gave_up(seq), (cut_at if cut_at is not None else 400), since)
                if boot.proc.poll() is None and r is None and cut_at is not None:
                    phase = phase_now(station_msgs(st, since))
                    boot.cut()
                    cuts.append({"round": rounds, "boot": boot.number, "at-s": round(cut_at, 1), "phase": phase})
                    round_cuts += 1
                    note = f" CUT at fleet-updated+{cut_at:.1f}s during {phase}"
                elif boot.proc.poll() is None:
                    power_off(boot)  # gave the update up: idle on A
                else:
                    boot.wait()
                    if measuring:
                        measure_update(ctx, boot, station_msgs(st, since))
                        check(ctx.update_window_s is not None,
                              f"boot {boot.number} of round {rounds} measures the update window")
            else:
                done = wait_mqtt(st, boot, outcome_is("committed", uid), 150, since)
                power_off(boot)
                check(done, f"round {rounds}: the trial of B commits, events {kinds(station_msgs(st, since))}")
            st.settle(boot, note=note)
            sequence.append(boot.slot)
            check(boot.first(r"^boot-check rc=0"), f"boot {boot.number} of round {rounds} ran its boot check")
            good = (boot.slot, boot.version) in (("A", "1.0.0"), ("B", "2.0.0"))
            check(good, f"boot {boot.number} of round {rounds} is on a good slot: {boot.slot} {boot.version}")
            if after_cut:
                after.append(good)
            after_cut = boot.end == "cut"
            msgs = station_msgs(st, since)
            started = find_event(msgs, "download-started")
            if started and started.get("resumed") and started.get("held-bytes", 0) > 0:
                resumed += 1
            retried_installs += sum(1 for k, p in msgs if k == "events" and isinstance(p, dict)
                                    and (p.get("event") or {}).get("kind") == "install-failed"
                                    and (p.get("event") or {}).get("will-retry"))
            all_msgs = station_msgs(st, round_since)
            if outcome_is("committed", uid)(all_msgs):
                break
            if gave_up(seq)(all_msgs):
                # The station ended this offer cleanly without a commit: the operator offers the
                # bundle again, under a new update id (fleetctl signs it with the next sequence).
                reoffers += 1
                uid, seq = ctx.push(st, "good", update_id=f"{first_uid}-again-{reoffers}")
        check(st.boots[-1].slot == "B" and env_is(st.envs[-1], "B A", 3, 3),
              f"round {rounds}: the update ends committed on B: {fmt_env(st.envs[-1])}")
    by_phase = {}
    for c in cuts:
        by_phase[c["phase"]] = by_phase.get(c["phase"], 0) + 1
    ctx.power_cut_report = {"cuts": cuts, "rounds": rounds, "by-phase": by_phase,
                            "boots-after-a-cut": len(after), "on-a-good-slot": sum(after),
                            "downloads-resumed": resumed, "installs-retried": retried_installs,
                            "offers-repeated": reoffers, "seed": ctx.seed,
                            "window-s": round(ctx.update_window_s or 20.0, 1)}
    ctx.power_cut_sequence = sequence
    return st, None


def console_run(boot, command, tag, answer="", timeout=30):
    """Types `command` at the station's console (then `answer`, for a prompt); returns its exit
    status (None when it never ended) and what the console printed meanwhile."""
    mark = len(boot.lines)
    boot.send(f"{command}; echo \"FLEET-QEMU console {tag} rc=$?\"\n{answer}")
    m = boot.expect(rf"^console {tag} rc=(\d+)", timeout=timeout)
    said = "\n".join(boot.output_since(mark))
    say("  console> " + said.replace("\n", "\n  console> "))
    return (int(m.group(1)) if m else None), said


def scenario_console_recovery(ctx):
    src = ctx.final_disks.get("good-update")
    check(src, "needs the committed station of good-update (run it first)")
    st = ctx.station("console-recovery", disk_from=src)
    boot = st.power_on(timeout=120)
    check(boot.expect(r"^ready "), "the station comes up on B with a console")
    check(boot.slot == "B", f"starts on committed B, got {boot.slot}")
    # The recovery CLI `fleet` if this build has it, else fleet-bootctl (the same backend).
    boot.send('fleet --help 2>&1 | grep -q "^ *rollback"; echo "FLEET-QEMU console has-fleet rc=$?"\n')
    probe = boot.expect(r"^console has-fleet rc=(\d+)", timeout=30)
    fleet_cli = bool(probe and probe.group(1) == "0")
    if fleet_cli:
        status_cmd, rollback_cmd = "fleet status", "fleet rollback"
        shows = (r"station\s+console-recovery", r"running B", r"slot A\s+good\b",
                 r"slot B\s+good\s+2\.0\.0")
        answer = "yes\n"  # typed at its confirmation prompt
    else:
        status_cmd, rollback_cmd = "fleet-bootctl status", "fleet-bootctl set-primary A"
        shows = (r"booted:\s+B", r"slot A: good")
        answer = ""
    rc, status = console_run(boot, status_cmd, "status")
    check(rc == 0, f"{status_cmd} works on the console: {status}")
    check(all(re.search(rx, status) for rx in shows), f"status shows B running and A good: {status}")
    rc, said = console_run(boot, rollback_cmd, "rollback", answer=answer)
    check(rc == 0, f"{rollback_cmd} works: {said}")
    boot.send("station-reboot\n")
    boot.wait()
    st.settle(boot, note=f" ({rollback_cmd})")
    # fleet rollback makes the good slot A primary; fleet-bootctl set-primary arms it as a trial.
    check(env_is(st.envs[-1], "A B", 3, 3, None if fleet_cli else "A"),
          f"{rollback_cmd} left A first: {fmt_env(st.envs[-1])}")
    after = st.run_boot()
    check(after.slot == "A" and after.version == "1.0.0", f"the next boot honours the rollback: {after.slot}")
    again = st.run_boot()
    check(again.slot == "A" and env_is(st.envs[-1], "A B", 3, 3),
          f"the station stays on A, B kept as the good other slot: {again.slot} {fmt_env(st.envs[-1])}")
    ctx.console_commands = [status_cmd, rollback_cmd]
    return st, ["B", "A", "A"]


def scenario_nvme_wear(ctx):
    """An NVMe drive's SMART log read through the real kernel driver by `fleet nvme-smart` (what
    fleet-nvme-smart.service runs as root) and left where fleet-reporterd reads it; QEMU's
    controller is told over QMP to raise a critical warning, and the next read shows it."""
    st = ctx.station("nvme-wear", nvme=True)
    boot = st.power_on(timeout=120)
    check(boot.expect(r"^ready "), "the station with an NVMe drive comes up with a console")

    def read(tag):
        rc, said = console_run(boot, "fleet nvme-smart --write /run/fleet-nvme-smart", f"nvme-{tag}")
        check(rc == 0, f"fleet nvme-smart reads the drive ({tag}): {said}")
        boot.send("echo \"FLEET-QEMU nvme-json $(cat /run/fleet-nvme-smart/nvme0.json)\"\n")
        j = boot.expect(r"^nvme-json (\{.*)$", timeout=10)
        check(j, f"the reporter's file exists ({tag}): {said}")
        try:
            return json.loads(j.group(1)), said
        except ValueError:
            check(False, f"the reporter's file is JSON ({tag}): {j.group(1)}")

    log, said = read("healthy")
    # QEMU's controller: 323 K composite temperature, nothing used up, no warning.
    check(log.get("critical_warning") == 0 and log.get("percent_used") == 0
          and log.get("temperature") == 323,
          f"the SMART log decodes at the specification's offsets: {log}")
    check(re.search(r"nvme0\s+0 % of rated life used, critical warning none", said),
          f"the console line says the drive is healthy: {said}")
    st.qmp("qom-set", {"path": "/machine/peripheral/nvme0", "property": "smart_critical_warning",
                       "value": 4})
    log, said = read("degraded")
    check(log.get("critical_warning") == 4, f"the raised warning reaches the file: {log}")
    check("reliability degraded" in said, f"the console names the warning: {said}")
    power_off(boot)
    st.settle(boot, note=" (fleet nvme-smart)")
    return st, [boot.slot]


def scenario_tryboot_fat(ctx):
    """fleet-bootctl's tryboot flow (the Pi 5's) writing autoboot.txt on a real FAT file system:
    the guest's /boot/firmware, mounted by its kernel's vfat driver with the image's options.
    The console plays the Pi firmware's part (the booted partition and the tryboot flag in
    device-tree files, as tests/tryboot_firmware.rs does); the harness then reads autoboot.txt
    from the disk image itself with mtools and checks the partition with fsck.vfat."""
    st = ctx.station("tryboot-fat")
    boot = st.power_on(timeout=120)
    check(boot.expect(r"^ready "), "the station comes up with a console")
    committed_a = r"[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n"
    committed_b = "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
    toml = (r'flow = \"tryboot\"\nattempts = 3\nlock-file = \"/tmp/tp/lock\"\n[tryboot]\n'
            r'config-root = \"/boot/firmware/tp\"\ndata-root = \"/tmp/tp/data\"\n'
            r'bootloader-dir = \"/tmp/tp/dt\"\nreboot-command = [\"touch\", \"/tmp/tp/flag\"]\n')

    def firmware(partition, tryboot):
        return (rf"printf '\000\000\000\00{partition}' > /tmp/tp/dt/partition && "
                rf"printf '\000\000\000\00{tryboot}' > /tmp/tp/dt/tryboot")

    steps = [
        ("mkdir -p /boot/firmware/tp /tmp/tp/data /tmp/tp/dt", "tp-dirs"),
        (f"printf '{committed_a}' > /boot/firmware/tp/autoboot.txt", "tp-autoboot"),
        (f'printf "{toml}" > /tmp/tp/bootctl.toml', "tp-config"),
        ("export FLEET_BOOTCTL_CONFIG=/tmp/tp/bootctl.toml", "tp-env"),
        (firmware(2, 0), "tp-fw-a"),
        ("fleet-bootctl boot-check", "tp-check-a"),
        ("fleet-bootctl set-state B bad && fleet-bootctl set-primary B", "tp-arm"),
        ("fleet-bootctl reboot-trial && test -e /tmp/tp/flag", "tp-trial"),
        ("rm /tmp/tp/flag && " + firmware(3, 1), "tp-fw-b"),
        ("fleet-bootctl boot-check && fleet-bootctl get-current", "tp-check-b"),
        ("fleet-bootctl set-state B good && fleet-bootctl get-primary", "tp-commit"),
        ("cat /boot/firmware/tp/autoboot.txt && sync", "tp-show"),
    ]
    said = {}
    for cmd, tag in steps:
        rc, out = console_run(boot, cmd, tag)
        check(rc == 0, f"{cmd}: {out}")
        said[tag] = out
    check(re.search(r"^B$", said["tp-check-b"], re.M), f"booted B on trial: {said['tp-check-b']}")
    check(re.search(r"^B$", said["tp-commit"], re.M), f"B is primary once good: {said['tp-commit']}")
    power_off(boot)
    st.settle(boot, note=" (tryboot flow on FAT)")
    off = st.layout["boot"]["start"]
    out = subprocess.run(["mtype", "-i", f"{st.disk}@@{off}", "::tp/autoboot.txt"],
                         capture_output=True, text=True)
    check(out.returncode == 0, f"mtype reads autoboot.txt from the image: {out.stderr}")
    check(out.stdout == committed_b,
          f"the FAT on the disk holds the committed B autoboot.txt: {out.stdout!r}")
    part = os.path.join(st.dir, "bootfs.img")
    subprocess.run(["dd", f"if={st.disk}", f"of={part}", "bs=1M", f"skip={off // (1 << 20)}",
                    f"count={st.layout['boot']['size'] // (1 << 20)}", "status=none"], check=True)
    fsck = subprocess.run(["fsck.vfat", "-n", part], capture_output=True, text=True)
    check(fsck.returncode == 0, f"fsck.vfat finds the boot partition clean: {fsck.stdout}{fsck.stderr}")
    return st, [boot.slot]


class ConnectionRecorder:
    """Stands in for the broker in broker-forward: a listener on the host's loopback that keeps
    what arrived on each connection it accepted, and answers each line `hello-<token>` with
    `back-<token>` on the connection that brought it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []  # bytes received, one entry per accepted connection
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(b"")
                index = len(self.conns) - 1
            threading.Thread(target=self._serve, args=(conn, index), daemon=True).start()

    def _serve(self, conn, index):
        pending = b""
        with conn:
            while True:
                try:
                    data = conn.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                with self.lock:
                    self.conns[index] += data
                pending += data
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    m = re.search(rb"hello-(\w+)", line)
                    if m:
                        conn.sendall(b"back-" + m.group(1) + b"\n")

    def tokens(self):
        """The hello tokens of each connection, in the order the connections came."""
        with self.lock:
            return [re.findall(rb"hello-(\w+)", c) for c in self.conns]

    def stop(self):
        self.sock.close()


def scenario_broker_forward(ctx):
    """The guest's way to the broker (broker_netdev): two connections open at once in one guest
    reach the host as two connections, and each gets its own answers. A character-device
    forward fails this: it writes both into one host connection and answers one guest socket."""
    rec = ConnectionRecorder()
    try:
        st = Station(ctx.image, os.path.join(ctx.work, "broker-forward"), broker=rec)
        st.set_identity("broker-forward")
        boot = st.power_on(timeout=120)
        check(boot.expect(r"^ready "), "the station comes up with a console")
        rc, said = console_run(
            boot, f"for t in one two; do (echo hello-$t; sleep 3) | nc {BROKER_GUEST_ADDR} "
            f"{BROKER_GUEST_PORT} > /tmp/fwd-$t & done; wait; "
            "echo \"FLEET-QEMU fwd one=[$(cat /tmp/fwd-one)] two=[$(cat /tmp/fwd-two)]\"", "fwd")
        power_off(boot)
        st.settle(boot, note=" (broker forward)")
        got = rec.tokens()
    finally:
        rec.stop()
    # (the console echoes the typed command too: its line still holds the `$(cat ...)`)
    m = boot.first(r"^fwd one=\[([^$\]]*)\] two=\[([^$\]]*)\]")
    check(rc == 0 and m, f"two connections from the console: {said}")
    hello = [t for t in got if t]
    check(sorted(hello) == [[b"one"], [b"two"]],
          f"the host sees one connection per guest connection, each with its own bytes: {got}")
    check(m.group(1) == "back-one" and m.group(2) == "back-two",
          f"each guest connection gets its own answer: one=[{m.group(1)}] two=[{m.group(2)}]")
    return st, [boot.slot]


SCENARIOS = [
    ("good-update", scenario_good_update),
    ("fallback-reboot", lambda c: scenario_fallback(c, "reboot")),
    ("fallback-panic", lambda c: scenario_fallback(c, "panic")),
    ("fallback-hang", lambda c: scenario_fallback(c, "hang")),
    ("unhealthy", scenario_unhealthy),
    ("power-cuts", scenario_power_cuts),
    ("console-recovery", scenario_console_recovery),
    ("nvme-wear", scenario_nvme_wear),
    ("tryboot-fat", scenario_tryboot_fat),
    ("delta-update", scenario_delta_update),
    ("broker-forward", scenario_broker_forward),
]
# The Pi 5 tryboot flow on the systemd station (tests/qemu/pi5/flow.py, issue 15): the harness
# plays the firmware; needs --pi5-image (tests/qemu/build-pi5.sh).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "pi5"))
import flow as pi5_flow  # noqa: E402

SCENARIOS += pi5_flow.register(sys.modules[__name__])
# The U-Boot flow on the same systemd station, built for qemuarm64 (tests/qemu/pi5/uboot.py):
# Debian's U-Boot runs the layer's boot.scr; needs --qemuarm64-image.
import uboot as qemuarm64_flow  # noqa: E402

SCENARIOS += qemuarm64_flow.register(sys.modules[__name__])
# A station's upkeep on the Pi 5 systemd station (tests/qemu/pi5/upkeep.py): the delta
# transport and the NVMe wear report as the image ships them; needs --pi5-image.
import upkeep as pi5_upkeep  # noqa: E402

SCENARIOS += pi5_upkeep.register(sys.modules[__name__])


# The default tier (tests/run.sh, `--tier default`): on the systemd station as the layer
# assembles it, one scenario per boot flow and medium: the tryboot flow's good update on NVMe,
# its recorder gate on SD (an unhealthy trial rolled back) and the U-Boot flow's good update; on
# the shell guest, the quick U-Boot proofs: good update, console recovery, the three fallbacks,
# 20 power cuts and the broker forward. The full tier (`--tier full`, FLEET_QEMU_TIER=full) adds
# every other scenario: the systemd station's fallbacks, power cuts, console recovery and upkeep
# on both flows, and the shell guest's scenarios those superseded (docs/reference/
# qemu-harness.md, "Tiers").
DEFAULT_TIER = ["pi5-good-update-nvme", "pi5-recorder-gate", "qemuarm64-good-update", "good-update",
                "console-recovery", "fallback-reboot", "fallback-panic", "fallback-hang", "power-cuts",
                "broker-forward"]


def choose(names, only, tier, pi5_image, qemuarm64_image):
    """The scenarios a run takes, in registry order: those named (`--only`), or else those of the
    tier whose station image was given. A named scenario that does not exist is an error."""
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SystemExit(f"qemu harness: no such scenario: {', '.join(unknown)} (known: {', '.join(names)})")
    if only:
        return [n for n in names if n in only]
    has_image = lambda n: ((pi5_image or not n.startswith("pi5-"))  # noqa: E731
                           and (qemuarm64_image or not n.startswith("qemuarm64-")))
    return [n for n in names if has_image(n) and (tier == "full" or n in DEFAULT_TIER)]


# Each scenario's wall time in seconds, measured one or two at a time on this project's 2-core
# machine (docs/reference/qemu-harness.md): the lanes take the longest first, each into the lane
# with the least queued, so that they end together. A scenario not listed counts 900 s.
COST = {"power-cuts": 340, "good-update": 25, "fallback-panic": 45, "fallback-hang": 71,
        "fallback-reboot": 31, "unhealthy": 45, "console-recovery": 15, "nvme-wear": 40, "tryboot-fat": 40,
        "delta-update": 110, "broker-forward": 8,
        "pi5-good-update": 492, "pi5-good-update-nvme": 240, "pi5-trial-panics": 363, "pi5-trial-hangs": 533,
        "pi5-trial-reboots": 414, "pi5-trial-reboots-at-gate": 800, "pi5-recorder-gate": 372,
        "pi5-console-recovery": 276, "pi5-power-cuts": 2100, "pi5-power-cuts-sd": 3650,
        "pi5-delta-update": 263, "pi5-nvme-wear": 128,
        "qemuarm64-good-update": 138, "qemuarm64-fallback-panic": 144, "qemuarm64-fallback-hang": 243,
        "qemuarm64-fallback-reboot": 203, "qemuarm64-unhealthy": 335, "qemuarm64-console-recovery": 254,
        "qemuarm64-power-cuts": 1800}


def plan_lanes(names, jobs):
    """The scenarios of each lane, in the order the lane runs them: longest first into the lane
    with the least queued. console-recovery starts from the disk good-update leaves, so it goes
    last, into good-update's lane."""
    lanes = [[] for _ in range(max(1, jobs))]
    for name in sorted(names, key=lambda n: (n == "console-recovery", -COST.get(n, 900), n)):
        if name == "console-recovery" and "good-update" in names:
            lane = next(la for la in lanes if "good-update" in la)
        else:
            lane = min(lanes, key=lambda la: sum(COST.get(n, 900) for n in la))
        lane.append(name)
    return [la for la in lanes if la]


_print_lock = threading.Lock()


def say(text):
    with _print_lock:
        print(text, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", required=True, help="directory printed by tests/qemu/build.sh")
    ap.add_argument("--pi5-image", default=None, help="directory printed by tests/qemu/build-pi5.sh")
    ap.add_argument("--qemuarm64-image", default=None,
                    help="directory printed by tests/qemu/build-pi5.sh --machine qemuarm64")
    ap.add_argument("--fleetctl", required=True, help="the host's fleetctl binary (pushes the bundles)")
    ap.add_argument("--work", default=None, help="where disks and logs go (default: a temp dir)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--tier", choices=["default", "full"], default=os.environ.get("FLEET_QEMU_TIER", "default"),
                    help="without --only: the default tier (DEFAULT_TIER), or every scenario")
    ap.add_argument("--cuts", type=int, default=20, help="power cuts in power-cuts")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FLEET_QEMU_SEED", "0")) or None)
    ap.add_argument("--summary", default=None, help="write a JSON summary here")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("FLEET_QEMU_JOBS", "2")),
                    help="scenarios run at once (one single-CPU QEMU each)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1, 1 << 31)
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="fleet-qemu-")
    os.makedirs(args.work, exist_ok=True)
    # SIGTERM (a CI timeout) unwinds through the finally clauses that stop QEMU and the broker.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ctx = Context(args)
    ctx.broker = Broker(args.work)
    try:
        return run_all(ctx, args)
    finally:
        ctx.broker.stop()
        for fleet in ("pi5_fleet", "qemuarm64_fleet"):
            if hasattr(ctx, fleet):
                getattr(ctx, fleet).broker.stop()


def run_one(ctx, name, fn):
    """Runs one scenario in the calling thread; returns its result record."""
    Boot.scope.live = []
    Boot.scope.name = name
    t0 = time.monotonic()
    station = None
    try:
        station, expected = fn(ctx)
        seq = [b.slot for b in station.boots]
        check(expected is None or seq == expected, f"slot sequence {seq}, expected {expected}")
        ok, why = True, ""
    except ScenarioFailed as e:
        ok, why = False, str(e)
    except Exception as e:  # a harness error fails the scenario, not the whole run
        ok, why = False, f"harness error: {e!r}"
    finally:
        # Never leave a QEMU of this scenario behind.
        for b in list(Boot.scope.live):
            b.cut()
    wall = time.monotonic() - t0
    seq = " ".join(b.slot or "-" for b in station.boots) if station else ""
    if name == "power-cuts" and hasattr(ctx, "power_cut_sequence"):
        seq = " ".join(x or "-" for x in ctx.power_cut_sequence)
    say(f"{'PASS' if ok else 'FAIL'} {name}: slots {seq} ({wall:.0f} s){'' if ok else ': ' + why}")
    return {"ok": ok, "slots": seq, "wall-s": round(wall, 1), "why": why}


def run_all(ctx, args):
    only = [s for s in args.only.split(",") if s]
    # The systemd station's scenarios run when their image is given (or when named).
    names = choose([n for n, _ in SCENARIOS], only, args.tier, ctx.pi5_image, ctx.qemuarm64_image)
    chosen = [(n, f) for n, f in SCENARIOS if n in names]
    summary = {"seed": args.seed, "work": args.work, "jobs": args.jobs, "tier": args.tier, "scenarios": {}}
    say(f"qemu harness: image {args.image}, work {args.work}, seed {args.seed}, {args.jobs} at a time, "
        f"{'named scenarios' if only else args.tier + ' tier'}: {len(chosen)}")
    t0 = time.monotonic()
    # Scenarios run in parallel lanes, one QEMU (-smp 1) each.
    by_name = dict(chosen)
    lanes = [[(n, by_name[n]) for n in la] for la in plan_lanes([n for n, _ in chosen], args.jobs)]
    results = {}

    def run_lane(lane):
        for name, fn in lane:
            results[name] = run_one(ctx, name, fn)

    threads = [threading.Thread(target=run_lane, args=(la,), daemon=True) for la in lanes if la]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    passed = sum(1 for r in results.values() if r["ok"])
    failed = len(results) - passed
    say("--- summary")
    for name, _ in chosen:
        r = results[name]
        say(f"{'PASS' if r['ok'] else 'FAIL'} {name:17s} {r['wall-s']:6.0f} s  slots {r['slots']}")
    summary["scenarios"] = results
    if hasattr(ctx, "power_cut_report"):
        r = ctx.power_cut_report
        phases = ", ".join(f"{n} {p}" for p, n in sorted(r["by-phase"].items()))
        say(f"power cuts: {len(r['cuts'])} cuts in {r['rounds']} rounds (seed {r['seed']}, window "
            f"{r['window-s']} s): {phases}; {r['on-a-good-slot']} of {r['boots-after-a-cut']} boots "
            f"after a cut came up on a good slot; downloads resumed {r['downloads-resumed']}, installs "
            f"retried {r['installs-retried']}, offers repeated {r['offers-repeated']}")
        say("power cuts at (fleet-updated+s, phase): " + " ".join(f"{c['at-s']}/{c['phase']}" for c in r["cuts"]))
        summary["power-cuts"] = r
    if hasattr(ctx, "pi5_power_cut_report"):
        summary["pi5-power-cuts"] = ctx.pi5_power_cut_report
    if hasattr(ctx, "qemuarm64_power_cut_report"):
        summary["qemuarm64-power-cuts"] = ctx.qemuarm64_power_cut_report
    summary["wall-s"] = round(time.monotonic() - t0, 1)
    say(f"all scenarios: {summary['wall-s']:.0f} s")
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=1)
    say(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
