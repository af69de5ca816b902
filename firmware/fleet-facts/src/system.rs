//! The machine: uptime, boot id, booted slot and version, load, memory, CPU temperature, the
//! Raspberry Pi firmware's throttling flags and the watchdog's boot status.
//!
//! Throttling: the Raspberry Pi kernel's firmware driver exposes the firmware's
//! `get_throttled` word (the one `vcgencmd get_throttled` prints) as a sysfs attribute of the
//! firmware device, `<sys>/devices/platform/<soc>/<soc>:firmware/get_throttled` (the `<soc>`
//! node's name differs between Pi models: found by a bounded walk). Without it (another board,
//! a mainline kernel) the `rpi_volt` hwmon's `in0_lcrit_alarm` still gives under-voltage now.
use std::path::{Path, PathBuf};

use fleet_core::slot::Slot;
use fleet_proto::health::Throttling;

use crate::{Roots, read_small, read_trimmed};

/// The machine's facts at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct System {
    pub uptime_s: u64,
    /// 32 lower-case hex digits, or empty when unreadable.
    pub boot_id: String,
    /// From `rauc.slot=` on the kernel command line.
    pub slot: Option<Slot>,
    pub version: Option<String>,
    pub load: [f32; 3],
    pub mem_total_kib: u64,
    pub mem_available_kib: u64,
    pub cpu_temp_c: Option<f32>,
    pub throttling: Option<Throttling>,
    /// The watchdog reset the machine before this boot (`WDIOF_CARDRESET` in `bootstatus`).
    pub watchdog_reset: bool,
}

/// `WDIOF_CARDRESET`: the last reboot was caused by the watchdog.
const WDIOF_CARDRESET: u32 = 0x20;

/// Reads everything; `version_file` is the image's version file (`/etc/fleet-version`).
#[must_use]
pub fn read(roots: &Roots, version_file: &Path) -> System {
    let uptime_s = read_trimmed(&roots.proc.join("uptime"))
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |f| f.max(0.0) as u64);
    let boot_id = read_trimmed(&roots.proc.join("sys/kernel/random/boot_id"))
        .map(|s| s.replace('-', "").to_ascii_lowercase())
        .filter(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_default();
    let mut load = [0.0f32; 3];
    if let Some(s) = read_trimmed(&roots.proc.join("loadavg")) {
        for (slot, v) in load.iter_mut().zip(s.split_whitespace()) {
            *slot = v
                .parse::<f32>()
                .ok()
                .filter(|f| f.is_finite())
                .unwrap_or(0.0)
                .max(0.0);
        }
    }
    let (mem_total_kib, mem_available_kib) = meminfo(&roots.proc.join("meminfo"));
    System {
        uptime_s,
        boot_id,
        slot: booted_slot(&roots.proc.join("cmdline")),
        version: read_trimmed(version_file).filter(|v| v.len() <= 64),
        load,
        mem_total_kib,
        mem_available_kib,
        cpu_temp_c: cpu_temp_c(&roots.sys),
        throttling: throttling(&roots.sys),
        watchdog_reset: read_trimmed(&roots.sys.join("class/watchdog/watchdog0/bootstatus"))
            .and_then(|s| s.parse::<u32>().ok())
            .is_some_and(|b| b & WDIOF_CARDRESET != 0),
    }
}

fn meminfo(path: &Path) -> (u64, u64) {
    let Some(s) = read_small(path) else {
        return (0, 0);
    };
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("MemTotal"), field("MemAvailable"))
}

/// `rauc.slot=A` (or `B`) on the kernel command line.
#[must_use]
pub fn booted_slot(cmdline: &Path) -> Option<Slot> {
    let s = read_small(cmdline)?;
    s.split_whitespace()
        .find_map(|w| w.strip_prefix("rauc.slot="))
        .and_then(|v| match v {
            "A" | "a" | "rootfs.0" => Some(Slot::A),
            "B" | "b" | "rootfs.1" => Some(Slot::B),
            _ => None,
        })
}

/// The first thermal zone of type `cpu-thermal` (or zone 0), in degrees Celsius.
fn cpu_temp_c(sys: &Path) -> Option<f32> {
    let zones = sys.join("class/thermal");
    let mut chosen: Option<PathBuf> = None;
    for i in 0..8 {
        let z = zones.join(format!("thermal_zone{i}"));
        if read_trimmed(&z.join("type")).as_deref() == Some("cpu-thermal") {
            chosen = Some(z);
            break;
        }
    }
    let z = chosen.unwrap_or_else(|| zones.join("thermal_zone0"));
    let milli: i64 = read_trimmed(&z.join("temp"))?.parse().ok()?;
    let c = milli as f32 / 1000.0;
    (-60.0..=200.0).contains(&c).then_some(c)
}

