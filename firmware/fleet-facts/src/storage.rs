//! Storage wear.
//!
//! - SD cards and eMMC: `<sys>/block/mmcblkN/device/life_time` holds two estimates (type A and
//!   B memory) from `0x01` (0–10 % of rated life used) to `0x0a` (90–100 %) and `0x0b`
//!   (exceeded); `pre_eol_info` is `0x01` normal, `0x02` warning (80 % of reserved blocks
//!   used), `0x03` urgent. Many SD cards report neither: then nothing is known.
//! - NVMe: the SMART log's "percentage used" and "critical warning" are only reachable through
//!   an admin-command ioctl that needs `CAP_SYS_ADMIN`; the kernel exports neither in sysfs. A
//!   root one-shot (`fleet-nvme-smart.service` running `fleet nvme-smart --write`) writes the
//!   log to `<run>/fleet-nvme-smart/<nvmeN>.json` ([`crate::nvme`]) and the unprivileged
//!   reporter reads that file (ADR 0006), taking `percent_used` (or nvme-cli's older
//!   `percentage_used`) and `critical_warning`.
use std::path::Path;

use fleet_proto::health::StorageHealth;
use serde_json::Value;

use crate::{Roots, read_small, read_trimmed};

/// At most this many devices of each kind are reported.
const MAX_PER_KIND: usize = 2;

/// Every mmc and NVMe device's wear, mmc first, each sorted by name.
#[must_use]
pub fn read(roots: &Roots) -> Vec<StorageHealth> {
    let mut out = mmc(&roots.sys);
    out.extend(nvme(&roots.run.join(crate::nvme::RUN_SUBDIR)));
    out
}

fn hex(s: &str) -> Option<u8> {
    u8::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

fn mmc(sys: &Path) -> Vec<StorageHealth> {
    let Ok(entries) = std::fs::read_dir(sys.join("block")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.strip_prefix("mmcblk")
                .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .take(MAX_PER_KIND)
        .map(|name| {
            let dev = sys.join("block").join(&name).join("device");
            let wear_percent = read_trimmed(&dev.join("life_time")).and_then(|s| {
                s.split_whitespace()
                    .filter_map(hex)
                    .filter(|v| (1..=0x0b).contains(v))
                    .max()
                    .map(|v| v * 10)
            });
            let warning = read_trimmed(&dev.join("pre_eol_info"))
                .and_then(|s| hex(&s))
                .is_some_and(|v| v >= 2);
            StorageHealth {
                device: name,
                wear_percent,
                warning,
            }
        })
        .collect()
}

fn nvme(dir: &Path) -> Vec<StorageHealth> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, std::path::PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let dev = n.strip_suffix(".json")?.to_string();
            crate::nvme::is_controller_name(&dev).then(|| (dev, e.path()))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .take(MAX_PER_KIND)
        .filter_map(|(device, path)| {
            let v: Value = serde_json::from_str(&read_small(&path)?).ok()?;
            let num = |k: &str| v.get(k).and_then(Value::as_u64);
            let used = num("percent_used").or_else(|| num("percentage_used"));
            Some(StorageHealth {
                device,
                wear_percent: used.map(|u| u.min(255) as u8),
                warning: num("critical_warning").is_some_and(|w| w != 0),
            })
        })
        .collect()
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
    fn emmc_life_time_and_nvme_smart_logs_become_wear_and_warnings() {
        let d = tempfile::tempdir().expect("tempdir");
        let root = d.path();
        put(root, "sys/block/mmcblk0/device/life_time", "0x02 0x09\n");
        put(root, "sys/block/mmcblk0/device/pre_eol_info", "0x01\n");
        put(root, "sys/block/mmcblk1/device/pre_eol_info", "0x02\n");
        std::fs::create_dir_all(root.join("sys/block/mmcblk0p1")).expect("mkdir");
        put(
            root,
            "run/fleet-nvme-smart/nvme0.json",
            r#"{"critical_warning":0,"temperature":310,"percent_used":3}"#,
        );
        put(
            root,
            "run/fleet-nvme-smart/nvme1.json",
            r#"{"critical_warning":4,"percentage_used":101}"#,
        );
        put(root, "run/fleet-nvme-smart/nvme2.json", "not json");
        let got = read(&Roots::under(root));
        let want = vec![
            StorageHealth {
                device: "mmcblk0".into(),
                wear_percent: Some(90),
                warning: false,
            },
            StorageHealth {
                device: "mmcblk1".into(),
                wear_percent: None,
                warning: true,
            },
            StorageHealth {
                device: "nvme0".into(),
                wear_percent: Some(3),
                warning: false,
            },
            StorageHealth {
                device: "nvme1".into(),
                wear_percent: Some(101),
                warning: true,
            },
        ];
        assert_eq!(got, want);
    }
}
