//! Cutting a bundle into chunks with a manifest, and checking chunks and the whole file.
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use fleet_core::ids::Version;
use fleet_core::update::{BundleId, Sha256Digest, VerifyFailure};

use crate::limits::Limits;
use crate::payload::{BundleManifest, ManifestError};

/// A chunk or file that does not match its manifest, or a file that cannot be chunked.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("unable to accept chunk {index}: the manifest has {count} chunks")]
    IndexOutOfRange { index: u32, count: u32 },
    #[error("unable to accept chunk {index}: {actual} bytes, expected {expected}")]
    WrongLength {
        index: u32,
        expected: u32,
        actual: usize,
    },
    #[error("unable to accept chunk {index}: sha256 mismatch")]
    HashMismatch { index: u32 },
    #[error("unable to read bundle: {0}")]
    Read(#[source] io::Error),
    #[error("unable to build manifest: {0}")]
    Manifest(#[from] ManifestError),
}

fn digest(bytes: &[u8]) -> Sha256Digest {
    Sha256Digest::from_bytes(Sha256::digest(bytes).into())
}

/// Reads a whole bundle from `reader` and describes it: bundle id, size and per-chunk hashes.
/// The result is validated against `limits` (size, chunk count, chunk size, file name).
pub fn build_manifest<R: Read>(
    mut reader: R,
    chunk_size: u32,
    compatible: &str,
    version: Version,
    file_name: &str,
    limits: &Limits,
) -> Result<BundleManifest, ChunkError> {
    if chunk_size == 0 || chunk_size as usize > limits.max_chunk_bytes {
        return Err(ManifestError(format!("chunk-size {chunk_size} is out of range")).into());
    }
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; chunk_size as usize];
    loop {
        let n = read_full(&mut reader, &mut buf).map_err(ChunkError::Read)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > limits.max_bundle_bytes {
            return Err(ManifestError(format!(
                "bundle is above the limit of {} bytes",
                limits.max_bundle_bytes
            ))
            .into());
        }
        whole.update(&buf[..n]);
        chunks.push(digest(&buf[..n]));
        if n < buf.len() {
            break;
        }
    }
    let manifest = BundleManifest {
        bundle_id: BundleId::from_bytes(whole.finalize().into()),
        size,
        chunk_size,
        chunks,
        compatible: compatible.to_owned(),
        version,
        file_name: file_name.to_owned(),
    };
    manifest.validate(limits)?;
    Ok(manifest)
}

/// Fills `buf` as far as the reader allows; returns the bytes read (short only at EOF).
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Splits in-memory bundle bytes into the chunks a manifest with `chunk_size` describes.
pub fn split(bytes: &[u8], chunk_size: u32) -> impl Iterator<Item = &[u8]> {
    bytes.chunks((chunk_size as usize).max(1))
}

/// Checks one received chunk against the manifest: index in range, exact length, SHA-256.
pub fn verify_chunk(manifest: &BundleManifest, index: u32, bytes: &[u8]) -> Result<(), ChunkError> {
    let (_, len) = manifest
        .chunk_range(index)
        .ok_or(ChunkError::IndexOutOfRange {
            index,
            count: manifest.chunk_count(),
        })?;
    if bytes.len() != len as usize {
        return Err(ChunkError::WrongLength {
            index,
            expected: len,
            actual: bytes.len(),
        });
    }
    if digest(bytes) != manifest.chunks[index as usize] {
        return Err(ChunkError::HashMismatch { index });
    }
    Ok(())
}

/// Hashes a whole assembled bundle and checks it is `size` bytes with SHA-256 `bundle_id`.
/// Reads at most `size + 1` bytes. The error is the core's [`VerifyFailure`], ready for
/// `Event::BundleVerifyFailed`.
pub fn verify_bundle<R: Read>(
    reader: R,
    bundle_id: &BundleId,
    size: u64,
) -> Result<(), VerifyFailure> {
    let mut h = Sha256::new();
    let mut limited = reader.take(size.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(VerifyFailure::Io {
                    detail: fleet_core::update::offer::truncate(&e.to_string(), 200),
                });
            }
        };
        total += n as u64;
        h.update(&buf[..n]);
    }
    if total != size {
        return Err(VerifyFailure::SizeMismatch {
            expected: size,
            actual: total,
        });
    }
    let actual = Sha256Digest::from_bytes(h.finalize().into());
    if actual != *bundle_id {
        return Err(VerifyFailure::HashMismatch { actual });
    }
    Ok(())
}
