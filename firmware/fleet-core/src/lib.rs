//! The functional core of fleet.
//!
//! **fleet-core does not know about files, clocks or sockets.** Every decision that can brick a
//! station or delete a recording is a pure function here: the update state machine (`update`), the offer-signing
//! key set and its rotation (`trust`),
//! offer admission (`offer`), wave membership (`wave`), boot-slot models (`boot`), the trial's health gate (`health::gate`), signed
//! configuration changes (`config_push`), the retention plan (`retention`) and the upload
//! decisions (`upload`). Time enters as a value ([`time::Now`]); wall-clock time is
//! `None` until the shell knows the clock is trusted.
//!
//! The port traits the shells implement live in [`ports`].
#![forbid(unsafe_code)]

pub mod boot;
pub mod clock;
pub mod config_push;
pub mod health;
pub mod ids;
pub mod ports;
pub mod retention;
pub mod rollout;
pub mod slot;
pub mod station;
pub mod time;
pub mod trust;
pub mod update;
pub mod upload;
