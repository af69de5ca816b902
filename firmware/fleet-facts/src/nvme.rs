//! NVMe wear: the SMART / Health Information log page (log identifier 02h, 512 bytes) decoded,
//! and the small JSON file the root one-shot leaves for the unprivileged reporter.
//!
//! The page is read with the NVMe admin-command ioctl, which needs `CAP_SYS_ADMIN`; that read is
//! the `fleet nvme-smart` command's (the recovery CLI, run as root by `fleet-nvme-smart.service`).
//! Everything here is safe code: the decoder takes the page's bytes, the writer and the reader
//! take directories as parameters.
//!
//! The JSON file uses nvme-cli's key names (`critical_warning`, `temperature`, `avail_spare`,
//! `spare_thresh`, `percent_used`, ...), so `nvme smart-log -o json` output dropped in its place
//! reads the same.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes of the SMART / Health Information log page.
pub const SMART_LOG_BYTES: usize = 512;

/// Where the one-shot writes `<nvmeN>.json` under `/run` (the reporter reads it there).
pub const RUN_SUBDIR: &str = "fleet-nvme-smart";

/// The figures of one controller's SMART log that a station's health needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmartLog {
    /// Critical warning bits: 0 spare below threshold, 1 temperature, 2 reliability degraded,
    /// 3 read-only, 4 volatile backup failed, 5 persistent memory read-only.
    pub critical_warning: u8,
    /// Composite temperature, kelvin.
    pub temperature: u16,
    /// Available spare, percent.
    pub avail_spare: u8,
    /// Available spare threshold, percent.
    pub spare_thresh: u8,
    /// Vendor's estimate of the rated life used, percent (may exceed 100, saturates at 255).
    pub percent_used: u8,
    /// Power-on hours (saturating: the page holds 128 bits).
    pub power_on_hours: u64,
    /// Unsafe shutdowns: power lost without a shutdown notification.
    pub unsafe_shutdowns: u64,
    /// Unrecovered data integrity errors.
    pub media_errors: u64,
}

impl SmartLog {
    /// The critical-warning bits in words, lowest bit first; empty when none is set.
    #[must_use]
    pub fn warnings(&self) -> Vec<&'static str> {
        const NAMES: [&str; 8] = [
            "spare below threshold",
            "temperature out of range",
            "reliability degraded",
            "read-only",
            "volatile backup failed",
            "persistent memory read-only",
            "reserved bit 6",
            "reserved bit 7",
        ];
        (0..8)
            .filter(|b| self.critical_warning & (1 << b) != 0)
            .map(|b| NAMES[b])
            .collect()
    }

    /// One line for a person at the console.
    #[must_use]
    pub fn describe(&self) -> String {
        let warnings = self.warnings();
        format!(
            "{} % of rated life used, critical warning {}, {} K ({} °C), spare {} % \
             (threshold {} %), {} power-on hours, {} unsafe shutdowns, {} media errors",
            self.percent_used,
            if warnings.is_empty() {
                "none".to_owned()
            } else {
                warnings.join(", ")
            },
            self.temperature,
            i32::from(self.temperature) - 273,
            self.avail_spare,
            self.spare_thresh,
            self.power_on_hours,
            self.unsafe_shutdowns,
            self.media_errors
        )
    }
}

/// Why a page could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an NVMe SMART log page is {SMART_LOG_BYTES} bytes, got {0}")]
pub struct ShortPage(pub usize);

fn le_u128_saturating(bytes: &[u8]) -> u64 {
    let mut v: u128 = 0;
    for (i, b) in bytes.iter().take(16).enumerate() {
        v |= u128::from(*b) << (8 * i);
    }
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Decodes the page (NVMe Base Specification, "SMART / Health Information": byte 0 critical
/// warning, 1–2 composite temperature, 3 available spare, 4 its threshold, 5 percentage used,
/// 128–143 power-on hours, 144–159 unsafe shutdowns, 160–175 media errors; little-endian).
///
/// # Errors
/// The page is shorter than [`SMART_LOG_BYTES`].
pub fn parse(page: &[u8]) -> Result<SmartLog, ShortPage> {
    if page.len() < SMART_LOG_BYTES {
        return Err(ShortPage(page.len()));
    }
    Ok(SmartLog {
        critical_warning: page[0],
        temperature: u16::from_le_bytes([page[1], page[2]]),
        avail_spare: page[3],
        spare_thresh: page[4],
        percent_used: page[5],
        power_on_hours: le_u128_saturating(&page[128..144]),
        unsafe_shutdowns: le_u128_saturating(&page[144..160]),
        media_errors: le_u128_saturating(&page[160..176]),
    })
}

/// The NVMe controllers under `sys_class_nvme` (`/sys/class/nvme`): `nvme0`, `nvme1`, ...
/// sorted; subsystem and fabric entries are left out.
#[must_use]
pub fn controllers(sys_class_nvme: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_class_nvme) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_controller_name(n))
        .collect();
    names.sort_by_key(|n| (n.len(), n.clone()));
    names
}

