//! Table-driven tests of the update engine: every (phase, event) class, then the paths.
use crate::slot::Slot;
use crate::update::engine::{Action, Event, EventName, Phase, PhaseName, State, step};
use crate::update::fixtures::*;
use crate::update::offer::RejectReason;
use crate::update::report::{
    BootOp, DownloadFailure, FallbackCause, Outcome, Report, VerifyFailure,
};

pub(super) fn in_phase(phase: Phase) -> State {
    let mut s = idle();
    if let Phase::HealthChecking { slot, .. } | Phase::Committing { slot, .. } = &phase {
        s.booted = *slot;
    }
    s.phase = phase;
    s
}

pub(super) fn all_phases() -> Vec<State> {
    let j = job();
    vec![
        idle(),
        in_phase(Phase::Downloading {
            job: j.clone(),
            held_bytes: 10,
        }),
        in_phase(Phase::Verifying {
            job: j.clone(),
            install_attempts: 0,
        }),
        in_phase(Phase::Installing {
            job: j.clone(),
            slot: Slot::B,
            attempt: 1,
        }),
        in_phase(Phase::ArmingTrial {
            job: j.clone(),
            slot: Slot::B,
            attempt: 1,
        }),
        in_phase(Phase::Rebooting {
            job: j.clone(),
            slot: Slot::B,
            attempt: 1,
        }),
        in_phase(Phase::HealthChecking {
            job: j.clone(),
            slot: Slot::B,
            attempt: 1,
        }),
        in_phase(Phase::Committing {
            job: j.clone(),
            slot: Slot::B,
            attempt: 1,
        }),
        in_phase(Phase::RollingBack {
            job: j,
            bad_slot: Slot::B,
            cause: FallbackCause::TrialDidNotBoot { attempts: 3 },
            marked: false,
            reboots: 0,
        }),
    ]
}

pub(super) fn all_events() -> Vec<Event> {
    vec![
        Event::Started(boot(Slot::A)),
        Event::OfferReceived {
            offer: offer(11),
            verdict: trusted(),
        },
        Event::OfferUnusable {
            reason: RejectReason::BadSignature,
        },
        Event::DownloadProgress {
            bundle_id: bundle(1),
            held_bytes: 500,
        },
        Event::DownloadComplete {
            bundle_id: bundle(1),
        },
        Event::DownloadFailed {
            bundle_id: bundle(1),
            failure: DownloadFailure::CorruptChunk { index: 3 },
        },
        Event::BundleVerified {
            bundle_id: bundle(1),
        },
        Event::BundleVerifyFailed {
            bundle_id: bundle(1),
            failure: VerifyFailure::SizeMismatch {
                expected: 1000,
                actual: 999,
            },
        },
        Event::InstallProgress { percent: 50 },
        Event::Installed {
            slot: Slot::B,
            version: v("1.1.0"),
        },
        Event::InstallFailed {
            retryable: false,
            detail: "rauc said no".into(),
        },
        Event::TrialArmed { slot: Slot::B },
        Event::MarkedGood { slot: Slot::B },
        Event::MarkedBad { slot: Slot::B },
        Event::BootControlFailed {
            op: BootOp::ArmTrial,
            slot: Slot::B,
            detail: "io".into(),
        },
        Event::HealthPassed,
        Event::HealthFailed {
            check: "mqtt".into(),
        },
    ]
}

/// The phases in which each event applies; every other pair must be rejected.
pub(super) fn applies(phase: PhaseName, event: EventName) -> bool {
    use EventName as E;
    use PhaseName as P;
    match event {
        E::Started | E::OfferReceived | E::OfferAdmitted | E::OfferUnusable => true,
        E::DownloadProgress | E::DownloadComplete | E::DownloadFailed => phase == P::Downloading,
        E::BundleVerified | E::BundleVerifyFailed => phase == P::Verifying,
        E::InstallProgress | E::Installed | E::InstallFailed | E::InstallLeftArmed => {
            phase == P::Installing
        }
        E::TrialArmed => phase == P::ArmingTrial,
        E::BootControlFailed => phase == P::ArmingTrial, // op ArmTrial in this table
        E::HealthPassed | E::HealthFailed => phase == P::HealthChecking,
        E::MarkedGood => phase == P::Committing,
        E::MarkedBad => phase == P::RollingBack,
    }
}

