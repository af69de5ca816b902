//! The session over TLS against a real mosquitto started with the documented fleet broker
//! configuration (docs/mosquitto: client certificates required, identity = user name, ACL).
use std::time::Duration;

use fleet_mqtt::{Backoff, ClientAuth, Session, SessionConfig, SessionEvent, TlsConfig, Transport};
use fleet_testkit::Mosquitto;
use fleet_testkit::mosquitto::TestPki;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

fn config(id: &str, host: &str, broker: &Mosquitto, tls: TlsConfig) -> SessionConfig {
    let mut c = SessionConfig::new(id, host, broker.port());
    c.transport = Transport::Tls(tls);
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    c
}

/// Waits for the first connect; panics with the reasons seen when there is none.
async fn connected(rx: &mut Receiver<SessionEvent>) {
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

/// The reason of the first failed attempt; panics when the session connects instead.
async fn refused(rx: &mut Receiver<SessionEvent>) -> String {
    match timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(SessionEvent::Disconnected { reason, .. })) => reason,
        other => panic!("expected a refused connection, got {other:?}"),
    }
}

/// Asserts the session stays refused for a few attempts (it never connects).
async fn stays_refused(rx: &mut Receiver<SessionEvent>) -> String {
    let first = refused(rx).await;
    for _ in 0..2 {
        let _ = refused(rx).await;
    }
    first
}

async fn next_message(rx: &mut Receiver<SessionEvent>) -> fleet_mqtt::Message {
    loop {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(SessionEvent::Message(m))) => return m,
            Ok(Some(_)) => continue,
            other => panic!("no message: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_station_connects_over_tls_with_its_own_certificate() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let tls = pki.tls_config("stn-0001").expect("identity");
    let (station, mut rx) = Session::start(config("stn-0001", "127.0.0.1", &broker, tls));
    connected(&mut rx).await;
    // Its own state is readwrite in the ACL: it reads back what it published.
    let topic = "fleet/v1/devices/stn-0001/state";
    station.subscribe(topic).await.expect("subscribe");
    station
        .publish(topic, "hello", true)
        .await
        .expect("publish");
    let m = next_message(&mut rx).await;
    assert_eq!((m.topic.as_str(), &m.payload[..]), (topic, &b"hello"[..]));
}

#[tokio::test]
async fn a_broker_with_a_certificate_from_another_ca_is_refused() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let mut tls = pki.tls_config("stn-0001").expect("identity");
    // The station trusts another CA than the one that signed the broker's certificate.
    tls.ca = pki.other_ca();
    let (_station, mut rx) = Session::start(config("stn-0001", "127.0.0.1", &broker, tls));
    let reason = stays_refused(&mut rx).await;
    assert!(reason.contains("UnknownIssuer"), "{reason}");
}

#[tokio::test]
async fn a_wrong_host_name_is_refused() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let tls = pki.tls_config("stn-0001").expect("identity");
    // `localhost` reaches the same broker, but its certificate names only 127.0.0.1.
    let (_station, mut rx) = Session::start(config("stn-0001", "localhost", &broker, tls));
    let reason = stays_refused(&mut rx).await;
    assert!(
        reason.contains("not valid for name \"localhost\""),
        "{reason}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_is_refused_by_the_broker() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let tls = TlsConfig {
        client_auth: Some(pki.client_of_other_ca("operator").expect("rogue")),
        ..pki.tls_config("unused").expect("identity")
    };
    let (_rogue, mut rx) = Session::start(config("rogue", "127.0.0.1", &broker, tls));
    stays_refused(&mut rx).await;
}

