//! The uploader's own durable state, `<state-dir>/queue.json`: retry counts per recording and of
//! the link, parked recordings with their reason, and the multipart upload in flight. The queue
//! itself is the index. Written with `fleet_bootctl::atomic` (temp file, fsync, rename, fsync
//! directory) after every change.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use fleet_bootctl::atomic::{Replace, write_atomic};
use fleet_core::upload::Attempts;
use serde::{Deserialize, Serialize};

use crate::s3::InFlight;

/// The schema version written.
pub const VERSION: u32 = 1;

/// One retry record as stored (monotonic times are not stored: a restart retries at once).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoredAttempts {
    pub failures: u32,
    #[serde(default)]
    pub last_reason: Option<String>,
    #[serde(default)]
    pub parked: bool,
}

impl From<&Attempts> for StoredAttempts {
    fn from(a: &Attempts) -> Self {
        Self {
            failures: a.failures,
            last_reason: a.last_reason.clone(),
            parked: a.parked,
        }
    }
}

impl From<&StoredAttempts> for Attempts {
    fn from(s: &StoredAttempts) -> Self {
        Self {
            failures: s.failures,
            last_reason: s.last_reason.clone(),
            not_before_ms: 0,
            parked: s.parked,
        }
    }
}

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Stored {
    pub version: u32,
    /// Retry records by recording path (relative to the recordings directory).
    #[serde(default)]
    pub recordings: BTreeMap<String, StoredAttempts>,
    #[serde(default)]
    pub link: StoredAttempts,
    #[serde(default)]
    pub in_flight: Option<InFlight>,
}

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("unable to read {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to write {path}")]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Loads the state; a missing file is an empty state. A corrupt one is moved aside (retry counts
/// are only hints, and the in-flight upload is started over) and an empty state returned.
///
/// # Errors
/// The file exists but cannot be read.
pub fn load(path: &Path) -> Result<Stored, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Stored::default()),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    match serde_json::from_str::<Stored>(&text) {
        Ok(s) => Ok(s),
        Err(e) => {
            let aside = path.with_extension("json.broken");
            tracing::warn!(path = %path.display(), error = %e, "state file unreadable; starting afresh");
            let _ = std::fs::rename(path, aside);
            Ok(Stored::default())
        }
    }
}

/// Writes the state durably.
///
/// # Errors
/// The write, fsync or rename fails.
pub fn save(path: &Path, state: &Stored) -> Result<(), StateError> {
    let mut s = state.clone();
    s.version = VERSION;
    let bytes = serde_json::to_vec_pretty(&s).map_err(|e| StateError::Write {
        path: path.to_owned(),
        source: io::Error::other(e),
    })?;
    write_atomic(path, &bytes, Replace::Rename).map_err(|source| StateError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_state_survives_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("queue.json");
        assert_eq!(load(&p).unwrap(), Stored::default());
        let mut s = Stored::default();
        s.recordings.insert(
            "a.wav".into(),
            StoredAttempts {
                failures: 2,
                last_reason: Some("checksum".into()),
                parked: false,
            },
        );
        s.in_flight = Some(InFlight {
            recording: "a.wav".into(),
            key: "k".into(),
            upload_id: "u".into(),
            object: "/s/a.flac".into(),
            size: 10,
            sha256: "00".into(),
            part_size: 5,
            parts: vec![(1, "\"e\"".into())],
        });
        save(&p, &s).unwrap();
        let back = load(&p).unwrap();
        assert_eq!(back.recordings, s.recordings);
        assert_eq!(back.in_flight, s.in_flight);
        assert_eq!(back.version, VERSION);
    }

    #[test]
    fn a_corrupt_state_file_is_moved_aside_and_started_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("queue.json");
        std::fs::write(&p, "{ not json").unwrap();
        assert_eq!(load(&p).unwrap(), Stored::default());
        assert!(dir.path().join("queue.json.broken").exists());
    }
}
