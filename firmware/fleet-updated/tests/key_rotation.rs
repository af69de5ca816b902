//! The real station daemon follows signed key rotations on `fleet/v1/keys/rotation` against a
//! real mosquitto: the rotated set verifies every later offer and manifest, revoked keys'
//! offers are refused, and the set survives a restart without the broker's help.
mod common;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, spawn, start};
use ed25519_dalek::SigningKey;
use fleet_core::trust::{Rotation, RotationReject};
use fleet_core::update::{KeyId, Outcome, PhaseName, RejectReason, Report};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::payload::BundleManifest;
use fleet_proto::trust::{KEY_ROTATION_TOPIC, public_key};
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

fn id_of(k: &SigningKey) -> KeyId {
    public_key(&k.verifying_key()).key_id()
}

async fn rotate(
    op: &Operator,
    sequence: u64,
    keys: &[&SigningKey],
    revoke: &[&SigningKey],
    by: &SigningKey,
) {
    let r = Rotation {
        sequence,
        keys: keys
            .iter()
            .map(|k| public_key(&k.verifying_key()))
            .collect(),
        revoke: revoke.iter().map(|k| id_of(k)).collect(),
        issued_at: 1_800_000_000,
    };
    let sealed = envelope::seal_json(Kind::KeyRotation, &r, by).expect("seal");
    op.publish_raw(KEY_ROTATION_TOPIC, sealed, true)
        .await
        .expect("publish rotation");
}

/// Publishes a bundle whose manifest `key` signs.
async fn bundle_signed_by(op: &Operator, version: &str, key: &SigningKey) -> BundleManifest {
    let b = bundle(version, Behaviour::Normal, 10_000);
    let m = op
        .manifest(&b, COMPATIBLE, &v(version), 8192)
        .expect("manifest");
    op.publish_chunks(&m, &b, 0..m.chunk_count())
        .await
        .expect("chunks");
    op.publish_manifest(&m, Some(key)).await.expect("manifest");
    m
}

