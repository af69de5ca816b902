"""The U-Boot flow on the systemd test station (issue 15: the U-Boot scenarios on systemd), for
tests/qemu/harness.py.

The station is the one of tests/qemu/pi5/flow.py (systemd as PID 1, assembled from meta-fleet by
tests/qemu/build-pi5.sh), built for the layer's other machine, qemuarm64, whose boot flow is
U-Boot: `build-pi5.sh --machine qemuarm64` lays the disk out from `fleet-qemuarm64.wks.in` (p1
boot FAT with the layer's boot.scr and uboot.env, p2/p3 root-a/root-b with the kernel in /boot,
p4 data), with `system-vda.conf` and `bootctl-uboot.toml`. Nothing is emulated here: Debian's
U-Boot for QEMU (u-boot-qemu) runs, its distro boot finds boot.scr on the bootable p1, and the
script counts the boots in uboot.env. After every boot the harness reads uboot.env from the FAT
(fw_printenv, as tests/qemu/harness.py does for the shell guest).

Provisioning, broker and pushes are flow.py's (`fleetctl provision` onto p1, the documented TLS
mosquitto, `fleetctl push` as operator).
"""
import subprocess
import threading

import flow

h = None  # tests/qemu/harness.py, set by register()


def register(harness):
    global h
    h = harness
    return [("qemuarm64-good-update", scenario_good_update),
            ("qemuarm64-fallback-panic", lambda c: scenario_fallback(c, "panic")),
            ("qemuarm64-fallback-hang", lambda c: scenario_fallback(c, "hang")),
            ("qemuarm64-fallback-reboot", lambda c: scenario_fallback(c, "reboot")),
            ("qemuarm64-unhealthy", scenario_unhealthy)]


class UbootStation(flow.Pi5Station):
    """A virtio disk and the power switch of one QEMU virt machine that boots U-Boot."""

    provision_label = "boot"  # p1, mounted at /boot/firmware (fleet-mount-generator)

    def __init__(self, fleet, name):
        super().__init__(fleet, name, "virtio")
        self.envflash = f"{self.dir}/envflash.img"
        subprocess.run(["cp", "--sparse=always", f"{self.image}/envflash.img", self.envflash], check=True)

    def firmware(self):
        """U-Boot itself runs: nothing to decide on the host."""
        self.fw = {}

    def qemu_command(self):
        cmd = ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a76", "-smp", "1", "-m", "1024",
               "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
               "-bios", h.UBOOT_BIN,
               "-drive", f"if=pflash,unit=1,format=raw,file={self.envflash}",
               "-drive", f"if=none,id=hd0,format=raw,file={self.disk},cache=unsafe",
               "-device", "virtio-blk-pci,drive=hd0",
               "-device", "virtio-rng-pci",
               "-device", "i6300esb", "-action", "watchdog=reset"]
        cmd += ["-netdev", h.broker_netdev(self.broker.port, self.dir), "-device", "virtio-net-pci,netdev=net0"]
        return cmd

    def read_env(self):
        return h.Station.read_env(self)

    def settle(self, boot):
        """After the machine reset or stopped: U-Boot's environment as the boot left it."""
        env = self.read_env()
        self.envs.append(env)
        units = boot.first(r"^units (.*)")
        h.say(f"  [{h.scope_name()}] boot {boot.number:2d}: slot={boot.slot or '-'} version={boot.version or '-'} "
              f"end={boot.end} wall={boot.elapsed():5.1f}s env={h.fmt_env(env)}")
        if units:
            h.say(f"  [{h.scope_name()}]   units: {units.group(1)}")
        return env


_fleet_lock = threading.Lock()


def fleet_of(ctx):
    """The one fleet of every qemuarm64 scenario, made by the first lane that asks."""
    with _fleet_lock:
        if not hasattr(ctx, "qemuarm64_fleet"):
            h.check(getattr(ctx, "qemuarm64_image", None),
                    "the qemuarm64 image (--qemuarm64-image, tests/qemu/build-pi5.sh --machine qemuarm64)")
            ctx.qemuarm64_fleet = flow.Fleet(ctx, ctx.qemuarm64_image, "qemuarm64-fleet")
        return ctx.qemuarm64_fleet


def boot_line(boot, slot):
    """The root the boot script chose for the slot (p2 A, p3 B on vda)."""
    return boot.first(rf"^booted slot={slot} .* root=/dev/vda{2 if slot == 'A' else 3}$")


def install_boot(st, uid, version):
    """Boot 1 on A: flow.py's, with what the U-Boot flow shows of it."""
    return flow.install_boot(st, uid, version, uboot_install_checks)


