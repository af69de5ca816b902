"""A station's upkeep on the Pi 5 systemd station (issue 15: the shell guest's `delta-update` and
`nvme-wear`, moved onto systemd), for tests/qemu/harness.py.

The station is flow.py's: systemd as PID 1 with the layer's units and their sandboxing, the
harness acting as the Pi 5 firmware, provisioned by `fleetctl provision` on the card, the
documented TLS mosquitto. What these two add to flow.py's scenarios:

- `pi5-delta-update`: the delta transport of ADR 0012 through fleet-updated as its unit runs it
  (its ReadWritePaths for the kept base, the rebuild beside the downloads), on the tryboot flow
  in both directions: A to B whole, then B to A as a delta.
- `pi5-nvme-wear`: the NVMe wear path of ADR 0006 as shipped: fleet-nvme-smart.timer starts the
  root one-shot (CAP_SYS_ADMIN only), the unprivileged fleet-reporterd reads its file, and the
  operator's `fleetctl status` flags the drive, after QEMU's controller is told over QMP to raise
  a critical warning.
"""
import json
import os
import re

import flow

h = None  # tests/qemu/harness.py, set by register()


def register(harness):
    global h
    h = harness
    return [("pi5-delta-update", scenario_delta_update),
            ("pi5-nvme-wear", scenario_nvme_wear)]


def kept_bases(st):
    """{file name: size} of fleet-updated's kept bases under /data/fleet/base, read from the
    disk (debugfs, no mount) after a clean power-off."""
    out = st.data_debugfs("ls -p /fleet/base")
    bases = {}
    for line in out.stdout.splitlines():
        # /inode/mode/uid/gid/name/size/
        f = line.strip().strip("/").split("/")
        if len(f) >= 6 and f[4].endswith(".bundle"):
            bases[f[4]] = int(f[5])
    return bases


def scenario_delta_update(ctx, medium="nvme"):
    """ADR 0012 on the station as shipped: `fleetctl push good.raucb` arrives whole (a fresh
    station keeps no base), installs into B and commits on its trial from [tryboot]; the
    committed bundle is kept under /data/fleet/base. Then `fleetctl push good2.raucb
    --delta-from good.raucb` (2.1.0, the same tree with another version): boot 3 on B from
    [all] takes the delta (`transport-chosen` delta, at most 5% of the bundle received), rebuilds
    the bundle, RAUC installs it into A (rootfs and the boot partition by bootfs-post-install),
    and the reboot with "0 tryboot"; boot 4 is A's trial from [tryboot], committed:
    autoboot.txt [all]=2 again and the record naming B good."""
    fleet = flow.fleet_of(ctx)
    h.check("good2" in fleet.info["bundles"], "the Pi 5 image carries good2 (tests/qemu/build-pi5.sh)")
    st = flow.Pi5Station(fleet, "pi5-delta-update", medium)
    fleet.provision(st)
    good, good2 = (os.path.join(fleet.image, "bundles", f"{n}.raucb") for n in ("good", "good2"))
    uid = fleet.push(st, "good")
    version = fleet.info["bundles"]["good"]

    boot = flow.install_boot(st, uid, version)
    chosen = h.find_event(h.station_msgs(st, 0), "transport-chosen")
    h.check(chosen and chosen.get("transport") == "full" and (chosen.get("reason") or {}).get("code") == "no-base",
            f"boot {boot.number}: the first update travels whole, a fresh station keeps no base: {chosen}")
    flow.trial_boot_commits(st, uid, version)
    bases = kept_bases(st)
    h.check(list(bases.values()) == [os.path.getsize(good)],
            f"the committed bundle is kept as the base under /data/fleet/base: {bases}")

    uid2 = fleet.push(st, "good2", args=["--delta-from", good])
    version2 = fleet.info["bundles"]["good2"]
    since = h.mark(st)
    boot = flow.install_boot(st, uid2, version2, running=("B", version))
    msgs = h.station_msgs(st, since)
    full_bytes = os.path.getsize(good2)
    chosen = h.find_event(msgs, "transport-chosen")
    h.check(chosen and chosen.get("transport") == "delta",
            f"boot {boot.number}: the station takes the delta from its kept base: {chosen}; events {h.kinds(msgs)}")
    got = h.find_event(msgs, "delivered")
    h.check(got and got.get("transport") == "delta" and got.get("bundle-bytes") == full_bytes,
            f"boot {boot.number}: the rebuilt bundle is delivered whole: {got}")
    received = got.get("received-bytes", full_bytes)
    h.check(received * 20 <= full_bytes,
            f"the delta is at most 5% of the {full_bytes}-byte bundle: {received} bytes received")
    h.say(f"  [{h.scope_name()}] delta: {received} of {full_bytes} bytes received "
          f"({100.0 * received / full_bytes:.2f}%)")

    flow.trial_boot_commits(st, uid2, version2, slot="A")
    bases = kept_bases(st)
    h.check(list(bases.values()) == [full_bytes],
            f"the newly committed bundle replaces the base: {bases}")
    return st, ["A", "B", "B", "A"]


