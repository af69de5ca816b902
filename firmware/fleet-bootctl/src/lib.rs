//! fleet-bootctl: the boot flows' thin I/O layer over the pure models in
//! `fleet_core::boot`, and RAUC's `bootloader=custom` backend.
//!
//! - [`TrybootBackend`]: Raspberry Pi 5 firmware tryboot (`autoboot.txt`, the attempt record
//!   on `/data`, the trial reboot command).
//! - [`UbootBackend`]: the U-Boot environment file, read and written like `fw_setenv`.
//!
//! Both implement [`fleet_core::ports::BootControl`]; every path is a parameter. Every write
//! is temp file, fsync, rename (an exchange where the file system allows), fsync directory.
#![forbid(unsafe_code)]

pub mod atomic;
pub mod config;
pub mod error;
mod lock;
pub mod tryboot;
pub mod uboot;
pub mod uenv;

pub use config::{Config, ConfigError};
pub use error::BootctlError;
pub use tryboot::{TrybootBackend, TrybootPaths};
pub use uboot::{UbootBackend, UbootPaths};

use fleet_core::ports::{BootControl, BootStatus};
use fleet_core::slot::Slot;

impl Config {
    /// RAUC `get-current`: the slot running now.
    pub fn booted(&self) -> Result<Slot, BootctlError> {
        match self {
            Config::Tryboot(t) => t.booted().map(|(slot, _)| slot),
            Config::Uboot(u) => u.booted(),
        }
    }

    /// RAUC `set-primary`.
    pub fn rauc_set_primary(&self, slot: Slot) -> Result<(), BootctlError> {
        match self {
            Config::Tryboot(t) => t.rauc_set_primary(slot),
            Config::Uboot(u) => u.rauc_set_primary(slot),
        }
    }

    /// RAUC `get-state`.
    pub fn is_bad(&self, slot: Slot) -> Result<bool, BootctlError> {
        match self {
            Config::Tryboot(t) => t.is_bad(slot),
            Config::Uboot(u) => u.is_bad(slot),
        }
    }

    /// Early in every boot. Returns whether the station is rebooting into a trial.
    pub fn boot_check(&self) -> Result<bool, BootctlError> {
        match self {
            Config::Tryboot(t) => t.boot_check(),
            Config::Uboot(u) => u.boot_check().map(|()| false),
        }
    }

    #[must_use]
    pub fn flow_name(&self) -> &'static str {
        match self {
            Config::Tryboot(_) => "tryboot",
            Config::Uboot(_) => "uboot",
        }
    }
}

impl BootControl for Config {
    type Error = BootctlError;

    fn status(&self) -> Result<BootStatus, BootctlError> {
        match self {
            Config::Tryboot(t) => t.status(),
            Config::Uboot(u) => u.status(),
        }
    }

    fn arm_trial(&self, slot: Slot) -> Result<(), BootctlError> {
        match self {
            Config::Tryboot(t) => t.arm_trial(slot),
            Config::Uboot(u) => u.arm_trial(slot),
        }
    }

    fn mark_good(&self, slot: Slot) -> Result<(), BootctlError> {
        match self {
            Config::Tryboot(t) => t.mark_good(slot),
            Config::Uboot(u) => u.mark_good(slot),
        }
    }

    fn mark_bad(&self, slot: Slot) -> Result<(), BootctlError> {
        match self {
            Config::Tryboot(t) => t.mark_bad(slot),
            Config::Uboot(u) => u.mark_bad(slot),
        }
    }

    fn set_primary(&self, slot: Slot) -> Result<(), BootctlError> {
        match self {
            Config::Tryboot(t) => t.set_primary(slot),
            Config::Uboot(u) => u.set_primary(slot),
        }
    }
}
