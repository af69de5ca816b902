//! The one way fleet's daemons and CLIs put a file on disk so that a power cut leaves either
//! the old or the new content, never a mix and never nothing.
//!
//! A write creates a fresh temp file `.NAME.tmp` beside the target (with the requested mode
//! from its first byte), writes the bytes, fsyncs them, gives the temp file the target's name
//! ([`Replace`]) and fsyncs the directory, so that the new name survives too:
//!
//! ```no_run
//! # fn demo() -> Result<(), fleet_durable::Error> {
//! use std::path::Path;
//! use fleet_durable::{Replace, WriteOptions};
//! fleet_durable::write_atomic(Path::new("/data/fleet/floor"), b"1.4.0\n", Replace::Rename)?;
//! // A secret that must not overwrite an existing one:
//! WriteOptions::new()
//!     .replace(Replace::Never)
//!     .mode(0o600)
//!     .create_parents()
//!     .write(Path::new("keys/offer.key.pem"), b"...")?;
//! # Ok(()) }
//! ```
//!
//! Files written in place (a recording segment in its buffer directory) are moved into place
//! with [`rename`], which fsyncs both directories; [`append`] adds to a journal;
//! [`sync_dir`] makes a create, rename or delete done by other means durable.
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

pub mod compat;
mod error;

pub use error::Error;

/// How the temp file takes the target's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Replace {
    /// `rename(2)` over whatever is there.
    #[default]
    Rename,
    /// `renameat2(RENAME_EXCHANGE)` when the target exists, so both names exist at every
    /// moment (on FAT a rename is not one atomic update); `rename(2)` where the file system or
    /// C library lacks it.
    Exchange,
    /// Never overwrite: an existing target is left alone and the write fails with
    /// [`Error::Exists`] (`renameat2(RENAME_NOREPLACE)`, else `link(2)`; both atomic).
    Never,
}

/// A durable write with options; [`write_atomic`] is the common case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteOptions {
    replace: Replace,
    mode: Option<u32>,
    create_parents: bool,
}

impl WriteOptions {
    /// Rename over the target, default file mode (0666 less the umask), the directory must
    /// exist.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            replace: Replace::Rename,
            mode: None,
            create_parents: false,
        }
    }

    /// How the new content takes the target's name.
    #[must_use]
    pub const fn replace(mut self, replace: Replace) -> Self {
        self.replace = replace;
        self
    }

    /// The file's permission bits, exactly (the umask does not apply). The temp file has them
    /// from its creation, so a secret is never readable by others, not even for a moment.
    #[must_use]
    pub const fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Creates missing parent directories first (they are not fsynced one by one: a power
    /// cut may lose a fresh directory along with the file, never leave a partial file).
    #[must_use]
    pub const fn create_parents(mut self) -> Self {
        self.create_parents = true;
        self
    }

    /// Replaces `path` with `bytes` durably (see the crate documentation).
    ///
    /// # Errors
    /// A step failed; the target then holds its old content (or still does not exist) and the
    /// temp file is removed where possible.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), Error> {
        write_with(&mut RealFs, path, bytes, self)
    }
}

/// Replaces `path` with `bytes` so that a power cut leaves either the old or the new content.
///
/// # Errors
/// A step failed; the target then holds its old content.
pub fn write_atomic(path: &Path, bytes: &[u8], replace: Replace) -> Result<(), Error> {
    WriteOptions::new().replace(replace).write(path, bytes)
}

/// fsyncs a directory so that a create, rename or delete in it survives a power cut.
///
/// # Errors
/// The directory cannot be opened or synced.
pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::SyncDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Moves a complete, already fsynced file to `to` (in the same file system) and fsyncs the
/// destination directory, then the source directory when it is another one: after a power cut
/// the file is under exactly one of the two names.
///
/// # Errors
/// The rename or a directory sync failed.
pub fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    fs::rename(from, to).map_err(|source| Error::Move {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })?;
    let to_dir = parent(to);
    sync_dir(&to_dir)?;
    let from_dir = parent(from);
    if from_dir != to_dir {
        sync_dir(&from_dir)?;
    }
    Ok(())
}

/// Appends `bytes` to `path` (created if missing) and fsyncs the data; when the file is new,
/// its directory is fsynced too.
///
/// # Errors
/// The file cannot be opened, written or synced.
pub fn append(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let err = |source| Error::Append {
        path: path.to_path_buf(),
        source,
    };
    let existed = fs::symlink_metadata(path).is_ok();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_data().map_err(err)?;
    if !existed {
        sync_dir(&parent(path))?;
    }
    Ok(())
}

/// The directory holding `path` (`.` for a bare name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temp file beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// What a replace step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// The temp name is gone (rename or no-clobber rename).
    Moved,
    /// The temp name still exists (it holds the old content after an exchange, or the new
    /// content after a link) and must be removed.
    TempLeft,
}