class QmpStation(flow.Pi5Station):
    """A Pi 5 station whose QEMU also answers QMP, to change what a device reports."""

    def __init__(self, fleet, name, medium):
        super().__init__(fleet, name, medium)
        self.qmp_path = os.path.join(self.dir, "qmp.sock")

    def qemu_command(self):
        return super().qemu_command() + ["-qmp", f"unix:{self.qmp_path},server=on,wait=off"]

    def qmp(self, command, arguments=None):
        return h.Station.qmp(self, command, arguments)


def nvme_report(warning):
    """A wait_mqtt predicate: the newest health report whose storage has nvme0 with `warning`."""
    def pred(msgs):
        for p in reversed(flow.health_reports(msgs)):
            for s in (p.get("system") or {}).get("storage") or []:
                if s.get("device") == "nvme0":
                    return s if s.get("warning") is warning else None
        return None
    return pred


def operator_row(fleet, st):
    """The station's row of `fleetctl status --json`, as the operator reads the broker."""
    rows = json.loads(fleet.status("--json"))
    if isinstance(rows, dict):
        rows = rows.get("stations") or []
    return next((r for r in rows if r.get("device-id") == st.device), None)


def scenario_nvme_wear(ctx):
    """fleet-nvme-smart.timer, as the layer enables it, starts the root one-shot a minute after
    boot; `fleet nvme-smart` reads the SMART log of QEMU's NVMe controller through the kernel
    driver under the unit's sandbox and leaves /run/fleet-nvme-smart/nvme0.json, which the
    unprivileged fleet-reporterd puts in its health report (nvme0, 0% used, no warning); the
    operator's `fleetctl status` shows no storage problem. QEMU's controller is told over QMP to
    raise a critical warning; the next run of the unit (started from the console, as the timer
    would 15 minutes later) brings it to the reporter, which publishes at once (a changed
    warning), and `fleetctl status` flags `storage-wearing`."""
    fleet = flow.fleet_of(ctx)
    st = QmpStation(fleet, "pi5-nvme-wear", "nvme")
    fleet.provision(st)
    since = h.mark(st)
    boot = st.power_on(timeout=600)
    try:
        healthy = h.wait_mqtt(st, boot, nvme_report(False), 420, since)
        if not healthy:
            flow.console_dump(boot, "fleet-nvme-smart fleet-reporterd")
        h.check(healthy and healthy.get("wear-percent") == 0,
                f"fleet-reporterd reports nvme0 from the timer's first run: 0% used, no warning: {healthy}; "
                f"events {h.kinds(h.station_msgs(st, since))}")
        flow.console_ready(boot)
        flow.units_active(boot, flow.DAEMONS)
        flow.console_ok(boot, "systemctl show -p Result -p ExecMainStatus fleet-nvme-smart.service",
                        "nvme-unit", r"Result=success", r"ExecMainStatus=0")
        flow.console_ok(boot, "stat -c '%a %U %n' /run/fleet-nvme-smart/nvme0.json", "nvme-file",
                        r"644 root /run/fleet-nvme-smart/nvme0\.json")
        row = operator_row(fleet, st)
        h.check(row and "storage-wearing" not in row.get("problems", []),
                f"fleetctl status: no storage problem for {st.device}: {(row or {}).get('problems')}")

        st.qmp("qom-set", {"path": "/machine/peripheral/nvme0", "property": "smart_critical_warning",
                           "value": 4})
        mark = h.mark(st)
        flow.console_ok(boot, "systemctl start fleet-nvme-smart.service", "nvme-rerun")
        warned = h.wait_mqtt(st, boot, nvme_report(True), 180, mark)
        h.check(warned, f"fleet-reporterd publishes the raised warning: "
                        f"{[(p.get('system') or {}).get('storage') for p in flow.health_reports(h.station_msgs(st, mark))]}")
        row = operator_row(fleet, st)
        h.check(row and "storage-wearing" in row.get("problems", []),
                f"fleetctl status flags storage-wearing for {st.device}: {(row or {}).get('problems')}")
        said = flow.console_ok(boot, "fleet nvme-smart", "nvme-console", r"nvme0\s+0 % of rated life used")
        h.check(re.search(r"reliability degraded", said), f"the console names the warning: {said[-400:]}")
    finally:
        flow.console_poweroff(boot)
    st.settle(boot)
    return st, [boot.slot]
