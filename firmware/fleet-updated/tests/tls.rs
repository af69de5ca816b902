//! A station over TLS against the documented fleet broker (docs/mosquitto: client
//! certificates, ACL) with a test PKI: the whole update path with each side on its own
//! identity, and `--check-config` on the credential settings.
mod common;

use std::path::{Path, PathBuf};

use common::{COMPATIBLE, StationOptions, WAIT, bundle, config_text, start};
use fleet_core::slot::Slot;
use fleet_core::update::{Outcome, PhaseName};
use fleet_mqtt::{Session, SessionConfig, SessionEvent, Transport};
use fleet_proto::Limits;
use fleet_proto::payload::{StationState, decode_state};
use fleet_sim::Behaviour;
use fleet_testkit::Mosquitto;
use fleet_testkit::mosquitto::TestPki;
use fleet_testkit::operator::{public_hex, test_key};
use fleet_updated::Config;
use tokio::sync::mpsc::Receiver;

const STATION: &str = "stn-0001";

/// Writes the station's identity under `<dir>/data/fleet/identity` (where provisioning puts
/// it) and returns the simulated station's config text with TLS towards `broker`.
fn tls_station_config(pki: &TestPki, broker: &Mosquitto, key_hex: &str, dir: &Path) -> String {
    let identity = dir.join("data/fleet/identity");
    std::fs::create_dir_all(&identity).expect("identity dir");
    let issued = pki.client(STATION).expect("station certificate");
    let cert = identity.join("station.crt");
    let key = identity.join("station.key");
    std::fs::copy(&issued.cert, &cert).expect("cert");
    std::fs::copy(&issued.key, &key).expect("key");
    let plain = config_text(STATION, broker, key_hex, dir, &StationOptions::default());
    let mqtt = "[mqtt]\nhost = \"127.0.0.1\"\n";
    assert!(
        plain.contains(mqtt) && plain.contains("[update]"),
        "{plain}"
    );
    plain
        .replacen(mqtt, &format!("{mqtt}transport = \"tls\"\n"), 1)
        .replacen(
            "[update]",
            &format!(
                "[mqtt.tls]\nca-file = \"{}\"\ncert-file = \"{}\"\nkey-file = \"{}\"\n\n[update]",
                pki.ca().display(),
                cert.display(),
                key.display()
            ),
            1,
        )
}

/// The operator's view of one station's retained state, over TLS as `operator`.
async fn watch_station(pki: &TestPki, broker: &Mosquitto) -> (Session, Receiver<SessionEvent>) {
    let mut c = SessionConfig::new("operator-watch", broker.host(), broker.port());
    c.transport = Transport::Tls(pki.tls_config("operator").expect("operator"));
    let (session, rx) = Session::start(c);
    session
        .subscribe(&format!("fleet/v1/devices/{STATION}/state"))
        .await
        .expect("subscribe");
    (session, rx)
}

async fn wait_state(
    rx: &mut Receiver<SessionEvent>,
    pred: impl Fn(&StationState) -> bool,
) -> StationState {
    let mut last = None;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(SessionEvent::Message(m))) if !m.payload.is_empty() => {
                let s = decode_state(&m.payload, &Limits::DEFAULT).expect("state");
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            Ok(Some(_)) => {}
            other => panic!("state did not match: {other:?}; last {last:#?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_update_over_tls_commits_with_each_side_on_its_own_identity() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let signing = test_key(1);
    let dir = tempfile::tempdir().expect("tmp");
    let text = tls_station_config(&pki, &broker, &public_hex(&signing), dir.path());
    let path = dir.path().join("updated.toml");
    std::fs::write(&path, text).expect("config");
    let config = Config::load(&path).expect("valid config");
    assert!(matches!(config.mqtt.transport, Transport::Tls(_)));

    let (_watch, mut states) = watch_station(&pki, &broker).await;
    let station = start(STATION, dir, config);
    wait_state(&mut states, |s| s.phase == PhaseName::Idle).await;

    // The operator's own tool, with the operator's certificate.
    let addr = fleetctl::connection::BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    fleetctl::connection::use_transport(
        &addr,
        Transport::Tls(pki.tls_config("operator").expect("operator")),
    );
    let bundle_path = station.dir.path().join("good.raucb");
    std::fs::write(&bundle_path, bundle("1.1.0", Behaviour::Normal, 200_000)).expect("bundle");
    let mut req = fleetctl::publish::PushRequest::new(
        bundle_path,
        format!("device:{STATION}").parse().expect("target"),
        semver::Version::new(1, 1, 0),
        COMPATIBLE.to_owned(),
    );
    req.chunk_size = 64 * 1024;
    fleetctl::publish::push(&addr, &signing, &req, &mut |_| {})
        .await
        .expect("fleetctl push over TLS");

    let s = wait_state(&mut states, |s| {
        s.phase == PhaseName::Idle && s.last_outcome.is_some()
    })
    .await;
    assert!(
        matches!(&s.last_outcome, Some(Outcome::Committed { slot: Slot::B, version, .. }) if *version == semver::Version::new(1, 1, 0)),
        "{s:#?}"
    );
    assert_eq!((s.booted, s.committed), (Slot::B, Slot::B));
    station.stop().await;
}

fn check_config(path: &Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fleet-updated"))
        .arg("--check-config")
        .arg("--config")
        .arg(path)
        .output()
        .expect("run fleet-updated");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_credentials_outside_the_data_dir_and_a_key_that_does_not_match() {
    let pki = TestPki::generate().expect("pki");
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let base = |cert: &Path, key: &Path| {
        format!(
            "device-id = \"{STATION}\"\ncompatible = \"c\"\ndata-dir = \"{}\"\n\
             trusted-keys = [\"{}\"]\n[sim]\nroot = \"{}\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\ntransport = \"tls\"\n\
             [mqtt.tls]\nca-file = \"{}\"\ncert-file = \"{}\"\nkey-file = \"{}\"\n",
            data.display(),
            public_hex(&test_key(1)),
            dir.path().join("sim").display(),
            pki.ca().display(),
            cert.display(),
            key.display()
        )
    };
    let path = dir.path().join("updated.toml");
    let issued = pki.client(STATION).expect("cert");

    // The PKI's own directory is not the data dir: refused with exit 2, naming the keys.
    std::fs::write(&path, base(&issued.cert, &issued.key)).expect("config");
    let (code, err) = check_config(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("mqtt.tls.cert-file") && err.contains("mqtt.tls.key-file"),
        "{err}"
    );

    // Under the data dir but not provisioned yet: fine (the daemon waits for the files).
    let identity = data.join("fleet/identity");
    let (cert, key): (PathBuf, PathBuf) = (identity.join("s.crt"), identity.join("s.key"));
    std::fs::write(&path, base(&cert, &key)).expect("config");
    let (code, err) = check_config(&path);
    assert_eq!(code, Some(0), "{err}");

    // Provisioned with another station's key: exit 2 naming both files.
    std::fs::create_dir_all(&identity).expect("identity");
    let other = pki.client("stn-0002").expect("other");
    std::fs::copy(&issued.cert, &cert).expect("cert");
    std::fs::copy(&other.key, &key).expect("key");
    let (code, err) = check_config(&path);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("s.crt") && err.contains("s.key"), "{err}");

    // The right key: ok.
    std::fs::copy(&issued.key, &key).expect("key");
    let (code, err) = check_config(&path);
    assert_eq!(code, Some(0), "{err}");
}
