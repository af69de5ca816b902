//! The rollout decision: given the plan, where the rollout stands and how the current wave's
//! stations are doing, advance, halt, finish or wait. Pure: the operator's tool counts the
//! stations ([`Tally`]) and carries the decision out.
use serde::{Deserialize, Serialize};

use crate::rollout::plan::Plan;

/// Where a rollout stands. Stored (signed, retained) on the broker so any operator resumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Progress {
    /// Index of the current wave (the last one offered).
    pub wave: usize,
    /// Unix seconds when the current wave was offered (or resumed).
    pub wave_started_at: i64,
    pub status: Status,
}

/// A rollout's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "status",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Status {
    /// The current wave is offered; stations take it.
    Running,
    /// Stopped: stations that have not started installing do not.
    Halted { reason: HaltReason },
    /// Every wave reached its success share.
    Completed,
}

/// Why a rollout halted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "code",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum HaltReason {
    /// Too many of the wave's finished stations failed.
    FailureRate {
        wave: usize,
        failed: u32,
        finished: u32,
        failure_percent: u8,
    },
    /// The wave did not reach its success share in time.
    WaveTimedOut {
        wave: usize,
        elapsed_s: i64,
        limit_s: u64,
    },
    /// An operator halted it (`fleetctl rollout halt`).
    Operator { note: String },
}

/// The current wave's stations, as the operator's tool counted them from their retained
/// state. `members` counts every station of the wave, heard from or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Tally {
    pub members: u32,
    /// Committed the update.
    pub succeeded: u32,
    /// Rolled back or failed with the update.
    pub failed: u32,
    /// Working on it (accepted, downloading, installing, on trial).
    pub in_progress: u32,
    /// Not started, offline or never heard from.
    pub waiting: u32,
}

impl Tally {
    #[must_use]
    pub fn finished(&self) -> u32 {
        self.succeeded + self.failed
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Offer the next wave (index `to`).
    Advance { to: usize },
    /// The last wave reached its success share.
    Complete,
    /// Stop the rollout.
    Halt(HaltReason),
    /// Nothing to do yet.
    Wait(WaitReason),
}

/// Why nothing happens yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// Halted or completed: only an operator moves it.
    NotRunning,
    /// Fewer stations finished than the plan's minimum.
    TooFewFinished { finished: u32, needed: u32 },
    /// The success share is not reached.
    BelowSuccess { succeeded: u32, needed: u32 },
    /// Ready, but outside the maintenance window (or the time is unknown).
    OutsideWindow,
}

/// Decides the next step for the current wave. Rules, in order:
/// 1. only a running rollout moves;
/// 2. once `min(min-stations, members)` stations finished, a failure share of the finished
///    ones above `failure-percent` halts (checked before anything else can advance);
/// 3. when `ceil(members * success-percent / 100)` committed, the next wave is offered (or
///    the rollout completes), but a new wave only starts inside the maintenance window;
/// 4. a wave past its time limit halts;
/// 5. otherwise wait.
#[must_use]
pub fn decide(
    plan: &Plan,
    progress: &Progress,
    tally: &Tally,
    now_unix_s: Option<i64>,
) -> Decision {
    if progress.status != Status::Running {
        return Decision::Wait(WaitReason::NotRunning);
    }
    let needed_finished = plan.min_stations.min(tally.members);
    let finished = tally.finished();
    if finished > 0
        && finished >= needed_finished
        && u64::from(tally.failed) * 100 > u64::from(plan.failure_percent) * u64::from(finished)
    {
        return Decision::Halt(HaltReason::FailureRate {
            wave: progress.wave,
            failed: tally.failed,
            finished,
            failure_percent: plan.failure_percent,
        });
    }
    let needed_success =
        u32::try_from((u64::from(tally.members) * u64::from(plan.success_percent)).div_ceil(100))
            .unwrap_or(u32::MAX);
    let timed_out = match (plan.wave_timeout_s, now_unix_s) {
        (Some(limit), Some(now)) => {
            let elapsed = now.saturating_sub(progress.wave_started_at);
            (elapsed > i64::try_from(limit).unwrap_or(i64::MAX)).then_some((elapsed, limit))
        }
        _ => None,
    };
    if finished >= needed_finished && tally.succeeded >= needed_success {
        if progress.wave + 1 >= plan.waves.len() {
            return Decision::Complete;
        }
        let inside = match (plan.window, now_unix_s) {
            (None, _) => true,
            (Some(w), Some(now)) => w.contains(now),
            (Some(_), None) => false,
        };
        if !inside {
            return Decision::Wait(WaitReason::OutsideWindow);
        }
        return Decision::Advance {
            to: progress.wave + 1,
        };
    }
    if let Some((elapsed_s, limit_s)) = timed_out {
        return Decision::Halt(HaltReason::WaveTimedOut {
            wave: progress.wave,
            elapsed_s,
            limit_s,
        });
    }
    if finished < needed_finished {
        return Decision::Wait(WaitReason::TooFewFinished {
            finished,
            needed: needed_finished,
        });
    }
    Decision::Wait(WaitReason::BelowSuccess {
        succeeded: tally.succeeded,
        needed: needed_success,
    })
}
