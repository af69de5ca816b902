//! The station's applier of signed configuration pushes (ADR 0011) in the real daemon against a
//! real mosquitto: a push is opened, decided, checked by the target daemon's own checker, written
//! as the pushed layer, the daemon restarted through the root helper's request directory and
//! watched; refusals change nothing, and a push that leaves the daemon unhealthy is restored
//! within its deadline. The target daemon is stood in for by two scripts: its checker
//! (`bin/fleet-recorderd --check-config`) and `bin/systemctl is-active`, which says `failed`
//! while the pushed layer holds the breaking setting (`gain-db = 66`).
mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{StationOptions, WAIT, config_text, start};
use fleet_core::config_push::{ConfigPush, Daemon, Value};
use fleet_core::ids::DeviceId;
use fleet_core::rollout::Scope;
use fleet_proto::config_push::{ConfigEvent, ConfigOutcome, config_topic};
use fleet_proto::envelope::{self, Kind};
use fleet_testkit::operator::test_key;
use fleet_testkit::{Mosquitto, Operator, Watcher};
use fleet_updated::Config;

const ID: &str = "stn-cfg";

fn device(id: &str) -> Scope {
    Scope::Device(DeviceId::new(id).expect("device id"))
}

fn push(scope: Scope, sequence: u64, set: &[(&str, Value)], deadline_secs: u32) -> ConfigPush {
    fleetctl::config_push::build(
        scope,
        Daemon::Recorderd,
        set.iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
        Vec::new(),
        Duration::from_secs(u64::from(deadline_secs)),
        sequence,
    )
    .expect("a push the stations would take")
}

struct Rig {
    dir: PathBuf,
}

