//! `watch` against a real mosquitto that restarts while it watches.
use std::time::Duration;

use fleet_core::ids::{DeviceId, UpdateId};
use fleet_proto::Limits;
use fleet_testkit::Mosquitto;
use fleetctl::connection::{BrokerAddr, Connection};
use fleetctl::watch::{StationEnd, Ui, WatchOptions, Watcher};

/// A retained state as a station publishes it after committing `update` (the watcher is the
/// subject here; real stations are driven in `stations.rs` and the demo test).
fn committed_state(device: &str, update: &str, seq: u64) -> Vec<u8> {
    let mut s = serde_json::json!({
        "device-id": device, "seq": seq, "updated-at": {"monotonic-ms": 5},
        "time-trusted": false, "version": "1.1.0", "phase": "idle",
        "last-outcome": {"result": "committed", "update-id": update, "version": "1.1.0"},
    });
    let b = serde_json::to_value(fleet_core::slot::Slot::B).expect("slot");
    s["booted"] = b.clone();
    s["committed"] = b.clone();
    s["last-outcome"]["slot"] = b;
    let bytes = serde_json::to_vec(&s).expect("json");
    let _: fleet_proto::StationState = serde_json::from_slice(&bytes).expect("a valid state");
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_a_broker_restart_and_still_sees_the_station_finish() {
    let mut broker = Mosquitto::start().expect("mosquitto");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let watcher = Watcher::subscribe(&addr).await.expect("watch");
    broker.restart().expect("restart");

    let mut conn = Connection::open(&addr, "station", Duration::from_secs(5))
        .await
        .expect("connect");
    conn.publish(
        "fleet/v1/devices/stn-1/state",
        committed_state("stn-1", "rel-2", 4),
        true,
    )
    .await
    .expect("publish");
    conn.close(Duration::from_secs(5)).await.expect("close");

    let opts = WatchOptions {
        update_id: UpdateId::new("rel-2").expect("id"),
        devices: Some([DeviceId::new("stn-1").expect("id")].into()),
        settle: Duration::ZERO,
        timeout: Duration::from_secs(30),
        limits: Limits::DEFAULT,
    };
    let summary = watcher
        .run(&opts, &mut Ui::quiet(), std::future::pending())
        .await
        .expect("watch");
    assert!(!summary.timed_out, "{summary:?}");
    assert_eq!(
        summary.ends.get(&DeviceId::new("stn-1").expect("id")),
        Some(&StationEnd::Updated {
            version: semver::Version::new(1, 1, 0)
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_an_unreachable_broker_fails_at_once_with_its_address() {
    let port = fleet_testkit::listen::free_port().expect("port");
    let addr = BrokerAddr {
        host: "127.0.0.1".into(),
        port,
    };
    let err = Watcher::subscribe(&addr)
        .await
        .expect_err("nothing listens");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_over_tls_with_the_operators_certificate_sees_the_station_finish() {
    use fleet_testkit::mosquitto::TestPki;
    use fleetctl::connection::{Transport, use_transport};
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("mosquitto with tls");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    use_transport(
        &addr,
        Transport::Tls(pki.tls_config("operator").expect("operator certificate")),
    );
    let watcher = Watcher::subscribe(&addr).await.expect("watch over tls");
    let mut conn = Connection::open(&addr, "station", Duration::from_secs(5))
        .await
        .expect("connect over tls");
    conn.publish(
        "fleet/v1/devices/stn-1/state",
        committed_state("stn-1", "rel-3", 2),
        true,
    )
    .await
    .expect("publish");
    conn.close(Duration::from_secs(5)).await.expect("close");
    let opts = WatchOptions {
        update_id: UpdateId::new("rel-3").expect("id"),
        devices: Some([DeviceId::new("stn-1").expect("id")].into()),
        settle: Duration::ZERO,
        timeout: Duration::from_secs(30),
        limits: Limits::DEFAULT,
    };
    let summary = watcher
        .run(&opts, &mut Ui::quiet(), std::future::pending())
        .await
        .expect("watch");
    assert!(!summary.timed_out, "{summary:?}");
    assert_eq!(summary.updated().len(), 1, "{summary:?}");
}
