//! Signed log requests answered by the reporter from real journal files (written by
//! systemd-journal-remote from the export format, read back by journalctl), over the documented
//! broker; unsigned, forged, replayed, expired and other-station requests refused with reasons.
mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{STATION, Station, next_on};
use fleet_core::ids::DeviceId;
use fleet_proto::envelope::{self, Kind};
use fleet_proto::logs::{LogOutcome, LogRefusal, LogReply, LogRequest, decode_reply};
use fleet_testkit::operator::{public_hex, test_key};

fn write_journal(dir: &Path) {
    let mut export = String::new();
    for (i, (unit, prio, msg)) in [
        ("fleet-updated.service", 3, "offer rejected: replayed"),
        ("fleet-recorderd.service", 6, "segment promoted"),
        ("fleet-updated.service", 6, "state published"),
    ]
    .iter()
    .enumerate()
    {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n\
             _BOOT_ID=6c1a0e6fd2ad4b0c9d1f6d0f1c0e2a31\n_SYSTEMD_UNIT={unit}\nPRIORITY={prio}\n\
             MESSAGE={msg}\n\n",
            1_790_000_000_000_000u64 + i as u64 * 1_000_000,
            1000 + i
        ));
    }
    std::fs::create_dir_all(dir).expect("journal dir");
    let src = dir.join("export.txt");
    std::fs::write(&src, export).expect("export");
    let out = std::process::Command::new("/lib/systemd/systemd-journal-remote")
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg(&src)
        .output()
        .expect("systemd-journal-remote (tests/setup.d/36-health.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(src).expect("rm export");
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn request(seq: u64, device: &str, unit: Option<&str>) -> LogRequest {
    LogRequest {
        device_id: DeviceId::new(device).expect("id"),
        sequence: seq,
        issued_at: now_s(),
        expires_at: now_s() + 600,
        unit: unit.map(Into::into),
        lines: 100,
        since_unix_s: None,
    }
}

async fn ask(
    session: &fleet_mqtt::Session,
    events: &mut tokio::sync::mpsc::Receiver<fleet_mqtt::SessionEvent>,
    payload: Vec<u8>,
) -> LogReply {
    session
        .publish(
            &format!("fleet/v1/devices/{STATION}/logs/request"),
            payload,
            false,
        )
        .await
        .expect("publish");
    let topic = format!("fleet/v1/devices/{STATION}/logs/reply");
    decode_reply(&next_on(events, &topic).await).expect("reply decodes")
}

fn refusal(r: &LogReply) -> &LogRefusal {
    match &r.outcome {
        LogOutcome::Refused { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_request_gets_that_units_journal_lines_and_bad_requests_get_reasons() {
    let key = test_key(7);
    let tmp = tempfile::tempdir().expect("tempdir");
    let journal = tmp.path().join("journal");
    write_journal(&journal);
    let mut st = Station::new(
        &[public_hex(&key)],
        &format!("journal-directory = \"{}\"\n", journal.display()),
    );
    // A synchronized clock, so expiry is judged.
    common::put(&st.root(), "run/systemd/timesync/synchronized", "");
    st.start();
    let (session, mut events) = st.operator("op-logs");
    session
        .subscribe(&format!("fleet/v1/devices/{STATION}/logs/reply"))
        .await
        .expect("subscribe");
    // Wait for the reporter to be connected (its first health message).
    session
        .subscribe(&format!("fleet/v1/devices/{STATION}/health"))
        .await
        .expect("subscribe");
    next_on(&mut events, &format!("fleet/v1/devices/{STATION}/health")).await;

    let seal = |r: &LogRequest| envelope::seal_json(Kind::LogRequest, r, &key).expect("seal");

    // Good: only the updater's lines, oldest first, in one last page.
    let r = ask(
        &session,
        &mut events,
        seal(&request(10, STATION, Some("fleet-updated.service"))),
    )
    .await;
    assert_eq!(r.sequence, Some(10));
    let LogOutcome::Lines {
        page,
        last,
        entries,
    } = &r.outcome
    else {
        panic!("lines expected: {r:?}\n{}", st.log());
    };
    assert_eq!((*page, *last), (0, true));
    let msgs: Vec<&str> = entries.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["offer rejected: replayed", "state published"]);
    assert_eq!(entries[0].priority, 3);
    assert_eq!(entries[0].unit.as_deref(), Some("fleet-updated.service"));

    // Replayed: the same sequence again.
    let r = ask(&session, &mut events, seal(&request(10, STATION, None))).await;
    assert_eq!(
        refusal(&r),
        &LogRefusal::Replayed {
            sequence: 10,
            last: 10
        }
    );

    // Unsigned: the bare request JSON.
    let bare = serde_json::to_vec(&request(11, STATION, None)).expect("json");
    let r = ask(&session, &mut events, bare).await;
    assert!(matches!(refusal(&r), LogRefusal::Malformed { .. }), "{r:?}");

    // Signed by a key the station does not trust.
    let other = envelope::seal_json(Kind::LogRequest, &request(12, STATION, None), &test_key(9))
        .expect("seal");
    let r = ask(&session, &mut events, other).await;
    assert!(
        matches!(refusal(&r), LogRefusal::UnknownKey { .. }),
        "{r:?}"
    );

    // Another station's request, published on this station's topic.
    let r = ask(&session, &mut events, seal(&request(13, "stn-0099", None))).await;
    assert!(
        matches!(refusal(&r), LogRefusal::NotForThisStation { .. }),
        "{r:?}"
    );

    // Expired by the station's trusted clock.
    let mut old = request(14, STATION, None);
    old.issued_at = now_s() - 1200;
    old.expires_at = now_s() - 600;
    let r = ask(&session, &mut events, seal(&old)).await;
    assert!(matches!(refusal(&r), LogRefusal::Expired { .. }), "{r:?}");

    // A unit that would be an option to journalctl.
    let mut sneaky = request(15, STATION, None);
    sneaky.unit = Some("--directory=/etc".into());
    let r = ask(&session, &mut events, seal(&sneaky)).await;
    assert!(matches!(refusal(&r), LogRefusal::Invalid { .. }), "{r:?}");

    // Every unit, after the refusals (which never advanced the sequence).
    let r = ask(&session, &mut events, seal(&request(16, STATION, None))).await;
    let LogOutcome::Lines { entries, .. } = &r.outcome else {
        panic!("lines expected: {r:?}");
    };
    assert_eq!(entries.len(), 3);

    // A restart remembers the last sequence answered: the same request is a replay.
    st.restart();
    next_on(&mut events, &format!("fleet/v1/devices/{STATION}/health")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = ask(&session, &mut events, seal(&request(16, STATION, None))).await;
    assert_eq!(
        refusal(&r),
        &LogRefusal::Replayed {
            sequence: 16,
            last: 16
        }
    );
}
