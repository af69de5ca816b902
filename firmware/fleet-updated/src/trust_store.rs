//! The rotated trusted key set on the data partition: `<data>/fleet/updated/trust.json`.
//!
//! Until the first rotation is applied the file does not exist and the station trusts the
//! configured `trusted-keys` (the bootstrap set, sequence 0). Once a rotation is applied the
//! file wins over the configuration. Every write is temp file, fsync, rename, fsync directory.
//! A file that is unreadable, too large, or breaks the trust rules is an error: the daemon
//! must not silently fall back to the (possibly revoked) bootstrap keys.
use std::path::{Path, PathBuf};

use fleet_core::trust::{RotationReject, TrustState};
use serde::{Deserialize, Serialize};

use crate::durable;

/// Largest trust file read back (16 keys and 256 revocations fit in well under this).
pub const MAX_TRUST_FILE_BYTES: u64 = 64 * 1024;
const TRUST_FILE_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum TrustStoreError {
    #[error("unable to read trust file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to read trust file {path}: larger than {MAX_TRUST_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("unable to parse trust file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("unable to use trust file {path}: {reason:?}")]
    Invalid {
        path: PathBuf,
        reason: RotationReject,
    },
    #[error("unable to write trust file {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    v: u32,
    trust: TrustState,
    /// SHA-256 (hex) of the rotation message that produced `trust`: the same retained message
    /// seen again (every reconnect and restart) is recognised without being judged again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied_sha256: Option<String>,
}

/// What the trust file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub trust: TrustState,
    /// SHA-256 of the rotation message applied last, if the file names it.
    pub applied_sha256: Option<[u8; 32]>,
}

/// The trust file of one station.
#[derive(Debug, Clone)]
pub struct TrustStore {
    path: PathBuf,
}

impl TrustStore {
    /// The trust file under `data_dir`.
    #[must_use]
    pub fn under(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("fleet").join("updated").join("trust.json"),
        }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted set, or `bootstrap` when no rotation was ever applied.
    pub fn load_or(&self, bootstrap: TrustState) -> Result<TrustState, TrustStoreError> {
        self.load(bootstrap).map(|l| l.trust)
    }

    /// [`TrustStore::load_or`], with the digest of the rotation message applied last.
    pub fn load(&self, bootstrap: TrustState) -> Result<Loaded, TrustStoreError> {
        let path = &self.path;
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded {
                    trust: bootstrap,
                    applied_sha256: None,
                });
            }
            Err(source) => {
                return Err(TrustStoreError::Read {
                    path: path.clone(),
                    source,
                });
            }
        };
        if meta.len() > MAX_TRUST_FILE_BYTES {
            return Err(TrustStoreError::TooLarge { path: path.clone() });
        }
        let bytes = std::fs::read(path).map_err(|source| TrustStoreError::Read {
            path: path.clone(),
            source,
        })?;
        let disk: OnDisk = serde_json::from_slice(&bytes).map_err(|e| TrustStoreError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if disk.v != TRUST_FILE_VERSION {
            return Err(TrustStoreError::Parse {
                path: path.clone(),
                reason: format!("unknown trust file version {}", disk.v),
            });
        }
        disk.trust
            .validate()
            .map_err(|reason| TrustStoreError::Invalid {
                path: path.clone(),
                reason,
            })?;
        let mut applied_sha256 = None;
        if let Some(h) = &disk.applied_sha256 {
            let mut b = [0u8; 32];
            hex::decode_to_slice(h, &mut b).map_err(|_| TrustStoreError::Parse {
                path: path.clone(),
                reason: "applied-sha256 is not 64 hex digits".into(),
            })?;
            applied_sha256 = Some(b);
        }
        Ok(Loaded {
            trust: disk.trust,
            applied_sha256,
        })
    }

    /// Saves `trust` durably (before the station uses it).
    pub fn save(&self, trust: &TrustState) -> Result<(), TrustStoreError> {
        self.save_applied(trust, None)
    }

    /// Saves `trust` with the digest of the rotation message that produced it.
    pub fn save_applied(
        &self,
        trust: &TrustState,
        applied_sha256: Option<[u8; 32]>,
    ) -> Result<(), TrustStoreError> {
        let path = &self.path;
        let write_err = |source| TrustStoreError::Write {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            v: TRUST_FILE_VERSION,
            trust: trust.clone(),
            applied_sha256: applied_sha256.map(hex::encode),
        })
        .map_err(|e| write_err(std::io::Error::other(e)))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        durable::write_atomic(path, &bytes).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use fleet_core::trust::{Rotation, decide_rotation};
    use fleet_core::update::PublicKey;

    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    #[test]
    fn without_a_file_the_configured_keys_are_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrustStore::under(dir.path());
        let boot = TrustState::bootstrap([key(1)]).expect("valid");
        assert_eq!(store.load_or(boot.clone()).expect("loads"), boot);
    }

    #[test]
    fn an_applied_rotation_survives_a_restart_and_wins_over_the_configuration() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrustStore::under(dir.path());
        let boot = TrustState::bootstrap([key(1), key(2)]).expect("valid");
        let rotation = Rotation {
            sequence: 4,
            keys: vec![key(2), key(3)],
            revoke: vec![key(1).key_id()],
            issued_at: 0,
        };
        let next = decide_rotation(&boot, &rotation, key(2).key_id())
            .expect("applies")
            .next;
        store.save(&next).expect("saves");
        let again = TrustStore::under(dir.path()).load_or(boot).expect("loads");
        assert_eq!(again, next);
        assert_eq!(again.sequence, 4);
        let leftovers: Vec<_> = std::fs::read_dir(store.path().parent().expect("dir"))
            .expect("lists")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "trust.json")
            .collect();
        assert!(leftovers.is_empty(), "no temp file is left: {leftovers:?}");
    }

    #[test]
    fn a_damaged_or_widened_trust_file_is_an_error_not_a_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TrustStore::under(dir.path());
        let boot = TrustState::bootstrap([key(1)]).expect("valid");
        std::fs::create_dir_all(store.path().parent().expect("dir")).expect("mkdir");
        std::fs::write(store.path(), b"{\"v\":1,\"trust\":").expect("write");
        assert!(matches!(
            store.load_or(boot.clone()),
            Err(TrustStoreError::Parse { .. })
        ));
        // A revoked key listed as trusted (hand-edited file) is refused.
        let text = format!(
            r#"{{"v":1,"trust":{{"sequence":2,"keys":["{}"],"revoked":["{}"]}}}}"#,
            key(1),
            key(1).key_id()
        );
        std::fs::write(store.path(), text).expect("write");
        assert!(matches!(
            store.load_or(boot.clone()),
            Err(TrustStoreError::Invalid { .. })
        ));
        std::fs::write(store.path(), vec![b' '; 70 * 1024]).expect("write");
        assert!(matches!(
            store.load_or(boot),
            Err(TrustStoreError::TooLarge { .. })
        ));
    }
}
