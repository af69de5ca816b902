//! The delta path (ADR 0012) against a real mosquitto, with simulated stations (the daemon,
//! its files and its chunk transport are the real ones; only the slots are simulated) and
//! the operator's real push (`fleetctl::publish::push` with `delta_from`):
//! a station keeps its committed bundle as the base, takes only the patch of the next one and
//! says so; a station without a usable base, or with a patch that does not make the offered
//! bundle, takes the full bundle and says why; a patch cut by a broker restart resumes with
//! nothing received twice, and one cut by a power cut keeps the half it held. The same path
//! with RAUC installing: `rauc_update.rs`.
mod common;

use std::path::{Path, PathBuf};

use common::{COMPATIBLE, StationOptions, WAIT, spawn};
use fleet_core::update::delta::{DeliveryKind, FullReason};
use fleet_core::update::{BundleId, Outcome, PhaseName, Report};
use fleet_proto::envelope::{self, Kind};
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

const CHUNK: u32 = 4096;
const PAYLOAD: usize = 4 << 20;
/// Bytes of the payload that differ between the two versions (the patch is about this size).
const CHANGED: usize = 256 << 10;

/// Pseudo-random bytes (incompressible: the patch carries what changed, nothing else shrinks).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Version 1.1.0 and 1.2.0 of a simulated bundle: the same 4 MiB but for 256 KiB.
fn pair() -> (Vec<u8>, Vec<u8>) {
    let one = noise(PAYLOAD, 7);
    let mut two = one.clone();
    two[PAYLOAD / 3..PAYLOAD / 3 + CHANGED].copy_from_slice(&noise(CHANGED, 99));
    (
        fleet_sim::bundle::build(&v("1.1.0"), COMPATIBLE, Behaviour::Normal, &one),
        fleet_sim::bundle::build(&v("1.2.0"), COMPATIBLE, Behaviour::Normal, &two),
    )
}

fn id_of(bytes: &[u8]) -> BundleId {
    fleet_updated::base::id_of(bytes)
}

struct Bench {
    broker: Mosquitto,
    op: Operator,
    watch: Watcher,
    files: tempfile::TempDir,
    one: PathBuf,
    two: PathBuf,
}

async fn bench(seed: u8) -> Bench {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(seed))
        .await
        .expect("operator");
    let watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let files = tempfile::tempdir().expect("tempdir");
    let (one, two) = pair();
    let (p1, p2) = (
        files.path().join("bundle-1.1.0.raucb"),
        files.path().join("bundle-1.2.0.raucb"),
    );
    std::fs::write(&p1, one).expect("write");
    std::fs::write(&p2, two).expect("write");
    Bench {
        broker,
        op,
        watch,
        files,
        one: p1,
        two: p2,
    }
}

impl Bench {
    fn addr(&self) -> fleetctl::connection::BrokerAddr {
        fleetctl::connection::BrokerAddr {
            host: self.broker.host().to_owned(),
            port: self.broker.port(),
        }
    }

    async fn push(
        &self,
        device: &str,
        bundle: &Path,
        version: &str,
        delta_from: &[&Path],
    ) -> fleetctl::publish::PushReport {
        let mut req = fleetctl::publish::PushRequest::new(
            bundle.to_path_buf(),
            format!("device:{device}").parse().expect("target"),
            v(version),
            COMPATIBLE.to_owned(),
        );
        req.chunk_size = CHUNK;
        req.delta_from = delta_from.iter().map(|p| p.to_path_buf()).collect();
        fleetctl::publish::push(&self.addr(), self.op.key(), &req, &mut |_| {})
            .await
            .expect("fleetctl push")
    }

