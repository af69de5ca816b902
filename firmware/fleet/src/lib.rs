//! `fleet`: the station's recovery CLI for the serial console.
//!
//! Works with no network and a read-only root: it reads the boot flow through `fleet-bootctl`'s
//! library, talks to RAUC over D-Bus through `fleet-rauc`, reads the updater's journal on the
//! data partition, and writes only through those (and, for `factory-reset`, under
//! `<data>/fleet/`). Every path comes from [`config::Config`].
//!
//! Exit codes: [`EXIT_OK`] 0 done, [`EXIT_FAILED`] 1 failed, [`EXIT_USAGE`] 2 bad usage or
//! invalid configuration, [`EXIT_REFUSED`] 3 refused for safety (or not confirmed): nothing
//! was changed.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod config;
pub mod limits;
pub mod pending;
pub mod reset;
pub mod system;
pub mod text;

/// Done.
pub const EXIT_OK: u8 = 0;
/// Something failed (RAUC refused a bundle, a file could not be written).
pub const EXIT_FAILED: u8 = 1;
/// Bad usage or invalid configuration.
pub const EXIT_USAGE: u8 = 2;
/// Refused for safety, or the confirmation was not given: nothing was changed.
pub const EXIT_REFUSED: u8 = 3;
