//! The persisted state journal: `<data>/fleet/updated/journal.json`.
//!
//! Written after every engine transition that changes the state, before the transition's
//! actions run (intent before irreversible steps). Every write is temp file, fsync, rename,
//! fsync directory, so after a power cut at any point the file holds the previous or the new
//! state, never a mix.
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::durable;

use fleet_core::update::journal::OnDisk;
pub use fleet_core::update::journal::{JOURNAL_PATH, JOURNAL_VERSION, MAX_JOURNAL_BYTES};

/// A failed journal operation.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("unable to read journal {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to write journal {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse journal {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("unable to load journal {path}: larger than {MAX_JOURNAL_BYTES} bytes")]
    TooLarge { path: PathBuf },
}

/// The journal file of one station.
#[derive(Debug, Clone)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal under `data_dir` (`<data>/fleet/updated/journal.json`).
    #[must_use]
    pub fn under(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(JOURNAL_PATH),
        }
    }

    /// Another file kept like the journal: `<data>/fleet/updated/<file_name>`.
    #[must_use]
    pub fn named(data_dir: &Path, file_name: &str) -> Self {
        Self {
            path: data_dir.join("fleet").join("updated").join(file_name),
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the saved state; `Ok(None)` when there is none yet.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, JournalError> {
        let path = &self.path;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(JournalError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        if meta.len() > MAX_JOURNAL_BYTES {
            return Err(JournalError::TooLarge { path: path.clone() });
        }
        let bytes = std::fs::read(path).map_err(|source| JournalError::Read {
            path: path.clone(),
            source,
        })?;
        let disk: OnDisk<T> = serde_json::from_slice(&bytes).map_err(|e| JournalError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if disk.v != JOURNAL_VERSION {
            return Err(JournalError::Parse {
                path: path.clone(),
                reason: format!("unknown journal version {}", disk.v),
            });
        }
        Ok(Some(disk.state))
    }

    /// Saves `state` durably.
    pub fn save<T: Serialize>(&self, state: &T) -> Result<(), JournalError> {
        let path = &self.path;
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            v: JOURNAL_VERSION,
            state,
        })
        .map_err(|e| JournalError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| JournalError::Write {
                path: path.clone(),
                source,
            })?;
        }
        durable::write_atomic(path, &bytes).map_err(|source| JournalError::Write {
            path: path.clone(),
            source,
        })
    }

    /// Moves an unreadable journal aside (`journal.json.corrupt`) so the daemon can start from
    /// the boot flow's view instead of crash-looping.
    pub fn quarantine(&self) -> Result<PathBuf, JournalError> {
        let aside = self.path.with_extension("json.corrupt");
        std::fs::rename(&self.path, &aside).map_err(|source| JournalError::Write {
            path: aside.clone(),
            source,
        })?;
        Ok(aside)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct S {
        n: u32,
    }

    #[test]
    fn a_saved_state_loads_back_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::under(dir.path());
        assert_eq!(j.load::<S>().expect("load"), None);
        j.save(&S { n: 7 }).expect("save");
        j.save(&S { n: 8 }).expect("save");
        assert_eq!(j.load::<S>().expect("load"), Some(S { n: 8 }));
    }

    #[test]
    fn a_torn_temp_file_from_a_power_cut_does_not_affect_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::under(dir.path());
        j.save(&S { n: 1 }).expect("save");
        // A power cut after the temp file was half written and before the rename.
        let tmp = j.path().parent().expect("dir").join(".journal.json.tmp");
        std::fs::write(&tmp, b"{\"v\":1,\"sta").expect("tmp");
        assert_eq!(j.load::<S>().expect("load"), Some(S { n: 1 }));
        j.save(&S { n: 2 }).expect("save over a stale temp file");
        assert_eq!(j.load::<S>().expect("load"), Some(S { n: 2 }));
    }

    #[test]
    fn a_garbage_journal_is_an_error_and_can_be_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let j = Journal::under(dir.path());
        j.save(&S { n: 1 }).expect("save");
        std::fs::write(j.path(), b"garbage").expect("write");
        assert!(matches!(j.load::<S>(), Err(JournalError::Parse { .. })));
        let aside = j.quarantine().expect("quarantine");
        assert!(aside.exists());
        assert_eq!(j.load::<S>().expect("load"), None);
    }
}
