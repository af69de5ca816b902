//! `push`, `clear` and `status` against a real mosquitto.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleet_core::update::{BundleId, Offer, RolloutPercent};
use fleet_proto::envelope::{Kind, open_json};
use fleet_proto::{BundleManifest, Limits, TrustedKeys};
use fleet_testkit::Mosquitto;
use fleetctl::connection::{BrokerAddr, Connection, collect_retained};
use fleetctl::publish::{ClearRequest, ClearScope, PublishError, PushRequest, clear, push};

const QUIET: Duration = Duration::from_millis(300);
const CHUNK: u32 = 64 * 1024;

struct Fixture {
    _broker: Mosquitto,
    addr: BrokerAddr,
    dir: tempfile::TempDir,
    key: SigningKey,
    trusted: TrustedKeys,
}

fn fixture() -> Fixture {
    let broker = Mosquitto::start().expect("mosquitto");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let made = fleetctl::keys::generate(&dir.path().join("k.key.pem"), &dir.path().join("k.pub"))
        .expect("keys");
    let key = fleetctl::keys::load_signing_key(&made.private_path).expect("load");
    let trusted: TrustedKeys =
        [fleetctl::keys::load_verifying_key(&made.public_path).expect("pub")]
            .into_iter()
            .collect();
    Fixture {
        _broker: broker,
        addr,
        dir,
        key,
        trusted,
    }
}

