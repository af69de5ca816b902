//! The station around the slots: disk usage of the data partition, the daemons' state under
//! systemd, the journal, and whether a slot's device holds a file system at all. Each degrades
//! to a clear "unknown, because ..." when the part is missing (no systemd, no journald).
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

/// Usage of one mounted file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskUsage {
    pub total: u64,
    pub used: u64,
    /// Available to unprivileged writers (what the daemons can still use).
    pub available: u64,
}

/// `statvfs` of the file system holding `path`.
pub fn disk_usage(path: &Path) -> Result<DiskUsage, std::io::Error> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let frag = st.fragment_size();
    let total = st.blocks().saturating_mul(frag);
    let free = st.blocks_free().saturating_mul(frag);
    let available = st.blocks_available().saturating_mul(frag);
    Ok(DiskUsage {
        total,
        used: total.saturating_sub(free),
        available,
    })
}

/// A daemon's state, or why it is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DaemonStates {
    /// `(unit, state)` as `systemctl is-active` prints it (`active`, `failed`, `inactive`...).
    Known(Vec<(String, String)>),
    Unknown(String),
}

/// `systemctl is-active` for each unit, when systemd runs (`systemd_dir` exists, as
/// `sd_booted()` checks).
#[must_use]
pub fn daemon_states(units: &[String], systemd_dir: &Path) -> DaemonStates {
    if !systemd_dir.is_dir() {
        return DaemonStates::Unknown(format!(
            "systemd is not running ({} is missing)",
            systemd_dir.display()
        ));
    }
    let mut states = Vec::new();
    for unit in units {
        // is-active exits non-zero for anything but active; its stdout is the state.
        let state = match Command::new("systemctl")
            .args(["is-active", "--", unit])
            .output()
        {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                if text.is_empty() {
                    "unknown".to_owned()
                } else {
                    text
                }
            }
            Err(e) => return DaemonStates::Unknown(format!("unable to run systemctl: {e}")),
        };
        states.push((unit.clone(), state));
    }
    DaemonStates::Known(states)
}

/// What a slot's device holds, judged by its first superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotContent {
    /// An ext2/3/4 or squashfs file system.
    FileSystem,
    /// No known file system signature: never written, or erased.
    Empty,
}

/// Reads the ext4 magic (0xEF53 at byte 1080) or the squashfs magic (`hsqs` at 0).
pub fn slot_content(device: &Path) -> Result<SlotContent, std::io::Error> {
    let mut f = std::fs::File::open(device)?;
    let mut head = [0u8; 4];
    let squash = f.read_exact(&mut head).is_ok() && &head == b"hsqs";
    if squash {
        return Ok(SlotContent::FileSystem);
    }
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(1080))?;
    match f.read_exact(&mut magic) {
        Ok(()) if magic == [0x53, 0xEF] => Ok(SlotContent::FileSystem),
        Ok(()) => Ok(SlotContent::Empty),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(SlotContent::Empty),
        Err(e) => Err(e),
    }
}

/// `VERSION_ID` (or `VERSION`) of an os-release file.
#[must_use]
pub fn os_version(os_release: &Path) -> Option<String> {
    let text = std::fs::read_to_string(os_release).ok()?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().trim_matches('"').to_owned())
            .filter(|v| !v.is_empty())
    };
    field("VERSION_ID=").or_else(|| field("VERSION="))
}

/// The station id from the provisioned updater configuration (`device-id = "..."` or
/// `device-id-file = "..."`).
#[must_use]
pub fn station_id(identity_file: &Path) -> Option<String> {
    let text = std::fs::read_to_string(identity_file).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    if let Some(id) = table.get("device-id").and_then(toml::Value::as_str) {
        return Some(id.trim().to_owned()).filter(|s| !s.is_empty());
    }
    let file = table.get("device-id-file").and_then(toml::Value::as_str)?;
    let id = std::fs::read_to_string(file).ok()?;
    Some(id.trim().to_owned()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeroed_device_is_empty_and_an_ext4_image_is_a_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zero = dir.path().join("zero.img");
        std::fs::write(&zero, vec![0u8; 8192]).expect("write");
        assert_eq!(slot_content(&zero).ok(), Some(SlotContent::Empty));
        let mut ext = vec![0u8; 8192];
        ext[1080] = 0x53;
        ext[1081] = 0xEF;
        let ext_path = dir.path().join("ext.img");
        std::fs::write(&ext_path, ext).expect("write");
        assert_eq!(slot_content(&ext_path).ok(), Some(SlotContent::FileSystem));
        let short = dir.path().join("short.img");
        std::fs::write(&short, b"x").expect("write");
        assert_eq!(slot_content(&short).ok(), Some(SlotContent::Empty));
    }

    #[test]
    fn the_station_id_comes_from_the_provisioned_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("updated.toml");
        std::fs::write(&f, "device-id = \"stn-0042\"\ncompatible = \"x\"\n").expect("write");
        assert_eq!(station_id(&f).as_deref(), Some("stn-0042"));
        let idf = dir.path().join("device-id");
        std::fs::write(&idf, "stn-7\n").expect("write");
        std::fs::write(&f, format!("device-id-file = \"{}\"\n", idf.display())).expect("write");
        assert_eq!(station_id(&f).as_deref(), Some("stn-7"));
        assert_eq!(station_id(&dir.path().join("missing")), None);
    }

    #[test]
    fn os_release_gives_the_version_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("os-release");
        std::fs::write(&f, "NAME=\"fleet\"\nVERSION_ID=\"1.4.0\"\n").expect("write");
        assert_eq!(os_version(&f).as_deref(), Some("1.4.0"));
    }

    #[test]
    fn without_systemd_the_daemons_are_unknown_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let states = daemon_states(&["fleet-updated".into()], &dir.path().join("none"));
        assert!(
            matches!(states, DaemonStates::Unknown(ref r) if r.contains("systemd is not running"))
        );
    }
}
