//! One writer at a time: RAUC, the updater and the console CLI may all call in at once.
use std::fs::{self, File, OpenOptions};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::BootctlError;

/// Holds an exclusive `flock` on the lock file until dropped.
#[derive(Debug)]
pub struct Held(#[allow(dead_code)] Flock<File>);

pub fn exclusive(path: &Path) -> Result<Held, BootctlError> {
    let err = |source| BootctlError::Lock {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(err)?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map(Held)
        .map_err(|(_, errno)| err(std::io::Error::from(errno)))
}
