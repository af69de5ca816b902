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

// ---- fleet-uploaderd's settings and credentials (issue 17) ----

const S3_UPLOADER: &str = r#"
[defaults.uploaderd]
order = "newest-first"

[defaults.uploaderd.destination]
kind = "s3"
endpoint = "https://s3.example.org"
bucket = "field-recordings"
"#;

const SFTP_UPLOADER: &str = r#"
[defaults.uploaderd.destination]
kind = "sftp"
host = "sftp.example.org"
user = "fleet"
remote-dir = "/srv/recordings"
"#;

const S3_CREDENTIALS: &str =
    "access-key-id = \"AKIAFLEETSTATION0042\"\nsecret-access-key = \"not-a-real-secret\"\n";

/// A fleet whose definition also holds `extra`.
fn fleet_with(extra: &str) -> tempfile::TempDir {
    let d = fleet();
    std::fs::write(d.path().join("fleet.toml"), format!("{FLEET}{extra}")).expect("write");
    d
}

/// An ed25519 key pair from ssh-keygen (`passphrase` empty: none) and a known_hosts line for
/// `host` made of the public key.
fn ssh_key(dir: &Path, name: &str, passphrase: &str, host: &str) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q", "-t", "ed25519", "-N", passphrase, "-C", "", "-f", name,
        ])
        .current_dir(dir)
        .output()
        .expect("run ssh-keygen (openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = std::fs::read_to_string(dir.join(format!("{name}.pub"))).expect("public key");
    let mut parts = public.split_whitespace();
    let (kind, key) = (parts.next().expect("type"), parts.next().expect("key"));
    std::fs::write(
        dir.join(format!("{name}.known_hosts")),
        format!("{host} {kind} {key}\n"),
    )
    .expect("write known_hosts");
}

