"""The Raspberry Pi 5 tryboot flow on the systemd test station (issue 15), for tests/qemu/harness.py.

The harness plays the Pi 5 firmware (docs/reference/qemu-harness.md, "The Pi 5 station", and
../shared/notes/pi5-boot-facts.md in the project notes, which cite the Raspberry Pi documentation):

- it reads `autoboot.txt` from partition 1 (FAT, `mtype`), honours `[all]`, `[tryboot]` and
  `tryboot_a_b=1`, and keeps the one-shot tryboot flag: set when the guest's kernel logs
  `reboot: Restarting system with command '0 tryboot'`, cleared before the OS starts (so a
  reset, a panic, a watchdog reset or a power cut during the trial boots `[all]` again);
- a boot partition counts only when it is FAT and holds `config.txt`; from it the firmware takes
  the kernel (`kernel=`), the initramfs (`initramfs ... followkernel`) and `cmdline.txt`, and boots
  them with QEMU's direct kernel boot;
- it tells the OS what it booted in the device tree's `/chosen/bootloader` (`partition`,
  `tryboot`), as the firmware does: QEMU's virt tree with that node added (`-dtb`).

Stations are provisioned the documented way (docs/getting-started.md, section 5): the output of
`fleetctl provision` is copied onto the card's first partition before the first boot. The broker is
the documented TLS mosquitto (docs/mosquitto/), with certificates from `fleetctl pki init`.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time

h = None  # tests/qemu/harness.py, set by register()
TlsBroker = None

TRYBOOT_LINE = "reboot: Restarting system with command '0 tryboot'"
DISKS = {"sd": "mmcblk0", "nvme": "nvme0n1", "virtio": "vda"}


def register(harness):
    global h, TlsBroker
    h = harness
    TlsBroker = make_tls_broker_class()
    return [("pi5-good-update", scenario_good_update),
            ("pi5-good-update-nvme", lambda c: scenario_good_update(c, "nvme")),
            ("pi5-trial-panics", scenario_trial_panics),
            ("pi5-trial-hangs", lambda c: scenario_trial_panics(c, mode="hang")),
            ("pi5-trial-reboots", lambda c: scenario_trial_panics(c, mode="reboot")),
            ("pi5-trial-reboots-at-gate", scenario_trial_reboots_at_gate),
            ("pi5-recorder-gate", scenario_recorder_gate),
            ("pi5-console-recovery", scenario_console_recovery),
            ("pi5-power-cuts", scenario_power_cuts),
            ("pi5-power-cuts-sd", lambda c: scenario_power_cuts(c, "sd"))]


# -- the fleet's broker, keys and provisioning -------------------------------------------------

class Fleet:
    """fleet/ of docs/getting-started.md: PKI, fleet.toml, the TLS broker on loopback."""

    def __init__(self, ctx, image, name="pi5-fleet"):
        self.ctx = ctx
        self.image = image
        self.dir = os.path.join(ctx.work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.info = json.load(open(os.path.join(image, "info.json")))
        # the machine's boot flow (meta-fleet's fleet.conf: qemuarm64 has U-Boot, the Pi 5 tryboot)
        boot_flow = "uboot" if self.info.get("machine") == "qemuarm64" else "tryboot"
        pki = os.path.join(self.dir, "pki")
        run([ctx.fleetctl, "pki", "init", "--out", pki, "--broker-host", h.BROKER_GUEST_ADDR,
             "--broker-host", "127.0.0.1"])
        self.pki = pki
        offer_pub = os.path.join(image, "pki", "offer.pub.pem")
        with open(os.path.join(self.dir, "fleet.toml"), "w") as f:
            f.write(f'trusted-key-files = ["{offer_pub}"]\n\n[image]\ncompatible = "{self.info["compatible"]}"\n'
                    f'boot-flow = "{boot_flow}"\n\n[broker]\nhost = "{h.BROKER_GUEST_ADDR}"\n'
                    f'port = {h.BROKER_GUEST_PORT}\nca-file = "pki/ca.crt"\n\n[station-ca]\n'
                    f'cert-file = "pki/ca.crt"\nkey-file = "pki/ca.key"\nvalid-days = 825\n\n'
                    f'[defaults.updated]\ngroups = ["all"]\n')
        self.broker = TlsBroker(self.dir, pki)
        self.tls_env = dict(os.environ, FLEETCTL_TLS_CA=os.path.join(pki, "ca.crt"),
                            FLEETCTL_TLS_CERT=os.path.join(pki, "operator.crt"),
                            FLEETCTL_TLS_KEY=os.path.join(pki, "operator.key"))

    def provision(self, station, args=(), defaults=""):
        """`fleetctl provision --out <card>`, `--check`, then onto the card's first partition.
        `args` go to `fleetctl provision`; `defaults` (TOML tables under `[defaults.<daemon>]`)
        are added to this station's copy of fleet.toml."""
        card = tempfile.mkdtemp(dir=self.dir)
        fleet_toml = os.path.join(self.dir, "fleet.toml")
        if defaults:
            own = os.path.join(self.dir, f"fleet-{station.device}.toml")
            with open(fleet_toml) as src, open(own, "w") as dst:
                dst.write(src.read() + "\n" + defaults)
            fleet_toml = own
        run([self.ctx.fleetctl, "provision", "--fleet", fleet_toml, "--station", station.device,
             "--group", "canary", "--out", card, *args])
        run([self.ctx.fleetctl, "provision", "--check", card, "--fleet", fleet_toml])
        off = station.layout[station.provision_label]["start"]
        run(["mcopy", "-s", "-i", f"{station.disk}@@{off}", os.path.join(card, "fleet-provision"), "::/"])
        shutil.rmtree(card)

    def push(self, station, name, update_id=None, args=(), compress=False):
        """`fleetctl push` as the operator (`update_id` and `args` go to it). The test bundles'
        squashfs is compressed already, so fleetctl's zstd envelope (its default) gains nothing
        here and costs minutes on 2 cores: only the scenario that proves the compressed transfer
        on the station asks for it."""
        bundle = os.path.join(self.image, "bundles", f"{name}.raucb")
        cmd = [self.ctx.fleetctl, "push", bundle, "--to", f"device:{station.device}",
               "--version", self.info["bundles"][name], "--compatible", self.info["compatible"],
               "--broker", f"127.0.0.1:{self.broker.port}"] + ([] if compress else ["--no-compress"])
        if update_id is not None:
            cmd += ["--update-id", update_id]
        cmd += list(args)
        env = dict(self.tls_env, FLEET_SIGNING_KEY=os.path.join(self.image, "pki", "offer.key.pem"))
        t0 = time.monotonic()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        h.check(out.returncode == 0, f"fleetctl push {name}: {(out.stderr or out.stdout).strip()[-400:]}")
        m = re.search(r"\(update (\S+), sequence (\d+)", out.stdout)
        h.check(m, f"fleetctl push names the update: {out.stdout}")
        h.say(f"  [{h.scope_name()}] fleetctl push {name}.raucb --to device:{station.device}: update "
              f"{m.group(1)} ({time.monotonic() - t0:.1f} s)")
        return m.group(1)

    def status(self, *args):
        """`fleetctl status` as the operator reads the broker: its output."""
        out = subprocess.run([self.ctx.fleetctl, "status", *args, "--broker", f"127.0.0.1:{self.broker.port}"],
                             capture_output=True, text=True, timeout=120, env=self.tls_env)
        h.check(out.returncode == 0, f"fleetctl status {' '.join(args)}: {(out.stderr or out.stdout).strip()[-400:]}")
        return out.stdout


def operator_sees_uncommitted(fleet, st, slot):
    """A station idle on a console install nobody committed: the operator's `fleetctl status`
    says so in its row (ADR 0013)."""
    row = next((line for line in fleet.status().splitlines() if line.split()[:1] == [st.device]), "")
    h.check(f"uncommitted {slot}" in row, f"fleetctl status shows the console install uncommitted: {row!r}")


def make_tls_broker_class():
    class TlsBroker(h.Broker):
        """docs/mosquitto/mosquitto.conf and acl as getting-started installs them, on loopback,
        and an operator's recorder of the stations' state, events, presence and health."""

        def __init__(self, workdir, pki):
            self.port = h.free_loopback_port()
            self.dir = workdir
            repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
            conf_dir = os.path.join(workdir, "mosquitto")
            data_dir = os.path.join(workdir, "mosquitto-data")
            os.makedirs(conf_dir, exist_ok=True)
            os.makedirs(data_dir, exist_ok=True)
            for f in ("ca.crt", "server.crt", "server.key"):
                shutil.copy(os.path.join(pki, f), conf_dir)
            shutil.copy(os.path.join(repo, "docs", "mosquitto", "acl"), conf_dir)
            text = open(os.path.join(repo, "docs", "mosquitto", "mosquitto.conf")).read()
            text = (text.replace("@CONF_DIR@", conf_dir).replace("@DATA_DIR@", data_dir)
                    .replace("@PORT@", str(self.port)).replace("@BIND@", "127.0.0.1"))
            # The one line the harness adds: keep the harness's own user (the files live in its
            # private work directory) instead of dropping to `mosquitto`.
            import pwd
            text += f"\nuser {pwd.getpwuid(os.getuid()).pw_name}\n"
            conf = os.path.join(conf_dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write(text)
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
            tls = ["--cafile", os.path.join(pki, "ca.crt"), "--cert", os.path.join(pki, "operator.crt"),
                   "--key", os.path.join(pki, "operator.key")]
            self.sub = subprocess.Popen(
                ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-v", "-q", "1",
                 "-i", "operator-recorder"] + tls +
                ["-t", "fleet/v1/devices/+/state", "-t", "fleet/v1/devices/+/events",
                 "-t", "fleet/v1/devices/+/presence", "-t", "fleet/v1/devices/+/health"],
                stdout=open(self.record_path, "w"), stderr=open(os.path.join(workdir, "mosquitto_sub.log"), "w"))
    return TlsBroker


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    h.check(out.returncode == 0, f"{' '.join(cmd[:3])}: {(out.stderr or out.stdout).strip()[-400:]}")
    return out.stdout


# -- the firmware --------------------------------------------------------------------------------

def parse_autoboot(text):
    """{section: {key: value}} of autoboot.txt; sections [all], [tryboot], [none]."""
    sections, cur = {}, "all"
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^\[(\w+)\]$", line)
        if m:
            cur = m.group(1)
            continue
        k, _, v = line.partition("=")
        sections.setdefault(cur, {})[k.strip()] = v.strip()
    return sections


