//! A daemon start: the engine resumes whatever it was doing, judging what booted.
use crate::ports::BootStatus;
use crate::slot::Slot;
use crate::slot::SlotHealth;
use crate::update::engine::fallback::{
    fail, leave_bad_slot, start_rollback, trial_failed_to_boot, unhealthy,
};
use crate::update::engine::{Action, NoTrial, Phase, State};
use crate::update::report::{FallbackCause, Report, Stage};

pub(super) fn on_started(next: &mut State, status: &BootStatus, actions: &mut Vec<Action>) {
    next.booted = status.booted;
    if let Phase::Downloading { job, .. } | Phase::Verifying { job, .. } = &next.phase
        && status.booted != next.committed
    {
        // The station came up on a slot other than its committed one before anything was
        // installed (an operator switched slots, or the journal is older than the boot
        // flow). The inactive slot is not what it was: give the update up, then treat the
        // station as idle.
        let job = job.clone();
        let stage = match next.phase {
            Phase::Downloading { .. } => Stage::Download,
            _ => Stage::Verify,
        };
        let d = format!(
            "station runs slot {}, not its committed slot {}",
            status.booted, next.committed
        );
        fail(next, &job, stage, d, actions);
    }
    match next.phase.clone() {
        Phase::Idle => {
            // A station found running a good slot other than the committed one (the journal
            // was lost or an operator switched slots) adopts it.
            let running = status.slot(status.booted);
            if status.booted != next.committed && running.health == SlotHealth::Good {
                next.committed = status.booted;
                if let Some(v) = &running.version {
                    next.committed_version = v.clone();
                }
            }
        }
        Phase::Downloading { job, held_bytes } => {
            actions.push(Action::Report(Report::DownloadStarted {
                bundle_id: job.bundle_id,
                size: job.bundle_size,
                resumed: true,
                held_bytes,
            }));
            actions.push(Action::Download {
                bundle_id: job.bundle_id,
                size: job.bundle_size,
                version: job.version.clone(),
                resume: true,
            });
        }
        Phase::Verifying { job, .. } => {
            actions.push(Action::VerifyBundle {
                bundle_id: job.bundle_id,
                size: job.bundle_size,
            });
        }
        Phase::Installing { job, slot, .. } if status.booted == slot => {
            // The install finished and armed the slot (the installer only makes a completely
            // written slot primary), and the station restarted into it before the engine
            // heard of it: a trial boot, if the slot holds the offered version.
            if status.slot(slot).version.as_ref() == Some(&job.version) {
                actions.push(Action::Report(Report::TrialBooted { slot, attempt: 1 }));
                actions.push(Action::RunHealthChecks { slot });
                next.phase = Phase::HealthChecking {
                    job,
                    slot,
                    attempt: 1,
                };
            } else {
                let cause = FallbackCause::InstallMismatch {
                    detail: "booted an install the engine never saw finish, of another version"
                        .into(),
                };
                start_rollback(next, &job, slot, cause, actions);
            }
        }
        Phase::Installing { job, attempt, .. } => {
            // The install was interrupted: hash the bytes again before retrying, and count
            // the interrupted install so a crashing installer cannot loop forever.
            if attempt < next.policy.max_install_attempts {
                actions.push(Action::Report(Report::InstallFailed {
                    detail: "interrupted by a restart".into(),
                    will_retry: true,
                }));
                actions.push(Action::VerifyBundle {
                    bundle_id: job.bundle_id,
                    size: job.bundle_size,
                });
                next.phase = Phase::Verifying {
                    job,
                    install_attempts: attempt,
                };
            } else {
                actions.push(Action::Report(Report::InstallFailed {
                    detail: "interrupted by a restart".into(),
                    will_retry: false,
                }));
                // The installer contract leaves the slot not primary on failure, but an
                // interrupted install may have armed it: make sure it is not booted.
                let slot = next.committed.other();
                let cause = FallbackCause::InstallMismatch {
                    detail: "install interrupted on its last attempt".into(),
                };
                start_rollback(next, &job, slot, cause, actions);
            }
        }
        Phase::ArmingTrial { job, slot, attempt } => {
            if status.booted == slot {
                // Arming took effect and the station restarted (a power cut) before the
                // engine heard of it: this is the trial boot.
                actions.push(Action::Report(Report::TrialBooted { slot, attempt }));
                actions.push(Action::RunHealthChecks { slot });
                next.phase = Phase::HealthChecking { job, slot, attempt };
            } else {
                actions.push(Action::ArmTrial { slot });
            }
        }
        Phase::Rebooting { job, slot, attempt } => {
            if status.booted == slot {
                actions.push(Action::Report(Report::TrialBooted { slot, attempt }));
                actions.push(Action::RunHealthChecks { slot });
                next.phase = Phase::HealthChecking { job, slot, attempt };
            } else {
                trial_failed_to_boot(next, &job, slot, attempt, came_back(status, slot), actions);
            }
        }
        Phase::HealthChecking { job, slot, attempt } => {
            if status.booted == slot {
                // Restarted during the checks (a daemon crash, or a reset the boot flow
                // answered with the trial slot again): that consumes an attempt, so a check
                // that kills the daemon cannot loop forever. The slot runs, so the checks run
                // again without a reboot.
                let check = "restarted during checks";
                if attempt < next.policy.max_trial_attempts {
                    actions.push(Action::Report(Report::HealthFailed {
                        slot,
                        check: check.into(),
                        attempt,
                        will_retry: true,
                    }));
                    actions.push(Action::RunHealthChecks { slot });
                    next.phase = Phase::HealthChecking {
                        job,
                        slot,
                        attempt: attempt + 1,
                    };
                } else {
                    unhealthy(next, &job, slot, attempt, check, actions);
                }
            } else {
                trial_failed_to_boot(next, &job, slot, attempt, came_back(status, slot), actions);
            }
        }
        Phase::Committing { job, slot, attempt } => {
            if status.booted == slot {
                actions.push(Action::MarkGood { slot });
            } else {
                trial_failed_to_boot(next, &job, slot, attempt, came_back(status, slot), actions);
            }
        }
        Phase::RollingBack {
            bad_slot, marked, ..
        } => {
            if marked {
                leave_bad_slot(next, actions);
            } else {
                actions.push(Action::MarkBad { slot: bad_slot });
            }
        }
    }
}

/// The station came back on the committed slot instead of the trial `slot`; whether the boot
/// flow still holds the trial (tryboot: the boot check spent the next attempt and reboots).
fn came_back(status: &BootStatus, slot: Slot) -> NoTrial {
    let status = status.slot(slot);
    NoTrial::CameBack {
        flow_trial_left: (status.health == SlotHealth::Trial).then_some(status.attempts_left),
    }
}
