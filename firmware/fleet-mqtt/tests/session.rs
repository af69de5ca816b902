//! The session against a real mosquitto: subscribe, publish, last will, reconnect after a broker
//! restart with resubscription.
use std::time::Duration;

use fleet_mqtt::{Backoff, Session, SessionConfig, SessionEvent, Will};
use fleet_testkit::Mosquitto;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

fn config(id: &str, broker: &Mosquitto) -> SessionConfig {
    let mut c = SessionConfig::new(id, broker.host(), broker.port());
    c.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(400),
    };
    c
}

async fn next_message(rx: &mut Receiver<SessionEvent>) -> fleet_mqtt::Message {
    loop {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(SessionEvent::Message(m))) => return m,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("session ended"),
            Err(_) => panic!("no message within 10 s"),
        }
    }
}

async fn connected(rx: &mut Receiver<SessionEvent>) {
    loop {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(SessionEvent::Connected)) => return,
            Ok(Some(_)) => continue,
            other => panic!("not connected: {other:?}"),
        }
    }
}

#[tokio::test]
async fn retained_messages_reach_a_subscriber_and_the_will_fires_on_abort() {
    let broker = Mosquitto::start().expect("broker");
    let (watcher, mut wrx) = Session::start(config("watcher", &broker));
    connected(&mut wrx).await;
    watcher.subscribe("t/presence").await.expect("subscribe");

    let mut c = config("station", &broker);
    c.will = Some(Will {
        topic: "t/presence".into(),
        payload: b"offline".to_vec(),
        retain: true,
    });
    let (station, mut srx) = Session::start(c);
    connected(&mut srx).await;
    station
        .publish("t/presence", "online", true)
        .await
        .expect("publish");
    let m = next_message(&mut wrx).await;
    assert_eq!(&m.payload[..], b"online");

    station.abort();
    let m = next_message(&mut wrx).await;
    assert_eq!(&m.payload[..], b"offline");
}

#[tokio::test]
async fn session_reconnects_after_a_broker_restart_and_resubscribes() {
    let mut broker = Mosquitto::start().expect("broker");
    let (s, mut rx) = Session::start(config("resub", &broker));
    connected(&mut rx).await;
    s.subscribe("t/x").await.expect("subscribe");
    s.publish("t/x", "one", false).await.expect("publish");
    assert_eq!(&next_message(&mut rx).await.payload[..], b"one");

    broker.stop().expect("stop");
    // Connection lost, then refused while the broker is down: backoff between attempts.
    let mut disconnects = 0;
    while disconnects < 2 {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(SessionEvent::Disconnected { retry_in, .. })) => {
                assert!(retry_in <= Duration::from_millis(400));
                disconnects += 1;
            }
            Ok(Some(_)) => {}
            other => panic!("expected a disconnect: {other:?}"),
        }
    }
    assert!(!s.is_connected());
    broker.start_again().expect("start");
    connected(&mut rx).await;
    // The retained message published by another client after the restart arrives through the
    // automatic resubscription.
    let (p, mut prx) = Session::start(config("pub", &broker));
    connected(&mut prx).await;
    p.publish("t/x", "two", true).await.expect("publish");
    assert_eq!(&next_message(&mut rx).await.payload[..], b"two");
    assert!(
        s.stats()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
}

#[tokio::test]
async fn a_message_larger_than_a_chunk_limit_is_carried_whole() {
    let broker = Mosquitto::start().expect("broker");
    let (s, mut rx) = Session::start(config("big", &broker));
    connected(&mut rx).await;
    s.subscribe("t/big").await.expect("subscribe");
    let payload = vec![7u8; 1024 * 1024];
    s.publish("t/big", payload.clone(), false)
        .await
        .expect("publish");
    assert_eq!(next_message(&mut rx).await.payload.len(), payload.len());
}

#[tokio::test]
async fn a_message_over_its_protocol_limit_but_under_the_ceiling_reaches_the_owner() {
    // The owner (a station) refuses it with its own code; the session must carry it whole
    // whatever the broker allows, instead of dropping the connection.
    let broker = Mosquitto::start().expect("broker");
    let (s, mut rx) = Session::start(config("ceiling", &broker));
    connected(&mut rx).await;
    s.subscribe("t/huge").await.expect("subscribe");
    let payload = vec![b' '; 2 * 1024 * 1024 + 1];
    s.publish("t/huge", payload.clone(), true)
        .await
        .expect("publish");
    assert_eq!(next_message(&mut rx).await.payload.len(), payload.len());
    assert!(s.is_connected());
    assert!(fleet_mqtt::TRANSPORT_CEILING > payload.len() + 64);
}

