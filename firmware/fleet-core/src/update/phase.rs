//! The names of the engine's phases: what the station state reports and what a `busy`
//! refusal names. Its own module so offers and reports can name a phase without depending on
//! the engine.
use serde::{Deserialize, Serialize};

/// The name of a [`Phase`], as reported in the station state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseName {
    Idle,
    Downloading,
    Verifying,
    Installing,
    ArmingTrial,
    Rebooting,
    HealthChecking,
    Committing,
    RollingBack,
}
