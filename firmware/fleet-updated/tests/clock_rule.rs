//! `wall-clock = "system"` (the default): offer expiry is judged by the station's clock rule
//! (`fleet_facts::clock::now`, ADR 0004), read from systemd-timesyncd's files at every decision.
//! Each station here reads a fake tree (`clock-root`) against a real mosquitto.
mod common;

use std::path::Path;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, spawn};
use fleet_core::update::{Offer, PhaseName, RejectReason, Report};
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};

/// A fake root as systemd-timesyncd leaves it: its runtime directory always, the
/// `synchronized` flag and the `clock` stamp (touched now) only once it synchronized.
fn timesync_tree(root: &Path, synchronized: bool) {
    let run = root.join("run/systemd/timesync");
    std::fs::create_dir_all(&run).expect("mkdir run");
    let var_lib = root.join("var/lib/systemd/timesync");
    std::fs::create_dir_all(&var_lib).expect("mkdir var/lib");
    if synchronized {
        std::fs::write(run.join("synchronized"), b"").expect("flag");
        std::fs::write(var_lib.join("clock"), b"").expect("clock stamp");
    }
}

/// Starts a station whose clock facts live in a fresh fake tree, publishes a bundle and returns
/// an offer for it that expired long ago (issued 2023, valid for a minute).
async fn station_with_an_expired_offer(
    id: &str,
    synchronized: bool,
    key_seed: u8,
) -> (
    Mosquitto,
    Operator,
    Watcher,
    common::Station,
    tempfile::TempDir,
    Offer,
) {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(key_seed))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let facts = tempfile::tempdir().expect("tempdir");
    timesync_tree(facts.path(), synchronized);
    let stn = spawn(
        id,
        &broker,
        &op.public_hex(),
        StationOptions {
            wall_clock: "system",
            clock_root: Some(facts.path().to_owned()),
            ..Default::default()
        },
    );
    watch
        .wait_state(id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("idle");
    let version = semver::Version::parse("1.1.0").expect("version");
    let m = op
        .publish_bundle(
            &bundle("1.1.0", Behaviour::Normal, 20_000),
            COMPATIBLE,
            &version,
            4096,
        )
        .await
        .expect("bundle");
    let mut offer = offer_to_device(id, "rel-110", 1, &m).expect("offer");
    offer.expires_at = Some(offer.issued_at + 60);
    (broker, op, watch, stn, facts, offer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_offer_is_refused_while_timesyncd_says_the_clock_is_synchronized() {
    const ID: &str = "stn-clock-synced";
    let (_broker, op, mut watch, stn, _facts, offer) =
        station_with_an_expired_offer(ID, true, 41).await;
    let idle = watch
        .wait_state(ID, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("state");
    assert!(idle.time_trusted, "the rule trusts a synchronized clock");

    op.publish_offer(&offer, None, None).await.expect("publish");
    watch
        .wait_event(ID, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferRejected {
                    reason: RejectReason::Expired { .. },
                    ..
                }
            )
        })
        .await
        .expect("refused as expired");
    stn.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_offer_is_accepted_unchecked_while_timesyncd_has_not_synchronized() {
    const ID: &str = "stn-clock-unsynced";
    let (_broker, op, mut watch, stn, _facts, offer) =
        station_with_an_expired_offer(ID, false, 42).await;
    let idle = watch
        .wait_state(ID, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("state");
    assert!(
        !idle.time_trusted,
        "the rule does not trust an unsynchronized clock"
    );

    op.publish_offer(&offer, None, None).await.expect("publish");
    watch
        .wait_event(ID, WAIT, |e| {
            matches!(
                &e.event,
                Report::OfferAccepted {
                    expiry_checked: false,
                    ..
                }
            )
        })
        .await
        .expect("accepted with its expiry unchecked (ADR 0004)");
    stn.stop().await;
}

#[test]
fn check_config_warns_when_a_station_with_real_ports_overrides_the_clock_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootctl = dir.path().join("bootctl.toml");
    std::fs::write(
        &bootctl,
        "flow = \"uboot\"\n[uboot]\nenv-file = \"/boot/uboot.env\"\n",
    )
    .expect("write");
    let real = |clock: &str| {
        format!(
            "device-id = \"stn-1\"\ncompatible = \"fleet-sim\"\ndata-dir = \"/data\"\n\
             trusted-keys = [\"3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29\"]\n\
             {clock}installer = \"rauc\"\nboot-flow = \"uboot\"\nbootctl-config = \"{}\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\n",
            bootctl.display()
        )
    };
    let check = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleet-updated"))
            .arg("--config")
            .arg(&p)
            .arg("--check-config")
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: a warning, not a refusal"
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = check("trusted.toml", real("wall-clock = \"trusted\"\n"));
    assert!(
        warned.contains("warning: wall-clock = \"trusted\" skips the clock rule"),
        "{warned}"
    );
    for (name, clock) in [
        ("default.toml", ""),
        ("system.toml", "wall-clock = \"system\"\n"),
        ("untrusted.toml", "wall-clock = \"untrusted\"\n"),
    ] {
        let quiet = check(name, real(clock));
        assert!(!quiet.contains("warning"), "{name}: {quiet}");
    }
    // A simulated station has no timesyncd to ask: the override is what it is for.
    let sim = real("wall-clock = \"trusted\"\n")
        .replace("installer = \"rauc\"\nboot-flow = \"uboot\"\n", "")
        + &format!("[sim]\nroot = \"{}\"\n", dir.path().join("sim").display());
    let quiet = check("sim.toml", sim);
    assert!(!quiet.contains("warning"), "sim: {quiet}");
}
