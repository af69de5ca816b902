#!/usr/bin/env python3
"""System tests of a fleet station under qemu-system-aarch64 (U-Boot flow, RAUC, fleet-bootctl).

One QEMU process per power cycle (-no-reboot: every reset, panic reboot or watchdog reset ends
the process), a timeout per boot, the U-Boot environment read from the disk image between boots
(mcopy + fw_printenv, no mounts), files on the data partition read and written with debugfs.
The guest reaches only the host's loopback broker, through QEMU's restricted user networking.

    tests/qemu/harness.py --image DIR [--work DIR] [--only NAME,...] [--cuts N] [--seed N]

Prints one line per boot, a PASS/FAIL line per scenario with its slot sequence and wall time,
and a final "N passed, N failed". Reference: docs/reference/qemu-harness.md.
"""
import argparse
import json
import os
import queue
import random
import re
import shutil
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
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-v", "-q", "1",
             "-t", "fleet/v1/devices/+/state", "-t", "fleet/v1/devices/+/events",
             "-t", "fleet/v1/devices/+/presence"],
            stdout=open(self.record_path, "w"), stderr=subprocess.DEVNULL)

    def messages(self, kind=None):
        """(topic, payload) pairs received so far; payload parsed as JSON where it is JSON."""
        out = []
        with open(self.record_path, errors="replace") as f:
            for line in f:
                topic, _, payload = line.rstrip("\n").partition(" ")
                if kind and not topic.endswith("/" + kind):
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
        self.reader.join(5)
        self.log.close()

    def first(self, pattern):
        rx = re.compile(pattern)
        for _, line in self.lines:
            at = line.find(MARK)
            if at >= 0:
                m = rx.search(line[at + len(MARK):])
                if m:
                    return m
        return None

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

    def __init__(self, image, workdir, broker=None, watchdog=False, disk_from=None):
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
        self.watchdog = watchdog
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
            fwd = (f"guestfwd=tcp:{BROKER_GUEST_ADDR}:{BROKER_GUEST_PORT}"
                   f"-tcp:127.0.0.1:{self.broker.port}")
            cmd += ["-netdev", f"user,id=net0,restrict=on,{fwd}",
                    "-device", "virtio-net-pci,netdev=net0"]
        if self.watchdog:
            cmd += ["-device", "i6300esb", "-action", "watchdog=reset"]
        return cmd

    def power_on(self, timeout=120):
        boot = Boot(self, len(self.boots) + 1, timeout)
        self.boots.append(boot)
        return boot

    def settle(self, boot, note=""):
        """After a boot ends: read the env and print the boot's line."""
        env = self.read_env()
        self.envs.append(env)
        print(f"    boot {boot.number:2d}: slot={boot.slot or '-'} version={boot.version or '-'} "
              f"end={boot.end} wall={boot.elapsed():5.1f}s env={fmt_env(env)}{note}", flush=True)
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
        out = subprocess.run(["debugfs", "-w", "-R", f"write {src} {dest_dir}/{name}", self._data()],
                             capture_output=True, text=True)
        check(out.returncode == 0 and "Allocated inode" in out.stdout + out.stderr,
              f"unable to write {dest_dir}/{name} on the data partition: {out.stderr}")

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
        self.info = json.load(open(os.path.join(args.image, "info.json")))
        self.cuts = args.cuts
        self.rng = random.Random(args.seed)
        self.seed = args.seed
        self.results = {}
        self.install_seconds = None
        self.final_disks = {}

    def station(self, name, **kw):
        return Station(self.image, os.path.join(self.work, name), **kw)

    def bundle(self, name):
        return os.path.join(self.image, "bundles", f"{name}.raucb")


def stage_incoming(station, ctx, name):
    """Stage 1: leave a bundle on /data for the guest's rauc-direct installer."""
    station.write_data_file(ctx.bundle(name), "/fleet-qemu", "incoming.raucb")
    with tempfile.NamedTemporaryFile("w", delete=False) as f:
        f.write(ctx.info["bundles"][name] + "\n")
    station.write_data_file(f.name, "/fleet-qemu", "incoming.version")
    os.unlink(f.name)


def install_boot(station, ctx):
    """Boot 1 on the factory slot: the bundle is installed and the station reboots into B."""
    boot = station.power_on(timeout=150)
    start = boot.expect(r"^install start")
    done = boot.expect(r"^install rc=(\d+)")
    if done and done.group(1) != "0":
        boot.cut()
    else:
        boot.wait()
    station.settle(boot)
    check(boot.slot == "A" and boot.version == "1.0.0", f"boot 1 on A 1.0.0, got {boot.slot} {boot.version}")
    check(start and done and done.group(1) == "0", "the bundle is installed on boot 1: "
          + station.read_data_file("/fleet-qemu/install.log")[-600:])
    check(boot.end == "exit", f"boot 1 ends in a reboot, got {boot.end}")
    env = station.envs[-1]
    check(env_is(env, "B A", 3, 3, "B"), f"after install: B armed for a trial, got {fmt_env(env)}")
    m = re.search(r"uptime=([\d.]+)", boot.first(r"^install rc=").string)
    s = re.search(r"uptime=([\d.]+)", boot.first(r"^install start").string)
    ctx.install_seconds = float(m.group(1)) - float(s.group(1))
    return boot


