//! Property tests of the update engine's safety invariants, over random event sequences fed
//! by a simulated shell that mostly cooperates (answers the engine's actions, with random
//! failures and fallbacks) and sometimes injects arbitrary, stale or nonsense events and
//! daemon restarts.
use std::collections::VecDeque;

use fleet_core::ids::{DeviceId, GroupId, UpdateId, Version};
use fleet_core::ports::{BootStatus, SlotStatus};
use fleet_core::slot::{Slot, SlotHealth};
use fleet_core::time::Now;
use fleet_core::update::{
    Action, AdmissionContext, BootOp, BundleId, Downgrade, DownloadFailure, Event, KeyId, Offer,
    Phase, Policy, RejectReason, Report, RolloutPercent, SignatureVerdict, State, Station, Target,
    VerifyFailure, decide_offer, step,
};
use proptest::prelude::*;

fn v(minor: u64) -> Version {
    Version::new(1, minor, 0)
}

fn station() -> Station {
    Station {
        device_id: DeviceId::new("stn-0001").expect("valid"),
        groups: vec![GroupId::new("canary").expect("valid")],
        compatible: "fleet-test".into(),
    }
}

fn bundle(n: u8) -> BundleId {
    BundleId::from_bytes([n % 3; 32])
}

fn slot(b: u8) -> Slot {
    if b.is_multiple_of(2) {
        Slot::A
    } else {
        Slot::B
    }
}

fn boot(booted: Slot, health: u8) -> BootStatus {
    let h = |x: u8| match x % 3 {
        0 => SlotHealth::Good,
        1 => SlotHealth::Trial,
        _ => SlotHealth::Bad,
    };
    BootStatus {
        booted,
        primary: booted,
        slots: [
            SlotStatus {
                slot: Slot::A,
                health: h(health),
                attempts_left: health % 4,
                version: Some(v(u64::from(health % 5))),
            },
            SlotStatus {
                slot: Slot::B,
                health: h(health / 3),
                attempts_left: health % 4,
                version: None,
            },
        ],
    }
}

fn offer(a: u8, b: u8, c: u64) -> Offer {
    Offer {
        update_id: UpdateId::new(format!("rel-{}", b % 3)).expect("valid"),
        sequence: c % 40,
        bundle_id: bundle(a),
        bundle_size: 1 + c % 5000,
        compatible: if a.is_multiple_of(11) {
            "other".into()
        } else {
            "fleet-test".into()
        },
        version: v(u64::from(a % 5)),
        downgrade: if b.is_multiple_of(7) {
            Downgrade::Allow
        } else {
            Downgrade::Refuse
        },
        target: if b.is_multiple_of(5) {
            Target::Group(GroupId::new("canary").expect("valid"))
        } else {
            Target::Device(
                DeviceId::new(if b.is_multiple_of(13) {
                    "stn-0002"
                } else {
                    "stn-0001"
                })
                .expect("valid"),
            )
        },
        rollout_percent: RolloutPercent::new(1 + (b % 100)).expect("1..=100"),
        issued_at: 100,
        expires_at: a.is_multiple_of(4).then_some(200),
        manifest_hash: None,
    }
}

fn verdict(a: u8) -> SignatureVerdict {
    match a % 6 {
        0 => SignatureVerdict::Invalid,
        1 => SignatureVerdict::UnknownKey {
            key_id: KeyId::from_bytes([1; 8]),
        },
        _ => SignatureVerdict::Trusted {
            key_id: KeyId::from_bytes([2; 8]),
        },
    }
}

/// One move of the simulated shell.
#[derive(Debug, Clone)]
enum Move {
    /// Answer the oldest pending action; `ok` picks success or failure, `alt` a variant.
    Cooperate { ok: bool, alt: u8 },
    /// An arbitrary event.
    Arbitrary { kind: u8, a: u8, b: u8, c: u64 },
    /// The daemon restarts on the slot it runs (pending actions are lost).
    Restart,
}

