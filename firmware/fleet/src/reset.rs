//! Factory reset: erase the station's data under `<data>/fleet/` and keep what the station
//! needs to come back as itself.
//!
//! Kept: `identity/` (provisioning: station id, broker credentials, trusted keys; erased with
//! `--all`), `boot/` (the boot flow's attempt record: without it the other slot reads as bad)
//! and `update/` (the version floor, which stops downgrades). Everything else under
//! `<data>/fleet/` goes: recordings, retention index, updater journal and downloads. Nothing
//! outside `<data>/fleet/` is touched (RAUC's `<data>/rauc`, `lost+found`).
//!
//! Power loss at any point leaves nothing half-done:
//! 1. the list of entries to erase is written to `<data>/fleet/.factory-reset` (temp file,
//!    fsync, rename, fsync directory): the confirmed intent;
//! 2. each entry is renamed into `<data>/fleet/.factory-reset.trash/` (a rename is atomic; an
//!    entry is either in place, whole, or in the trash), then the directory is synced;
//! 3. the trash is deleted, the intent removed, the directory synced.
//!
//! An intent found later (power cut during 2 or 3) is finished by the next `fleet
//! factory-reset`, without asking again; `fleet status` reports it.
use std::path::{Path, PathBuf};

use fleet_durable::{Replace, write_atomic};

use crate::limits::MAX_ENTRIES;

/// Name of the intent file in `<data>/fleet/`.
pub const INTENT: &str = ".factory-reset";
/// Name of the trash directory in `<data>/fleet/`.
pub const TRASH: &str = ".factory-reset.trash";
/// Entries of `<data>/fleet/` a reset keeps.
pub const KEPT: [&str; 3] = ["identity", "boot", "update"];
/// Entries kept unless `--all`: the provisioned identity, and provisioning's own temporaries.
pub const IDENTITY: [&str; 3] = ["identity", ".identity.new", ".identity.old"];

/// What a reset erases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `<data>/fleet`.
    pub dir: PathBuf,
    /// Entry names under `dir` to erase, sorted.
    pub erase: Vec<String>,
    /// Entry names under `dir` that stay, sorted.
    pub keep: Vec<String>,
}

/// A failed reset step, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("unable to list {path}: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to list {path}: more than {MAX_ENTRIES} entries")]
    TooMany { path: PathBuf },
    #[error("unable to write the reset intent {path}: {source}")]
    Intent {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to move {from} to {to}: {source}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to remove {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to sync directory {path}: {source}")]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn fleet_dir(data_root: &Path) -> PathBuf {
    data_root.join("fleet")
}

/// What a reset would erase now.
pub fn plan(data_root: &Path, all: bool) -> Result<Plan, ResetError> {
    let dir = fleet_dir(data_root);
    let mut erase = Vec::new();
    let mut keep = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Plan { dir, erase, keep });
        }
        Err(source) => return Err(ResetError::List { path: dir, source }),
    };
    for entry in entries {
        let entry = entry.map_err(|source| ResetError::List {
            path: dir.clone(),
            source,
        })?;
        if erase.len() + keep.len() >= MAX_ENTRIES {
            return Err(ResetError::TooMany { path: dir });
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == INTENT || name == TRASH {
            continue;
        }
        let kept = if IDENTITY.contains(&name.as_str()) {
            !all
        } else {
            KEPT.contains(&name.as_str())
        };
        if kept {
            keep.push(name);
        } else {
            erase.push(name);
        }
    }
    erase.sort();
    keep.sort();
    Ok(Plan { dir, erase, keep })
}

/// A reset that was confirmed but did not finish (power cut), if any.
pub fn unfinished(data_root: &Path) -> Result<Option<Plan>, ResetError> {
    let dir = fleet_dir(data_root);
    let intent = dir.join(INTENT);
    let text = match std::fs::read_to_string(&intent) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(dir.join(TRASH).exists().then(|| Plan {
                dir: dir.clone(),
                erase: Vec::new(),
                keep: Vec::new(),
            }));
        }
        Err(source) => {
            return Err(ResetError::List {
                path: intent,
                source,
            });
        }
    };
    let erase = text
        .lines()
        .map(str::trim)
        .filter(|l| valid_name(l))
        .take(MAX_ENTRIES)
        .map(str::to_owned)
        .collect();
    Ok(Some(Plan {
        dir,
        erase,
        keep: Vec::new(),
    }))
}

