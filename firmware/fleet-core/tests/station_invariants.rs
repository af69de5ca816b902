//! Property tests of the station's safety invariants (`fleet_core::station`), over random input
//! sequences: offers on two topics (new, repeated, retracted), freezes, halts and pins coming
//! and going, and a simulated shell that answers the engine's actions (downloads, verdicts,
//! installs, trial boots, health checks) with random successes, failures and restarts.
use std::collections::{BTreeMap, BTreeSet};

use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::ports::{BootStatus, SlotStatus};
use fleet_core::rollout::{Control, Scope};
use fleet_core::slot::{Slot, SlotHealth};
use fleet_core::station::{Action, Input, SignedOffer, Station, step};
use fleet_core::time::Now;
use fleet_core::trust::TrustState;
use fleet_core::update::{
    self, BundleId, Downgrade, Event, Offer, Phase, Policy, PublicKey, Report, RolloutPercent,
    State, Target,
};
use proptest::prelude::*;

const CASES: u32 = 512;
const TOPICS: [&str; 2] = [
    "fleet/v1/devices/stn-0001/offer",
    "fleet/v1/groups/canary/offer",
];
const CONTROL_TOPIC: &str = "fleet/v1/devices/stn-0001/control";

fn v(minor: u64) -> Version {
    Version::new(1, minor, 0)
}

fn key() -> PublicKey {
    PublicKey::from_bytes([5; 32])
}

fn device() -> DeviceId {
    DeviceId::new("stn-0001").expect("valid")
}

fn update_id(n: u8) -> UpdateId {
    UpdateId::new(format!("rel-{}", n % 3)).expect("valid")
}

/// What the random sequence asks for; the harness turns it into an input that fits (mostly)
/// the station's state.
#[derive(Debug, Clone)]
enum Step {
    /// An offer on topic `topic` of update `u` at minor version `minor`; `n` makes the
    /// sequence (unique per topic: `2n + topic`).
    Offer {
        topic: u8,
        u: u8,
        minor: u8,
        n: u8,
    },
    /// The last offer sent on `topic` again (a retained message after a reconnect).
    Resend {
        topic: u8,
    },
    Retract {
        topic: u8,
    },
    Freeze(bool),
    Halt(Option<u8>),
    Pin(Option<u8>),
    DownloadComplete,
    DownloadFailed,
    Verified,
    VerifyFailed,
    Installed,
    InstallFailed(bool),
    /// The installer failed after arming a slot: the one it wrote (`true`) or, broken, the
    /// running one.
    InstallLeftArmed(bool),
    Armed,
    /// A (re)start: on the slot the engine expects (`true`) or the committed one.
    Boot(bool),
    HealthPassed,
    HealthFailed,
    MarkedGood,
    MarkedBad,
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..2, 0u8..3, 0u8..5, 0u8..40).prop_map(|(topic, u, minor, n)| Step::Offer { topic, u, minor, n }),
        1 => (0u8..2).prop_map(|topic| Step::Resend { topic }),
        2 => (0u8..2).prop_map(|topic| Step::Retract { topic }),
        2 => any::<bool>().prop_map(Step::Freeze),
        1 => proptest::option::of(0u8..3).prop_map(Step::Halt),
        1 => proptest::option::of(0u8..5).prop_map(Step::Pin),
        4 => Just(Step::DownloadComplete),
        1 => Just(Step::DownloadFailed),
        4 => Just(Step::Verified),
        1 => Just(Step::VerifyFailed),
        3 => Just(Step::Installed),
        1 => any::<bool>().prop_map(Step::InstallFailed),
        1 => any::<bool>().prop_map(Step::InstallLeftArmed),
        3 => Just(Step::Armed),
        3 => any::<bool>().prop_map(Step::Boot),
        2 => Just(Step::HealthPassed),
        1 => Just(Step::HealthFailed),
        2 => Just(Step::MarkedGood),
        2 => Just(Step::MarkedBad),
    ]
}