fn moves() -> impl Strategy<Value = Vec<Move>> {
    let m = prop_oneof![
        6 => (any::<bool>(), any::<u8>()).prop_map(|(ok, alt)| Move::Cooperate { ok: ok || alt % 4 != 0, alt }),
        2 => (any::<u8>(), any::<u8>(), any::<u8>(), any::<u64>())
            .prop_map(|(kind, a, b, c)| Move::Arbitrary { kind, a, b, c }),
        1 => Just(Move::Restart),
    ];
    prop::collection::vec(m, 1..120)
}

fn arbitrary_event(state: &State, kind: u8, a: u8, b: u8, c: u64) -> Event {
    match kind % 17 {
        0 => Event::Started(boot(slot(a), b)),
        1..=3 => Event::OfferReceived {
            offer: offer(a, b, c),
            verdict: verdict(a / 7),
        },
        4 => Event::OfferUnusable {
            reason: RejectReason::BadSignature,
        },
        5 => Event::DownloadProgress {
            bundle_id: bundle(a),
            held_bytes: c % 6000,
        },
        6 => Event::DownloadComplete {
            bundle_id: bundle(a),
        },
        7 => Event::DownloadFailed {
            bundle_id: bundle(a),
            failure: DownloadFailure::CorruptChunk { index: 1 },
        },
        8 => Event::BundleVerified {
            bundle_id: bundle(a),
        },
        9 => Event::BundleVerifyFailed {
            bundle_id: bundle(a),
            failure: VerifyFailure::SizeMismatch {
                expected: 1,
                actual: 2,
            },
        },
        10 => Event::Installed {
            slot: slot(a),
            version: v(u64::from(b % 5)),
        },
        11 => Event::InstallFailed {
            retryable: a.is_multiple_of(2),
            detail: "x".into(),
        },
        12 => Event::TrialArmed { slot: slot(a) },
        13 => Event::MarkedGood { slot: slot(a) },
        14 => Event::MarkedBad { slot: slot(a) },
        15 => Event::BootControlFailed {
            op: [
                BootOp::ArmTrial,
                BootOp::MarkGood,
                BootOp::MarkBad,
                BootOp::Reboot,
            ][usize::from(b % 4)],
            slot: slot(a),
            detail: "x".into(),
        },
        _ => {
            if a.is_multiple_of(2) {
                Event::HealthPassed
            } else {
                Event::HealthFailed {
                    check: format!("check-{}", state.booted),
                }
            }
        }
    }
}

/// The shell's answer to `action`, or `None` for actions with no answer.
fn answer(action: &Action, ok: bool, alt: u8) -> Option<Event> {
    Some(match action {
        Action::Download {
            bundle_id, size, ..
        } => {
            if !ok {
                Event::DownloadFailed {
                    bundle_id: *bundle_id,
                    failure: DownloadFailure::Io {
                        detail: "eio".into(),
                    },
                }
            } else if alt.is_multiple_of(3) {
                Event::DownloadProgress {
                    bundle_id: *bundle_id,
                    held_bytes: size / 2,
                }
            } else {
                Event::DownloadComplete {
                    bundle_id: *bundle_id,
                }
            }
        }
        Action::VerifyBundle { bundle_id, .. } => {
            if ok {
                Event::BundleVerified {
                    bundle_id: *bundle_id,
                }
            } else {
                Event::BundleVerifyFailed {
                    bundle_id: *bundle_id,
                    failure: VerifyFailure::HashMismatch { actual: bundle(9) },
                }
            }
        }
        Action::Install { slot, version, .. } => {
            if !ok {
                Event::InstallFailed {
                    retryable: alt.is_multiple_of(2),
                    detail: "rauc".into(),
                }
            } else if alt.is_multiple_of(9) {
                Event::Installed {
                    slot: *slot,
                    version: v(99),
                }
            } else if alt.is_multiple_of(11) {
                Event::Installed {
                    slot: slot.other(),
                    version: version.clone(),
                }
            } else {
                Event::Installed {
                    slot: *slot,
                    version: version.clone(),
                }
            }
        }
        Action::ArmTrial { slot } => {
            if ok {
                Event::TrialArmed { slot: *slot }
            } else {
                Event::BootControlFailed {
                    op: BootOp::ArmTrial,
                    slot: *slot,
                    detail: "eio".into(),
                }
            }
        }
        // The boot flow may come back on the other slot (hang, reset, one-shot tryboot).
        Action::Reboot { into } => Event::Started(boot(if ok { *into } else { into.other() }, alt)),
        Action::RunHealthChecks { .. } => {
            if ok {
                Event::HealthPassed
            } else {
                Event::HealthFailed {
                    check: "mqtt".into(),
                }
            }
        }
        Action::MarkGood { slot } => {
            if ok {
                Event::MarkedGood { slot: *slot }
            } else {
                Event::BootControlFailed {
                    op: BootOp::MarkGood,
                    slot: *slot,
                    detail: "eio".into(),
                }
            }
        }
        Action::MarkBad { slot } => {
            if ok {
                Event::MarkedBad { slot: *slot }
            } else {
                Event::BootControlFailed {
                    op: BootOp::MarkBad,
                    slot: *slot,
                    detail: "eio".into(),
                }
            }
        }
        _ => return None,
    })
}

