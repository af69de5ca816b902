//! Simulated station adapters: a station with no hardware, for tests and the demo.
//!
//! Everything lives under one root directory (never `/`):
//!
//! ```text
//! <root>/slots/A.img      slot A's image (the payload of the bundle installed there)
//! <root>/slots/A.json     what the slot holds: version, behaviour, payload sha256 and size
//! <root>/boot/env.json    the simulated bootloader's environment (BOOT_ORDER, BOOT_x_LEFT, ...)
//! ```
//!
//! - [`SimBootloader`] implements [`fleet_core::ports::BootControl`] with U-Boot-like attempt
//!   counters persisted in `env.json`; [`SimBootloader::boot`] is the "power on": it decrements
//!   the trial slot's attempts, skips a slot whose image cannot boot and falls back to the other
//!   slot once the trial slot is out of attempts.
//! - [`SimInstaller`] implements [`fleet_core::ports::Installer`]: it writes a simulated bundle's
//!   payload into the inactive slot's image and arms that slot for a trial.
//! - [`SimHealth`] is the health check: it fails when the booted image says so
//!   ([`Behaviour::Unhealthy`]) or while a configured "fail" file exists.
//! - [`bundle`] reads and writes the simulated bundle format.
//!
//! A "reboot" is not done here: the daemon returns (or its process exits with a documented
//! code) and the runner calls [`SimBootloader::boot`] before starting it again.
#![forbid(unsafe_code)]

pub mod boot;
pub mod bundle;
pub mod durable;
pub mod health;
pub mod install;

pub use boot::{BootEnv, SimBootloader};
pub use bundle::{Behaviour, BundleHeader};
pub use health::{HealthFailure, SimHealth};
pub use install::SimInstaller;

use std::path::PathBuf;

/// A failed simulated-station operation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(
        "unable to install into slot {requested}: slot {booted} runs, so only its other slot may be written"
    )]
    WrongSlot {
        requested: fleet_core::slot::Slot,
        booted: fleet_core::slot::Slot,
    },
    #[error("unable to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("unable to boot: no slot is bootable")]
    NoBootableSlot,
    #[error("unable to make slot {slot} primary: it is marked bad")]
    SlotBad { slot: fleet_core::slot::Slot },
    #[error("unable to install {path}: bundle is for {found:?}, this station is {expected:?}")]
    Incompatible {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("unable to install {path}: {reason}")]
    BadBundle { path: PathBuf, reason: String },
}

impl fleet_core::ports::PortError for SimError {
    fn is_retryable(&self) -> bool {
        matches!(self, SimError::Read { .. } | SimError::Write { .. })
    }
}