/// The uploader's own loader, as its --check-config runs it on the station: the image's
/// uploaderd.toml with the folder's station file as `--station-config`.
fn uploader_config(station_file: &Path) -> fleet_uploaderd::config::Config {
    let image =
        include_str!("../../../meta-fleet/recipes-fleet/fleet-firmware/files/uploaderd.toml")
            .replace("@DATADIR@", "/data");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("uploaderd.toml");
    std::fs::write(&path, image).expect("write");
    fleet_uploaderd::config::load_layers(&path, Some(station_file), None)
        .expect("fleet-uploaderd accepts the folder")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn provision_gives_an_s3_uploader_its_settings_and_credentials_which_the_uploader_accepts() {
    let d = fleet_with(S3_UPLOADER);
    std::fs::write(d.path().join("s3.toml"), S3_CREDENTIALS).expect("write");
    let out = ok(&provision(
        d.path(),
        "stn-0042",
        &["--uploader-s3-credentials", "s3.toml"],
    ));
    assert!(out.contains("fleet-uploaderd"), "{out}");
    let f = folder(d.path(), "stn-0042");
    let c = uploader_config(&f.join("uploaderd.toml"));
    let Some(fleet_uploaderd::config::Destination::S3(dest)) = &c.destination else {
        panic!("an S3 destination: {:?}", c.destination);
    };
    assert_eq!(dest.bucket, "field-recordings");
    assert_eq!(c.order, fleet_core::upload::Order::NewestFirst);
    // The credentials land under the uploader's data-dir, where fleet-provision puts the
    // folder's uploader/ (never under /etc).
    assert_eq!(
        c.credentials_file,
        Path::new("/data/fleet/identity/uploader/credentials.toml")
    );
    assert!(c.credentials_file.starts_with(&c.data_dir));
    let creds = f.join("uploader/credentials.toml");
    assert_eq!(
        fleet_uploaderd::config::load_credentials(&creds)
            .expect("the uploader reads the credentials")
            .access_key_id,
        "AKIAFLEETSTATION0042"
    );
    assert_eq!(mode(&creds), 0o600, "never world-readable");
    let check = ok(&fleetctl(
        &["provision", "--check", "stn-0042", "--fleet", "fleet.toml"],
        d.path(),
    ));
    assert!(
        check.contains("accepted by fleet-uploaderd (s3://field-recordings, credentials checked)"),
        "{check}"
    );
    assert!(
        check.contains("policy.uploader follows /data/fleet/identity/uploaderd.toml"),
        "{check}"
    );
    // A broken credentials file in the folder is found by --check.
    std::fs::write(&creds, "access-key-id = \"x\"\n").expect("write");
    refused(
        &fleetctl(&["provision", "--check", "stn-0042"], d.path()),
        "secret-access-key",
    );
}

#[test]
fn provision_gives_an_sftp_uploader_its_key_and_the_servers_host_key() {
    let d = fleet_with(SFTP_UPLOADER);
    ssh_key(d.path(), "station", "", "sftp.example.org");
    let out = ok(&provision(
        d.path(),
        "stn-7",
        &[
            "--uploader-sftp-key",
            "station",
            "--uploader-sftp-known-hosts",
            "station.known_hosts",
            "--uploader-sftp-user",
            "fleet-stn-7",
        ],
    ));
    assert!(out.contains("fleet-uploaderd"), "{out}");
    let f = folder(d.path(), "stn-7");
    let c = uploader_config(&f.join("uploaderd.toml"));
    let Some(fleet_uploaderd::config::Destination::Sftp(dest)) = &c.destination else {
        panic!("an SFTP destination: {:?}", c.destination);
    };
    assert_eq!(dest.user, "fleet-stn-7", "the station's own login");
    assert_eq!(
        dest.private_key_file,
        Path::new("/data/fleet/identity/uploader/sftp-key")
    );
    assert_eq!(
        dest.known_hosts_file,
        Path::new("/data/fleet/identity/uploader/known_hosts")
    );
    assert_eq!(
        std::fs::read(f.join("uploader/sftp-key")).expect("key"),
        std::fs::read(d.path().join("station")).expect("key"),
    );
    for rel in ["uploader/sftp-key", "uploader/known_hosts"] {
        assert_eq!(mode(&f.join(rel)), 0o600, "{rel}");
    }
    let check = ok(&fleetctl(&["provision", "--check", "stn-7"], d.path()));
    assert!(
        check.contains("sftp://fleet-stn-7@sftp.example.org:22, key and host key checked"),
        "{check}"
    );
    // No S3 credentials file is left over for an SFTP destination.
    assert!(!f.join("uploader/credentials.toml").exists());
}

#[test]
fn bad_uploader_credentials_are_refused_clearly_and_nothing_is_written() {
    let d = fleet_with(SFTP_UPLOADER);
    ssh_key(d.path(), "station", "", "sftp.example.org");
    ssh_key(d.path(), "locked", "a passphrase", "sftp.example.org");
    ssh_key(d.path(), "other", "", "other.example.org");
    std::fs::write(d.path().join("garbage"), "hello\n").expect("write");
    let sftp = |key: &str, hosts: &str| {
        provision(
            d.path(),
            "stn-1",
            &[
                "--uploader-sftp-key",
                key,
                "--uploader-sftp-known-hosts",
                hosts,
            ],
        )
    };
    refused(
        &sftp("station.pub", "station.known_hosts"),
        "is a public key",
    );
    refused(
        &sftp("garbage", "station.known_hosts"),
        "is not a private key in OpenSSH or PEM format",
    );
    refused(&sftp("locked", "locked.known_hosts"), "passphrase");
    refused(
        &sftp("station", "other.known_hosts"),
        "lists no key for sftp.example.org",
    );
    refused(&sftp("station", "garbage"), "line 1");
    // A destination without its credentials, and credentials of the other kind.
    refused(
        &provision(d.path(), "stn-1", &[]),
        "its credentials are missing: give --uploader-sftp-key",
    );
    std::fs::write(d.path().join("s3.toml"), S3_CREDENTIALS).expect("write");
    refused(
        &provision(d.path(), "stn-1", &["--uploader-s3-credentials", "s3.toml"]),
        "destination is SFTP, not S3",
    );
    // A credential file that does not exist.
    let out = sftp("missing-key", "station.known_hosts");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unable to read missing-key"), "{stderr}");
    // S3: a destination without credentials, and a credentials file that is not one.
    std::fs::write(d.path().join("fleet.toml"), format!("{FLEET}{S3_UPLOADER}")).expect("write");
    refused(
        &provision(d.path(), "stn-1", &[]),
        "no credentials were given: add --uploader-s3-credentials",
    );
    refused(
        &provision(d.path(), "stn-1", &["--uploader-s3-credentials", "garbage"]),
        "not the uploader's credentials file",
    );
    // Credentials with no destination to use them.
    std::fs::write(d.path().join("fleet.toml"), FLEET).expect("write");
    refused(
        &provision(d.path(), "stn-1", &["--uploader-s3-credentials", "s3.toml"]),
        "has no uploader destination",
    );
    // The fleet definition may not point the credentials elsewhere (/etc is the image).
    std::fs::write(
        d.path().join("fleet.toml"),
        format!(
            "{FLEET}{}",
            S3_UPLOADER.replace(
                "order = \"newest-first\"\n",
                "order = \"newest-first\"\ncredentials-file = \"/etc/fleet/s3.toml\"\n"
            )
        ),
    )
    .expect("write");
    refused(
        &provision(d.path(), "stn-1", &["--uploader-s3-credentials", "s3.toml"]),
        "defaults.uploaderd.credentials-file: provisioning sets it",
    );
    assert!(!d.path().join("stn-1").join("fleet-provision").exists());
}

#[test]
fn retentiond_counts_an_uploader_exactly_when_one_is_provisioned() {
    // No destination: no uploaderd.toml, so retentiond's "auto" counts none.
    let d = fleet();
    ok(&provision(d.path(), "stn-1", &[]));
    assert!(!folder(d.path(), "stn-1").join("uploaderd.toml").exists());
    let check = ok(&fleetctl(&["provision", "--check", "stn-1"], d.path()));
    assert!(
        check.contains("uploaderd.toml: none (no uploader"),
        "{check}"
    );
    // A fleet definition that fixes policy.uploader is refused: it would not follow reality.
    for fixed in ["uploader = true", "uploader = false"] {
        std::fs::write(
            d.path().join("fleet.toml"),
            format!("{FLEET}\n[defaults.retentiond.policy]\n{fixed}\n"),
        )
        .expect("write");
        refused(
            &provision(d.path(), "stn-2", &[]),
            "it must follow the uploader",
        );
    }
    // A folder whose retentiond.toml was edited to fix it is refused by --check too.
    std::fs::write(
        folder(d.path(), "stn-1").join("retentiond.toml"),
        "[policy]\nuploader = true\n",
    )
    .expect("write");
    refused(
        &fleetctl(&["provision", "--check", "stn-1"], d.path()),
        "it must follow the uploader",
    );
    // Uploader credentials without uploaderd.toml are refused by --check.
    std::fs::remove_file(folder(d.path(), "stn-1").join("retentiond.toml")).expect("rm");
    let f = folder(d.path(), "stn-1");
    std::fs::create_dir(f.join("uploader")).expect("mkdir");
    std::fs::write(f.join("uploader/credentials.toml"), S3_CREDENTIALS).expect("write");
    refused(
        &fleetctl(&["provision", "--check", "stn-1"], d.path()),
        "without uploaderd.toml",
    );
}

// ---- docs/reference/provisioning.md and the cellular modem (ADR 0009) ----

/// The fenced blocks of `doc` whose info string is `lang`.
fn blocks(doc: &str, lang: &str) -> Vec<String> {
    let fence = format!("```{lang}\n");
    doc.split(fence.as_str())
        .skip(1)
        .map(|b| b.split("```").next().expect("closed block").to_owned())
        .collect()
}

#[test]
fn the_provisioning_reference_samples_run_as_documented() {
    let doc = include_str!("../../../docs/reference/provisioning.md");
    let toml_blocks = blocks(doc, "toml");
    assert_eq!(
        toml_blocks.len(),
        2,
        "the fleet definition and S3 credentials"
    );
    let d = fleet();
    std::fs::write(d.path().join("fleet.toml"), &toml_blocks[0]).expect("write");
    std::fs::write(d.path().join("s3-stn-0042.toml"), &toml_blocks[1]).expect("write");
    let command = &blocks(doc, "sh")[0];
    let args: Vec<String> = command
        .replace("\\\n", " ")
        .split_whitespace()
        .skip(1)
        .map(str::to_owned)
        .collect();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&fleetctl(&argv, d.path()));
    let f = d.path().join("card/fleet-provision");
    assert_eq!(
        std::fs::read_to_string(f.join("network/cellular.conf")).expect("cellular.conf"),
        blocks(doc, "conf")[0],
        "the documented cellular.conf is what provisioning writes"
    );
    let check = ok(&fleetctl(
        &["provision", "--check", "card", "--fleet", "fleet.toml"],
        d.path(),
    ));
    assert_eq!(
        check,
        blocks(doc, "text")[0],
        "the documented --check output"
    );
}

