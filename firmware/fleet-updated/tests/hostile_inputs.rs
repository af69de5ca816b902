//! Hostile and edge inputs a station must survive without the broker's help: a retained message
//! far above its protocol limit on a broker without `message_size_limit`, and signed payloads
//! that put `null` where an optional key belongs. Each is refused with its documented code, the
//! session stays up, and a genuine update still installs afterwards.
mod common;

use std::time::Duration;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, spawn};
use fleet_core::ids::DeviceId;
use fleet_core::rollout::{Control, Scope};
use fleet_core::update::{Outcome, PhaseName, RejectReason, Report};
use fleet_mqtt::{Session, SessionConfig, SessionEvent};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::rollout::control_topic;
use fleet_proto::topic;
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};

/// The size the independent client used: 2 MiB and one byte.
const OVERSIZE: usize = 2 * 1024 * 1024 + 1;

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

/// `sealed` padded with trailing white space (valid JSON) to exactly `len` bytes.
fn padded(mut sealed: Vec<u8>, len: usize) -> Vec<u8> {
    assert!(sealed.len() < len);
    sealed.resize(len, b' ');
    sealed
}

/// Every presence message of `device` the broker publishes, in order.
async fn presence_log(
    broker: &Mosquitto,
    device: &str,
) -> tokio::sync::mpsc::Receiver<SessionEvent> {
    let (session, rx) = Session::start(SessionConfig::new(
        "presence-log",
        broker.host(),
        broker.port(),
    ));
    let t = topic::device_presence(&DeviceId::new(device).expect("id"));
    session.subscribe(&t).await.expect("subscribe presence");
    // The session lives as long as its receiver; its handle may go.
    rx
}