#[tokio::test]
async fn repeated_drops_right_after_connecting_grow_the_backoff() {
    // A packet above the transport ceiling comes again after every connect and drops the
    // connection at once: each of these counts as a failure, so the delay doubles instead of
    // starting from the initial one every time.
    let broker = Mosquitto::start().expect("broker");
    let (p, mut prx) = Session::start(config("publisher", &broker));
    connected(&mut prx).await;
    p.publish("t/too-big", vec![b'x'; 8 * 1024], true)
        .await
        .expect("publish");

    let mut c = config("small-ceiling", &broker);
    c.limits.max_packet_bytes = 1024;
    // No skip time: the culprit topic is subscribed again at every connect, as a packet whose
    // topic cannot be told (a live message) would come again.
    c.limits.oversize_skip_initial = Duration::ZERO;
    c.limits.oversize_skip_max = Duration::ZERO;
    c.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_secs(5),
    };
    let (s, mut rx) = Session::start(c);
    s.subscribe("t/too-big").await.expect("subscribe");
    let mut delays = Vec::new();
    let mut reasons = Vec::new();
    while delays.len() < 6 {
        match timeout(Duration::from_secs(20), rx.recv()).await {
            Ok(Some(SessionEvent::Disconnected { reason, retry_in })) => {
                delays.push(retry_in);
                reasons.push(reason);
            }
            Ok(Some(SessionEvent::Message(m))) => panic!("an oversized message got through: {m:?}"),
            Ok(Some(_)) => {}
            other => panic!("expected a disconnect: {other:?}"),
        }
    }
    // Failure n waits between half and all of initial * 2^(n-1): the sixth at least 320 ms,
    // above anything the first could wait (20 ms).
    assert!(delays[5] >= Duration::from_millis(320), "{delays:?}");
    assert!(delays[0] <= Duration::from_millis(20), "{delays:?}");
    for (i, d) in delays.iter().enumerate().skip(1) {
        assert!(*d >= Duration::from_millis(10) * (1 << i), "{delays:?}");
    }
    assert!(
        reasons[0].contains("above the transport ceiling of 1024 bytes"),
        "{reasons:?}"
    );
    assert!(
        s.stats()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5
    );
}

#[tokio::test]
async fn a_topic_whose_retained_message_is_above_the_ceiling_is_skipped_and_tried_again_later() {
    let broker = Mosquitto::start().expect("broker");
    let (p, mut prx) = Session::start(config("publisher", &broker));
    connected(&mut prx).await;
    p.publish("t/a", "a", true).await.expect("publish");
    p.publish("t/big", vec![b'x'; 8 * 1024], true)
        .await
        .expect("publish");
    p.publish("t/c", "c", true).await.expect("publish");

    let mut c = config("skipper", &broker);
    c.limits.max_packet_bytes = 1024;
    c.limits.oversize_skip_initial = Duration::from_millis(500);
    let (s, mut rx) = Session::start(c);
    s.subscribe_many(&["t/a".to_owned(), "t/big".to_owned(), "t/c".to_owned()])
        .await
        .expect("subscribe");
    // The other topics' messages arrive (again after the one drop) and the session settles;
    // the owner is told which topic is skipped, before the drop's `Disconnected`.
    let mut got = std::collections::BTreeSet::new();
    let mut told = Vec::new();
    let mut disconnected_after_told = false;
    while got.len() < 2 || !disconnected_after_told {
        match timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some(SessionEvent::Message(m))) => {
                assert_ne!(m.topic, "t/big");
                got.insert(m.topic);
            }
            Ok(Some(SessionEvent::TopicSkipped {
                topic,
                size,
                strikes,
                retry_in,
            })) => told.push((topic, size, strikes, retry_in)),
            Ok(Some(SessionEvent::Disconnected { .. })) => {
                assert_eq!(told.len(), 1, "the skip is told before the drop");
                disconnected_after_told = true;
            }
            Ok(Some(SessionEvent::Connected)) => {}
            other => panic!("session ended or stalled: {other:?}"),
        }
    }
    assert_eq!(told.len(), 1, "{told:?}");
    let (topic, size, strikes, retry_in) = &told[0];
    assert_eq!(topic, "t/big");
    assert!(*size > 8 * 1024);
    assert_eq!(*strikes, 1);
    assert_eq!(*retry_in, Duration::from_millis(500));
    let skipped = s.skipped();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].topic, "t/big");
    assert!(skipped[0].size > 8 * 1024);
    assert!(s.is_connected());

    // Once the operator replaces it, the topic is read again after its skip time.
    p.publish("t/big", "small now", true)
        .await
        .expect("publish");
    let m = loop {
        let m = next_message(&mut rx).await;
        if m.topic == "t/big" {
            break m;
        }
    };
    assert_eq!(&m.payload[..], b"small now");
    // Its burst ends (the end marker's acknowledgement) and the skip is forgotten.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !s.skipped().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the skip is forgotten");
    assert!(
        s.stats()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
            <= 2,
        "one drop, one reconnect"
    );
}