    /// Waits until `device` committed `version`.
    async fn committed(&mut self, device: &str, version: &str) -> fleet_proto::StationState {
        let want = v(version);
        self.watch
            .wait_state(device, WAIT, |s| {
                s.phase == PhaseName::Idle
                    && matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == want)
            })
            .await
            .unwrap_or_else(|e| panic!("{device} did not commit {version}: {e}"))
    }

    /// The first `transport-chosen` event of `device` for `bundle` that `pred` accepts.
    async fn chosen(
        &mut self,
        device: &str,
        bundle: BundleId,
        pred: impl Fn(DeliveryKind, Option<&FullReason>) -> bool,
    ) -> Report {
        self.watch
            .wait_event(device, WAIT, |e| {
                matches!(&e.event, Report::TransportChosen { bundle_id, transport, reason, .. }
                    if *bundle_id == bundle && pred(*transport, reason.as_ref()))
            })
            .await
            .expect("transport-chosen event")
            .event
    }

    /// A station that committed 1.1.0 (received whole: it had no base) and keeps it.
    async fn station_on_one(&mut self, device: &str) -> common::Station {
        let stn = spawn(device, &self.broker, &self.op.public_hex(), options());
        self.push(device, &self.one.clone(), "1.1.0", &[]).await;
        let s = self.committed(device, "1.1.0").await;
        let one = id_of(&std::fs::read(&self.one).expect("read"));
        assert_eq!(s.kept_base, Some(one), "the committed bundle is the base");
        stn
    }
}

fn options() -> StationOptions {
    StationOptions {
        chunk_window: 8,
        ..StationOptions::default()
    }
}

