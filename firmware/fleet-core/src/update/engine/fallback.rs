//! How an update ends before or after a slot changed: failure before anything was written,
//! re-arming a trial while attempts remain, and the rollback off a bad slot.
use crate::slot::Slot;
use crate::update::engine::{Action, Job, NoTrial, Phase, State, TrialBootCounting, detail};
use crate::update::report::{FallbackCause, Outcome, Report, Stage};

/// Ends the update before any slot changed.
pub(super) fn fail(
    next: &mut State,
    job: &Job,
    stage: Stage,
    d: String,
    actions: &mut Vec<Action>,
) {
    actions.push(Action::DiscardDownload {
        bundle_id: job.bundle_id,
    });
    next.last_outcome = Some(Outcome::Failed {
        update_id: job.update_id.clone(),
        stage,
        detail: detail(&d),
    });
    next.phase = Phase::Idle;
}

pub(super) fn arm(next: &mut State, job: &Job, slot: Slot, attempt: u8, actions: &mut Vec<Action>) {
    actions.push(Action::ArmTrial { slot });
    next.phase = Phase::ArmingTrial {
        job: job.clone(),
        slot,
        attempt,
    };
}

pub(super) fn start_rollback(
    next: &mut State,
    job: &Job,
    bad_slot: Slot,
    cause: FallbackCause,
    actions: &mut Vec<Action>,
) {
    debug_assert_ne!(
        bad_slot, next.committed,
        "the committed slot is never marked bad"
    );
    actions.push(Action::MarkBad { slot: bad_slot });
    next.phase = Phase::RollingBack {
        job: job.clone(),
        bad_slot,
        cause,
        marked: false,
        reboots: 0,
    };
}

/// The station did not come up on the trial slot (attempt `attempt`).
pub(super) fn trial_failed_to_boot(
    next: &mut State,
    job: &Job,
    slot: Slot,
    attempt: u8,
    why: NoTrial,
    actions: &mut Vec<Action>,
) {
    let boot_side_counts = next.policy.trial_boot_counting == TrialBootCounting::BootLoader;
    if boot_side_counts && let NoTrial::CameBack { flow_trial_left } = why {
        // The boot side owns the retry of a trial that came back: it either still holds the
        // trial (the boot check spent the next attempt and reboots into it by itself) or gave
        // it up. The engine neither arms nor reboots.
        actions.push(Action::Report(Report::TrialFellBack {
            from: slot,
            to: next.booted,
            attempt,
            will_retry: flow_trial_left.is_some(),
        }));
        if let Some(left) = flow_trial_left {
            // The trial on its way is the flow's (attempts - left)th when the two counts are
            // configured equal; a daemon that missed a boot of the committed slot catches up.
            let pending = next.policy.max_trial_attempts.saturating_sub(left);
            next.phase = Phase::Rebooting {
                job: job.clone(),
                slot,
                attempt: attempt.saturating_add(1).max(pending),
            };
        } else {
            let cause = FallbackCause::TrialDidNotBoot { attempts: attempt };
            start_rollback(next, job, slot, cause, actions);
        }
        return;
    }
    let will_retry = attempt < next.policy.max_trial_attempts;
    actions.push(Action::Report(Report::TrialFellBack {
        from: slot,
        to: next.booted,
        attempt,
        will_retry,
    }));
    if will_retry {
        arm(next, job, slot, attempt + 1, actions);
    } else {
        let cause = FallbackCause::TrialDidNotBoot { attempts: attempt };
        start_rollback(next, job, slot, cause, actions);
    }
}

/// The trial slot ran but was not healthy (attempt `attempt`).
pub(super) fn unhealthy(
    next: &mut State,
    job: &Job,
    slot: Slot,
    attempt: u8,
    check: &str,
    actions: &mut Vec<Action>,
) {
    let will_retry = attempt < next.policy.max_trial_attempts;
    actions.push(Action::Report(Report::HealthFailed {
        slot,
        check: check.to_owned(),
        attempt,
        will_retry,
    }));
    if will_retry {
        arm(next, job, slot, attempt + 1, actions);
    } else {
        let cause = FallbackCause::HealthCheckFailed {
            check: check.to_owned(),
            attempts: attempt,
        };
        start_rollback(next, job, slot, cause, actions);
    }
}

/// In `RollingBack` with the mark done: finish if the good slot runs, else reboot off.
pub(super) fn leave_bad_slot(next: &mut State, actions: &mut Vec<Action>) {
    let Phase::RollingBack {
        job,
        bad_slot,
        cause,
        ..
    } = next.phase.clone()
    else {
        return;
    };
    if next.booted == bad_slot {
        reboot_off_bad_slot(next, actions);
    } else {
        actions.push(Action::Report(Report::RolledBack {
            from: bad_slot,
            to: next.committed,
            cause: cause.clone(),
        }));
        actions.push(Action::DiscardDownload {
            bundle_id: job.bundle_id,
        });
        next.last_outcome = Some(Outcome::RolledBack {
            update_id: job.update_id,
            bad_slot,
            cause,
        });
        next.phase = Phase::Idle;
    }
}

/// Booted on the bad slot: reboot towards the committed slot while reboots remain.
pub(super) fn reboot_off_bad_slot(next: &mut State, actions: &mut Vec<Action>) {
    let Phase::RollingBack {
        bad_slot, reboots, ..
    } = &mut next.phase
    else {
        return;
    };
    if *reboots < next.policy.max_rollback_reboots {
        *reboots += 1;
        actions.push(Action::Report(Report::Rebooting {
            into: next.committed,
        }));
        actions.push(Action::Reboot {
            into: next.committed,
        });
    } else {
        actions.push(Action::Report(Report::RollbackStuck { slot: *bad_slot }));
    }
}