/// `nvme` followed by digits only.
#[must_use]
pub fn is_controller_name(name: &str) -> bool {
    name.strip_prefix("nvme")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
}

/// Writes `<dir>/<controller>.json` (temp file, fsync, rename): the reporter reads either the
/// old or the new file, never half of one.
///
/// # Errors
/// The file could not be written; the old file, if any, stays.
pub fn write(
    dir: &Path,
    controller: &str,
    log: &SmartLog,
) -> Result<PathBuf, fleet_durable::Error> {
    let path = dir.join(format!("{controller}.json"));
    let mut json = serde_json::to_vec(log).unwrap_or_default();
    json.push(b'\n');
    fleet_durable::write_atomic(&path, &json, fleet_durable::Replace::Rename)?;
    Ok(path)
}

/// Removes `<dir>/<nvmeN>.json` of every controller not in `present`; returns what it removed.
#[must_use]
pub fn remove_stale(dir: &Path, present: &[String]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(dev) = name.strip_suffix(".json") else {
            continue;
        };
        if is_controller_name(dev)
            && !present.iter().any(|p| p == dev)
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed.push(e.path());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Vec<u8> {
        let mut p = vec![0u8; SMART_LOG_BYTES];
        p[0] = 0b0000_0100;
        p[1..3].copy_from_slice(&323u16.to_le_bytes());
        p[3] = 100;
        p[4] = 10;
        p[5] = 7;
        p[128..136].copy_from_slice(&1234u64.to_le_bytes());
        p[144..152].copy_from_slice(&5u64.to_le_bytes());
        p[160] = 2;
        p
    }

    #[test]
    fn a_smart_page_decodes_at_the_offsets_of_the_nvme_specification() {
        let got = parse(&page()).expect("parse");
        assert_eq!(
            got,
            SmartLog {
                critical_warning: 4,
                temperature: 323,
                avail_spare: 100,
                spare_thresh: 10,
                percent_used: 7,
                power_on_hours: 1234,
                unsafe_shutdowns: 5,
                media_errors: 2,
            }
        );
    }

    #[test]
    fn warning_bits_are_named_and_a_healthy_drive_says_none() {
        let log = parse(&page()).expect("parse");
        assert_eq!(log.warnings(), vec!["reliability degraded"]);
        let healthy = SmartLog {
            critical_warning: 0,
            ..log
        };
        assert!(healthy.describe().contains("critical warning none"));
        assert!(healthy.describe().starts_with("7 % of rated life used"));
        assert!(healthy.describe().contains("323 K (50 °C)"));
    }

    #[test]
    fn a_counter_beyond_64_bits_saturates_instead_of_wrapping() {
        let mut p = page();
        p[128 + 8] = 1;
        assert_eq!(parse(&p).expect("parse").power_on_hours, u64::MAX);
    }

    #[test]
    fn a_short_page_is_refused_with_its_length() {
        assert_eq!(parse(&[0u8; 64]), Err(ShortPage(64)));
    }

    #[test]
    fn only_controllers_are_listed_in_numeric_order() {
        let d = tempfile::tempdir().expect("tempdir");
        for n in ["nvme10", "nvme2", "nvme-subsys0", "nvme0n1", "nvme"] {
            std::fs::create_dir(d.path().join(n)).expect("mkdir");
        }
        assert_eq!(controllers(d.path()), vec!["nvme2", "nvme10"]);
        assert!(controllers(&d.path().join("missing")).is_empty());
    }

    #[test]
    fn the_written_file_is_read_back_by_the_storage_reader_and_stale_files_go() {
        let d = tempfile::tempdir().expect("tempdir");
        let roots = crate::Roots::under(d.path());
        let dir = roots.run.join(RUN_SUBDIR);
        std::fs::create_dir_all(&dir).expect("mkdir");
        write(&dir, "nvme0", &parse(&page()).expect("parse")).expect("write");
        std::fs::write(dir.join("nvme3.json"), "{}").expect("write");
        let removed = remove_stale(&dir, &["nvme0".to_owned()]);
        assert_eq!(removed, vec![dir.join("nvme3.json")]);
        let got = crate::storage::read(&roots);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].device, "nvme0");
        assert_eq!(got[0].wear_percent, Some(7));
        assert!(got[0].warning);
    }
}
