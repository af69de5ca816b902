use std::io;
use std::path::PathBuf;

use fleet_core::boot::Rejected;
use fleet_core::boot::autoboot::AutobootError;
use fleet_core::ports::PortError;

use crate::uenv::EnvFormatError;

/// Every way a boot backend fails. Each variant names the file or command involved.
#[derive(Debug, thiserror::Error)]
pub enum BootctlError {
    #[error("unable to read {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("unable to write {path}")]
    Write { path: PathBuf, source: io::Error },
    #[error("unable to lock {path}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("unable to parse {path}")]
    Autoboot {
        path: PathBuf,
        source: AutobootError,
    },
    #[error("unable to read the U-Boot env {path}")]
    Env {
        path: PathBuf,
        source: EnvFormatError,
    },
    #[error("unable to determine the booted slot from {path}: {reason}")]
    Booted { path: PathBuf, reason: String },
    #[error("unable to {operation}")]
    Rejected {
        operation: &'static str,
        source: Rejected,
    },
    #[error("unable to run the trial reboot command {command:?}")]
    RebootSpawn {
        command: Vec<String>,
        source: io::Error,
    },
    #[error("unable to reboot into the trial: {command:?} exited with {status}")]
    RebootFailed {
        command: Vec<String>,
        status: String,
    },
}

impl PortError for BootctlError {
    fn is_retryable(&self) -> bool {
        match self {
            BootctlError::Read { source, .. }
            | BootctlError::Write { source, .. }
            | BootctlError::Lock { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::ResourceBusy
            ),
            BootctlError::RebootFailed { .. } | BootctlError::RebootSpawn { .. } => true,
            BootctlError::Autoboot { .. }
            | BootctlError::Env { .. }
            | BootctlError::Booted { .. }
            | BootctlError::Rejected { .. } => false,
        }
    }
}
