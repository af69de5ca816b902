//! The S3 destination against a real server (s3s-fs) with faults injected by a TCP proxy. Every
//! fault ends with nothing marked uploaded that is not on the server intact, and no recording lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::s3::{Fault, Proxy, S3Server};
use common::station::Station;
use common::{SMALL, big, failure, turn};
use fleet_core::upload::FailureScope;
use fleet_uploaderd::daemon::{Turn, Uploader};
use fleet_uploaderd::flac::{self, PcmLayout};
use fleet_uploaderd::upload::Outcome;

/// The server's copy decodes to exactly the recording's samples.
fn assert_intact_flac(server: &S3Server, key: &str, wav: &std::path::Path) {
    let bytes = server.object(key).expect("object on the server");
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), bytes).unwrap();
    let info = fleet_retentiond::wav::read(wav).unwrap();
    let layout = PcmLayout::of(&info).unwrap();
    flac::verify(wav, &layout, copy.path(), &mut || true).expect("the server's copy is lossless");
}

#[test]
fn a_recording_is_uploaded_as_flac_confirmed_and_marked() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let wav = st.record(1, SMALL);
    let mut up = Uploader::new(st.config(&server.endpoint(), "")).unwrap();
    let Outcome::Marked {
        key,
        object_bytes,
        recording_bytes,
    } = turn(&mut up)
    else {
        panic!("not marked: {:?}", up.status());
    };
    let name = wav.file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(key, format!("fleet/st-1/mic-0/2025-12-06/{name}.flac"));
    assert!(object_bytes < recording_bytes);
    assert!(st.uploaded(&wav));
    assert!(wav.exists(), "the uploader never deletes: retention does");
    assert_intact_flac(&server, &key, &wav);
    // The queue is empty now; the status says so and counts the upload.
    assert!(matches!(up.turn(&mut || true), Turn::Sleep(_)));
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.state.join("status.json")).unwrap()).unwrap();
    assert_eq!(status["state"], "idle");
    assert_eq!(status["uploaded_total"], 1);
    assert_eq!(status["queue_recordings"], 0);
    // Nothing is left in the spool.
    assert_eq!(
        std::fs::read_dir(st.state.join("spool")).unwrap().count(),
        0
    );
}

#[test]
fn a_large_recording_goes_multipart_and_survives_a_link_dropped_mid_upload() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let proxy = Proxy::start(server.port);
    let wav = st.record(2, big(13));
    let cfg = st.config_with(
        &proxy.endpoint(),
        "format = \"wav\"",
        "multipart-threshold-mib = 5\npart-size-mib = 5",
    );
    // The link drops after 7 MiB: part 1 is on the server, part 2 is cut.
    proxy.set(Fault::DropAfter(7 << 20));
    let mut up = Uploader::new(cfg.clone()).unwrap();
    let (scope, reason) = failure(&turn(&mut up));
    assert_eq!((scope, reason.as_str()), (FailureScope::Link, "connection"));
    assert!(!st.uploaded(&wav), "nothing marked after a dropped link");
    assert!(
        server.keys().is_empty(),
        "no object before the upload completes"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.state.join("queue.json")).unwrap()).unwrap();
    assert_eq!(
        state["in-flight"]["parts"].as_array().unwrap().len(),
        1,
        "{state}"
    );

    // A restart (a power cut) with the link back: the upload resumes with the part the server
    // holds and sends only the rest.
    drop(up);
    proxy.set(Fault::None);
    let before = proxy.passed.load(std::sync::atomic::Ordering::Relaxed);
    let mut up = Uploader::new(cfg).unwrap();
    let Outcome::Marked {
        key, object_bytes, ..
    } = turn(&mut up)
    else {
        panic!("not marked after the resume: {:?}", up.status());
    };
    let sent = proxy.passed.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        sent < object_bytes - (4 << 20),
        "resumed, not restarted: sent {sent} of {object_bytes}"
    );
    assert!(st.uploaded(&wav));
    assert_eq!(
        server.object(&key).unwrap(),
        std::fs::read(&wav).unwrap(),
        "the WAV as it is"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.state.join("queue.json")).unwrap()).unwrap();
    assert!(state["in-flight"].is_null(), "{state}");
}

#[test]
fn server_errors_refused_connections_and_wrong_credentials_mark_nothing() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let proxy = Proxy::start(server.port);
    let wav = st.record(3, SMALL);
    let cfg = st.config(
        &proxy.endpoint(),
        "[retry]\nbase-seconds = 0.01\nmax-seconds = 0.02",
    );
    let mut up = Uploader::new(cfg).unwrap();
    for (fault, reason) in [
        (Fault::Status(503), "http-503"),
        (Fault::Status(500), "http-500"),
        (Fault::Refuse, "connection"),
    ] {
        proxy.set(fault);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (scope, got) = failure(&turn(&mut up));
        assert_eq!(
            (scope, got.as_str()),
            (FailureScope::Link, reason),
            "{fault:?}"
        );
        assert!(!st.uploaded(&wav));
    }
    proxy.set(Fault::None);
    st.credentials("fleet-test-access", "not-the-secret");
    std::thread::sleep(std::time::Duration::from_millis(30));
    let (scope, got) = failure(&turn(&mut up));
    assert_eq!((scope, got.as_str()), (FailureScope::Link, "auth"));
    assert!(!st.uploaded(&wav));
    assert!(server.keys().is_empty());
    // Credentials are re-read at every connect: the right ones work without a restart.
    st.credentials(common::s3::ACCESS_KEY, common::s3::SECRET_KEY);
    std::thread::sleep(std::time::Duration::from_millis(30));
    assert!(
        matches!(turn(&mut up), Outcome::Marked { .. }),
        "{:?}",
        up.status()
    );
    assert!(st.uploaded(&wav));
    let counts = up.failures_by_reason();
    for r in ["http-503", "http-500", "connection", "auth"] {
        assert_eq!(counts.get(r), Some(&1), "{r}: {counts:?}");
    }
}

