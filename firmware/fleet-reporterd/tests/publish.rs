//! The reporter binary against the documented broker (TLS, client certificates, the ACL in
//! docs/mosquitto/) with a fake /proc, /sys and /run tree: its retained health message reaches
//! the operator, names a silent microphone, and a recorder change goes out before the heartbeat.
mod common;

use std::process::Command;

use common::{STATION, Station, next_on, recorder_status};
use fleet_core::health::{Problem, ProblemPolicy, RecorderState, decide_problems};
use fleet_proto::health::{self, Health};

async fn next_health(events: &mut tokio::sync::mpsc::Receiver<fleet_mqtt::SessionEvent>) -> Health {
    let topic = format!("fleet/v1/devices/{STATION}/health");
    health::decode(&next_on(events, &topic).await).expect("the reporter's message decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reporter_publishes_retained_health_over_tls_and_a_recorder_change_at_once() {
    let mut st = Station::new(&[], "");
    let check = Command::new(env!("CARGO_BIN_EXE_fleet-reporterd"))
        .arg("--config")
        .arg(&st.config)
        .arg("--check-config")
        .output()
        .expect("run --check-config");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    st.start();

    let (session, mut events) = st.operator("op-health");
    session
        .subscribe(fleet_proto::topic::filter::ALL_HEALTH)
        .await
        .expect("subscribe");
    let first = next_health(&mut events).await;
    assert_eq!(first.device_id.as_str(), STATION);
    assert_eq!(first.recorder.state, RecorderState::Recording);
    assert_eq!(
        first.system.version,
        Some("1.3.2".parse().expect("version"))
    );
    assert_eq!(first.system.uptime_s, 1234);
    assert_eq!(first.system.cpu_temp_c, Some(51.0));
    assert!(!first.clock.trusted, "no timesync flag: untrusted");
    assert_eq!(first.at.wall_unix_s, None);
    let problems = decide_problems(&first.signals(Some(0)), &ProblemPolicy::default());
    assert!(
        problems.contains(&Problem::SilentMicrophone),
        "{problems:?}"
    );
    assert!(
        problems.contains(&Problem::ClockUnsynchronized),
        "{problems:?}"
    );

    // The recorder loses its microphone: the change goes out long before the heartbeat.
    std::fs::write(st.status_file(), recorder_status("missing")).expect("status");
    let changed = loop {
        let h = next_health(&mut events).await;
        if h.recorder.state != RecorderState::Recording {
            break h;
        }
    };
    assert_eq!(changed.recorder.state, RecorderState::NoDevice);
    assert!(changed.seq > first.seq);

    // Retained: a late subscriber gets the latest message at once.
    let (late, mut late_events) = st.operator("op-late");
    late.subscribe(&format!("fleet/v1/devices/{STATION}/health"))
        .await
        .expect("subscribe");
    let retained = next_health(&mut late_events).await;
    assert_eq!(
        retained.recorder.state,
        RecorderState::NoDevice,
        "{}",
        st.log()
    );
}

#[test]
fn an_invalid_configuration_exits_2_naming_the_key() {
    let st = Station::new(&[], "");
    let text = std::fs::read_to_string(&st.config).expect("config");
    std::fs::write(
        &st.config,
        text.replace("heartbeat-secs = 600", "heartbeat-secs = 1"),
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-reporterd"))
        .arg("--config")
        .arg(&st.config)
        .arg("--check-config")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("heartbeat-secs: must be 60..=86400"), "{err}");
}
