//! The SFTP destination against a real OpenSSH server (a private `sshd` on loopback with
//! OpenSSH's `sftp-server`). Every fault ends with nothing marked uploaded that is not on the
//! server intact, and no recording lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::sftp::{LIE, Mode, SshServer, keygen};
use common::station::Station;
use common::{SMALL, big, failure, turn};
use fleet_core::upload::FailureScope;
use fleet_uploaderd::daemon::Uploader;
use fleet_uploaderd::flac::{self, PcmLayout};
use fleet_uploaderd::upload::Outcome;

fn message(o: &Outcome) -> String {
    match o {
        Outcome::Failed { message, .. } => message.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn assert_intact_flac(copy: &Path, wav: &Path) {
    let info = fleet_retentiond::wav::read(wav).unwrap();
    let layout = PcmLayout::of(&info).unwrap();
    flac::verify(wav, &layout, copy, &mut || true).expect("the server's copy is lossless");
}

#[test]
fn a_recording_uploads_over_sftp_and_is_marked_only_after_the_read_back_matches() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadWrite);
    let wav = st.record(1, SMALL);
    let mut up = Uploader::new(st.sftp_config(&server, "", "")).unwrap();
    let Outcome::Marked {
        key,
        object_bytes,
        recording_bytes,
    } = turn(&mut up)
    else {
        panic!("not marked: {:?}", up.status());
    };
    let name = wav.file_stem().unwrap().to_string_lossy().into_owned();
    let rel = format!("st-1/mic-0/2025-12-06/{name}.flac");
    assert_eq!(key, format!("{}/{rel}", server.root.display()));
    assert!(object_bytes < recording_bytes);
    assert!(st.uploaded(&wav));
    assert!(wav.exists(), "the uploader never deletes: retention does");
    // Exactly the object, no temp file left behind; it decodes to the recording's samples.
    assert_eq!(server.files(), vec![rel.clone()]);
    assert_intact_flac(&server.root.join(&rel), &wav);
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(st.state.join("status.json")).unwrap()).unwrap();
    assert_eq!(
        status["destination"],
        format!(
            "sftp://{}@127.0.0.1:{}/{}",
            server.user,
            server.port,
            server.root.display()
        )
    );

    // An object of the right size but other content under the key (damage on the server) is
    // not taken for the upload: the read-back gives it away, and the object is sent again.
    let wav2 = st.record(2, big(1));
    let name2 = wav2.file_stem().unwrap().to_string_lossy().into_owned();
    let rel2 = format!("st-1/mic-0/2025-12-06/{name2}.wav");
    let cfg = st.sftp_config(&server, "format = \"wav\"", "");
    let mut damaged = std::fs::read(&wav2).unwrap();
    damaged[100_000] ^= 0xff;
    std::fs::write(server.root.join(&rel2), &damaged).unwrap();
    let mut up = Uploader::new(cfg).unwrap();
    assert!(
        matches!(turn(&mut up), Outcome::Marked { .. }),
        "{:?}",
        up.status()
    );
    assert_eq!(
        std::fs::read(server.root.join(&rel2)).unwrap(),
        std::fs::read(&wav2).unwrap()
    );
    assert!(
        up.status().sent_bytes_total >= damaged.len() as u64,
        "sent again"
    );
}

#[test]
fn an_object_already_on_the_server_intact_is_marked_without_sending_it_again() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadWrite);
    let wav = st.record(3, big(1));
    let name = wav.file_stem().unwrap().to_string_lossy().into_owned();
    let rel = format!("st-1/mic-0/2025-12-06/{name}.wav");
    // A power cut after the rename, before the mark.
    std::fs::create_dir_all(server.root.join("st-1/mic-0/2025-12-06")).unwrap();
    std::fs::copy(&wav, server.root.join(&rel)).unwrap();
    let mut up = Uploader::new(st.sftp_config(&server, "format = \"wav\"", "")).unwrap();
    assert!(
        matches!(turn(&mut up), Outcome::Marked { .. }),
        "{:?}",
        up.status()
    );
    assert!(st.uploaded(&wav));
    assert_eq!(up.status().sent_bytes_total, 0);
}

