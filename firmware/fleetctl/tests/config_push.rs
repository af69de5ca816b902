//! `fleetctl config push` against a real mosquitto: the push is retained on its scope's topic,
//! signed, and one the stations of that scope take; sequences rise per daemon; a push the
//! stations would refuse is never published.
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use fleet_core::config_push::{Value, decide_config_push};
use fleet_core::ids::{DeviceId, GroupId};
use fleet_core::update::Station;
use fleet_proto::config_push::open_config_push;
use fleet_proto::{Limits, TrustedKeys};
use fleet_testkit::Mosquitto;
use fleetctl::connection::{BrokerAddr, Message, collect_retained};

fn fleetctl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .current_dir(cwd)
        .env_remove("FLEET_SIGNING_KEY")
        .output()
        .expect("run fleetctl")
}

/// A broker, its URL, and a folder holding a fresh offer key `k.key.pem`.
fn broker_and_key() -> (Mosquitto, String, tempfile::TempDir) {
    let broker = Mosquitto::start().expect("mosquitto");
    let url = format!("mqtt://127.0.0.1:{}", broker.port());
    let d = tempfile::tempdir().expect("tempdir");
    let out = fleetctl(&["keys", "gen", "--name", "k"], d.path());
    assert!(out.status.success(), "{out:?}");
    (broker, url, d)
}

/// Every retained message under fleet/v1/, and the keys a station trusting `k` holds.
async fn retained(broker: &Mosquitto, d: &Path) -> (Vec<Message>, TrustedKeys) {
    let addr = BrokerAddr {
        host: "127.0.0.1".into(),
        port: broker.port(),
    };
    let msgs = collect_retained(
        &addr,
        &["fleet/v1/#".to_owned()],
        Duration::from_millis(300),
        100,
    )
    .await
    .expect("read");
    let key = fleetctl::keys::load_signing_key(&d.join("k.key.pem")).expect("key");
    (msgs, [key.verifying_key()].into_iter().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_setting_is_retained_signed_and_taken_by_a_station_in_its_scope() {
    let (broker, url, d) = broker_and_key();
    let push = |extra: &[&str]| {
        let mut args = vec![
            "config",
            "push",
            "--broker",
            &url,
            "--key",
            "k.key.pem",
            "--daemon",
            "recorderd",
        ];
        args.extend_from_slice(extra);
        fleetctl(&args, d.path())
    };
    let out = push(&["--to", "group:canary", "--set", "position.lat=52.5"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = push(&["--to", "device:stn-1", "--set", "utc-offset=+01:00"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sequence 2"));
    // A path is not a pushable setting: refused before the broker hears of it.
    let out = push(&["--to", "fleet", "--set", "data-dir=/tmp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pushable key"));

    let (msgs, trusted) = retained(&broker, d.path()).await;
    let station = Station {
        device_id: DeviceId::new("stn-1").expect("id"),
        groups: vec![GroupId::new("canary").expect("id")],
        compatible: "fleet-raspberrypi5".into(),
    };
    let mut topics: Vec<&str> = msgs.iter().map(|m| m.topic.as_str()).collect();
    topics.sort_unstable();
    assert_eq!(
        topics,
        [
            "fleet/v1/devices/stn-1/config/recorderd",
            "fleet/v1/groups/canary/config/recorderd"
        ]
    );
    let mut last = None;
    let mut sorted: Vec<_> = msgs
        .iter()
        .map(|m| {
            open_config_push(&m.topic, &m.payload, &trusted, &Limits::DEFAULT)
                .expect("signed, on its own topic")
                .value
        })
        .collect();
    sorted.sort_by_key(|p| p.sequence);
    for p in &sorted {
        decide_config_push(&station, last, p).expect("the station takes it");
        last = Some(p.sequence);
    }
    assert_eq!(sorted[0].set.get("position.lat"), Some(&Value::Float(52.5)));
    // Taken once: the same push again is a replay.
    assert!(decide_config_push(&station, last, &sorted[1]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploaders_pacing_can_be_pushed_but_not_its_destination() {
    let (broker, url, d) = broker_and_key();
    let push = |set: &str| {
        fleetctl(
            &[
                "config",
                "push",
                "--broker",
                &url,
                "--key",
                "k.key.pem",
                "--daemon",
                "uploaderd",
                "--to",
                "fleet",
                "--set",
                set,
            ],
            d.path(),
        )
    };
    let out = push("bandwidth.max-bytes-per-second=65536");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = push("destination.bucket=elsewhere");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pushable key"));
    // No station applies a push to fleet-updated yet: refused before the broker hears of it.
    let out = fleetctl(
        &[
            "config",
            "push",
            "--broker",
            &url,
            "--key",
            "k.key.pem",
            "--daemon",
            "updated",
            "--to",
            "fleet",
            "--set",
            "mqtt.keep-alive-secs=60",
        ],
        d.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("do not apply pushes to fleet-updated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (msgs, trusted) = retained(&broker, d.path()).await;
    let topics: Vec<&str> = msgs.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["fleet/v1/config/uploaderd"]);
    let push = open_config_push(&msgs[0].topic, &msgs[0].payload, &trusted, &Limits::DEFAULT)
        .expect("signed, on its own topic")
        .value;
    assert_eq!(
        push.set.get("bandwidth.max-bytes-per-second"),
        Some(&Value::Integer(65536))
    );
}
