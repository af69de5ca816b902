use super::*;
use crate::ids::{DeviceId, GroupId, UpdateId, Version};
use crate::update::{RejectReason, RolloutPercent, Station};

fn pct(p: u8) -> WaveSpec {
    WaveSpec::Percent(RolloutPercent::new(p).expect("valid"))
}

fn dev(s: &str) -> DeviceId {
    DeviceId::new(s).expect("valid")
}

fn plan() -> Plan {
    Plan {
        group: GroupId::new("field").expect("valid"),
        waves: vec![pct(10), pct(50), pct(100)],
        min_stations: 5,
        success_percent: 90,
        failure_percent: 20,
        wave_timeout_s: Some(3600),
        window: None,
    }
}

fn running(wave: usize) -> Progress {
    Progress {
        wave,
        wave_started_at: 1_000,
        status: Status::Running,
    }
}

fn tally(members: u32, succeeded: u32, failed: u32) -> Tally {
    Tally {
        members,
        succeeded,
        failed,
        in_progress: members - succeeded - failed,
        waiting: 0,
    }
}

#[test]
fn decisions_follow_the_rules_in_order() {
    let p = plan();
    let now = Some(1_100);
    let cases: Vec<(&str, Progress, Tally, Decision)> = vec![
        (
            "a wave that reached its success share advances",
            running(0),
            tally(10, 9, 1),
            Decision::Advance { to: 1 },
        ),
        (
            "the last wave completes",
            running(2),
            tally(50, 50, 0),
            Decision::Complete,
        ),
        (
            "a failure share above the threshold halts",
            running(1),
            tally(40, 7, 3),
            Decision::Halt(HaltReason::FailureRate {
                wave: 1,
                failed: 3,
                finished: 10,
                failure_percent: 20,
            }),
        ),
        (
            "failures below the minimum count do not halt yet",
            running(1),
            tally(40, 1, 3),
            Decision::Wait(WaitReason::TooFewFinished {
                finished: 4,
                needed: 5,
            }),
        ),
        (
            "a failure share at the threshold does not halt",
            running(1),
            tally(40, 8, 2),
            Decision::Wait(WaitReason::BelowSuccess {
                succeeded: 8,
                needed: 36,
            }),
        ),
        (
            "a wave smaller than the minimum is judged on all its stations",
            running(0),
            tally(2, 1, 1),
            Decision::Halt(HaltReason::FailureRate {
                wave: 0,
                failed: 1,
                finished: 2,
                failure_percent: 20,
            }),
        ),
        (
            "a halted rollout does not move",
            Progress {
                status: Status::Halted {
                    reason: HaltReason::Operator { note: "x".into() },
                },
                ..running(0)
            },
            tally(10, 10, 0),
            Decision::Wait(WaitReason::NotRunning),
        ),
    ];
    for (name, progress, t, want) in cases {
        assert_eq!(decide(&p, &progress, &t, now), want, "{name}");
    }
}

#[test]
fn a_wave_past_its_time_limit_halts_unless_it_succeeded() {
    let p = plan();
    let late = Some(1_000 + 3_601);
    assert!(matches!(
        decide(&p, &running(0), &tally(10, 6, 0), late),
        Decision::Halt(HaltReason::WaveTimedOut { limit_s: 3600, .. })
    ));
    assert_eq!(
        decide(&p, &running(0), &tally(10, 9, 0), late),
        Decision::Advance { to: 1 }
    );
}

#[test]
fn a_ready_wave_waits_for_the_maintenance_window() {
    let mut p = plan();
    p.window = Some(Window {
        start_hour: 22,
        end_hour: 4,
    });
    let noon = 12 * 3600;
    let night = 23 * 3600;
    assert_eq!(
        decide(&p, &running(0), &tally(10, 10, 0), Some(noon)),
        Decision::Wait(WaitReason::OutsideWindow)
    );
    assert_eq!(
        decide(&p, &running(0), &tally(10, 10, 0), Some(night)),
        Decision::Advance { to: 1 }
    );
    assert_eq!(
        decide(&p, &running(0), &tally(10, 10, 0), None),
        Decision::Wait(WaitReason::OutsideWindow)
    );
}

