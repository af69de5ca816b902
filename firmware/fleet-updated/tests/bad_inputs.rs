//! Every bad input a station can receive over MQTT is refused with a specific reason in its
//! events and state, installs nothing, and leaves the daemon running (it still takes a good
//! update at the end).
mod common;

use std::time::Duration;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, spawn};
use fleet_core::ids::{DeviceId, UpdateId};
use fleet_core::slot::Slot;
use fleet_core::update::{
    BundleId, Downgrade, DownloadFailure, Offer, Outcome, PhaseName, RejectReason, Report,
    RolloutPercent, Stage, Target, VerifyFailure, wave,
};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::payload::BundleManifest;
use fleet_proto::topic;
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};
use sha2::Digest;

const ID: &str = "stn-bad";

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

async fn rejected(watch: &mut Watcher, what: &str, pred: impl Fn(&RejectReason) -> bool) {
    watch
        .wait_event(
            ID,
            WAIT,
            |e| matches!(&e.event, Report::OfferRejected { reason, .. } if pred(reason)),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    watch.clear_events();
}

async fn download_failed(watch: &mut Watcher, what: &str, pred: impl Fn(&DownloadFailure) -> bool) {
    watch
        .wait_event(
            ID,
            WAIT,
            |e| matches!(&e.event, Report::DownloadFailed { failure } if pred(failure)),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    let s = watch
        .wait_state(ID, WAIT, |s| {
            s.phase == PhaseName::Idle
                && matches!(
                    &s.last_outcome,
                    Some(Outcome::Failed {
                        stage: Stage::Download,
                        ..
                    })
                )
        })
        .await
        .unwrap_or_else(|e| panic!("{what}: state: {e:#}"));
    assert_eq!(s.booted, Slot::A);
    watch.clear_events();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_with_its_reason_and_installs_nothing() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(3))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let stn = spawn(
        ID,
        &broker,
        &op.public_hex(),
        StationOptions {
            download_space_bytes: 200_000,
            stall_timeout_secs: 2,
            ..Default::default()
        },
    );
    watch
        .wait_state(ID, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");
    let offer_topic = topic::device_offer(&DeviceId::new(ID).expect("id"));

    let good = bundle("1.1.0", Behaviour::Normal, 40_000);
    let m = op
        .publish_bundle(&good, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");
    let base = offer_to_device(ID, "rel-110", 1, &m).expect("offer");
    let with = |f: &dyn Fn(&mut Offer)| {
        let mut o = base.clone();
        f(&mut o);
        o
    };

    // --- refused before anything is downloaded ---
    op.publish_raw(&offer_topic, b"{not json".to_vec(), true)
        .await
        .expect("publish");
    rejected(&mut watch, "garbage", |r| {
        matches!(r, RejectReason::Malformed { .. })
    })
    .await;

    op.publish_raw(&offer_topic, vec![b' '; 70 * 1024], true)
        .await
        .expect("publish");
    rejected(&mut watch, "oversize", |r| {
        matches!(r, RejectReason::TooLarge { .. })
    })
    .await;

    // A valid signature over another offer's payload.
    let a = envelope::seal_json(Kind::Offer, &base, op.key()).expect("seal");
    let b = envelope::seal_json(Kind::Offer, &with(&|o| o.sequence = 2), op.key()).expect("seal");
    let mut tampered: serde_json::Value = serde_json::from_slice(&a).expect("json");
    let other: serde_json::Value = serde_json::from_slice(&b).expect("json");
    tampered["sig"] = other["sig"].clone();
    op.publish_raw(
        &offer_topic,
        serde_json::to_vec(&tampered).expect("json"),
        true,
    )
    .await
    .expect("publish");
    rejected(&mut watch, "bad signature", |r| {
        matches!(r, RejectReason::BadSignature)
    })
    .await;

    op.publish_offer(&base, Some(&test_key(99)), None)
        .await
        .expect("publish");
    rejected(&mut watch, "unknown key", |r| {
        matches!(r, RejectReason::UnknownKey { .. })
    })
    .await;

    // A manifest envelope where an offer belongs.
    let wrong_kind = envelope::seal_json(Kind::Manifest, &m, op.key()).expect("seal");
    op.publish_raw(&offer_topic, wrong_kind, true)
        .await
        .expect("publish");
    rejected(&mut watch, "wrong kind", |r| {
        matches!(r, RejectReason::Malformed { .. })
    })
    .await;

    // Correctly signed bytes that are not an offer.
    let not_offer = envelope::seal(Kind::Offer, br#"{"update-id": 1}"#, op.key());
    op.publish_raw(&offer_topic, not_offer, true)
        .await
        .expect("publish");
    rejected(&mut watch, "signed garbage", |r| {
        matches!(r, RejectReason::Malformed { .. })
    })
    .await;

    // An offer with a field the protocol does not know (refused, not ignored).
    let mut extra = serde_json::to_value(&base).expect("json");
    extra["install-anyway"] = serde_json::Value::Bool(true);
    let extra = envelope::seal(
        Kind::Offer,
        &serde_json::to_vec(&extra).expect("json"),
        op.key(),
    );
    op.publish_raw(&offer_topic, extra, true)
        .await
        .expect("publish");
    rejected(&mut watch, "unknown field", |r| {
        matches!(r, RejectReason::Malformed { .. })
    })
    .await;

    // Offers that contradict themselves.
    op.publish_offer(&with(&|o| o.bundle_size = 0), None, None)
        .await
        .expect("publish");
    rejected(&mut watch, "empty bundle", |r| {
        matches!(r, RejectReason::InvalidOffer { .. })
    })
    .await;
    op.publish_offer(&with(&|o| o.expires_at = Some(o.issued_at - 1)), None, None)
        .await
        .expect("publish");
    rejected(&mut watch, "expiry before issue", |r| {
        matches!(r, RejectReason::InvalidOffer { .. })
    })
    .await;

    // An offer for another station, published on this station's topic.
    let other_target =
        with(&|o| o.target = Target::Device(DeviceId::new("stn-other").expect("id")));
    op.publish_offer(&other_target, None, Some(&offer_topic))
        .await
        .expect("publish");
    rejected(&mut watch, "wrong target", |r| {
        matches!(r, RejectReason::NotForThisStation)
    })
    .await;

    op.publish_offer(&with(&|o| o.compatible = "other-board".into()), None, None)
        .await
        .expect("publish");
    rejected(&mut watch, "wrong compatible", |r| {
        matches!(r, RejectReason::Incompatible { .. })
    })
    .await;

    op.publish_offer(&with(&|o| o.version = v("0.9.0")), None, None)
        .await
        .expect("publish");
    rejected(&mut watch, "downgrade", |r| {
        matches!(r, RejectReason::NotNewer { .. })
    })
    .await;
    op.publish_offer(&with(&|o| o.version = v("1.0.0")), None, None)
        .await
        .expect("publish");
    rejected(&mut watch, "same version", |r| {
        matches!(r, RejectReason::NotNewer { .. })
    })
    .await;

    op.publish_offer(
        &with(&|o| o.expires_at = Some(o.issued_at + 60)),
        None,
        None,
    )
    .await
    .expect("publish");
    rejected(&mut watch, "expired", |r| {
        matches!(r, RejectReason::Expired { .. })
    })
    .await;

    op.publish_offer(&with(&|o| o.bundle_size = 300_000), None, None)
        .await
        .expect("publish");
    rejected(&mut watch, "too big for the allowed space", |r| {
        matches!(
            r,
            RejectReason::BundleTooLarge {
                size: 300_000,
                limit: 200_000
            }
        )
    })
    .await;

    let update = UpdateId::new("rel-110").expect("id");
    let bucket = wave::bucket(&DeviceId::new(ID).expect("id"), &update);
    if bucket >= 1 {
        op.publish_offer(
            &with(&|o| o.rollout_percent = RolloutPercent::new(1).expect("1%")),
            None,
            None,
        )
        .await
        .expect("publish");
        rejected(&mut watch, "not in wave", |r| {
            matches!(r, RejectReason::NotInWave { .. })
        })
        .await;
    }

    // --- accepted offers whose bundle is bad: refused while downloading ---
    // The manifest (version 1.1.0) does not match the offer (1.2.0).
    op.publish_offer(
        &with(&|o| {
            o.sequence = 20;
            o.version = v("1.2.0");
        }),
        None,
        None,
    )
    .await
    .expect("publish");
    download_failed(&mut watch, "manifest not matching offer", |f| {
        matches!(f, DownloadFailure::ManifestMismatch { .. })
    })
    .await;

    // Replays: the same sequence with another payload, and a lower one.
    op.publish_offer(
        &with(&|o| {
            o.sequence = 20;
            o.update_id = UpdateId::new("rel-110-again").expect("id");
        }),
        None,
        None,
    )
    .await
    .expect("publish");
    rejected(&mut watch, "replayed sequence", |r| {
        matches!(
            r,
            RejectReason::Replayed {
                sequence: 20,
                last_accepted: 20
            }
        )
    })
    .await;
    op.publish_offer(&with(&|o| o.sequence = 15), None, None)
        .await
        .expect("publish");
    rejected(&mut watch, "lower sequence", |r| {
        matches!(r, RejectReason::Replayed { .. })
    })
    .await;

    // A manifest signed by a key the station does not trust.
    let b2 = bundle("1.1.0", Behaviour::Normal, 20_000);
    let m2 = op
        .manifest(&b2, COMPATIBLE, &v("1.1.0"), 4096)
        .expect("manifest");
    op.publish_chunks(&m2, &b2, 0..m2.chunk_count())
        .await
        .expect("chunks");
    op.publish_manifest(&m2, Some(&test_key(98)))
        .await
        .expect("manifest");
    op.publish_offer(
        &offer_to_device(ID, "rel-b2", 21, &m2).expect("offer"),
        None,
        None,
    )
    .await
    .expect("publish");
    download_failed(&mut watch, "manifest with unknown key", |f| {
        matches!(
            f,
            DownloadFailure::BadManifest {
                reason: RejectReason::UnknownKey { .. }
            }
        )
    })
    .await;

    // A chunk that does not match its hash (right length, wrong bytes).
    let b3 = bundle("1.1.0", Behaviour::Normal, 24_000);
    let m3 = op
        .publish_bundle(&b3, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");
    op.publish_raw(
        &topic::bundle_chunk(&m3.bundle_id, 2),
        vec![0xAA; 4096],
        true,
    )
    .await
    .expect("publish");
    op.publish_offer(
        &offer_to_device(ID, "rel-b3", 22, &m3).expect("offer"),
        None,
        None,
    )
    .await
    .expect("publish");
    download_failed(&mut watch, "chunk with wrong hash", |f| {
        matches!(f, DownloadFailure::CorruptChunk { index: 2 })
    })
    .await;

    // A chunk longer than the manifest says.
    let b4 = bundle("1.1.0", Behaviour::Normal, 28_000);
    let m4 = op
        .publish_bundle(&b4, COMPATIBLE, &v("1.1.0"), 4096)
        .await
        .expect("bundle");
    op.publish_raw(
        &topic::bundle_chunk(&m4.bundle_id, 1),
        vec![0xAA; 5000],
        true,
    )
    .await
    .expect("publish");
    op.publish_offer(
        &offer_to_device(ID, "rel-b4", 23, &m4).expect("offer"),
        None,
        None,
    )
    .await
    .expect("publish");
    download_failed(&mut watch, "oversize chunk", |f| {
        matches!(f, DownloadFailure::CorruptChunk { index: 1 })
    })
    .await;

    // Missing chunks: chunk 3 never arrives; the download stalls and fails.
    let b5 = bundle("1.1.0", Behaviour::Normal, 32_000);
    let m5 = op
        .manifest(&b5, COMPATIBLE, &v("1.1.0"), 4096)
        .expect("manifest");
    op.publish_chunks(&m5, &b5, 0..3).await.expect("chunks");
    op.publish_chunks(&m5, &b5, 4..m5.chunk_count())
        .await
        .expect("chunks");
    op.publish_manifest(&m5, None).await.expect("manifest");
    op.publish_offer(
        &offer_to_device(ID, "rel-b5", 24, &m5).expect("offer"),
        None,
        None,
    )
    .await
    .expect("publish");
    download_failed(&mut watch, "missing chunks", |f| {
        matches!(f, DownloadFailure::Stalled { missing_chunks: 1, first_missing, .. } if first_missing == &[3])
    })
    .await;

    // No manifest at all for the offered bundle.
    let ghost = BundleId::from_bytes([7; 32]);
    op.publish_offer(
        &with(&|o| {
            o.sequence = 25;
            o.bundle_id = ghost;
            o.update_id = UpdateId::new("rel-ghost").expect("id");
        }),
        None,
        None,
    )
    .await
    .expect("publish");
    download_failed(&mut watch, "no manifest", |f| {
        matches!(f, DownloadFailure::NoManifest { waited_secs: 2 })
    })
    .await;

    // A manifest that lies: every chunk matches its listed hash, but the file is not the
    // bundle id the manifest and the offer name. Caught by the whole-file verification.
    let b6 = bundle("1.1.0", Behaviour::Normal, 16_000);
    let real = op
        .manifest(&b6, COMPATIBLE, &v("1.1.0"), 4096)
        .expect("manifest");
    let fake_id = BundleId::from_bytes(sha2::Sha256::digest(b"something else").into());
    let lying = BundleManifest {
        bundle_id: fake_id,
        ..real.clone()
    };
    for (i, c) in fleet_proto::chunk::split(&b6, 4096).enumerate() {
        op.publish_raw(&topic::bundle_chunk(&fake_id, i as u32), c.to_vec(), true)
            .await
            .expect("chunk");
    }
    op.publish_manifest(&lying, None).await.expect("manifest");
    op.publish_offer(
        &offer_to_device(ID, "rel-liar", 26, &lying).expect("offer"),
        None,
        None,
    )
    .await
    .expect("publish");
    watch
        .wait_event(ID, WAIT, |e| {
            matches!(
                &e.event,
                Report::VerifyFailed {
                    failure: VerifyFailure::HashMismatch { .. }
                }
            )
        })
        .await
        .expect("lying manifest");
    watch
        .wait_state(ID, WAIT, |s| {
            s.phase == PhaseName::Idle
                && matches!(
                    &s.last_outcome,
                    Some(Outcome::Failed {
                        stage: Stage::Verify,
                        ..
                    })
                )
        })
        .await
        .expect("verify failure in state");
    watch.clear_events();

    // Noise on topics the station reads but does not expect: ignored.
    op.publish_raw(
        &topic::bundle_chunk(&m.bundle_id, 9999),
        b"x".to_vec(),
        false,
    )
    .await
    .expect("publish");
    op.publish_raw("fleet/v1/devices/stn-bad/offer/extra", b"x".to_vec(), false)
        .await
        .expect("publish");

    // Nothing was installed: slot B holds nothing and the board never rebooted.
    let boot = stn.bootloader();
    assert!(
        boot.image_meta(Slot::B).expect("meta").is_none(),
        "slot B was written"
    );
    assert_eq!(
        boot.read_env().expect("env").boots,
        1,
        "the station rebooted"
    );

    // The daemon is alive and still takes a good update.
    let downgrade_ok = with(&|o| {
        o.sequence = 30;
        o.downgrade = Downgrade::Refuse;
    });
    op.publish_offer(&downgrade_ok, None, None)
        .await
        .expect("publish");
    let s = watch
        .wait_state(ID, WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(&s.last_outcome, Some(Outcome::Committed { .. }))
        })
        .await
        .expect("good update after all the bad ones");
    assert_eq!(s.version, v("1.1.0"));
    assert_eq!(s.last_sequence, Some(30));
    tokio::time::timeout(Duration::from_secs(10), stn.stop())
        .await
        .expect("stops");
}
