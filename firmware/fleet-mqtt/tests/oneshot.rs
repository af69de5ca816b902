//! A short-lived client's session against a real mosquitto: the first connection fails fast,
//! and the broker's acknowledgements are counted.
use std::time::Duration;

use fleet_mqtt::{ConnectError, Session, SessionConfig, SessionEvent};
use fleet_testkit::Mosquitto;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_broker_that_is_not_there_fails_the_first_connection_at_once() {
    let port = fleet_testkit::listen::free_port().expect("port");
    let started = tokio::time::Instant::now();
    let err = Session::start_connected(SessionConfig::new("cli", "127.0.0.1", port), T)
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(err, ConnectError::Refused { port: p, .. } if p == port),
        "{err:?}"
    );
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    // Well before the timeout: no retry with backoff.
    assert!(started.elapsed() < T, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn publishes_and_subscriptions_are_counted_as_the_broker_acknowledges_them() {
    let broker = Mosquitto::start().expect("broker");
    let config = SessionConfig::new("cli", broker.host(), broker.port());
    let (session, mut events) = Session::start_connected(config, T).await.expect("connect");
    assert!(session.is_connected());
    let mut acks = session.acks();
    assert_eq!(acks.borrow().published, 0);

    session
        .subscribe_many(&["t/a".to_owned(), "t/b".to_owned()])
        .await
        .expect("subscribe");
    timeout(T, acks.wait_for(|a| a.subscribed == 1))
        .await
        .expect("suback in time")
        .expect("session alive");
    for i in 0..5u8 {
        session
            .publish("t/a", vec![i], false)
            .await
            .expect("publish");
    }
    let now = *timeout(T, acks.wait_for(|a| a.published == 5))
        .await
        .expect("pubacks in time")
        .expect("session alive");
    assert_eq!(now.subscribed, 1, "one SUBACK for the one request");
    // The publishes came back through the subscription.
    let mut got = Vec::new();
    while got.len() < 5 {
        match timeout(T, events.recv()).await.expect("message in time") {
            Some(SessionEvent::Message(m)) => got.push(m.payload[0]),
            Some(_) => {}
            None => panic!("session ended"),
        }
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    session.disconnect().await.expect("disconnect");
    timeout(T, session.join()).await.expect("driver ends");
}
