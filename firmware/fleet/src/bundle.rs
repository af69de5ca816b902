//! What the CLI checks about a bundle file itself before handing it to RAUC. RAUC does the real
//! verification (CMS signature against the keyring, then the bundle's install-check hook:
//! compatible and version floor); this only refuses what production stations must never feed
//! RAUC: a `plain` bundle (its payload is checked once up front, not as it is read), and files
//! too large to be a bundle.
//!
//! Layout of every RAUC bundle: `payload | CMS | CMS length (u64, big endian)`. A `verity` or
//! `crypt` bundle carries its manifest inside the CMS (encapsulated content), with a
//! `[bundle]` section naming the format; a `plain` bundle's CMS is a detached signature with no
//! manifest. The CMS is not trusted here: RAUC checks it. Reading it only decides whether the
//! file is even offered to RAUC.
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::limits::MAX_CMS_BYTES;

/// The bundle format as the file declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleFormat {
    Plain,
    Verity,
    Crypt,
}

impl BundleFormat {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BundleFormat::Plain => "plain",
            BundleFormat::Verity => "verity",
            BundleFormat::Crypt => "crypt",
        }
    }
}

/// A file that cannot be a bundle, or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("unable to read bundle {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to use bundle {path}: it is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("unable to use bundle {path}: {size} bytes is more than the limit of {limit}")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("unable to read the format of bundle {path}: {reason}")]
    Layout { path: PathBuf, reason: String },
}

/// Size of a bundle file, refused when it is not a regular file or above `limit`.
pub fn checked_size(path: &Path, limit: u64) -> Result<u64, BundleError> {
    let meta = std::fs::metadata(path).map_err(|source| BundleError::Read {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(BundleError::NotAFile {
            path: path.to_owned(),
        });
    }
    if meta.len() > limit {
        return Err(BundleError::TooLarge {
            path: path.to_owned(),
            size: meta.len(),
            limit,
        });
    }
    Ok(meta.len())
}

/// Reads the bundle's declared format from its CMS trailer.
pub fn format_of(path: &Path) -> Result<BundleFormat, BundleError> {
    let read_err = |source| BundleError::Read {
        path: path.to_owned(),
        source,
    };
    let layout = |reason: String| BundleError::Layout {
        path: path.to_owned(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size < 8 {
        return Err(layout(format!("{size} bytes is too short")));
    }
    file.seek(SeekFrom::Start(size - 8)).map_err(read_err)?;
    let mut tail = [0u8; 8];
    file.read_exact(&mut tail).map_err(read_err)?;
    let cms_len = u64::from_be_bytes(tail);
    if cms_len == 0 || cms_len > MAX_CMS_BYTES || cms_len > size - 8 {
        return Err(layout(format!(
            "the signature length {cms_len} does not fit the file (truncated or not a bundle)"
        )));
    }
    file.seek(SeekFrom::Start(size - 8 - cms_len))
        .map_err(read_err)?;
    let mut cms = Vec::new();
    file.take(cms_len).read_to_end(&mut cms).map_err(read_err)?;
    if cms.first() != Some(&0x30) {
        return Err(layout("the signature is not a CMS structure".into()));
    }
    Ok(format_in_cms(&cms))
}

/// The format named by an encapsulated manifest, `Plain` when there is none.
#[must_use]
pub fn format_in_cms(cms: &[u8]) -> BundleFormat {
    let text = String::from_utf8_lossy(cms);
    let Some(start) = text.find("[bundle]") else {
        return BundleFormat::Plain;
    };
    for line in text[start + "[bundle]".len()..].lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break;
        }
        if let Some(value) = line.strip_prefix("format=") {
            return match value.trim() {
                "verity" => BundleFormat::Verity,
                "crypt" => BundleFormat::Crypt,
                _ => BundleFormat::Plain,
            };
        }
    }
    BundleFormat::Plain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(cms: &[u8]) -> tempfile::NamedTempFile {
        let mut bytes = vec![0u8; 4096];
        bytes.extend_from_slice(cms);
        bytes.extend_from_slice(&(cms.len() as u64).to_be_bytes());
        let f = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(f.path(), bytes).expect("write");
        f
    }

    #[test]
    fn an_encapsulated_manifest_names_the_format_and_a_detached_signature_is_plain() {
        let verity = bundle_with(
            b"\x30\x82..[update]\ncompatible=x\n\n[bundle]\nformat=verity\nverity-hash=ab\n\x00\x01",
        );
        assert_eq!(format_of(verity.path()).ok(), Some(BundleFormat::Verity));
        let plain = bundle_with(b"\x30\x82\x01\x02 signer certificate bytes");
        assert_eq!(format_of(plain.path()).ok(), Some(BundleFormat::Plain));
        let crypt = bundle_with(b"\x30[bundle]\r\nformat=crypt\r\n");
        assert_eq!(format_of(crypt.path()).ok(), Some(BundleFormat::Crypt));
    }

    #[test]
    fn a_truncated_file_has_no_readable_format() {
        let f = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(f.path(), vec![0xffu8; 100]).expect("write");
        assert!(matches!(
            format_of(f.path()),
            Err(BundleError::Layout { .. })
        ));
    }
}