/// A fake `mmcli` (ModemManager's CLI) for the argument building of fleet-cellular: it logs its
/// arguments and answers `--output-keyvalue` queries like ModemManager 1.24 for a QMI modem
/// whose bearer gets static addresses. Real ModemManager needs a modem and D-Bus: not here.
const FAKE_MMCLI: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_MM/log"
modem=/org/freedesktop/ModemManager1/Modem/0
bearer=/org/freedesktop/ModemManager1/Bearer/3
case "$*" in
  "-L --output-keyvalue")
    printf 'modem-list.length   : 1\nmodem-list.value[1] : %s\n' "$modem" ;;
  "-m $modem --output-keyvalue")
    if [ -e "$FAKE_MM/connected" ]; then
      printf 'modem.generic.state                 : connected\nmodem.generic.bearers.length        : 1\nmodem.generic.bearers.value[1]      : %s\n' "$bearer"
    else
      printf 'modem.generic.state                 : registered\nmodem.generic.bearers.length        : 0\n'
    fi ;;
  "-m $modem --simple-connect="*)
    touch "$FAKE_MM/connected"; echo "successfully connected the modem" ;;
  "-b $bearer --output-keyvalue")
    cat <<KV
bearer.status.connected              : yes
bearer.status.interface              : wwan0
bearer.ipv4-config.method            : static
bearer.ipv4-config.address           : 10.64.12.34
bearer.ipv4-config.prefix            : 30
bearer.ipv4-config.gateway           : 10.64.12.33
bearer.ipv4-config.dns.length        : 2
bearer.ipv4-config.dns.value[1]      : 10.0.0.1
bearer.ipv4-config.dns.value[2]      : 10.0.0.2
bearer.ipv4-config.mtu               : 1430
bearer.ipv6-config.method            : --
KV
    ;;
  *) echo "unexpected mmcli $*" >&2; exit 1 ;;
