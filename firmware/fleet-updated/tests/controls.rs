//! The real station daemon obeys the operators' signed controls (freeze, halt, pin) against a
//! real mosquitto, and reports what it holds back; plus the reporting fixes: the last state
//! before an exit-to-reboot reaches the broker, end-of-update events carry the update id, and
//! install progress is in the retained state.
mod common;

use std::process::Stdio;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, config_text, spawn, start};
use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, GroupId, UpdateId};
use fleet_core::rollout::{Control, Scope};
use fleet_core::update::{Outcome, PhaseName, RejectReason, Report};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::rollout::control_topic;
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, offer_to_group, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};
use fleet_updated::EXIT_REBOOT;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-updated");

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

fn device(id: &str) -> Scope {
    Scope::Device(DeviceId::new(id).expect("device id"))
}

fn control(scope: Scope, sequence: u64) -> Control {
    Control {
        scope,
        sequence,
        freeze: false,
        halted: vec![],
        pin: None,
        issued_at: 1_800_000_000,
    }
}

/// Signs `c` with `key` and publishes it retained on `topic` (its scope's topic by default).
async fn publish_control(
    op: &Operator,
    c: &Control,
    key: Option<&SigningKey>,
    topic: Option<&str>,
) {
    let sealed = envelope::seal_json(Kind::Control, c, key.unwrap_or(op.key())).expect("seal");
    let t = topic.map_or_else(|| control_topic(&c.scope), str::to_owned);
    op.publish_raw(&t, sealed, true)
        .await
        .expect("publish control");
}

/// Publishes a normal test bundle of `len` bytes at `version` in chunks of `chunk_size`.
async fn publish_bundle(
    op: &Operator,
    version: &str,
    len: usize,
    chunk_size: u32,
) -> fleet_proto::BundleManifest {
    op.publish_bundle(
        &bundle(version, Behaviour::Normal, len),
        COMPATIBLE,
        &v(version),
        chunk_size,
    )
    .await
    .expect("bundle")
}

/// Signs `offer` with the operator's key and publishes it retained on its target's topic.
async fn publish_offer(op: &Operator, offer: anyhow::Result<fleet_core::update::Offer>) {
    op.publish_offer(&offer.expect("offer"), None, None)
        .await
        .expect("offer");
}

fn committed_at(version: &str) -> impl Fn(&fleet_proto::StationState) -> bool {
    let want = v(version);
    move |s| {
        s.phase == PhaseName::Idle
            && matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == want)
    }
}