#[test]
fn every_phase_and_event_pair_is_applied_or_explicitly_rejected() {
    let mut checked = 0;
    for state in all_phases() {
        for event in all_events() {
            let (p, e) = (state.phase.name(), event.name());
            let result = step(&state, event, now());
            match (applies(p, e), result) {
                (true, Ok(_)) => {}
                (false, Err(rej)) => {
                    assert_eq!((rej.phase, rej.event), (p, e));
                }
                (true, Err(rej)) => panic!("{p:?} + {e:?} must apply, got {rej}"),
                (false, Ok(t)) => panic!("{p:?} + {e:?} must be rejected, got {t:?}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 9 * 17);
}

pub(super) fn reports(actions: &[Action]) -> Vec<&Report> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Report(r) => Some(r),
            _ => None,
        })
        .collect()
}

pub(super) fn non_reports(actions: &[Action]) -> Vec<&Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::Report(_)))
        .collect()
}

/// Steps and unwraps, for paths that must apply.
pub(super) fn go(state: &State, event: Event) -> (State, Vec<Action>) {
    let t = step(state, event, now()).expect("event applies");
    (t.next, t.actions)
}

#[test]
fn a_healthy_update_goes_from_offer_to_commit() {
    let s = idle();
    let (s, a) = go(
        &s,
        Event::OfferReceived {
            offer: offer(10),
            verdict: trusted(),
        },
    );
    assert_eq!(s.phase.name(), PhaseName::Downloading);
    assert_eq!(s.last_sequence, Some(10));
    assert!(matches!(
        non_reports(&a)[..],
        [Action::Download {
            resume: false,
            size: 1000,
            ..
        }]
    ));
    assert!(matches!(
        reports(&a)[0],
        Report::OfferAccepted {
            sequence: 10,
            expiry_checked: true,
            ..
        }
    ));

    let (s, a) = go(
        &s,
        Event::DownloadProgress {
            bundle_id: bundle(1),
            held_bytes: 500,
        },
    );
    assert!(matches!(
        reports(&a)[..],
        [Report::DownloadProgress {
            held_bytes: 500,
            total_bytes: 1000
        }]
    ));
    let (s, a) = go(
        &s,
        Event::DownloadComplete {
            bundle_id: bundle(1),
        },
    );
    assert_eq!(
        non_reports(&a),
        vec![&Action::VerifyBundle {
            bundle_id: bundle(1),
            size: 1000
        }]
    );
    let (s, a) = go(
        &s,
        Event::BundleVerified {
            bundle_id: bundle(1),
        },
    );
    assert!(matches!(
        non_reports(&a)[..],
        [Action::Install { slot: Slot::B, .. }]
    ));
    let (s, a) = go(&s, Event::InstallProgress { percent: 40 });
    assert_eq!(reports(&a), vec![&Report::InstallProgress { percent: 40 }]);
    let (s, a) = go(
        &s,
        Event::Installed {
            slot: Slot::B,
            version: v("1.1.0"),
        },
    );
    assert_eq!(non_reports(&a), vec![&Action::ArmTrial { slot: Slot::B }]);
    let (s, a) = go(&s, Event::TrialArmed { slot: Slot::B });
    assert_eq!(non_reports(&a), vec![&Action::Reboot { into: Slot::B }]);
    assert_eq!(s.phase.name(), PhaseName::Rebooting);

    let (s, a) = go(&s, Event::Started(boot(Slot::B)));
    assert_eq!(
        non_reports(&a),
        vec![&Action::RunHealthChecks { slot: Slot::B }]
    );
    assert!(reports(&a).contains(&&Report::TrialBooted {
        slot: Slot::B,
        attempt: 1
    }));
    let (s, a) = go(&s, Event::HealthPassed);
    assert_eq!(non_reports(&a), vec![&Action::MarkGood { slot: Slot::B }]);
    assert_eq!(
        s.committed,
        Slot::A,
        "not committed before the boot flow says so"
    );
    let (s, a) = go(&s, Event::MarkedGood { slot: Slot::B });
    assert_eq!(s.phase, Phase::Idle);
    assert_eq!(s.committed, Slot::B);
    assert_eq!(s.committed_version, v("1.1.0"));
    assert!(matches!(
        s.last_outcome,
        Some(Outcome::Committed { slot: Slot::B, .. })
    ));
    // The committed bundle becomes the base of the next delta before its download goes.
    let keep = a
        .iter()
        .position(|x| matches!(x, Action::KeepBase { bundle_id, .. } if *bundle_id == bundle(1)))
        .expect("the committed bundle is kept as the base");
    let discard = a
        .iter()
        .position(|x| {
            *x == Action::DiscardDownload {
                bundle_id: bundle(1),
            }
        })
        .expect("its download is discarded");
    assert!(keep < discard, "{a:?}");
}