/// The shell's side of the run: what it sent, so the invariants can be judged.
struct Harness {
    station: Station,
    control_seq: u64,
    control: Control,
    last_offer: BTreeMap<u8, SignedOffer>,
    /// Bundles a `BundleVerified` was fed for.
    verified: BTreeSet<BundleId>,
    /// Offers (update, sequence) waiting on a topic when it was retracted, and not sent again.
    retracted: BTreeSet<(UpdateId, u64)>,
    /// Admissions (accepted or renewed) per (update, sequence).
    admitted: BTreeMap<(UpdateId, u64), u32>,
}

impl Harness {
    fn new() -> Self {
        let engine = State::new(
            update::Station {
                device_id: device(),
                groups: vec![fleet_core::ids::GroupId::new("canary").expect("valid")],
                compatible: "fleet-test".into(),
            },
            Policy::default(),
            Slot::A,
            v(0),
        );
        let trust = TrustState::bootstrap([key()]).expect("one key");
        let control = Control {
            scope: Scope::Device(device()),
            sequence: 0,
            freeze: false,
            halted: vec![],
            pin: None,
            issued_at: 0,
        };
        Self {
            station: Station::new(engine, BTreeMap::new(), trust, None),
            control_seq: 0,
            control,
            last_offer: BTreeMap::new(),
            verified: BTreeSet::new(),
            retracted: BTreeSet::new(),
            admitted: BTreeMap::new(),
        }
    }

    fn boot_status(&self, to_expected: bool) -> BootStatus {
        let e = self.station.engine();
        let booted = if to_expected {
            e.phase.update_slot().unwrap_or(e.committed)
        } else {
            e.committed
        };
        let version = e.phase.job().map(|j| j.version.clone());
        let status = |s: Slot| SlotStatus {
            slot: s,
            health: if s == e.committed {
                SlotHealth::Good
            } else {
                SlotHealth::Trial
            },
            attempts_left: 1,
            version: if s == e.committed {
                Some(e.committed_version.clone())
            } else {
                version.clone()
            },
        };
        BootStatus {
            booted,
            primary: booted,
            slots: [status(Slot::A), status(Slot::B)],
        }
    }

    fn with_control(&mut self, change: impl FnOnce(&mut Control)) -> Input {
        self.control_seq += 1;
        change(&mut self.control);
        self.control.sequence = self.control_seq;
        Input::Control {
            topic: CONTROL_TOPIC.into(),
            topic_scope: Scope::Device(device()),
            control: self.control.clone(),
        }
    }

