//! The disk as the daemons see it, and whether the data directory is really mounted.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fleet_core::retention::Disk;
use nix::sys::statvfs::statvfs;

/// Why the disk could not be examined.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("unable to statvfs {path}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unable to stat {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Used and available bytes of the filesystem holding `path`. Available is `f_bavail` (what an
/// unprivileged daemon can write), not `f_bfree`.
///
/// # Errors
/// `statvfs` fails.
pub fn measure(path: &Path) -> Result<Disk, DiskError> {
    let s = statvfs(path).map_err(|source| DiskError::Statvfs {
        path: path.to_owned(),
        source,
    })?;
    let frsize = s.fragment_size().max(1);
    let blocks = s.blocks();
    let free = s.blocks_free();
    let avail = s.blocks_available();
    Ok(Disk {
        used_bytes: blocks.saturating_sub(free).saturating_mul(frsize),
        available_bytes: avail.saturating_mul(frsize),
    })
}

/// Whether `path` is the root of a mounted filesystem: its device differs from its parent's, or
/// it is its own parent (`/`).
///
/// # Errors
/// `path` or its parent cannot be examined.
pub fn is_mount_point(path: &Path) -> Result<bool, DiskError> {
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|source| DiskError::Stat {
            path: p.to_owned(),
            source,
        })
    };
    let me = stat(path)?;
    let parent = stat(&path.join(".."))?;
    Ok(me.dev() != parent.dev() || me.ino() == parent.ino())
}
