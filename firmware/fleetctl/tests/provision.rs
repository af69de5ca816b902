//! `fleetctl pki` and `fleetctl provision` as an operator runs them: the certificates are checked
//! with the openssl CLI and used against the documented mosquitto broker; every refusal exits 2
//! and writes nothing.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fleet_mqtt::{ClientAuth, Session, SessionConfig, SessionEvent, TlsConfig, Transport};
use fleet_testkit::Mosquitto;
use fleet_testkit::mosquitto::TestPki;
use tokio::time::timeout;

fn fleetctl(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run fleetctl")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "fleetctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in: {stderr}");
}

fn openssl(args: &[&str], cwd: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run openssl (tests/setup.d/00-apt.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const FLEET: &str = r#"trusted-key-files = ["keys/fleet-offer.pub"]

[image]
compatible = "fleet-raspberrypi5"
boot-flow = "tryboot"

[broker]
host = "127.0.0.1"
ca-file = "pki/ca.crt"

[station-ca]
cert-file = "pki/ca.crt"
key-file = "pki/ca.key"

[defaults.updated]
groups = ["all"]
"#;

/// A fleet: PKI for a broker on 127.0.0.1, an offer key, the definition file.
fn fleet() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    ok(&fleetctl(
        &["pki", "init", "--out", "pki", "--broker-host", "127.0.0.1"],
        d.path(),
    ));
    ok(&fleetctl(&["keys", "gen", "--out-dir", "keys"], d.path()));
    std::fs::write(d.path().join("fleet.toml"), FLEET).expect("write fleet.toml");
    d
}

fn provision(d: &Path, station: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "provision",
        "--fleet",
        "fleet.toml",
        "--station",
        station,
        "--out",
        station,
    ];
    args.extend_from_slice(extra);
    fleetctl(&args, d)
}

fn folder(d: &Path, station: &str) -> PathBuf {
    d.join(station).join("fleet-provision")
}

#[test]
fn provision_issues_a_v3_client_certificate_named_after_the_station_by_the_fleet_ca() {
    let d = fleet();
    let out = ok(&provision(
        d.path(),
        "stn-0042",
        &[
            "--group",
            "canary",
            "--microphone",
            "usb:0869:0001",
            "--position",
            "52.1,-1.5",
        ],
    ));
    assert!(
        out.contains("checked by fleet-updated, fleet-recorderd"),
        "{out}"
    );
    let f = folder(d.path(), "stn-0042");
    let cert = f.join("mqtt/client.crt");
    let cert = cert.to_str().expect("utf-8 path");
    let verify = openssl(&["verify", "-CAfile", "pki/ca.crt", cert], d.path());
    assert!(verify.contains(": OK"), "{verify}");
    let text = openssl(&["x509", "-in", cert, "-noout", "-text"], d.path());
    for needle in [
        "Version: 3 (0x2)",
        "CN = stn-0042",
        "TLS Web Client Authentication",
        "CA:FALSE",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    // The broker's certificate carries its address where TLS clients look: the SAN.
    let broker = openssl(
        &[
            "x509",
            "-in",
            "pki/server.crt",
            "-noout",
            "-ext",
            "subjectAltName",
        ],
        d.path(),
    );
    assert!(broker.contains("IP Address:127.0.0.1"), "{broker}");
    // The folder: the station's own settings, the fleet-wide group replaced by its own.
    let updated = std::fs::read_to_string(f.join("updated.toml")).expect("updated.toml");
    assert!(updated.contains("device-id = \"stn-0042\""), "{updated}");
    assert!(updated.contains("groups = [\"canary\"]"), "{updated}");
    let recorder = std::fs::read_to_string(f.join("recorderd.toml")).expect("recorderd.toml");
    assert!(recorder.contains("station-id = \"stn-0042\""), "{recorder}");
    let check = ok(&fleetctl(
        &["provision", "--check", "stn-0042", "--fleet", "fleet.toml"],
        d.path(),
    ));
    assert!(check.contains("ready for station stn-0042"), "{check}");
    assert!(check.contains("CN stn-0042, clientAuth"), "{check}");
}

#[test]
fn bad_input_is_refused_with_exit_2_and_nothing_is_written() {
    let d = fleet();
    refused(
        &provision(d.path(), "operator", &[]),
        "may not be called \"operator\"",
    );
    refused(
        &provision(d.path(), "stn-1", &["--microphone", "usb:xyz"]),
        "four hex digits",
    );
    refused(
        &provision(
            d.path(),
            "stn-1",
            &["--microphone", "usb:0869:0001", "--profile", "bats"],
        ),
        "fleet-recorderd refuses",
    );
    // A fleet-wide default the updater does not know.
    std::fs::write(
        d.path().join("fleet.toml"),
        format!("{FLEET}colour = \"red\"\n").replace("groups = [\"all\"]\n", ""),
    )
    .expect("write");
    let out = provision(d.path(), "stn-1", &[]);
    refused(&out, "colour");
    // The offer-signing private key in place of the public one.
    std::fs::write(
        d.path().join("fleet.toml"),
        FLEET.replace("keys/fleet-offer.pub", "keys/fleet-offer.key.pem"),
    )
    .expect("write");
    refused(&provision(d.path(), "stn-1", &[]), "is a private key");
    assert!(!d.path().join("stn-1").join("fleet-provision").exists());
    assert!(!d.path().join("operator").join("fleet-provision").exists());
}

#[test]
fn check_refuses_a_folder_holding_another_stations_certificate() {
    let d = fleet();
    ok(&provision(d.path(), "stn-1", &[]));
    ok(&provision(d.path(), "stn-2", &[]));
    for f in ["client.crt", "client.key"] {
        std::fs::copy(
            folder(d.path(), "stn-2").join("mqtt").join(f),
            folder(d.path(), "stn-1").join("mqtt").join(f),
        )
        .expect("copy");
    }
    refused(
        &fleetctl(&["provision", "--check", "stn-1"], d.path()),
        "is not the device id stn-1",
    );
    std::fs::write(folder(d.path(), "stn-2").join("notes.txt"), "x").expect("write");
    refused(
        &fleetctl(&["provision", "--check", "stn-2"], d.path()),
        "notes.txt is not part of a provisioning folder",
    );
}

#[test]
fn a_pem_offer_key_from_gen_dev_pki_becomes_the_hex_stations_trust() {
    let d = tempfile::tempdir().expect("tempdir");
    openssl(
        &["genpkey", "-algorithm", "ed25519", "-out", "offer.key.pem"],
        d.path(),
    );
    openssl(
        &[
            "pkey",
            "-in",
            "offer.key.pem",
            "-pubout",
            "-out",
            "offer.pub.pem",
        ],
        d.path(),
    );
    let der = Command::new("openssl")
        .args(["pkey", "-in", "offer.key.pem", "-pubout", "-outform", "DER"])
        .current_dir(d.path())
        .output()
        .expect("openssl");
    let raw = &der.stdout[der.stdout.len() - 32..];
    let hex = fleetctl::provision::trusted_key_hex(&d.path().join("offer.pub.pem"))
        .expect("a PEM public key is accepted");
    assert_eq!(hex, hex::encode(raw));
}

async fn connected(rx: &mut tokio::sync::mpsc::Receiver<SessionEvent>) {
    let mut reasons = Vec::new();
    loop {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(SessionEvent::Connected)) => return,
            Ok(Some(SessionEvent::Disconnected { reason, .. })) => reasons.push(reason),
            Ok(Some(_)) => {}
            other => panic!("not connected: {other:?} after {reasons:?}"),
        }
    }
}

