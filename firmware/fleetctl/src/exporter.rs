//! `fleetctl exporter --listen ADDR`: the fleet's health as Prometheus metrics, read from the
//! broker's retained messages (state, presence, health) at every scrape, so the exporter holds
//! no state of its own and any number of them can run.
//!
//! Every metric is a gauge labelled with `station` (and `device` for per-microphone and
//! per-storage figures); `docs/reference/fleetctl.md` lists them, and
//! `docs/grafana/fleet-health.json` is a dashboard over them.
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::health::{Problem, RecorderState};
use fleet_proto::Limits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::connection::BrokerAddr;
use crate::status::{Heard, StationRow};

/// Largest request head read, in bytes.
const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// Scrapes served at once (each reads the broker).
const MAX_CONCURRENT: usize = 4;
/// A client that sends its request slower than this is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Prometheus label value escaping: backslash, double quote and newline.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out {
    text: String,
}

impl Out {
    fn help(&mut self, name: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} gauge");
    }
    fn put(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let l: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let _ = writeln!(self.text, "{name}{{{}}} {value}", l.join(","));
    }
}

/// An f32 as the f64 of its shortest decimal form (48.3, not 48.29999923706055).
fn short(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

fn b(x: bool) -> f64 {
    if x { 1.0 } else { 0.0 }
}

/// The metrics text (Prometheus exposition format 0.0.4) for these rows.
#[must_use]
pub fn render(rows: &[StationRow]) -> String {
    let mut o = Out {
        text: String::new(),
    };
    o.help(
        "fleet_stations",
        "Stations with a retained state, presence or health message.",
    );
    let _ = writeln!(o.text, "fleet_stations {}", rows.len());
    o.help(
        "fleet_stations_with_problems",
        "Stations with at least one problem (fleet_core::health::decide_problems).",
    );
    let _ = writeln!(
        o.text,
        "fleet_stations_with_problems {}",
        rows.iter().filter(|r| !r.problems.is_empty()).count()
    );

    o.help(
        "fleet_station_up",
        "1 when the station was heard from recently (status heard = ok).",
    );
    for r in rows {
        o.put(
            "fleet_station_up",
            &[("station", r.device_id.as_str())],
            b(r.heard == Heard::Recently),
        );
    }
    o.help(
        "fleet_station_problem",
        "1 while the station has this problem.",
    );
    for r in rows {
        for p in Problem::ALL {
            o.put(
                "fleet_station_problem",
                &[("station", r.device_id.as_str()), ("problem", p.as_str())],
                b(r.problems.contains(&p)),
            );
        }
    }
    o.help(
        "fleet_station_info",
        "Always 1: the station's version and booted slot as labels.",
    );
    for r in rows {
        if let Some(s) = &r.state {
            o.put(
                "fleet_station_info",
                &[
                    ("station", r.device_id.as_str()),
                    ("version", &s.version.to_string()),
                    ("slot", &crate::status::name_of(&s.booted)),
                    ("phase", &crate::status::name_of(&s.phase)),
                ],
                1.0,
            );
        }
    }
    let healthy: Vec<_> = rows
        .iter()
        .filter_map(|r| r.health.as_ref().map(|h| (r, h)))
        .collect();
    o.help(
        "fleet_health_age_seconds",
        "Age of the station's health message (trusted clocks only).",
    );
    for (r, _) in &healthy {
        if let Some(a) = r.health_age_s {
            o.put(
                "fleet_health_age_seconds",
                &[("station", r.device_id.as_str())],
                a as f64,
            );
        }
    }
    o.help(
        "fleet_recorder_state",
        "1 for the recorder's current state.",
    );
    for (r, h) in &healthy {
        for s in [
            RecorderState::Recording,
            RecorderState::Idle,
            RecorderState::NoDevice,
            RecorderState::Stalled,
            RecorderState::Error,
            RecorderState::NotRunning,
        ] {
            o.put(
                "fleet_recorder_state",
                &[("station", r.device_id.as_str()), ("state", s.as_str())],
                b(h.recorder.state == s),
            );
        }
    }
    type DevFig = fn(&fleet_proto::health::DeviceHealth) -> Option<f64>;
    let per_device: [(&str, &str, DevFig); 8] = [
        (
            "fleet_microphone_rms_dbfs",
            "RMS level of the last segment, dBFS.",
            |d| d.audio.map(|a| short(a.rms_dbfs)),
        ),
        (
            "fleet_microphone_peak_dbfs",
            "Peak level of the last segment, dBFS.",
            |d| d.audio.map(|a| short(a.peak_dbfs)),
        ),
        (
            "fleet_microphone_clipped_ratio",
            "Fraction of clipped samples in the last segment.",
            |d| d.audio.map(|a| short(a.clipped_fraction)),
        ),
        (
            "fleet_microphone_dc_offset_ratio",
            "Mean sample of the last segment, fraction of full scale.",
            |d| d.audio.map(|a| short(a.dc_offset)),
        ),
        (
            "fleet_microphone_flat",
            "1 when the last segment was silent or a flat line.",
            |d| d.audio.map(|a| b(a.flat)),
        ),
        (
            "fleet_recorder_segments_24h",
            "Segments written in the last 24 h.",
            |d| Some(d.segments_24h as f64),
        ),
        (
            "fleet_recorder_gaps_24h",
            "Gaps in the recording in the last 24 h.",
            |d| Some(d.gaps_24h as f64),
        ),
        (
            "fleet_recorder_xruns_24h",
            "Capture overruns in the last 24 h.",
            |d| Some(d.xruns_24h as f64),
        ),
    ];
    for (name, help, f) in per_device {
        o.help(name, help);
        for (r, h) in &healthy {
            for d in &h.recorder.devices {
                if let Some(v) = f(d) {
                    o.put(
                        name,
                        &[("station", r.device_id.as_str()), ("device", &d.id)],
                        v,
                    );
                }
            }
        }
    }
    type StFig = fn(&fleet_proto::health::Health) -> Option<f64>;
    let per_station: [(&str, &str, StFig); 18] = [
        ("fleet_disk_used_ratio", "Data disk used, 0..1.", |h| {
            h.retention
                .as_ref()
                .map(|r| short(r.disk_used_percent) / 100.0)
        }),
        (
            "fleet_retention_panic",
            "1 while retention is at its panic tier.",
            |h| h.retention.as_ref().map(|r| b(r.tier == "panic")),
        ),
        ("fleet_recordings_kept", "Recordings on the station.", |h| {
            h.retention.as_ref().map(|r| r.kept_count as f64)
        }),
        (
            "fleet_recordings_kept_bytes",
            "Bytes of recordings on the station.",
            |h| h.retention.as_ref().map(|r| r.kept_bytes as f64),
        ),
        (
            "fleet_recordings_not_uploaded",
            "Recordings not uploaded yet.",
            |h| h.retention.as_ref().map(|r| r.not_uploaded_count as f64),
        ),
        (
            "fleet_recordings_deleted_24h",
            "Recordings deleted by retention in the last 24 h.",
            |h| h.retention.as_ref().map(|r| r.deleted_24h as f64),
        ),
        (
            "fleet_upload_queue_recordings",
            "Recordings waiting for the uploader.",
            |h| h.uploader.as_ref().map(|u| u.queue_recordings as f64),
        ),
        (
            "fleet_upload_queue_bytes",
            "Bytes of recordings waiting for the uploader.",
            |h| h.uploader.as_ref().map(|u| u.queue_bytes as f64),
        ),
        (
            "fleet_upload_parked",
            "Recordings the uploader set aside after repeated failures.",
            |h| h.uploader.as_ref().map(|u| u.parked as f64),
        ),
        (
            "fleet_upload_last_success_timestamp_seconds",
            "When the last upload was confirmed (Unix time).",
            |h| {
                h.uploader
                    .as_ref()
                    .and_then(|u| u.last_success_unix_s)
                    .map(|t| t as f64)
            },
        ),
        ("fleet_uptime_seconds", "Time since boot.", |h| {
            Some(h.system.uptime_s as f64)
        }),
        ("fleet_load1", "1-minute load average.", |h| {
            Some(short(h.system.load[0]))
        }),
        ("fleet_memory_available_bytes", "Available memory.", |h| {
            Some(h.system.mem_available_kib as f64 * 1024.0)
        }),
        ("fleet_cpu_temperature_celsius", "CPU temperature.", |h| {
            h.system.cpu_temp_c.map(short)
        }),
        (
            "fleet_under_voltage",
            "1 when under-voltage happened since boot (or now).",
            |h| {
                h.system
                    .throttling
                    .map(|t| b(t.under_voltage_now || t.under_voltage_since_boot))
            },
        ),
        (
            "fleet_throttled",
            "1 when the CPU was throttled since boot (or now).",
            |h| {
                h.system
                    .throttling
                    .map(|t| b(t.throttled_now || t.throttled_since_boot))
            },
        ),
        (
            "fleet_clock_trusted",
            "1 while the station trusts its clock.",
            |h| Some(b(h.clock.trusted)),
        ),
        (
            "fleet_clock_max_offset_seconds",
            "Bound on the station clock's error.",
            |h| h.clock.max_offset_ms.map(|m| m as f64 / 1000.0),
        ),
    ];
    for (name, help, f) in per_station {
        o.help(name, help);
        for (r, h) in &healthy {
            if let Some(v) = f(h) {
                o.put(name, &[("station", r.device_id.as_str())], v);
            }
        }
    }
    o.help(
        "fleet_storage_wear_ratio",
        "Share of the storage's rated life used (may exceed 1).",
    );
    for (r, h) in &healthy {
        for s in &h.system.storage {
            if let Some(w) = s.wear_percent {
                o.put(
                    "fleet_storage_wear_ratio",
                    &[("station", r.device_id.as_str()), ("device", &s.device)],
                    f64::from(w) / 100.0,
                );
            }
        }
    }
    o.text
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Each scrape reads the
/// broker's retained messages.
pub async fn serve(
    listener: TcpListener,
    broker: BrokerAddr,
    stale_after: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let broker = Arc::new(broker);
    loop {
        let (stream, peer) = listener.accept().await?;
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return Ok(());
        };
        let broker = broker.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &broker, stale_after).await {
                tracing::warn!(peer = %peer, error = %e, "scrape failed");
            }
            drop(permit);
        });
    }
}

