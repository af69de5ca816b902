//! Durable writes now live in the `fleet-durable` crate; this re-export keeps the callers that
//! still use `fleet_bootctl::atomic` (fleet-updated, fleet-sim, fleet-testkit) compiling until
//! they switch to `fleet_durable` directly. New code uses `fleet_durable`.
pub use fleet_durable::compat::{Replace, sync_dir, write_atomic};
