//! `push` and `watch` with real simulated stations (the `fleet-updated` daemon on `fleet-sim`
//! ports) over a real mosquitto: a partial wave, then the wave widened by a re-signed offer.
use std::collections::BTreeSet;
use std::time::Duration;

use fleet_core::ids::{DeviceId, UpdateId};
use fleet_core::update::RolloutPercent;
use fleet_core::update::wave::bucket;
use fleet_proto::Limits;
use fleet_sim::Behaviour;
use fleet_testkit::Mosquitto;
use fleetctl::connection::BrokerAddr;
use fleetctl::demo::{COMPATIBLE, SimStation, SimStationSpec};
use fleetctl::publish::{PushRequest, push};
use fleetctl::watch::{StationEnd, Ui, WatchOptions, Watcher};

const WAIT: Duration = Duration::from_secs(40);

/// Two station ids in different wave buckets for `update`, lower bucket first.
fn split_pair(update: &UpdateId) -> (DeviceId, DeviceId, u8) {
    let ids: Vec<DeviceId> = (0..50)
        .map(|i| DeviceId::new(format!("stn-{i}")).expect("id"))
        .collect();
    for a in &ids {
        for b in &ids {
            let (ba, bb) = (bucket(a, update), bucket(b, update));
            if ba < bb {
                return (a.clone(), b.clone(), bb);
            }
        }
    }
    unreachable!("50 ids cannot all share one bucket");
}

async fn wait_idle(addr: &BrokerAddr, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let rows = fleetctl::status::read(addr, Duration::from_secs(600), &Limits::DEFAULT)
            .await
            .expect("status");
        let idle = rows
            .iter()
            .filter(|r| {
                r.state
                    .as_ref()
                    .is_some_and(|s| s.phase == fleet_core::update::PhaseName::Idle)
            })
            .count();
        if idle == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stations not idle: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_wave_updates_its_members_and_a_wider_offer_brings_in_the_rest() {
    let broker = Mosquitto::start().expect("mosquitto");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = fleetctl::keys::generate(&dir.path().join("k.key.pem"), &dir.path().join("k.pub"))
        .expect("keys");
    let key = fleetctl::keys::load_signing_key(&keys.private_path).expect("key");
    let key_hex = hex::encode(key.verifying_key().as_bytes());

    let update = UpdateId::new("rel-110").expect("id");
    let (member, outsider, percent) = split_pair(&update);
    let mut stations = Vec::new();
    for id in [&member, &outsider] {
        let sdir = dir.path().join(id.as_str());
        stations.push(
            SimStation::spawn(&SimStationSpec {
                id: id.clone(),
                groups: vec!["field".into()],
                dir: &sdir,
                broker: &addr,
                key_hex: &key_hex,
                fail_health: false,
            })
            .expect("station"),
        );
    }
    wait_idle(&addr, 2).await;

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let bundle = dir.path().join("rel-110.bundle");
    let version = semver::Version::new(1, 1, 0);
    fleet_sim::bundle::write(&bundle, &version, COMPATIBLE, Behaviour::Normal, &payload)
        .expect("bundle");
    let mut req = PushRequest::new(
        bundle,
        "group:field".parse().expect("target"),
        version.clone(),
        COMPATIBLE.into(),
    );
    req.update_id = Some(update.clone());
    req.chunk_size = 64 * 1024;
    req.percent = RolloutPercent::new(percent).expect("percent");

    let both: BTreeSet<DeviceId> = [member.clone(), outsider.clone()].into();
    let opts = |devices: &BTreeSet<DeviceId>| WatchOptions {
        update_id: update.clone(),
        devices: Some(devices.clone()),
        settle: Duration::ZERO,
        timeout: WAIT,
        limits: Limits::DEFAULT,
    };
    let watcher = Watcher::subscribe(&addr).await.expect("watch");
    let first = push(&addr, &key, &req, &mut |_| {}).await.expect("push");
    assert_eq!(first.sequence, 1);
    let summary = watcher
        .run(&opts(&both), &mut Ui::quiet(), std::future::pending())
        .await
        .expect("watch");
    assert!(!summary.timed_out, "{summary:?}");
    assert_eq!(
        summary.ends.get(&member),
        Some(&StationEnd::Updated {
            version: version.clone()
        })
    );
    assert!(
        matches!(summary.ends.get(&outsider), Some(StationEnd::OutsideWave { percent: p, .. }) if *p == percent),
        "{summary:?}"
    );

    // Widen to everyone: a new signed offer for the same update, next sequence.
    req.percent = RolloutPercent::ALL;
    let only_outsider: BTreeSet<DeviceId> = [outsider.clone()].into();
    let watcher = Watcher::subscribe(&addr).await.expect("watch");
    let second = push(&addr, &key, &req, &mut |_| {}).await.expect("push");
    assert_eq!(second.sequence, 2);
    assert!(!second.offer_kept);
    let summary = watcher
        .run(
            &opts(&only_outsider),
            &mut Ui::quiet(),
            std::future::pending(),
        )
        .await
        .expect("watch");
    assert_eq!(
        summary.ends.get(&outsider),
        Some(&StationEnd::Updated {
            version: version.clone()
        }),
        "{summary:?}"
    );

    let rows = fleetctl::status::read(&addr, Duration::from_secs(600), &Limits::DEFAULT)
        .await
        .expect("status");
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let s = r.state.as_ref().expect("state");
        assert_eq!(s.version, version, "{r:?}");
        assert_eq!(
            s.last_sequence,
            Some(if r.device_id == member { 1 } else { 2 })
        );
    }
    // `fleetctl watch` on a finished update ends at once from the retained states; without
    // --update it follows the newest offer.
    let broker_url = format!("mqtt://{}:{}", addr.host, addr.port);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args([
            "watch",
            "--broker",
            &broker_url,
            "--timeout",
            "20s",
            "--settle",
            "1s",
        ])
        .output()
        .await
        .expect("run fleetctl watch");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("watching update rel-110"), "{stdout}");
    assert!(
        stdout.contains(
            "watch: 2 updated, 0 outside the wave, 0 rolled back, 0 failed or refused, 0 unfinished"
        ),
        "{stdout}"
    );

    for s in stations {
        s.stop().await.expect("stop");
    }
}