def scenario_good_update(ctx):
    st = ctx.station("good-update")
    stage_incoming(st, ctx, "good")
    install_boot(st, ctx)
    trial = st.run_boot()
    check(trial.slot == "B" and trial.version == "2.0.0", f"trial boot on B 2.0.0, got {trial.slot}")
    check(trial.first(r"^health pass slot=B commit-rc=0"), "the trial passes its health check and commits")
    check(env_is(st.envs[-1], "B A", 3, 3), f"committed B: got {fmt_env(st.envs[-1])}")
    again = st.run_boot()
    check(again.slot == "B" and again.first(r"^health not-a-trial"), "the next boot is a normal boot of B")
    check(env_is(st.envs[-1], "B A", 3, 3), f"B stays committed: got {fmt_env(st.envs[-1])}")
    ctx.final_disks["good-update"] = st.disk
    return st, ["A", "B", "B"]


def scenario_fallback(ctx, mode):
    watchdog = mode == "hang"
    st = ctx.station(f"fallback-{mode}", watchdog=watchdog)
    stage_incoming(st, ctx, mode)
    install_boot(st, ctx)
    for left in (2, 1, 0):
        boot = st.power_on(timeout=90 if watchdog else 60)
        boot.wait()
        st.settle(boot)
        check(boot.slot == "B" and boot.first(rf"^failing mode={mode}"),
              f"trial boot of B fails by {mode}, got slot {boot.slot}")
        check(boot.end == "exit", f"the {mode} ends the boot by a reset, not the harness timeout ({boot.end})")
        check(env_is(st.envs[-1], "B A", 3, left, "B"), f"B has {left} boots left: got {fmt_env(st.envs[-1])}")
    back = st.run_boot()
    check(back.slot == "A" and back.version == "1.0.0", f"falls back to A 1.0.0, got {back.slot}")
    check(env_is(st.envs[-1], "B A", 3, 0), f"A refreshed, B given up: got {fmt_env(st.envs[-1])}")
    again = st.run_boot()
    check(again.slot == "A", "and stays on A")
    return st, ["A", "B", "B", "B", "A", "A"]


def scenario_unhealthy(ctx):
    st = ctx.station("unhealthy")
    stage_incoming(st, ctx, "unhealthy")
    install_boot(st, ctx)
    trial = st.power_on(timeout=90)
    trial.wait()
    st.settle(trial)
    check(trial.slot == "B" and trial.first(r"^health fail slot=B check=fleet-test-health mark-bad-rc=0"),
          "the trial boot of B fails its health check and marks B bad")
    check(env_is(st.envs[-1], "A B", 3, 0), f"B bad, A first: got {fmt_env(st.envs[-1])}")
    back = st.run_boot()
    check(back.slot == "A" and back.version == "1.0.0", f"returns to A, got {back.slot}")
    check(env_is(st.envs[-1], "A B", 3, 0), f"A refreshed: got {fmt_env(st.envs[-1])}")
    return st, ["A", "B", "A"]


def scenario_power_cuts(ctx):
    st = ctx.station("power-cuts")
    stage_incoming(st, ctx, "good")
    span = max(ctx.install_seconds or 10.0, 3.0) * 1.2
    cuts = []
    good_after_cut = 0
    sequence = []
    while len(cuts) < ctx.cuts:
        boot = st.power_on(timeout=150)
        m = boot.expect(r"^(install start|ready )")
        if m and m.group(1) == "install start":
            at = ctx.rng.uniform(0.0, span)
            time.sleep(at)
            boot.cut()
            st.settle(boot, note=f" CUT at install+{at:.2f}s")
            cuts.append(round(at, 2))
        else:
            # No install pending on this boot: the update already completed.
            boot.send("station-reboot -p\n")
            boot.wait()
            st.settle(boot)
        sequence.append(boot.slot)
        check(boot.slot in ("A", "B"), f"boot {boot.number} reached userspace on a slot")
        if len(cuts) and boot.first(r"^booted slot="):
            good_after_cut += 1
        if boot.slot == "B" and boot.first(r"^health not-a-trial|^health pass"):
            break
    # Let it finish: the update completes (or already has) and B is committed.
    for _ in range(4):
        boot = st.run_boot(timeout=150)
        sequence.append(boot.slot)
        env = st.envs[-1]
        if boot.slot == "B" and boot.version == "2.0.0" and env_is(env, "B A", 3, 3):
            break
    check(st.boots[-1].slot == "B" and env_is(st.envs[-1], "B A", 3, 3),
          f"after {len(cuts)} cuts the update completes: got {st.boots[-1].slot} {fmt_env(st.envs[-1])}")
    ctx.power_cut_report = {"cuts": cuts, "boots": len(st.boots),
                            "good-boots-after-cut": sum(1 for b in st.boots[1:] if b.slot),
                            "span-s": round(span, 1), "seed": ctx.seed}
    return st, sequence