    fn input(&mut self, s: &Step) -> Input {
        let e = self.station.engine().clone();
        let job_bundle = e
            .phase
            .job()
            .map_or(BundleId::from_bytes([9; 32]), |j| j.bundle_id);
        match s {
            Step::Offer { topic, u, minor, n } => {
                let sequence = 2 * u64::from(*n) + u64::from(*topic);
                let offer = Offer {
                    update_id: update_id(*u),
                    sequence,
                    bundle_id: BundleId::from_bytes([u8::try_from(sequence).unwrap_or(0); 32]),
                    bundle_size: 1000,
                    compatible: "fleet-test".into(),
                    version: v(u64::from(*minor)),
                    downgrade: Downgrade::Refuse,
                    target: Target::Device(device()),
                    rollout_percent: RolloutPercent::ALL,
                    issued_at: 1,
                    expires_at: None,
                    manifest_hash: None,
                };
                let mut digest = [0; 32];
                digest[..8].copy_from_slice(&sequence.to_be_bytes());
                digest[8] = *u;
                digest[9] = *minor;
                let signed = SignedOffer {
                    offer,
                    key_id: key().key_id(),
                    digest,
                };
                self.sent(*topic, signed)
            }
            Step::Resend { topic } => match self.last_offer.get(topic).cloned() {
                Some(signed) => self.sent(*topic, signed),
                None => Input::OfferRetracted {
                    topic: TOPICS[usize::from(*topic)].into(),
                },
            },
            Step::Retract { topic } => {
                let t = TOPICS[usize::from(*topic)];
                if let Some(o) = self.station.waiting_on(t) {
                    self.retracted.insert((o.update_id.clone(), o.sequence));
                }
                Input::OfferRetracted { topic: t.into() }
            }
            Step::Freeze(f) => self.with_control(|c| c.freeze = *f),
            Step::Halt(h) => {
                self.with_control(|c| c.halted = h.iter().map(|u| update_id(*u)).collect())
            }
            Step::Pin(p) => self.with_control(|c| c.pin = p.map(|m| v(u64::from(m)))),
            Step::DownloadComplete => Input::Event(Event::DownloadComplete {
                bundle_id: job_bundle,
            }),
            Step::DownloadFailed => Input::Event(Event::DownloadFailed {
                bundle_id: job_bundle,
                failure: update::DownloadFailure::Io {
                    detail: "lost".into(),
                },
            }),
            Step::Verified => {
                self.verified.insert(job_bundle);
                Input::Event(Event::BundleVerified {
                    bundle_id: job_bundle,
                })
            }
            Step::VerifyFailed => Input::Event(Event::BundleVerifyFailed {
                bundle_id: job_bundle,
                failure: update::VerifyFailure::Io {
                    detail: "bad".into(),
                },
            }),
            Step::Installed => match &e.phase {
                Phase::Installing { job, slot, .. } => Input::Event(Event::Installed {
                    slot: *slot,
                    version: job.version.clone(),
                }),
                _ => Input::Event(Event::Installed {
                    slot: e.committed.other(),
                    version: v(1),
                }),
            },
            Step::InstallFailed(retryable) => Input::Event(Event::InstallFailed {
                retryable: *retryable,
                detail: "failed".into(),
            }),
            Step::InstallLeftArmed(written) => Input::Event(Event::InstallLeftArmed {
                slot: match (&e.phase, written) {
                    (Phase::Installing { slot, .. }, true) => *slot,
                    _ => e.booted,
                },
                detail: "armed, version unknown".into(),
            }),
            Step::Armed => Input::Event(Event::TrialArmed {
                slot: e.phase.update_slot().unwrap_or(Slot::B),
            }),
            Step::Boot(expected) => Input::Started(self.boot_status(*expected)),
            Step::HealthPassed => Input::Event(Event::HealthPassed),
            Step::HealthFailed => Input::Event(Event::HealthFailed {
                check: "units".into(),
            }),
            Step::MarkedGood => Input::Event(Event::MarkedGood { slot: e.booted }),
            Step::MarkedBad => Input::Event(Event::MarkedBad {
                slot: e.phase.update_slot().unwrap_or(Slot::B),
            }),
        }
    }

    fn sent(&mut self, topic: u8, signed: SignedOffer) -> Input {
        self.retracted
            .remove(&(signed.offer.update_id.clone(), signed.offer.sequence));
        self.last_offer.insert(topic, signed.clone());
        Input::Offer {
            topic: TOPICS[usize::from(topic)].into(),
            signed,
        }
    }
}

/// Runs `steps`, checking `check(before, input, after, actions)` after each.
fn run(
    steps: &[Step],
    mut check: impl FnMut(&Harness, &Station, &[Action]) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new();
    let mut now = 0;
    for s in steps {
        now += 1000;
        let input = h.input(s);
        let t = step(&h.station, input, Now::untrusted(now));
        for a in &t.actions {
            if let Action::Report {
                report:
                    Report::OfferAccepted {
                        update_id,
                        sequence,
                        ..
                    }
                    | Report::OfferRenewed {
                        update_id,
                        sequence,
                    },
                ..
            } = a
            {
                *h.admitted
                    .entry((update_id.clone(), *sequence))
                    .or_default() += 1;
            }
        }
        check(&h, &t.next, &t.actions)?;
        h.station = t.next;
    }
    Ok(())
}