def fmt_autoboot(ab):
    return (f"all={ab.get('all', {}).get('boot_partition', '-')} "
            f"tryboot={ab.get('tryboot', {}).get('boot_partition', '-')}"
            f"{'' if ab.get('all', {}).get('tryboot_a_b') == '1' else ' (no tryboot_a_b)'}")


class Pi5Station:
    """A card (or NVMe drive) and the power switch of one emulated Pi 5, with its firmware."""

    provision_label = "config"  # the partition fleetctl provision's output is copied onto (p1)

    def __init__(self, fleet, name, medium="sd"):
        self.fleet = fleet
        self.image = fleet.image
        self.medium = medium
        self.disk_name = DISKS[medium]
        self.dir = os.path.join(fleet.ctx.work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.layout = json.load(open(os.path.join(self.image, f"layout-{self.disk_name}.json")))
        self.disk = os.path.join(self.dir, "disk.img")
        subprocess.run(["cp", "--sparse=always", os.path.join(self.image, f"disk-{self.disk_name}.img"),
                        self.disk], check=True)
        self.broker = fleet.broker
        self.device = name
        self.tryboot_flag = False
        self.boots = []
        self.envs = []
        self.fw = None  # what the firmware chose for the boot being prepared

    # the disk from the host, without mounts
    def fat_read(self, label, name):
        off = self.layout[label]["start"]
        out = subprocess.run(["mtype", "-i", f"{self.disk}@@{off}", f"::{name}"], capture_output=True)
        return out.stdout.decode(errors="replace") if out.returncode == 0 else None

    def fat_get(self, label, name, dest):
        off = self.layout[label]["start"]
        out = subprocess.run(["mcopy", "-n", "-i", f"{self.disk}@@{off}", f"::{name}", dest],
                             capture_output=True)
        return out.returncode == 0

    def data_debugfs(self, request, write=False):
        """One debugfs request on /data (p7, or p4 on qemuarm64) of the powered-off disk, without
        a mount (and without the journal's replay); `write` opens it read-write."""
        return subprocess.run(["debugfs", *(["-w"] if write else []), "-R", request,
                               f"{self.disk}?offset={self.layout['data']['start']}"],
                              capture_output=True, text=True, errors="replace")

    def data_write(self, path, text):
        """Replaces a file on /data of the powered-off disk (debugfs -w, no mount): root's, mode
        0644, as the boot check writes the attempt record."""
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "file")
            with open(src, "w") as f:
                f.write(text)
            os.chmod(src, 0o644)
            self.data_debugfs(f"rm {path}", write=True)  # (absent is fine: the read below decides)
            out = self.data_debugfs(f"write {src} {path}", write=True)
        h.check(out.returncode == 0 and self.data_read(path) == text, f"debugfs wrote {path}: {out.stderr[-300:]}")

    def data_read(self, path):
        out = self.data_debugfs(f"cat {path}")
        return out.stdout if out.returncode == 0 and "File not found" not in out.stderr else None

    def autoboot(self):
        text = self.fat_read("config", "autoboot.txt")
        return parse_autoboot(text) if text is not None else {}

    def attempts(self):
        text = self.data_read("/fleet/boot/attempts") or ""
        return dict(line.split("=", 1) for line in text.split() if "=" in line)

    def firmware(self):
        """What the Pi 5 firmware does at power-on or reset: picks the boot partition from
        autoboot.txt and the one-shot tryboot flag (clearing the flag), checks it is bootable,
        loads config.txt, the kernel, the initramfs and cmdline.txt from it."""
        ab = self.autoboot()
        h.check(ab, "autoboot.txt on partition 1 is readable")
        tryboot = self.tryboot_flag and ab.get("all", {}).get("tryboot_a_b") == "1"
        self.tryboot_flag = False  # one-shot: cleared before the OS starts
        section = "tryboot" if tryboot and "tryboot" in ab else "all"
        part = int(ab.get(section, {}).get("boot_partition", "1"))
        label = next((k for k, v in self.layout.items() if v["number"] == part), None)
        h.check(label and self.layout[label]["fstype"] == "vfat",
                f"boot_partition={part} ([{section}]) is a FAT partition")
        fwdir = os.path.join(self.dir, "firmware")
        shutil.rmtree(fwdir, ignore_errors=True)
        os.makedirs(fwdir)
        config = self.fat_read(label, "config.txt")
        h.check(config is not None, f"partition {part} holds config.txt (bootable)")
        kernel, initramfs = "kernel_2712.img", None
        for line in config.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("kernel="):
                kernel = line.split("=", 1)[1]
            elif line.startswith("initramfs "):
                initramfs = line.split()[1]
        k = os.path.join(fwdir, "kernel")
        h.check(self.fat_get(label, kernel, k), f"partition {part} holds {kernel}")
        i = None
        if initramfs:
            i = os.path.join(fwdir, "initramfs")
            h.check(self.fat_get(label, initramfs, i), f"partition {part} holds {initramfs}")
        cmdline = (self.fat_read(label, "cmdline.txt") or "").strip()
        h.check(cmdline, f"partition {part} holds cmdline.txt")
        dtb = os.path.join(fwdir, "board.dtb")
        shutil.copy(os.path.join(self.image, "virt.dtb"), dtb)
        run(["fdtput", "-c", dtb, "/chosen/bootloader"])
        run(["fdtput", "-t", "u", dtb, "/chosen/bootloader", "partition", str(part)])
        run(["fdtput", "-t", "u", dtb, "/chosen/bootloader", "tryboot", "1" if tryboot else "0"])
        self.fw = {"partition": part, "label": label, "tryboot": tryboot, "kernel": k, "initrd": i,
                   "cmdline": cmdline, "dtb": dtb, "autoboot": ab}

    def qemu_command(self):
        fw = self.fw
        cmd = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a76", "-smp", "1", "-m", "1024",
               "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
               "-kernel", fw["kernel"], "-append", fw["cmdline"], "-dtb", fw["dtb"],
               "-device", "virtio-rng-pci",
               "-device", "i6300esb", "-action", "watchdog=reset"]
        if fw["initrd"]:
            cmd += ["-initrd", fw["initrd"]]
        cmd += usb_stick_devices(self)
        if self.medium == "sd":
            cmd += ["-drive", f"if=none,id=sd0,format=raw,file={self.disk},cache=unsafe",
                    "-device", "sdhci-pci,id=sdhci0", "-device", "sd-card,drive=sd0"]
        else:
            cmd += ["-drive", f"if=none,id=nvm0,format=raw,file={self.disk},cache=unsafe",
                    "-device", "nvme,id=nvme0,serial=fleet-nvme0,drive=nvm0"]
        cmd += ["-netdev", h.broker_netdev(self.broker.port, self.dir), "-device", "virtio-net-pci,netdev=net0"]
        return cmd

    def power_on(self, timeout):
        self.firmware()
        boot = h.Boot(self, len(self.boots) + 1, timeout)
        boot.fw = self.fw
        self.boots.append(boot)
        return boot

    def settle(self, boot):
        """After the machine reset or stopped: the tryboot flag as the reset left it, then what is
        on the disk (autoboot.txt, the attempt record)."""
        said_tryboot = any(TRYBOOT_LINE in line for _, line in boot.lines)
        # Only a reboot with "0 tryboot" sets the flag; a cut, a watchdog reset or a panic's
        # reset leave it cleared (the firmware cleared it when it started this boot).
        self.tryboot_flag = boot.end == "exit" and said_tryboot
        env = {"autoboot": self.autoboot(), "attempts": self.attempts(), "tryboot-set": self.tryboot_flag}
        self.envs.append(env)
        units = boot.first(r"^units (.*)")
        h.say(f"  [{h.scope_name()}] boot {boot.number:2d}: firmware p{boot.fw['partition']}"
              f"{' (tryboot)' if boot.fw['tryboot'] else ''} slot={boot.slot or '-'} version={boot.version or '-'} "
              f"end={boot.end}{' +tryboot' if self.tryboot_flag else ''} wall={boot.elapsed():5.1f}s "
              f"autoboot[{fmt_autoboot(env['autoboot'])}] attempts[{fmt_attempts(env['attempts'])}]")
        if units:
            h.say(f"  [{h.scope_name()}]   units: {units.group(1)}")
        return env


def usb_stick_devices(st):
    """QEMU's devices for the station's USB stick (`st.usb_stick`, an image made by
    make_usb_stick), plugged into a USB 3 port; none when it has none."""
    stick = getattr(st, "usb_stick", None)
    if not stick:
        return []
    return ["-device", "qemu-xhci,id=xhci0", "-drive", f"if=none,id=usb0,format=raw,file={stick}",
            "-device", "usb-storage,bus=xhci0.0,drive=usb0"]


def fmt_attempts(rec):
    return " ".join(f"{k}={v}" for k, v in rec.items()) or "none"


def units_active(boot, names):
    m = boot.first(r"^units (.*)")
    h.check(m, f"boot {boot.number} reports its units on the console")
    states = dict(kv.split("=", 1) for kv in m.group(1).split())
    # "activating": being restarted by systemd (Restart=on-failure); fleet-retentiond's watchdog
    # (30 s) has fired during RAUC's install under emulation. The update agent must be active.
    ok = lambda n, v: v == "active" or (v == "activating" and n != "fleet-updated")  # noqa: E731
    bad = {n: states.get(n) for n in names if not ok(n, states.get(n))}
    h.check(not bad, f"boot {boot.number}: units not active under systemd: {bad}")
    # No unit of the station as shipped has failed (Debian's or the layer's), whatever its role.
    m = boot.first(r"^system (\S+) failed=\[([^\]]*)\]")
    h.check(m, f"boot {boot.number} reports systemd's failed units on the console")
    failed = m.group(2).split()
    h.check(not failed, f"boot {boot.number}: failed units under systemd: {failed}")
    return states


def console_dump(boot, units):
    """Into the boot log (kept when a scenario fails): the journal of these units."""
    if boot.proc.poll() is None:
        us = " ".join(f"-u {u}" for u in units.split())
        boot.send(f"\njournalctl -b --no-pager -o short-monotonic {us} | tail -n 80 | sed 's/^/FLEET-QEMU dump /'; "
                  "systemctl --no-pager status rauc | sed 's/^/FLEET-QEMU dump /'; echo FLEET-QEMU dumped\n")
        boot.expect(r"^dumped", timeout=60)


def console_poweroff(boot):
    if boot.proc.poll() is None:
        try:
            boot.send("\nsystemctl poweroff\n")
        except OSError:  # it reset by itself meanwhile
            pass
    boot.wait()


