//! Health views against a real mosquitto: `status` rows and problems, `status --problems`'s
//! exit code, `fleetctl health STATION`, and the Prometheus exporter, scraped over HTTP.
use std::io::{Read as _, Write as _};
use std::process::Command;
use std::time::Duration;

use fleet_core::health::Problem;
use fleet_core::ids::{DeviceId, Version};
use fleet_proto::Limits;
use fleet_testkit::Mosquitto;
use fleetctl::connection::{BrokerAddr, Connection};

/// A broker holding two stations' retained state and health: `stn-ok` healthy, `stn-mute`
/// with a silent microphone.
async fn fleet() -> (Mosquitto, BrokerAddr) {
    let broker = Mosquitto::start().expect("mosquitto");
    let addr = BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let mut conn = Connection::open(&addr, "test-health", Duration::from_secs(10))
        .await
        .expect("connect");
    let v = Version::new(1, 2, 0);
    for (id, silent) in [("stn-ok", false), ("stn-mute", true)] {
        let id = DeviceId::new(id).expect("id");
        let h = fleetctl::health::simulated(&id, 1, &v, silent, fleetctl::rollout::unix_now());
        conn.publish(
            &fleet_proto::topic::device_health(&id),
            fleet_proto::health::encode(&h).expect("encode"),
            true,
        )
        .await
        .expect("publish");
        conn.publish(
            &fleet_proto::topic::device_presence(&id),
            b"online".to_vec(),
            true,
        )
        .await
        .expect("publish");
    }
    conn.close(Duration::from_secs(5)).await.expect("close");
    (broker, addr)
}

fn fleetctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .env_remove("FLEETCTL_LOG")
        .output()
        .expect("run fleetctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_flags_the_silent_microphone_and_problems_exit_three() {
    let (_broker, addr) = fleet().await;
    let rows = fleetctl::status::read(&addr, Duration::from_secs(600), &Limits::DEFAULT)
        .await
        .expect("status");
    let by: std::collections::BTreeMap<&str, &Vec<Problem>> = rows
        .iter()
        .map(|r| (r.device_id.as_str(), &r.problems))
        .collect();
    assert_eq!(by["stn-ok"], &Vec::<Problem>::new());
    assert_eq!(by["stn-mute"], &vec![Problem::SilentMicrophone]);
    let table = fleetctl::status::render_table(&rows);
    assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    assert!(
        table.contains("SILENT") && table.contains("stn-mute: silent-microphone"),
        "{table}"
    );

    let b = format!("{}:{}", addr.host, addr.port);
    let out = fleetctl(&["status", "--broker", &b, "--problems"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("stn-mute") && !text.contains("stn-ok"),
        "{text}"
    );
    let out = fleetctl(&["status", "--broker", &b, "--problems", "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json[0]["problems"][0], "silent-microphone");

    let out = fleetctl(&["health", "--broker", &b, "stn-mute"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("problems: silent-microphone") && text.contains("FLAT"),
        "{text}"
    );
    let out = fleetctl(&["health", "--broker", &b, "stn-none"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has published no health message"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exporter_serves_each_stations_health_as_labelled_gauges() {
    let (_broker, addr) = fleet().await;
    let listener = fleetctl::exporter::bind("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("bind");
    let local = listener.local_addr().expect("addr");
    let server = tokio::spawn(fleetctl::exporter::serve(
        listener,
        addr.clone(),
        Duration::from_secs(600),
    ));
    let body = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(local).expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    })
    .await
    .expect("scrape");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(
        body.contains("Content-Type: text/plain; version=0.0.4"),
        "{body}"
    );
    for want in [
        "fleet_stations 2",
        "fleet_stations_with_problems 1",
        "fleet_station_problem{station=\"stn-mute\",problem=\"silent-microphone\"} 1",
        "fleet_station_problem{station=\"stn-ok\",problem=\"silent-microphone\"} 0",
        "fleet_microphone_flat{station=\"stn-mute\",device=\"mic0\"} 1",
        "fleet_microphone_rms_dbfs{station=\"stn-mute\",device=\"mic0\"} -200",
        "fleet_microphone_rms_dbfs{station=\"stn-ok\",device=\"mic0\"} -48.2",
        "fleet_recorder_state{station=\"stn-ok\",state=\"recording\"} 1",
        "fleet_disk_used_ratio{station=\"stn-ok\"} 0.415",
        "fleet_clock_trusted{station=\"stn-ok\"} 1",
        "fleet_cpu_temperature_celsius{station=\"stn-ok\"} 48.3",
        "# TYPE fleet_under_voltage gauge",
    ] {
        assert!(body.contains(want), "{want} missing from:\n{body}");
    }
    // Anything but GET /metrics is refused.
    let other = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(local).expect("connect");
        s.write_all(b"GET /etc/passwd HTTP/1.1\r\n\r\n")
            .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    })
    .await
    .expect("request");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    server.abort();
}
