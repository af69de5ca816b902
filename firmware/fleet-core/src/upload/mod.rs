//! Upload decisions (pure): which recording goes next, when a failed one is tried again, when it
//! is parked (dead-letter), whether the link may be used now (upload windows, an update
//! download), how many bytes the bandwidth budget allows, and whether a recording may be marked
//! uploaded.
//!
//! **This module does not know about files, clocks, sockets or randomness.** The shell
//! (`fleet-uploaderd`) reads the index and its state file, measures time, draws the jitter, and
//! carries out what these functions return.
//!
//! Invariants (property-tested in `tests`):
//! - **a recording is never marked uploaded before the remote confirmed its size and checksum**
//!   ([`may_mark_uploaded`] answers [`MarkDecision::Mark`] only for a confirmation that matches
//!   the local object);
//! - a backoff never exceeds its cap and never falls below half of it (equal jitter);
//! - a recording is parked exactly when its failures reach `dead_letter_after`;
//! - the queue never picks a recording that is parked and not yet due, deleted, or already
//!   uploaded;
//! - over any run, the bandwidth budget grants at most `burst + rate * elapsed` bytes.
mod budget;
mod confirm;
mod queue;
mod retry;
mod window;

pub use budget::{Budget, Grant};
pub use confirm::{Checksum, LocalObject, MarkDecision, RemoteConfirmation, may_mark_uploaded};
pub use queue::{Candidate, LinkGate, Order, Pick, WaitReason, pick_next};
pub use retry::{
    Attempts, Failure, FailureScope, RetryPolicy, RetryPolicyError, after_failure, backoff_ms,
};
pub use window::{MinuteOfDay, UntrustedClock, Window, WindowError, window_open};

#[cfg(test)]
mod tests;
