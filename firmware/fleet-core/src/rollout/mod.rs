//! Rollouts (pure): the plan ([`plan`]), the operator-side decision to advance, halt or wait
//! over the current wave's stations ([`decide`]), and the station-side obedience to halts,
//! freezes and version pins ([`control`]).
pub mod control;
pub mod decide;
pub mod plan;

#[cfg(test)]
mod tests;

pub use control::{
    Control, ControlRefused, Effective, Scope, accept_control, decide_control,
    decide_offer_under_control, responsible,
};
pub use decide::{Decision, HaltReason, Progress, Status, Tally, WaitReason, decide};
pub use plan::{Plan, PlanError, WaveSpec, Window};
