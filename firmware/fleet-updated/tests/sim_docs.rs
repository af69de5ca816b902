//! The simulated station as `docs/reference/updated.md` describes it: the documented `[sim]`
//! configuration passes `--check-config`, a daemon started on a never powered-on root fails as
//! documented, and the documented power-on loop (`--sim-boot`, the daemon, exit 10, again)
//! takes an update from the operator to `committed`.
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{COMPATIBLE, WAIT, bundle};
use fleet_core::update::{Outcome, PhaseName};
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};
use fleet_updated::EXIT_REBOOT;

const BIN: &str = env!("CARGO_BIN_EXE_fleet-updated");
/// The documented sample's station and the directory its paths live under.
const ID: &str = "stn-sim-1";
const DOC_ROOT: &str = "/var/lib/fleet-sim/stn-sim-1";
const DOC_KEY: &str = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c";

fn doc() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference/updated.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The body of the one fenced block tagged `toml sim-config`.
fn sample(doc: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| l.trim() != "```toml sim-config");
    assert!(lines.next().is_some(), "no ```toml sim-config block");
    let body: Vec<&str> = lines.take_while(|l| l.trim() != "```").collect();
    assert!(!body.is_empty());
    body.join("\n") + "\n"
}

/// The documented sample, moved under `dir`, pointed at `broker` and trusting `key`. Only
/// values change: every key is the documented one.
fn documented_config(dir: &Path, broker: &Mosquitto, key: &str) -> PathBuf {
    let text = sample(&doc());
    assert!(text.contains(DOC_ROOT) && text.contains(DOC_KEY) && text.contains("port = 1883"));
    let text = text
        .replace(DOC_ROOT, &dir.display().to_string())
        .replace(DOC_KEY, key)
        .replace("port = 1883", &format!("port = {}", broker.port()));
    let path = dir.join("sim.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn command(cfg: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(BIN);
    c.arg("--config")
        .arg(cfg)
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

async fn output(cfg: &Path, args: &[&str]) -> std::process::Output {
    tokio::time::timeout(WAIT, command(cfg, args).output())
        .await
        .expect("in time")
        .expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_simulated_station_starts_and_takes_an_update_through_the_power_on_loop() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(31))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = documented_config(dir.path(), &broker, &op.public_hex());

    let checked = output(&cfg, &["--check-config"]).await;
    assert!(checked.status.success(), "{checked:?}");

    // Never powered on: the documented failure, naming the bootloader's file.
    let early = output(&cfg, &[]).await;
    assert!(!early.status.success());
    let stderr = String::from_utf8_lossy(&early.stderr);
    assert!(stderr.contains("boot/env.json"), "{stderr}");

    // The loop: power on, run the daemon; exit 10 means power on and run again.
    let booted = output(&cfg, &["--sim-boot"]).await;
    assert!(booted.status.success(), "{booted:?}");
    assert_eq!(
        String::from_utf8_lossy(&booted.stdout).trim(),
        "booted slot A"
    );
    let mut daemon = command(&cfg, &[]).spawn().expect("daemon");
    watch
        .wait_state(ID, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("the documented station reaches idle");

    let b = bundle("1.1.0", Behaviour::Normal, 30_000);
    let m = op
        .publish_bundle(&b, COMPATIBLE, &semver::Version::new(1, 1, 0), 8192)
        .await
        .expect("bundle");
    op.publish_offer(
        &offer_to_device(ID, "rel-sim", 1, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let status = tokio::time::timeout(WAIT, daemon.wait())
        .await
        .expect("exits to reboot in time")
        .expect("daemon");
    assert_eq!(status.code(), Some(EXIT_REBOOT));

    let booted = output(&cfg, &["--sim-boot"]).await;
    assert!(booted.status.success(), "{booted:?}");
    assert_eq!(
        String::from_utf8_lossy(&booted.stdout).trim(),
        "booted slot B"
    );
    let mut daemon = command(&cfg, &[]).spawn().expect("daemon");
    let s = watch
        .wait_state(ID, WAIT, |s| {
            s.phase == PhaseName::Idle && s.last_outcome.is_some()
        })
        .await
        .expect("the trial is judged");
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == semver::Version::new(1, 1, 0)),
        "{s:#?}"
    );

    // SIGTERM stops it with exit 0: the loop ends.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon.id().expect("pid")).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = tokio::time::timeout(WAIT, daemon.wait())
        .await
        .expect("stops in time")
        .expect("daemon");
    assert_eq!(status.code(), Some(0));
}
