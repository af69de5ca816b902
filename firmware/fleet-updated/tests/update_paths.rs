//! Simulated stations against a real mosquitto: a successful update, a slot failing its health
//! check, a slot that never comes up, and a broker restart in the middle of a download.
mod common;

use std::time::Duration;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, spawn};
use fleet_core::slot::{Slot, SlotHealth};
use fleet_core::update::{FallbackCause, Outcome, PhaseName, Report};
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

fn idle_with_outcome(s: &fleet_proto::StationState) -> bool {
    s.phase == PhaseName::Idle && s.last_outcome.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stations_commit_a_good_slot_and_fall_back_from_a_sick_or_dead_one() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(1))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let key = op.public_hex();

    // The operator's own tool publishes: `fleetctl push` (retained manifest and chunks, then
    // the signed offer), to a group and to one device.
    let files = tempfile::tempdir().expect("tempdir");
    let good_path = files.path().join("good.raucb");
    let dead_path = files.path().join("dead.raucb");
    std::fs::write(&good_path, bundle("1.1.0", Behaviour::Normal, 300_000)).expect("bundle");
    std::fs::write(&dead_path, bundle("1.1.0", Behaviour::Unbootable, 100_000)).expect("bundle");
    let addr = fleetctl::connection::BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };

    let canary = || StationOptions {
        groups: vec!["canary".into()],
        ..Default::default()
    };
    let ok = spawn("stn-ok", &broker, &key, canary());
    let sick = spawn(
        "stn-sick",
        &broker,
        &key,
        StationOptions {
            fail_health: true,
            ..canary()
        },
    );
    let dead_stn = spawn("stn-dead", &broker, &key, StationOptions::default());
    for id in ["stn-ok", "stn-sick", "stn-dead"] {
        watch
            .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
            .await
            .expect("idle");
    }

    for (path, to, chunk) in [
        (&good_path, "group:canary", 64 * 1024),
        (&dead_path, "device:stn-dead", 16 * 1024),
    ] {
        let mut req = fleetctl::publish::PushRequest::new(
            path.clone(),
            to.parse().expect("target"),
            v("1.1.0"),
            COMPATIBLE.to_owned(),
        );
        req.chunk_size = chunk;
        fleetctl::publish::push(&addr, op.key(), &req, &mut |_| {})
            .await
            .expect("fleetctl push");
    }

    // (1) committed on the new slot.
    let s = watch
        .wait_state("stn-ok", WAIT, idle_with_outcome)
        .await
        .expect("ok settles");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { slot: Slot::B, version, .. }) if *version == v("1.1.0")),
        "{s:#?}"
    );
    assert_eq!(
        (s.booted, s.committed, s.version.clone()),
        (Slot::B, Slot::B, v("1.1.0"))
    );
    assert_eq!(
        s.slots.iter().find(|x| x.slot == Slot::B).map(|x| x.health),
        Some(SlotHealth::Good)
    );
    watch
        .wait_event("stn-ok", WAIT, |e| {
            matches!(e.event, Report::Committed { slot: Slot::B, .. })
        })
        .await
        .expect("committed event");

    // (2) the new slot boots but fails its health check on every attempt: rolled back.
    let s = watch
        .wait_state("stn-sick", WAIT, idle_with_outcome)
        .await
        .expect("sick settles");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::RolledBack { bad_slot: Slot::B, cause: FallbackCause::HealthCheckFailed { check, .. }, .. }) if check == "sim-fail-file"),
        "{s:#?}"
    );
    assert_eq!(
        (s.booted, s.committed, s.version.clone()),
        (Slot::A, Slot::A, v("1.0.0"))
    );
    assert_eq!(
        s.slots.iter().find(|x| x.slot == Slot::B).map(|x| x.health),
        Some(SlotHealth::Bad)
    );
    watch
        .wait_event("stn-sick", WAIT, |e| {
            matches!(e.event, Report::HealthFailed { .. })
        })
        .await
        .expect("health-failed event");

    // (3) the new slot never comes up: the bootloader falls back once its attempts run out.
    let s = watch
        .wait_state("stn-dead", WAIT, idle_with_outcome)
        .await
        .expect("dead settles");
    assert!(
        matches!(
            &s.last_outcome,
            Some(Outcome::RolledBack {
                bad_slot: Slot::B,
                cause: FallbackCause::TrialDidNotBoot { .. },
                ..
            })
        ),
        "{s:#?}"
    );
    assert_eq!(
        (s.booted, s.committed, s.version.clone()),
        (Slot::A, Slot::A, v("1.0.0"))
    );
    watch
        .wait_event("stn-dead", WAIT, |e| {
            matches!(
                e.event,
                Report::TrialFellBack {
                    from: Slot::B,
                    to: Slot::A,
                    ..
                }
            )
        })
        .await
        .expect("fell-back event");

    // The simulated hardware agrees with what the stations reported.
    assert_eq!(ok.bootloader().read_env().expect("env").booted, Slot::B);
    let dead_env = dead_stn.bootloader().read_env().expect("env");
    assert_eq!(dead_env.booted, Slot::A);
    assert!(dead_env.boots >= 2, "the dead slot was tried: {dead_env:?}");

    for id in ["stn-ok", "stn-sick", "stn-dead"] {
        watch
            .wait_presence(id, "online", WAIT)
            .await
            .expect("online");
    }
    for st in [ok, sick, dead_stn] {
        st.stop().await;
    }
    for id in ["stn-ok", "stn-sick", "stn-dead"] {
        watch
            .wait_presence(id, "offline", WAIT)
            .await
            .expect("offline after stopping");
    }
    watch
        .wait_state("stn-ok", Duration::from_secs(5), |_| true)
        .await
        .expect("retained state stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_download_resumes_without_receiving_held_chunks_again() {
    let mut broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(2))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let key = op.public_hex();

    let b = bundle("2.0.0", Behaviour::Normal, 64 * 4096 - 100);
    let m = op
        .manifest(&b, COMPATIBLE, &v("2.0.0"), 4096)
        .expect("manifest");
    let chunks = m.chunk_count();
    let half = chunks / 2;
    // Only the first half of the chunks is on the broker when the download starts.
    op.publish_chunks(&m, &b, 0..half).await.expect("chunks");
    op.publish_manifest(&m, None).await.expect("manifest");
    let stn = spawn("stn-resume", &broker, &key, StationOptions::default());
    op.publish_offer(
        &offer_to_device("stn-resume", "rel-200", 1, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let half_bytes = u64::from(half) * 4096;
    watch
        .wait_state("stn-resume", WAIT, |s| {
            s.phase == PhaseName::Downloading
                && s.progress.is_some_and(|p| p.done_bytes == half_bytes)
        })
        .await
        .expect("half downloaded");

    // The broker goes down in the middle of the download and comes back with its retained
    // messages (persistence); the rest of the bundle is published after the restart.
    broker.restart().expect("restart");
    let op = Operator::connect(&broker, "operator-2", test_key(2))
        .await
        .expect("operator again");
    op.publish_chunks(&m, &b, half..chunks).await.expect("rest");

    let mut watch = Watcher::connect(&broker, "watcher-2")
        .await
        .expect("watcher again");
    let s = watch
        .wait_state("stn-resume", WAIT, idle_with_outcome)
        .await
        .expect("settles");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { .. })),
        "{s:#?}"
    );
    assert_eq!(s.version, v("2.0.0"));
    let summary = stn.stop().await;
    assert_eq!(
        summary.stats.resent_chunk_bytes, 0,
        "held chunks were sent again"
    );
    assert_eq!(
        summary.stats.stored_chunk_bytes, m.size,
        "every byte was received exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_the_rollout_percentage_widens_the_wave() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(6))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let files = tempfile::tempdir().expect("tempdir");
    let path = files.path().join("wave.raucb");
    std::fs::write(&path, bundle("1.2.0", Behaviour::Normal, 20_000)).expect("bundle");
    let addr = fleetctl::connection::BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let update = fleet_core::ids::UpdateId::new("wave-120").expect("id");
    let push = |percent: u8| {
        let mut req = fleetctl::publish::PushRequest::new(
            path.clone(),
            "group:field".parse().expect("target"),
            v("1.2.0"),
            COMPATIBLE.to_owned(),
        );
        req.chunk_size = 4096;
        req.update_id = Some(update.clone());
        req.percent = fleet_core::update::RolloutPercent::new(percent).expect("percent");
        req
    };
    let ids = ["stn-w1", "stn-w2", "stn-w3", "stn-w4"];
    let bucket = |id: &str| {
        fleet_core::update::wave::bucket(&fleet_core::ids::DeviceId::new(id).expect("id"), &update)
    };
    let percent = ids.iter().map(|id| bucket(id)).min().expect("ids") + 1;
    let (first, rest): (Vec<&str>, Vec<&str>) = ids.iter().partition(|id| bucket(id) < percent);
    assert!(
        !rest.is_empty(),
        "every station fell into the first wave; pick other ids"
    );

    let opts = || StationOptions {
        groups: vec!["field".into()],
        ..Default::default()
    };
    let stations: Vec<_> = ids
        .iter()
        .map(|id| spawn(id, &broker, &op.public_hex(), opts()))
        .collect();
    for id in ids {
        watch
            .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
            .await
            .expect("idle");
    }

    // The first wave: only stations whose bucket is below the percentage take it.
    fleetctl::publish::push(&addr, op.key(), &push(percent), &mut |_| {})
        .await
        .expect("push");
    for id in &first {
        let s = watch
            .wait_state(id, WAIT, idle_with_outcome)
            .await
            .expect("first wave");
        assert_eq!(s.version, v("1.2.0"), "{id}");
    }
    for id in &rest {
        watch
            .wait_event(id, WAIT, |e| {
                matches!(
                    &e.event,
                    Report::OfferRejected {
                        reason: fleet_core::update::RejectReason::NotInWave { .. },
                        ..
                    }
                )
            })
            .await
            .expect("outside the first wave");
        let s = &watch.states[*id];
        assert_eq!(
            (s.version.clone(), s.phase),
            (v("1.0.0"), PhaseName::Idle),
            "{id}"
        );
    }

    // The same update re-signed at 100 % with a higher sequence: everyone else follows.
    fleetctl::publish::push(&addr, op.key(), &push(100), &mut |_| {})
        .await
        .expect("push");
    for id in &rest {
        let s = watch
            .wait_state(id, WAIT, idle_with_outcome)
            .await
            .expect("second wave");
        assert_eq!(s.version, v("1.2.0"), "{id}");
    }
    for st in stations {
        st.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_refused_as_busy_is_taken_once_the_station_is_idle() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(8))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let a = bundle("1.1.0", Behaviour::Normal, 20_000);
    let b = bundle("1.2.0", Behaviour::Normal, 24_000);
    let ma = op
        .publish_bundle(&a, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");
    let mb = op
        .publish_bundle(&b, COMPATIBLE, &v("1.2.0"), 4096)
        .await
        .expect("bundle");
    let stn = spawn(
        "stn-busy",
        &broker,
        &op.public_hex(),
        StationOptions {
            groups: vec!["late".into()],
            health_delay_ms: 1500,
            ..Default::default()
        },
    );
    op.publish_offer(
        &offer_to_device("stn-busy", "rel-a", 1, &ma).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    // While the new slot is being checked, the next release arrives on a group topic.
    watch
        .wait_state("stn-busy", WAIT, |s| s.phase == PhaseName::HealthChecking)
        .await
        .expect("health checking");
    let offer_b = fleet_testkit::operator::offer_to_group("late", "rel-b", 2, &mb).expect("offer");
    op.publish_offer(&offer_b, None, None).await.expect("offer");
    watch
        .wait_event("stn-busy", WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferRejected {
                    reason: fleet_core::update::RejectReason::Busy { .. },
                    ..
                }
            )
        })
        .await
        .expect("busy while checking");
    // Once 1.1.0 is committed, the station takes 1.2.0 by itself.
    let s = watch
        .wait_state("stn-busy", WAIT, |s| {
            s.phase == PhaseName::Idle && s.version == v("1.2.0")
        })
        .await
        .expect("the busy offer is taken later");
    assert!(
        matches!(
            &s.last_outcome,
            Some(Outcome::Committed { slot: Slot::A, .. })
        ),
        "{s:#?}"
    );
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_withdrawn_while_refused_as_busy_is_never_installed() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(9))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let a = bundle("1.1.0", Behaviour::Normal, 20_000);
    let b = bundle("1.2.0", Behaviour::Normal, 24_000);
    let ma = op
        .publish_bundle(&a, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");
    let mb = op
        .publish_bundle(&b, COMPATIBLE, &v("1.2.0"), 4096)
        .await
        .expect("bundle");
    let id = "stn-withdrawn";
    let stn = spawn(
        id,
        &broker,
        &op.public_hex(),
        StationOptions {
            groups: vec!["late".into()],
            health_delay_ms: 2000,
            ..Default::default()
        },
    );
    op.publish_offer(
        &offer_to_device(id, "rel-a", 1, &ma).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::HealthChecking)
        .await
        .expect("health checking");
    let offer_b = fleet_testkit::operator::offer_to_group("late", "rel-b", 2, &mb).expect("offer");
    op.publish_offer(&offer_b, None, None).await.expect("offer");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferRejected {
                    reason: fleet_core::update::RejectReason::Busy { .. },
                    ..
                }
            )
        })
        .await
        .expect("busy while checking");
    // The operator withdraws 1.2.0 (an empty retained payload) while the trial is checked.
    let group_topic =
        fleet_proto::topic::group_offer(&fleet_core::ids::GroupId::new("late").expect("group"));
    op.publish_raw(&group_topic, Vec::new(), true)
        .await
        .expect("clear");
    let s = watch
        .wait_state(id, WAIT, idle_with_outcome)
        .await
        .expect("1.1.0 committed");
    assert_eq!(s.version, v("1.1.0"));
    // A marker after the commit: the station handles messages in order and offers queued as
    // busy again before its next message, so whatever it did with 1.2.0 is reported before
    // the marker's refusal.
    op.publish_raw(
        &fleet_proto::topic::device_offer(&fleet_core::ids::DeviceId::new(id).expect("id")),
        b"{not json".to_vec(),
        true,
    )
    .await
    .expect("marker");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferRejected {
                    reason: fleet_core::update::RejectReason::Malformed { .. },
                    ..
                }
            )
        })
        .await
        .expect("marker refused");
    let events = watch.events.get(id).cloned().unwrap_or_default();
    assert!(
        !events.iter().any(|e| matches!(
            &e.event,
            Report::OfferAccepted { update_id, .. } if update_id.as_str() == "rel-b"
        )),
        "the withdrawn offer was accepted: {events:#?}"
    );
    let s = watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");
    assert_eq!(s.version, v("1.1.0"));
    stn.stop().await;
}