/// What the checker remembers across steps.
#[derive(Debug, Default)]
struct History {
    max_accepted: Option<u64>,
    /// The committed slot when the running update was accepted.
    committed_at_start: Option<Slot>,
}

fn check(h: &mut History, before: &State, event: &Event, after: &State, actions: &[Action]) {
    for a in actions {
        match a {
            Action::MarkGood { slot } => {
                // The booted slot is what the last `Started` said (this event, if it is one).
                let booted = match event {
                    Event::Started(status) => status.booted,
                    _ => before.booted,
                };
                assert_eq!(*slot, booted, "MarkGood of a slot not booted");
                assert_eq!(*slot, after.booted);
                assert_ne!(*slot, before.committed, "MarkGood of the committed slot");
            }
            Action::Install {
                bundle_id, slot, ..
            } => {
                assert!(
                    matches!(event, Event::BundleVerified { bundle_id: b } if b == bundle_id),
                    "Install without a verification verdict: {event:?}"
                );
                assert!(
                    matches!(&before.phase, Phase::Verifying { job, .. } if job.bundle_id == *bundle_id),
                    "Install outside Verifying"
                );
                assert_ne!(*slot, before.booted, "install into the running slot");
            }
            Action::MarkBad { slot } | Action::ArmTrial { slot } => {
                assert_ne!(*slot, before.committed, "{a:?} on the committed slot");
                assert_ne!(*slot, after.committed, "{a:?} on the committed slot");
            }
            Action::Reboot { into } => {
                if let Phase::RollingBack { .. } = after.phase {
                    assert_eq!(
                        *into, after.committed,
                        "a rollback reboots to the good slot"
                    );
                }
            }
            Action::Report(Report::OfferAccepted { sequence, .. }) => {
                if let Some(last) = before.last_sequence {
                    assert!(*sequence > last, "accepted {sequence} after {last}");
                }
                if let Some(max) = h.max_accepted {
                    assert!(*sequence > max, "accepted {sequence} after {max}");
                }
                h.max_accepted = Some(*sequence);
                h.committed_at_start = Some(after.committed);
            }
            _ => {}
        }
    }
    match (before.last_sequence, after.last_sequence) {
        (Some(b), Some(a)) => assert!(a >= b, "last sequence went back"),
        (Some(_), None) => panic!("last sequence forgotten"),
        _ => {}
    }
    if after.committed != before.committed {
        let by_commit = matches!(event, Event::MarkedGood { .. })
            && matches!(before.phase, Phase::Committing { .. });
        // Adoption of a good slot the station was found running, before anything was installed.
        let by_adoption = matches!(event, Event::Started(_))
            && after.phase == Phase::Idle
            && (matches!(
                before.phase,
                Phase::Idle | Phase::Downloading { .. } | Phase::Verifying { .. }
            ) || actions
                .iter()
                .any(|a| matches!(a, Action::Report(Report::JournalRepaired { .. }))));
        assert!(
            by_commit || by_adoption,
            "committed slot changed by {event:?}"
        );
    }
    let repaired = actions
        .iter()
        .any(|a| matches!(a, Action::Report(Report::JournalRepaired { .. })));
    if matches!(before.phase, Phase::RollingBack { .. }) && after.phase == Phase::Idle && !repaired
    {
        assert_eq!(
            after.booted, after.committed,
            "a fallback ends on the committed slot"
        );
        if let Some(start) = h.committed_at_start {
            assert_eq!(
                after.committed, start,
                "a fallback ends on the last good slot"
            );
        }
    }
}

