//! The retention plan (pure): which recordings to delete, and why, given a snapshot of the index,
//! the policy, the disk usage, the write rate and the time.
//!
//! **This module does not know about files, clocks or databases.** The shell
//! (`fleet-retentiond`) measures the disk with `statvfs` (`f_bavail`, the space the daemons can
//! actually use), loads a snapshot of the index, calls [`plan`], and carries out the
//! [`Deletion`]s it returns.
//!
//! Invariants (property-tested in `tests`):
//! - below the panic tier, with an uploader configured, no recording that is not uploaded is
//!   ever planned for deletion;
//! - a plan never holds more deletions than [`Policy::max_deletions_per_cycle`];
//! - while the wall clock is untrusted (`Now::wall_unix_s == None`) no decision depends on a
//!   recording's wall-clock start time: the order is the segment sequence;
//! - a plan frees at least the bytes it needs whenever the eligible recordings, within the batch
//!   limit, hold that much.
mod plan;
mod policy;

pub use plan::{Deletion, Plan, Reason, Tier, plan, tier_for};
pub use policy::{Disk, Permille, Policy, PolicyError, Recording, RecordingId};

#[cfg(test)]
mod tests;