# Every daemon of the image, and the reboot path, active under systemd.
DAEMONS = ["fleet-updated", "fleet-recorderd", "fleet-retentiond", "fleet-uploaderd", "fleet-reporterd",
           "fleet-boot-check", "fleet-reboot"]


def autoboot_is(env, all_part, try_part):
    ab = env["autoboot"]
    return (ab.get("all", {}).get("boot_partition") == str(all_part)
            and ab.get("all", {}).get("tryboot_a_b") == "1"
            and ab.get("tryboot", {}).get("boot_partition") == str(try_part))


# -- scenarios ------------------------------------------------------------------------------------

_fleet_lock = threading.Lock()


def fleet_of(ctx):
    """The one fleet (PKI, broker) of every Pi 5 scenario, made by the first lane that asks."""
    with _fleet_lock:
        if not hasattr(ctx, "pi5_fleet"):
            h.check(getattr(ctx, "pi5_image", None), "the Pi 5 image (--pi5-image, tests/qemu/build-pi5.sh)")
            ctx.pi5_fleet = Fleet(ctx, ctx.pi5_image)
        return ctx.pi5_fleet


def health_reports(msgs):
    """fleet-reporterd's health reports among the station's messages (its own MQTT session)."""
    return [p for k, p in msgs if k == "health"]


# Each slot's boot partition (what autoboot.txt names) and root partition (fleet-rpi5-*.wks.in).
SLOT_PARTS = {"A": (2, 5), "B": (3, 6)}


def other_slot(slot):
    return "B" if slot == "A" else "A"


def install_boot(st, uid, version, flow_checks=None, running=("A", "1.0.0")):
    """A boot of the committed slot (`running`: slot and version; by default boot 1 on A, the
    first boot: grow /data, provisioning): the offer, download, install into the other slot and
    the trial reboot. `flow_checks(st, boot, env)` asserts what the boot flow shows of it
    (default: the Pi 5 firmware's, `tryboot_install_checks`)."""
    slot, running_version = running
    target = other_slot(slot)
    since = h.mark(st)
    boot = st.power_on(timeout=900)
    failed = h.wait_mqtt(st, boot, h.ended_without_commit(uid), 900, since)
    if failed or boot.proc.poll() is None:
        console_dump(boot, "rauc dbus fleet-updated fleet-reporterd")
        console_poweroff(boot)
    boot.wait()
    env = st.settle(boot)
    msgs = h.station_msgs(st, since)
    seen = h.kinds(msgs)
    n = boot.number
    h.check(boot.slot == slot and boot.version == running_version,
            f"boot {n} on {slot} {running_version}, got {boot.slot} {boot.version}")
    units_active(boot, DAEMONS)
    h.check(not failed, f"the update is not given up: {(failed or {}).get('last-outcome')}; events {seen}")
    for kind in ("offer-accepted", "download-started", "downloaded", "verified", "install-started",
                 "installed", "trial-armed", "rebooting"):
        h.check(kind in seen, f"the station reports {kind}: got {seen}")
    inst = h.find_event(msgs, "installed")
    h.check(inst.get("slot") == target and inst.get("version") == version,
            f"installed into {target} {version}: {inst}")
    h.check(health_reports(msgs), "fleet-reporterd reports the station's health over its own session")
    (flow_checks or tryboot_install_checks)(st, boot, env)
    return boot


def tryboot_install_checks(st, boot, env):
    """An install boot on the Pi 5 flow: the committed slot's partition from [all], its root,
    the reboot with "0 tryboot", the slot still committed in autoboot.txt and the other slot's
    trial in the attempt record."""
    disk, n = st.disk_name, boot.number
    slot = boot.slot
    (part, root), (other_part, _) = SLOT_PARTS[slot], SLOT_PARTS[other_slot(slot)]
    h.check(boot.fw["partition"] == part and not boot.fw["tryboot"], f"boot {n}: the firmware boots p{part} from [all]")
    h.check(boot.first(rf"^booted .* root=/dev/{disk}p{root}$"),
            f"boot {n}: root=/dev/{disk}p{root} from cmdline.txt of p{part}")
    h.check(boot.end == "exit" and st.tryboot_flag, f"boot {n} ends in a reboot with '0 tryboot' (end={boot.end})")
    h.check(autoboot_is(env, part, other_part),
            f"after install: {slot} still committed in autoboot.txt: {fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"].get("slot") == other_slot(slot) and env["attempts"].get("state") == "trial",
            f"after install: the attempt record holds {other_slot(slot)}'s trial: {fmt_attempts(env['attempts'])}")


def trial_boot_commits(st, uid, version, slot="B", flow_checks=None):
    """The trial boot of `slot` after its install: fleet-updated's health gate commits it.
    Asserts the slot, the reports, the units; `flow_checks(st, boot, env, slot)` what the boot
    flow shows of it (default: the Pi 5 firmware's, `tryboot_commit_checks`). Returns the boot
    and its messages."""
    since = h.mark(st)
    boot = st.power_on(timeout=420)
    done = h.wait_mqtt(st, boot, h.outcome_is("committed", uid), 400, since)
    if done:
        boot.expect(r"^ready ", timeout=120)
    else:
        console_dump(boot, "rauc dbus fleet-updated fleet-reporterd fleet-boot-check")
    console_poweroff(boot)
    env = st.settle(boot)
    msgs = h.station_msgs(st, since)
    n = boot.number
    h.check(boot.slot == slot and boot.version == version, f"boot {n} on {slot} {version}, got {boot.slot} {boot.version}")
    h.check(done, f"the station reports committed for {uid}: events {h.kinds(msgs)}")
    for kind in ("trial-booted", "health-passed", "committed"):
        h.check(kind in h.kinds(msgs), f"the station reports {kind}: got {h.kinds(msgs)}")
    units_active(boot, DAEMONS)
    h.check(health_reports(msgs), f"fleet-reporterd reports from {slot}")
    (flow_checks or tryboot_commit_checks)(st, boot, env, slot)
    return boot, msgs


def tryboot_commit_checks(st, boot, env, slot):
    """A committed trial on the Pi 5 flow: the firmware booted the slot from [tryboot] (the flag
    the install's reboot set), with the root bootfs-post-install wrote into its cmdline.txt;
    autoboot.txt names it in [all], the record names the other slot good (the rollback target)."""
    other = other_slot(slot)
    (part, root), (other_part, _) = SLOT_PARTS[slot], SLOT_PARTS[other]
    disk, n = st.disk_name, boot.number
    h.check(boot.fw["partition"] == part and boot.fw["tryboot"], f"boot {n}: the firmware boots p{part} from [tryboot]")
    h.check(boot.first(rf"^booted .* root=/dev/{disk}p{root}$"),
            f"boot {n}: root=/dev/{disk}p{root} (bootfs-post-install rewrote {slot}'s cmdline.txt)")
    h.check(autoboot_is(env, part, other_part),
            f"committed: autoboot.txt [all]={part} [tryboot]={other_part}, got {fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"].get("slot") == other and env["attempts"].get("state") == "good",
            f"committed: the record names {other} good (the rollback target): {fmt_attempts(env['attempts'])}")
    h.check(not st.tryboot_flag, "a power-off leaves no tryboot flag")


def scenario_good_update(ctx, medium="sd"):
    """Slot A boots under systemd with the layer's units, provisioned from the card; a good
    update pushed with fleetctl is installed, trial-booted with the tryboot flag and committed."""
    fleet = fleet_of(ctx)
    name = "pi5-good-update" if medium == "sd" else f"pi5-good-update-{medium}"
    st = Pi5Station(fleet, name, medium)
    fleet.provision(st)
    # the full transfer as fleetctl makes it by default: the zstd envelope (ADR 0012)
    uid = fleet.push(st, "good", compress=True)
    version = fleet.info["bundles"]["good"]

    boot = install_boot(st, uid, version)
    msgs = h.station_msgs(st, 0)
    chosen = h.find_event(msgs, "transport-chosen")
    got = h.find_event(msgs, "delivered")
    h.check(chosen and chosen.get("transport") == "compressed" and got and got.get("transport") == "compressed"
            and got.get("bundle-bytes") == os.path.getsize(os.path.join(fleet.image, "bundles", "good.raucb")),
            f"boot {boot.number}: the bundle came as fleetctl's compressed envelope, decoded whole on the "
            f"station: {chosen} {got}")

    # boot 2: the flag is set, so [tryboot]: p3 (B); the health gate commits B
    trial_boot_commits(st, uid, version)

    # boot 3: a normal boot of B from [all]
    since = h.mark(st)
    boot = st.power_on(timeout=300)
    idle = h.wait_mqtt(st, boot, lambda m: (lambda s: s if s and s.get("booted") == "B"
                                            and s.get("phase") == "idle" else None)(h.last_state(m)), 240, since)
    boot.expect(r"^ready ", timeout=120)
    console_poweroff(boot)
    env = st.settle(boot)
    h.check(boot.fw["partition"] == 3 and not boot.fw["tryboot"], "boot 3: the firmware boots p3 from [all]")
    h.check(boot.slot == "B" and idle, "boot 3 is a normal boot of B, idle on MQTT")
    h.check(idle.get("version") == version and idle.get("committed") == "B",
            f"the station reports B {version} committed: {idle.get('committed')} {idle.get('version')}")
    h.check(autoboot_is(env, 3, 2), f"B stays committed: {fmt_autoboot(env['autoboot'])}")

    # boot 4: as if a power cut had fallen between the commit's two writes (autoboot.txt
    # rewritten, the record not yet: pi5-power-cuts-sd, ADR 0001 amendment 3). The boot check
    # finishes the commit: A is the fallback again.
    st.data_write("/fleet/boot/attempts", f"slot=B\nstate=trial\nattempts-left={ATTEMPTS - 2}\n")
    since = h.mark(st)
    boot = st.power_on(timeout=300)
    idle = h.wait_mqtt(st, boot, state_where(lambda s: s.get("booted") == "B" and s.get("phase") == "idle"
                                             and slot_health(s, "A") == "good"), 240, since)
    boot.expect(r"^ready ", timeout=120)
    console_poweroff(boot)
    env = st.settle(boot)
    h.check(boot.slot == "B" and boot.fw["partition"] == 3, f"boot 4 on B from [all]: {boot.slot}")
    h.check(autoboot_is(env, 3, 2) and env["attempts"] == {"slot": "A", "state": "good"},
            f"the boot check finished the half-done commit: {fmt_autoboot(env['autoboot'])}, "
            f"record {fmt_attempts(env['attempts'])}")
    h.check(idle, "the station reports A good again, B committed and idle")
    return st, ["A", "B", "B", "B"]