/// Runs one sequence, checking every step; returns the phases it passed through.
fn run(moves: Vec<Move>, policy: Policy, wall: Option<i64>) -> Vec<&'static str> {
    run_from(State::new(station(), policy, Slot::A, v(0)), moves, wall)
}

/// Runs one sequence from `state`, checking every step.
fn run_from(mut state: State, moves: Vec<Move>, wall: Option<i64>) -> Vec<&'static str> {
    let mut seen = Vec::new();
    let mut pending: VecDeque<Action> = VecDeque::new();
    let mut history = History::default();
    for (i, m) in moves.into_iter().enumerate() {
        let now = Now {
            monotonic_ms: i as u64 * 10,
            wall_unix_s: wall,
        };
        let event = match m {
            Move::Restart => {
                pending.clear();
                Some(Event::Started(boot(state.booted, 0)))
            }
            Move::Arbitrary { kind, a, b, c } => Some(arbitrary_event(&state, kind, a, b, c)),
            Move::Cooperate { ok, alt } => {
                let mut ev = None;
                while let Some(a) = pending.pop_front() {
                    if let Some(e) = answer(&a, ok, alt) {
                        ev = Some(e);
                        break;
                    }
                }
                // Nothing pending: the operator publishes a fresh offer.
                ev.or_else(|| {
                    let mut o = offer(alt, 0, u64::from(alt) + 40);
                    o.rollout_percent = RolloutPercent::ALL;
                    Some(Event::OfferReceived {
                        offer: o,
                        verdict: verdict(2),
                    })
                })
            }
        };
        let Some(event) = event else { continue };
        if let Ok(t) = step(&state, event.clone(), now) {
            check(&mut history, &state, &event, &t.next, &t.actions);
            for a in &t.actions {
                match a {
                    Action::Report(Report::Committed { .. }) => seen.push("committed"),
                    Action::Report(Report::RolledBack { .. }) => seen.push("rolled-back"),
                    Action::Report(Report::TrialFellBack { .. }) => seen.push("fell-back"),
                    _ => {}
                }
            }
            pending.extend(
                t.actions
                    .into_iter()
                    .filter(|a| !matches!(a, Action::Report(_))),
            );
            state = t.next;
        }
    }
    seen
}

/// Guards against a property test that passes because nothing ever happens: the random walks
/// reach commits, fallbacks and completed rollbacks.
#[test]
fn the_random_walks_reach_commits_and_rollbacks() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..300 {
        let ms = moves().new_tree(&mut runner).expect("generates").current();
        for s in run(ms, Policy::default(), None) {
            *seen.entry(s).or_insert(0u32) += 1;
        }
    }
    for kind in ["committed", "rolled-back", "fell-back"] {
        assert!(
            seen.get(kind).copied().unwrap_or(0) > 5,
            "{kind} reached too rarely: {seen:?}"
        );
    }
}

