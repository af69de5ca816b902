//! A rollout bench shared by the rollout and `watch --rollout` tests: a real mosquitto, an
//! operator key made by `fleetctl keys`, a small bundle, and simulated stations
//! (`fleetctl::sim`) in one group.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, GroupId, Version};
use fleet_core::rollout::{Plan, WaveSpec};
use fleet_core::update::{RolloutPercent, wave};
use fleet_proto::Limits;
use fleet_testkit::Mosquitto;
use fleetctl::connection::BrokerAddr;
use fleetctl::publish::PushRequest;
use fleetctl::rollout;
use fleetctl::sim::{FleetOptions, SimFleet, StationSpec};
use fleetctl::target::Target;

/// Station states older than this still count as heard from.
pub const STALE: Duration = Duration::from_secs(600);

pub struct Fixture {
    _broker: Mosquitto,
    pub addr: BrokerAddr,
    pub dir: tempfile::TempDir,
    pub key: SigningKey,
    pub key_path: PathBuf,
    pub group: GroupId,
    /// How long a simulated install takes.
    pub install_time: Duration,
    /// Delay per chunk taken (slow links).
    pub chunk_delay: Duration,
}

pub fn fixture() -> Fixture {
    let broker = Mosquitto::start().expect("mosquitto");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let made = fleetctl::keys::generate(&dir.path().join("k.key.pem"), &dir.path().join("k.pub"))
        .expect("keys");
    let key = fleetctl::keys::load_signing_key(&made.private_path).expect("load");
    Fixture {
        _broker: broker,
        addr,
        key_path: made.private_path.clone(),
        dir,
        key,
        group: GroupId::new("field").expect("valid"),
        install_time: Duration::from_millis(150),
        chunk_delay: Duration::ZERO,
    }
}

pub fn pct(p: u8) -> WaveSpec {
    WaveSpec::Percent(RolloutPercent::new(p).expect("valid"))
}

/// Waves of cumulative percentages; advance at 90 % success, halt at 20 % failures.
pub fn plan(group: &GroupId, waves: &[u8], min_stations: u32) -> Plan {
    Plan {
        group: group.clone(),
        waves: waves.iter().map(|p| pct(*p)).collect(),
        min_stations,
        success_percent: 90,
        failure_percent: 20,
        wave_timeout_s: None,
        window: None,
    }
}

impl Fixture {
    pub fn key_arg(&self) -> &str {
        self.key_path.to_str().expect("utf-8 path")
    }

    /// A 16 KiB bundle for the group at 2.0.0 in 4 KiB chunks.
    pub fn request(&self) -> PushRequest {
        let bundle = self.dir.path().join("update-2.0.0.raucb");
        let bytes: Vec<u8> = (0..16 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
        std::fs::write(&bundle, bytes).expect("bundle");
        let mut r = PushRequest::new(
            bundle,
            Target::Group(self.group.clone()),
            Version::new(2, 0, 0),
            "fleet-sim".into(),
        );
        r.chunk_size = 4096;
        r
    }

    /// `n` stations with the wave each is in for the update `req` will produce.
    pub fn stations(&self, n: usize, plan: &Plan, req: &PushRequest) -> Vec<(DeviceId, usize)> {
        let manifest = fleetctl::publish::describe_bundle(req).expect("describe");
        let u = fleetctl::publish::derived_update_id(&req.version, &manifest.bundle_id);
        (0..n)
            .map(|i| {
                let d = DeviceId::new(format!("stn-{i:03}")).expect("valid");
                let w = plan
                    .wave_of(&d, wave::bucket(&d, &u))
                    .expect("the last wave is 100%");
                (d, w)
            })
            .collect()
    }

    /// Starts the simulated stations (`fails` fail their health check) and waits until each
    /// has announced itself.
    pub async fn fleet(
        &self,
        stations: &[(DeviceId, usize)],
        fails: &BTreeSet<DeviceId>,
    ) -> SimFleet {
        let opts = FleetOptions {
            addr: self.addr.clone(),
            trusted: [self.key.verifying_key()].into_iter().collect(),
            compatible: "fleet-sim".into(),
            factory_version: Version::new(1, 0, 0),
            limits: Limits::DEFAULT,
            start_spacing: Duration::ZERO,
        };
        let specs = stations
            .iter()
            .map(|(d, _)| StationSpec {
                device_id: d.clone(),
                groups: vec![self.group.clone()],
                fails: fails.contains(d),
                install_time: self.install_time,
                chunk_delay: self.chunk_delay,
                link_drop_every: None,
                silent_microphone: false,
            })
            .collect();
        let fleet = SimFleet::start(opts, specs).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let rows = fleetctl::status::read(&self.addr, STALE, &Limits::DEFAULT)
                .await
                .expect("status");
            if rows.iter().filter(|r| r.state.is_some()).count() == stations.len() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "stations did not come up"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        fleet
    }

    pub async fn tick(&self) -> rollout::Tick {
        rollout::tick(&self.addr, &self.key, None, STALE, &Limits::DEFAULT)
            .await
            .expect("tick")
    }
}
