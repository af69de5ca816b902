//! The one way the station's programs write state: temp file, fsync, rename, fsync directory.
//! (fleet-updated and fleet-sim use it too.)
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// How the temp file replaces the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// `rename(2)`.
    Rename,
    /// `renameat2(RENAME_EXCHANGE)` when the target exists (both names exist at every moment,
    /// which matters on FAT, where a rename is not one atomic update), falling back to
    /// `rename(2)` where the file system or C library lacks it.
    Exchange,
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces `path` with `bytes` so that a power cut leaves either the old or the new content.
pub fn write_atomic(path: &Path, bytes: &[u8], replace: Replace) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = temp_path(path);
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    let dir_file = File::open(&dir)?;
    if replace == Replace::Exchange && path.exists() && exchange(&dir_file, &tmp, path)? {
        dir_file.sync_all()?;
        // The temp name now holds the old content.
        fs::remove_file(&tmp)?;
        dir_file.sync_all()?;
        return Ok(());
    }
    fs::rename(&tmp, path)?;
    dir_file.sync_all()
}

/// fsyncs a directory so that a create, rename or delete in it survives a power cut.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `Ok(false)`: exchange not supported here, rename instead.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn exchange(dir: &File, tmp: &Path, path: &Path) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{RenameFlags, renameat2};
    let (Some(tmp_name), Some(name)) = (tmp.file_name(), path.file_name()) else {
        return Ok(false);
    };
    match renameat2(dir, tmp_name, dir, name, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn exchange(_dir: &File, _tmp: &Path, _path: &Path) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("autoboot.txt");
        for (replace, text) in [
            (Replace::Exchange, "one"),
            (Replace::Exchange, "two"),
            (Replace::Rename, "three"),
        ] {
            write_atomic(&path, text.as_bytes(), replace).expect("write");
            assert_eq!(fs::read_to_string(&path).expect("read"), text);
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("autoboot.txt")]);
    }
}