/// Drives an idle station to the trial boot of attempt 1 on slot B.
pub(super) fn rebooting_into_trial() -> State {
    let mut s = idle();
    for e in [
        Event::OfferReceived {
            offer: offer(10),
            verdict: trusted(),
        },
        Event::DownloadComplete {
            bundle_id: bundle(1),
        },
        Event::BundleVerified {
            bundle_id: bundle(1),
        },
        Event::Installed {
            slot: Slot::B,
            version: v("1.1.0"),
        },
        Event::TrialArmed { slot: Slot::B },
    ] {
        s = go(&s, e).0;
    }
    s
}

#[test]
fn an_unhealthy_slot_is_retried_until_its_attempts_run_out_then_marked_bad() {
    let mut s = go(&rebooting_into_trial(), Event::Started(boot(Slot::B))).0;
    for attempt in 1..=2u8 {
        let (n, a) = go(
            &s,
            Event::HealthFailed {
                check: "mqtt".into(),
            },
        );
        assert!(reports(&a).contains(&&Report::HealthFailed {
            slot: Slot::B,
            check: "mqtt".into(),
            attempt,
            will_retry: true
        }));
        assert_eq!(non_reports(&a), vec![&Action::ArmTrial { slot: Slot::B }]);
        let n = go(&n, Event::TrialArmed { slot: Slot::B }).0;
        s = go(&n, Event::Started(boot(Slot::B))).0;
        assert_eq!(
            s.phase,
            Phase::HealthChecking {
                job: job(),
                slot: Slot::B,
                attempt: attempt + 1
            }
        );
    }
    let (s, a) = go(
        &s,
        Event::HealthFailed {
            check: "mqtt".into(),
        },
    );
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    // Marked bad while running on it: reboot to the committed slot.
    let (s, a) = go(&s, Event::MarkedBad { slot: Slot::B });
    assert_eq!(non_reports(&a), vec![&Action::Reboot { into: Slot::A }]);
    let (s, a) = go(&s, Event::Started(boot(Slot::A)));
    assert_eq!(s.phase, Phase::Idle);
    assert_eq!((s.booted, s.committed), (Slot::A, Slot::A));
    assert_eq!(s.committed_version, v("1.0.0"));
    assert!(matches!(
        &s.last_outcome,
        Some(Outcome::RolledBack {
            bad_slot: Slot::B,
            cause: FallbackCause::HealthCheckFailed { attempts: 3, .. },
            ..
        })
    ));
    assert!(reports(&a).iter().any(|r| matches!(
        r,
        Report::RolledBack {
            from: Slot::B,
            to: Slot::A,
            ..
        }
    )));
}

#[test]
fn unbootable_slot_falls_back_after_its_attempts_run_out() {
    let mut s = rebooting_into_trial();
    for attempt in 1..=2u8 {
        let (n, a) = go(&s, Event::Started(boot(Slot::A)));
        assert!(reports(&a).contains(&&Report::TrialFellBack {
            from: Slot::B,
            to: Slot::A,
            attempt,
            will_retry: true
        }));
        assert_eq!(non_reports(&a), vec![&Action::ArmTrial { slot: Slot::B }]);
        s = go(&n, Event::TrialArmed { slot: Slot::B }).0;
    }
    let (s, a) = go(&s, Event::Started(boot(Slot::A)));
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    // Already on the good slot: marking bad ends the update without another reboot.
    let (s, a) = go(&s, Event::MarkedBad { slot: Slot::B });
    assert!(!a.iter().any(|x| matches!(x, Action::Reboot { .. })));
    assert_eq!(s.phase, Phase::Idle);
    assert_eq!(s.committed, Slot::A);
    assert!(matches!(
        &s.last_outcome,
        Some(Outcome::RolledBack {
            cause: FallbackCause::TrialDidNotBoot { attempts: 3 },
            ..
        })
    ));
}

#[test]
fn a_restart_during_download_resumes_it() {
    let s = in_phase(Phase::Downloading {
        job: job(),
        held_bytes: 600,
    });
    let (n, a) = go(&s, Event::Started(boot(Slot::A)));
    assert_eq!(n.phase, s.phase);
    assert!(a.contains(&Action::Download {
        bundle_id: bundle(1),
        size: 1000,
        version: v("1.1.0"),
        resume: true
    }));
    assert!(reports(&a).contains(&&Report::DownloadStarted {
        bundle_id: bundle(1),
        size: 1000,
        resumed: true,
        held_bytes: 600
    }));
}