#[test]
fn damage_in_transit_is_refused_by_the_checksums_and_nothing_is_marked() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let proxy = Proxy::start(server.port);
    let small = st.record(4, SMALL);
    let cfg = st.config(
        &proxy.endpoint(),
        "[retry]\nbase-seconds = 0.01\nmax-seconds = 0.02",
    );
    // Flip a byte deep in the body of the first PUT (past the HEAD and the request head).
    proxy.set(Fault::Corrupt(20_000));
    let mut up = Uploader::new(cfg).unwrap();
    let (scope, reason) = failure(&turn(&mut up));
    assert_eq!(
        (scope, reason.as_str()),
        (FailureScope::Recording, "bad-digest")
    );
    assert!(!st.uploaded(&small));
    // Multipart: the server keeps a damaged part; its ETag gives it away.
    let big_wav = st.record(5, big(11));
    st.index()
        .set_flags(
            &[small.file_name().unwrap().to_string_lossy().into_owned()],
            Some(true),
            None,
        )
        .unwrap();
    let cfg = st.config_with(
        &proxy.endpoint(),
        "format = \"wav\"\n[retry]\nbase-seconds = 0.01\nmax-seconds = 0.02",
        "multipart-threshold-mib = 5\npart-size-mib = 5",
    );
    let mut up = Uploader::new(cfg).unwrap();
    proxy.set(Fault::Corrupt(3 << 20));
    let (scope, reason) = failure(&turn(&mut up));
    assert_eq!(scope, FailureScope::Recording);
    assert!(reason == "checksum" || reason == "bad-digest", "{reason}");
    assert!(!st.uploaded(&big_wav));
    assert!(
        server.keys().iter().all(|k| !k.contains("00000005")),
        "{:?}",
        server.keys()
    );
    // Once the link is clean the damaged part is sent again and the object completes intact.
    proxy.set(Fault::None);
    std::thread::sleep(std::time::Duration::from_millis(30));
    let Outcome::Marked { key, .. } = turn(&mut up) else {
        panic!("not marked: {:?}", up.status());
    };
    assert_eq!(
        server.object(&key).unwrap(),
        std::fs::read(&big_wav).unwrap()
    );
}

#[test]
fn a_slow_link_still_delivers_the_recording_intact() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let proxy = Proxy::start(server.port);
    proxy.set(Fault::Slow(400_000));
    let wav = st.record(6, SMALL);
    let mut up = Uploader::new(st.config(&proxy.endpoint(), "")).unwrap();
    let Outcome::Marked { key, .. } = turn(&mut up) else {
        panic!("not marked: {:?}", up.status());
    };
    assert_intact_flac(&server, &key, &wav);
}

#[test]
fn a_full_server_disk_marks_nothing_and_loses_nothing() {
    let st = Station::new();
    let root = st.dir.path().join("s3");
    std::fs::create_dir_all(&root).unwrap();
    // A 1 MiB file system under the server (root only; skipped where mounting is impossible).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&root)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        mounted,
        "cannot mount a tmpfs here: the test command runs as root (README)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(root.clone());
    let server = S3Server::start(&root);
    let wav = st.record(7, big(3));
    let mut up = Uploader::new(st.config(&server.endpoint(), "format = \"wav\"")).unwrap();
    let (scope, reason) = failure(&turn(&mut up));
    assert_eq!(scope, FailureScope::Link, "{reason}");
    assert!(
        reason.starts_with("http-5") || reason == "connection",
        "{reason}"
    );
    assert!(!st.uploaded(&wav));
    assert!(wav.exists());
    drop(server);
}

#[test]
fn a_recording_retention_deleted_while_queued_is_skipped() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let a = st.record(8, SMALL);
    let b = st.record(9, SMALL);
    let cfg = st.config(&server.endpoint(), "");
    let mut up = Uploader::new(cfg.clone()).unwrap();
    // Retention deletes the first between the uploader's look at the queue and the upload.
    let name = a.file_name().unwrap().to_string_lossy().into_owned();
    let mut index = st.index();
    let row = index
        .upload_queue(false, 10)
        .unwrap()
        .into_iter()
        .find(|r| r.path == name)
        .unwrap();
    index.mark_deleting(&[(row.id, name.as_str())]).unwrap();
    std::fs::remove_file(&a).unwrap();
    index.confirm_unlinked(&[row.id]).unwrap();
    struct NoState(Option<fleet_uploaderd::s3::InFlight>);
    impl fleet_uploaderd::upload::Persist for NoState {
        fn in_flight(&mut self, r: Option<&fleet_uploaderd::s3::InFlight>) -> std::io::Result<()> {
            self.0 = r.cloned();
            Ok(())
        }
        fn current(&self) -> Option<&fleet_uploaderd::s3::InFlight> {
            self.0.as_ref()
        }
    }
    let mut keep_going = || true;
    let mut pacer = fleet_uploaderd::pace::Pacer::new(0, 0, 1 << 16, &mut keep_going);
    let o = fleet_uploaderd::upload::upload_one(
        &cfg,
        &mut index,
        &row,
        None,
        &mut NoState(None),
        &mut pacer,
    );
    assert_eq!(o, Outcome::SkippedDeleted);
    assert!(server.keys().is_empty());
    // The daemon goes on with the next one.
    assert!(matches!(turn(&mut up), Outcome::Marked { .. }));
    assert!(st.uploaded(&b));
}