/// Any state a journal could hold, including contradictory ones.
fn any_state() -> impl Strategy<Value = State> {
    (0u8..9, any::<u8>(), any::<u8>(), 1u8..6, 0u8..5).prop_map(|(kind, a, b, attempt, reboots)| {
        let mut s = State::new(station(), Policy::default(), slot(a), v(0));
        s.booted = slot(b);
        s.last_sequence = Some(u64::from(b % 50));
        let job = fleet_core::update::Job {
            update_id: UpdateId::new("rel-1").expect("valid"),
            sequence: u64::from(b % 50),
            bundle_id: bundle(a),
            bundle_size: 100,
            version: v(1),
            manifest_hash: None,
            key_id: KeyId::from_bytes([2; 8]),
        };
        // The update's slot: usually the inactive one, sometimes (corrupt) the committed one.
        let us = if a % 7 == 0 {
            s.committed
        } else {
            s.committed.other()
        };
        s.phase = match kind {
            0 => Phase::Idle,
            1 => Phase::Downloading {
                job,
                held_bytes: u64::from(a),
            },
            2 => Phase::Verifying {
                job,
                install_attempts: attempt % 4,
            },
            3 => Phase::Installing {
                job,
                slot: us,
                attempt,
            },
            4 => Phase::ArmingTrial {
                job,
                slot: us,
                attempt,
            },
            5 => Phase::Rebooting {
                job,
                slot: us,
                attempt,
            },
            6 => Phase::HealthChecking {
                job,
                slot: us,
                attempt,
            },
            7 => Phase::Committing {
                job,
                slot: us,
                attempt,
            },
            _ => Phase::RollingBack {
                job,
                bad_slot: us,
                cause: fleet_core::update::FallbackCause::TrialDidNotBoot { attempts: 3 },
                marked: b % 2 == 0,
                reboots,
            },
        };
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_safety_invariants_hold_from_any_journal_state(start in any_state(), ms in moves()) {
        let _ = run_from(start, ms, None);
    }

    #[test]
    fn the_safety_invariants_hold_over_any_sequence_of_events(ms in moves(), attempts in 1u8..4) {
        let policy = Policy { max_trial_attempts: attempts, ..Policy::default() };
        let _ = run(ms, policy, None);
    }

    #[test]
    fn the_safety_invariants_hold_with_trusted_time(ms in moves()) {
        let _ = run(ms, Policy::default(), Some(150));
    }

    #[test]
    fn an_offer_at_or_below_the_last_accepted_sequence_is_never_admitted(
        a in any::<u8>(), b in any::<u8>(), c in any::<u64>(), last in any::<u64>(), wall in proptest::option::of(any::<i64>())
    ) {
        let mut o = offer(a, b, c);
        o.sequence = last.saturating_sub(u64::from(a));
        let st = station();
        let installed = v(0);
        let ctx = AdmissionContext { station: &st, installed: &installed, last_sequence: Some(last), max_bundle_bytes: u64::MAX };
        let trusted = SignatureVerdict::Trusted { key_id: KeyId::from_bytes([2; 8]) };
        let now = Now { monotonic_ms: 0, wall_unix_s: wall };
        prop_assert!(decide_offer(&ctx, &o, trusted, now).is_err());
    }

    #[test]
    fn a_station_in_a_wave_stays_in_every_wider_wave(dev in "[a-z0-9-]{1,20}", upd in "[a-z0-9_]{1,20}", p in 1u8..100) {
        let d = DeviceId::new(dev).expect("valid by construction");
        let u = UpdateId::new(upd).expect("valid by construction");
        let lo = RolloutPercent::new(p).expect("valid");
        let hi = RolloutPercent::new(p + 1).expect("valid");
        if fleet_core::update::wave::in_wave(&d, &u, lo) {
            prop_assert!(fleet_core::update::wave::in_wave(&d, &u, hi));
        }
    }
}

/// The cooperative shell, always succeeding, must bring an offer all the way to a commit
/// (guards against a property test that passes because nothing ever happens).
#[test]
fn a_fully_cooperative_shell_commits_the_update() {
    let mut state = State::new(station(), Policy::default(), Slot::A, v(0));
    let mut pending: VecDeque<Action> = VecDeque::new();
    let mut o = offer(1, 1, 41);
    o.rollout_percent = RolloutPercent::ALL;
    o.expires_at = None;
    let mut event = Some(Event::OfferReceived {
        offer: o,
        verdict: verdict(2),
    });
    let mut steps = 0;
    while let Some(e) = event.take() {
        let t = step(&state, e, Now::untrusted(0)).expect("applies");
        pending.extend(
            t.actions
                .into_iter()
                .filter(|a| !matches!(a, Action::Report(_))),
        );
        state = t.next;
        while let Some(a) = pending.pop_front() {
            if let Some(e) = answer(&a, true, 1) {
                event = Some(e);
                break;
            }
        }
        steps += 1;
        assert!(steps < 50);
    }
    assert_eq!(state.phase, Phase::Idle);
    assert_eq!((state.booted, state.committed), (Slot::B, Slot::B));
    assert_eq!(state.committed_version, v(1));
}
