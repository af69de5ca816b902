//! `fleetctl keys gen`: the ed25519 key pair that signs offers and manifests.
//!
//! The private key is a PKCS#8 PEM file written with mode 0600 (temp file, fsync, rename,
//! fsync directory); the public key is 64 hex digits on one line (the form stations read with
//! `fleet_proto::TrustedKeys::parse_public_hex`). Existing files are never overwritten.
use std::fs;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unable to write key file {path}: it already exists (remove it first)")]
    Exists { path: PathBuf },
    #[error("unable to write key file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to read key file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse key file {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("unable to encode key: {0}")]
    Encode(String),
}

/// A freshly generated key pair and where it was written.
#[derive(Debug)]
pub struct GeneratedKey {
    pub private_path: PathBuf,
    pub public_path: PathBuf,
    pub key_id: String,
}

/// The key id the signing envelope carries: hex of the first 8 bytes of sha256(public key).
#[must_use]
pub fn key_id(key: &VerifyingKey) -> String {
    fleet_proto::envelope::key_id(key).to_string()
}

/// Generates a key pair into `private_path` (0600) and `public_path`.
pub fn generate(private_path: &Path, public_path: &Path) -> Result<GeneratedKey, KeyError> {
    for path in [private_path, public_path] {
        if path.exists() {
            return Err(KeyError::Exists {
                path: path.to_owned(),
            });
        }
    }
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = signing
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let public_hex = format!("{}\n", hex::encode(signing.verifying_key().as_bytes()));
    write_new_file(private_path, private_pem.as_bytes(), 0o600)?;
    write_new_file(public_path, public_hex.as_bytes(), 0o644)?;
    Ok(GeneratedKey {
        private_path: private_path.to_owned(),
        public_path: public_path.to_owned(),
        key_id: key_id(&signing.verifying_key()),
    })
}

/// Reads a PKCS#8 PEM private key.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        reason: format!("not a PKCS#8 PEM ed25519 private key ({e})"),
    })
}

/// Reads a public key file (64 hex digits).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    fleet_proto::TrustedKeys::parse_public_hex(&text).map_err(|e| KeyError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Writes `bytes` to a new file at `path` with `mode` (from the temp file's creation, so a
/// secret is never readable by others): temp file in the same directory, fsync, rename
/// without clobbering, fsync the directory.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    fleet_durable::WriteOptions::new()
        .replace(fleet_durable::Replace::Never)
        .mode(mode)
        .create_parents()
        .write(path, bytes)
        .map_err(|e| match e {
            fleet_durable::Error::Exists { .. } => KeyError::Exists {
                path: path.to_owned(),
            },
            other => KeyError::Write {
                path: path.to_owned(),
                source: other.into(),
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generated_private_key_is_owner_only_and_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("offer.key.pem");
        let public = dir.path().join("offer.pub");
        let made = generate(&private, &public).expect("generate");
        let mode = fs::metadata(&private).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let signing = load_signing_key(&private).expect("load private");
        let verifying = load_verifying_key(&public).expect("load public");
        assert_eq!(signing.verifying_key(), verifying);
        assert_eq!(made.key_id, key_id(&verifying));
        assert_eq!(made.key_id.len(), 16);
    }

    #[test]
    fn generating_over_an_existing_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("k.pem");
        let public = dir.path().join("k.pub");
        fs::write(&private, "keep me").expect("write");
        assert!(matches!(
            generate(&private, &public),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(fs::read_to_string(&private).expect("read"), "keep me");
    }

    #[test]
    fn a_file_that_is_not_a_key_is_reported_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk.pem");
        fs::write(&path, "hello").expect("write");
        let err = load_signing_key(&path).expect_err("junk is not a key");
        assert!(err.to_string().contains("junk.pem"), "{err}");
    }
}