fn saw(watch: &Watcher, id: &str, pred: impl Fn(&Report) -> bool) -> bool {
    watch
        .events
        .get(id)
        .is_some_and(|v| v.iter().any(|e| pred(&e.event)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_station_does_not_install_until_unfrozen() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(11))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-frozen";
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");

    let freeze = Control {
        freeze: true,
        ..control(Scope::Fleet, 1)
    };
    publish_control(&op, &freeze, None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                e.event,
                Report::ControlAccepted {
                    scope: Scope::Fleet,
                    sequence: 1
                }
            )
        })
        .await
        .expect("freeze accepted");
    let m = publish_bundle(&op, "1.1.0", 20_000, 8192).await;
    publish_offer(&op, offer_to_device(id, "rel-110", 1, &m)).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferHeld {
                    reason: RejectReason::Frozen,
                    scope: Some(Scope::Fleet),
                    control_sequence: Some(1),
                    ..
                }
            )
        })
        .await
        .expect("offer held");
    let s = watch
        .wait_state(id, WAIT, |s| s.held.is_some())
        .await
        .expect("held in state");
    let held = s.held.expect("held");
    assert_eq!(held.reason, RejectReason::Frozen);
    assert_eq!(
        (held.scope, held.control_sequence),
        (Some(Scope::Fleet), Some(1))
    );
    assert_eq!(held.update_id.as_str(), "rel-110");
    assert_eq!(s.phase, PhaseName::Idle, "nothing starts while frozen");
    assert!(!saw(&watch, id, |r| matches!(
        r,
        Report::DownloadStarted { .. } | Report::InstallStarted { .. }
    )));

    publish_control(&op, &control(Scope::Fleet, 2), None, None).await;
    watch
        .wait_event(id, WAIT, |e| matches!(&e.event, Report::OfferReleased { update_id } if update_id.as_str() == "rel-110"))
        .await
        .expect("released");
    let s = watch
        .wait_state(id, WAIT, committed_at("1.1.0"))
        .await
        .expect("installed once unfrozen");
    assert!(s.held.is_none(), "{s:#?}");
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_that_arrives_during_download_stops_the_station_before_install_and_resume_completes_it()
 {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(12))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-halt";
    let b = bundle("1.2.0", Behaviour::Normal, 40 * 4096);
    let m = op
        .manifest(&b, COMPATIBLE, &v("1.2.0"), 4096)
        .expect("manifest");
    let (n, half) = (m.chunk_count(), 20u32);
    op.publish_chunks(&m, &b, 0..half).await.expect("chunks");
    op.publish_manifest(&m, None).await.expect("manifest");
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    publish_offer(&op, offer_to_device(id, "rel-120", 3, &m)).await;
    let half_bytes = u64::from(half) * 4096;
    watch
        .wait_state(id, WAIT, |s| {
            s.progress.is_some_and(|p| p.done_bytes == half_bytes)
        })
        .await
        .expect("half downloaded");

    let halt = Control {
        halted: vec![UpdateId::new("rel-120").expect("id")],
        ..control(device(id), 1)
    };
    publish_control(&op, &halt, None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::ControlAccepted { sequence: 1, .. })
        })
        .await
        .expect("halt accepted");
    op.publish_chunks(&m, &b, half..n).await.expect("rest");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(&e.event, Report::OfferHeld { reason: RejectReason::Halted { update_id }, .. } if update_id.as_str() == "rel-120")
        })
        .await
        .expect("held before install");
    let s = watch
        .wait_state(id, WAIT, |s| s.held.is_some())
        .await
        .expect("held in state");
    assert_eq!(s.phase, PhaseName::Verifying, "{s:#?}");
    let held = s.held.expect("held");
    assert_eq!(
        (held.scope, held.control_sequence),
        (Some(device(id)), Some(1))
    );
    assert!(!saw(&watch, id, |r| matches!(
        r,
        Report::InstallStarted { .. }
    )));
    let kept = fleet_updated::download::bundle_path(&stn.data_dir(), &m.bundle_id.to_string());
    assert!(
        kept.exists(),
        "the verified bundle is kept: {}",
        kept.display()
    );

    // Resumed: the same scope's next control no longer lists the update.
    publish_control(&op, &control(device(id), 2), None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::OfferReleased { .. })
        })
        .await
        .expect("released");
    watch
        .wait_state(id, WAIT, committed_at("1.2.0"))
        .await
        .expect("installed after resume");
    let summary = stn.stop().await;
    assert_eq!(
        summary.stats.stored_chunk_bytes, m.size,
        "nothing was downloaded twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_station_ignores_offers_above_its_pin() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(13))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-pinned";
    let stn = spawn(
        id,
        &broker,
        &op.public_hex(),
        StationOptions {
            groups: vec!["field".into()],
            ..Default::default()
        },
    );
    let field = Scope::Group(GroupId::new("field").expect("group"));
    let pin = Control {
        pin: Some(v("1.0.5")),
        ..control(field.clone(), 1)
    };
    publish_control(&op, &pin, None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::ControlAccepted { sequence: 1, .. })
        })
        .await
        .expect("pin accepted");
    let above = publish_bundle(&op, "1.1.0", 10_000, 8192).await;
    publish_offer(&op, offer_to_group("field", "rel-110", 1, &above)).await;
    let s = watch
        .wait_state(id, WAIT, |s| s.held.is_some())
        .await
        .expect("held");
    let held = s.held.expect("held");
    assert!(
        matches!(&held.reason, RejectReason::Pinned { pin, offered } if *pin == v("1.0.5") && *offered == v("1.1.0")),
        "{held:?}"
    );
    assert_eq!((held.scope, s.phase), (Some(field), PhaseName::Idle));

    // An offer at or below the pin is taken.
    let below = publish_bundle(&op, "1.0.4", 10_000, 8192).await;
    publish_offer(&op, offer_to_group("field", "rel-104", 2, &below)).await;
    let s = watch
        .wait_state(id, WAIT, committed_at("1.0.4"))
        .await
        .expect("took the pinned version");
    assert!(s.held.is_none());
    assert!(!saw(&watch, id, |r| matches!(
        r,
        Report::OfferReleased { .. }
    )));
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_badly_signed_control_is_refused_and_changes_nothing() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(14))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-refuse";
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    let freeze = Control {
        freeze: true,
        ..control(Scope::Fleet, 5)
    };
    publish_control(&op, &freeze, None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::ControlAccepted { sequence: 5, .. })
        })
        .await
        .expect("freeze accepted");

    let refused = |watch: &Watcher, pred: &dyn Fn(&RejectReason) -> bool| {
        saw(
            watch,
            id,
            |r| matches!(r, Report::ControlRefused { reason, .. } if pred(reason)),
        )
    };
    // Signed by a key the station does not trust.
    publish_control(&op, &control(Scope::Fleet, 6), Some(&test_key(99)), None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                e.event,
                Report::ControlRefused {
                    reason: RejectReason::UnknownKey { .. },
                    ..
                }
            )
        })
        .await
        .expect("unknown key refused");
    // A trusted signature over other bytes.
    let sealed =
        envelope::seal_json(Kind::Control, &control(Scope::Fleet, 7), op.key()).expect("seal");
    let mut env: serde_json::Value = serde_json::from_slice(&sealed).expect("json");
    let other =
        envelope::seal_json(Kind::Control, &control(Scope::Fleet, 8), op.key()).expect("seal");
    let other: serde_json::Value = serde_json::from_slice(&other).expect("json");
    env["sig"] = other["sig"].clone();
    op.publish_raw(
        &control_topic(&Scope::Fleet),
        serde_json::to_vec(&env).expect("json"),
        true,
    )
    .await
    .expect("publish");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                e.event,
                Report::ControlRefused {
                    reason: RejectReason::BadSignature,
                    ..
                }
            )
        })
        .await
        .expect("bad signature refused");
    // A replay of the sequence in force, lifting the freeze.
    publish_control(&op, &control(Scope::Fleet, 5), None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                e.event,
                Report::ControlRefused {
                    reason: RejectReason::Replayed {
                        sequence: 5,
                        last_accepted: 5
                    },
                    ..
                }
            )
        })
        .await
        .expect("replay refused");
    // Another station's control published on the fleet topic.
    publish_control(
        &op,
        &control(device(id), 9),
        None,
        Some(&control_topic(&Scope::Fleet)),
    )
    .await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                e.event,
                Report::ControlRefused {
                    reason: RejectReason::Malformed { .. },
                    sequence: Some(9),
                    ..
                }
            )
        })
        .await
        .expect("wrong scope refused");
    assert!(refused(&watch, &|r| matches!(
        r,
        RejectReason::UnknownKey { .. }
    )));

    // Still frozen by sequence 5.
    let m = publish_bundle(&op, "1.1.0", 10_000, 8192).await;
    publish_offer(&op, offer_to_device(id, "rel-110", 1, &m)).await;
    let s = watch
        .wait_state(id, WAIT, |s| s.held.is_some())
        .await
        .expect("held");
    let held = s.held.expect("held");
    assert_eq!(
        (held.reason, held.control_sequence),
        (RejectReason::Frozen, Some(5))
    );
    assert_eq!(s.phase, PhaseName::Idle);
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controls_survive_a_daemon_restart() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(15))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-remember";
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    let freeze = Control {
        freeze: true,
        ..control(device(id), 1)
    };
    publish_control(&op, &freeze, None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::ControlAccepted { sequence: 1, .. })
        })
        .await
        .expect("freeze accepted");
    let (dir, config) = stn.power_cut();
    // The broker forgets the control: only the station's own record can hold it now.
    op.publish_raw(&control_topic(&device(id)), vec![], true)
        .await
        .expect("clear");
    watch.clear_events();
    let stn = start(id, dir, config);
    let m = publish_bundle(&op, "1.1.0", 10_000, 8192).await;
    publish_offer(&op, offer_to_device(id, "rel-110", 1, &m)).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                e.event,
                Report::OfferHeld {
                    reason: RejectReason::Frozen,
                    control_sequence: Some(1),
                    ..
                }
            )
        })
        .await
        .expect("still frozen after the restart");
    // Its sequence is remembered too: a replay of sequence 1 cannot lift it.
    publish_control(&op, &control(device(id), 1), None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                e.event,
                Report::ControlRefused {
                    reason: RejectReason::Replayed { .. },
                    ..
                }
            )
        })
        .await
        .expect("replay refused");
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rebooting_state_is_on_the_broker_before_the_daemon_exits() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(16))
        .await
        .expect("operator");
    let id = "stn-exit";
    let m = publish_bundle(&op, "3.1.0", 30_000, 8192).await;
    publish_offer(&op, offer_to_device(id, "rel-310", 1, &m)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("updated.toml");
    let text = config_text(
        id,
        &broker,
        &op.public_hex(),
        dir.path(),
        &StationOptions::default(),
    );
    std::fs::write(&cfg, text).expect("config");
    let run = |args: &[&str]| {
        let mut c = tokio::process::Command::new(BIN);
        c.arg("--config")
            .arg(&cfg)
            .args(args)
            .kill_on_drop(true)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    assert!(
        run(&["--sim-boot"])
            .status()
            .await
            .expect("sim boot")
            .success()
    );
    let status = tokio::time::timeout(WAIT, run(&[]).status())
        .await
        .expect("in time")
        .expect("daemon");
    assert_eq!(status.code(), Some(EXIT_REBOOT));
    // Read only after the process is gone: the retained state must already be the last one.
    let mut late = Watcher::connect(&broker, "late-watcher")
        .await
        .expect("watcher");
    let s = late
        .wait_state(id, std::time::Duration::from_secs(5), |_| true)
        .await
        .expect("retained state");
    assert_eq!(s.phase, PhaseName::Rebooting, "{s:#?}");
    assert_eq!(s.update_id.as_ref().map(UpdateId::as_str), Some("rel-310"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_and_rolled_back_events_carry_the_update_id() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(17))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let key = op.public_hex();
    let opts = |fail_health| StationOptions {
        groups: vec!["canary".into()],
        fail_health,
        ..Default::default()
    };
    let ok = spawn("stn-good", &broker, &key, opts(false));
    let sick = spawn("stn-sick", &broker, &key, opts(true));
    for id in ["stn-good", "stn-sick"] {
        watch
            .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
            .await
            .expect("idle");
    }
    // Large enough for several install progress reports (one per 256 KiB copied).
    let m = publish_bundle(&op, "1.3.0", 900_000, 64 * 1024).await;
    publish_offer(&op, offer_to_group("canary", "rel-130", 1, &m)).await;
    // Install progress is in the retained state, not only in events.
    let s = watch
        .wait_state("stn-good", WAIT, |s| {
            s.phase == PhaseName::Installing && s.install_percent.is_some_and(|p| p > 0)
        })
        .await
        .expect("install progress in state");
    assert!(s.install_percent.is_some_and(|p| p <= 100));
    let is_rel = |e: &fleet_proto::StationEvent| {
        e.update_id.as_ref().map(UpdateId::as_str) == Some("rel-130")
    };
    let e = watch
        .wait_event("stn-good", WAIT, |e| {
            matches!(e.event, Report::Committed { .. })
        })
        .await
        .expect("committed");
    assert!(is_rel(&e), "{e:#?}");
    let e = watch
        .wait_event("stn-sick", WAIT, |e| {
            matches!(e.event, Report::RolledBack { .. })
        })
        .await
        .expect("rolled back");
    assert!(is_rel(&e), "{e:#?}");
    ok.stop().await;
    sick.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_restarted_while_held_before_install_stays_held_until_resumed() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(18))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-held-restart";
    let b = bundle("1.4.0", Behaviour::Normal, 20 * 4096);
    let m = op
        .manifest(&b, COMPATIBLE, &v("1.4.0"), 4096)
        .expect("manifest");
    op.publish_chunks(&m, &b, 0..10).await.expect("chunks");
    op.publish_manifest(&m, None).await.expect("manifest");
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    publish_offer(&op, offer_to_device(id, "rel-140", 1, &m)).await;
    watch
        .wait_state(id, WAIT, |s| {
            s.progress.is_some_and(|p| p.done_bytes == 10 * 4096)
        })
        .await
        .expect("half downloaded");
    let freeze = Control {
        freeze: true,
        ..control(device(id), 1)
    };
    publish_control(&op, &freeze, None, None).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::ControlAccepted { sequence: 1, .. })
        })
        .await
        .expect("freeze accepted");
    op.publish_chunks(&m, &b, 10..m.chunk_count())
        .await
        .expect("rest");
    watch
        .wait_state(id, WAIT, |s| {
            s.phase == PhaseName::Verifying && s.held.is_some()
        })
        .await
        .expect("held before install");

    let (dir, config) = stn.power_cut();
    op.publish_raw(&control_topic(&device(id)), vec![], true)
        .await
        .expect("clear");
    watch.clear_events();
    let stn = start(id, dir, config);
    let s = watch
        .wait_state(id, WAIT, |s| s.seq > 2_000_000 && s.held.is_some())
        .await
        .expect("still held after the restart");
    assert_eq!(s.phase, PhaseName::Verifying, "{s:#?}");
    assert_eq!(s.held.expect("held").reason, RejectReason::Frozen);
    assert!(!saw(&watch, id, |r| matches!(
        r,
        Report::InstallStarted { .. }
    )));

    publish_control(&op, &control(device(id), 2), None, None).await;
    watch
        .wait_state(id, WAIT, committed_at("1.4.0"))
        .await
        .expect("installed once unfrozen");
    let summary = stn.stop().await;
    assert_eq!(
        summary.stats.stored_chunk_bytes, 0,
        "nothing downloaded again after the restart"
    );
}