ATTEMPTS = 3  # bootctl-tryboot.toml's attempts (FLEET_BOOT_ATTEMPTS) and max-trial-attempts


def trial_events(msgs, kind):
    return [e for k, e in ((k, p.get("event") or {}) for k, p in msgs if k == "events" and isinstance(p, dict))
            if e.get("kind") == kind]


def scenario_trial_panics(ctx, medium="sd", mode="panic"):
    """A slot whose kernel panics at boot (the `panic` bundle), or that hangs once its boot is
    under way (`hang`: a real-time spinner starves everything, systemd's watchdog pings too, and
    the emulated i6300esb resets the machine): the reset drops the
    one-shot flag, so the firmware boots [all] (A) again without anyone doing anything; on A the
    boot check alone retries the trial with "0 tryboot" while the record has attempts left, then
    marks B bad, and fleet-updated reports the rollback with its cause.

    One decider (ADR 0001, amendment 1): the attempt record counts and the boot check retries;
    fleet-updated, whether or not it starts on A before the boot check's reboot, never arms the
    trial again (no `trial-armed` after boot 1) and only reports `trial-fell-back` with
    `will-retry` as long as the record holds the trial. So exactly ATTEMPTS trial boots of B,
    the record's count going down by one on every boot of A, and none after B is bad."""
    fleet = fleet_of(ctx)
    name = {"panic": "pi5-trial-panics", "hang": "pi5-trial-hangs", "reboot": "pi5-trial-reboots",
            "reboot-at-gate": "pi5-trial-reboots-at-gate"}[mode]
    st = Pi5Station(fleet, name if medium == "sd" else f"{name}-{medium}", medium)
    fleet.provision(st)
    uid = fleet.push(st, mode)
    version = fleet.info["bundles"][mode]
    disk = st.disk_name
    install_boot(st, uid, version)
    trials, done, armed, fell_back, msgs = 0, None, [], [], []
    while not done and trials < ATTEMPTS:
        # the trial boot of B: it panics (panic=10 on cmdline.txt) or hangs until the watchdog
        # fires; QEMU's reset ends the process
        trial = st.power_on(timeout=300)
        trial.wait()
        env = st.settle(trial)
        trials += 1
        h.check(trial.fw["partition"] == 3 and trial.fw["tryboot"],
                f"trial {trials}: the firmware boots p3 from [tryboot]")
        h.check(trial.slot == "B" and trial.version == version and trial.first(rf"^failing mode={mode}"),
                f"trial {trials} on B {version} fails by {mode}: {trial.slot} {trial.version}")
        h.check(mode != "hang" or trial.first(r"^hanging now"), f"trial {trials}: B hangs")
        h.check(mode not in ("reboot", "reboot-at-gate") or trial.first(r"^rebooting now"),
                f"trial {trials}: B reboots itself")
        h.check(trial.first(rf"^booted .* root=/dev/{disk}p6$"), f"trial {trials}: root=/dev/{disk}p6")
        h.check(trial.end == "exit" and not st.tryboot_flag,
                f"trial {trials} ends in the {mode}'s reset, which leaves no tryboot flag (end={trial.end})")
        h.check(autoboot_is(env, 2, 3), f"trial {trials}: A stays committed: {fmt_autoboot(env['autoboot'])}")
        # each attempt is spent before its trial reboot; nothing ran on B to change the record
        h.check(env["attempts"].get("slot") == "B" and env["attempts"].get("state") == "trial"
                and env["attempts"].get("attempts-left") == str(ATTEMPTS - trials),
                f"trial {trials}: the record spent its attempt before the reboot: {fmt_attempts(env['attempts'])}")
        # back on A from [all]: the boot check retries the trial with "0 tryboot", or gives B up
        since = h.mark(st)
        back = st.power_on(timeout=420)
        last = trials == ATTEMPTS
        if last:
            done = h.wait_mqtt(st, back, h.outcome_is("rolled-back", uid), 400, since)
            if done:
                back.expect(r"^ready ", timeout=120)
            else:
                console_dump(back, "fleet-updated fleet-boot-check fleet-reboot")
            console_poweroff(back)
        else:
            back.wait()
        env = st.settle(back)
        msgs = h.station_msgs(st, since)
        armed += [e.get("attempt") for e in trial_events(msgs, "trial-armed")]
        fell_back += [(trials, e.get("attempt"), e.get("will-retry")) for e in trial_events(msgs, "trial-fell-back")]
        h.check(back.fw["partition"] == 2 and not back.fw["tryboot"] and back.slot == "A"
                and back.version == "1.0.0", f"after trial {trials}: the firmware boots A from [all]: "
                f"p{back.fw['partition']} {back.slot} {back.version}")
        if not last:
            h.check(back.end == "exit" and st.tryboot_flag,
                    f"after trial {trials}: the boot check retries the trial with '0 tryboot' (end={back.end})")
            h.check(env["attempts"].get("slot") == "B" and env["attempts"].get("state") == "trial"
                    and env["attempts"].get("attempts-left") == str(ATTEMPTS - trials - 1),
                    f"after trial {trials}: B on trial with {ATTEMPTS - trials - 1} attempts left: "
                    f"{fmt_attempts(env['attempts'])}")
            h.check(not done, f"after trial {trials}: no outcome yet: {h.kinds(msgs)}")
    h.check(trials == ATTEMPTS, f"exactly {ATTEMPTS} trials (the record's attempts), got {trials}")
    h.check(done, f"the station reports rolled-back for {uid} after {trials} trials: events {h.kinds(msgs)}")
    h.check(not st.tryboot_flag, "after the last trial A stays: no tryboot flag queued")
    h.check(not armed, f"fleet-updated never arms the trial again on A: trial-armed attempts {armed}")
    h.check(all(w for t, a, w in fell_back if t < ATTEMPTS) and all(not w for t, a, w in fell_back if t == ATTEMPTS),
            f"trial-fell-back will-retry while the record holds the trial, then not: {fell_back}")
    h.check(any(t == ATTEMPTS for t, a, w in fell_back), f"fleet-updated reports the last fallback: {fell_back}")
    out = (done or {}).get("last-outcome") or {}
    cause = out.get("cause") or {}
    h.check(out.get("bad-slot") == "B" and cause.get("code") == "trial-did-not-boot",
            f"rolled back from B because the trial did not boot: {out}")
    rb = h.find_event(msgs, "rolled-back")
    h.check(rb and rb.get("from") == "B" and rb.get("to") == "A", f"rolled-back event from B to A: {rb}")
    h.say(f"  [{h.scope_name()}] reported: rolled-back {json.dumps(cause)} after {trials} trials; "
          f"fleet-updated on A: trial-fell-back (trial, attempt, will-retry) {fell_back}")
    h.check(autoboot_is(env, 2, 3), f"A committed: {fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"].get("slot") == "B" and env["attempts"].get("state") == "bad",
            f"the record names B bad: {fmt_attempts(env['attempts'])}")
    units_active(back, DAEMONS)
    return st, ["A"] + ["B", "A"] * trials


def scenario_trial_reboots_at_gate(ctx):
    """A slot that reboots itself as fleet-updated's health gate runs (the `reboot-at-gate`
    bundle: a one-shot in its boot waits for the gate's first log line, then `systemctl
    reboot`), so the boot never finishes and the gate sees the system `starting`, then
    `stopping`: it must never commit B (the fault of docs/reference/qemu-harness.md). As
    `pi5-trial-reboots` from there: every trial boot of B ends in a plain reboot, A stays
    committed (`autoboot.txt` `[all]=2 [tryboot]=3` after every trial), the boot check spends
    the record's attempts and the station reports `rolled-back` (`trial-did-not-boot`)."""
    return scenario_trial_panics(ctx, mode="reboot-at-gate")


# The recorder's station settings and the update's health gate for pi5-recorder-gate, as a fleet
# would provision a station with a microphone (docs/getting-started.md): segments of 20 s, so the
# gate (which needs one closed segment, docs/reference/updated.md: give the deadline more than one
# segment's length) decides within 45 s; one trial.
RECORDER_DEFAULTS = """[defaults.updated.health]
deadline-secs = 45

[defaults.updated.update]
max-trial-attempts = 1

[defaults.recorderd.profiles.audible]
segment-seconds = 20
"""
SIGNAL_PERIOD = 48       # tests/qemu/pi5/fleet-qemu-signal: 1 kHz at 48 kHz
SIGNAL_PEAK = 10000


def signal_of(path):
    """A segment as the harness hears it: format, GUANO and what closed it (its GUANO `FLEET|Closed
    By`), and how much of it is the known signal (the share of samples equal to the sample one
    period earlier: snd-aloop copies bit for bit, so only a gap or silence breaks it) and its
    peak."""
    import array
    import wave
    raw = open(path, "rb").read()
    with wave.open(path) as w:
        fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        data = array.array("h", w.readframes(w.getnframes()))
    n = len(data) - SIGNAL_PERIOD
    same = sum(1 for i in range(SIGNAL_PERIOD, len(data)) if data[i] == data[i - SIGNAL_PERIOD])
    closed = re.search(rb"\nFLEET\|Closed By: *([a-z-]+)", raw)
    return {"format": fmt, "guano": b"GUANO|Version" in raw, "closed-by": closed and closed.group(1).decode(),
            "samples": len(data),
            "periodic": same / n if n > 0 else 0.0, "peak": max((abs(x) for x in data), default=0)}


def recordings_on(st):
    """The segment names in /fleet/recordings/data on the powered-off disk (debugfs)."""
    out = st.data_debugfs("ls /fleet/recordings/data")
    h.check(out.returncode == 0, f"debugfs ls of the recordings: {out.stderr[-300:]}")
    return set(re.findall(r"\S+\.wav", out.stdout))


def check_signal(heard, underruns):
    """The recorder wrote what the card gave it, bit for bit: every segment of a second or more
    (a segment cut short by a stop may hold only the silence before the signal started) is the
    known signal or digital silence (≥ 95% of its samples equal the sample one period earlier,
    its peak the signal's or 0), and at least three hold the signal. The loopback hands the
    recorder silence only when the test's own source starved (a guest without CPU for longer
    than aplay's buffer), which fleet-qemu-signal reports as `signal underrun`; a silent
    stretch without such a report fails."""
    long_ones = {f: x for f, x in heard.items() if x["samples"] >= 48000}
    wrong = {f: x for f, x in long_ones.items()
             if x["periodic"] < 0.95 or (abs(x["peak"] - SIGNAL_PEAK) > 2 and x["peak"] != 0)}
    h.check(not wrong, f"every segment of a second or more is the known signal or silence: not {wrong}")
    signal = [f for f, x in long_ones.items() if abs(x["peak"] - SIGNAL_PEAK) <= 2]
    h.check(len(signal) >= 3, f"at least three segments of a second or more hold the signal: {signal}")
    silent = [f for f, x in long_ones.items() if x["peak"] == 0]
    h.check(not silent or underruns,
            f"silent segments {silent} only after the test's source reported an underrun: "
            f"{[m.group(1) for m in underruns]}")
    if silent:
        h.say(f"  [{h.scope_name()}] {len(silent)} silent segment(s) after {len(underruns)} underrun(s) "
              f"of the test's source: {silent}")


