//! Power-loss-safe file writes: temp file, fsync, rename, fsync directory, as
//! [`fleet_bootctl::atomic`] does them for every state file on the station.
use std::path::Path;

pub use fleet_bootctl::atomic::sync_dir;
use fleet_bootctl::atomic::{Replace, write_atomic as replace_file};

/// Replaces `path` with `bytes`: after a power cut the file holds the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file(path, bytes, Replace::Rename)
}