fn installs(actions: &[Action]) -> impl Iterator<Item = &update::Action> {
    actions.iter().filter_map(|a| match a {
        Action::Update(i @ update::Action::Install { .. }) => Some(i),
        _ => None,
    })
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step_strategy(), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn a_frozen_or_halted_station_never_installs(steps in steps()) {
        run(&steps, |_, next, actions| {
            let effective = next.effective();
            for i in installs(actions) {
                let update::Action::Install { update_id, .. } = i else { continue };
                prop_assert!(!effective.frozen, "installed while frozen");
                prop_assert!(!effective.halted.contains(update_id), "installed a halted update");
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_pinned_station_never_installs_above_its_pin(steps in steps()) {
        run(&steps, |_, next, actions| {
            let pin = next.effective().pin;
            for i in installs(actions) {
                let update::Action::Install { version, .. } = i else { continue };
                if let Some(pin) = &pin {
                    prop_assert!(version <= pin, "installed {} above pin {}", version, pin);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn an_offer_is_admitted_at_most_once(steps in steps()) {
        run(&steps, |h, _, _| {
            for (offer, n) in &h.admitted {
                prop_assert!(*n <= 1, "{:?} admitted {} times", offer, n);
            }
            Ok(())
        })?;
    }

    #[test]
    fn no_install_without_a_verified_bundle_under_the_controls_in_force(steps in steps()) {
        run(&steps, |h, next, actions| {
            for i in installs(actions) {
                let update::Action::Install { bundle_id, update_id, version, .. } = i else { continue };
                prop_assert!(h.verified.contains(bundle_id), "installed a bundle never verified");
                prop_assert!(
                    fleet_core::rollout::decide_control(&next.effective(), update_id, version).is_ok(),
                    "installed against the controls in force"
                );
                let job = next.engine().phase.job();
                prop_assert_eq!(job.map(|j| j.bundle_id), Some(*bundle_id));
            }
            Ok(())
        })?;
    }

    #[test]
    fn the_slot_installed_into_is_never_the_booted_one(steps in steps()) {
        run(&steps, |h, next, actions| {
            for i in installs(actions) {
                let update::Action::Install { slot, .. } = i else { continue };
                prop_assert_ne!(*slot, h.station.engine().booted);
                prop_assert_ne!(*slot, next.engine().booted);
                prop_assert_ne!(*slot, next.engine().committed);
            }
            Ok(())
        })?;
    }

    #[test]
    fn the_committed_slot_is_never_marked_bad(steps in steps()) {
        run(&steps, |h, _, actions| {
            for a in actions {
                if let Action::Update(update::Action::MarkBad { slot }) = a {
                    prop_assert_ne!(*slot, h.station.engine().committed);
                }
            }
            Ok(())
        })?;
    }

    #[test]
    fn a_retracted_offer_is_never_installed(steps in steps()) {
        run(&steps, |h, _, actions| {
            for a in actions {
                if let Action::Report { report: Report::OfferAccepted { update_id, sequence, .. }, .. } = a {
                    prop_assert!(
                        !h.retracted.contains(&(update_id.clone(), *sequence)),
                        "took up {} {} after its offer was retracted", update_id, sequence
                    );
                }
            }
            Ok(())
        })?;
    }
}

/// The properties above are only worth something if the random runs reach what they guard:
/// installs, holds and retractions of waiting offers.
#[test]
fn the_random_runs_reach_installs_holds_and_retractions() {
    use proptest::strategy::ValueTree as _;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut installed, mut held, mut retracted) = (0, 0, 0);
    for _ in 0..256 {
        let steps = steps().new_tree(&mut runner).expect("a run").current();
        let mut saw_retraction = false;
        run(&steps, |h, _, actions| {
            installed += installs(actions).count();
            held += actions
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        Action::Report {
                            report: Report::OfferHeld { .. },
                            ..
                        }
                    )
                })
                .count();
            saw_retraction |= !h.retracted.is_empty();
            Ok(())
        })
        .expect("no property is checked here");
        retracted += usize::from(saw_retraction);
    }
    assert!(installed >= 25, "{installed} installs in 256 runs");
    assert!(held >= 25, "{held} holds in 256 runs");
    assert!(retracted >= 5, "{retracted} runs retracted a waiting offer");
}