def uboot_install_checks(st, boot, env):
    """boot.scr chose A; the reboot fleet-updated asked for; B armed for a trial in uboot.env."""
    h.check(boot_line(boot, "A"), "boot 1: boot.scr booted root=/dev/vda2")
    h.check(boot.end == "exit", f"boot 1 ends in the reboot fleet-updated asks for (end={boot.end})")
    h.check(h.env_is(env, "B A", 3, 3, "B"), f"after install: B armed for a trial, got {h.fmt_env(env)}")


def scenario_good_update(ctx):
    """Slot A boots under systemd with the layer's units on the U-Boot flow, provisioned from p1;
    a good update pushed with fleetctl is installed, trial-booted by boot.scr and committed."""
    fleet = fleet_of(ctx)
    st = UbootStation(fleet, "qemuarm64-good-update")
    fleet.provision(st)
    uid = fleet.push(st, "good")
    version = fleet.info["bundles"]["good"]
    install_boot(st, uid, version)

    # boot 2: boot.scr takes B (first in BOOT_ORDER, boots left); the health gate commits it
    since = h.mark(st)
    boot = st.power_on(timeout=420)
    done = h.wait_mqtt(st, boot, h.outcome_is("committed", uid), 400, since)
    if done:
        boot.expect(r"^ready ", timeout=120)
    else:
        flow.console_dump(boot, "rauc dbus fleet-updated fleet-reporterd fleet-boot-check")
    flow.console_poweroff(boot)
    env = st.settle(boot)
    msgs = h.station_msgs(st, since)
    h.check(boot.slot == "B" and boot.version == version, f"boot 2 on B {version}, got {boot.slot} {boot.version}")
    h.check(boot_line(boot, "B"), "boot 2: boot.scr booted root=/dev/vda3")
    h.check(done, f"the station reports committed for {uid}: events {h.kinds(msgs)}")
    for kind in ("trial-booted", "health-passed", "committed"):
        h.check(kind in h.kinds(msgs), f"the station reports {kind}: got {h.kinds(msgs)}")
    flow.units_active(boot, flow.DAEMONS)
    h.check(flow.health_reports(msgs), "fleet-reporterd reports from B")
    h.check(h.env_is(env, "B A", 3, 3), f"committed B: got {h.fmt_env(env)}")

    # boot 3: a normal boot of B
    since = h.mark(st)
    boot = st.power_on(timeout=300)
    idle = h.wait_mqtt(st, boot, lambda m: (lambda s: s if s and s.get("booted") == "B"
                                            and s.get("phase") == "idle" else None)(h.last_state(m)), 240, since)
    boot.expect(r"^ready ", timeout=120)
    flow.console_poweroff(boot)
    env = st.settle(boot)
    h.check(boot.slot == "B" and idle, "boot 3 is a normal boot of B, idle on MQTT")
    h.check(idle.get("version") == version and idle.get("committed") == "B",
            f"the station reports B {version} committed: {idle.get('committed')} {idle.get('version')}")
    h.check(h.env_is(env, "B A", 3, 3), f"B stays committed: got {h.fmt_env(env)}")
    return st, ["A", "B", "B"]


def scenario_fallback(ctx, mode):
    """A slot that never completes a boot: its kernel panics before the boot check (`panic`:
    boot.scr's panic=5 resets the machine), it hangs 10 s after basic.target (`hang`: a
    real-time spinner starves PID 1, the i6300esb systemd armed resets the machine) or it
    reboots itself 1 s after basic.target (`reboot`, a plain `systemctl reboot`). boot.scr
    spends B's boots (BOOT_B_LEFT 2, 1, 0), then boots A; fleet-updated on A reports the
    rollback with its cause, and the env ends with A first and B without boots."""
    fleet = fleet_of(ctx)
    st = UbootStation(fleet, f"qemuarm64-fallback-{mode}")
    fleet.provision(st)
    uid = fleet.push(st, mode)
    version = fleet.info["bundles"][mode]
    install_boot(st, uid, version)
    for n in range(3):
        since = h.mark(st)
        boot = st.power_on(timeout=300)
        boot.wait()
        env = st.settle(boot)
        h.check(boot.slot == "B" and boot.first(rf"^failing mode={mode}"),
                f"trial boot {n + 1} is B and fails by {mode}, got {boot.slot}")
        h.check(boot.end == "exit", f"the {mode} ends the boot by a reset, not the harness timeout (end={boot.end})")
        h.check(not h.find_event(h.station_msgs(st, since), "committed"), "a trial that never completes a boot is not committed")
        h.check(h.env_is(env, "B A", 3, 2 - n, "B"), f"boot.scr spent one of B's boots: {h.fmt_env(env)}")
    msgs = back_on_a(st, uid, "trial-did-not-boot")
    fell = h.find_event(msgs, "trial-fell-back")
    h.check(fell and fell.get("from") == "B" and fell.get("will-retry") is False,
            f"trial-fell-back from B, not retried: {fell}")
    return st, ["A", "B", "B", "B", "A"]