def scenario_recorder_gate(ctx, medium="sd"):
    """The station does its job, and the update's health gate checks it as shipped (issue 15,
    item 5). The station is provisioned with a microphone (`--microphone alsa:...`: the loopback
    card's capture side, fed with a known 1 kHz signal by fleet-qemu-signal), so its
    `updated.toml` gets `[health.recorder]`. Slot A records; fleet-retentiond indexes the
    segments. The `mute` bundle's slot has no sound card: its trial's recorder cannot record,
    the gate fails on the recorder, B is marked bad and the station returns to A by itself and
    reports the rollback with the recorder as its cause. On the disk afterwards: the segments
    carry the known signal and GUANO, and every one is in retentiond's index."""
    fleet = fleet_of(ctx)
    st = Pi5Station(fleet, "pi5-recorder-gate" if medium == "sd" else f"pi5-recorder-gate-{medium}", medium)
    fleet.provision(st, ["--microphone", "alsa:hw:CARD=Loopback,DEV=1"], RECORDER_DEFAULTS)
    uid = fleet.push(st, "mute")
    version = fleet.info["bundles"]["mute"]
    disk = st.disk_name
    boot = install_boot(st, uid, version)
    h.check(boot.first(r"^signal 1kHz"), "boot 1: the known signal plays into the loopback card")

    # boot 2: [tryboot] (p3, B) without a sound card; the gate fails on the recorder, B is
    # marked bad and the station reboots off it by itself
    since = h.mark(st)
    trial = st.power_on(timeout=600)
    failed = h.wait_mqtt(st, trial, lambda m: h.find_event(m, "health-failed"), 540, since)
    if failed is None and trial.proc.poll() is None:
        console_dump(trial, "fleet-updated fleet-recorderd fleet-qemu-signal")
    trial.wait()
    env = st.settle(trial)
    msgs = h.station_msgs(st, since)
    h.check(trial.fw["partition"] == 3 and trial.fw["tryboot"], "boot 2: the firmware boots p3 from [tryboot]")
    h.check(trial.slot == "B" and trial.version == version and trial.first(r"^failing mode=mute"),
            f"boot 2 on B {version}, the slot without a sound card: {trial.slot} {trial.version}")
    h.check(trial.first(rf"^booted .* root=/dev/{disk}p6$"), f"boot 2: root=/dev/{disk}p6")
    h.check("trial-booted" in h.kinds(msgs), f"the station reports trial-booted: {h.kinds(msgs)}")
    h.check(failed and "recorder" in (failed.get("check") or "") and failed.get("will-retry") is False,
            f"the health gate fails on the recorder, no retry (max-trial-attempts 1): {failed}")
    h.check("marked-bad" in h.kinds(msgs), f"B is marked bad on the trial boot: {h.kinds(msgs)}")
    h.check(trial.end == "exit" and not st.tryboot_flag,
            f"boot 2 ends in a plain reboot off the bad slot (end={trial.end}, tryboot={st.tryboot_flag})")
    h.check(autoboot_is(env, 2, 3), f"A stays committed: {fmt_autoboot(env['autoboot'])}")

    # boot 3: [all] (p2, A): the rollback is reported; A records on
    before = recordings_on(st)
    since = h.mark(st)
    back = st.power_on(timeout=420)
    done = h.wait_mqtt(st, back, h.outcome_is("rolled-back", uid), 400, since)
    back.expect(r"^ready ", timeout=120)
    time.sleep(25)  # another segment of 20 s on A
    units = units_active(back, DAEMONS)
    console_poweroff(back)
    env = st.settle(back)
    msgs = h.station_msgs(st, since)
    h.check(back.fw["partition"] == 2 and not back.fw["tryboot"] and back.slot == "A" and back.version == "1.0.0",
            f"boot 3: the firmware boots A from [all]: p{back.fw['partition']} {back.slot} {back.version}")
    h.check(done, f"the station reports rolled-back for {uid}: events {h.kinds(msgs)}")
    cause = done["last-outcome"].get("cause") or {}
    h.check(cause.get("code") == "health-check-failed" and "recorder" in (cause.get("check") or ""),
            f"the rollback's cause names the recorder: {cause}")
    rb = h.find_event(msgs, "rolled-back")
    h.check(rb and rb.get("from") == "B" and rb.get("to") == "A", f"rolled-back event from B to A: {rb}")
    h.check(autoboot_is(env, 2, 3), f"A committed: {fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"].get("slot") == "B" and env["attempts"].get("state") == "bad",
            f"the record names B bad: {fmt_attempts(env['attempts'])}")

    # the station's work, read from /data on the disk (debugfs, no mount)
    got = os.path.join(st.dir, "data-read")
    shutil.rmtree(got, ignore_errors=True)
    os.makedirs(got)
    out = st.data_debugfs(f"rdump /fleet/recordings/data /fleet/retention {got}")
    h.check(out.returncode == 0, f"debugfs rdump of the recordings: {out.stderr[-400:]}")
    wavs = {}
    for d, _, files in os.walk(os.path.join(got, "data")):
        for f in files:
            if f.endswith(".wav"):
                wavs[f] = os.path.join(d, f)
    h.check(len(wavs) >= 3, f"the recorder closed segments on A (boots 1 and 3): {sorted(wavs)}")
    import sqlite3
    db = sqlite3.connect(os.path.join(got, "retention", "index.sqlite"))
    rows = {os.path.basename(p): size for p, size in
            db.execute("SELECT path, size_bytes FROM recordings WHERE local_deleted = 0")}
    db.close()
    missing = [f for f in wavs if rows.get(f) != os.path.getsize(wavs[f])]
    h.check(not missing, f"fleet-retentiond indexes every segment with its size: not indexed {missing}; "
            f"index {sorted(rows)}")
    heard = {f: signal_of(p) for f, p in sorted(wavs.items())}
    for f, s in heard.items():
        h.say(f"  [{h.scope_name()}] {f}: {s['samples']} samples, {s['periodic']:.4f} of them the "
              f"1 kHz signal, peak {s['peak']}, GUANO {s['guano']}, closed by {s['closed-by']}")
        h.check(s["format"] == (48000, 1, 2) and s["guano"], f"{f}: 48 kHz mono 16-bit with GUANO: {s}")
    check_signal(heard, boot.all(r"^signal underrun: (.*)") + back.all(r"^signal underrun: (.*)"))
    # The card appeared after the recorder started, on boot 3 as on boot 1 (fleet-qemu-signal):
    # A records on after the rollback.
    again = {f: x for f, x in heard.items() if f not in before}
    h.check(any(x["samples"] >= 48000 and abs(x["peak"] - SIGNAL_PEAK) <= 2 for x in again.values()),
            f"boot 3 on A records the signal again: new segments {sorted(again)}")
    h.check(units.get("fleet-recorderd") == "active", f"A's recorder is active: {units}")
    return st, ["A", "B", "A"]


# -- console recovery with `fleet` (docs/recovery-guide.md) -----------------------------------

STICK_BUNDLE = "fleet-bundle-raspberrypi5.raucb"  # the release bundle's name (recovery guide, section 5)


def make_usb_stick(st, bundle, name=STICK_BUNDLE):
    """A USB stick as a technician prepares one: an msdos partition table with one FAT
    partition holding the release bundle under its release name (`name`)."""
    stick = os.path.join(st.dir, "usb-stick.img")
    part = os.path.join(st.dir, "usb-stick-p1.img")
    size_mib = os.path.getsize(bundle) // (1 << 20) + 32
    for f in (stick, part):
        if os.path.exists(f):
            os.unlink(f)
    run(["mkfs.vfat", "-n", "FLEETUSB", "-C", part, str(size_mib * 1024)])
    run(["mcopy", "-i", part, bundle, f"::/{name}"])
    with open(stick, "wb") as f:
        f.truncate((size_mib + 1) << 20)
    subprocess.run(["sfdisk", "-q", stick], input="label: dos\nstart=2048, type=c\n", text=True,
                   check=True, capture_output=True)
    run(["dd", f"if={part}", f"of={stick}", "bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"])
    os.unlink(part)
    return stick


def console_ready(boot):
    """Waits for the boot's `ready` and for the root shell of the serial autologin to answer."""
    h.check(boot.expect(r"^ready ", timeout=300), f"boot {boot.number} comes up (ready)")
    for attempt in range(6):
        rc, _ = h.console_run(boot, "true", f"hello{attempt}", timeout=20)
        if rc == 0:
            return
    h.check(False, f"boot {boot.number}: the serial console's root shell answers")


def console_ok(boot, command, tag, *shows, answer="", timeout=60, rc_wanted=0):
    """Types a recovery command; checks its exit status and that its output matches `shows`."""
    rc, said = h.console_run(boot, command, tag, answer=answer, timeout=timeout)
    h.check(rc == rc_wanted, f"`{command}` exits {rc_wanted}, got {rc}: {said[-1500:]}")
    flat = " ".join(said.split())  # a line wrapped at 80 columns reads as one
    missing = [rx for rx in shows if not (re.search(rx, said) or re.search(rx, flat))]
    h.check(not missing, f"`{command}` shows {missing}: {said[-1500:]}")
    return said


def state_where(pred):
    """A wait_mqtt predicate: the newest state report, when pred holds for it."""
    return lambda m: (lambda s: s if s and pred(s) else None)(h.last_state(m))


def slot_health(state, slot):
    return next((s.get("health") for s in state.get("slots") or [] if s.get("slot") == slot), None)


