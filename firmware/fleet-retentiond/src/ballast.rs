//! The ballast: a preallocated file released when the disk is full, so the index can still
//! commit (and the recorder can still write) while the plan frees space.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use nix::fcntl::{FallocateFlags, fallocate};

/// Whether the ballast is in place.
///
/// # Errors
/// Never for a missing file; other metadata errors are returned.
pub fn present(path: &Path, bytes: u64) -> std::io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len() >= bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the ballast with real blocks (fallocate, or zeros where unsupported).
/// On failure (disk full) the partial file is removed.
///
/// # Errors
/// The file cannot be created or filled.
pub fn create(path: &Path, bytes: u64) -> std::io::Result<()> {
    let result = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)?;
        let len = i64::try_from(bytes).unwrap_or(i64::MAX);
        if fallocate(&f, FallocateFlags::empty(), 0, len).is_err() {
            let zeros = vec![0u8; 1 << 20];
            let mut left = bytes;
            while left > 0 {
                let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
                f.write_all(&zeros[..n])?;
                left -= n as u64;
            }
        }
        f.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result?;
    if let Some(dir) = path.parent() {
        fleet_durable::sync_dir(dir)?;
    }
    Ok(())
}

/// Deletes the ballast. Returns whether it was there.
///
/// # Errors
/// The unlink fails for another reason than absence.
pub fn release(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