async fn answer(
    mut s: TcpStream,
    broker: &BrokerAddr,
    stale_after: Duration,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_BYTES {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if read.is_err() {
        return Ok(());
    }
    let line = String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or_default())
        .trim()
        .to_string();
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method != "GET" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        )
    } else if path != "/metrics" && !path.starts_with("/metrics?") {
        (
            "404 Not Found",
            "text/plain",
            "metrics are at /metrics\n".to_string(),
        )
    } else {
        match crate::status::read(broker, stale_after, &Limits::DEFAULT).await {
            Ok(rows) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                render(&rows),
            ),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain",
                format!("unable to read the broker: {e}\n"),
            ),
        }
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(resp.as_bytes()).await?;
    s.write_all(body.as_bytes()).await?;
    s.shutdown().await
}

/// Binds `addr` (refusing nothing: put it behind your network's rules).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::rows;
    use fleet_core::ids::{DeviceId, Version};

    fn sample_rows() -> Vec<StationRow> {
        let v = Version::new(1, 0, 0);
        let now = 1_790_000_000;
        let mut msgs = Vec::new();
        for (id, silent) in [("stn-a", false), ("stn-b", true)] {
            let id = DeviceId::new(id).expect("id");
            let mut h = crate::health::simulated(&id, 1, &v, silent, now);
            if silent {
                h.recorder.devices[0].id = "mic\"0\\x".into();
            }
            h.system.storage = vec![fleet_proto::health::StorageHealth {
                device: "mmcblk0".into(),
                wear_percent: Some(20),
                warning: false,
            }];
            msgs.push(crate::connection::Message {
                topic: fleet_proto::topic::device_health(&id),
                payload: fleet_proto::health::encode(&h).expect("encode"),
                retain: true,
            });
        }
        rows(&msgs, Duration::from_secs(600), now, &Limits::DEFAULT)
    }

    #[test]
    fn every_metric_the_grafana_dashboard_queries_is_exported() {
        let text = render(&sample_rows());
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/grafana/fleet-health.json");
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard"))
                .expect("the dashboard is JSON");
        let mut exprs = Vec::new();
        fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match (k.as_str(), v) {
                            ("expr" | "definition", serde_json::Value::String(s)) => {
                                out.push(s.clone());
                            }
                            _ => walk(v, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&dash, &mut exprs);
        assert!(exprs.len() > 10);
        for e in exprs {
            for name in e
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|t| t.starts_with("fleet_"))
            {
                assert!(
                    text.contains(&format!("# TYPE {name} gauge")),
                    "dashboard queries {name}, which the exporter does not export"
                );
            }
        }
    }

    #[test]
    fn label_values_are_escaped_and_the_format_is_prometheus_text() {
        let text = render(&sample_rows());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(series.starts_with("fleet_"), "{line}");
        }
        assert!(
            text.contains("fleet_storage_wear_ratio{station=\"stn-a\",device=\"mmcblk0\"} 0.2")
        );
        assert!(
            text.contains("fleet_microphone_flat{station=\"stn-b\",device=\"mic\\\"0\\\\x\"} 1"),
            "{text}"
        );
    }
}