#[test]
fn invalid_plans_are_refused() {
    let mut bad = Vec::new();
    let mut p = plan();
    p.waves = vec![];
    bad.push(p);
    let mut p = plan();
    p.waves = vec![pct(50), pct(10)];
    bad.push(p);
    let mut p = plan();
    p.waves = vec![pct(10), WaveSpec::Devices(vec![dev("a")])];
    bad.push(p);
    let mut p = plan();
    p.waves = vec![WaveSpec::Devices(vec![])];
    bad.push(p);
    let mut p = plan();
    p.success_percent = 0;
    bad.push(p);
    let mut p = plan();
    p.failure_percent = 100;
    bad.push(p);
    for p in bad {
        assert!(p.validate().is_err(), "{p:?}");
    }
    assert!(plan().validate().is_ok());
}

#[test]
fn canaries_are_in_their_device_wave_and_others_by_bucket() {
    let mut p = plan();
    p.waves.insert(0, WaveSpec::Devices(vec![dev("canary-1")]));
    assert_eq!(p.wave_of(&dev("canary-1"), 99), Some(0));
    assert_eq!(p.wave_of(&dev("x"), 5), Some(1));
    assert_eq!(p.wave_of(&dev("x"), 10), Some(2));
    assert_eq!(p.wave_of(&dev("x"), 99), Some(3));
    p.waves.pop();
    assert_eq!(p.wave_of(&dev("x"), 99), None);
}

#[test]
fn plans_read_from_kebab_case_and_refuse_unknown_keys() {
    let json = r#"{"group":"field","waves":[{"devices":["stn-1"]},{"percent":30},{"percent":100}],
        "min-stations":3,"success-percent":80,"failure-percent":20,"wave-timeout-s":600}"#;
    let p: Plan = serde_json::from_str(json).expect("plan");
    assert_eq!(p.waves.len(), 3);
    assert!(p.validate().is_ok());
    let unknown = json.replace("\"min-stations\"", "\"min-station\"");
    assert!(serde_json::from_str::<Plan>(&unknown).is_err());
}

fn station() -> Station {
    Station {
        device_id: dev("stn-1"),
        groups: vec![GroupId::new("field").expect("valid")],
        compatible: "fleet-sim".into(),
    }
}

fn control(scope: Scope, sequence: u64) -> Control {
    Control {
        scope,
        sequence,
        freeze: false,
        halted: vec![],
        pin: None,
        issued_at: 0,
    }
}

#[test]
fn controls_for_other_stations_or_replayed_are_refused() {
    let s = station();
    let other_group = control(Scope::Group(GroupId::new("lab").expect("valid")), 5);
    assert_eq!(
        accept_control(&s, None, &other_group),
        Err(ControlRefused::NotForThisStation)
    );
    let other_dev = control(Scope::Device(dev("stn-2")), 5);
    assert!(accept_control(&s, None, &other_dev).is_err());
    let ours = control(Scope::Fleet, 5);
    assert!(accept_control(&s, None, &ours).is_ok());
    assert_eq!(
        accept_control(&s, Some(5), &ours),
        Err(ControlRefused::Replayed {
            sequence: 5,
            last: 5
        })
    );
}

#[test]
fn freeze_halt_and_pin_refuse_with_their_reasons() {
    let u = UpdateId::new("rel-2").expect("valid");
    let v = Version::new(2, 0, 0);
    let mut fleet = control(Scope::Fleet, 1);
    let mut group = control(Scope::Group(GroupId::new("field").expect("valid")), 1);
    let mut device = control(Scope::Device(dev("stn-1")), 1);
    assert_eq!(
        decide_control(&Effective::merge([&fleet, &group, &device]), &u, &v),
        Ok(())
    );
    device.pin = Some(Version::new(1, 5, 0));
    group.pin = Some(Version::new(3, 0, 0));
    assert_eq!(
        decide_control(&Effective::merge([&fleet, &group, &device]), &u, &v),
        Err(RejectReason::Pinned {
            pin: Version::new(1, 5, 0),
            offered: v.clone()
        })
    );
    group.halted = vec![u.clone()];
    assert_eq!(
        decide_control(&Effective::merge([&fleet, &group, &device]), &u, &v),
        Err(RejectReason::Halted {
            update_id: u.clone()
        })
    );
    fleet.freeze = true;
    assert_eq!(
        decide_control(&Effective::merge([&fleet, &group, &device]), &u, &v),
        Err(RejectReason::Frozen)
    );
    let other = UpdateId::new("rel-3").expect("valid");
    fleet.freeze = false;
    device.pin = None;
    assert_eq!(
        decide_control(&Effective::merge([&fleet, &group, &device]), &other, &v),
        Ok(())
    );
}

