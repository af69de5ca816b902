//! fleet-retentiond: the recording index and the disk-retention supervisor.
//!
//! The decisions live in `fleet_core::retention` (pure); this crate is the shell around them:
//! the SQLite index ([`index`]), the recordings on disk ([`archive`], [`name`], [`wav`]), the
//! disk ([`disk`]), startup reconciliation ([`reconcile`]), filesystem events ([`watch`]), the
//! daemon ([`daemon`], [`run`]), panic without the index ([`emergency`]) and the ballast.
//! See `docs/reference/retentiond.md`.

pub mod archive;
pub mod ballast;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod emergency;
pub mod index;
pub mod name;
pub mod reconcile;
pub mod run;
pub mod watch;
pub mod wav;