impl Fixture {
    fn bundle(&self, name: &str, len: usize, seed: u8) -> PathBuf {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).expect("write bundle");
        p
    }

    fn request(&self, bundle: &Path, to: &str) -> PushRequest {
        let mut r = PushRequest::new(
            bundle.to_owned(),
            to.parse().expect("target"),
            semver::Version::new(1, 1, 0),
            "fleet-sim".into(),
        );
        r.chunk_size = CHUNK;
        // The raw transfer only; the compressed one has a test of its own.
        r.compress = false;
        r
    }

    async fn push(&self, req: &PushRequest) -> Result<fleetctl::publish::PushReport, PublishError> {
        push(&self.addr, &self.key, req, &mut |_| {}).await
    }

    /// Every retained message under fleet/v1/, topic -> payload.
    async fn retained(&self) -> BTreeMap<String, Vec<u8>> {
        collect_retained(&self.addr, &["fleet/v1/#".to_owned()], QUIET, 100_000)
            .await
            .expect("collect")
            .into_iter()
            .map(|m| (m.topic, m.payload))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_publishes_exactly_the_manifest_chunks_and_offer_and_chunks_hash_to_the_manifest() {
    let f = fixture();
    let path = f.bundle("update-1.1.0.bin", 300_000, 7);
    let report = f
        .push(&f.request(&path, "group:canary"))
        .await
        .expect("push");

    let retained = f.retained().await;
    let id = report.bundle_id;
    let mut expected: Vec<String> = vec![
        format!("fleet/v1/bundles/{id}/manifest"),
        "fleet/v1/groups/canary/offer".to_owned(),
    ];
    expected.extend((0..5).map(|i| format!("fleet/v1/bundles/{id}/chunks/{i}")));
    expected.sort();
    assert_eq!(retained.keys().cloned().collect::<Vec<_>>(), expected);

    let manifest: BundleManifest = open_json(
        &retained[&report.manifest_topic],
        Kind::Manifest,
        &f.trusted,
        &Limits::DEFAULT,
    )
    .expect("manifest verifies")
    .value;
    assert_eq!(manifest.chunk_count(), 5);
    assert_eq!(manifest.file_name, "update-1.1.0.bin");
    let mut whole = Vec::new();
    for i in 0..manifest.chunk_count() {
        let chunk = &retained[&format!("fleet/v1/bundles/{id}/chunks/{i}")];
        fleet_proto::chunk::verify_chunk(&manifest, i, chunk).expect("chunk matches manifest");
        whole.extend_from_slice(chunk);
    }
    assert_eq!(whole, std::fs::read(&path).expect("read"));
    let file_hash = fleetctl::publish::sha256_file(&path).expect("hash");
    assert_eq!(id.to_string(), file_hash);

    let offer: Offer = open_json(
        &retained["fleet/v1/groups/canary/offer"],
        Kind::Offer,
        &f.trusted,
        &Limits::DEFAULT,
    )
    .expect("offer verifies")
    .value;
    assert_eq!(offer.bundle_id, id);
    assert_eq!(offer.bundle_size, 300_000);
    assert_eq!(offer.sequence, 1);
    assert_eq!(offer.rollout_percent, RolloutPercent::ALL);
    assert_eq!(offer.update_id, report.update_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_pushing_the_same_bundle_changes_nothing_on_the_broker() {
    let f = fixture();
    let path = f.bundle("b.bin", 200_000, 1);
    let req = f.request(&path, "device:stn-1");
    let first = f.push(&req).await.expect("push");
    let before = f.retained().await;
    let second = f.push(&req).await.expect("re-push");
    let after = f.retained().await;
    assert!(!first.offer_kept);
    assert!(second.offer_kept, "the identical offer is kept");
    assert_eq!(second.sequence, first.sequence);
    assert_eq!(before, after, "every retained topic is byte-identical");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_goes_one_above_every_offer_and_station_state_on_the_broker() {
    let f = fixture();
    let path = f.bundle("b.bin", 10_000, 2);
    let a = f
        .push(&f.request(&path, "device:stn-1"))
        .await
        .expect("push");
    assert_eq!(a.sequence, 1);
    let mut wider = f.request(&path, "group:north");
    wider.percent = RolloutPercent::new(50).expect("percent");
    assert_eq!(f.push(&wider).await.expect("push").sequence, 2);

    // A station that accepted sequence 10 (from an offer since replaced) raises the floor.
    let mut state: serde_json::Value = serde_json::json!({
        "device-id": "stn-9", "seq": 1, "updated-at": {"monotonic-ms": 5},
        "time-trusted": false, "version": "1.0.0", "phase": "idle", "last-sequence": 10
    });
    state["booted"] = serde_json::to_value(fleet_core::slot::Slot::A).expect("slot");
    state["committed"] = state["booted"].clone();
    let _: fleet_proto::StationState =
        serde_json::from_value(state.clone()).expect("a valid station state");
    let payload = serde_json::to_vec(&state).expect("json");
    let mut conn = Connection::open(&f.addr, "test", Duration::from_secs(5))
        .await
        .expect("connect");
    conn.publish("fleet/v1/devices/stn-9/state", payload, true)
        .await
        .expect("publish");
    conn.close(Duration::from_secs(5)).await.expect("close");
    let mut again = f.request(&path, "device:stn-2");
    again.percent = RolloutPercent::new(10).expect("percent");
    assert_eq!(f.push(&again).await.expect("push").sequence, 11);

    let mut low = f.request(&path, "device:stn-3");
    low.sequence = Some(5);
    let err = f.push(&low).await.expect_err("5 is below 11");
    assert!(
        matches!(err, PublishError::SequenceTooLow { highest: 11, .. }),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_removes_unoffered_bundles_and_keeps_offered_ones_unless_forced() {
    let f = fixture();
    let old = f.bundle("old.bin", 150_000, 3);
    let new = f.bundle("new.bin", 150_000, 4);
    let old_id = f
        .push(&f.request(&old, "group:g"))
        .await
        .expect("push")
        .bundle_id;
    let mut req = f.request(&new, "group:g");
    req.version = semver::Version::new(1, 2, 0);
    let new_id = f.push(&req).await.expect("push").bundle_id;

    let report = clear(&f.addr, &ClearRequest::new(ClearScope::Unreferenced))
        .await
        .expect("clear");
    assert_eq!(
        report.cleared.keys().copied().collect::<Vec<BundleId>>(),
        vec![old_id]
    );
    assert!(report.kept.contains(&new_id));
    let left = f.retained().await;
    assert!(
        left.keys().all(|t| !t.contains(&old_id.to_string())),
        "{left:?}"
    );
    assert_eq!(
        left.keys()
            .filter(|t| t.contains(&new_id.to_string()))
            .count(),
        4,
        "manifest and 3 chunks of the offered bundle stay"
    );

    let err = clear(&f.addr, &ClearRequest::new(ClearScope::Bundle(new_id)))
        .await
        .expect_err("still offered");
    assert!(matches!(err, PublishError::StillOffered { .. }), "{err}");
    let mut forced = ClearRequest::new(ClearScope::Bundle(new_id));
    forced.force = true;
    forced.dry_run = true;
    let report = clear(&f.addr, &forced).await.expect("dry run");
    assert_eq!(report.cleared.get(&new_id), Some(&4));
    assert_eq!(f.retained().await.len(), 5, "a dry run removes nothing");
    forced.dry_run = false;
    clear(&f.addr, &forced).await.expect("forced clear");
    let left = f.retained().await;
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        vec!["fleet/v1/groups/g/offer".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retracting_an_offer_lets_clear_remove_its_bundle_and_leaves_the_broker_empty() {
    let f = fixture();
    let path = f.bundle("b.bin", 150_000, 8);
    f.push(&f.request(&path, "device:stn-1"))
        .await
        .expect("push");
    let mut req = ClearRequest::new(ClearScope::Unreferenced);
    req.retract = vec!["device:stn-1".parse().expect("target")];
    let report = clear(&f.addr, &req).await.expect("clear");
    assert_eq!(
        report.retracted,
        vec!["fleet/v1/devices/stn-1/offer".to_owned()]
    );
    assert_eq!(report.cleared.len(), 1);
    assert!(f.retained().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_over_the_size_limit_is_refused_before_the_broker_is_touched() {
    let f = fixture();
    let path = f.bundle("big.bin", 100_000, 5);
    let mut req = f.request(&path, "group:g");
    req.limits.max_bundle_bytes = 50_000;
    let err = f.push(&req).await.expect_err("too large");
    assert!(
        matches!(err, PublishError::BundleTooLarge { size: 100_000, .. }),
        "{err}"
    );
    assert!(err.is_invalid_input());
    assert!(f.retained().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reflects_the_retained_station_states() {
    let f = fixture();
    let mut conn = Connection::open(&f.addr, "test", Duration::from_secs(5))
        .await
        .expect("connect");
    for (id, phase, version) in [
        ("stn-1", "idle", "1.0.0"),
        ("stn-2", "downloading", "1.0.0"),
    ] {
        let mut s = serde_json::json!({
            "device-id": id, "seq": 3, "updated-at": {"monotonic-ms": 5},
            "time-trusted": false, "version": version, "phase": phase,
        });
        s["booted"] = serde_json::to_value(fleet_core::slot::Slot::A).expect("slot");
        s["committed"] = s["booted"].clone();
        if phase == "downloading" {
            s["progress"] = serde_json::json!({"done-bytes": 50, "total-bytes": 200});
        }
        conn.publish(
            &format!("fleet/v1/devices/{id}/state"),
            serde_json::to_vec(&s).expect("json"),
            true,
        )
        .await
        .expect("publish");
    }
    conn.publish("fleet/v1/devices/stn-2/presence", b"offline".to_vec(), true)
        .await
        .expect("publish");
    conn.close(Duration::from_secs(5)).await.expect("close");

    let rows = fleetctl::status::read(&f.addr, Duration::from_secs(600), &Limits::DEFAULT)
        .await
        .expect("status");
    let json = serde_json::to_value(&rows).expect("json");
    assert_eq!(json.as_array().expect("array").len(), 2);
    assert_eq!(json[0]["device-id"], "stn-1");
    assert_eq!(json[0]["heard"], "recently");
    assert_eq!(json[0]["state"]["phase"], "idle");
    assert_eq!(json[1]["device-id"], "stn-2");
    assert_eq!(json[1]["heard"], "offline");
    assert_eq!(json[1]["state"]["progress"]["done-bytes"], 50);
    let table = fleetctl::status::render_table(&rows);
    assert!(
        table.contains("25%") && table.contains("OFFLINE"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_offer_signed_by_another_key_is_replaced_not_kept() {
    let f = fixture();
    let path = f.bundle("b.bin", 20_000, 6);
    let req = f.request(&path, "group:g");
    let first = f.push(&req).await.expect("push");
    let other = SigningKey::from_bytes(&[9u8; 32]);
    let second = push(&f.addr, &other, &req, &mut |_| {})
        .await
        .expect("push with another key");
    assert!(!second.offer_kept);
    assert_eq!(second.sequence, first.sequence + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_from_the_binary_lists_every_station_with_its_state() {
    let f = fixture();
    let mut conn = Connection::open(&f.addr, "test", Duration::from_secs(5))
        .await
        .expect("connect");
    let mut s = serde_json::json!({
        "device-id": "stn-7", "seq": 9, "updated-at": {"monotonic-ms": 5},
        "time-trusted": false, "version": "1.0.3", "phase": "verifying",
    });
    s["booted"] = serde_json::to_value(fleet_core::slot::Slot::B).expect("slot");
    s["committed"] = s["booted"].clone();
    conn.publish(
        "fleet/v1/devices/stn-7/state",
        serde_json::to_vec(&s).expect("json"),
        true,
    )
    .await
    .expect("publish");
    conn.close(Duration::from_secs(5)).await.expect("close");

    let broker = format!("mqtt://{}:{}", f.addr.host, f.addr.port);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(["status", "--json", "--broker", &broker])
        .output()
        .await
        .expect("run fleetctl");
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json output");
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json[0]["device-id"], "stn-7");
    assert_eq!(json[0]["state"]["phase"], "verifying");
    assert_eq!(json[0]["state"]["version"], "1.0.3");
    assert_eq!(json[0]["state"]["seq"], 9);
}

/// A station's retained state that says which base it keeps (the only field a delta push
/// reads from it).
fn state_keeping(device: &str, base: BundleId) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "device-id": device, "seq": 1, "updated-at": {"monotonic-ms": 1},
        "time-trusted": false, "booted": "A", "committed": "A", "version": "1.0.0",
        "phase": "idle", "kept-base": base.to_string(),
    }))
    .expect("state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_publishes_deltas_from_the_bases_stations_keep_and_clear_takes_them_along() {
    let f = fixture();
    let old = f.bundle("old.bin", 400_000, 3);
    let mut new_bytes = std::fs::read(&old).expect("read");
    new_bytes[200_000..200_100].fill(0xaa);
    let new = f.dir.path().join("new.bin");
    std::fs::write(&new, &new_bytes).expect("write");
    let old_id = BundleId::from_bytes(sha2_of(&old));
    // The bases directory holds the old bundle and an unrelated file; one station keeps the
    // old bundle, another one a bundle nobody has a file of.
    let bases = f.dir.path().join("bases");
    std::fs::create_dir_all(&bases).expect("dir");
    std::fs::copy(&old, bases.join("old.bin")).expect("copy");
    std::fs::write(bases.join("notes.txt"), b"not a bundle").expect("notes");
    let stranger = BundleId::from_bytes([9; 32]);
    let mut conn = Connection::open(&f.addr, "states", Duration::from_secs(5))
        .await
        .expect("connect");
    for (d, base) in [("stn-1", old_id), ("stn-2", stranger)] {
        conn.publish(
            &format!("fleet/v1/devices/{d}/state"),
            state_keeping(d, base),
            true,
        )
        .await
        .expect("state");
    }
    conn.close(Duration::from_secs(5)).await.expect("close");

    let mut req = f.request(&new, "group:g");
    req.version = semver::Version::new(1, 2, 0);
    req.delta_dir = Some(bases);
    let report = f.push(&req).await.expect("push");
    assert_eq!(report.deltas.len(), 1, "{report:?}");
    assert_eq!(report.bases_without_file, vec![stranger]);
    let d = &report.deltas[0];
    assert_eq!(d.base_id, old_id);
    assert!(d.patch_size < 2_000, "patch of {} bytes", d.patch_size);
    let left = f.retained().await;
    let description: fleet_proto::delta::DeltaDescription =
        open_json(&left[&d.topic], Kind::Delta, &f.trusted, &Limits::DEFAULT)
            .expect("signed description")
            .value;
    assert_eq!(
        (description.bundle_id, description.patch_id),
        (report.bundle_id, d.patch_id)
    );
    let patch_manifest = format!("fleet/v1/bundles/{}/manifest", d.patch_id);
    assert!(left.contains_key(&patch_manifest));

    // The patch of an offered bundle stays when unoffered bundles go ...
    let kept = clear(&f.addr, &ClearRequest::new(ClearScope::Unreferenced))
        .await
        .expect("clear");
    assert!(kept.kept.contains(&d.patch_id), "{kept:?}");
    assert!(f.retained().await.contains_key(&patch_manifest));
    // ... and goes with its bundle, description included.
    let mut forced = ClearRequest::new(ClearScope::Bundle(report.bundle_id));
    forced.force = true;
    let cleared = clear(&f.addr, &forced).await.expect("clear");
    assert!(cleared.cleared.contains_key(&d.patch_id), "{cleared:?}");
    let left = f.retained().await;
    assert!(
        left.keys()
            .all(|t| !t.contains(&d.patch_id.to_string()) && !t.contains("/deltas/")),
        "{:?}",
        left.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_publishes_the_compressed_bundle_next_to_the_raw_one_and_clear_takes_it_along() {
    let f = fixture();
    let path = f.bundle("update.bin", 300_000, 5);
    let mut req = f.request(&path, "group:g");
    req.compress = true;
    let mut compressing = 0;
    let report = push(&f.addr, &f.key, &req, &mut |p| {
        if let fleetctl::publish::PushProgress::Compressing { .. } = p {
            compressing += 1;
        }
    })
    .await
    .expect("push");
    assert!(compressing > 0, "compression shows progress");
    let c = report
        .compressed
        .clone()
        .expect("a compressed bundle published");
    assert!(c.file_size * 10 < c.bundle_size, "{c:?}");
    let left = f.retained().await;
    let description: fleet_proto::delta::CompressedDescription = open_json(
        &left[&c.topic],
        Kind::Compressed,
        &f.trusted,
        &Limits::DEFAULT,
    )
    .expect("signed description")
    .value;
    description.validate(&Limits::DEFAULT).expect("valid");
    assert_eq!(
        (
            description.bundle_id,
            description.bundle_size,
            description.file_id
        ),
        (report.bundle_id, 300_000, c.file_id)
    );
    assert_eq!(
        c.topic,
        format!("fleet/v1/bundles/{}/compressed", report.bundle_id)
    );
    // The file travels in the chunk transport under its own id and decodes to the bundle.
    let manifest: BundleManifest = open_json(
        &left[&format!("fleet/v1/bundles/{}/manifest", c.file_id)],
        Kind::Manifest,
        &f.trusted,
        &Limits::DEFAULT,
    )
    .expect("file manifest")
    .value;
    description
        .matches_file_manifest(&manifest)
        .expect("matches");
    let mut file = Vec::new();
    for i in 0..manifest.chunk_count() {
        file.extend_from_slice(&left[&format!("fleet/v1/bundles/{}/chunks/{i}", c.file_id)]);
    }
    assert_eq!(
        zstd::stream::decode_all(&file[..]).expect("decode"),
        std::fs::read(&path).expect("bundle")
    );
    // The raw bundle stays published for older stations and every fallback.
    assert!(left.contains_key(&report.manifest_topic));

    // Kept while its bundle is offered, gone with it.
    let kept = clear(&f.addr, &ClearRequest::new(ClearScope::Unreferenced))
        .await
        .expect("clear");
    assert!(kept.kept.contains(&c.file_id), "{kept:?}");
    let mut forced = ClearRequest::new(ClearScope::Bundle(report.bundle_id));
    forced.force = true;
    let cleared = clear(&f.addr, &forced).await.expect("clear");
    assert!(cleared.cleared.contains_key(&c.file_id), "{cleared:?}");
    let left = f.retained().await;
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        vec!["fleet/v1/groups/g/offer".to_owned()]
    );

    // A bundle that does not compress gets no compressed transfer.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let noisy = f.dir.path().join("noise.bin");
    std::fs::write(&noisy, &noise).expect("write");
    let mut req = f.request(&noisy, "group:h");
    req.compress = true;
    let report = f.push(&req).await.expect("push");
    assert_eq!(report.compressed, None);
}

fn sha2_of(path: &Path) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(std::fs::read(path).expect("read")).into()
}
