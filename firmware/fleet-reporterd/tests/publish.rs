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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uploaders_backlog_and_parked_recordings_reach_the_health_message() {
    use std::os::unix::fs::PermissionsExt as _;
    let run = tempfile::tempdir().expect("tempdir");
    let status_path = run.path().join("status.json");
    let mut st = Station::new(
        &[],
        &format!("uploader-status = \"{}\"\n", status_path.display()),
    );
    st.start();
    let (session, mut events) = st.operator("op-upload");
    session
        .subscribe(fleet_proto::topic::filter::ALL_HEALTH)
        .await
        .expect("subscribe");
    let first = next_health(&mut events).await;
    assert_eq!(first.uploader, None, "no uploader running: no part");

    // What fleet-uploaderd writes when recordings wait and two were parked.
    let status = fleet_uploaderd::status::Status {
        state: fleet_uploaderd::status::State::Waiting,
        wait_reason: Some("link-backoff".into()),
        queue_recordings: 7,
        queue_bytes: 7_000_000,
        parked: 2,
        failures_by_reason: [("http-503".to_owned(), 4)].into_iter().collect(),
        last_failure: Some(fleet_uploaderd::status::LastFailure {
            reason: "http-503".into(),
            message: "Service Unavailable".into(),
            at_unix_s: None,
        }),
        ..fleet_uploaderd::status::Status::default()
    };
    fleet_uploaderd::status::write(&status_path, &status).expect("write status");
    let mode = std::fs::metadata(&status_path)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "readable by the reporter's user");
    let changed = loop {
        let h = next_health(&mut events).await;
        if h.uploader.is_some() {
            break h;
        }
    };
    let u = changed.uploader.as_ref().expect("uploader part");
    assert_eq!(
        (u.state.as_str(), u.queue_recordings, u.parked),
        ("waiting", 7, 2)
    );
    assert_eq!(u.last_failure_reason.as_deref(), Some("http-503"));
    assert_eq!(changed.v, health::HEALTH_VERSION);
    let problems = decide_problems(&changed.signals(Some(0)), &ProblemPolicy::default());
    assert!(problems.contains(&Problem::UploadsParked), "{problems:?}");
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