#[test]
fn an_interrupted_install_is_verified_again_before_it_is_retried() {
    let s = in_phase(Phase::Installing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (n, a) = go(&s, Event::Started(boot(Slot::A)));
    assert_eq!(
        n.phase,
        Phase::Verifying {
            job: job(),
            install_attempts: 1
        }
    );
    assert!(!a.iter().any(|x| matches!(x, Action::Install { .. })));
    let (n, a) = go(
        &n,
        Event::BundleVerified {
            bundle_id: bundle(1),
        },
    );
    assert!(matches!(n.phase, Phase::Installing { attempt: 2, .. }));
    assert!(a.iter().any(|x| matches!(x, Action::Install { .. })));
}

#[test]
fn an_install_interrupted_on_its_last_attempt_gives_the_slot_up() {
    let s = in_phase(Phase::Installing {
        job: job(),
        slot: Slot::B,
        attempt: 3,
    });
    let (n, a) = go(&s, Event::Started(boot(Slot::A)));
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    assert_eq!(n.phase.name(), PhaseName::RollingBack);
}

#[test]
fn retryable_install_failures_retry_a_bounded_number_of_times() {
    let mut s = in_phase(Phase::Installing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    for _ in 0..2 {
        let (n, a) = go(
            &s,
            Event::InstallFailed {
                retryable: true,
                detail: "busy".into(),
            },
        );
        assert!(a.iter().any(|x| matches!(x, Action::VerifyBundle { .. })));
        s = go(
            &n,
            Event::BundleVerified {
                bundle_id: bundle(1),
            },
        )
        .0;
    }
    let (n, a) = go(
        &s,
        Event::InstallFailed {
            retryable: true,
            detail: "busy".into(),
        },
    );
    assert_eq!(n.phase, Phase::Idle);
    assert!(matches!(n.last_outcome, Some(Outcome::Failed { .. })));
    assert!(a.contains(&Action::DiscardDownload {
        bundle_id: bundle(1)
    }));
}

#[test]
fn download_and_verification_failures_end_the_update_and_discard_the_bytes() {
    for (phase, event) in [
        (
            Phase::Downloading {
                job: job(),
                held_bytes: 0,
            },
            Event::DownloadFailed {
                bundle_id: bundle(1),
                failure: DownloadFailure::NoSpace {
                    needed: 1000,
                    available: 10,
                },
            },
        ),
        (
            Phase::Verifying {
                job: job(),
                install_attempts: 0,
            },
            Event::BundleVerifyFailed {
                bundle_id: bundle(1),
                failure: VerifyFailure::HashMismatch { actual: bundle(9) },
            },
        ),
    ] {
        let (n, a) = go(&in_phase(phase), event);
        assert_eq!(n.phase, Phase::Idle);
        assert_eq!(n.last_sequence, Some(9), "the offer's sequence stays used");
        assert!(a.contains(&Action::DiscardDownload {
            bundle_id: bundle(1)
        }));
        assert!(!a.iter().any(|x| matches!(x, Action::Install { .. })));
    }
}

#[test]
fn events_about_another_bundle_or_slot_are_rejected() {
    let dl = in_phase(Phase::Downloading {
        job: job(),
        held_bytes: 0,
    });
    assert!(
        step(
            &dl,
            Event::DownloadComplete {
                bundle_id: bundle(2)
            },
            now()
        )
        .is_err()
    );
    assert!(
        step(
            &dl,
            Event::DownloadProgress {
                bundle_id: bundle(1),
                held_bytes: 1001
            },
            now()
        )
        .is_err()
    );
    let ver = in_phase(Phase::Verifying {
        job: job(),
        install_attempts: 0,
    });
    assert!(
        step(
            &ver,
            Event::BundleVerified {
                bundle_id: bundle(2)
            },
            now()
        )
        .is_err()
    );
    let arm = in_phase(Phase::ArmingTrial {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    assert!(step(&arm, Event::TrialArmed { slot: Slot::A }, now()).is_err());
    let mut hc = in_phase(Phase::HealthChecking {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    hc.booted = Slot::A;
    assert!(
        step(&hc, Event::HealthPassed, now()).is_err(),
        "never commit a slot not booted"
    );
    let mut cm = in_phase(Phase::Committing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    assert!(step(&cm, Event::MarkedGood { slot: Slot::A }, now()).is_err());
    cm.booted = Slot::A;
    assert!(step(&cm, Event::MarkedGood { slot: Slot::B }, now()).is_err());
}