/// Finds and reads the firmware's `get_throttled` attribute, or the `rpi_volt` hwmon alarm.
#[must_use]
pub fn throttling(sys: &Path) -> Option<Throttling> {
    if let Some(bits) = find_get_throttled(&sys.join("devices/platform"))
        .and_then(|p| read_trimmed(&p))
        .and_then(|s| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok())
    {
        return Some(Throttling::from_bits(bits));
    }
    // hwmon fallback: under-voltage now only.
    let hwmon = sys.join("class/hwmon");
    for i in 0..16 {
        let h = hwmon.join(format!("hwmon{i}"));
        if read_trimmed(&h.join("name")).as_deref() == Some("rpi_volt") {
            let now = read_trimmed(&h.join("in0_lcrit_alarm")).as_deref() == Some("1");
            return Some(Throttling::from_bits(u32::from(now)));
        }
    }
    None
}

/// A walk of at most three levels under `devices/platform` for a `*firmware` directory holding
/// `get_throttled`.
fn find_get_throttled(platform: &Path) -> Option<PathBuf> {
    fn walk(dir: &Path, depth: u32, budget: &mut u32) -> Option<PathBuf> {
        let entries = std::fs::read_dir(dir).ok()?;
        let mut dirs = Vec::new();
        for e in entries.flatten() {
            if *budget == 0 {
                return None;
            }
            *budget -= 1;
            let p = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with("firmware") && p.join("get_throttled").is_file() {
                return Some(p.join("get_throttled"));
            }
            if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(p);
            }
        }
        dirs.sort();
        dirs.into_iter().find_map(|d| walk(&d, depth - 1, budget))
    }
    // At most 4096 directory entries are looked at.
    let mut budget = 4096;
    walk(platform, 2, &mut budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn a_fake_pi5_tree_reads_as_the_kernel_would_report_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let r = Roots::under(d.path());
        let root = d.path();
        put(root, "proc/uptime", "86400.52 170000.10\n");
        put(
            root,
            "proc/sys/kernel/random/boot_id",
            "6c1a0e6f-d2ad-4b0c-9d1f-6d0f1c0e2a31\n",
        );
        put(root, "proc/loadavg", "0.31 0.28 0.25 1/123 4567\n");
        put(
            root,
            "proc/meminfo",
            "MemTotal:        8245000 kB\nMemFree:  100 kB\nMemAvailable:    7600000 kB\n",
        );
        put(
            root,
            "proc/cmdline",
            "console=ttyAMA10 rauc.slot=B rootwait\n",
        );
        put(root, "etc/fleet-version", "1.3.2\n");
        put(
            root,
            "sys/class/thermal/thermal_zone0/type",
            "cpu-thermal\n",
        );
        put(root, "sys/class/thermal/thermal_zone0/temp", "48300\n");
        put(
            root,
            "sys/devices/platform/soc@107c000000/soc@107c000000:firmware/get_throttled",
            "50005\n",
        );
        put(root, "sys/class/watchdog/watchdog0/bootstatus", "32\n");
        let s = read(&r, &root.join("etc/fleet-version"));
        assert_eq!(s.uptime_s, 86400);
        assert_eq!(s.boot_id, "6c1a0e6fd2ad4b0c9d1f6d0f1c0e2a31");
        assert_eq!(s.slot, Some(Slot::B));
        assert_eq!(s.version.as_deref(), Some("1.3.2"));
        assert_eq!(s.load, [0.31, 0.28, 0.25]);
        assert_eq!(
            (s.mem_total_kib, s.mem_available_kib),
            (8_245_000, 7_600_000)
        );
        assert_eq!(s.cpu_temp_c, Some(48.3));
        let t = s.throttling.expect("throttling read");
        assert!(t.under_voltage_now && t.throttled_now && t.under_voltage_since_boot);
        assert!(s.watchdog_reset);
    }

    #[test]
    fn a_board_without_firmware_flags_falls_back_to_the_hwmon_alarm_or_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        let r = Roots::under(root);
        assert_eq!(throttling(&r.sys), None);
        put(root, "sys/class/hwmon/hwmon1/name", "rpi_volt\n");
        put(root, "sys/class/hwmon/hwmon1/in0_lcrit_alarm", "1\n");
        let t = throttling(&r.sys).expect("hwmon read");
        assert!(t.under_voltage_now && !t.under_voltage_since_boot);
        let s = read(&r, &root.join("missing"));
        assert_eq!(s.uptime_s, 0);
        assert_eq!(s.boot_id, "");
        assert_eq!(s.slot, None);
        assert!(!s.watchdog_reset);
    }
}
