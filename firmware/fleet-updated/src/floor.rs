//! The version floor: `<data>/fleet/update/version-floor`, one semantic version that the
//! bundles' `install-check` hook refuses to go below (`bundles/hooks/install-check`). The
//! daemon writes the committed version there; the floor only ever rises.
use std::path::Path;

use semver::Version;

use crate::durable;

/// Largest floor file read, in bytes.
const MAX_FLOOR_BYTES: usize = 256;

/// The floor in `path`: `Ok(None)` when there is none (or it is not a version, which the hook
/// refuses anyway; raising it repairs it).
pub fn read(path: &Path) -> std::io::Result<Option<Version>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_FLOOR_BYTES)]);
            Ok(text
                .lines()
                .next()
                .and_then(|l| Version::parse(l.trim()).ok()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `version` to `path` (temp file, fsync, rename, fsync directory) unless the floor is
/// already at or above it. Returns whether it wrote.
pub fn raise(path: &Path, version: &Version) -> std::io::Result<bool> {
    if read(path)?.is_some_and(|floor| floor >= *version) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    durable::write_atomic(path, format!("{version}\n").as_bytes())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_only_rises() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet/update/version-floor");
        let v = |s: &str| Version::parse(s).expect("version");
        assert_eq!(read(&path).expect("read"), None);
        assert!(raise(&path, &v("1.0.0")).expect("write"));
        assert!(raise(&path, &v("2.0.0")).expect("write"));
        assert!(!raise(&path, &v("1.5.0")).expect("kept"));
        assert!(!raise(&path, &v("2.0.0")).expect("kept"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "2.0.0\n");
    }

    #[test]
    fn a_garbage_floor_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("version-floor");
        std::fs::write(&path, "banana\n").expect("write");
        assert!(raise(&path, &Version::new(1, 2, 3)).expect("write"));
        assert_eq!(read(&path).expect("read"), Some(Version::new(1, 2, 3)));
    }
}