#[test]
fn a_wrong_host_key_is_refused_and_nothing_is_marked() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadWrite);
    let wav = st.record(4, SMALL);
    let cfg = st.sftp_config(
        &server,
        "[retry]\nbase-seconds = 0.01\nmax-seconds = 0.02",
        "",
    );
    // The host listed with another key: someone in between, or a reinstalled server.
    let other = st.dir.path().join("other_host");
    keygen(&other);
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut f = pubkey.split_whitespace();
    let (t, k) = (f.next().unwrap(), f.next().unwrap());
    std::fs::write(
        st.known_hosts(),
        format!("[127.0.0.1]:{} {t} {k}\n", server.port),
    )
    .unwrap();
    let mut up = Uploader::new(cfg).unwrap();
    let o = turn(&mut up);
    let (scope, reason) = failure(&o);
    assert_eq!((scope, reason.as_str()), (FailureScope::Link, "host-key"));
    assert!(
        message(&o).contains(&st.known_hosts().display().to_string()),
        "{o:?}"
    );
    // A known-hosts file that does not list this server at all.
    std::fs::write(st.known_hosts(), format!("[127.0.0.1]:1 {t} {k}\n")).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let (scope, reason) = failure(&turn(&mut up));
    assert_eq!((scope, reason.as_str()), (FailureScope::Link, "host-key"));
    // No known-hosts file: a clear error naming it, never a connection without the check.
    std::fs::remove_file(st.known_hosts()).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    let o = turn(&mut up);
    let (_, reason) = failure(&o);
    assert_eq!(reason, "credentials");
    assert!(message(&o).contains("known_hosts"), "{o:?}");
    assert!(!st.uploaded(&wav));
    assert!(server.files().is_empty(), "{:?}", server.files());
    // The right file, re-read at the next connect, works without a restart.
    std::fs::write(st.known_hosts(), server.known_hosts_line()).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    assert!(
        matches!(turn(&mut up), Outcome::Marked { .. }),
        "{:?}",
        up.status()
    );
    assert!(st.uploaded(&wav));
}

#[test]
fn a_user_key_the_server_does_not_know_is_refused() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadWrite);
    let wav = st.record(5, SMALL);
    let cfg = st.sftp_config(&server, "", "");
    let stranger = st.dir.path().join("stranger");
    keygen(&stranger);
    std::fs::copy(&stranger, st.sftp_key()).unwrap();
    let mut up = Uploader::new(cfg).unwrap();
    let o = turn(&mut up);
    let (scope, reason) = failure(&o);
    assert_eq!((scope, reason.as_str()), (FailureScope::Link, "auth"));
    assert!(
        message(&o).contains(&st.sftp_key().display().to_string()),
        "{o:?}"
    );
    assert!(!st.uploaded(&wav));
    assert!(server.files().is_empty());
}

#[test]
fn a_read_only_server_refuses_the_write_and_the_recording_stays_unmarked() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadOnly);
    let wav = st.record(6, SMALL);
    let mut up = Uploader::new(st.sftp_config(&server, "", "")).unwrap();
    let (scope, reason) = failure(&turn(&mut up));
    assert_eq!((scope, reason.as_str()), (FailureScope::Link, "permission"));
    assert!(!st.uploaded(&wav));
    assert!(wav.exists());
    assert!(server.files().is_empty());
}

#[test]
fn a_full_server_disk_leaves_the_recording_unmarked_and_on_the_station() {
    let st = Station::new();
    let mut server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadWrite);
    // A 1 MiB file system as the remote directory (root only, as the S3 test).
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&server.root)
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
    let guard = Unmount(server.root.clone());
    let wav = st.record(7, big(3));
    let mut up = Uploader::new(st.sftp_config(&server, "format = \"wav\"", "")).unwrap();
    let (scope, reason) = failure(&turn(&mut up));
    assert_eq!(scope, FailureScope::Link, "{reason}");
    assert_eq!(reason, "remote-failure");
    assert!(!st.uploaded(&wav));
    assert!(wav.exists());
    server.kill();
    drop(guard);
}

