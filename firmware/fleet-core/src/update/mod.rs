//! The station update engine (pure): [`step`]`(state, event, now)` returns the next state and
//! the actions the shell carries out. Offer admission is [`decide_offer`]; wave membership is
//! in [`wave`]. See [`engine`] for the shell's contract and the invariants.
pub mod delta;
pub mod digest;
pub mod engine;
pub mod journal;
pub mod manifest;
pub mod offer;
pub mod phase;
pub mod report;
pub mod wave;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod engine_trial_tests;
#[cfg(test)]
mod engine_tryboot_tests;
#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod offer_tests;

pub use digest::{BundleId, HexError, KeyId, PublicKey, Sha256Digest};
pub use engine::{
    Action, Event, EventName, Job, MAX_DETAIL_LEN, Phase, PhaseName, Policy, Rejected, State,
    Transition, TrialBootCounting, step,
};
pub use offer::{
    AdmissionContext, Admitted, Downgrade, Offer, RejectReason, RolloutPercent, SignatureVerdict,
    Station, Target, decide_offer,
};
pub use report::{BootOp, DownloadFailure, FallbackCause, Outcome, Report, Stage, VerifyFailure};
