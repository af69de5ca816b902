//! A station that loses power mid-download resumes from what it holds; the binary hands a
//! reboot to its runner as exit code 10 and finishes the update after a simulated boot;
//! `--check-config` refuses a bad configuration with exit code 2.
mod common;

use std::process::Stdio;

use common::{COMPATIBLE, StationOptions, WAIT, bundle, config_text, spawn, start};
use fleet_core::slot::Slot;
use fleet_core::update::{Outcome, PhaseName};
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};
use fleet_updated::{EXIT_INVALID_CONFIG, EXIT_REBOOT};

const BIN: &str = env!("CARGO_BIN_EXE_fleet-updated");

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_that_loses_power_mid_download_keeps_the_chunks_it_held() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(4))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let b = bundle("1.5.0", Behaviour::Normal, 40 * 4096);
    let m = op
        .manifest(&b, COMPATIBLE, &v("1.5.0"), 4096)
        .expect("manifest");
    let (n, held) = (m.chunk_count(), 25u32);
    op.publish_chunks(&m, &b, 0..held).await.expect("chunks");
    op.publish_manifest(&m, None).await.expect("manifest");
    let stn = spawn(
        "stn-cut",
        &broker,
        &op.public_hex(),
        StationOptions::default(),
    );
    op.publish_offer(
        &offer_to_device("stn-cut", "rel-150", 5, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");
    let held_bytes = u64::from(held) * 4096;
    watch
        .wait_state("stn-cut", WAIT, |s| {
            s.progress.is_some_and(|p| p.done_bytes == held_bytes)
        })
        .await
        .expect("partly downloaded");

    let (dir, config) = stn.power_cut();
    let stn = start("stn-cut", dir, config);
    op.publish_chunks(&m, &b, held..n).await.expect("rest");
    let s = watch
        .wait_state("stn-cut", WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(s.last_outcome, Some(Outcome::Committed { .. }))
        })
        .await
        .expect("committed after the power cut");
    assert_eq!(s.version, v("1.5.0"));
    let summary = stn.stop().await;
    assert_eq!(
        summary.stats.stored_chunk_bytes,
        m.size - held_bytes,
        "held chunks were fetched again"
    );
    assert_eq!(summary.stats.resent_chunk_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_to_reboot_and_commits_after_a_simulated_boot() {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(5))
        .await
        .expect("operator");
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let b = bundle("3.0.0", Behaviour::Normal, 50_000);
    let m = op
        .publish_bundle(&b, COMPATIBLE, &v("3.0.0"), 8192)
        .await
        .expect("bundle");
    op.publish_offer(
        &offer_to_device("stn-proc", "rel-300", 1, &m).expect("offer"),
        None,
        None,
    )
    .await
    .expect("offer");

    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("updated.toml");
    let text = config_text(
        "stn-proc",
        &broker,
        &op.public_hex(),
        dir.path(),
        &StationOptions::default(),
    );
    std::fs::write(&cfg, text).expect("config");
    let run = |args: &[&str]| {
        let mut c = tokio::process::Command::new(BIN);
        c.arg("--config")
            .arg(&cfg)
            .args(args)
            .kill_on_drop(true)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c
    };

    let out = run(&["--sim-boot"]).output().await.expect("sim boot");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "booted slot A");
    let status = tokio::time::timeout(WAIT, run(&[]).status())
        .await
        .expect("in time")
        .expect("daemon");
    assert_eq!(
        status.code(),
        Some(EXIT_REBOOT),
        "the daemon asks for a reboot after installing"
    );

    let out = run(&["--sim-boot"]).output().await.expect("sim boot");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "booted slot B");
    let mut daemon = run(&[]).spawn().expect("daemon");
    let s = watch
        .wait_state("stn-proc", WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(s.last_outcome, Some(Outcome::Committed { .. }))
        })
        .await
        .expect("committed");
    assert_eq!((s.booted, s.version.clone()), (Slot::B, v("3.0.0")));
    let pid = daemon.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(WAIT, daemon.wait())
        .await
        .expect("stops")
        .expect("status");
    assert_eq!(status.code(), Some(0));
    watch
        .wait_state("stn-proc", WAIT, |_| true)
        .await
        .expect("state stays retained");
}