esac
"#;

fn fleet_cellular(conf: &Path, fake: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../meta-fleet/recipes-connectivity/fleet-network/files/fleet-cellular");
    Command::new("sh")
        .arg(script)
        .env("FLEET_CELLULAR_CONF", conf)
        .env("FLEET_NETWORK_DIR", fake.join("network"))
        .env("FLEET_CELLULAR_WAIT", "2")
        .env("FAKE_MM", fake)
        .env(
            "PATH",
            format!(
                "{}:{}",
                fake.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("run fleet-cellular")
}

#[test]
fn fleet_cellular_connects_the_modem_with_the_provisioned_bearer_and_hands_its_link_to_networkd() {
    use std::os::unix::fs::PermissionsExt;
    let d = fleet();
    std::fs::write(d.path().join("apn-password"), "pw-Secret=1\n").expect("write");
    std::fs::write(d.path().join("sim-pin"), "1234\n").expect("write");
    ok(&provision(
        d.path(),
        "stn-0042",
        &[
            "--cellular-apn",
            "iot.example.net",
            "--cellular-user",
            "fleet",
            "--cellular-password-file",
            "apn-password",
            "--cellular-pin-file",
            "sim-pin",
        ],
    ));
    let conf = folder(d.path(), "stn-0042").join("network/cellular.conf");
    assert_eq!(mode(&conf), 0o600);
    let fake = d.path().join("fake");
    std::fs::create_dir_all(fake.join("bin")).expect("mkdir");
    for (name, text) in [
        ("mmcli", FAKE_MMCLI),
        (
            "networkctl",
            "#!/bin/sh\necho \"$*\" >> \"$FAKE_MM/networkctl\"\n",
        ),
    ] {
        let p = fake.join("bin").join(name);
        std::fs::write(&p, text).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let out = fleet_cellular(&conf, &fake);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(fake.join("log")).expect("mmcli log");
    assert!(
        log.lines().any(|l| l
            == "-m /org/freedesktop/ModemManager1/Modem/0 --simple-connect=apn=iot.example.net,user=fleet,password=pw-Secret=1,pin=1234"),
        "{log}"
    );
    let network =
        std::fs::read_to_string(fake.join("network/70-fleet-cellular.network")).expect("network");
    for line in [
        "Name=wwan0",
        "MTUBytes=1430",
        "Address=10.64.12.34/30",
        "DNS=10.0.0.1",
        "DNS=10.0.0.2",
        "Gateway=10.64.12.33",
        "Metric=1000",
        "IPv6AcceptRA=no",
    ] {
        assert!(network.lines().any(|l| l == line), "{line} in:\n{network}");
    }
    assert_eq!(
        std::fs::read_to_string(fake.join("networkctl")).expect("networkctl"),
        "reload\n"
    );
    // The timer's next run: connected already, settings unchanged: no connect, no reload.
    let out = fleet_cellular(&conf, &fake);
    assert!(out.status.success());
    let log = std::fs::read_to_string(fake.join("log")).expect("mmcli log");
    assert_eq!(log.matches("--simple-connect").count(), 1, "{log}");
    assert_eq!(
        std::fs::read_to_string(fake.join("networkctl")).expect("networkctl"),
        "reload\n"
    );
    // A hand-edited file that would smuggle a property in is refused before ModemManager is asked.
    std::fs::remove_file(fake.join("log")).expect("rm");
    let bad = d.path().join("bad.conf");
    std::fs::write(&bad, "apn=iot.example.net,ip-type=ipv6\n").expect("write");
    let out = fleet_cellular(&bad, &fake);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the value of apn has"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!fake.join("log").exists(), "mmcli was not run");
    // And fleetctl refuses such values in the first place.
    refused(
        &provision(d.path(), "stn-1", &["--cellular-apn", "a,b"]),
        "APN",
    );
}
