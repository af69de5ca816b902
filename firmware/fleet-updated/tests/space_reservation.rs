//! The download's space reservation in retentiond's recording index (real SQLite on disk, real
//! mosquitto, the simulated installer): fleet-updated holds the `update` reservation for the
//! bundle's size while it downloads and drops it when the download ends; a reservation a
//! crashed daemon left behind lapses by itself, and a starting daemon drops it.
mod common;

use std::path::Path;
use std::time::Duration;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, config_text, start};
use fleet_core::update::{DownloadFailure, Outcome, PhaseName, Report};
use fleet_retentiond::index::{Index, UPDATE_HOLDER};
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};
use fleet_updated::Config;
use fleet_updated::reservation::RESERVATION_TTL;

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn now_ms() -> u64 {
    fleet_retentiond::daemon::now_boottime_ms()
}

/// The live `update` reservation's bytes, if there is one (same boot, not lapsed by `at`).
fn reserved(index: &Index, at: u64) -> Option<u64> {
    index
        .has_reservation(UPDATE_HOLDER, &boot_id(), at)
        .expect("query")
        .then(|| index.reserved_bytes(&boot_id(), at).expect("sum"))
}

/// Polls until `want(reserved(..))` holds.
async fn until(index: &Index, what: &str, want: impl Fn(Option<u64>) -> bool) {
    tokio::time::timeout(WAIT, async {
        while !want(reserved(index, now_ms())) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: reservation is {:?}", reserved(index, now_ms())));
}

fn index_under(data: &Path) -> Index {
    let dir = data.join("fleet").join("retention");
    std::fs::create_dir_all(&dir).expect("retention dir");
    Index::open(&dir.join("index.sqlite")).expect("index")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_reservation_lives_exactly_as_long_as_the_download() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(31))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-reserve";
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        id,
        &broker,
        &op.public_hex(),
        dir.path(),
        &StationOptions::default(),
    );
    let path = dir.path().join("updated.toml");
    std::fs::write(&path, &text).expect("config");
    let config = Config::load(&path).expect("valid config");
    // retentiond's index, with a reservation a crashed daemon left behind.
    let index = index_under(&config.data_dir);
    let far = now_ms() + 3_600_000;
    index
        .reserve(UPDATE_HOLDER, 1, &boot_id(), far)
        .expect("stale reservation");

    let stn = start(id, dir, config);
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");
    until(&index, "dropped at start-up", |r| r.is_none()).await;

    // Chunk 3 is held back: the download waits for it.
    let b = bundle("1.2.0", Behaviour::Normal, 10 * 4096);
    let size = b.len() as u64;
    let m = op
        .manifest(&b, COMPATIBLE, &v("1.2.0"), 4096)
        .expect("manifest");
    op.publish_chunks(&m, &b, 0..3).await.expect("chunks");
    op.publish_chunks(&m, &b, 4..m.chunk_count())
        .await
        .expect("chunks");
    op.publish_manifest(&m, None).await.expect("manifest");
    op.publish_offer(
        &offer_to_device(id, "rel-120", 1, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Downloading)
        .await
        .expect("downloading");
    until(&index, "held while downloading", |r| r == Some(size)).await;

    // A crash mid-download leaves the reservation; it lapses by itself after its TTL.
    let (dir, config) = stn.power_cut();
    let ttl = u64::try_from(RESERVATION_TTL.as_millis()).expect("ms");
    let now = now_ms();
    assert_eq!(
        reserved(&index, now),
        Some(size),
        "left behind by the crash"
    );
    assert_eq!(
        reserved(&index, now + ttl + 1000),
        None,
        "a crashed holder's reservation lapses by itself"
    );

    // The restarted daemon resumes the download and holds the reservation again; once the
    // missing chunk comes, the download ends and the reservation goes.
    let stn = start(id, dir, config);
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Downloading)
        .await
        .expect("downloading again");
    until(&index, "held again after the restart", |r| r == Some(size)).await;
    op.publish_chunks(&m, &b, 3..4).await.expect("last chunk");
    let s = watch
        .wait_state(id, WAIT, |s| {
            s.phase == PhaseName::Idle && s.last_outcome.is_some()
        })
        .await
        .expect("the update ends");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == v("1.2.0")),
        "{s:#?}"
    );
    assert_eq!(
        reserved(&index, now_ms()),
        None,
        "released when the download ended"
    );
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_fails_drops_its_reservation() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(32))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let id = "stn-reserve-fail";
    let dir = tempfile::tempdir().expect("tempdir");
    let options = StationOptions {
        stall_timeout_secs: 1,
        ..StationOptions::default()
    };
    let text = config_text(id, &broker, &op.public_hex(), dir.path(), &options);
    let path = dir.path().join("updated.toml");
    std::fs::write(&path, &text).expect("config");
    let config = Config::load(&path).expect("valid config");
    let index = index_under(&config.data_dir);
    let stn = start(id, dir, config);
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");

    // The offer names a bundle whose manifest never comes: the download ends as `no-manifest`.
    let b = bundle("1.3.0", Behaviour::Normal, 8 * 4096);
    let size = b.len() as u64;
    let m = op
        .manifest(&b, COMPATIBLE, &v("1.3.0"), 4096)
        .expect("manifest");
    op.publish_offer(
        &offer_to_device(id, "rel-130", 1, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    until(&index, "held while waiting for the manifest", |r| {
        r == Some(size)
    })
    .await;
    watch
        .wait_event(id, WAIT, |e| {
            matches!(
                &e.event,
                Report::DownloadFailed {
                    failure: DownloadFailure::NoManifest { .. }
                }
            )
        })
        .await
        .expect("no manifest");
    until(&index, "dropped when the download failed", |r| r.is_none()).await;
    stn.stop().await;
}
