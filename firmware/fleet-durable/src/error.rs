use std::io;
use std::path::{Path, PathBuf};

/// A durable write, move, append or directory sync that did not happen. Every variant names the
/// file or directory it is about; after any of them the target still holds its old content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unable to create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to write the temporary file for {path}")]
    Temp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to create {path}: it already exists")]
    Exists { path: PathBuf },
    #[error("unable to put the new {path} in place")]
    Replace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to sync directory {path}")]
    SyncDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to move {from} to {to}")]
    Move {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("unable to append to {path}")]
    Append {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The file or directory the failed step was about (for a move, its destination).
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Error::CreateDir { path, .. }
            | Error::Temp { path, .. }
            | Error::Exists { path }
            | Error::Replace { path, .. }
            | Error::SyncDir { path, .. }
            | Error::Append { path, .. } => path,
            Error::Move { to, .. } => to,
        }
    }

    /// The kind of the underlying I/O error (`AlreadyExists` for [`Error::Exists`]).
    #[must_use]
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::Exists { .. } => io::ErrorKind::AlreadyExists,
            Error::CreateDir { source, .. }
            | Error::Temp { source, .. }
            | Error::Replace { source, .. }
            | Error::SyncDir { source, .. }
            | Error::Move { source, .. }
            | Error::Append { source, .. } => source.kind(),
        }
    }

    /// The underlying I/O error alone, for a caller whose own error already names the path
    /// and the step (`AlreadyExists` for [`Error::Exists`]).
    #[must_use]
    pub fn into_source(self) -> io::Error {
        match self {
            Error::Exists { .. } => io::ErrorKind::AlreadyExists.into(),
            Error::CreateDir { source, .. }
            | Error::Temp { source, .. }
            | Error::Replace { source, .. }
            | Error::SyncDir { source, .. }
            | Error::Move { source, .. }
            | Error::Append { source, .. } => source,
        }
    }
}

/// For callers whose own error carries an `std::io::Error`: the kind is kept, and the message
/// is the whole story (the step, the path, then the system's reason), since an
/// `std::io::Error` made from a message has no source of its own.
impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = e.kind();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        io::Error::new(kind, text)
    }
}
