//! Table-driven tests of the update engine, continued: installs, trials, restarts and rollbacks.
use crate::ports::BootStatus;
use crate::slot::{Slot, SlotHealth};
use crate::time::Now;
use crate::update::digest::KeyId;
use crate::update::engine::{Action, Event, Phase, PhaseName, State, step};
use crate::update::engine_tests::*;
use crate::update::fixtures::*;
use crate::update::offer::{RejectReason, SignatureVerdict};
use crate::update::report::{BootOp, FallbackCause, Outcome, Report};

#[test]
fn an_installer_that_writes_the_running_slot_fails_without_touching_the_boot_flow() {
    let s = in_phase(Phase::Installing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (n, a) = go(
        &s,
        Event::Installed {
            slot: Slot::A,
            version: v("1.1.0"),
        },
    );
    assert_eq!(n.phase, Phase::Idle);
    assert!(!a.iter().any(|x| matches!(
        x,
        Action::MarkBad { .. }
            | Action::MarkGood { .. }
            | Action::ArmTrial { .. }
            | Action::Reboot { .. }
    )));
}

#[test]
fn an_installed_version_other_than_the_offered_one_is_marked_bad_and_never_booted() {
    let s = in_phase(Phase::Installing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (n, a) = go(
        &s,
        Event::Installed {
            slot: Slot::B,
            version: v("6.6.6"),
        },
    );
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    let (n, a) = go(&n, Event::MarkedBad { slot: Slot::B });
    assert_eq!(n.phase, Phase::Idle);
    assert!(!a.iter().any(|x| matches!(x, Action::Reboot { .. })));
}

#[test]
fn a_failed_arm_gives_the_trial_up() {
    let s = in_phase(Phase::ArmingTrial {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (n, a) = go(
        &s,
        Event::BootControlFailed {
            op: BootOp::ArmTrial,
            slot: Slot::B,
            detail: "eio".into(),
        },
    );
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    assert_eq!(n.phase.name(), PhaseName::RollingBack);
}

#[test]
fn a_failed_commit_consumes_an_attempt() {
    let s = in_phase(Phase::Committing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (n, a) = go(
        &s,
        Event::BootControlFailed {
            op: BootOp::MarkGood,
            slot: Slot::B,
            detail: "eio".into(),
        },
    );
    assert_eq!(non_reports(&a), vec![&Action::ArmTrial { slot: Slot::B }]);
    assert!(matches!(n.phase, Phase::ArmingTrial { attempt: 2, .. }));
}

#[test]
fn a_restart_while_committing_on_the_trial_slot_commits_again() {
    let s = in_phase(Phase::Committing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (_, a) = go(&s, Event::Started(boot(Slot::B)));
    assert_eq!(non_reports(&a), vec![&Action::MarkGood { slot: Slot::B }]);
    let (n, a) = go(&s, Event::Started(boot(Slot::A)));
    assert!(!a.iter().any(|x| matches!(x, Action::MarkGood { .. })));
    assert!(matches!(n.phase, Phase::ArmingTrial { attempt: 2, .. }));
}

#[test]
fn a_station_stuck_on_a_bad_slot_stops_rebooting_and_asks_for_a_person() {
    let mut s = in_phase(Phase::RollingBack {
        job: job(),
        bad_slot: Slot::B,
        cause: FallbackCause::TrialDidNotBoot { attempts: 3 },
        marked: true,
        reboots: 0,
    });
    s.booted = Slot::B;
    let mut reboots = 0;
    for _ in 0..10 {
        let (n, a) = go(&s, Event::Started(boot(Slot::B)));
        reboots += a
            .iter()
            .filter(|x| matches!(x, Action::Reboot { into: Slot::A }))
            .count();
        s = n;
    }
    assert_eq!(reboots, 3);
    let (_, a) = go(&s, Event::Started(boot(Slot::B)));
    assert!(reports(&a).contains(&&Report::RollbackStuck { slot: Slot::B }));
}

#[test]
fn a_failed_mark_bad_on_the_bad_slot_still_reboots_off_it() {
    let mut s = in_phase(Phase::RollingBack {
        job: job(),
        bad_slot: Slot::B,
        cause: FallbackCause::TrialDidNotBoot { attempts: 3 },
        marked: false,
        reboots: 0,
    });
    s.booted = Slot::B;
    let (_, a) = go(
        &s,
        Event::BootControlFailed {
            op: BootOp::MarkBad,
            slot: Slot::B,
            detail: "eio".into(),
        },
    );
    assert!(a.contains(&Action::Reboot { into: Slot::A }));
}

#[test]
fn offers_during_install_or_trial_are_refused_as_busy_and_leave_the_sequence_unused() {
    for state in all_phases().into_iter().skip(3) {
        let t = step(
            &state,
            Event::OfferReceived {
                offer: offer(50),
                verdict: trusted(),
            },
            now(),
        )
        .expect("offers always apply");
        assert_eq!(t.next, state, "{:?}", state.phase.name());
        assert!(matches!(
            reports(&t.actions)[..],
            [Report::OfferRejected {
                reason: RejectReason::Busy { .. },
                ..
            }]
        ));
    }
}

#[test]
fn a_newer_offer_for_another_update_supersedes_a_download() {
    let s = in_phase(Phase::Downloading {
        job: job(),
        held_bytes: 300,
    });
    let mut o = offer(20);
    o.update_id = crate::ids::UpdateId::new("rel-3").expect("valid");
    o.bundle_id = bundle(3);
    o.version = v("1.2.0");
    let (n, a) = go(
        &s,
        Event::OfferReceived {
            offer: o,
            verdict: trusted(),
        },
    );
    assert!(a.contains(&Action::DiscardDownload {
        bundle_id: bundle(1)
    }));
    assert!(
        matches!(&n.phase, Phase::Downloading { job, held_bytes: 0 } if job.bundle_id == bundle(3))
    );
    assert_eq!(n.last_sequence, Some(20));
}

#[test]
fn a_wider_wave_of_the_same_update_renews_the_download_without_restarting_it() {
    let s = in_phase(Phase::Downloading {
        job: job(),
        held_bytes: 300,
    });
    let (n, a) = go(
        &s,
        Event::OfferReceived {
            offer: offer(11),
            verdict: trusted(),
        },
    );
    assert!(matches!(&n.phase, Phase::Downloading { job, held_bytes: 300 } if job.sequence == 11));
    assert!(non_reports(&a).is_empty());
    assert_eq!(n.last_sequence, Some(11));
}

#[test]
fn unusable_offers_are_reported_and_change_nothing() {
    for state in all_phases() {
        let reason = RejectReason::UnknownKey {
            key_id: KeyId::from_bytes([1; 8]),
        };
        let t = step(
            &state,
            Event::OfferUnusable {
                reason: reason.clone(),
            },
            now(),
        )
        .expect("always applies");
        assert_eq!(t.next, state);
        assert_eq!(
            t.actions,
            vec![Action::Report(Report::OfferRejected {
                update_id: None,
                sequence: None,
                reason
            })]
        );
    }
}

#[test]
fn an_offer_with_a_bad_signature_is_refused_by_the_engine() {
    let (n, a) = go(
        &idle(),
        Event::OfferReceived {
            offer: offer(10),
            verdict: SignatureVerdict::Invalid,
        },
    );
    assert_eq!(n, idle());
    assert!(matches!(
        reports(&a)[..],
        [Report::OfferRejected {
            reason: RejectReason::BadSignature,
            ..
        }]
    ));
}

#[test]
fn an_idle_station_found_on_a_good_other_slot_adopts_it_as_committed() {
    let mut status = boot(Slot::B);
    status.slots[1].health = SlotHealth::Good;
    status.slots[1].version = Some(v("1.5.0"));
    let (n, a) = go(&idle(), Event::Started(status));
    assert!(a.is_empty());
    assert_eq!((n.booted, n.committed), (Slot::B, Slot::B));
    assert_eq!(n.committed_version, v("1.5.0"));
    // A trial (not good) slot is never adopted.
    let (n, _) = go(&idle(), Event::Started(boot(Slot::B)));
    assert_eq!(n.committed, Slot::A);
    let t = step(
        &n,
        Event::OfferReceived {
            offer: offer(10),
            verdict: trusted(),
        },
        Now::untrusted(0),
    )
    .expect("applies");
    assert!(matches!(
        reports(&t.actions)[..],
        [Report::OfferRejected {
            reason: RejectReason::Busy { .. },
            ..
        }]
    ));
}

#[test]
fn the_engine_state_round_trips_through_its_json_journal_form() {
    for state in all_phases() {
        let json = serde_json::to_string(&state).expect("serializes");
        let back: State = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, state);
    }
}

#[test]
fn a_journal_written_by_a_newer_release_with_extra_fields_still_reads() {
    let mut json = serde_json::to_value(in_phase(Phase::Downloading {
        job: job(),
        held_bytes: 5,
    }))
    .expect("serializes");
    json["added-later"] = serde_json::json!(true);
    json["phase"]["job"]["also-new"] = serde_json::json!(1);
    json["policy"]["new-knob"] = serde_json::json!(2);
    let back: State = serde_json::from_value(json).expect("an older release reads it");
    assert_eq!(back.phase.name(), PhaseName::Downloading);
}

#[test]
fn a_restart_during_health_checks_reruns_them_and_consumes_an_attempt() {
    let mut s = in_phase(Phase::HealthChecking {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    for attempt in 2..=3u8 {
        let (n, a) = go(&s, Event::Started(boot(Slot::B)));
        assert_eq!(
            non_reports(&a),
            vec![&Action::RunHealthChecks { slot: Slot::B }]
        );
        assert!(matches!(n.phase, Phase::HealthChecking { attempt: x, .. } if x == attempt));
        s = n;
    }
    let (n, a) = go(&s, Event::Started(boot(Slot::B)));
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    assert_eq!(n.phase.name(), PhaseName::RollingBack);
}

#[test]
fn a_power_cut_after_arming_that_boots_the_trial_slot_is_a_trial_boot() {
    let s = in_phase(Phase::ArmingTrial {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (n, a) = go(&s, Event::Started(boot(Slot::B)));
    assert_eq!(
        non_reports(&a),
        vec![&Action::RunHealthChecks { slot: Slot::B }]
    );
    assert!(matches!(n.phase, Phase::HealthChecking { attempt: 1, .. }));
    let (_, a) = go(&s, Event::Started(boot(Slot::A)));
    assert_eq!(non_reports(&a), vec![&Action::ArmTrial { slot: Slot::B }]);
}

#[test]
fn a_restart_into_a_slot_installed_unseen_is_checked_only_if_it_holds_the_offered_version() {
    let s = in_phase(Phase::Installing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let mut status = boot(Slot::B);
    status.slots[1].version = Some(v("1.1.0"));
    let (n, a) = go(&s, Event::Started(status.clone()));
    assert_eq!(
        non_reports(&a),
        vec![&Action::RunHealthChecks { slot: Slot::B }]
    );
    assert!(matches!(n.phase, Phase::HealthChecking { .. }));
    status.slots[1].version = Some(v("0.1.0"));
    let (n, a) = go(&s, Event::Started(status));
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    assert_eq!(n.phase.name(), PhaseName::RollingBack);
}

#[test]
fn a_station_found_on_another_slot_mid_download_gives_the_update_up() {
    let s = in_phase(Phase::Downloading {
        job: job(),
        held_bytes: 10,
    });
    let mut status = boot(Slot::B);
    status.slots[1].health = SlotHealth::Good;
    let (n, a) = go(&s, Event::Started(status));
    assert_eq!(n.phase, Phase::Idle);
    assert_eq!(n.committed, Slot::B, "a good running slot is adopted");
    assert!(a.contains(&Action::DiscardDownload {
        bundle_id: bundle(1)
    }));
    assert!(!a.iter().any(|x| matches!(x, Action::Download { .. })));
}

#[test]
fn a_failed_reboot_off_a_bad_slot_is_retried_a_bounded_number_of_times() {
    let mut s = in_phase(Phase::RollingBack {
        job: job(),
        bad_slot: Slot::B,
        cause: FallbackCause::TrialDidNotBoot { attempts: 3 },
        marked: true,
        reboots: 1,
    });
    s.booted = Slot::B;
    let mut reboots = 0;
    for _ in 0..5 {
        let (n, a) = go(
            &s,
            Event::BootControlFailed {
                op: BootOp::Reboot,
                slot: Slot::B,
                detail: "refused".into(),
            },
        );
        reboots += a
            .iter()
            .filter(|x| matches!(x, Action::Reboot { into: Slot::A }))
            .count();
        s = n;
    }
    assert_eq!(reboots, 2, "three rollback reboots in all");
}

#[test]
fn a_journal_naming_the_committed_slot_as_the_trial_slot_is_abandoned_without_boot_actions() {
    for mut state in all_phases().into_iter().skip(3) {
        // Corrupt: the update's slot is the committed one.
        match &mut state.phase {
            Phase::Installing { slot, .. }
            | Phase::ArmingTrial { slot, .. }
            | Phase::Rebooting { slot, .. }
            | Phase::HealthChecking { slot, .. }
            | Phase::Committing { slot, .. } => *slot = Slot::A,
            Phase::RollingBack { bad_slot, .. } => *bad_slot = Slot::A,
            _ => unreachable!("skipped the phases without a slot"),
        }
        state.booted = Slot::A;
        for event in all_events() {
            let t = step(&state, event.clone(), now()).expect("a repair always applies");
            assert!(
                matches!(
                    t.actions.first(),
                    Some(Action::Report(Report::JournalRepaired { .. }))
                ),
                "{:?} + {:?}",
                state.phase.name(),
                event.name()
            );
            assert!(!t.actions.iter().any(|a| matches!(
                a,
                Action::MarkBad { slot: Slot::A }
                    | Action::ArmTrial { slot: Slot::A }
                    | Action::Reboot { .. }
            )));
            assert_ne!(t.next.phase.update_slot(), Some(t.next.committed));
        }
    }
}

fn with_boot_loader_counting(mut s: State) -> State {
    s.policy.trial_boot_counting = crate::update::TrialBootCounting::BootLoader;
    s
}

/// The flow's status on `booted` with slot B in `b` (A good).
fn boot_with_b(booted: Slot, b: crate::slot::SlotHealth, attempts_left: u8) -> BootStatus {
    let mut status = boot(booted);
    status.slots[1].health = b;
    status.slots[1].attempts_left = attempts_left;
    status
}

#[test]
fn a_boot_loader_that_gave_up_on_the_trial_rolls_back_at_once() {
    // U-Boot booted the armed slot until BOOT_B_LEFT ran out and came back on A by itself
    // (the boot check then shows B bad): re-arming would give the dead slot three more boots
    // per remaining attempt.
    let s = with_boot_loader_counting(rebooting_into_trial());
    let (s, a) = go(&s, Event::Started(boot_with_b(Slot::A, SlotHealth::Bad, 0)));
    assert!(reports(&a).contains(&&Report::TrialFellBack {
        from: Slot::B,
        to: Slot::A,
        attempt: 1,
        will_retry: false
    }));
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    let (s, _) = go(&s, Event::MarkedBad { slot: Slot::B });
    assert_eq!((s.phase.clone(), s.committed), (Phase::Idle, Slot::A));
    assert!(matches!(
        &s.last_outcome,
        Some(Outcome::RolledBack {
            cause: FallbackCause::TrialDidNotBoot { attempts: 1 },
            ..
        })
    ));
}

#[test]
fn under_boot_loader_counting_a_failed_reboot_request_is_still_retried() {
    // The boot loader never saw the trial: that attempt is the updater's to count.
    let s = with_boot_loader_counting(rebooting_into_trial());
    let (n, a) = go(
        &s,
        Event::BootControlFailed {
            op: BootOp::Reboot,
            slot: Slot::B,
            detail: "reboot refused".into(),
        },
    );
    assert_eq!(non_reports(&a), vec![&Action::ArmTrial { slot: Slot::B }]);
    assert!(matches!(n.phase, Phase::ArmingTrial { attempt: 2, .. }));
}

#[test]
fn under_boot_loader_counting_an_unhealthy_trial_is_still_retried() {
    let s = with_boot_loader_counting(rebooting_into_trial());
    let (s, _) = go(&s, Event::Started(boot(Slot::B)));
    let (n, a) = go(
        &s,
        Event::HealthFailed {
            check: "probe".into(),
        },
    );
    assert_eq!(non_reports(&a), vec![&Action::ArmTrial { slot: Slot::B }]);
    assert!(matches!(n.phase, Phase::ArmingTrial { attempt: 2, .. }));
}

#[test]
fn an_install_that_failed_after_arming_its_slot_gives_the_slot_up() {
    let s = in_phase(Phase::Installing {
        job: job(),
        slot: Slot::B,
        attempt: 1,
    });
    let (n, a) = go(
        &s,
        Event::InstallLeftArmed {
            slot: Slot::B,
            detail: "no bundle.version".into(),
        },
    );
    assert_eq!(n.phase.name(), PhaseName::RollingBack);
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    // Never the running slot.
    let (n, a) = go(
        &s,
        Event::InstallLeftArmed {
            slot: Slot::A,
            detail: "confused".into(),
        },
    );
    assert_eq!(n.phase.name(), PhaseName::Idle);
    assert!(!a.iter().any(|x| matches!(x, Action::MarkBad { .. })));
}

#[test]
fn on_the_tryboot_flow_a_trial_the_boot_check_retries_is_waited_out_not_rearmed() {
    // Back on A after a trial boot of B that panicked, the boot check has spent the next
    // attempt and asked for the trial reboot: the record still holds B on trial. Arming again
    // would reset the record's count and make a second decider.
    let s = with_boot_loader_counting(rebooting_into_trial());
    let (s, a) = go(
        &s,
        Event::Started(boot_with_b(Slot::A, SlotHealth::Trial, 1)),
    );
    assert_eq!(
        reports(&a),
        vec![&Report::TrialFellBack {
            from: Slot::B,
            to: Slot::A,
            attempt: 1,
            will_retry: true
        }]
    );
    assert!(non_reports(&a).is_empty(), "{a:?}");
    assert!(matches!(
        s.phase,
        Phase::Rebooting {
            slot: Slot::B,
            attempt: 2,
            ..
        }
    ));
    // The boot check's trial reboot comes up on B: an ordinary trial boot.
    let (s, a) = go(
        &s,
        Event::Started(boot_with_b(Slot::B, SlotHealth::Trial, 1)),
    );
    assert_eq!(
        non_reports(&a),
        vec![&Action::RunHealthChecks { slot: Slot::B }]
    );
    assert!(matches!(s.phase, Phase::HealthChecking { attempt: 2, .. }));
}

#[test]
fn on_the_tryboot_flow_a_trial_the_boot_check_gave_up_is_rolled_back_as_not_booted() {
    let s = with_boot_loader_counting(rebooting_into_trial());
    let (s, _) = go(
        &s,
        Event::Started(boot_with_b(Slot::A, SlotHealth::Trial, 1)),
    );
    let (s, _) = go(
        &s,
        Event::Started(boot_with_b(Slot::A, SlotHealth::Trial, 0)),
    );
    let (s, a) = go(&s, Event::Started(boot_with_b(Slot::A, SlotHealth::Bad, 0)));
    assert!(reports(&a).contains(&&Report::TrialFellBack {
        from: Slot::B,
        to: Slot::A,
        attempt: 3,
        will_retry: false
    }));
    assert_eq!(non_reports(&a), vec![&Action::MarkBad { slot: Slot::B }]);
    let (s, a) = go(&s, Event::MarkedBad { slot: Slot::B });
    assert!(!a.iter().any(|x| matches!(x, Action::Reboot { .. })));
    assert!(matches!(
        &s.last_outcome,
        Some(Outcome::RolledBack {
            bad_slot: Slot::B,
            cause: FallbackCause::TrialDidNotBoot { attempts: 3 },
            ..
        })
    ));
}