/// A plain entry name: no separators, not `.`/`..`, not the reset's own files.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && name != INTENT
        && name != TRASH
}

fn sync_dir(path: &Path) -> Result<(), ResetError> {
    fleet_durable::sync_dir(path).map_err(|e| ResetError::Sync {
        path: path.to_owned(),
        source: e.into_source(),
    })
}

/// Carries out `plan` (a fresh one or an unfinished one). `step` is told each entry as it is
/// moved, for progress lines.
pub fn apply(plan: &Plan, step: &mut dyn FnMut(&str)) -> Result<(), ResetError> {
    let dir = &plan.dir;
    if !dir.exists() {
        return Ok(());
    }
    let intent = dir.join(INTENT);
    let trash = dir.join(TRASH);
    let mut list = plan.erase.join("\n");
    list.push('\n');
    write_atomic(&intent, list.as_bytes(), Replace::Rename).map_err(|e| ResetError::Intent {
        path: intent.clone(),
        source: e.into_source(),
    })?;
    match std::fs::create_dir(&trash) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(ResetError::Move {
                from: dir.clone(),
                to: trash,
                source,
            });
        }
    }
    sync_dir(dir)?;
    for name in plan.erase.iter().filter(|n| valid_name(n)) {
        let from = dir.join(name);
        if std::fs::symlink_metadata(&from).is_err() {
            continue; // moved before a power cut, or gone
        }
        let mut to = trash.join(name);
        let mut n = 1;
        while std::fs::symlink_metadata(&to).is_ok() {
            to = trash.join(format!("{name}.{n}"));
            n += 1;
        }
        std::fs::rename(&from, &to).map_err(|source| ResetError::Move {
            from: from.clone(),
            to: to.clone(),
            source,
        })?;
        step(name);
    }
    sync_dir(&trash)?;
    sync_dir(dir)?;
    std::fs::remove_dir_all(&trash).map_err(|source| ResetError::Remove {
        path: trash.clone(),
        source,
    })?;
    sync_dir(dir)?;
    std::fs::remove_file(&intent).map_err(|source| ResetError::Remove {
        path: intent.clone(),
        source,
    })?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn station() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        for sub in [
            "fleet/identity",
            "fleet/boot",
            "fleet/update",
            "fleet/recordings/data",
            "fleet/retention",
            "fleet/updated",
            "fleet/downloads",
            "rauc",
        ] {
            std::fs::create_dir_all(d.path().join(sub)).expect("mkdir");
        }
        std::fs::write(d.path().join("fleet/recordings/data/a.flac"), b"x").expect("write");
        d
    }

    #[test]
    fn a_plan_keeps_identity_boot_and_floor_and_all_also_erases_identity() {
        let d = station();
        let p = plan(d.path(), false).expect("plan");
        assert_eq!(p.keep, vec!["boot", "identity", "update"]);
        assert_eq!(
            p.erase,
            vec!["downloads", "recordings", "retention", "updated"]
        );
        let p = plan(d.path(), true).expect("plan");
        assert_eq!(p.keep, vec!["boot", "update"]);
        assert!(p.erase.contains(&"identity".to_owned()));
    }

    #[test]
    fn a_reset_cut_after_some_moves_is_finished_from_its_intent() {
        let d = station();
        let p = plan(d.path(), false).expect("plan");
        // Power cut after the intent and the first move.
        let dir = d.path().join("fleet");
        write_atomic(
            &dir.join(INTENT),
            p.erase.join("\n").as_bytes(),
            Replace::Rename,
        )
        .expect("intent");
        std::fs::create_dir(dir.join(TRASH)).expect("trash");
        std::fs::rename(dir.join("downloads"), dir.join(TRASH).join("downloads")).expect("mv");
        let left = unfinished(d.path())
            .expect("read")
            .expect("an unfinished reset");
        assert_eq!(left.erase, p.erase);
        apply(&left, &mut |_| {}).expect("finish");
        assert_eq!(unfinished(d.path()).expect("read"), None);
        let after = plan(d.path(), false).expect("plan");
        assert!(after.erase.is_empty(), "{after:?}");
        assert!(d.path().join("rauc").is_dir(), "outside fleet/ untouched");
    }

    #[test]
    fn names_from_a_damaged_intent_never_leave_the_fleet_directory() {
        assert!(!valid_name(".."));
        assert!(!valid_name("../rauc"));
        assert!(!valid_name(TRASH));
        assert!(valid_name("recordings"));
    }
}