fn presence_seen(rx: &mut tokio::sync::mpsc::Receiver<SessionEvent>) -> Vec<String> {
    let mut seen = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let SessionEvent::Message(m) = ev {
            seen.push(String::from_utf8_lossy(&m.payload).into_owned());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_retained_offers_and_controls_are_refused_and_the_station_stays_online() {
    // The test broker sets no message_size_limit: the station must protect itself.
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(21))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-oversize";
    let device = DeviceId::new(id).expect("id");

    // Both wait, retained, before the station ever connects: every reconnect would bring them
    // again, which is what knocked stations offline.
    let good = bundle("1.1.0", Behaviour::Normal, 20_000);
    let m = op
        .publish_bundle(&good, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");
    let offer = offer_to_device(id, "rel-big", 1, &m).expect("offer");
    let sealed = envelope::seal_json(Kind::Offer, &offer, op.key()).expect("seal");
    op.publish_raw(
        &topic::device_offer(&device),
        padded(sealed, OVERSIZE),
        true,
    )
    .await
    .expect("oversized offer");
    let freeze = Control {
        scope: Scope::Fleet,
        sequence: 1,
        freeze: true,
        halted: vec![],
        pin: None,
        issued_at: 1_800_000_000,
    };
    let sealed = envelope::seal_json(Kind::Control, &freeze, op.key()).expect("seal");
    op.publish_raw(
        &control_topic(&Scope::Fleet),
        padded(sealed, OVERSIZE),
        true,
    )
    .await
    .expect("oversized control");

    let mut presence = presence_log(&broker, id).await;
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    let size = OVERSIZE as u64;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferRejected {
                    reason: RejectReason::TooLarge { size: s, limit: 65_536 },
                    ..
                } if *s == size
            )
        })
        .await
        .expect("the oversized offer is refused as too-large");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::ControlRefused {
                    scope: Some(Scope::Fleet),
                    reason: RejectReason::TooLarge { size: s, limit: 65_536 },
                    ..
                } if *s == size
            )
        })
        .await
        .expect("the oversized control is refused as too-large");
    watch
        .wait_presence(id, "online", WAIT)
        .await
        .expect("online");
    // The station connected once and stayed: its only presence message is its `online` (the
    // refusals above came after the retained messages, which arrive right after connecting;
    // a station that drops them reconnects and publishes `offline`/`online` again).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = presence_seen(&mut presence);
    assert_eq!(seen, ["online"], "presence flapped");

    // A genuine offer replaces the oversized one and installs (the oversized freeze never
    // took effect). The station reboots into the new slot on the way: presence goes
    // `offline` and `online` once then, as it should.
    op.publish_offer(
        &offer_to_device(id, "rel-110", 2, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let s = watch
        .wait_state(id, WAIT, |s| {
            s.phase == PhaseName::Idle && s.last_outcome.is_some()
        })
        .await
        .expect("the genuine update ends");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == v("1.1.0")),
        "{s:#?}"
    );
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_payloads_with_a_null_optional_key_are_refused_as_malformed() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(22))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-null";
    let device = DeviceId::new(id).expect("id");
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");
    let good = bundle("1.1.0", Behaviour::Normal, 20_000);
    let m = op
        .publish_bundle(&good, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");

    // A trusted signature over an offer whose optional `expires-at` is null.
    let mut offer =
        serde_json::to_value(offer_to_device(id, "rel-null", 1, &m).expect("offer")).expect("json");
    offer["expires-at"] = serde_json::Value::Null;
    let sealed = envelope::seal(Kind::Offer, offer.to_string().as_bytes(), op.key());
    op.publish_raw(&topic::device_offer(&device), sealed, true)
        .await
        .expect("publish");
    let e = watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferRejected {
                    reason: RejectReason::Malformed { .. },
                    ..
                }
            )
        })
        .await
        .expect("a null expiry is refused");
    let Report::OfferRejected {
        reason: RejectReason::Malformed { detail },
        ..
    } = &e.event
    else {
        unreachable!()
    };
    assert!(detail.contains("key `expires-at` is null"), "{detail}");

    // The same for a control's optional `pin`.
    let control = serde_json::json!({
        "scope": {"device": id}, "sequence": 1, "freeze": true, "pin": null,
        "issued-at": 1_800_000_000,
    });
    let sealed = envelope::seal(Kind::Control, control.to_string().as_bytes(), op.key());
    op.publish_raw(&control_topic(&Scope::Device(device.clone())), sealed, true)
        .await
        .expect("publish");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::ControlRefused {
                    reason: RejectReason::Malformed { detail },
                    ..
                } if detail.contains("key `pin` is null")
            )
        })
        .await
        .expect("a null pin is refused");

    // Nothing of it took effect: a genuine offer installs (the null freeze did not freeze).
    op.publish_offer(
        &offer_to_device(id, "rel-110", 2, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let s = watch
        .wait_state(id, WAIT, |s| {
            s.phase == PhaseName::Idle && s.last_outcome.is_some()
        })
        .await
        .expect("the genuine update ends");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == v("1.1.0")),
        "{s:#?}"
    );
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_control_above_the_transport_ceiling_is_skipped_and_the_station_still_updates() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(23))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-ceiling";
    // Above even the transport ceiling: no station can read it; the broker has no limit.
    let huge = fleet_mqtt::TRANSPORT_CEILING + 4096;
    let mut big = SessionConfig::new("big-publisher", broker.host(), broker.port());
    big.limits.max_packet_bytes = huge + 1024;
    let (publisher, mut events) = Session::start(big);
    while let Some(ev) = events.recv().await {
        if ev == SessionEvent::Connected {
            break;
        }
    }
    publisher
        .publish(&control_topic(&Scope::Fleet), vec![b' '; huge], true)
        .await
        .expect("huge control");

    let mut presence = presence_log(&broker, id).await;
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");
    let good = bundle("1.1.0", Behaviour::Normal, 20_000);
    let m = op
        .publish_bundle(&good, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");
    op.publish_offer(
        &offer_to_device(id, "rel-110", 1, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let s = watch
        .wait_state(id, WAIT, |s| {
            s.phase == PhaseName::Idle && s.last_outcome.is_some()
        })
        .await
        .expect("the update ends");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == v("1.1.0")),
        "{s:#?}"
    );
    // One drop when the huge control first came (the topic is skipped from then on), and one
    // reboot into the new slot: at most two `offline`, never a loop.
    // (QoS 1 may deliver a presence message twice: count changes, not messages.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen = presence_seen(&mut presence);
    seen.dedup();
    assert!(
        seen.iter().filter(|p| *p == "offline").count() <= 2,
        "presence flapped: {seen:?}"
    );
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_offers_and_controls_above_the_transport_ceiling_are_reported_as_too_large() {
    // The broker sets no message_size_limit: the station cannot read these at all, yet tells
    // the operator what it refused, and stays online.
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(24))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-unreadable";
    let device = DeviceId::new(id).expect("id");
    let huge = fleet_mqtt::TRANSPORT_CEILING + 4096;
    let mut big = SessionConfig::new("big-publisher", broker.host(), broker.port());
    big.limits.max_packet_bytes = huge + 1024;
    let (publisher, mut events) = Session::start(big);
    while let Some(ev) = events.recv().await {
        if ev == SessionEvent::Connected {
            break;
        }
    }
    publisher
        .publish(&control_topic(&Scope::Fleet), vec![b' '; huge], true)
        .await
        .expect("huge control");
    publisher
        .publish(&topic::device_offer(&device), vec![b' '; huge], true)
        .await
        .expect("huge offer");

    let mut presence = presence_log(&broker, id).await;
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    let huge = huge as u64;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::ControlRefused {
                    scope: Some(Scope::Fleet),
                    sequence: None,
                    reason: RejectReason::TooLarge { size, limit: 65_536 },
                } if *size > huge
            )
        })
        .await
        .expect("the unreadable control is refused as too-large");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferRejected {
                    update_id: None,
                    reason: RejectReason::TooLarge { size, limit: 65_536 },
                    ..
                } if *size > huge
            )
        })
        .await
        .expect("the unreadable offer is refused as too-large");
    watch
        .wait_presence(id, "online", WAIT)
        .await
        .expect("online");
    // Two drops at most (one per unreadable topic, each skipped from then on), then the
    // session stays up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut seen = presence_seen(&mut presence);
    seen.dedup();
    assert!(
        seen.iter().filter(|p| *p == "offline").count() <= 2,
        "presence flapped: {seen:?}"
    );
    assert_eq!(seen.last().map(String::as_str), Some("online"), "{seen:?}");
    stn.stop().await;
}