fn kept_base_file(stn: &common::Station, id: &BundleId) -> PathBuf {
    fleet_updated::base::BaseStore::under(&stn.data_dir()).bundle_path(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_keeps_its_committed_bundle_and_fetches_only_the_delta_of_the_next() {
    let mut b = bench(31).await;
    let stn = b.station_on_one("stn-delta").await;
    let one = id_of(&std::fs::read(&b.one).expect("read"));
    let two_bytes = std::fs::read(&b.two).expect("read");
    let two = id_of(&two_bytes);
    // Its first update came whole, for want of a base.
    b.chosen("stn-delta", one, |t, r| {
        t == DeliveryKind::Full && r == Some(&FullReason::NoBase)
    })
    .await;
    assert!(kept_base_file(&stn, &one).exists());

    let pushed = b
        .push("stn-delta", &b.two.clone(), "1.2.0", &[&b.one.clone()])
        .await;
    assert_eq!(pushed.deltas.len(), 1);
    let patch_size = pushed.deltas[0].patch_size;
    assert!(
        patch_size < two_bytes.len() as u64 / 10,
        "patch of {patch_size} bytes for a bundle of {}",
        two_bytes.len()
    );
    let s = b.committed("stn-delta", "1.2.0").await;
    assert_eq!(s.kept_base, Some(two), "the new bundle replaced the base");
    b.chosen("stn-delta", two, |t, _| t == DeliveryKind::Delta)
        .await;
    let delivered = b
        .watch
        .wait_event(
            "stn-delta",
            WAIT,
            |e| matches!(&e.event, Report::Delivered { bundle_id, .. } if *bundle_id == two),
        )
        .await
        .expect("delivered event");
    let Report::Delivered {
        transport,
        received_bytes,
        bundle_bytes,
        ..
    } = delivered.event
    else {
        unreachable!("matched above")
    };
    assert_eq!(transport, DeliveryKind::Delta);
    assert_eq!(received_bytes, patch_size);
    assert_eq!(bundle_bytes, two_bytes.len() as u64);
    assert!(!kept_base_file(&stn, &one).exists(), "one base at a time");
    let summary = stn.stop().await;
    // Over both updates: the whole first bundle, then only the patch.
    let one_len = std::fs::metadata(&b.one).expect("meta").len();
    assert_eq!(
        summary.stats.stored_chunk_bytes,
        one_len + patch_size,
        "the second bundle's own chunks never crossed the link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_kept_base_falls_back_to_the_full_bundle_and_says_so() {
    let mut b = bench(32).await;
    let stn = b.station_on_one("stn-corrupt").await;
    let one = id_of(&std::fs::read(&b.one).expect("read"));
    let two = id_of(&std::fs::read(&b.two).expect("read"));
    // One flipped byte in the kept base.
    let path = kept_base_file(&stn, &one);
    let mut bytes = std::fs::read(&path).expect("read base");
    bytes[1000] ^= 0xff;
    std::fs::write(&path, bytes).expect("corrupt base");

    b.push("stn-corrupt", &b.two.clone(), "1.2.0", &[&b.one.clone()])
        .await;
    b.committed("stn-corrupt", "1.2.0").await;
    let chosen = b
        .chosen("stn-corrupt", two, |t, _| t == DeliveryKind::Full)
        .await;
    assert!(
        matches!(
            &chosen,
            Report::TransportChosen {
                reason: Some(FullReason::BaseCorrupt { .. }),
                ..
            }
        ),
        "{chosen:?}"
    );
    stn.stop().await;
}

/// Publishes the operator's signed description of `made` as the delta from `base` to `bundle`.
async fn describe_delta(
    op: &Operator,
    made: &fleetctl::delta::MadePatch,
    base: &[u8],
    bundle: &[u8],
) {
    let (base_id, bundle_id) = (id_of(base), id_of(bundle));
    let description = fleet_proto::delta::DeltaDescription {
        bundle_id,
        bundle_size: bundle.len() as u64,
        base_id,
        base_size: base.len() as u64,
        patch_id: made.patch_id,
        patch_size: made.patch_size,
        format: fleet_proto::delta::DeltaFormat::ZstdPatchFrom,
        window_log: made.window_log,
    };
    let sealed = envelope::seal_json(Kind::Delta, &description, op.key()).expect("seal");
    op.publish_raw(
        &fleet_proto::delta::delta_topic(&bundle_id, &base_id),
        sealed,
        true,
    )
    .await
    .expect("description");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_patch_that_does_not_make_the_offered_bundle_falls_back_to_the_full_bundle() {
    let mut b = bench(33).await;
    let stn = b.station_on_one("stn-hostile").await;
    let one_bytes = std::fs::read(&b.one).expect("read");
    let two_bytes = std::fs::read(&b.two).expect("read");
    let two = id_of(&two_bytes);
    // The full bundle is published; the delta's patch makes another file than the offered one
    // (signed by the operator all the same: only the rebuilt hash can tell).
    let m =
        b.op.publish_bundle(&two_bytes, COMPATIBLE, &v("1.2.0"), CHUNK)
            .await
            .expect("bundle");
    let mut other = two_bytes.clone();
    other[10_000] ^= 1;
    let other_path = b.files.path().join("other");
    std::fs::write(&other_path, &other).expect("other");
    let made = fleetctl::delta::make_patch(&b.one, &other_path, b.files.path()).expect("patch");
    let patch = std::fs::read(&made.path).expect("patch");
    let pm =
        b.op.manifest(&patch, COMPATIBLE, &v("1.2.0"), CHUNK)
            .expect("patch manifest");
    b.op.publish_chunks(&pm, &patch, 0..pm.chunk_count())
        .await
        .expect("patch chunks");
    b.op.publish_manifest(&pm, None)
        .await
        .expect("patch manifest");
    describe_delta(&b.op, &made, &one_bytes, &two_bytes).await;
    b.op.publish_offer(
        &offer_to_device("stn-hostile", "rel-120", 50, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");

    b.committed("stn-hostile", "1.2.0").await;
    b.chosen("stn-hostile", two, |t, _| t == DeliveryKind::Delta)
        .await;
    let fallback = b
        .chosen("stn-hostile", two, |t, r| {
            t == DeliveryKind::Full && r.is_some_and(|r| r.code() == "delta-failed")
        })
        .await;
    assert!(format!("{fallback:?}").contains("sha256"), "{fallback:?}");
    stn.stop().await;
}

/// A station on 1.1.0 (its kept base) that holds exactly the first half of the 1.2.0 patch: only
/// that half is on the broker when it starts on the delta.
struct HalfDelta {
    stn: common::Station,
    pm: fleet_proto::payload::BundleManifest,
    patch: Vec<u8>,
    patch_size: u64,
    chunks: u32,
    half: u32,
    one_len: u64,
}

async fn half_a_delta(b: &mut Bench, device: &str) -> HalfDelta {
    let stn = b.station_on_one(device).await;
    let one_bytes = std::fs::read(&b.one).expect("read");
    let two_bytes = std::fs::read(&b.two).expect("read");
    let m =
        b.op.publish_bundle(&two_bytes, COMPATIBLE, &v("1.2.0"), CHUNK)
            .await
            .expect("bundle");
    let made = fleetctl::delta::make_patch(&b.one, &b.two, b.files.path()).expect("patch");
    let patch = std::fs::read(&made.path).expect("patch");
    let pm =
        b.op.manifest(&patch, COMPATIBLE, &v("1.2.0"), CHUNK)
            .expect("patch manifest");
    let chunks = pm.chunk_count();
    assert!(chunks >= 50, "the patch is cut into {chunks} chunks");
    let half = chunks / 2;
    b.op.publish_chunks(&pm, &patch, 0..half)
        .await
        .expect("first half");
    b.op.publish_manifest(&pm, None)
        .await
        .expect("patch manifest");
    describe_delta(&b.op, &made, &one_bytes, &two_bytes).await;
    b.op.publish_offer(
        &offer_to_device(device, "rel-120", 60, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let half_bytes = u64::from(half) * u64::from(CHUNK);
    b.watch
        .wait_state(device, WAIT, |s| {
            s.phase == PhaseName::Downloading
                && s.delivery
                    .as_ref()
                    .is_some_and(|d| d.transport == DeliveryKind::Delta)
                && s.progress.is_some_and(|p| p.done_bytes == half_bytes)
        })
        .await
        .expect("half of the patch held");
    HalfDelta {
        stn,
        pm,
        patch,
        patch_size: made.patch_size,
        chunks,
        half,
        one_len: one_bytes.len() as u64,
    }
}

/// The rest of the patch goes out; the station commits 1.2.0.
async fn finish_the_delta(broker: &Mosquitto, device: &str, h: &HalfDelta) {
    let op = Operator::connect(broker, "operator-2", test_key(34))
        .await
        .expect("operator again");
    op.publish_chunks(&h.pm, &h.patch, h.half..h.chunks)
        .await
        .expect("second half");
    let mut watch = Watcher::connect(broker, "watcher-2")
        .await
        .expect("watcher again");
    watch
        .wait_state(device, WAIT, |s| {
            s.phase == PhaseName::Idle
                && matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == v("1.2.0"))
        })
        .await
        .expect("committed after the cut");
}

fn at_most_two_percent_again(resent: u64, patch_size: u64) {
    assert!(
        resent * 50 <= patch_size,
        "{resent} bytes sent again: more than 2% of the {patch_size}-byte patch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_cut_by_a_broker_restart_resumes_without_receiving_a_chunk_twice() {
    let mut b = bench(34).await;
    let h = half_a_delta(&mut b, "stn-cut").await;
    // The broker goes down mid-delta and comes back with its retained messages; the rest of
    // the patch is published after the restart.
    b.broker.restart().expect("restart");
    finish_the_delta(&b.broker, "stn-cut", &h).await;
    let HalfDelta {
        stn,
        patch_size,
        chunks,
        one_len,
        ..
    } = h;
    let summary = stn.stop().await;
    let patch_bytes = summary.stats.stored_chunk_bytes - one_len;
    eprintln!(
        "patch {patch_size} bytes in {chunks} chunks; received {patch_bytes} bytes, {} bytes again",
        summary.stats.resent_chunk_bytes
    );
    assert_eq!(patch_bytes, patch_size, "every patch byte stored once");
    at_most_two_percent_again(summary.stats.resent_chunk_bytes, patch_size);
}

/// A power cut mid-delta (the daemon killed without a goodbye or a flush, then started again on
/// the same files): the new process keeps the half it held and fetches only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_cut_by_a_power_cut_resumes_with_the_half_it_held() {
    let mut b = bench(35).await;
    let h = half_a_delta(&mut b, "stn-power").await;
    let HalfDelta {
        stn,
        pm,
        patch,
        patch_size,
        chunks,
        half,
        ..
    } = h;
    let (dir, config) = stn.power_cut();
    let stn = common::start("stn-power", dir, config);
    let h = HalfDelta {
        stn,
        pm,
        patch,
        patch_size,
        chunks,
        half,
        one_len: 0,
    };
    finish_the_delta(&b.broker, "stn-power", &h).await;
    let summary = h.stn.stop().await;
    let rest = patch_size - u64::from(half) * u64::from(CHUNK);
    eprintln!(
        "patch {patch_size} bytes in {chunks} chunks; after the cut stored {} bytes (the rest is {rest}), {} bytes again",
        summary.stats.stored_chunk_bytes, summary.stats.resent_chunk_bytes
    );
    assert_eq!(
        summary.stats.stored_chunk_bytes, rest,
        "after the cut only the missing half of the patch is stored"
    );
    at_most_two_percent_again(summary.stats.resent_chunk_bytes, patch_size);
}

/// A 4 MiB simulated bundle that compresses to about an eighth (512 KiB of noise, eight
/// times), of `version`.
fn compressible(version: &str) -> Vec<u8> {
    let part = noise(512 << 10, 11);
    let payload: Vec<u8> = (0..8).flat_map(|_| part.iter().copied()).collect();
    fleet_sim::bundle::build(&v(version), COMPATIBLE, Behaviour::Normal, &payload)
}

/// Publishes the operator's signed description of `made` as the compressed transfer of
/// `bundle`.
async fn describe_compressed(op: &Operator, made: &fleetctl::delta::MadeCompressed, bundle: &[u8]) {
    let bundle_id = id_of(bundle);
    let description = fleet_proto::delta::CompressedDescription {
        bundle_id,
        bundle_size: bundle.len() as u64,
        file_id: made.file_id,
        file_size: made.file_size,
        format: fleet_proto::delta::CompressedFormat::Zstd,
        window_log: made.window_log,
    };
    let sealed = envelope::seal_json(Kind::Compressed, &description, op.key()).expect("seal");
    op.publish_raw(
        &fleet_proto::delta::compressed_topic(&bundle_id),
        sealed,
        true,
    )
    .await
    .expect("description");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_without_a_base_fetches_the_compressed_bundle_and_a_cut_transfer_resumes() {
    let mut b = bench(36).await;
    let mut watch = Watcher::connect(&b.broker, "watcher-c")
        .await
        .expect("watcher");
    let device = "stn-compressed";
    let stn = spawn(device, &b.broker, &b.op.public_hex(), options());
    let bytes = compressible("1.1.0");
    let path = b.files.path().join("compressible.raucb");
    std::fs::write(&path, &bytes).expect("write");
    let made =
        fleetctl::delta::make_compressed(&path, b.files.path(), &mut |_, _| {}).expect("compress");
    let file = std::fs::read(&made.path).expect("file");
    let m =
        b.op.publish_bundle(&bytes, COMPATIBLE, &v("1.1.0"), CHUNK)
            .await
            .expect("raw bundle");
    let fm =
        b.op.manifest(&file, COMPATIBLE, &v("1.1.0"), CHUNK)
            .expect("file manifest");
    let chunks = fm.chunk_count();
    assert!(chunks >= 50, "the file is cut into {chunks} chunks");
    let half = chunks / 2;
    b.op.publish_chunks(&fm, &file, 0..half)
        .await
        .expect("first half");
    b.op.publish_manifest(&fm, None)
        .await
        .expect("file manifest");
    describe_compressed(&b.op, &made, &bytes).await;
    b.op.publish_offer(
        &offer_to_device(device, "rel-110", 70, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let half_bytes = u64::from(half) * u64::from(CHUNK);
    watch
        .wait_state(device, WAIT, |s| {
            s.phase == PhaseName::Downloading
                && s.delivery.as_ref().is_some_and(|d| {
                    d.transport == DeliveryKind::Compressed
                        && d.reason == Some(FullReason::NoBase)
                        && d.expected_bytes == made.file_size
                })
                && s.progress.is_some_and(|p| p.done_bytes == half_bytes)
        })
        .await
        .expect("half of the compressed file held");
    // The broker goes down mid-transfer and comes back with its retained messages.
    b.broker.restart().expect("restart");
    let op = Operator::connect(&b.broker, "operator-2", test_key(36))
        .await
        .expect("operator again");
    op.publish_chunks(&fm, &file, half..chunks)
        .await
        .expect("second half");
    let mut watch = Watcher::connect(&b.broker, "watcher-c2")
        .await
        .expect("watcher again");
    watch
        .wait_state(device, WAIT, |s| {
            s.phase == PhaseName::Idle
                && matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == v("1.1.0"))
        })
        .await
        .expect("committed after the cut");
    let summary = stn.stop().await;
    eprintln!(
        "compressed transfer: {} of {} bytes ({:.1}%) in {chunks} chunks; stored {} bytes, {} again",
        made.file_size,
        bytes.len(),
        made.file_size as f64 * 100.0 / bytes.len() as f64,
        summary.stats.stored_chunk_bytes,
        summary.stats.resent_chunk_bytes
    );
    assert_eq!(
        summary.stats.stored_chunk_bytes, made.file_size,
        "only the compressed file crossed, every byte stored once"
    );
    at_most_two_percent_again(summary.stats.resent_chunk_bytes, made.file_size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_file_that_does_not_decode_to_the_offered_bundle_falls_back_to_the_raw_bundle()
{
    let mut b = bench(37).await;
    let device = "stn-broken-c";
    let stn = spawn(device, &b.broker, &b.op.public_hex(), options());
    let bytes = compressible("1.1.0");
    let id = id_of(&bytes);
    // Signed by the operator all the same, but the file decodes to another bundle.
    let mut other = bytes.clone();
    other[100_000] ^= 1;
    let other_path = b.files.path().join("other.raucb");
    std::fs::write(&other_path, &other).expect("write");
    let made = fleetctl::delta::make_compressed(&other_path, b.files.path(), &mut |_, _| {})
        .expect("compress");
    let file = std::fs::read(&made.path).expect("file");
    let m =
        b.op.publish_bundle(&bytes, COMPATIBLE, &v("1.1.0"), CHUNK)
            .await
            .expect("raw bundle");
    let fm =
        b.op.manifest(&file, COMPATIBLE, &v("1.1.0"), CHUNK)
            .expect("file manifest");
    b.op.publish_chunks(&fm, &file, 0..fm.chunk_count())
        .await
        .expect("file chunks");
    b.op.publish_manifest(&fm, None)
        .await
        .expect("file manifest");
    describe_compressed(&b.op, &made, &bytes).await;
    b.op.publish_offer(
        &offer_to_device(device, "rel-110", 80, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    b.committed(device, "1.1.0").await;
    b.chosen(device, id, |t, r| {
        t == DeliveryKind::Compressed && r == Some(&FullReason::NoBase)
    })
    .await;
    let fallback = b
        .chosen(device, id, |t, r| {
            t == DeliveryKind::Full && r.is_some_and(|r| r.code() == "compressed-failed")
        })
        .await;
    assert!(format!("{fallback:?}").contains("sha256"), "{fallback:?}");
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delta_falls_back_to_the_compressed_bundle_when_one_is_published() {
    let mut b = bench(38).await;
    let device = "stn-d2c";
    let stn = b.station_on_one(device).await;
    let one_bytes = std::fs::read(&b.one).expect("read");
    let two_bytes = compressible("1.2.0");
    let two = id_of(&two_bytes);
    let two_path = b.files.path().join("two.raucb");
    std::fs::write(&two_path, &two_bytes).expect("write");
    // The raw bundle, its compressed transfer, and a signed patch that rebuilds another file.
    let m =
        b.op.publish_bundle(&two_bytes, COMPATIBLE, &v("1.2.0"), CHUNK)
            .await
            .expect("raw bundle");
    let made = fleetctl::delta::make_compressed(&two_path, b.files.path(), &mut |_, _| {})
        .expect("compress");
    let file = std::fs::read(&made.path).expect("file");
    let fm =
        b.op.manifest(&file, COMPATIBLE, &v("1.2.0"), CHUNK)
            .expect("file manifest");
    b.op.publish_chunks(&fm, &file, 0..fm.chunk_count())
        .await
        .expect("file chunks");
    b.op.publish_manifest(&fm, None)
        .await
        .expect("file manifest");
    describe_compressed(&b.op, &made, &two_bytes).await;
    let mut other = two_bytes.clone();
    other[10_000] ^= 1;
    let other_path = b.files.path().join("other");
    std::fs::write(&other_path, &other).expect("other");
    let patch = fleetctl::delta::make_patch(&b.one, &other_path, b.files.path()).expect("patch");
    let bytes = std::fs::read(&patch.path).expect("patch");
    let pm =
        b.op.manifest(&bytes, COMPATIBLE, &v("1.2.0"), CHUNK)
            .expect("patch manifest");
    b.op.publish_chunks(&pm, &bytes, 0..pm.chunk_count())
        .await
        .expect("patch chunks");
    b.op.publish_manifest(&pm, None)
        .await
        .expect("patch manifest");
    describe_delta(&b.op, &patch, &one_bytes, &two_bytes).await;
    b.op.publish_offer(
        &offer_to_device(device, "rel-120", 90, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");

    b.committed(device, "1.2.0").await;
    b.chosen(device, two, |t, _| t == DeliveryKind::Delta).await;
    let fallback = b
        .chosen(device, two, |t, r| {
            t == DeliveryKind::Compressed && r.is_some_and(|r| r.code() == "delta-failed")
        })
        .await;
    assert!(
        matches!(fallback, Report::TransportChosen { expected_bytes, .. } if expected_bytes == made.file_size),
        "{fallback:?}"
    );
    stn.stop().await;
}
