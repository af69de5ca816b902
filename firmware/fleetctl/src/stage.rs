//! Where each station stands in a rollout: the one classification behind every rollout view
//! (`rollout status`, `rollout run`, `status`, `watch --rollout`). [`crate::rollout::view_of`]
//! counts with it; nothing else sorts stations into states.
//!
//! A station's stage comes from its retained state (phase, update, last outcome, version, and
//! `held` when a control holds the update back), refined by what only a live watch sees:
//! events saying a halt, freeze or pin holds the update back or lets it go ([`Holds`]), from
//! stations that do not report `held` in their state.
use std::collections::BTreeSet;

use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::rollout::Tally;
use fleet_core::update::{Outcome, PhaseName, RejectReason, Report};
use serde::Serialize;

use crate::status::{StationRow, describe_cause, name_of};

/// One station's stage in a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Nothing started yet (not offered, outside the current wave, offline, or never heard).
    Pending,
    /// A halt, freeze or pin keeps it from installing. `started`: it had accepted the offer
    /// (downloaded it); else the offer was held back on arrival.
    Held { started: bool },
    /// Accepted the offer, fetching chunks.
    Downloading,
    /// Verifying the bundle or writing the other slot.
    Installing,
    /// Arming, rebooting into, health-checking, committing or leaving the new slot.
    Trial,
    /// Runs the update's version (committed by this update or already there).
    Committed,
    /// The new slot was abandoned; runs its previous one.
    RolledBack { reason: String },
    /// Stopped before any slot changed.
    Failed { reason: String },
}

/// What a view knows beyond the retained states about stations held back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Holds<'a> {
    /// The rollout record says halted: a station that downloaded but did not install waits.
    pub rollout_halted: bool,
    /// Stations whose newest word on the update is a refusal for a halt, freeze or pin (from
    /// their events; only a live watch has these).
    pub refused: Option<&'a BTreeSet<DeviceId>>,
}

impl Holds<'_> {
    fn refused(&self, d: &DeviceId) -> bool {
        self.refused.is_some_and(|s| s.contains(d))
    }
}

/// The stage of `row` in the rollout of `update` (which installs `version`).
#[must_use]
pub fn stage_of(row: &StationRow, update: &UpdateId, version: &Version, holds: Holds) -> Stage {
    let Some(s) = &row.state else {
        return Stage::Pending;
    };
    match &s.last_outcome {
        Some(Outcome::Committed { update_id, .. }) if update_id == update => {
            return Stage::Committed;
        }
        Some(Outcome::RolledBack {
            update_id, cause, ..
        }) if update_id == update => {
            return Stage::RolledBack {
                reason: format!("rolled back: {}", describe_cause(cause)),
            };
        }
        Some(Outcome::Failed {
            update_id,
            stage,
            detail,
        }) if update_id == update => {
            return Stage::Failed {
                reason: format!("failed in {}: {detail}", name_of(stage)),
            };
        }
        _ => {}
    }
    let working = s.update_id.as_ref() == Some(update) && s.phase != PhaseName::Idle;
    // The station says itself that a control holds this update back.
    if s.held.as_ref().is_some_and(|h| h.update_id == *update) {
        return Stage::Held { started: working };
    }
    if working {
        return match s.phase {
            PhaseName::Downloading => Stage::Downloading,
            PhaseName::Verifying if holds.rollout_halted || holds.refused(&row.device_id) => {
                Stage::Held { started: true }
            }
            PhaseName::Verifying | PhaseName::Installing => Stage::Installing,
            PhaseName::ArmingTrial
            | PhaseName::Rebooting
            | PhaseName::HealthChecking
            | PhaseName::Committing
            | PhaseName::RollingBack
            | PhaseName::Idle => Stage::Trial,
        };
    }
    if s.version == *version {
        return Stage::Committed;
    }
    if holds.refused(&row.device_id) {
        return Stage::Held { started: false };
    }
    Stage::Pending
}

/// A refusal that means a control holds the update back (as opposed to the offer being wrong
/// for the station).
#[must_use]
pub fn is_hold(reason: &RejectReason) -> bool {
    matches!(
        reason,
        RejectReason::Frozen | RejectReason::Halted { .. } | RejectReason::Pinned { .. }
    )
}