def scenario_console_recovery(ctx, medium="nvme"):
    """A technician at the serial console follows docs/recovery-guide.md with `fleet` on the Pi 5
    tryboot flow: on a station that committed B over the air, `fleet status`, `fleet rollback`
    (answering its prompt) and `reboot` bring A back from `[all]`; `fleet install` from a USB
    stick (section 5) writes B again, `fleet-bootctl reboot-trial` boots it from `[tryboot]`,
    `fleet mark-good` commits it after the technician checked it (section 3); `fleet logs`,
    and `fleet mark-bad` with the rollback it then refuses."""
    fleet = fleet_of(ctx)
    name = "pi5-console-recovery"
    st = Pi5Station(fleet, name, medium)
    fleet.provision(st)
    uid = fleet.push(st, "good")
    version = fleet.info["bundles"]["good"]
    disk = st.disk_name
    install_boot(st, uid, version)

    # boot 2: the trial of B from [tryboot], committed by the health gate; then at the console
    since = h.mark(st)
    boot = st.power_on(timeout=900)
    done = h.wait_mqtt(st, boot, h.outcome_is("committed", uid), 400, since)
    if not done:
        console_dump(boot, "rauc fleet-updated fleet-boot-check")
        console_poweroff(boot)
    h.check(done, f"boot 2: the station commits B over the air: {h.kinds(h.station_msgs(st, since))}")
    h.check(boot.fw["partition"] == 3 and boot.fw["tryboot"] and boot.slot == "B",
            f"boot 2: the firmware boots p3 (B) from [tryboot]: {boot.slot}")
    console_ready(boot)
    console_ok(boot, "fleet status", "status-b", rf"station\s+{name}\b",
               r"tryboot flow, running B, next boot B", r"slot A\s+good\b",
               rf"slot B\s+good\s+{re.escape(version)}\s+running", r"daemon\s+fleet-updated\s+active")
    # Section 4: `fleet rollback`, `yes` at its question, then `reboot`.
    console_ok(boot, "fleet rollback", "rollback", r"now\s+slot B runs " + re.escape(version),
               r"rollback\s+slot A \(.*\) boots next", r"Make slot A primary\? Type yes to continue",
               r"slot A is primary\. Reboot to start it: reboot", answer="yes\n")
    boot.send("reboot\n")
    boot.wait()
    env = st.settle(boot)
    h.check(boot.end == "exit" and not st.tryboot_flag, f"`reboot` is a plain reboot (end={boot.end})")
    h.check(autoboot_is(env, 2, 3), f"after the rollback: autoboot.txt [all]=2 [tryboot]=3, got "
                                    f"{fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"].get("slot") == "B" and env["attempts"].get("state") == "good",
            f"after the rollback: the record keeps B good (roll forward possible): {fmt_attempts(env['attempts'])}")

    # boot 3: A from [all]; the technician plugs in the stick and installs from it (section 5)
    st.usb_stick = make_usb_stick(st, os.path.join(st.image, "bundles", "good.raucb"))
    since = h.mark(st)
    boot = st.power_on(timeout=1200)
    on_a = h.wait_mqtt(st, boot, state_where(lambda s: s.get("booted") == "A" and s.get("committed") == "A"
                                             and s.get("phase") == "idle"), 300, since)
    h.check(boot.fw["partition"] == 2 and not boot.fw["tryboot"], "boot 3: the firmware boots p2 from [all]")
    h.check(boot.slot == "A" and boot.version == "1.0.0", f"boot 3 on A 1.0.0: {boot.slot} {boot.version}")
    h.check(boot.first(rf"^booted .* root=/dev/{disk}p5$"), f"boot 3: root=/dev/{disk}p5")
    h.check(on_a and on_a.get("version") == "1.0.0",
            f"the station reports A 1.0.0 booted and committed: {on_a}")
    console_ready(boot)
    console_ok(boot, "fleet status", "status-a", r"running A, next boot A",
               r"slot A\s+good\s+1\.0\.0 \(image\)\s+running", rf"slot B\s+good\s+{re.escape(version)}")
    console_ok(boot, "mkdir -p /run/usb && mount -o ro /dev/sda1 /run/usb", "mount")
    said = console_ok(boot, f"fleet install /run/usb/{STICK_BUNDLE}", "install",
                      rf"bundle\s+/run/usb/{STICK_BUNDLE}", r"format\s+verity", r"target\s+slot B \(running A\)",
                      r"100%\s+Installing done", rf"installed\s+{re.escape(version)} in slot B",
                      r"next\s+slot B boots on trial at the next boot:\s+fleet-bootctl\s+reboot-trial",
                      timeout=900)
    console_ok(boot, "fleet status", "status-installed", r"running A, next boot B",
               rf"slot B\s+trial\s+{re.escape(version)}\s+next boot, 3 attempts left")
    boot.send("fleet-bootctl reboot-trial\n")
    boot.wait()
    env = st.settle(boot)
    h.check(boot.end == "exit" and st.tryboot_flag,
            f"`fleet-bootctl reboot-trial` reboots with '0 tryboot' (end={boot.end}): {said[-300:]}")
    h.check(autoboot_is(env, 2, 3), f"before the trial: A committed, {fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"] == {"slot": "B", "state": "trial", "attempts-left": str(ATTEMPTS - 1)},
            f"the trial reboot spent one attempt: {fmt_attempts(env['attempts'])}")

    # boot 4: the console-installed B from [tryboot]; the technician checks it and commits it
    since = h.mark(st)
    boot = st.power_on(timeout=900)
    on_b = h.wait_mqtt(st, boot, state_where(lambda s: s.get("booted") == "B"), 300, since)
    h.check(boot.fw["partition"] == 3 and boot.fw["tryboot"], "boot 4: the firmware boots p3 from [tryboot]")
    h.check(boot.slot == "B" and boot.version == version, f"boot 4 on B {version}: {boot.slot} {boot.version}")
    h.check(boot.first(rf"^booted .* root=/dev/{disk}p6$"), f"boot 4: root=/dev/{disk}p6")
    h.check(on_b and on_b.get("committed") == "A" and slot_health(on_b, "B") == "trial",
            f"the station reports B booted on trial, A committed: {on_b}")
    console_ready(boot)
    units_active(boot, DAEMONS)
    console_ok(boot, "fleet status", "status-trial", r"running B, next boot B",
               rf"slot B\s+trial\s+{re.escape(version)}\s+running")
    # Section 5: no install while the running slot is on trial.
    console_ok(boot, "mkdir -p /run/usb && mount -o ro /dev/sda1 /run/usb", "mount-trial")
    console_ok(boot, f"fleet install /run/usb/{STICK_BUNDLE}", "install-on-trial",
               r"the running slot B is on trial", rc_wanted=3)
    console_ok(boot, "umount /run/usb", "umount")
    # Nothing but the technician commits a console install (recovery guide, section 5).
    gated = [k for k in h.kinds(h.station_msgs(st, since)) if k in ("health-passed", "committed", "marked-bad")]
    h.check(not gated, f"no update verdict for a console install: {gated}")
    operator_sees_uncommitted(fleet, st, "B")
    console_ok(boot, "fleet mark-good", "mark-good", r"slot B is good and boots next")
    console_ok(boot, "fleet status", "status-committed", r"running B, next boot B",
               rf"slot B\s+good\s+{re.escape(version)}\s+running", r"slot A\s+good\b")
    msgs = h.station_msgs(st, since)
    boot.send("reboot\n")
    boot.wait()
    env = st.settle(boot)
    h.check(boot.end == "exit" and not st.tryboot_flag, f"`reboot` is a plain reboot (end={boot.end})")
    h.check(autoboot_is(env, 3, 2), f"mark-good committed B: autoboot.txt [all]=3 [tryboot]=2, got "
                                    f"{fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"].get("slot") == "A" and env["attempts"].get("state") == "good",
            f"mark-good: the record names A good: {fmt_attempts(env['attempts'])}")
    h.say(f"  [{h.scope_name()}] boot 4 events: {h.kinds(msgs)}")

    # boot 5: B from [all], committed; logs, and mark-bad
    st.usb_stick = None  # unplugged
    since = h.mark(st)
    boot = st.power_on(timeout=600)
    on_b = h.wait_mqtt(st, boot, state_where(lambda s: s.get("booted") == "B" and s.get("committed") == "B"
                                             and s.get("phase") == "idle"), 300, since)
    h.check(boot.fw["partition"] == 3 and not boot.fw["tryboot"] and boot.slot == "B",
            f"boot 5: the firmware boots p3 (B) from [all]: {boot.slot}")
    h.check(on_b and on_b.get("version") == version,
            f"the station reports B {version} booted and committed: {on_b}")
    console_ready(boot)
    console_ok(boot, "fleet logs", "logs", r"fleet-updated\[\d+\]:")
    console_ok(boot, "fleet mark-bad A", "mark-bad", r"Mark slot A bad\? It will not boot until a new install",
               r"slot A is bad; slot B boots next", answer="yes\n")
    console_ok(boot, "fleet rollback", "rollback-refused", r"slot A is marked bad", rc_wanted=3)
    console_poweroff(boot)
    env = st.settle(boot)
    h.check(autoboot_is(env, 3, 2), f"B stays committed: {fmt_autoboot(env['autoboot'])}")
    h.check(env["attempts"].get("slot") == "A" and env["attempts"].get("state") == "bad",
            f"mark-bad: the record names A bad: {fmt_attempts(env['attempts'])}")
    return st, ["A", "B", "A", "B", "B"]


# -- power cuts on the tryboot flow (issue 15, item 4) --------------------------------------------

# Seconds, refined by the run's own uncut boots: W, fleet-updated's first state message to the
# trial reboot on a boot of A that downloads and installs the whole bundle; D, the same boot's
# download (offer accepted to bundle downloaded); T, power-on to the `committed` report on a
# trial boot of B.
# The defaults are what a first run measured on 2 busy cores (load 10): NVMe boot 1 took 211 s,
# fleet-updated started 62 s into it; its trial committed within 75 s of power-on.
CUT_WINDOWS = {"nvme": {"W": 140.0, "D": 50.0, "T": 68.0}, "sd": {"W": 300.0, "D": 120.0, "T": 90.0}}
CUTS_ON_A, CUTS_ON_TRIAL = 4, 2  # per round, at most (the record allows two retried trials)
VALID_RECORDS = ({"slot", "state"}, {"slot", "state", "attempts-left"})


def boot_check_ran(boot):
    """systemd's console line for the finished fleet-boot-check (or the report's units line)."""
    return any(re.search(r"Finished fleet-boot-check\b|fleet-boot-check=active", line) for _, line in boot.lines)


def reported(msgs):
    """The station reports: a state message (fleet-updated) and a health report (fleet-reporterd)."""
    return any(k == "state" for k, _ in msgs) and bool(health_reports(msgs))


def trial_phase(msgs, uid):
    """Where a trial boot of B was, from what it reported before the cut."""
    if h.outcome_is("committed", uid)(msgs):
        return "after-commit"
    seen = h.kinds(msgs)
    if "health-passed" in seen:
        return "commit"
    return "gate" if "trial-booted" in seen else "trial-boot"


