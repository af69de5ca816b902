//! The connection layer against a real mosquitto and against the embedded rumqttd: retained
//! messages are stored, read back on subscribe, and removed by an empty retained publish.
use std::time::Duration;

use fleet_testkit::Mosquitto;
use fleetctl::connection::{BrokerAddr, Connection, collect_retained};
use fleetctl::embedded::EmbeddedBroker;

const T: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);

async fn retained_round_trip(addr: &BrokerAddr) {
    let mut conn = Connection::open(addr, "test", T).await.expect("connect");
    for i in 0..20u32 {
        let payload = vec![u8::try_from(i).expect("small"); 200_000];
        conn.publish(&format!("fleet/v1/test/r/{i}"), payload, true)
            .await
            .expect("publish");
    }
    conn.close(T).await.expect("close");

    let got = collect_retained(addr, &["fleet/v1/test/r/+".to_owned()], QUIET, 1000)
        .await
        .expect("collect");
    assert_eq!(got.len(), 20, "every retained topic comes back");
    for m in &got {
        let i: u8 = m
            .topic
            .rsplit('/')
            .next()
            .expect("index")
            .parse()
            .expect("n");
        assert_eq!(m.payload.len(), 200_000);
        assert!(m.payload.iter().all(|b| *b == i), "payload of {}", m.topic);
    }

    let mut conn = Connection::open(addr, "test", T).await.expect("connect");
    for i in 0..10u32 {
        conn.publish(&format!("fleet/v1/test/r/{i}"), Vec::new(), true)
            .await
            .expect("clear");
    }
    conn.close(T).await.expect("close");
    let got = collect_retained(addr, &["fleet/v1/test/r/+".to_owned()], QUIET, 1000)
        .await
        .expect("collect");
    assert_eq!(got.len(), 10, "an empty retained publish removes the topic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_round_trip_through_mosquitto() {
    let broker = Mosquitto::start().expect("mosquitto");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    retained_round_trip(&addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_round_trip_through_the_embedded_broker() {
    let broker = EmbeddedBroker::start().expect("embedded broker");
    retained_round_trip(broker.addr()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_reported_with_its_address() {
    let port = fleet_testkit::listen::free_port().expect("port");
    let addr = BrokerAddr {
        host: "127.0.0.1".into(),
        port,
    };
    let err = Connection::open(&addr, "test", Duration::from_secs(3))
        .await
        .expect_err("nothing listens there");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
}