fn committed_at(version: &str) -> impl Fn(&fleet_proto::StationState) -> bool {
    let want = v(version);
    move |s| {
        s.phase == PhaseName::Idle
            && matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == want)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_signed_by_a_trusted_key_adds_a_key_whose_offers_are_then_accepted() {
    let broker = Mosquitto::start().expect("broker");
    let (k1, k2) = (test_key(21), test_key(22));
    let op = Operator::connect(&broker, "operator", k1.clone())
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-rotate";
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    let s = watch
        .wait_state(id, WAIT, |s| s.trust.is_some())
        .await
        .expect("state");
    let trust = s.trust.expect("trust");
    assert_eq!((trust.sequence, trust.keys.clone()), (0, vec![id_of(&k1)]));

    let m = bundle_signed_by(&op, "1.1.0", &k2).await;
    let offer = offer_to_device(id, "rel-110", 1, &m).expect("offer");
    op.publish_offer(&offer, Some(&k2), None)
        .await
        .expect("offer");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(&e.event, Report::OfferRejected { reason: RejectReason::UnknownKey { key_id }, .. } if *key_id == id_of(&k2))
        })
        .await
        .expect("not trusted yet");

    rotate(&op, 1, &[&k1, &k2], &[], &k1).await;
    let e = watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::KeysRotated { sequence: 1, .. })
        })
        .await
        .expect("rotated");
    assert!(matches!(&e.event, Report::KeysRotated { added, .. } if *added == vec![id_of(&k2)]));
    let s = watch
        .wait_state(id, WAIT, |s| {
            s.trust.as_ref().is_some_and(|t| t.sequence == 1)
        })
        .await
        .expect("state names the rotation");
    let mut keys = s.trust.expect("trust").keys;
    keys.sort();
    let mut want = vec![id_of(&k1), id_of(&k2)];
    want.sort();
    assert_eq!(keys, want);

    let offer = offer_to_device(id, "rel-110", 2, &m).expect("offer");
    op.publish_offer(&offer, Some(&k2), None)
        .await
        .expect("offer");
    watch
        .wait_state(id, WAIT, committed_at("1.1.0"))
        .await
        .expect("the new key's offer and manifest are accepted");
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_keys_offers_are_refused_after_rotation() {
    let broker = Mosquitto::start().expect("broker");
    let (k1, k2) = (test_key(23), test_key(24));
    let op = Operator::connect(&broker, "operator", k1.clone())
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-revoke";
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    rotate(&op, 1, &[&k1, &k2], &[], &k1).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::KeysRotated { sequence: 1, .. })
        })
        .await
        .expect("k2 added");
    // k1 is compromised: k2 revokes it.
    rotate(&op, 2, &[&k2], &[&k1], &k2).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(&e.event, Report::KeysRotated { sequence: 2, revoked, .. } if *revoked == vec![id_of(&k1)])
        })
        .await
        .expect("k1 revoked");
    let s = watch
        .wait_state(id, WAIT, |s| {
            s.trust.as_ref().is_some_and(|t| t.sequence == 2)
        })
        .await
        .expect("state");
    let trust = s.trust.expect("trust");
    assert_eq!(
        (trust.keys, trust.revoked),
        (vec![id_of(&k2)], vec![id_of(&k1)])
    );

    let m = bundle_signed_by(&op, "1.1.0", &k1).await;
    op.publish_offer(
        &offer_to_device(id, "rel-110", 1, &m).expect("offer"),
        Some(&k1),
        None,
    )
    .await
    .expect("offer");
    watch
        .wait_event(id, WAIT, |e| {
            matches!(&e.event, Report::OfferRejected { reason: RejectReason::RevokedKey { key_id }, .. } if *key_id == id_of(&k1))
        })
        .await
        .expect("revoked key's offer refused");
    // Nor can the revoked key rotate its way back in.
    rotate(&op, 3, &[&k1, &k2], &[], &k1).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::RotationRefused {
                    reason: RotationReject::RevokedKey { .. },
                    ..
                }
            )
        })
        .await
        .expect("rotation by a revoked key refused");
    let s = watch.wait_state(id, WAIT, |_| true).await.expect("state");
    assert_eq!(s.phase, PhaseName::Idle);
    assert_eq!(s.trust.expect("trust").sequence, 2);
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_survives_a_restart() {
    let broker = Mosquitto::start().expect("broker");
    let (k1, k2) = (test_key(25), test_key(26));
    let op = Operator::connect(&broker, "operator", k1.clone())
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-keep-keys";
    let stn = spawn(id, &broker, &op.public_hex(), StationOptions::default());
    // k1 hands over to k2 and retires itself.
    rotate(&op, 1, &[&k2], &[], &k1).await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(e.event, Report::KeysRotated { sequence: 1, .. })
        })
        .await
        .expect("rotated");
    // Restarted with the retained rotation still there: signed by a key it no longer trusts,
    // it is recognised as the one applied, not refused.
    let (dir, config) = stn.power_cut();
    watch.clear_events();
    let stn = start(id, dir, config);
    watch
        .wait_state(id, WAIT, |s| s.seq > 2_000_000)
        .await
        .expect("restarted");
    let m = bundle_signed_by(&op, "1.1.0", &k2).await;
    op.publish_offer(
        &offer_to_device(id, "rel-110", 1, &m).expect("offer"),
        Some(&k2),
        None,
    )
    .await
    .expect("offer");
    watch
        .wait_state(id, WAIT, committed_at("1.1.0"))
        .await
        .expect("k2's offer accepted");
    assert!(
        !watch.events.get(id).is_some_and(|v| v
            .iter()
            .any(|e| matches!(e.event, Report::RotationRefused { .. }))),
        "the applied rotation was refused after the restart"
    );
    let (dir, config) = stn.power_cut();
    // The broker forgets the rotation: only the station's trust file can hold it now.
    op.publish_raw(KEY_ROTATION_TOPIC, vec![], true)
        .await
        .expect("clear");
    watch.clear_events();
    let stn = start(id, dir, config);
    let s = watch
        .wait_state(id, WAIT, |s| {
            s.trust.as_ref().is_some_and(|t| t.sequence == 1) && s.seq > 3_000_000
        })
        .await
        .expect("restarted with the rotated set");
    assert_eq!(s.trust.expect("trust").keys, vec![id_of(&k2)]);

    let m = bundle_signed_by(&op, "1.2.0", &k2).await;
    op.publish_offer(
        &offer_to_device(id, "rel-120", 2, &m).expect("offer"),
        Some(&k2),
        None,
    )
    .await
    .expect("offer");
    watch
        .wait_state(id, WAIT, committed_at("1.2.0"))
        .await
        .expect("k2's offer accepted after the restart");
    stn.stop().await;
}
