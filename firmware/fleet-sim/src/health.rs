//! The simulated health check.
use std::path::PathBuf;

use fleet_core::slot::Slot;

use crate::bundle::Behaviour;
use crate::{SimBootloader, SimError};

/// A failed health check: `check` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health check {check} failed: {detail}")]
pub struct HealthFailure {
    pub check: String,
    pub detail: String,
}

/// The health check of a simulated station. It fails when the booted image was built
/// [`Behaviour::Unhealthy`], or while `fail_file` exists (so a test or an operator can make a
/// healthy image fail).
#[derive(Debug, Clone)]
pub struct SimHealth {
    boot: SimBootloader,
    fail_file: Option<PathBuf>,
}

impl SimHealth {
    #[must_use]
    pub fn new(boot: SimBootloader, fail_file: Option<PathBuf>) -> Self {
        Self { boot, fail_file }
    }

    /// Runs the checks against the booted slot.
    pub fn check(&self, booted: Slot) -> Result<Result<(), HealthFailure>, SimError> {
        if let Some(f) = &self.fail_file
            && f.exists()
        {
            return Ok(Err(HealthFailure {
                check: "sim-fail-file".into(),
                detail: format!("{} exists", f.display()),
            }));
        }
        match self.boot.image_meta(booted)? {
            None => Ok(Err(HealthFailure {
                check: "sim-image".into(),
                detail: format!("slot {booted} holds no image"),
            })),
            Some(m) if m.behaviour == Behaviour::Unhealthy => Ok(Err(HealthFailure {
                check: "sim-image".into(),
                detail: format!("image {} in slot {booted} is built to fail", m.version),
            })),
            Some(_) => Ok(Ok(())),
        }
    }
}
