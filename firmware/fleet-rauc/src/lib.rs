//! fleet's [`Installer`](fleet_core::ports::Installer) over RAUC's D-Bus API.
//!
//! [`RaucClient`] talks to `de.pengutronix.rauc.Installer` on a bus whose address the caller
//! gives (the system bus on a station, a private bus in tests). It installs bundles with
//! `InstallBundle` (passing `transaction-id` and `require-manifest-hash` where the RAUC in use
//! knows them), passes RAUC's `Progress` on as it changes, waits for `Completed` and reports
//! RAUC's `LastError` when RAUC refuses a bundle. If RAUC's bus name changes owner or disappears
//! during an install, the install ends at once with the retryable [`RaucError::Restarted`].
//! It also reads slot status and the primary slot and marks slots good or bad, for the updater
//! and the recovery CLI. See `docs/adr/0002-rauc-dbus-interface.md`.
#![forbid(unsafe_code)]

mod error;
mod installer;
mod limits;
mod proxy;
mod slots;

pub use error::RaucError;
pub use installer::{
    ManifestHashCheck, MarkState, Marked, RaucClient, RaucOptions, RaucStatus, SYSTEM_BUS_ADDRESS,
};
pub use limits::{Limits, clip};
pub use proxy::{INTERFACE, PATH, SERVICE};
pub use slots::{RaucSlot, SlotTable};
