//! Panic without a database: when the index is unusable, the files' names still give the
//! segment sequence. Deletes oldest-first (only at the panic tier or the floor: with no index,
//! nothing is known to be uploaded), logs each deletion, and journals it so the index can be
//! healed once it is usable again.

use std::path::Path;

use fleet_core::retention::{self, Disk, Policy, Recording, RecordingId};
use fleet_core::time::Now;

use crate::archive;
use crate::name;

/// The journal of deletions made without the index, one relative path per line.
pub const JOURNAL: &str = "panic-deletions.log";

/// The outcome of one emergency cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub tier: Option<retention::Tier>,
    pub deleted: Vec<String>,
    pub freed_bytes: u64,
}

/// Runs one plan over the files on disk and deletes what it says.
///
/// # Errors
/// The directory cannot be scanned.
#[allow(clippy::too_many_arguments)]
pub fn run_once(
    recordings_dir: &Path,
    state_dir: &Path,
    max_depth: usize,
    policy: &Policy,
    disk: Disk,
    reserve_bytes: u64,
    write_rate: u64,
    now: Now,
) -> Result<Outcome, archive::ArchiveError> {
    let found = archive::scan(recordings_dir, max_depth)?;
    let files: Vec<Recording> = found
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let file_name = f.rel.rsplit('/').next().unwrap_or(&f.rel);
            let info = name::parse(file_name).unwrap_or_default();
            Recording {
                id: RecordingId(i64::try_from(i).unwrap_or(i64::MAX)),
                sequence: info.sequence.unwrap_or(0),
                trusted_start_unix_s: None,
                size_bytes: f.size_bytes,
                uploaded: false,
                analysed: false,
            }
        })
        .collect();
    // Without the index nothing is known to be uploaded: plan as if no file were.
    let plan = retention::plan(&files, policy, disk, reserve_bytes, write_rate, now);
    let mut out = Outcome {
        tier: Some(plan.tier),
        ..Outcome::default()
    };
    let journal = state_dir.join(JOURNAL);
    for d in &plan.deletions {
        let Ok(i) = usize::try_from(d.id.0) else {
            continue;
        };
        let Some(f) = found.get(i) else { continue };
        // Journal first: if the power goes now, the heal marks a row whose file may remain,
        // and the next reconciliation adopts the file again.
        if let Err(e) = fleet_durable::append(&journal, format!("{}\n", f.rel).as_bytes()) {
            tracing::warn!(error = %e, path = %journal.display(), "unable to journal an emergency deletion");
        }
        match std::fs::remove_file(recordings_dir.join(&f.rel)) {
            Ok(()) => {
                tracing::warn!(path = %f.rel, bytes = f.size_bytes, reason = d.reason.as_str(), "deleted without index");
                out.freed_bytes += f.size_bytes;
                out.deleted.push(f.rel.clone());
            }
            Err(e) => {
                tracing::error!(path = %f.rel, error = %e, "unable to delete a recording without index")
            }
        }
    }
    if !out.deleted.is_empty() {
        let _ = fleet_durable::sync_dir(recordings_dir);
    }
    Ok(out)
}

/// Reads the journal (paths deleted while the index was unusable).
#[must_use]
pub fn read_journal(state_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(state_dir.join(JOURNAL))
        .map(|t| {
            t.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the journal once the index has been healed.
///
/// # Errors
/// The unlink fails for another reason than absence.
pub fn clear_journal(state_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(state_dir.join(JOURNAL)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