def committed_slot(ab):
    return {"2": "A", "3": "B"}.get(ab.get("all", {}).get("boot_partition"))




def event_arrives(st, boot, kind, timeout):
    """Waits for the station's next event of `kind` (published from now on), reading the broker's
    record as it grows every 10 ms, so that a cut can follow it closely. False when the boot
    ends or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    with open(st.broker.record_path, errors="replace") as f:
        f.seek(0, os.SEEK_END)
        pending = ""
        while boot.proc.poll() is None and time.monotonic() < deadline:
            pending += f.read()
            *lines, pending = pending.split("\n")
            for line in lines:
                topic, _, payload = line.partition(" ")
                if topic.split("/")[3:5] != [st.device, "events"]:
                    continue
                try:
                    event = (json.loads(payload).get("event") or {})
                except (ValueError, AttributeError):
                    continue
                if event.get("kind") == kind:
                    return True
            time.sleep(0.01)
    return False


def ready_to_cut(st, boot, since, pending, limit=300):
    """Before a cut: the boot check has run, and on the boot after an earlier cut the station
    has reported (so every cut is followed by a boot that was seen to report). False when the
    boot ended by itself meanwhile."""
    deadline = time.monotonic() + limit
    while boot.proc.poll() is None and not boot_check_ran(boot) and time.monotonic() < deadline:
        time.sleep(0.25)
    if pending is not None:
        h.wait_mqtt(st, boot, lambda m: reported(m) or None, max(deadline - time.monotonic(), 1), since)
    if boot.proc.poll() is not None:
        return False
    h.check(boot_check_ran(boot), f"boot {boot.number}: fleet-boot-check ran within {limit} s")
    h.check(pending is None or reported(h.station_msgs(st, since)),
            f"boot {boot.number}, after the cut on boot {(pending or {}).get('boot')}: the station reports "
            f"(state and health) within {limit} s: {h.kinds(h.station_msgs(st, since))}")
    return True


def power_off_when_ready(boot):
    """A clean power-off from the serial console once the boot is up (`ready`, after
    multi-user.target): a command typed before the autologin shell reads the console is lost
    (agetty flushes the line as it starts), and the boot would run on to its timeout."""
    boot.expect(r"^ready ", timeout=180)
    for _ in range(3):
        if boot.proc.poll() is not None:
            break
        try:
            boot.send("\nsystemctl poweroff\n")
            boot.proc.wait(60)
        except OSError:  # it reset by itself meanwhile
            break
        except subprocess.TimeoutExpired:
            continue
    boot.wait()


class TrybootCuts:
    """What `power_cuts` needs to know of the Pi 5 tryboot flow: its station, how a boot is
    told apart (the firmware's partition and flag, the attempt record on /data), what must
    hold of autoboot.txt and the record, and what committed on B looks like. The U-Boot
    flow's counterpart is uboot.UbootCuts."""

    report = "pi5_power_cut_report"  # the ctx attribute harness.py writes into summary.json
    # Seconds after the harness sees `health-passed` in which the commit cut falls: fleet-updated
    # publishes it, then commits; fleet-bootctl's two writes (autoboot.txt, the record) took
    # about 0.15 s under emulation (pi5-delta-update's journal: the event at .040 s, "mark the
    # slot good" at .048 s, Committing to Idle at .190 s); a cut at +0.21 s fell between them.
    commit_aim_s = 0.25
    after_key = "autoboot-after"  # the cut report's name for the boot flow after a trial cut

    def __init__(self, ctx, medium):
        self.fleet = fleet_of(ctx)
        self.medium = medium
        self.windows = dict(CUT_WINDOWS[medium])
        self.base = "pi5-power-cuts" if medium == "nvme" else f"pi5-power-cuts-{medium}"
        self.title = f"pi5 power cuts ({medium})"
        self.last_left = None

    def station(self, name):
        return Pi5Station(self.fleet, name, self.medium)

    def new_round(self):
        self.last_left = None

    def env_now(self, st):
        return {"autoboot": st.autoboot(), "attempts": st.attempts()}

    def kind(self, boot, before):
        """`update` (A, the update under way), `retry` (A with B's trial in the record: the boot
        check retries it or gives it up), `trial` (B from [tryboot]) or `committed` (B from [all])."""
        rec = before["attempts"]
        if boot.fw["partition"] == 2:
            return "retry" if rec.get("slot") == "B" and rec.get("state") == "trial" else "update"
        return "trial" if boot.fw["tryboot"] else "committed"

    def trial_left_after(self, before):
        """Attempts the record leaves after this trial boot (spent before its reboot)."""
        return int(before["attempts"].get("attempts-left", "0") or 0)

    def check_boot(self, where, st, boot, before, kind):
        rec, on_trial = before["attempts"], boot.fw["tryboot"]
        h.check(boot.slot != "B" or on_trial or committed_slot(before["autoboot"]) == "B",
                f"{where}: B boots only on its trial or once committed: tryboot={on_trial} "
                f"autoboot before [{fmt_autoboot(before['autoboot'])}]")
        h.check(not on_trial or (rec.get("slot") == "B" and rec.get("state") == "trial"),
                f"{where}: a trial boot of B only with B on trial in the record: {fmt_attempts(rec)}")

    def check_env(self, where, st, env, faults):
        """autoboot.txt, after a cut too: what the firmware reads at the next power-on."""
        h.check(autoboot_is(env, 2, 3) or autoboot_is(env, 3, 2),
                f"{where}: autoboot.txt names p2 or p3 with tryboot_a_b=1: "
                f"{st.fat_read('config', 'autoboot.txt')!r}")
        label = "boot-a" if committed_slot(env["autoboot"]) == "A" else "boot-b"
        h.check(st.fat_read(label, "config.txt") is not None,
                f"{where}: [all]'s partition ({label}) holds config.txt")

    def clean_end(self, where, boot, env, installed_now, faults):
        """The record, after a clean end (after a cut the host reads /data without the
        journal's replay: the next boot's check counts)."""
        record, ab = env["attempts"], env["autoboot"]
        if not record:
            return
        ok = (set(record) in VALID_RECORDS and record.get("slot") in ("A", "B")
              and record.get("state") in ("good", "bad", "trial")
              and (record.get("state") == "trial") == ("attempts-left" in record))
        h.check(ok, f"{where}: the attempt record is well formed: {fmt_attempts(record)}")
        if record.get("state") == "trial" and record.get("slot") == committed_slot(ab):
            faults.append(f"{where}: the record holds a trial of the committed slot "
                          f"{record['slot']}: {fmt_attempts(record)}, autoboot [{fmt_autoboot(ab)}]")
        if record.get("state") == "trial":
            n = int(record["attempts-left"])
            if self.last_left is not None and n > self.last_left and not installed_now:
                faults.append(f"{where}: the trial's attempts went up {self.last_left} -> {n}")
            self.last_left = n
        else:
            self.last_left = None

    def may_end_unreported(self, st, boot, kind):
        """A boot the boot check reboots at once (or fleet-updated's trial reboot) may end
        before it reports."""
        return boot.end == "exit" and (kind in ("retry", "update") or st.tryboot_flag)

    def trial_retried(self, st, boot, kind, before):
        """The boot check retried B's trial (a boot of A ending in "0 tryboot")."""
        return kind == "retry" and boot.end == "exit" and st.tryboot_flag

    def committed_slot(self, env):
        return committed_slot(env["autoboot"])

    def fmt(self, env):
        return fmt_autoboot(env["autoboot"])

    def fmt_end(self, env):
        return f"autoboot [{fmt_autoboot(env['autoboot'])}] record [{fmt_attempts(env['attempts'])}]"

    def round_fault(self, rounds, env):
        if autoboot_is(env, 3, 2) and env["attempts"].get("slot") == "A" and env["attempts"].get("state") == "good":
            return None
        return (f"round {rounds}: the update ends committed on B with A good: autoboot "
                f"[{fmt_autoboot(env['autoboot'])}] record [{fmt_attempts(env['attempts'])}]")


def scenario_power_cuts(ctx, medium="nvme"):
    """Power cuts at random moments on the Pi 5 tryboot flow (`power_cuts` with TrybootCuts).
    On trial boots of B only while the record leaves another attempt; the commit is
    fleet-bootctl's rewrite of autoboot.txt on the FAT. After every boot: autoboot.txt names
    p2/p3 with tryboot_a_b=1 and the firmware can boot its [all]; after a clean end, the attempt
    record is well formed, never a trial of the committed slot, and its count never goes up
    within one install. Each round ends committed on B ([all]=3 [tryboot]=2, record slot=A
    state=good) or, when the station gives the update up, it is offered again (as in the U-Boot
    `power-cuts`)."""
    return power_cuts(ctx, TrybootCuts(ctx, medium))


def power_cuts(ctx, bootflow):
    """Power cuts at random moments on fresh stations with the good bundle pushed (`ctx.cuts`
    in all, seeded by `ctx.rng`); `bootflow` (TrybootCuts, uboot.UbootCuts) says what the boot
    flow shows. On boots of A with the update under way: uniform over 0..1.1 x fleet-updated's
    window from its first state message to the trial reboot (what is left of it once the
    bundle is downloaded), so cuts land in the download, the verification and RAUC's install
    into B. On trial boots of B (only while the boot flow leaves B another boot): once uniform
    over the boot up to T+3 s (T: power-on to `committed` on an uncut trial), so that cuts land
    in the boot and the health gate, and once uniform over 0..bootflow.commit_aim_s after the harness
    sees fleet-updated's `health-passed`, so that cuts land in the commit's own writes. The windows start
    from measured defaults and follow the run's uncut boots. After every boot: a good slot (A
    1.0.0, or B only on its trial or once committed), the boot check ran, the boot flow's
    state is valid and bootable (bootflow.check_env), and after a clean end consistent
    (bootflow.clean_end); the boot after a cut (or the next that stays up) reports on MQTT.
    Each round ends committed on B or, when the station gives the update up, it is offered
    again."""
    fleet = bootflow.fleet
    win = bootflow.windows
    measured = {"W": [], "D": [], "T": []}
    cuts, faults, sequence = [], [], []
    after = {"boots": 0, "good-slot": 0, "boot-check": 0, "reported": 0}
    resumed = retried = reoffers = trial_retries = boots = 0
    rounds = 0
    st = None
    t_start = time.monotonic()
    while len(cuts) < ctx.cuts:
        rounds += 1
        st = bootflow.station(f"{bootflow.base}-{rounds}")
        fleet.provision(st)
        # The bundle's squashfs is compressed already: a zstd copy beside it saves nothing and
        # costs a level-19 pass of 87 MiB per push (166 s under load, debug fleetctl; ADR 0012).
        uid = first_uid = fleet.push(st, "good")
        version = fleet.info["bundles"]["good"]
        h.say(f"  [{h.scope_name()}] round {rounds}: fresh {bootflow.medium} station {st.device}")
        quota_a = CUTS_ON_A
        quota_t = CUTS_ON_TRIAL
        offer_since = h.mark(st)
        pending = None  # the last cut, until a boot after it has reported
        after_cut = False
        bootflow.new_round()
        while True:
            h.check(len(st.boots) < 30, f"round {rounds} ends within 30 boots")
            before = st.envs[-1] if st.envs else bootflow.env_now(st)
            since = h.mark(st)
            boot = st.power_on(timeout=900)
            boots += 1
            kind = bootflow.kind(boot, before)
            cut = None
            t_done = None
            if kind in ("update", "retry"):
                first = h.wait_mqtt(st, boot, h.last_state, 600, since)
                t0 = time.monotonic()
                if kind == "update" and first and quota_a > 0 and len(cuts) < ctx.cuts \
                        and ready_to_cut(st, boot, since, pending):
                    window = win["W"]
                    if "downloaded" in h.kinds(h.station_msgs(st, offer_since)):
                        window = max(win["W"] - win["D"], 5.0)
                    at = ctx.rng.uniform(0.0, window * 1.1)
                    left = t0 + at - time.monotonic()
                    r = h.wait_mqtt(st, boot, h.ended_without_commit(uid), max(left, 0.0), since)
                    if r is None and boot.proc.poll() is None:
                        phase = h.phase_now(h.station_msgs(st, since))
                        boot.cut()
                        quota_a -= 1
                        cut = {"round": rounds, "boot": boot.number, "on": "A", "at-s": round(at, 1),
                               "boot-s": round(boot.elapsed(), 1),
                               "from": "fleet-updated", "phase": phase}
                if cut is None and boot.proc.poll() is None:
                    r = h.wait_mqtt(st, boot, h.ended_without_commit(uid), 900, since)
                    if boot.proc.poll() is None:  # gave the update up (idle on A), or stuck
                        if not r:
                            console_dump(boot, "rauc fleet-updated fleet-boot-check fleet-reboot")
                        power_off_when_ready(boot)
                    t_done = time.monotonic() - t0
                elif cut is None:  # ended by itself before its cut moment (wait_mqtt polls 4 times a second)
                    t_done = time.monotonic() - t0
            elif kind == "trial":
                if quota_t > 0 and bootflow.trial_left_after(before) > 0 and len(cuts) < ctx.cuts \
                        and ready_to_cut(st, boot, since, pending):
                    # the first trial cut of odd rounds in the boot, of even rounds at the commit (a
                    # cut after the commit leaves no trial for a second one)
                    order = ("trial", "commit") if rounds % 2 else ("commit", "trial")
                    mode = order[CUTS_ON_TRIAL - quota_t]
                    if mode == "trial":
                        at, start = ctx.rng.uniform(0.0, win["T"] + 3.0), "power-on"
                        h.wait_mqtt(st, boot, lambda m: None, max(boot.started + at - time.monotonic(), 0.0), since)
                    else:  # aimed at the commit's own write, which follows `health-passed` at once
                        at, start = None, "health-passed"
                        if event_arrives(st, boot, "health-passed", win["T"] + 120):
                            at = ctx.rng.uniform(0.0, bootflow.commit_aim_s)
                            time.sleep(at)
                        else:
                            h.say(f"  [{h.scope_name()}]   boot {boot.number}: no health-passed seen while "
                                  f"waiting for it (it came before, or the gate failed): no commit cut")
                    if boot.proc.poll() is None and at is not None:
                        phase = trial_phase(h.station_msgs(st, since), uid)
                        boot.cut()
                        quota_t -= 1
                        cut = {"round": rounds, "boot": boot.number, "on": "B trial", "at-s": round(at, 2),
                               "boot-s": round(boot.elapsed(), 1),
                               "from": start, "mode": mode, "phase": phase}
                if cut is None and boot.proc.poll() is None:
                    done = h.wait_mqtt(st, boot, h.outcome_is("committed", uid), 420, since)
                    if done:
                        t_done = time.monotonic() - boot.started
                        h.wait_mqtt(st, boot, lambda m: reported(m) or None, 120, since)
                    else:
                        console_dump(boot, "rauc fleet-updated fleet-boot-check fleet-reporterd")
                    power_off_when_ready(boot)
            else:
                h.wait_mqtt(st, boot, lambda m: (lambda s: s if s and s.get("booted") == "B" and s.get("phase") == "idle"
                                                 and health_reports(m) else None)(h.last_state(m)), 420, since)
                power_off_when_ready(boot)
            if boot.end is None:
                boot.wait()
            env = st.settle(boot)
            msgs = h.station_msgs(st, since)
            seen = h.kinds(msgs)
            sequence.append(boot.slot)
            where = f"round {rounds} boot {boot.number} ({kind}{', cut' if cut else ''})"

            # the slot, the boot check
            good = (boot.slot, boot.version) in (("A", "1.0.0"), ("B", version))
            h.check(good, f"{where}: on a good slot: {boot.slot} {boot.version}")
            bootflow.check_boot(where, st, boot, before, kind)
            h.check(boot_check_ran(boot), f"{where}: fleet-boot-check ran")
            if after_cut:
                after["boots"] += 1
                after["good-slot"] += good
                after["boot-check"] += 1
            # the boot flow's state, after a cut too; after a clean end, its consistency
            bootflow.check_env(where, st, env, faults)
            installed_now = "installed" in seen
            if not cut:
                bootflow.clean_end(where, boot, env, installed_now, faults)
            # the station reports after a cut (a boot the boot check reboots at once may not:
            # then the next one)
            if pending is not None:
                if reported(msgs):
                    after["reported"] += 1
                    pending["reported-on-boot"] = boot.number
                    pending = None
                elif not bootflow.may_end_unreported(st, boot, kind):
                    h.check(False, f"{where}: the station reports after the cut on boot {pending['boot']}: "
                            f"events {seen}")
            started = h.find_event(msgs, "download-started")
            if started and started.get("resumed") and started.get("held-bytes", 0) > 0:
                resumed += 1
            retried += sum(1 for e in trial_events(msgs, "install-failed") if e.get("will-retry"))
            if bootflow.trial_retried(st, boot, kind, before):
                trial_retries += 1
            # the windows, from uncut boots
            if kind == "update" and not cut and t_done and boot.end == "exit" and installed_now \
                    and started and not started.get("held-bytes"):
                measured["W"].append(t_done)
                a, d = h.find_event_at(msgs, "offer-accepted"), h.find_event_at(msgs, "downloaded")
                if a is not None and d is not None:
                    measured["D"].append(d - a)
            if kind == "trial" and not cut and t_done:
                measured["T"].append(t_done)
            for k, v in measured.items():
                if v:
                    win[k] = sum(v) / len(v)
            after_cut = bool(cut)
            if cut:
                if cut["on"] == "B trial":
                    cut[bootflow.after_key] = bootflow.fmt(env)
                    if bootflow.committed_slot(env) == "B" and cut["phase"] != "after-commit":
                        cut["phase"] = "commit"  # written, not yet reported
                cuts.append(cut)
                pending = cut
                h.say(f"  [{h.scope_name()}]   CUT {len(cuts)} on {cut['on']} at {cut['from']}+{cut['at-s']}s "
                      f"(boot +{cut['boot-s']}s) "
                      f"during {cut['phase']}{' (' + cut['mode'] + ' window)' if 'mode' in cut else ''}")
                continue
            all_msgs = h.station_msgs(st, offer_since)
            if h.outcome_is("committed", uid)(all_msgs) and pending is None:
                break
            if kind in ("update", "retry") and h.ended_without_commit(uid)(h.station_msgs(st, since)):
                # given up cleanly: the operator offers the bundle again under a new update id
                reoffers += 1
                out = (h.last_state(msgs) or {}).get("last-outcome")
                h.say(f"  [{h.scope_name()}]   the station gave {uid} up: {json.dumps(out)}; offered again")
                offer_since = h.mark(st)
                uid = fleet.push(st, "good", update_id=f"{first_uid}-again-{reoffers}")
        env = st.envs[-1]
        fault = bootflow.round_fault(rounds, env)
        if fault:
            faults.append(fault)
        h.say(f"  [{h.scope_name()}] round {rounds}: committed on B after {len(st.boots)} boots; "
              f"{bootflow.fmt_end(env)}; so far "
              f"{len(cuts)} cuts, {after['good-slot']} of {after['boots']} boots after a cut on a good slot, "
              f"{after['reported']} reported, {resumed} resumed, {retried} installs retried, {reoffers} re-offers, "
              f"{len(faults)} faults, {time.monotonic() - t_start:.0f} s")
    by_phase = {}
    for c in cuts:
        by_phase[c["phase"]] = by_phase.get(c["phase"], 0) + 1
    report = {"medium": bootflow.medium, "cuts": cuts, "rounds": rounds, "boots": boots, "by-phase": by_phase,
              "boots-after-a-cut": after["boots"], "on-a-good-slot": after["good-slot"],
              "boot-check-ran": after["boot-check"], "reported-after-cut": after["reported"],
              "downloads-resumed": resumed, "installs-retried": retried, "trials-retried": trial_retries,
              "offers-repeated": reoffers, "seed": ctx.seed, "faults": faults,
              "windows-s": {k: round(v, 1) for k, v in win.items()},
              "wall-s": round(time.monotonic() - t_start)}
    setattr(ctx, bootflow.report, report)
    phases = ", ".join(f"{n} {p}" for p, n in sorted(by_phase.items()))
    h.say(f"{bootflow.title}: {len(cuts)} cuts in {rounds} rounds, {boots} boots (seed {ctx.seed}, "
          f"windows W/D/T {report['windows-s']['W']}/{report['windows-s']['D']}/{report['windows-s']['T']} s): "
          f"{phases}; {after['good-slot']} of {after['boots']} boots after a cut on a good slot with the boot "
          f"check run, {after['reported']} cuts followed by a boot that reported; downloads resumed {resumed}, "
          f"installs retried {retried}, trials retried {trial_retries}, offers repeated "
          f"{reoffers}; faults {len(faults)}")
    h.say(f"{bootflow.title} at (on, from+s, phase): " + " ".join(
        f"{c['on'].replace(' ', '-')}/{c['from']}+{c['at-s']}/{c['phase']}" for c in cuts))
    h.check(not faults, "power cuts left the station inconsistent: " + "; ".join(faults))
    return st, None
