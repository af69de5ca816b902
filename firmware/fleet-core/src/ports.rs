//! Ports: the traits the imperative shells implement. The core only names them; no
//! implementation with I/O lives in this crate.
//!
//! - [`BootControl`]: the boot flow (Pi 5 tryboot, U-Boot env, simulated). Synchronous: every
//!   implementation is a few small file writes; async callers use `spawn_blocking`.
//! - [`Installer`]: writes a verified bundle into the inactive slot and makes that slot primary
//!   for a trial boot (RAUC over D-Bus, or the simulated installer).
//!
//! Implementations: `fleet-bootctl` (boot flows), `fleet-rauc` (RAUC), `fleet-sim` (simulated).
use std::future::Future;
use std::path::Path;

use crate::ids::Version;
use crate::slot::{Slot, SlotHealth};

/// Errors every port error exposes so the shell can decide to retry.
pub trait PortError: std::error::Error + Send + Sync + 'static {
    /// True when the same call may succeed later (a restarting service, a busy device).
    fn is_retryable(&self) -> bool;

    /// The slot a failed install left armed (primary for a trial) without a verdict on what it
    /// holds, if any. The installer never disarms it itself: the update engine gives the slot
    /// up (marks it bad) through the boot flow.
    fn armed_slot(&self) -> Option<Slot> {
        None
    }
}

/// The state of one slot as the boot flow keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: Slot,
    pub health: SlotHealth,
    /// Boot attempts the boot flow still grants this slot (meaningful while on `Trial`).
    pub attempts_left: u8,
    /// Version installed in the slot, when known.
    pub version: Option<Version>,
}

/// A consistent snapshot of the boot flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootStatus {
    /// The slot running now.
    pub booted: Slot,
    /// The slot the boot flow will try first on the next boot.
    pub primary: Slot,
    pub slots: [SlotStatus; 2],
}

impl BootStatus {
    #[must_use]
    pub fn slot(&self, slot: Slot) -> &SlotStatus {
        match slot {
            Slot::A => &self.slots[0],
            Slot::B => &self.slots[1],
        }
    }
}

/// The boot flow. Every method is one atomic, power-loss-safe change.
pub trait BootControl: Send + Sync {
    type Error: PortError;

    /// Reads the current state of both slots and which one runs now.
    fn status(&self) -> Result<BootStatus, Self::Error>;

    /// Makes `slot` primary for a trial: the next boot tries it with the configured number of
    /// attempts and falls back to the other slot when they run out.
    fn arm_trial(&self, slot: Slot) -> Result<(), Self::Error>;

    /// Commits the booted slot: it becomes primary and good. Callers must only pass the booted
    /// slot (the update engine guarantees it).
    fn mark_good(&self, slot: Slot) -> Result<(), Self::Error>;

    /// Marks `slot` bad: it is not booted again; the other slot becomes primary.
    fn mark_bad(&self, slot: Slot) -> Result<(), Self::Error>;

    /// Makes `slot` primary without a trial (operator rollback to a good slot).
    fn set_primary(&self, slot: Slot) -> Result<(), Self::Error>;
}

/// Progress of a running install, as the installer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallProgress {
    /// 0..=100.
    pub percent: u8,
    pub message: String,
}

/// What to install.
#[derive(Debug, Clone, Copy)]
pub struct InstallRequest<'a> {
    /// A complete bundle on `/data` whose bytes the station has already verified.
    pub bundle: &'a Path,
    /// The slot to write: the inactive one, chosen by the update engine. An installer never
    /// chooses: it refuses a request whose slot is not the inactive slot.
    pub slot: Slot,
    /// Id of this install, echoed in logs and reports (RAUC `transaction-id`).
    pub transaction: &'a str,
    /// The manifest hash the offer promised, when the installer can check it (RAUC
    /// `require-manifest-hash`).
    pub manifest_hash: Option<&'a str>,
}

/// A finished install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// The slot that was written (the inactive one) and armed for a trial boot.
    pub slot: Slot,
    pub version: Version,
}

/// Writes bundles into the inactive slot.
pub trait Installer: Send + Sync {
    type Error: PortError;

    /// Installs the bundle into `request.slot` (refused unless it is the inactive slot) and
    /// arms it for one trial boot. Reports
    /// progress through `progress` as it happens. Must not return `Ok` unless the slot was
    /// written completely; on `Err` the inactive slot is not primary.
    fn install(
        &self,
        request: InstallRequest<'_>,
        progress: &(dyn Fn(InstallProgress) + Send + Sync),
    ) -> impl Future<Output = Result<Installed, Self::Error>> + Send;
}
