use std::collections::BTreeMap;

use crate::ids::{DeviceId, UpdateId, Version};
use crate::ports::{BootStatus, SlotStatus};
use crate::rollout::{Control, Scope};
use crate::slot::{Slot, SlotHealth};
use crate::station::{Action, Input, SignedOffer, Station, Store, step};
use crate::time::Now;
use crate::trust::TrustState;
use crate::update::{
    self, BundleId, Downgrade, Event, Offer, PhaseName, Policy, PublicKey, RejectReason, Report,
    RolloutPercent, State, Target,
};

const TOPIC: &str = "fleet/v1/devices/stn-0001/offer";
const CONTROL: &str = "fleet/v1/control/devices/stn-0001";

fn v(s: &str) -> Version {
    Version::parse(s).expect("valid version")
}

fn key() -> PublicKey {
    PublicKey::from_bytes([3; 32])
}

fn station() -> Station {
    let engine = State::new(
        update::Station {
            device_id: DeviceId::new("stn-0001").expect("id"),
            groups: vec![],
            compatible: "fleet-test".into(),
        },
        Policy::default(),
        Slot::A,
        v("1.0.0"),
    );
    let trust = TrustState::bootstrap([key()]).expect("one key");
    Station::new(engine, BTreeMap::new(), trust, None)
}

fn offer(seq: u64, update: &str, version: &str) -> Input {
    let offer = Offer {
        update_id: UpdateId::new(update).expect("id"),
        sequence: seq,
        bundle_id: BundleId::from_bytes([u8::try_from(seq % 200).expect("small"); 32]),
        bundle_size: 1000,
        compatible: "fleet-test".into(),
        version: v(version),
        downgrade: Downgrade::Refuse,
        target: Target::Device(DeviceId::new("stn-0001").expect("id")),
        rollout_percent: RolloutPercent::ALL,
        issued_at: 1,
        expires_at: None,
        manifest_hash: None,
    };
    let mut digest = [0; 32];
    digest[..8].copy_from_slice(&seq.to_be_bytes());
    Input::Offer {
        topic: TOPIC.into(),
        signed: SignedOffer {
            offer,
            key_id: key().key_id(),
            digest,
        },
    }
}

fn control(seq: u64, freeze: bool) -> Input {
    Input::Control {
        topic: CONTROL.into(),
        topic_scope: Scope::Device(DeviceId::new("stn-0001").expect("id")),
        control: Control {
            scope: Scope::Device(DeviceId::new("stn-0001").expect("id")),
            sequence: seq,
            freeze,
            halted: vec![],
            pin: None,
            issued_at: 1,
        },
    }
}

fn boot() -> BootStatus {
    let slot = |s: Slot| SlotStatus {
        slot: s,
        health: SlotHealth::Good,
        attempts_left: 3,
        version: None,
    };
    BootStatus {
        booted: Slot::A,
        primary: Slot::A,
        slots: [slot(Slot::A), slot(Slot::B)],
    }
}

fn now() -> Now {
    Now::untrusted(1)
}

/// Steps through `inputs`, returning the station and every action.
fn run(mut s: Station, inputs: Vec<Input>) -> (Station, Vec<Action>) {
    let mut all = Vec::new();
    for i in inputs {
        let t = step(&s, i, now());
        s = t.next;
        all.extend(t.actions);
    }
    (s, all)
}

fn reports(actions: &[Action]) -> Vec<&Report> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Report { report, .. } => Some(report),
            _ => None,
        })
        .collect()
}

fn downloads(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Update(update::Action::Download { .. })))
        .count()
}

#[test]
fn an_offer_under_a_freeze_is_held_and_taken_when_the_freeze_lifts() {
    let (s, actions) = run(
        station(),
        vec![
            Input::Started(boot()),
            control(1, true),
            offer(10, "rel-2", "1.1.0"),
        ],
    );
    assert_eq!(downloads(&actions), 0);
    assert!(reports(&actions).iter().any(|r| matches!(
        r,
        Report::OfferHeld {
            reason: RejectReason::Frozen,
            ..
        }
    )));
    assert!(s.held().is_some());
    let (s, actions) = run(s, vec![control(2, false)]);
    assert_eq!(downloads(&actions), 1);
    assert!(
        reports(&actions)
            .iter()
            .any(|r| matches!(r, Report::OfferReleased { .. }))
    );
    assert!(s.held().is_none());
    assert_eq!(s.engine().phase.name(), PhaseName::Downloading);
}

