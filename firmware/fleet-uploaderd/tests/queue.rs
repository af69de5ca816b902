//! The store-and-forward queue as the daemon runs it: the update download holds the link, upload
//! windows, the order, parking after repeated failures, the bandwidth cap, and a restart that
//! loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Pcm;
use common::s3::{Fault, Proxy, S3Server};
use common::station::Station;
use fleet_uploaderd::daemon::{Turn, Uploader};
use fleet_uploaderd::upload::Outcome;

const SMALL: Pcm = Pcm {
    rate: 48_000,
    channels: 1,
    bits: 16,
    frames: 48_000,
};

fn status(st: &Station) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(st.state.join("status.json")).unwrap()).unwrap()
}

#[test]
fn an_update_download_holds_the_link_until_its_reservation_goes() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let wav = st.record(1, SMALL);
    let boot_id = st.dir.path().join("boot_id");
    std::fs::write(&boot_id, "boot-1\n").unwrap();
    let cfg = st.config(
        &server.endpoint(),
        &format!("boot-id-path = \"{}\"", boot_id.display()),
    );
    // fleet-updated reserves space before a download (fleet-retentiond reserve --holder update).
    let now = fleet_retentiond::daemon::now_boottime_ms();
    st.index()
        .reserve("update", 1 << 20, "boot-1", now + 60_000)
        .unwrap();
    let mut up = Uploader::new(cfg).unwrap();
    assert!(matches!(up.turn(&mut || true), Turn::Sleep(_)));
    assert_eq!(status(&st)["state"], "waiting");
    assert_eq!(status(&st)["wait_reason"], "update-download");
    assert!(!st.uploaded(&wav));
    // A reservation of another boot is stale: it holds nothing.
    st.index()
        .reserve("update", 1 << 20, "boot-0", now + 60_000)
        .unwrap();
    assert!(matches!(
        up.turn(&mut || true),
        Turn::Tried(Outcome::Marked { .. })
    ));
    assert!(st.uploaded(&wav));
}

#[test]
fn outside_its_windows_the_uploader_waits_and_says_why() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let wav = st.record(2, SMALL);
    // A window that is never now: one minute, twelve hours away from the current UTC time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let m = ((now / 60 + 720) % 1440) as u32;
    let (h1, m1, h2, m2) = (m / 60, m % 60, ((m + 1) % 1440) / 60, (m + 1) % 60);
    let window = format!("[schedule]\nwindows = [\"{h1:02}:{m1:02}-{h2:02}:{m2:02}\"]");
    let mut up = Uploader::new(st.config(&server.endpoint(), &window)).unwrap();
    assert!(matches!(up.turn(&mut || true), Turn::Sleep(_)));
    assert_eq!(status(&st)["wait_reason"], "outside-window");
    assert_eq!(status(&st)["queue_recordings"], 1);
    assert!(!st.uploaded(&wav));
    // The same station with the window around now uploads.
    let (h1, m1) = (((now / 60) % 1440 / 60) as u32, ((now / 60) % 60) as u32);
    let open = format!(
        "[schedule]\nwindows = [\"{h1:02}:{m1:02}-{:02}:{m1:02}\"]",
        (h1 + 2) % 24
    );
    let mut up = Uploader::new(st.config(&server.endpoint(), &open)).unwrap();
    assert!(matches!(
        up.turn(&mut || true),
        Turn::Tried(Outcome::Marked { .. })
    ));
}

#[test]
fn newest_first_sends_the_latest_recording_first() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let old = st.record(3, SMALL);
    let new = st.record(4, SMALL);
    let mut up = Uploader::new(st.config(&server.endpoint(), "order = \"newest-first\"")).unwrap();
    assert!(matches!(
        up.turn(&mut || true),
        Turn::Tried(Outcome::Marked { .. })
    ));
    assert!(st.uploaded(&new) && !st.uploaded(&old));
}

#[test]
fn a_recording_that_keeps_failing_is_parked_and_the_queue_goes_on() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let proxy = Proxy::start(server.port);
    let bad = st.record(5, SMALL);
    let good = st.record(6, SMALL);
    let cfg = st.config(
        &proxy.endpoint(),
        "[retry]\nbase-seconds = 0.01\nmax-seconds = 0.02\ndead-letter-after = 2\n\
         dead-letter-retry-seconds = 3600",
    );
    let mut up = Uploader::new(cfg.clone()).unwrap();
    // Damage in transit twice: the server refuses the digest each time (a recording failure).
    proxy.set(Fault::Corrupt(20_000));
    for _ in 0..2 {
        let Turn::Tried(Outcome::Failed { failure, .. }) = up.turn(&mut || true) else {
            panic!("expected a failure: {:?}", up.status());
        };
        assert_eq!(failure.reason, "bad-digest");
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(status(&st)["parked"], 1, "{}", status(&st));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.state.join("queue.json")).unwrap()).unwrap();
    let name = bad.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(state["recordings"][&name]["parked"], true, "{state}");
    assert_eq!(state["recordings"][&name]["last-reason"], "bad-digest");
    // The link is clean again: the next recording goes, the parked one waits its delay.
    proxy.set(Fault::None);
    assert!(matches!(
        up.turn(&mut || true),
        Turn::Tried(Outcome::Marked { .. })
    ));
    assert!(st.uploaded(&good) && !st.uploaded(&bad));
    assert!(matches!(up.turn(&mut || true), Turn::Sleep(_)));
    assert_eq!(status(&st)["wait_reason"], "recording-backoff");
    // A restart (power cut) keeps the count; a parked recording is tried again at start.
    drop(up);
    let mut up = Uploader::new(cfg).unwrap();
    assert!(matches!(
        up.turn(&mut || true),
        Turn::Tried(Outcome::Marked { .. })
    ));
    assert!(st.uploaded(&bad));
    assert!(bad.exists() && good.exists(), "no recording lost");
}

#[test]
fn the_bandwidth_cap_paces_the_upload() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    // About 190 KB of FLAC-incompressible WAV at 100 KB/s: at least a second and a half.
    let wav = st.record(
        7,
        Pcm {
            rate: 48_000,
            channels: 2,
            bits: 16,
            frames: 48_000,
        },
    );
    let size = std::fs::metadata(&wav).unwrap().len();
    let cfg = st.config(
        &server.endpoint(),
        "format = \"wav\"\n[bandwidth]\nmax-bytes-per-second = 100000\nburst-bytes = 16384",
    );
    let mut up = Uploader::new(cfg).unwrap();
    let started = Instant::now();
    assert!(matches!(
        up.turn(&mut || true),
        Turn::Tried(Outcome::Marked { .. })
    ));
    let floor = Duration::from_millis((size - 16_384) * 1000 / 100_000);
    assert!(
        started.elapsed() >= floor,
        "{size} bytes at 100 KB/s took {:?}, less than {floor:?}",
        started.elapsed()
    );
}