/// The file-system steps of a write, apart so the tests can fail each one in turn.
trait Steps {
    fn create_temp(&mut self, tmp: &Path, mode: Option<u32>) -> io::Result<File>;
    fn write_temp(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()>;
    fn sync_temp(&mut self, file: &File) -> io::Result<()>;
    fn open_dir(&mut self, dir: &Path) -> io::Result<File>;
    fn place(&mut self, dir: &File, tmp: &Path, path: &Path, how: Replace) -> io::Result<Placed>;
    fn sync_dir(&mut self, dir: &File) -> io::Result<()>;
    fn remove_temp(&mut self, tmp: &Path) -> io::Result<()>;
}

/// The real file system.
struct RealFs;

impl Steps for RealFs {
    fn create_temp(&mut self, tmp: &Path, mode: Option<u32>) -> io::Result<File> {
        let open = || {
            let mut o = OpenOptions::new();
            o.write(true).create_new(true);
            if let Some(mode) = mode {
                o.mode(mode);
            }
            o.open(tmp)
        };
        // A temp file left by a power cut is stale: start afresh, so that the mode given
        // applies from creation.
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(tmp)?;
                open()?
            }
            other => other?,
        };
        if let Some(mode) = mode {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        Ok(file)
    }

    fn write_temp(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }

    fn sync_temp(&mut self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    fn open_dir(&mut self, dir: &Path) -> io::Result<File> {
        File::open(dir)
    }

    fn place(&mut self, dir: &File, tmp: &Path, path: &Path, how: Replace) -> io::Result<Placed> {
        match how {
            Replace::Exchange
                if fs::symlink_metadata(path).is_ok()
                    && rename2(dir, tmp, path, Rename2::Exchange)? =>
            {
                Ok(Placed::TempLeft)
            }
            Replace::Rename | Replace::Exchange => fs::rename(tmp, path).map(|()| Placed::Moved),
            Replace::Never => match rename2(dir, tmp, path, Rename2::NoReplace)? {
                true => Ok(Placed::Moved),
                false => fs::hard_link(tmp, path).map(|()| Placed::TempLeft),
            },
        }
    }

    fn sync_dir(&mut self, dir: &File) -> io::Result<()> {
        dir.sync_all()
    }

    fn remove_temp(&mut self, tmp: &Path) -> io::Result<()> {
        fs::remove_file(tmp)
    }
}

fn write_with(
    steps: &mut impl Steps,
    path: &Path,
    bytes: &[u8],
    opts: &WriteOptions,
) -> Result<(), Error> {
    let dir = parent(path);
    if opts.create_parents {
        fs::create_dir_all(&dir).map_err(|source| Error::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    let tmp = temp_path(path);
    let temp_err = |source| Error::Temp {
        path: path.to_path_buf(),
        source,
    };
    let mut file = steps.create_temp(&tmp, opts.mode).map_err(temp_err)?;
    let written = steps
        .write_temp(&mut file, bytes)
        .and_then(|()| steps.sync_temp(&file));
    drop(file);
    if let Err(source) = written {
        let _ = steps.remove_temp(&tmp);
        return Err(temp_err(source));
    }
    let dir_file = match steps.open_dir(&dir) {
        Ok(d) => d,
        Err(source) => {
            let _ = steps.remove_temp(&tmp);
            return Err(Error::SyncDir { path: dir, source });
        }
    };
    let placed = match steps.place(&dir_file, &tmp, path, opts.replace) {
        Ok(p) => p,
        Err(source) => {
            let _ = steps.remove_temp(&tmp);
            return Err(if source.kind() == io::ErrorKind::AlreadyExists {
                Error::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                Error::Replace {
                    path: path.to_path_buf(),
                    source,
                }
            });
        }
    };
    let sync_err = |source| Error::SyncDir {
        path: dir.clone(),
        source,
    };
    steps.sync_dir(&dir_file).map_err(sync_err)?;
    if placed == Placed::TempLeft {
        steps.remove_temp(&tmp).map_err(temp_err)?;
        steps.sync_dir(&dir_file).map_err(sync_err)?;
    }
    Ok(())
}

/// The `renameat2(2)` flags used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rename2 {
    Exchange,
    NoReplace,
}

/// `renameat2(2)` of `tmp` to `path` in `dir`. `Ok(false)`: not supported here (file system,
/// kernel or C library); the caller falls back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn rename2(dir: &File, tmp: &Path, path: &Path, how: Rename2) -> io::Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::RenameFlags;
    let (Some(tmp_name), Some(name)) = (tmp.file_name(), path.file_name()) else {
        return Ok(false);
    };
    let flags = match how {
        Rename2::Exchange => RenameFlags::RENAME_EXCHANGE,
        Rename2::NoReplace => RenameFlags::RENAME_NOREPLACE,
    };
    match nix::fcntl::renameat2(dir, tmp_name, dir, name, flags) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn rename2(_dir: &File, _tmp: &Path, _path: &Path, _how: Rename2) -> io::Result<bool> {
    Ok(false)
}

#[cfg(test)]
mod tests;