fn session(id: &str, port: u16, ca: &Path, cert: PathBuf, key: PathBuf) -> SessionConfig {
    let mut c = SessionConfig::new(id, "127.0.0.1", port);
    c.transport = Transport::Tls(TlsConfig {
        ca: ca.to_owned(),
        client_auth: Some(ClientAuth { cert, key }),
        server_verify: fleet_mqtt::ServerVerify::Enforce,
    });
    c
}

#[tokio::test]
async fn a_provisioned_station_and_the_operator_meet_on_the_documented_broker_with_fleetctls_pki() {
    let d = fleet();
    ok(&provision(d.path(), "stn-0042", &[]));
    // The documented broker (docs/mosquitto/), given fleetctl's CA and broker certificate in
    // place of the harness's own.
    let harness = TestPki::generate().expect("pki");
    for f in ["ca.crt", "server.crt", "server.key"] {
        std::fs::copy(d.path().join("pki").join(f), harness.dir().join(f)).expect("copy");
    }
    let broker = Mosquitto::start_tls(&harness).expect("broker");
    let f = folder(d.path(), "stn-0042");
    let (station, mut srx) = Session::start(session(
        "stn-0042",
        broker.port(),
        &f.join("mqtt/ca.crt"),
        f.join("mqtt/client.crt"),
        f.join("mqtt/client.key"),
    ));
    connected(&mut srx).await;
    let pki = d.path().join("pki");
    let (operator, mut orx) = Session::start(session(
        "operator-1",
        broker.port(),
        &pki.join("ca.crt"),
        pki.join("operator.crt"),
        pki.join("operator.key"),
    ));
    connected(&mut orx).await;
    operator
        .subscribe("fleet/v1/devices/+/state")
        .await
        .expect("subscribe");
    // The ACL knows the station by its certificate's CN: only its own state gets through.
    station
        .publish("fleet/v1/devices/stn-9999/state", "forged", true)
        .await
        .expect("publish");
    station
        .publish("fleet/v1/devices/stn-0042/state", "hello", true)
        .await
        .expect("publish");
    let m = loop {
        match timeout(Duration::from_secs(10), orx.recv()).await {
            Ok(Some(SessionEvent::Message(m))) => break m,
            Ok(Some(_)) => {}
            other => panic!("no state reached the operator: {other:?}"),
        }
    };
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("fleet/v1/devices/stn-0042/state", &b"hello"[..])
    );
}
