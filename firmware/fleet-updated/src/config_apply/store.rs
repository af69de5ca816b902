//! What the applier remembers across restarts, in `<data-dir>/fleet/updated/config-push.json`:
//! the last sequence taken per daemon (written before the layer, so a replay after a restore or
//! a power cut is still refused) and the digest of the last message judged per topic (so the
//! broker's retained copies at every reconnect are not judged and reported again).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Record {
    /// Last sequence taken, by daemon name.
    #[serde(default)]
    pub last: BTreeMap<String, u64>,
    /// sha256 (hex) of the last message judged, by topic.
    #[serde(default)]
    pub seen: BTreeMap<String, String>,
    /// A push whose layer may be written but whose daemon was not judged yet: written with
    /// the sequence, before the layer, and cleared with the outcome. A daemon that starts with
    /// one (after a power cut or its own restart) watches that daemon again, restoring
    /// `<daemon>.toml.previous` when it is not healthy within the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// See [`Record::pending`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Pending {
    pub daemon: fleet_core::config_push::Daemon,
    pub sequence: u64,
    pub health_deadline_secs: u32,
}

/// Most topics remembered in `seen` (3 scopes x a few groups x 4 daemons fit many times over).
pub const MAX_SEEN: usize = 256;

/// The record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unable to read config push record {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("unable to write config push record {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: fleet_durable::Error,
    },
}

/// Reads the record; none yet is an empty one. A damaged record is an error: forgetting the
/// sequences would let a replay through.
pub fn load(path: &Path) -> Result<Record, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Read {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
        Err(e) => Err(StoreError::Read {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Writes the record durably (temp file, fsync, rename, fsync directory).
pub fn save(path: &Path, record: &Record) -> Result<(), StoreError> {
    let mut record = record.clone();
    while record.seen.len() > MAX_SEEN {
        let first = record.seen.keys().next().cloned().unwrap_or_default();
        record.seen.remove(&first);
    }
    let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
    fleet_durable::WriteOptions::new()
        .mode(0o600)
        .create_parents()
        .write(path, &bytes)
        .map_err(|source| StoreError::Write {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_survives_a_restart_and_a_damaged_one_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet/updated/config-push.json");
        assert_eq!(load(&path).expect("none yet"), Record::default());
        let mut r = Record::default();
        r.last.insert("recorderd".into(), 7);
        r.seen
            .insert("fleet/v1/config/recorderd".into(), "ab".into());
        save(&path, &r).expect("save");
        assert_eq!(load(&path).expect("load"), r);
        std::fs::write(&path, b"{").expect("damage");
        assert!(load(&path).is_err());
    }
}