def scenario_console_recovery(ctx):
    src = ctx.final_disks.get("good-update")
    check(src, "needs the committed station of good-update (run it first)")
    st = ctx.station("console-recovery", disk_from=src)
    boot = st.power_on(timeout=120)
    check(boot.expect(r"^ready "), "the station comes up on B with a console")
    check(boot.slot == "B", f"starts on committed B, got {boot.slot}")
    fleet_cli = os.path.exists(os.path.join(ctx.image, "fleet-cli-ready"))
    status_cmd = "fleet status" if fleet_cli else "fleet-bootctl status"
    rollback_cmd = "fleet rollback" if fleet_cli else "fleet-bootctl set-primary A"
    mark = len(boot.lines)
    boot.send(f"{status_cmd}; echo \"FLEET-QEMU console status rc=$?\"\n")
    m = boot.expect(r"^console status rc=(\d+)", timeout=30)
    status = "\n".join(boot.output_since(mark))
    check(m and m.group(1) == "0", f"{status_cmd} works on the console: {status}")
    check(re.search(r"booted:\s+B", status) and re.search(r"slot A: good", status),
          f"status shows B booted and A good: {status}")
    boot.send(f"{rollback_cmd}; echo \"FLEET-QEMU console rollback rc=$?\"\n")
    m = boot.expect(r"^console rollback rc=(\d+)", timeout=30)
    check(m and m.group(1) == "0", f"{rollback_cmd} works: {boot.output_since(mark)}")
    boot.send("station-reboot\n")
    boot.wait()
    st.settle(boot, note=f" ({rollback_cmd})")
    after = st.run_boot()
    check(after.slot == "A" and after.version == "1.0.0", f"the next boot honours the rollback: {after.slot}")
    again = st.run_boot()
    check(again.slot == "A", f"and the station stays on A: {again.slot} {fmt_env(st.envs[-1])}")
    ctx.console_commands = [status_cmd, rollback_cmd]
    return st, ["B", "A", "A"]


SCENARIOS = [
    ("good-update", scenario_good_update),
    ("fallback-reboot", lambda c: scenario_fallback(c, "reboot")),
    ("fallback-panic", lambda c: scenario_fallback(c, "panic")),
    ("fallback-hang", lambda c: scenario_fallback(c, "hang")),
    ("unhealthy", scenario_unhealthy),
    ("power-cuts", scenario_power_cuts),
    ("console-recovery", scenario_console_recovery),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", required=True, help="directory printed by tests/qemu/build.sh")
    ap.add_argument("--work", default=None, help="where disks and logs go (default: a temp dir)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--cuts", type=int, default=20, help="power cuts in power-cuts")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FLEET_QEMU_SEED", "0")) or None)
    ap.add_argument("--summary", default=None, help="write a JSON summary here")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1, 1 << 31)
    if args.work is None:
        args.work = tempfile.mkdtemp(prefix="fleet-qemu-")
    os.makedirs(args.work, exist_ok=True)
    ctx = Context(args)
    only = [s for s in args.only.split(",") if s]
    passed = failed = 0
    summary = {"seed": args.seed, "work": args.work, "scenarios": {}}
    print(f"qemu harness: image {args.image}, work {args.work}, seed {args.seed}", flush=True)
    for name, fn in SCENARIOS:
        if only and name not in only:
            continue
        print(f"--- {name}", flush=True)
        t0 = time.monotonic()
        station = None
        try:
            station, expected = fn(ctx)
            seq = [b.slot for b in station.boots]
            check(seq == expected, f"slot sequence {seq}, expected {expected}")
            ok, why = True, ""
        except ScenarioFailed as e:
            ok, why = False, str(e)
        except Exception as e:  # a harness error fails the scenario, not the whole run
            ok, why = False, f"harness error: {e!r}"
        finally:
            # Never leave a QEMU behind.
            for b in (station.boots if station else []):
                if b.proc.poll() is None:
                    b.cut()
        wall = time.monotonic() - t0
        seq = " ".join(b.slot or "-" for b in station.boots) if station else ""
        print(f"{'PASS' if ok else 'FAIL'} {name}: slots {seq} ({wall:.0f} s){'' if ok else ': ' + why}",
              flush=True)
        summary["scenarios"][name] = {"ok": ok, "slots": seq, "wall-s": round(wall, 1), "why": why}
        passed += ok
        failed += not ok
    if hasattr(ctx, "power_cut_report"):
        r = ctx.power_cut_report
        print(f"power cuts: {len(r['cuts'])} cuts at install+{r['cuts']} s (seed {r['seed']}), "
              f"{r['good-boots-after-cut']} of {r['boots'] - 1} boots after the first came up on a good slot",
              flush=True)
        summary["power-cuts"] = r
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(summary, f, indent=1)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