#[test]
fn a_connection_killed_mid_upload_resumes_after_the_restart_and_ends_intact() {
    let st = Station::new();
    let mut server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadWrite);
    let wav = st.record(8, big(6));
    let size = std::fs::metadata(&wav).unwrap().len();
    let name = wav.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = server.root.join("st-1/mic-0/2025-12-06");
    let temp = dir.join(format!(".{name}.wav.part"));
    // 2 MB/s: the transfer takes about 3 s, long enough to cut it in the middle.
    let cfg = st.sftp_config(
        &server,
        "format = \"wav\"\n[bandwidth]\nmax-bytes-per-second = 2000000",
        "",
    );
    let mut up = Uploader::new(cfg.clone()).unwrap();
    let stop = AtomicBool::new(false);
    let o = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if std::fs::metadata(&temp).is_ok_and(|m| m.len() > 2 << 20) {
                    server.kill();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            false
        });
        let o = turn(&mut up);
        stop.store(true, Ordering::Relaxed);
        assert!(
            watcher.join().unwrap(),
            "the server was not killed mid-upload"
        );
        o
    });
    let (scope, reason) = failure(&o);
    assert_eq!((scope, reason.as_str()), (FailureScope::Link, "connection"));
    assert!(!st.uploaded(&wav));
    let partial = std::fs::metadata(&temp).unwrap().len();
    assert!(partial > 0 && partial < size, "{partial} of {size}");
    assert!(!dir.join(format!("{name}.wav")).exists());

    // The server comes back; the station restarts too (a new daemon, as after a power cut).
    server.start_again();
    drop(up);
    let mut up = Uploader::new(cfg).unwrap();
    let Outcome::Marked { key, .. } = turn(&mut up) else {
        panic!("not marked after the restart: {:?}", up.status());
    };
    assert!(st.uploaded(&wav));
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&wav).unwrap());
    assert!(!temp.exists());
    let sent = up.status().sent_bytes_total;
    assert!(
        sent <= size - partial,
        "continued from the temp file: sent {sent} of {size} ({partial} were there)"
    );
}

#[test]
fn the_bandwidth_cap_paces_the_upload_and_the_read_back_alike() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::ReadWrite);
    let wav = st.record(9, big(1));
    let size = std::fs::metadata(&wav).unwrap().len() as f64;
    // 1 MB/s with a burst of 0.2 MB: up and back down, about 2 MB must take about 2 s.
    let cfg = st.sftp_config(
        &server,
        "format = \"wav\"\n[bandwidth]\nmax-bytes-per-second = 1000000\nburst-bytes = 200000",
        "verify = \"read-back\"",
    );
    let mut up = Uploader::new(cfg).unwrap();
    let t = Instant::now();
    assert!(
        matches!(turn(&mut up), Outcome::Marked { .. }),
        "{:?}",
        up.status()
    );
    let floor = (2.0 * size - 200_000.0) / 1e6;
    assert!(
        t.elapsed().as_secs_f64() >= floor * 0.95,
        "{:?} for {size} bytes each way",
        t.elapsed()
    );
    assert!(st.uploaded(&wav));
}

#[test]
fn the_servers_hash_confirms_the_upload_and_nothing_is_read_back() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::CountingHashes);
    let wav = st.record(10, big(4));
    let size = std::fs::metadata(&wav).unwrap().len() as f64;
    // Under a 2 MB/s cap an upload plus a read-back of 4 MB would take 4 s; the server's hash
    // moves no object bytes down, so it takes about 2 s (the default, verify = "auto").
    let cfg = st.sftp_config(
        &server,
        "format = \"wav\"\n[bandwidth]\nmax-bytes-per-second = 2000000\nburst-bytes = 200000",
        "",
    );
    let mut up = Uploader::new(cfg).unwrap();
    let t = Instant::now();
    let Outcome::Marked { key, .. } = turn(&mut up) else {
        panic!("not marked: {:?}", up.status());
    };
    let took = t.elapsed().as_secs_f64();
    assert!(st.uploaded(&wav));
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&wav).unwrap());
    // Asked once, for the confirmation (the look before sending found no object), with the
    // path as one argument; OpenSSL's hash, as the server has it.
    assert_eq!(
        server.hash_calls(),
        vec![format!("openssl dgst -sha256 -r -- {key}")]
    );
    assert!(
        took < (2.0 * size - 200_000.0) / 2e6 * 0.9,
        "{took:.2} s: the object was read back"
    );

    // verify = "remote-hash" on the same server: the same, required.
    let wav2 = st.record(11, SMALL);
    let cfg = st.sftp_config(&server, "", "verify = \"remote-hash\"");
    let mut up = Uploader::new(cfg).unwrap();
    assert!(
        matches!(turn(&mut up), Outcome::Marked { .. }),
        "{:?}",
        up.status()
    );
    assert!(st.uploaded(&wav2));
    assert_eq!(server.hash_calls().len(), 2);

    // verify = "read-back" never execs.
    let wav3 = st.record(12, SMALL);
    let cfg = st.sftp_config(&server, "", "verify = \"read-back\"");
    let mut up = Uploader::new(cfg).unwrap();
    assert!(
        matches!(turn(&mut up), Outcome::Marked { .. }),
        "{:?}",
        up.status()
    );
    assert!(st.uploaded(&wav3));
    assert_eq!(server.hash_calls().len(), 2);
}