impl Rig {
    fn layer(&self) -> PathBuf {
        self.dir.join("data/fleet/config/recorderd.toml")
    }
    fn previous(&self) -> PathBuf {
        self.dir.join("data/fleet/config/recorderd.toml.previous")
    }
    fn restart_request(&self) -> PathBuf {
        self.dir.join("run/config-restart/fleet-recorderd.service")
    }
    fn checker_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("checker.log")).unwrap_or_default()
    }
    fn record(&self) -> serde_json::Value {
        let bytes = std::fs::read(self.dir.join("data/fleet/updated/config-push.json"))
            .expect("the record exists");
        serde_json::from_slice(&bytes).expect("json")
    }
}

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A simulated station with `[config-push]` and the two stand-in scripts.
fn spawn_station(broker: &Mosquitto, key_hex: &str) -> (common::Station, Rig) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    for d in [
        "bin",
        "etc",
        "data/fleet/identity",
        "data/fleet/config",
        "run/config-restart",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("etc/recorderd.toml"), "# image layer\n").expect("image");
    let layer = root.join("data/fleet/config/recorderd.toml");
    script(
        &root.join("bin/fleet-recorderd"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> {log}\nwhile [ $# -gt 0 ]; do\n  case $1 in --pushed-config) p=$2; shift;; esac\n  shift\ndone\n\
             if grep -q 'lat = 95' \"$p\"; then echo 'position.lat: must be within -90..=90' >&2; exit 2; fi\nexit 0\n",
            log = root.join("checker.log").display()
        ),
    );
    script(
        &root.join("bin/systemctl"),
        &format!(
            "#!/bin/sh\nif [ -f {l} ] && grep -q 'gain-db = 66' {l}; then echo failed; exit 3; fi\necho active\n",
            l = layer.display()
        ),
    );
    let mut text = config_text(ID, broker, key_hex, &root, &StationOptions::default());
    text.push_str(&format!(
        "\n[config-push]\nimage-dir = \"{etc}\"\nbin-dir = \"{bin}\"\nrestart-dir = \"{run}\"\n\
         systemctl = \"{bin}/systemctl\"\nsettle-secs = 1\npoll-ms = 100\n",
        etc = root.join("etc").display(),
        bin = root.join("bin").display(),
        run = root.join("run/config-restart").display(),
    ));
    let path = root.join("updated.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::load(&path).expect("valid config");
    (start(ID, dir, config), Rig { dir: root })
}

async fn publish(op: &Operator, p: &ConfigPush, topic: Option<&str>) {
    let sealed = envelope::seal_json(Kind::Config, p, op.key()).expect("seal");
    let t = topic.map_or_else(|| config_topic(&p.scope, p.daemon), str::to_owned);
    op.publish_raw(&t, sealed, true).await.expect("publish");
}

fn refused_with(code: &'static str) -> impl Fn(&ConfigEvent) -> bool {
    move |e| matches!(&e.outcome, ConfigOutcome::ConfigRefused { code: c, .. } if c == code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_push_writes_the_layer_restarts_the_daemon_and_reports_it() {
    let broker = Mosquitto::start().expect("mosquitto");
    let op = Operator::connect(&broker, "op", test_key(1))
        .await
        .expect("op");
    let mut watch = Watcher::connect(&broker, "watch").await.expect("watch");
    let (station, rig) = spawn_station(&broker, &op.public_hex());
    watch
        .wait_presence(ID, "online", WAIT)
        .await
        .expect("online");

    let p = push(device(ID), 5, &[("position.lat", Value::Float(52.5))], 10);
    publish(&op, &p, None).await;
    let e = watch
        .wait_config_event(ID, WAIT, |e| {
            matches!(e.outcome, ConfigOutcome::ConfigAccepted { sequence: 5, .. })
        })
        .await
        .expect("accepted");
    assert!(matches!(
        e.outcome,
        ConfigOutcome::ConfigAccepted {
            daemon: Daemon::Recorderd,
            ..
        }
    ));
    let layer = std::fs::read_to_string(rig.layer()).expect("layer written");
    assert!(
        layer.contains("[position]") && layer.contains("lat = 52.5"),
        "{layer}"
    );
    assert!(rig.restart_request().exists(), "the root helper was asked");
    assert_eq!(rig.record()["last"]["recorderd"], 5);
    // The checker saw image, station and the candidate layer.
    let log = rig.checker_log();
    assert!(
        log.contains("--station-config") && log.contains("--check-config"),
        "{log}"
    );

    // A second push keeps the first one's keys and the previous file.
    let p = push(
        Scope::Fleet,
        6,
        &[("utc-offset", Value::Text("+02:00".into()))],
        10,
    );
    publish(&op, &p, None).await;
    watch
        .wait_config_event(ID, WAIT, |e| {
            matches!(e.outcome, ConfigOutcome::ConfigAccepted { sequence: 6, .. })
        })
        .await
        .expect("accepted");
    let layer = std::fs::read_to_string(rig.layer()).expect("layer");
    assert!(
        layer.contains("lat = 52.5") && layer.contains("utc-offset = \"+02:00\""),
        "{layer}"
    );
    let previous = std::fs::read_to_string(rig.previous()).expect("previous kept");
    assert!(
        previous.contains("lat = 52.5") && !previous.contains("utc-offset"),
        "{previous}"
    );
    station.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_foreign_and_disallowed_pushes_are_refused_and_change_nothing() {
    let broker = Mosquitto::start().expect("mosquitto");
    let op = Operator::connect(&broker, "op", test_key(1))
        .await
        .expect("op");
    let mut watch = Watcher::connect(&broker, "watch").await.expect("watch");
    let (station, rig) = spawn_station(&broker, &op.public_hex());
    watch
        .wait_presence(ID, "online", WAIT)
        .await
        .expect("online");
    let p = push(device(ID), 5, &[("position.lat", Value::Float(52.5))], 10);
    publish(&op, &p, None).await;
    watch
        .wait_config_event(ID, WAIT, |e| {
            matches!(e.outcome, ConfigOutcome::ConfigAccepted { .. })
        })
        .await
        .expect("accepted");
    let before = std::fs::read(rig.layer()).expect("layer");
    std::fs::remove_file(rig.restart_request()).expect("request seen");
    let checks_before = rig.checker_log().lines().count();

    // Forged: signed by a key the station does not trust.
    let forged = push(Scope::Fleet, 9, &[("position.lat", Value::Float(1.0))], 10);
    let sealed = envelope::seal_json(Kind::Config, &forged, &test_key(66)).expect("seal");
    op.publish_raw(
        &config_topic(&Scope::Fleet, Daemon::Recorderd),
        sealed,
        true,
    )
    .await
    .expect("publish");
    watch
        .wait_config_event(ID, WAIT, refused_with("unverified"))
        .await
        .expect("forged");

    // Replayed: a sequence not above the last taken (another scope: one counter per daemon).
    let replay = push(Scope::Fleet, 5, &[("position.lat", Value::Float(2.0))], 10);
    publish(&op, &replay, None).await;
    watch
        .wait_config_event(ID, WAIT, refused_with("replayed"))
        .await
        .expect("replayed");

    // Another station's push on this station's topic.
    let foreign = push(
        device("stn-other"),
        10,
        &[("position.lat", Value::Float(3.0))],
        10,
    );
    publish(
        &op,
        &foreign,
        Some(&config_topic(&device(ID), Daemon::Recorderd)),
    )
    .await;
    watch
        .wait_config_event(ID, WAIT, refused_with("topic-mismatch"))
        .await
        .expect("foreign");

    // A key no push may set (signed by the trusted key: only the allow-list stops it).
    let mut bad = push(device(ID), 11, &[("position.lat", Value::Float(4.0))], 10);
    bad.set = [("data-dir".to_owned(), Value::Text("/tmp".into()))].into();
    publish(&op, &bad, None).await;
    watch
        .wait_config_event(ID, WAIT, refused_with("key-not-allowed"))
        .await
        .expect("disallowed");

    // The daemon's own checker refuses the merged configuration.
    let wrong = push(device(ID), 12, &[("position.lat", Value::Float(95.0))], 10);
    publish(&op, &wrong, None).await;
    let e = watch
        .wait_config_event(ID, WAIT, refused_with("rejected-by-daemon"))
        .await
        .expect("checker");
    let ConfigOutcome::ConfigRefused { reason, .. } = &e.outcome else {
        unreachable!()
    };
    assert!(reason.contains("position.lat: must be within"), "{reason}");

    assert_eq!(
        std::fs::read(rig.layer()).expect("layer"),
        before,
        "nothing written"
    );
    assert!(!rig.restart_request().exists(), "no restart asked");
    assert_eq!(rig.record()["last"]["recorderd"], 5);
    // Only the checker's own refusal ran a checker.
    assert_eq!(rig.checker_log().lines().count(), checks_before + 1);
    assert!(
        !std::fs::read_dir(rig.dir.join("data/fleet/config"))
            .expect("dir")
            .any(|e| e
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .contains("candidate")),
        "no candidate left behind"
    );

    // After a power cut the daemon reads every retained push again: each was judged once and
    // is never judged or reported again.
    let seen = watch.config_events.get(ID).map_or(0, Vec::len);
    let last_seq = watch
        .config_events
        .get(ID)
        .and_then(|v| v.iter().map(|e| e.seq).max())
        .unwrap_or(0);
    let (dir, config) = station.power_cut();
    watch
        .wait_presence(ID, "offline", WAIT)
        .await
        .expect("offline");
    let station = start(ID, dir, config);
    watch
        .wait_presence(ID, "online", WAIT)
        .await
        .expect("online again");
    let quiet = watch
        .wait_config_event(ID, Duration::from_secs(3), |e| e.seq > last_seq)
        .await;
    assert!(quiet.is_err(), "reported again: {quiet:?}");
    assert_eq!(watch.config_events.get(ID).map_or(0, Vec::len), seen);
    assert_eq!(rig.checker_log().lines().count(), checks_before + 1);
    station.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_leaves_the_daemon_unhealthy_is_restored_within_its_deadline_and_reported() {
    let broker = Mosquitto::start().expect("mosquitto");
    let op = Operator::connect(&broker, "op", test_key(1))
        .await
        .expect("op");
    let mut watch = Watcher::connect(&broker, "watch").await.expect("watch");
    let (station, rig) = spawn_station(&broker, &op.public_hex());
    watch
        .wait_presence(ID, "online", WAIT)
        .await
        .expect("online");
    let good = push(device(ID), 1, &[("position.lat", Value::Float(52.5))], 10);
    publish(&op, &good, None).await;
    watch
        .wait_config_event(ID, WAIT, |e| {
            matches!(e.outcome, ConfigOutcome::ConfigAccepted { .. })
        })
        .await
        .expect("accepted");
    let before = std::fs::read(rig.layer()).expect("layer");

    let breaking = push(
        device(ID),
        2,
        &[("profiles.main.gain-db", Value::Integer(66))],
        10,
    );
    let started = Instant::now();
    publish(&op, &breaking, None).await;
    let e = watch
        .wait_config_event(ID, WAIT, |e| {
            matches!(e.outcome, ConfigOutcome::ConfigRestored { .. })
        })
        .await
        .expect("restored");
    let took = started.elapsed();
    let ConfigOutcome::ConfigRestored {
        sequence, reason, ..
    } = &e.outcome
    else {
        unreachable!()
    };
    assert_eq!(*sequence, 2);
    assert!(
        reason.contains("fleet-recorderd.service is failed"),
        "{reason}"
    );
    assert!(
        took >= Duration::from_secs(10),
        "the deadline was waited for: {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "restored within the deadline: {took:?}"
    );
    eprintln!("restored {took:?} after the push (deadline 10 s)");
    assert_eq!(
        std::fs::read(rig.layer()).expect("layer"),
        before,
        "previous layer back"
    );
    assert!(
        rig.restart_request().exists(),
        "restarted on the previous layer"
    );
    // The sequence stays taken: the same push again is a replay.
    assert_eq!(rig.record()["last"]["recorderd"], 2);
    station.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_watched_when_the_power_went_is_judged_again_at_the_next_start_and_restored() {
    let broker = Mosquitto::start().expect("mosquitto");
    let op = Operator::connect(&broker, "op", test_key(1))
        .await
        .expect("op");
    let mut watch = Watcher::connect(&broker, "watch").await.expect("watch");
    let (station, rig) = spawn_station(&broker, &op.public_hex());
    watch
        .wait_presence(ID, "online", WAIT)
        .await
        .expect("online");
    let breaking = push(
        device(ID),
        1,
        &[("profiles.main.gain-db", Value::Integer(66))],
        10,
    );
    publish(&op, &breaking, None).await;
    // The layer is written and the daemon restarted: the power goes while it is watched.
    let deadline = Instant::now() + WAIT;
    while !std::fs::read_to_string(rig.layer()).is_ok_and(|l| l.contains("gain-db = 66")) {
        assert!(Instant::now() < deadline, "the layer was never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (dir, config) = station.power_cut();
    assert!(
        !watch.config_events.contains_key(ID),
        "judged before the cut"
    );
    assert!(rig.record()["pending"]["sequence"] == 1, "{}", rig.record());
    let started = Instant::now();
    let station = start(ID, dir, config);
    let e = watch
        .wait_config_event(ID, WAIT, |e| {
            matches!(e.outcome, ConfigOutcome::ConfigRestored { sequence: 1, .. })
        })
        .await
        .expect("restored after the restart");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(e.outcome, ConfigOutcome::ConfigRestored { .. }));
    assert!(
        !rig.layer().exists(),
        "no layer before the push, none after"
    );
    assert!(rig.record().get("pending").is_none(), "{}", rig.record());
    station.stop().await;
}