def back_on_a(st, uid, code, check_prefix=None):
    """The boot of A after B's trial ended badly: the station reports rolled-back from B with
    `code` (and the check it names), its units are active, uboot.env has A first and B without
    boots. Returns the boot's messages."""
    since = h.mark(st)
    boot = st.power_on(timeout=420)
    back = h.wait_mqtt(st, boot, h.outcome_is("rolled-back", uid), 400, since)
    if back:
        boot.expect(r"^ready ", timeout=120)
    else:
        flow.console_dump(boot, "fleet-updated fleet-boot-check")
    flow.console_poweroff(boot)
    env = st.settle(boot)
    msgs = h.station_msgs(st, since)
    h.check(boot.slot == "A" and boot.version == "1.0.0", f"after B's boots, A 1.0.0: {boot.slot} {boot.version}")
    h.check(back, f"the station reports rolled-back for {uid}: {h.kinds(msgs)}")
    out = back["last-outcome"]
    cause = out.get("cause") or {}
    h.check(out.get("bad-slot") == "B" and cause.get("code") == code
            and (check_prefix is None or str(cause.get("check")).startswith(check_prefix)),
            f"rolled back from B because of {code} {check_prefix or ''}: {out}")
    flow.units_active(boot, flow.DAEMONS)
    h.check(h.env_is(env, "A B", 3, 0), f"A first, B without boots: {h.fmt_env(env)}")
    return msgs


def scenario_unhealthy(ctx):
    """A slot that boots but fails fleet-updated's health gate as shipped: the station is
    provisioned with a microphone (the loopback card fed with a known signal, as in
    pi5-recorder-gate), so its gate checks the recorder; the `mute` bundle's slot has no sound
    card. With max-trial-attempts = 3 (the boot script's boots) the gate fails on the recorder on
    three boots of B (boot.scr spends one of B's boots each time), then fleet-updated marks B bad
    and the station returns to A and reports the rollback naming the recorder."""
    fleet = fleet_of(ctx)
    st = UbootStation(fleet, "qemuarm64-unhealthy")
    defaults = flow.RECORDER_DEFAULTS.replace("max-trial-attempts = 1", "max-trial-attempts = 3")
    h.check(defaults != flow.RECORDER_DEFAULTS, "the recorder defaults name max-trial-attempts")
    fleet.provision(st, ["--microphone", "alsa:hw:CARD=Loopback,DEV=1"], defaults)
    uid = fleet.push(st, "mute")
    boot = install_boot(st, uid, fleet.info["bundles"]["mute"])
    h.check(boot.first(r"^signal 1kHz"), "boot 1: the known signal plays into the loopback card")
    for attempt, left in ((1, 2), (2, 1), (3, 0)):
        last = attempt == 3
        since = h.mark(st)
        trial = st.power_on(timeout=420)
        trial.wait()
        env = st.settle(trial)
        msgs = h.station_msgs(st, since)
        failed = h.find_event(msgs, "health-failed")
        h.check(trial.slot == "B" and trial.end == "exit" and trial.first(r"^failing mode=mute"),
                f"trial boot {attempt} of B (no sound card) ends in a reboot: {trial.slot} {trial.end}")
        h.check(failed and str(failed.get("check")).startswith("recorder")
                and failed.get("attempt") == attempt and failed.get("will-retry") is (not last),
                f"attempt {attempt}: the health gate fails on the recorder: {failed}; events {h.kinds(msgs)}")
        if last:
            h.check((h.find_event(msgs, "marked-bad") or {}).get("slot") == "B", f"B marked bad: {h.kinds(msgs)}")
            h.check(h.env_is(env, "A B", 3, 0), f"B bad, A first: {h.fmt_env(env)}")
        else:
            h.check(h.env_is(env, "B A", 3, left, "B"), f"B still on trial with {left} boots left: {h.fmt_env(env)}")
    back_on_a(st, uid, "health-check-failed", "recorder")
    return st, ["A", "B", "B", "B", "A"]