/// How an event changes whether `update` is held back on its station: `Some(true)` a control
/// holds it, `Some(false)` the station took it, `None` no change.
#[must_use]
pub fn hold_change(event: &Report, update: &UpdateId) -> Option<bool> {
    match event {
        Report::OfferRejected {
            update_id: Some(u),
            reason,
            ..
        } if u == update && is_hold(reason) => Some(true),
        Report::OfferHeld { update_id, .. } if update_id == update => Some(true),
        Report::OfferAccepted { update_id, .. } | Report::OfferReleased { update_id }
            if update_id == update =>
        {
            Some(false)
        }
        Report::InstallStarted { .. } => Some(false),
        _ => None,
    }
}

/// Stations per stage in one wave.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StageCounts {
    pub pending: u32,
    pub downloading: u32,
    pub installing: u32,
    pub trial: u32,
    pub committed: u32,
    pub rolled_back: u32,
    pub failed: u32,
    pub held: u32,
}

impl StageCounts {
    /// Every station counted.
    #[must_use]
    pub fn total(&self) -> u32 {
        self.pending
            + self.downloading
            + self.installing
            + self.trial
            + self.committed
            + self.rolled_back
            + self.failed
            + self.held
    }
}

impl Stage {
    /// Counts the station: in the stage counts and in the coarse tally the rollout decision
    /// reads (committed = succeeded, rolled back or failed = failed, working = in progress,
    /// everything else waiting). A held station that had started counts as in progress, as
    /// it did before the halt.
    pub fn count(&self, tally: &mut Tally, counts: &mut StageCounts) {
        tally.members += 1;
        match self {
            Stage::Pending => {
                tally.waiting += 1;
                counts.pending += 1;
            }
            Stage::Held { started } => {
                if *started {
                    tally.in_progress += 1;
                } else {
                    tally.waiting += 1;
                }
                counts.held += 1;
            }
            Stage::Downloading => {
                tally.in_progress += 1;
                counts.downloading += 1;
            }
            Stage::Installing => {
                tally.in_progress += 1;
                counts.installing += 1;
            }
            Stage::Trial => {
                tally.in_progress += 1;
                counts.trial += 1;
            }
            Stage::Committed => {
                tally.succeeded += 1;
                counts.committed += 1;
            }
            Stage::RolledBack { .. } => {
                tally.failed += 1;
                counts.rolled_back += 1;
            }
            Stage::Failed { .. } => {
                tally.failed += 1;
                counts.failed += 1;
            }
        }
    }