#[test]
fn a_control_is_saved_before_it_is_reported_or_takes_effect() {
    let (_, actions) = run(station(), vec![Input::Started(boot()), control(1, true)]);
    let saved = actions
        .iter()
        .position(|a| *a == Action::Save(Store::Controls))
        .expect("saved");
    let reported = actions
        .iter()
        .position(|a| matches!(a, Action::Report { .. }))
        .expect("reported");
    assert!(saved < reported);
}

#[test]
fn the_same_offer_message_twice_is_handled_once() {
    let (_, actions) = run(
        station(),
        vec![
            Input::Started(boot()),
            offer(10, "rel-2", "1.1.0"),
            offer(10, "rel-2", "1.1.0"),
        ],
    );
    let accepted = reports(&actions)
        .iter()
        .filter(|r| matches!(r, Report::OfferAccepted { .. }))
        .count();
    assert_eq!(accepted, 1);
}

#[test]
fn a_verified_bundle_is_held_under_a_freeze_that_came_during_the_download() {
    let (s, _) = run(
        station(),
        vec![Input::Started(boot()), offer(10, "rel-2", "1.1.0")],
    );
    let bundle_id = s.engine().phase.job().expect("job").bundle_id;
    let (s, actions) = run(
        s,
        vec![
            Input::Event(Event::DownloadComplete { bundle_id }),
            control(1, true),
            Input::Event(Event::BundleVerified { bundle_id }),
        ],
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Update(update::Action::Install { .. })))
    );
    assert_eq!(s.engine().phase.name(), PhaseName::Verifying);
    assert!(s.held().is_some());
    let (s, actions) = run(s, vec![control(2, false)]);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Update(update::Action::Install { slot: Slot::B, .. })
    )));
    assert_eq!(s.engine().phase.name(), PhaseName::Installing);
}

#[test]
fn an_offer_refused_as_busy_is_offered_again_when_the_station_is_idle() {
    let (s, _) = run(
        station(),
        vec![Input::Started(boot()), offer(10, "rel-2", "1.1.0")],
    );
    let bundle_id = s.engine().phase.job().expect("job").bundle_id;
    let (s, _) = run(
        s,
        vec![
            Input::Event(Event::DownloadComplete { bundle_id }),
            Input::Event(Event::BundleVerified { bundle_id }),
        ],
    );
    assert_eq!(s.engine().phase.name(), PhaseName::Installing);
    let (s, actions) = run(s, vec![offer(11, "rel-3", "1.2.0")]);
    assert!(reports(&actions).iter().any(|r| matches!(
        r,
        Report::OfferRejected {
            reason: RejectReason::Busy { .. },
            ..
        }
    )));
    assert!(s.waiting_on(TOPIC).is_some());
    let (s, actions) = run(
        s,
        vec![Input::Event(Event::InstallFailed {
            retryable: false,
            detail: "broken".into(),
        })],
    );
    assert_eq!(downloads(&actions), 1, "the busy offer was taken up");
    assert_eq!(
        s.engine().phase.job().map(|j| j.update_id.to_string()),
        Some("rel-3".into())
    );
}

#[test]
fn a_retracted_busy_offer_is_not_offered_again() {
    let (s, _) = run(
        station(),
        vec![Input::Started(boot()), offer(10, "rel-2", "1.1.0")],
    );
    let bundle_id = s.engine().phase.job().expect("job").bundle_id;
    let (s, _) = run(
        s,
        vec![
            Input::Event(Event::DownloadComplete { bundle_id }),
            Input::Event(Event::BundleVerified { bundle_id }),
            offer(11, "rel-3", "1.2.0"),
            Input::OfferRetracted {
                topic: TOPIC.into(),
            },
        ],
    );
    assert!(s.waiting_on(TOPIC).is_none());
    let (s, actions) = run(
        s,
        vec![Input::Event(Event::InstallFailed {
            retryable: false,
            detail: "broken".into(),
        })],
    );
    assert_eq!(downloads(&actions), 0);
    assert_eq!(s.engine().phase.name(), PhaseName::Idle);
}

#[test]
fn results_that_pose_as_offers_are_ignored() {
    let t = step(&station(), Input::Event(Event::Started(boot())), now());
    assert!(t.ignored.is_some());
    assert!(t.actions.is_empty());
}

