//! Startup reconciliation of the index with the files on disk.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleet_core::retention::RecordingId;

use crate::archive::{self, ArchiveError};
use crate::disk::{self, DiskError};
use crate::index::{Index, IndexError};

/// Why reconciliation refused to touch the index, or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(
        "unable to reconcile: {path} is not a mounted filesystem (is the data partition mounted?)"
    )]
    Unmounted { path: PathBuf },
    #[error(
        "unable to reconcile: {missing} of {present} indexed recordings are missing from {path}; refusing to mark them deleted"
    )]
    TooManyMissing {
        path: PathBuf,
        missing: u64,
        present: u64,
    },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("unable to unlink {path}")]
    Unlink {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ReconcileError {
    /// A refusal (alarm, touch nothing) rather than a failure.
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Unmounted { .. } | Self::TooManyMissing { .. })
    }
}

/// What reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub files: u64,
    pub rows_present: u64,
    pub adopted: u64,
    pub vanished: u64,
    pub finished_unlinks: u64,
    pub healed_from_journal: u64,
    #[serde(skip)]
    pub took: Duration,
}

/// The checks that come before any change: the mount and the recordings directory.
///
/// # Errors
/// [`ReconcileError::Unmounted`] when `mount_point` is set and not a mount point, or the
/// recordings directory is missing.
pub fn check_mounted(
    mount_point: Option<&Path>,
    recordings_dir: &Path,
) -> Result<(), ReconcileError> {
    if let Some(mp) = mount_point
        && !disk::is_mount_point(mp)?
    {
        return Err(ReconcileError::Unmounted {
            path: mp.to_owned(),
        });
    }
    if !recordings_dir.is_dir() {
        return Err(ReconcileError::Unmounted {
            path: recordings_dir.to_owned(),
        });
    }
    Ok(())
}

/// Brings the index in line with the recordings directory:
/// 1. finishes deletions committed before a crash (unlinks what is still there);
/// 2. marks `vanished` the present rows whose files are gone, unless more than
///    `max_missing_fraction` of them are (then it refuses and changes nothing);
/// 3. adopts files without a row, in batches of `batch`.
///
/// `healed` are paths deleted while the index was unusable (the panic journal): they are marked
/// deleted first, with reason `panic-no-index`, and do not count as missing.
///
/// # Errors
/// A refusal ([`ReconcileError::is_refusal`]) or an I/O or index failure.
pub fn reconcile(
    index: &mut Index,
    recordings_dir: &Path,
    mount_point: Option<&Path>,
    max_missing_fraction: f64,
    max_depth: usize,
    batch: usize,
    healed: &[String],
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    check_mounted(mount_point, recordings_dir)?;
    let found = archive::scan_names(recordings_dir, max_depth)?;
    let mut rows = index.rows_by_path()?;
    let mut report = Report {
        files: found.len() as u64,
        ..Report::default()
    };

    if !healed.is_empty() {
        let ids: Vec<RecordingId> = healed
            .iter()
            .filter_map(|p| rows.get(p).filter(|r| !r.deleted).map(|r| r.id))
            .collect();
        index.mark_gone(&ids, "panic-no-index")?;
        report.healed_from_journal = ids.len() as u64;
        for p in healed {
            if let Some(r) = rows.get_mut(p) {
                r.deleted = true;
            }
        }
    }

    let on_disk: HashSet<&str> = found.iter().map(|f| f.rel.as_str()).collect();

    // 1. Deletions whose intent was committed: finish them.
    let mut finished = Vec::new();
    for (id, rel) in index.pending_unlinks()? {
        let path = recordings_dir.join(&rel);
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(path = %rel, "finished a deletion interrupted by a restart"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(ReconcileError::Unlink { path, source }),
        }
        finished.push(id);
        if let Some(r) = rows.get_mut(&rel) {
            r.pending_unlink = false;
        }
    }
    index.confirm_unlinked(&finished)?;
    report.finished_unlinks = finished.len() as u64;

    // 2. Rows whose files are gone.
    let present: Vec<(&String, RecordingId)> = rows
        .iter()
        .filter(|(_, r)| !r.deleted)
        .map(|(p, r)| (p, r.id))
        .collect();
    report.rows_present = present.len() as u64;
    let missing: Vec<RecordingId> = present
        .iter()
        .filter(|(p, _)| !on_disk.contains(p.as_str()))
        .map(|(_, id)| *id)
        .collect();
    // Counts are far below 2^52, so the float comparison is exact enough.
    #[allow(clippy::cast_precision_loss)]
    let too_many =
        !missing.is_empty() && missing.len() as f64 > max_missing_fraction * present.len() as f64;
    if too_many {
        return Err(ReconcileError::TooManyMissing {
            path: recordings_dir.to_owned(),
            missing: missing.len() as u64,
            present: present.len() as u64,
        });
    }
    index.mark_gone(&missing, "vanished")?;
    report.vanished = missing.len() as u64;

    // 3. Files without a (present) row.
    // In recording order (segment sequence from the name, then the name, which starts with the
    // time), so the row ids the plan orders by follow the recordings.
    let mut unknown: Vec<&archive::Found> = found
        .iter()
        .filter(|f| {
            !rows
                .get(&f.rel)
                .is_some_and(|r| !r.deleted || r.pending_unlink)
        })
        .collect();
    unknown.sort_by_cached_key(|f| {
        let file_name = f.rel.rsplit('/').next().unwrap_or(&f.rel);
        let seq = crate::name::parse(file_name)
            .and_then(|i| i.sequence)
            .unwrap_or(0);
        (seq, file_name.to_owned())
    });
    let mut to_adopt = Vec::new();
    for f in unknown {
        if let Some(rec) = archive::describe(recordings_dir, &f.rel) {
            to_adopt.push(rec);
        }
        if to_adopt.len() >= batch.max(1) {
            report.adopted += index.insert(&to_adopt)?.len() as u64;
            to_adopt.clear();
        }
    }
    report.adopted += index.insert(&to_adopt)?.len() as u64;
    report.took = started.elapsed();
    Ok(report)
}
