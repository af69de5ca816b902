//! The `std::io::Result` forms of [`write_atomic`](crate::write_atomic) and
//! [`sync_dir`](crate::sync_dir) with the signatures `fleet_bootctl::atomic` had, for callers
//! whose own error wraps an `std::io::Error` and that have not switched to [`Error`] yet. The
//! error message still names the path; the kind is the underlying one.
use std::io;
use std::path::Path;

pub use crate::Replace;

/// [`crate::write_atomic`], with the error as an `std::io::Error`.
///
/// # Errors
/// As [`crate::write_atomic`].
pub fn write_atomic(path: &Path, bytes: &[u8], replace: Replace) -> io::Result<()> {
    crate::write_atomic(path, bytes, replace).map_err(io::Error::from)
}

/// [`crate::sync_dir`], with the error as an `std::io::Error`.
///
/// # Errors
/// As [`crate::sync_dir`].
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::sync_dir(dir).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_the_kind_and_name_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("gone");
        let e = sync_dir(&missing).expect_err("no such directory");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        let text = e.to_string();
        assert!(text.starts_with("unable to sync directory "), "{text}");
        assert!(text.contains("gone"), "{text}");
        // The system's reason is kept in the message.
        assert!(text.contains("No such file"), "{text}");
    }
}