#[test]
fn a_withdrawn_offer_published_again_is_judged_afresh() {
    let (s, _) = run(
        station(),
        vec![
            Input::Started(boot()),
            control(1, true),
            offer(10, "rel-2", "1.1.0"),
            Input::OfferRetracted {
                topic: TOPIC.into(),
            },
        ],
    );
    assert!(s.held().is_none(), "the retraction withdrew the held offer");
    let (s, actions) = run(s, vec![offer(10, "rel-2", "1.1.0")]);
    assert!(s.held().is_some(), "the same offer again is held again");
    assert!(reports(&actions).iter().any(|r| matches!(
        r,
        Report::OfferHeld {
            reason: RejectReason::Frozen,
            ..
        }
    )));
}

#[test]
fn a_newer_offer_on_a_topic_replaces_the_one_waiting_there_as_busy() {
    let (s, _) = run(
        station(),
        vec![Input::Started(boot()), offer(10, "rel-2", "1.1.0")],
    );
    let bundle_id = s.engine().phase.job().expect("job").bundle_id;
    let (s, _) = run(
        s,
        vec![
            Input::Event(Event::DownloadComplete { bundle_id }),
            Input::Event(Event::BundleVerified { bundle_id }),
            offer(11, "rel-3", "1.2.0"),
            offer(12, "rel-4", "1.3.0"),
        ],
    );
    assert_eq!(
        s.waiting_on(TOPIC).map(|o| o.update_id.to_string()),
        Some("rel-4".into())
    );
}

#[test]
fn an_unreadable_message_is_refused_as_too_large_on_its_topic() {
    use crate::station::Unreadable;
    use crate::trust::RotationReject;
    let too_large = RejectReason::TooLarge {
        size: 3_000_000,
        limit: 65_536,
    };
    let device = Scope::Device(DeviceId::new("stn-0001").expect("id"));
    let cases: Vec<(Unreadable, Report)> = vec![
        (
            Unreadable::Offer {
                topic: TOPIC.into(),
            },
            Report::OfferRejected {
                update_id: None,
                sequence: None,
                reason: too_large.clone(),
            },
        ),
        (
            Unreadable::Control {
                topic_scope: device.clone(),
            },
            Report::ControlRefused {
                scope: Some(device),
                sequence: None,
                reason: too_large.clone(),
            },
        ),
        (
            Unreadable::Rotation,
            Report::RotationRefused {
                sequence: None,
                reason: RotationReject::TooLarge {
                    size: 3_000_000,
                    limit: 65_536,
                },
            },
        ),
    ];
    for (on, expected) in cases {
        let input = Input::Unreadable {
            on: on.clone(),
            size: 3_000_000,
            limit: 65_536,
        };
        let (s, actions) = run(station(), vec![input]);
        assert_eq!(reports(&actions), vec![&expected], "{on:?}");
        assert_eq!(
            s.engine(),
            station().engine(),
            "{on:?}: nothing else changes"
        );
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Save(_))),
            "{on:?}: nothing is saved"
        );
    }
}

#[test]
fn the_same_unreadable_offer_or_rotation_is_reported_once_and_a_control_at_every_try() {
    use crate::station::Unreadable;
    let again = |on: Unreadable, size: u64| Input::Unreadable {
        on,
        size,
        limit: 65_536,
    };
    let offer = || Unreadable::Offer {
        topic: TOPIC.into(),
    };
    let control = || Unreadable::Control {
        topic_scope: Scope::Fleet,
    };
    let (_, a) = run(station(), vec![again(offer(), 3), again(offer(), 3)]);
    assert_eq!(reports(&a).len(), 1, "offer: {a:?}");
    let (_, a) = run(station(), vec![again(offer(), 3), again(offer(), 4)]);
    assert_eq!(
        reports(&a).len(),
        2,
        "another size is another message: {a:?}"
    );
    let (_, a) = run(
        station(),
        vec![
            again(Unreadable::Rotation, 3),
            again(Unreadable::Rotation, 3),
        ],
    );
    assert_eq!(reports(&a).len(), 1, "rotation: {a:?}");
    let (_, a) = run(station(), vec![again(control(), 3), again(control(), 3)]);
    assert_eq!(reports(&a).len(), 2, "control: {a:?}");
}

#[test]
fn an_offer_that_replaces_an_unreadable_one_is_judged() {
    use crate::station::Unreadable;
    let unreadable = Input::Unreadable {
        on: Unreadable::Offer {
            topic: TOPIC.into(),
        },
        size: 3_000_000,
        limit: 65_536,
    };
    let (s, _) = run(station(), vec![unreadable, offer(5, "rel-2", "2.0.0")]);
    assert_eq!(s.engine().phase.name(), PhaseName::Downloading);
}