#[test]
fn a_hash_channel_the_server_closed_during_the_upload_is_asked_again_on_a_new_one() {
    let st = Station::new();
    // The server closes exec channels idle for two seconds; the one opened ahead for the hash
    // waits about four while the upload runs under a 2 MB/s cap. (The new channel has two
    // seconds of quiet for the login shell to start and hash.)
    let server = SshServer::start_with(
        &st.dir.path().join("sshd"),
        Mode::CountingHashes,
        "LogLevel DEBUG1\nChannelTimeout session:command=2s\n",
    );
    let wav = st.record(14, big(8));
    let cfg = st.sftp_config(
        &server,
        "format = \"wav\"\n[bandwidth]\nmax-bytes-per-second = 2000000\nburst-bytes = 200000",
        "verify = \"remote-hash\"",
    );
    let mut up = Uploader::new(cfg).unwrap();
    let Outcome::Marked { key, .. } = turn(&mut up) else {
        panic!("not marked: {:?}", up.status());
    };
    assert!(
        server.log().contains("seconds of inactivity"),
        "the server did not close the idle channel"
    );
    assert!(st.uploaded(&wav));
    assert_eq!(std::fs::read(&key).unwrap(), std::fs::read(&wav).unwrap());
    // Hashed once, on the new channel, after the rename.
    assert_eq!(
        server.hash_calls(),
        vec![format!("openssl dgst -sha256 -r -- {key}")]
    );
}

#[test]
fn a_server_without_openssl_hashes_with_sha256sum() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::CountingWithoutOpenssl);
    let wav = st.record(15, SMALL);
    let cfg = st.sftp_config(&server, "", "verify = \"remote-hash\"");
    let mut up = Uploader::new(cfg).unwrap();
    let Outcome::Marked { key, .. } = turn(&mut up) else {
        panic!("not marked: {:?}", up.status());
    };
    assert!(st.uploaded(&wav));
    assert_intact_flac(Path::new(&key), &wav);
    assert_eq!(server.hash_calls(), vec![format!("sha256sum -- {key}")]);
}

#[test]
fn an_sftp_only_server_is_confirmed_by_reading_back_unless_the_remote_hash_is_required() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::InternalSftpOnly);
    // Required: the server's refusal fails the upload and holds the link; nothing is marked.
    let wav = st.record(13, SMALL);
    let cfg = st.sftp_config(
        &server,
        "[retry]\nbase-seconds = 0.01\nmax-seconds = 0.02",
        "verify = \"remote-hash\"",
    );
    let mut up = Uploader::new(cfg).unwrap();
    let o = turn(&mut up);
    let (scope, reason) = failure(&o);
    assert_eq!(
        (scope, reason.as_str()),
        (FailureScope::Link, "remote-hash")
    );
    let m = message(&o);
    assert!(m.contains("sha256sum") && m.contains("verify"), "{m}");
    assert!(!st.uploaded(&wav));
    assert!(wav.exists());

    // auto (the default): the exec gives no hash line, so this connection reads back, and the
    // recording is marked.
    let cfg = st.sftp_config(&server, "", "");
    let mut up = Uploader::new(cfg).unwrap();
    let Outcome::Marked { key, .. } = turn(&mut up) else {
        panic!("not marked: {:?}", up.status());
    };
    assert!(st.uploaded(&wav));
    let info = fleet_retentiond::wav::read(&wav).unwrap();
    flac::verify(
        &wav,
        &PcmLayout::of(&info).unwrap(),
        Path::new(&key),
        &mut || true,
    )
    .expect("intact on the server");
}

#[test]
fn a_server_hash_that_lies_fails_the_upload_and_nothing_is_marked() {
    let st = Station::new();
    let server = SshServer::start(&st.dir.path().join("sshd"), Mode::LyingHashes);
    let wav = st.record(14, SMALL);
    for verify in ["auto", "remote-hash"] {
        let cfg = st.sftp_config(
            &server,
            "[retry]\nbase-seconds = 0.01\nmax-seconds = 0.02",
            &format!("verify = \"{verify}\""),
        );
        let mut up = Uploader::new(cfg).unwrap();
        let o = turn(&mut up);
        let (scope, reason) = failure(&o);
        assert_eq!(
            (scope, reason.as_str()),
            (FailureScope::Recording, "checksum"),
            "{verify}"
        );
        // The reason names both digests; no read-back rescued it.
        let m = message(&o);
        assert!(m.contains("sha256sum") && m.contains(LIE), "{m}");
        assert!(!st.uploaded(&wav), "{verify}");
        assert!(
            up.status().failures_by_reason.contains_key("checksum"),
            "{verify}"
        );
        assert!(wav.exists());
    }
}