#[tokio::test]
async fn a_missing_or_mismatched_key_file_is_a_clear_error() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let one = pki.client("stn-0001").expect("one");
    let two = pki.client("stn-0002").expect("two");
    let with = |auth: ClientAuth| TlsConfig {
        ca: pki.ca(),
        client_auth: Some(auth),
        server_verify: fleet_mqtt::ServerVerify::Enforce,
    };

    let missing = with(ClientAuth {
        cert: one.cert.clone(),
        key: pki.dir().join("absent.key"),
    });
    let err = missing.client_config(64 * 1024).expect_err("missing key");
    assert!(err.to_string().contains("absent.key"), "{err}");
    // A session keeps trying (the file may be provisioned later) and says why.
    let (_s, mut rx) = Session::start(config("stn-0001", "127.0.0.1", &broker, missing));
    let reason = refused(&mut rx).await;
    assert!(reason.contains("absent.key"), "{reason}");

    let mismatched = with(ClientAuth {
        cert: one.cert.clone(),
        key: two.key.clone(),
    });
    let err = mismatched
        .client_config(64 * 1024)
        .expect_err("key of another certificate");
    assert!(
        matches!(err, fleet_mqtt::CredentialError::KeyMismatch { .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("stn-0001.crt") && msg.contains("stn-0002.key"),
        "{msg}"
    );

    let not_pem = with(ClientAuth {
        cert: one.cert.clone(),
        key: one.cert.clone(),
    });
    let msg = not_pem
        .client_config(64 * 1024)
        .expect_err("a cert as key")
        .to_string();
    assert!(
        msg.contains("private key") && msg.contains("stn-0001.crt"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_renewed_certificate_is_read_at_the_next_connect() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let dir = tempfile::tempdir().expect("tmp");
    let cert = dir.path().join("station.crt");
    let key = dir.path().join("station.key");
    // Provisioned with a certificate the broker refuses.
    let rogue = pki.client_of_other_ca("stn-0001").expect("rogue");
    std::fs::copy(&rogue.cert, &cert).expect("copy");
    std::fs::copy(&rogue.key, &key).expect("copy");
    let tls = TlsConfig {
        ca: pki.ca(),
        client_auth: Some(ClientAuth {
            cert: cert.clone(),
            key: key.clone(),
        }),
        server_verify: fleet_mqtt::ServerVerify::Enforce,
    };
    let (_s, mut rx) = Session::start(config("stn-0001", "127.0.0.1", &broker, tls));
    refused(&mut rx).await;
    // The renewal replaces both files; the next attempt uses them without a restart.
    let good = pki.client("stn-0001").expect("good");
    std::fs::copy(&good.cert, &cert).expect("copy");
    std::fs::copy(&good.key, &key).expect("copy");
    connected(&mut rx).await;
}

#[tokio::test]
async fn a_station_cannot_publish_into_another_stations_topics_over_its_own_tls_identity() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let operator_tls = pki.tls_config("operator").expect("operator");
    let (operator, mut orx) =
        Session::start(config("operator", "127.0.0.1", &broker, operator_tls));
    connected(&mut orx).await;
    operator.subscribe("fleet/v1/#").await.expect("subscribe");
    // The subscription is in place once the operator's own probe comes back.
    operator
        .publish("fleet/v1/devices/probe/state", "probe", false)
        .await
        .expect("probe");
    assert_eq!(&next_message(&mut orx).await.payload[..], b"probe");

    let tls = pki.tls_config("stn-0001").expect("station");
    let (station, mut srx) = Session::start(config("stn-0001", "127.0.0.1", &broker, tls));
    connected(&mut srx).await;
    for topic in [
        "fleet/v1/devices/stn-0002/state",
        "fleet/v1/devices/stn-0002/events",
        "fleet/v1/devices/stn-0002/offer",
        "fleet/v1/devices/stn-0001/offer",
        "fleet/v1/groups/canary/offer",
        "fleet/v1/control",
    ] {
        station
            .publish(topic, "forged", false)
            .await
            .expect("queued");
    }
    // Its own state goes through, after every forged publish on the same connection: QoS 1
    // from one client is delivered in order, so once it arrives every forgery would have too.
    station
        .publish("fleet/v1/devices/stn-0001/state", "marker", false)
        .await
        .expect("marker");
    let m = next_message(&mut orx).await;
    assert_eq!(
        (m.topic.as_str(), &m.payload[..]),
        ("fleet/v1/devices/stn-0001/state", &b"marker"[..]),
        "a forged publish reached the operator"
    );
}

#[tokio::test]
async fn a_password_is_read_from_its_file_at_every_connect() {
    let broker = Mosquitto::start_with_passwords(&[("stn-0001", "right horse")]).expect("broker");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("mqtt-password");
    std::fs::write(&file, "wrong\n").expect("password");
    let mut c = SessionConfig::new("stn-0001", broker.host(), broker.port());
    c.credentials = Some(fleet_mqtt::Credentials {
        username: "stn-0001".into(),
        password_file: Some(file.clone()),
    });
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    let (_s, mut rx) = Session::start(c);
    let reason = refused(&mut rx).await;
    assert!(
        reason.contains("NotAuthorized") || reason.contains("BadUserNamePassword"),
        "{reason}"
    );
    // The rotated password is used at the next attempt, without a restart.
    std::fs::write(&file, "right horse\n").expect("password");
    connected(&mut rx).await;
}

/// fleet-updated and fleet-reporterd of one station connect with the station's one certificate
/// (the ACL keys every topic on its CN) and their own client ids, `fleet-updated-<id>` and
/// `fleet-reporterd-<id>` (docs/adr/0006-health-reporter.md): both stay connected side by side.
/// With one client id for both, the broker would drop the older session at every connect of
/// the other (`same_client_id_displaces_the_older_session` shows it does).
#[tokio::test]
async fn two_daemons_of_one_station_share_its_certificate_with_their_own_client_ids() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let operator_tls = pki.tls_config("operator").expect("operator");
    let (operator, mut orx) =
        Session::start(config("operator", "127.0.0.1", &broker, operator_tls));
    connected(&mut orx).await;
    operator
        .subscribe("fleet/v1/devices/stn-0001/+")
        .await
        .expect("subscribe");
    operator
        .publish("fleet/v1/devices/stn-0001/probe", "probe", false)
        .await
        .expect("probe");
    assert_eq!(&next_message(&mut orx).await.payload[..], b"probe");

    let tls = || pki.tls_config("stn-0001").expect("station");
    let (updated, mut urx) = Session::start(config(
        "fleet-updated-stn-0001",
        "127.0.0.1",
        &broker,
        tls(),
    ));
    connected(&mut urx).await;
    let (reporter, mut rrx) = Session::start(config(
        "fleet-reporterd-stn-0001",
        "127.0.0.1",
        &broker,
        tls(),
    ));
    connected(&mut rrx).await;
    // The updater's first connection is still the one it has: its publish goes out on it.
    updated
        .publish("fleet/v1/devices/stn-0001/events", "from-updated", false)
        .await
        .expect("publish");
    reporter
        .publish("fleet/v1/devices/stn-0001/health", "from-reporter", false)
        .await
        .expect("publish");
    let mut got = [next_message(&mut orx).await, next_message(&mut orx).await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(
        got.iter()
            .map(|m| (m.topic.as_str(), &m.payload[..]))
            .collect::<Vec<_>>(),
        vec![
            ("fleet/v1/devices/stn-0001/events", &b"from-updated"[..]),
            ("fleet/v1/devices/stn-0001/health", &b"from-reporter"[..]),
        ]
    );
    let connects = |s: &Session| {
        s.stats()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(
        (connects(&updated), connects(&reporter)),
        (1, 1),
        "a session was displaced and connected again"
    );
}

/// What the distinct client ids avoid: a second connection with the same client id makes the
/// broker close the first session (MQTT 3.1.1, 3.1.4), which then reconnects and displaces the
/// other in turn.
#[tokio::test]
async fn same_client_id_displaces_the_older_session() {
    let pki = TestPki::generate().expect("pki");
    let broker = Mosquitto::start_tls(&pki).expect("broker");
    let tls = || pki.tls_config("stn-0001").expect("station");
    let (_first, mut frx) = Session::start(config("stn-0001", "127.0.0.1", &broker, tls()));
    connected(&mut frx).await;
    let (_second, mut srx) = Session::start(config("stn-0001", "127.0.0.1", &broker, tls()));
    connected(&mut srx).await;
    let reason = refused(&mut frx).await;
    assert!(!reason.is_empty(), "the first session is dropped");
}
