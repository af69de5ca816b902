//! The daemon binary on an ordinary directory: configuration checks, event-driven indexing and
//! the systemd notify protocol (READY, WATCHDOG).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{DaemonGuard, record_segment, wait_for};
use fleet_retentiond::index::Index;

fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let recorder = dir.join("recorder");
    std::fs::create_dir_all(recorder.join(".buffer")).unwrap();
    std::fs::create_dir_all(recorder.join("data")).unwrap();
    let path = dir.join("retentiond.toml");
    std::fs::write(
        &path,
        format!(
            "recordings-dir = {:?}\nstate-dir = {:?}\nmetrics-path = {:?}\n{extra}\n",
            recorder.join("data"),
            dir.join("state"),
            dir.join("metrics.json")
        ),
    )
    .unwrap();
    path
}

/// Daemon settings under which the policy deletes nothing here and only filesystem events index
/// (the catch-up is an hour away), with a retention cycle of `cycle_seconds`. The tiers sit at
/// the top and the floor is off: the host's own disk usage (the temporary directory is on it)
/// must not let the policy delete the segments a test looks for.
fn keep_all_without_catch_up(cycle_seconds: &str) -> String {
    format!(
        "[policy]\nupdate-reserve-mib = 0\nhousekeeping-at-percent = 99.7\ndefensive-at-percent = 99.8\n\
         panic-at-percent = 99.9\nhysteresis-percent = 0.1\nfloor-seconds = 0\nfloor-target-seconds = 0\n\
         [daemon]\nballast-mib = 0\ncycle-seconds = {cycle_seconds}\ncatch-up-seconds = 3600\n"
    )
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleet-retentiond"));
    c.env("RUST_LOG", "warn");
    c
}

#[test]
fn check_config_exits_2_on_an_invalid_file_and_0_on_a_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let good = config(dir.path(), "[policy]\nuploader = false\n");
    let out = bin()
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "recordings-dir = \"/x\"\nstate-dir = \"/y\"\n[policy]\npanic-at-percent = 50\n",
    )
    .unwrap();
    let out = bin()
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("policy"));
    let out = bin()
        .arg("--config")
        .arg(dir.path().join("absent.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn promoted_segments_are_indexed_from_filesystem_events_and_systemd_is_notified() {
    let dir = tempfile::tempdir().unwrap();
    // A catch-up far in the future: only inotify can index the new segments in time.
    let cfg = config(dir.path(), &keep_all_without_catch_up("0.1"));
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid: `exec` keeps the shell's.
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_fleet-retentiond"))
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut daemon = DaemonGuard { child: Some(child) };

    let mut messages = String::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !messages.contains("READY=1") && Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push_str(&String::from_utf8_lossy(&buf[..n]));
            messages.push('\n');
        }
    }
    assert!(messages.contains("READY=1"), "{messages}");

    let recorder = dir.path().join("recorder");
    let names: Vec<String> = (1..=3)
        .map(|seq| record_segment(&recorder, seq, 4096, seq == 2).unwrap())
        .collect();
    let db = dir.path().join("state/index.sqlite");
    let indexed = wait_for(Duration::from_secs(5), || {
        Index::open(&db)
            .and_then(|i| i.snapshot())
            .map(|s| s.len())
            .unwrap_or(0)
            == names.len()
    });
    assert!(
        indexed,
        "segments indexed from events, long before any catch-up"
    );

    // The watchdog is pinged at least every half period.
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            pings += usize::from(String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1"));
        }
    }
    assert!(
        pings >= 5,
        "only {pings} watchdog pings in 2 s with a 200 ms watchdog"
    );

    // A file removed behind retention's back is marked vanished, not forgotten.
    std::fs::remove_file(recorder.join("data").join(&names[0])).unwrap();
    let vanished = wait_for(Duration::from_secs(5), || {
        Index::open(&db)
            .and_then(|i| i.deleted_reason(&names[0]))
            .ok()
            .flatten()
            .as_deref()
            == Some("vanished")
    });
    assert!(vanished);
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_segment_promoted_just_before_the_stop_is_indexed_before_the_daemon_exits() {
    let dir = tempfile::tempdir().unwrap();
    // No catch-up and no cycle during the test: only the events can index the segment.
    let cfg = config(dir.path(), &keep_all_without_catch_up("3600"));
    let child = bin()
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let mut daemon = DaemonGuard { child: Some(child) };
    let recorder = dir.path().join("recorder");
    let db = dir.path().join("state/index.sqlite");
    let first = record_segment(&recorder, 1, 4096, false).unwrap();
    let watching = wait_for(Duration::from_secs(10), || {
        Index::open(&db)
            .and_then(|i| i.snapshot())
            .is_ok_and(|s| s.len() == 1)
    });
    assert!(watching, "{first} indexed: the daemon watches");

    // As at a shutdown: the recorder closes its last segment and exits, then systemd sends
    // SIGTERM. The daemon is held still meanwhile, so the event and the signal wait together.
    use nix::sys::signal::{Signal, kill};
    kill(pid, Signal::SIGSTOP).unwrap();
    let last = record_segment(&recorder, 2, 4096, false).unwrap();
    kill(pid, Signal::SIGTERM).unwrap();
    kill(pid, Signal::SIGCONT).unwrap();
    let mut child = daemon.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let names = Index::open(&db).unwrap().present_paths().unwrap();
    assert!(
        names.iter().any(|n| n.ends_with(&last)),
        "{last} indexed before the exit: {names:?}"
    );
}