#[test]
fn check_config_accepts_a_good_file_and_exits_2_on_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.toml");
    // A station on real ports names them; --check-config also reads the boot flow's file.
    let bootctl = dir.path().join("bootctl.toml");
    std::fs::write(
        &bootctl,
        "flow = \"uboot\"\n[uboot]\nenv-file = \"/boot/uboot.env\"\n",
    )
    .expect("write");
    let good_text = format!(
        "device-id = \"stn-1\"\ncompatible = \"fleet-sim\"\ndata-dir = \"/data\"\n\
         trusted-keys = [\"3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29\"]\n\
         installer = \"rauc\"\nboot-flow = \"uboot\"\nbootctl-config = \"{}\"\n\
         [mqtt]\nhost = \"broker\"\n[mqtt.tls]\nca-file = \"/etc/fleet/broker-ca.crt\"\n\
         cert-file = \"/data/fleet/identity/station.crt\"\n\
         key-file = \"/data/fleet/identity/station.key\"\n",
        bootctl.display()
    );
    std::fs::write(&good, &good_text).expect("write");
    // The boot flow's file must configure the flow the daemon was told.
    let mismatched = dir.path().join("mismatched.toml");
    std::fs::write(
        &mismatched,
        good_text.replace("boot-flow = \"uboot\"", "boot-flow = \"tryboot\""),
    )
    .expect("write");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "device-id = \"Not/Valid\"\nbogus-key = 1\n").expect("write");
    let run = |p: &std::path::Path| {
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(p)
            .arg("--check-config")
            .output()
            .expect("run")
    };
    assert_eq!(run(&good).status.code(), Some(0));
    let out = run(&mismatched);
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uboot flow"));
    let out = run(&bad);
    assert_eq!(out.status.code(), Some(EXIT_INVALID_CONFIG));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus-key"));
    assert_eq!(
        run(&dir.path().join("missing.toml")).status.code(),
        Some(EXIT_INVALID_CONFIG)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_during_install_verifies_the_bundle_again_and_retries() {
    let broker = Mosquitto::start().expect("broker");
    let key = test_key(9);
    let mut watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let b = bundle("4.0.0", Behaviour::Normal, 30_000);
    let m = fleet_proto::chunk::build_manifest(
        &b[..],
        4096,
        COMPATIBLE,
        v("4.0.0"),
        "b.raucb",
        &fleet_proto::Limits::DEFAULT,
    )
    .expect("manifest");

    // The state a station is left in when the power goes while it writes slot B: the journal
    // says "installing, attempt 1", the verified bundle sits in the download area, and slot B
    // holds half an image.
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = StationOptions::default();
    let text = config_text(
        "stn-inst",
        &broker,
        &fleet_testkit::operator::public_hex(&key),
        dir.path(),
        &opts,
    );
    let cfg_path = dir.path().join("updated.toml");
    std::fs::write(&cfg_path, &text).expect("config");
    let config = fleet_updated::Config::load(&cfg_path).expect("config");
    let downloads = dir.path().join("data/fleet/downloads");
    std::fs::create_dir_all(&downloads).expect("dir");
    std::fs::write(downloads.join(format!("{}.bundle", m.bundle_id)), &b).expect("bundle");
    let boot = fleet_sim::SimBootloader::new(dir.path().join("sim"));
    boot.provision(&v("1.0.0")).expect("provision");
    std::fs::write(boot.image_path(Slot::B), &b[..1000]).expect("half image");

    let station = fleet_core::update::Station {
        device_id: fleet_core::ids::DeviceId::new("stn-inst").expect("id"),
        groups: vec![],
        compatible: COMPATIBLE.into(),
    };
    let mut engine = fleet_core::update::State::new(
        station,
        fleet_core::update::Policy::default(),
        Slot::A,
        v("1.0.0"),
    );
    engine.last_sequence = Some(3);
    engine.phase = fleet_core::update::Phase::Installing {
        job: fleet_core::update::Job {
            update_id: fleet_core::ids::UpdateId::new("rel-400").expect("id"),
            sequence: 3,
            bundle_id: m.bundle_id,
            bundle_size: m.size,
            version: v("4.0.0"),
            manifest_hash: None,
            key_id: fleet_proto::envelope::key_id(&key.verifying_key()),
        },
        slot: Slot::B,
        attempt: 1,
    };
    let journal = serde_json::json!({
        "v": 1,
        "state": { "engine": engine, "state-seq": 10, "event-seq": 10 },
    });
    let journal_dir = dir.path().join("data/fleet/updated");
    std::fs::create_dir_all(&journal_dir).expect("dir");
    std::fs::write(
        journal_dir.join("journal.json"),
        serde_json::to_vec(&journal).expect("json"),
    )
    .expect("journal");

    let stn = start("stn-inst", dir, config);
    watch
        .wait_event("stn-inst", WAIT, |e| {
            matches!(
                &e.event,
                fleet_core::update::Report::InstallFailed {
                    will_retry: true,
                    ..
                }
            )
        })
        .await
        .expect("the interrupted install is reported");
    let s = watch
        .wait_state("stn-inst", WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(s.last_outcome, Some(Outcome::Committed { .. }))
        })
        .await
        .expect("committed after the retried install");
    assert_eq!((s.booted, s.version.clone()), (Slot::B, v("4.0.0")));
    assert!(s.seq > 10, "state numbering continues from the journal");
    stn.stop().await;
}
