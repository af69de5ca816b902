//! `fleetctl logs`' client side against a real mosquitto: the request it signs opens and is
//! admitted by the station's rule, a many-page answer comes back whole and in order, and a
//! refusal is reported with its reason. The station side here is a minimal responder made of
//! `fleet_proto::logs` (the reporter's own tests run the real daemon against a real journal).
use std::time::Duration;

use fleet_core::ids::DeviceId;
use fleet_core::time::Now;
use fleet_proto::envelope::{self, Kind, TrustedKeys};
use fleet_proto::logs::{self, LogEntry, LogRefusal, LogRequest};
use fleet_proto::{Limits, topic};
use fleet_testkit::Mosquitto;
use fleetctl::connection::{BrokerAddr, Connection};
use fleetctl::logs::{Ask, LogsError, fetch};

/// Answers every request to `id` once: lines for the first, `replayed` after.
async fn responder(addr: BrokerAddr, id: DeviceId, trusted: TrustedKeys) {
    let mut conn = Connection::open(&addr, "station", Duration::from_secs(10))
        .await
        .expect("connect");
    conn.subscribe(&[topic::device_log_request(&id)], Duration::from_secs(10))
        .await
        .expect("subscribe");
    let mut last = None;
    loop {
        let Ok(Some(m)) = conn.next_message(Duration::from_secs(30)).await else {
            return;
        };
        let req = envelope::open_json::<LogRequest>(
            &m.payload,
            Kind::LogRequest,
            &trusted,
            &Limits::DEFAULT,
        )
        .expect("fleetctl's request opens with the operator's key")
        .value;
        let admitted = logs::admit(
            &req,
            &id,
            last,
            Now::trusted(0, fleetctl::rollout::unix_now()),
        )
        .and_then(|()| {
            if req.unit.as_deref() == Some("secret.service") {
                Err(LogRefusal::Invalid {
                    detail: "this responder refuses secret.service".into(),
                })
            } else {
                Ok(())
            }
        });
        let pages = match admitted {
            Ok(()) => {
                last = Some(req.sequence);
                let entries = (0..300u64)
                    .map(|i| LogEntry {
                        at_us: 1_790_000_000_000_000 + i,
                        priority: 6,
                        unit: req.unit.clone(),
                        message: format!("{i:04} {}", "x".repeat(500)),
                    })
                    .collect();
                logs::paginate(&id, req.sequence, entries)
            }
            Err(reason) => vec![fleet_proto::payload::encode(&logs::LogReply {
                device_id: id.clone(),
                sequence: Some(req.sequence),
                outcome: logs::LogOutcome::Refused { reason },
            })],
        };
        // Pages in reverse: the client must order them itself.
        for p in pages.into_iter().rev() {
            conn.publish(&topic::device_log_reply(&id), p, false)
                .await
                .expect("reply");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_many_page_answer_arrives_whole_and_a_refusal_names_its_reason() {
    let broker = Mosquitto::start().expect("mosquitto");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let key = fleet_testkit::operator::test_key(3);
    let id = DeviceId::new("stn-1").expect("id");
    let trusted: TrustedKeys = [key.verifying_key()].into_iter().collect();
    let station = tokio::spawn(responder(addr.clone(), id.clone(), trusted));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ask = Ask {
        station: id.clone(),
        unit: Some("fleet-updated.service".into()),
        lines: 300,
        since_unix_s: None,
        wait: Duration::from_secs(20),
    };
    let entries = fetch(&addr, &key, &ask).await.expect("lines");
    assert_eq!(entries.len(), 300);
    for (i, e) in entries.iter().enumerate() {
        assert!(
            e.message.starts_with(&format!("{i:04} ")),
            "line {i} out of order"
        );
        assert_eq!(e.unit.as_deref(), Some("fleet-updated.service"));
    }
    assert!(fleetctl::logs::render(&entries[0]).starts_with("2026-"));

    // The same millisecond sequence cannot come twice from one fleetctl: a request with an
    // older sequence (made by hand) is refused as replayed.
    let old = LogRequest {
        device_id: id.clone(),
        sequence: 1,
        issued_at: fleetctl::rollout::unix_now(),
        expires_at: fleetctl::rollout::unix_now() + 60,
        unit: None,
        lines: 10,
        since_unix_s: None,
    };
    let mut conn = Connection::open(&addr, "op", Duration::from_secs(10))
        .await
        .expect("connect");
    conn.subscribe(&[topic::device_log_reply(&id)], Duration::from_secs(10))
        .await
        .expect("subscribe");
    conn.publish(
        &topic::device_log_request(&id),
        envelope::seal_json(Kind::LogRequest, &old, &key).expect("seal"),
        false,
    )
    .await
    .expect("publish");
    let reply = loop {
        let m = conn
            .next_message(Duration::from_secs(10))
            .await
            .expect("connection")
            .expect("a reply");
        let r = logs::decode_reply(&m.payload).expect("reply");
        if r.sequence == Some(1) {
            break r;
        }
    };
    assert!(matches!(
        reply.outcome,
        logs::LogOutcome::Refused {
            reason: LogRefusal::Replayed { sequence: 1, .. }
        }
    ));
    // fleetctl reports a refusal as an error with the station's reason ...
    let err = fetch(
        &addr,
        &key,
        &Ask {
            unit: Some("secret.service".into()),
            ..ask.clone()
        },
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(
            &err,
            LogsError::Refused {
                reason: LogRefusal::Invalid { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("refuses secret.service"), "{err}");
    // ... and a station that does not answer as such, after the wait.
    let err = fetch(
        &addr,
        &key,
        &Ask {
            station: DeviceId::new("stn-quiet").expect("id"),
            wait: Duration::from_secs(2),
            ..ask
        },
    )
    .await
    .expect_err("nobody answers");
    assert!(matches!(err, LogsError::NoAnswer { .. }), "{err}");
    station.abort();
}