    /// Why it failed, for the failed stages.
    #[must_use]
    pub fn failure(&self) -> Option<&str> {
        match self {
            Stage::RolledBack { reason } | Stage::Failed { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Most distinct failure reasons a wave lists; the rest are counted under [`OTHER_REASONS`].
pub const MAX_REASONS: usize = 20;
/// The reason under which failures past [`MAX_REASONS`] distinct ones are counted.
pub const OTHER_REASONS: &str = "(other reasons)";

/// A failure reason and how many stations of a wave failed for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReasonCount {
    pub reason: String,
    pub stations: u32,
}

/// Adds one failure for `reason` (bounded: at most [`MAX_REASONS`] distinct reasons plus
/// [`OTHER_REASONS`]; the counts stay complete).
pub fn add_reason(reasons: &mut Vec<ReasonCount>, reason: &str) {
    if let Some(r) = reasons.iter_mut().find(|r| r.reason == reason) {
        r.stations += 1;
        return;
    }
    let distinct = reasons.iter().filter(|r| r.reason != OTHER_REASONS).count();
    if distinct < MAX_REASONS {
        reasons.push(ReasonCount {
            reason: reason.to_owned(),
            stations: 1,
        });
    } else {
        add_reason_other(reasons);
    }
}

fn add_reason_other(reasons: &mut Vec<ReasonCount>) {
    match reasons.iter_mut().find(|r| r.reason == OTHER_REASONS) {
        Some(r) => r.stations += 1,
        None => reasons.push(ReasonCount {
            reason: OTHER_REASONS.to_owned(),
            stations: 1,
        }),
    }
}

/// Most stations first, then by reason; [`OTHER_REASONS`] last.
pub fn sort_reasons(reasons: &mut [ReasonCount]) {
    reasons.sort_by(|a, b| {
        (a.reason == OTHER_REASONS)
            .cmp(&(b.reason == OTHER_REASONS))
            .then(b.stations.cmp(&a.stations))
            .then(a.reason.cmp(&b.reason))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Heard;
    use fleet_core::slot::Slot;
    use fleet_core::update::{FallbackCause, Stage as FailStage};
    use fleet_proto::StationState;

    fn v(s: &str) -> Version {
        Version::parse(s).expect("version")
    }

    /// A state as a station publishes it (built from JSON, so the test does not depend on
    /// every optional field of `StationState`).
    fn row(
        phase: PhaseName,
        update: Option<&str>,
        version: &str,
        outcome: Option<Outcome>,
    ) -> StationRow {
        let mut j = serde_json::json!({
            "device-id": "stn-1", "seq": 1, "updated-at": {"monotonic-ms": 1},
            "time-trusted": false, "booted": Slot::A, "committed": Slot::A,
            "version": version, "phase": phase,
        });
        if let Some(u) = update {
            j["update-id"] = u.into();
        }
        if let Some(o) = outcome {
            j["last-outcome"] = serde_json::to_value(o).expect("json");
        }
        if version == "held" {
            // A station that reports the hold itself (fleet-updated).
            j["version"] = "1.0.0".into();
            j["held"] = serde_json::json!({
                "update-id": update.unwrap_or("rel-2"), "version": "2.0.0",
                "reason": RejectReason::Frozen,
            });
        }
        let state: StationState = serde_json::from_value(j).expect("a valid state");
        StationRow {
            device_id: DeviceId::new("stn-1").expect("id"),
            heard: Heard::Recently,
            presence: None,
            age_s: None,
            state: Some(state),
            state_error: None,
            health: None,
            health_error: None,
            health_age_s: None,
            problems: Vec::new(),
        }
    }

    #[test]
    fn every_station_lands_in_one_stage_and_the_tally_agrees() {
        let u = UpdateId::new("rel-2").expect("id");
        let other = UpdateId::new("rel-1").expect("id");
        let target = v("2.0.0");
        let held: BTreeSet<DeviceId> = [DeviceId::new("stn-1").expect("id")].into();
        let none = Holds::default();
        let halted = Holds {
            rollout_halted: true,
            refused: None,
        };
        let refused = Holds {
            rollout_halted: false,
            refused: Some(&held),
        };
        let rolled = Outcome::RolledBack {
            update_id: u.clone(),
            bad_slot: Slot::B,
            cause: FallbackCause::HealthCheckFailed {
                check: "sim-health".into(),
                attempts: 1,
            },
        };
        let failed = Outcome::Failed {
            update_id: u.clone(),
            stage: FailStage::Download,
            detail: "bad chunk".into(),
        };
        let old_failure = Outcome::Failed {
            update_id: other,
            stage: FailStage::Download,
            detail: "old".into(),
        };
        let committed = Outcome::Committed {
            update_id: u.clone(),
            slot: Slot::B,
            version: target.clone(),
        };
        let mut nothing = row(PhaseName::Idle, None, "1.0.0", None);
        nothing.state = None;
        let table: Vec<(StationRow, Holds, Stage)> = vec![
            (nothing, none, Stage::Pending),
            (
                row(PhaseName::Idle, None, "1.0.0", None),
                none,
                Stage::Pending,
            ),
            (
                row(PhaseName::Idle, None, "1.0.0", Some(old_failure)),
                none,
                Stage::Pending,
            ),
            (
                row(PhaseName::Idle, None, "1.0.0", None),
                refused,
                Stage::Held { started: false },
            ),
            (
                row(PhaseName::Downloading, Some("rel-2"), "1.0.0", None),
                halted,
                Stage::Downloading,
            ),
            (
                row(PhaseName::Verifying, Some("rel-2"), "1.0.0", None),
                none,
                Stage::Installing,
            ),
            (
                row(PhaseName::Verifying, Some("rel-2"), "1.0.0", None),
                halted,
                Stage::Held { started: true },
            ),
            (
                row(PhaseName::Installing, Some("rel-2"), "1.0.0", None),
                halted,
                Stage::Installing,
            ),
            (
                row(PhaseName::Idle, None, "held", None),
                none,
                Stage::Held { started: false },
            ),
            (
                row(PhaseName::Verifying, Some("rel-2"), "held", None),
                none,
                Stage::Held { started: true },
            ),
            (
                row(PhaseName::HealthChecking, Some("rel-2"), "1.0.0", None),
                none,
                Stage::Trial,
            ),
            (
                row(PhaseName::Idle, None, "2.0.0", Some(committed)),
                none,
                Stage::Committed,
            ),
            (
                row(PhaseName::Idle, None, "2.0.0", None),
                none,
                Stage::Committed,
            ),
            (
                row(PhaseName::Idle, None, "1.0.0", Some(rolled)),
                none,
                Stage::RolledBack {
                    reason: "rolled back: health check failed: sim-health, 1 attempts".into(),
                },
            ),
            (
                row(PhaseName::Idle, None, "1.0.0", Some(failed)),
                none,
                Stage::Failed {
                    reason: "failed in download: bad chunk".into(),
                },
            ),
        ];
        let mut tally = Tally::default();
        let mut counts = StageCounts::default();
        for (r, holds, want) in &table {
            let got = stage_of(r, &u, &target, *holds);
            assert_eq!(&got, want, "{:?}", r.state);
            got.count(&mut tally, &mut counts);
        }
        let n = u32::try_from(table.len()).expect("small");
        assert_eq!(counts.total(), n);
        assert_eq!(tally.members, n);
        assert_eq!(
            tally.succeeded + tally.failed + tally.in_progress + tally.waiting,
            n
        );
        assert_eq!(tally.succeeded, counts.committed);
        assert_eq!(tally.failed, counts.rolled_back + counts.failed);
        assert_eq!(
            (
                counts.pending,
                counts.held,
                counts.downloading,
                counts.installing
            ),
            (3, 4, 1, 2)
        );
    }

    #[test]
    fn failure_reasons_are_grouped_and_bounded_but_always_counted() {
        let mut reasons = Vec::new();
        for _ in 0..3 {
            add_reason(&mut reasons, "rolled back: health");
        }
        add_reason(&mut reasons, "failed in download: x");
        for i in 0..(MAX_REASONS + 5) {
            add_reason(&mut reasons, &format!("unique {i}"));
        }
        sort_reasons(&mut reasons);
        assert_eq!(reasons[0].reason, "rolled back: health");
        assert_eq!(reasons[0].stations, 3);
        let other = reasons.last().expect("overflow counted");
        assert_eq!(other.reason, OTHER_REASONS);
        assert_eq!(other.stations, 7, "{reasons:?}");
        assert_eq!(reasons.len(), MAX_REASONS + 1);
        let total: u32 = reasons.iter().map(|r| r.stations).sum();
        assert_eq!(
            total,
            3 + 1 + u32::try_from(MAX_REASONS + 5).expect("small")
        );
    }

    #[test]
    fn hold_refusals_set_and_acceptance_clears_the_hold() {
        let u = UpdateId::new("rel-2").expect("id");
        let halt = Report::OfferRejected {
            update_id: Some(u.clone()),
            sequence: Some(3),
            reason: RejectReason::Halted {
                update_id: u.clone(),
            },
        };
        let not_newer = Report::OfferRejected {
            update_id: Some(u.clone()),
            sequence: Some(3),
            reason: RejectReason::NotNewer {
                offered: v("2.0.0"),
                installed: v("2.0.0"),
            },
        };
        assert_eq!(hold_change(&halt, &u), Some(true));
        let held = Report::OfferHeld {
            update_id: u.clone(),
            sequence: None,
            reason: RejectReason::Frozen,
            scope: None,
            control_sequence: None,
        };
        assert_eq!(hold_change(&held, &u), Some(true));
        let released = Report::OfferReleased {
            update_id: u.clone(),
        };
        assert_eq!(hold_change(&released, &u), Some(false));
        assert_eq!(hold_change(&not_newer, &u), None);
        let other = UpdateId::new("rel-3").expect("id");
        assert_eq!(hold_change(&halt, &other), None);
    }
}