#[test]
fn control_reasons_serialize_with_their_codes() {
    let r = RejectReason::Halted {
        update_id: UpdateId::new("rel-2").expect("valid"),
    };
    assert_eq!(
        serde_json::to_string(&r).expect("json"),
        r#"{"code":"halted","update-id":"rel-2"}"#
    );
    assert_eq!(
        serde_json::to_string(&RejectReason::Frozen).expect("json"),
        r#"{"code":"frozen"}"#
    );
}

#[test]
fn admission_under_control_applies_the_offer_rules_first_then_the_controls() {
    use crate::time::Now;
    use crate::update::{
        AdmissionContext, BundleId, Downgrade, KeyId, Offer, SignatureVerdict, Target,
    };
    let s = station();
    let installed = Version::new(1, 0, 0);
    let ctx = AdmissionContext {
        station: &s,
        installed: &installed,
        last_sequence: Some(3),
        max_bundle_bytes: 1 << 30,
    };
    let offer = |sequence| Offer {
        update_id: UpdateId::new("rel-2").expect("valid"),
        sequence,
        bundle_id: BundleId::from_bytes([1; 32]),
        bundle_size: 10,
        compatible: "fleet-sim".into(),
        version: Version::new(2, 0, 0),
        downgrade: Downgrade::Refuse,
        target: Target::Group(GroupId::new("field").expect("valid")),
        rollout_percent: RolloutPercent::ALL,
        issued_at: 0,
        expires_at: None,
        manifest_hash: None,
    };
    let verdict = SignatureVerdict::Trusted {
        key_id: KeyId::from_bytes([2; 8]),
    };
    let now = Now {
        monotonic_ms: 0,
        wall_unix_s: None,
    };
    let frozen = Effective {
        frozen: true,
        ..Effective::default()
    };
    assert!(matches!(
        decide_offer_under_control(&ctx, &frozen, &offer(3), verdict, now),
        Err(RejectReason::Replayed { .. })
    ));
    assert_eq!(
        decide_offer_under_control(&ctx, &frozen, &offer(4), verdict, now),
        Err(RejectReason::Frozen)
    );
    assert!(
        decide_offer_under_control(&ctx, &Effective::default(), &offer(4), verdict, now).is_ok()
    );
}

#[test]
fn the_control_responsible_for_a_refusal_is_the_one_that_causes_it() {
    use crate::rollout::responsible;
    let u = UpdateId::new("rel-2").expect("valid");
    let mut fleet = control(Scope::Fleet, 4);
    let mut group = control(Scope::Group(GroupId::new("field").expect("valid")), 7);
    let mut device = control(Scope::Device(dev("stn-1")), 9);
    fleet.freeze = true;
    group.halted = vec![u.clone()];
    device.pin = Some(Version::new(1, 5, 0));
    let all = [&fleet, &group, &device];
    let seq = |r: &RejectReason| responsible(all, r).map(|c| c.sequence);
    assert_eq!(seq(&RejectReason::Frozen), Some(4));
    assert_eq!(seq(&RejectReason::Halted { update_id: u }), Some(7));
    assert_eq!(
        seq(&RejectReason::Pinned {
            pin: Version::new(1, 5, 0),
            offered: Version::new(2, 0, 0)
        }),
        Some(9)
    );
    assert_eq!(seq(&RejectReason::BadSignature), None);
}
