//! The binary as systemd runs it: `--check-config`, the notify protocol, an upload, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Pcm;
use common::s3::S3Server;
use common::station::Station;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleet-uploaderd"))
}

#[test]
fn check_config_exits_2_on_an_invalid_file_and_0_on_a_valid_one() {
    let st = Station::new();
    let good = st.dir.path().join("good.toml");
    std::fs::write(&good, st.config_text("http://127.0.0.1:9", "")).unwrap();
    let out = bin()
        .arg("--config")
        .arg(&good)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = st.dir.path().join("bad.toml");
    std::fs::write(&bad, st.config_text("ftp://x", "order = \"random\"")).unwrap();
    let out = bin()
        .arg("--config")
        .arg(&bad)
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("order: \"random\" is not one of"), "{err}");
    assert!(err.contains("destination.endpoint"), "{err}");
    let out = bin()
        .arg("--config")
        .arg(st.dir.path().join("absent.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_daemon_notifies_systemd_uploads_and_stops_on_sigterm() {
    let st = Station::new();
    let server = S3Server::start(&st.dir.path().join("s3"));
    let wav = st.record(
        1,
        Pcm {
            rate: 48_000,
            channels: 1,
            bits: 16,
            frames: 48_000,
        },
    );
    let cfg = st.dir.path().join("uploaderd.toml");
    std::fs::write(&cfg, st.config_text(&server.endpoint(), "")).unwrap();
    let sock_path = st.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_fleet-uploaderd"))
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut messages = String::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(messages.contains("READY=1") && messages.contains("WATCHDOG=1") && st.uploaded(&wav))
        && Instant::now() < deadline
    {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push_str(&String::from_utf8_lossy(&buf[..n]));
            messages.push('\n');
        }
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let stopped = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if stopped.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(messages.contains("READY=1"), "{messages}");
    assert!(messages.contains("WATCHDOG=1"), "{messages}");
    assert!(st.uploaded(&wav), "uploaded and marked by the daemon");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "a clean stop on SIGTERM"
    );
}
