//! Health views: the health columns of `status` and the whole message for `fleetctl health
//! STATION`, from the retained `fleet/v1/devices/{id}/health` messages `fleet-reporterd`
//! publishes.
use std::time::Duration;

use fleet_core::health::{Microphone, MicrophonePolicy, RecorderState, judge_microphone};
use fleet_core::ids::DeviceId;
use fleet_proto::health::Health;
use fleet_proto::topic;

use crate::connection::{BrokerAddr, ConnectionError, collect_retained};
use crate::publish::RETAINED_QUIET;
use crate::words::ago;

/// The short health cells of one `status` row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub rec: String,
    pub mic: String,
    pub disk: String,
    pub temp: String,
    pub clock: String,
    pub last_seg: String,
    /// The upload backlog: recordings queued, `P<n>` parked, `off` without a destination.
    pub upload: String,
}

impl Columns {
    /// Cells for a row; `unreadable` when the retained message did not parse. `age_s` is
    /// the message's age, used to age the last segment.
    #[must_use]
    pub fn of(h: Option<&Health>, unreadable: bool, age_s: Option<i64>) -> Self {
        let Some(h) = h else {
            return Self {
                rec: if unreadable { "unreadable" } else { "-" }.into(),
                ..Self::default()
            };
        };
        let rec = match h.recorder.state {
            RecorderState::Recording => "rec".into(),
            RecorderState::Idle => "idle".into(),
            other => other.as_str().to_uppercase(),
        };
        let mic = microphone(h);
        let disk = h
            .retention
            .as_ref()
            .map(|r| {
                let tier = if r.tier == "panic" {
                    " PANIC".to_string()
                } else {
                    String::new()
                };
                format!("{:.0}%{tier}", r.disk_used_percent)
            })
            .unwrap_or_default();
        let temp = h
            .system
            .cpu_temp_c
            .map(|c| format!("{c:.0}C"))
            .unwrap_or_default();
        let clock = match (h.clock.trusted_by, h.clock.trusted) {
            (Some(by), true) => crate::words::name_of(&by),
            _ => "UNSYNC".into(),
        };
        let clock = if h
            .system
            .throttling
            .is_some_and(|t| t.under_voltage_now || t.under_voltage_since_boot)
        {
            format!("{clock} UV")
        } else {
            clock
        };
        // The last segment's age by the station's own clock at the time of the message.
        let last_seg = h
            .recorder
            .devices
            .iter()
            .filter_map(|d| d.last_segment_unix_s)
            .max()
            .and_then(|t| {
                let at = h.at.wall_unix_s?;
                Some(ago(at.saturating_sub(t) + age_s.unwrap_or(0)))
            })
            .unwrap_or_default();
        let upload = h
            .uploader
            .as_ref()
            .map(|u| match (u.state.as_str(), u.parked) {
                ("unconfigured", _) => "off".to_string(),
                (_, 0) => u.queue_recordings.to_string(),
                (_, p) => format!("{} P{p}", u.queue_recordings),
            })
            .unwrap_or_default();
        Self {
            rec,
            mic,
            disk,
            temp,
            clock,
            last_seg,
            upload,
        }
    }
}

fn microphone(h: &Health) -> String {
    let p = MicrophonePolicy::default();
    let verdicts: Vec<Microphone> = h
        .recorder
        .devices
        .iter()
        .map(|d| judge_microphone(d.audio.as_ref(), &p))
        .collect();
    if verdicts.contains(&Microphone::Silent) {
        "SILENT".into()
    } else if verdicts.contains(&Microphone::Clipping) {
        "CLIPS".into()
    } else if verdicts.contains(&Microphone::Ok) {
        "ok".into()
    } else {
        String::new()
    }
}

/// Reads one station's retained health message (`None` when it has none).
pub async fn read_one(
    addr: &BrokerAddr,
    id: &DeviceId,
) -> Result<Option<Result<Health, String>>, ConnectionError> {
    let msgs = collect_retained(addr, &[topic::device_health(id)], RETAINED_QUIET, 4).await?;
    Ok(msgs
        .iter()
        .rev()
        .find(|m| !m.payload.is_empty())
        .map(|m| fleet_proto::health::decode(&m.payload).map_err(|e| e.to_string())))
}

/// The whole message, one fact a line, grouped.
#[must_use]
pub fn render(h: &Health, problems: &[fleet_core::health::Problem]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let at = match h.at.wall_unix_s {
        Some(t) => format!("unix {t}"),
        None => format!(
            "{} after boot (clock untrusted)",
            humantime::format_duration(Duration::from_secs(h.at.monotonic_ms / 1000))
        ),
    };
    let _ = writeln!(
        s,
        "station {}  (health #{}, taken {at})",
        h.device_id, h.seq
    );
    let _ = writeln!(
        s,
        "problems: {}",
        if problems.is_empty() {
            "none".to_string()
        } else {
            problems
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(s, "\nrecorder: {}", h.recorder.state.as_str());
    if let Some(r) = &h.recorder.reason {
        let _ = writeln!(s, "  reason: {r}");
    }
    for d in &h.recorder.devices {
        let _ = writeln!(
            s,
            "  {} ({}): {} {}",
            d.id,
            d.state,
            d.pcm.as_deref().unwrap_or("-"),
            d.format.as_deref().unwrap_or("")
        );
        let _ = writeln!(
            s,
            "    last 24 h: {} segments, {} gaps, {} xruns; last segment at {}",
            d.segments_24h,
            d.gaps_24h,
            d.xruns_24h,
            d.last_segment_unix_s
                .map_or("-".to_string(), |t| format!("unix {t}"))
        );
        if let Some(a) = &d.audio {
            let _ = writeln!(
                s,
                "    audio: rms {:.1} dBFS, peak {:.1} dBFS, clipped {:.4}%, dc {:+.4}{}",
                a.rms_dbfs,
                a.peak_dbfs,
                a.clipped_fraction * 100.0,
                a.dc_offset,
                if a.flat {
                    ", FLAT (silent or dead)"
                } else {
                    ""
                }
            );
        }
    }
    match &h.retention {
        Some(r) => {
            let _ = writeln!(
                s,
                "\nretention: disk {:.1}% used, tier {}, index {}\n  kept {} recordings ({} bytes), {} not uploaded, {} deleted in 24 h",
                r.disk_used_percent,
                r.tier,
                r.index,
                r.kept_count,
                r.kept_bytes,
                r.not_uploaded_count,
                r.deleted_24h
            );
        }
        None => {
            let _ = writeln!(s, "\nretention: no metrics");
        }
    }
    match &h.uploader {
        Some(u) => {
            let _ = writeln!(
                s,
                "\nuploader: {}{}\n  queued {} recordings ({} bytes), {} parked; last success {}",
                u.state,
                u.wait_reason
                    .as_ref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default(),
                u.queue_recordings,
                u.queue_bytes,
                u.parked,
                u.last_success_unix_s
                    .map_or("never".into(), |t| format!("unix {t}"))
            );
            if let Some(r) = &u.last_failure_reason {
                let by: Vec<String> = u
                    .failures_by_reason
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "  last failure: {r}; failures since start: {}",
                    by.join(", ")
                );
            }
        }
        None => {
            let _ = writeln!(s, "\nuploader: none running");
        }
    }
    let y = &h.system;
    let _ = writeln!(
        s,
        "\nsystem: up {}, slot {}, version {}, boot {}",
        humantime::format_duration(Duration::from_secs(y.uptime_s)),
        y.slot.map_or("-".into(), |x| crate::words::name_of(&x)),
        y.version.as_ref().map_or("-".into(), ToString::to_string),
        if y.boot_id.is_empty() {
            "-"
        } else {
            &y.boot_id
        }
    );
    let _ = writeln!(
        s,
        "  load {:.2} {:.2} {:.2}, memory {} of {} MiB available, cpu {}",
        y.load[0],
        y.load[1],
        y.load[2],
        y.mem_available_kib / 1024,
        y.mem_total_kib / 1024,
        y.cpu_temp_c.map_or("-".into(), |c| format!("{c:.1} C"))
    );
    if let Some(t) = &y.throttling {
        let _ = writeln!(
            s,
            "  power: under-voltage now {}, since boot {}; throttled now {}, since boot {}",
            t.under_voltage_now,
            t.under_voltage_since_boot,
            t.throttled_now,
            t.throttled_since_boot
        );
    }
    for d in &y.storage {
        let _ = writeln!(
            s,
            "  storage {}: {} of rated life used{}",
            d.device,
            d.wear_percent.map_or("unknown".into(), |w| format!("{w}%")),
            if d.warning { ", WARNING" } else { "" }
        );
    }
    if y.watchdog_reset {
        let _ = writeln!(s, "  the watchdog reset the station before this boot");
    }
    let c = &h.clock;
    let _ = writeln!(
        s,
        "\nclock: {}{}; synchronized {}, rtc {}, last sync {}{}",
        if c.trusted { "trusted" } else { "UNTRUSTED" },
        c.trusted_by
            .map(|b| format!(" by {}", crate::words::name_of(&b)))
            .or_else(|| c
                .untrusted_because
                .map(|b| format!(" ({})", crate::words::name_of(&b))))
            .unwrap_or_default(),
        c.synchronized.map_or("unknown".into(), |b| b.to_string()),
        c.rtc,
        c.last_sync_unix_s
            .map_or("never".into(), |t| format!("unix {t}")),
        c.max_offset_ms
            .map(|m| format!(", error at most {m} ms"))
            .unwrap_or_default()
    );
    s
}

/// The health message a simulated station publishes (`fleetctl sim`, `fleetctl demo`): a
/// recording station with a healthy microphone, or, with `silent`, one whose microphone
/// records digital silence. `wall_unix_s` is the simulator's clock (trusted).
#[must_use]
pub fn simulated(
    id: &DeviceId,
    seq: u64,
    version: &fleet_core::ids::Version,
    silent: bool,
    wall_unix_s: i64,
) -> Health {
    use fleet_core::clock::TrustedBy;
    use fleet_core::health::AudioFigures;
    use fleet_proto::health::{
        ClockHealth, DeviceHealth, HEALTH_VERSION, RecorderHealth, RetentionHealth, SystemHealth,
        Throttling,
    };
    let audio = if silent {
        AudioFigures {
            rms_dbfs: fleet_core::health::SILENCE_DBFS,
            peak_dbfs: fleet_core::health::SILENCE_DBFS,
            clipped_fraction: 0.0,
            dc_offset: 0.0,
            flat: true,
        }
    } else {
        AudioFigures {
            rms_dbfs: -48.2,
            peak_dbfs: -21.5,
            clipped_fraction: 0.0,
            dc_offset: 0.0004,
            flat: false,
        }
    };
    Health {
        v: HEALTH_VERSION,
        device_id: id.clone(),
        seq,
        at: fleet_core::time::Now::trusted(seq * 1000, wall_unix_s).into(),
        recorder: RecorderHealth {
            state: RecorderState::Recording,
            reason: None,
            devices: vec![DeviceHealth {
                id: "mic0".into(),
                state: "recording".into(),
                pcm: Some("hw:CARD=UltraMic,DEV=0".into()),
                format: Some("384000/1/16".into()),
                last_segment_unix_s: Some(wall_unix_s - 60),
                segments_24h: 288,
                gaps_24h: 0,
                xruns_24h: 0,
                audio: Some(audio),
            }],
        },
        retention: Some(RetentionHealth {
            disk_used_percent: 41.5,
            tier: "calm".into(),
            kept_count: 5120,
            kept_bytes: 23_592_960_000,
            not_uploaded_count: 12,
            deleted_24h: 0,
            index: "ok".into(),
        }),
        system: SystemHealth {
            uptime_s: 86_400,
            boot_id: "6c1a0e6fd2ad4b0c9d1f6d0f1c0e2a31".into(),
            slot: Some(fleet_core::slot::Slot::A),
            version: Some(version.clone()),
            load: [0.31, 0.28, 0.25],
            mem_total_kib: 8_245_000,
            mem_available_kib: 7_600_000,
            cpu_temp_c: Some(48.3),
            throttling: Some(Throttling::from_bits(0)),
            storage: vec![],
            watchdog_reset: false,
        },
        clock: ClockHealth {
            synchronized: Some(true),
            rtc: true,
            last_sync_unix_s: Some(wall_unix_s - 600),
            trusted: true,
            trusted_by: Some(TrustedBy::Ntp),
            untrusted_because: None,
            max_offset_ms: Some(30),
        },
        uploader: Some(fleet_proto::health::UploaderHealth {
            state: "idle".into(),
            wait_reason: None,
            queue_recordings: 12,
            queue_bytes: 55_296_000,
            parked: 0,
            last_success_unix_s: Some(wall_unix_s - 300),
            last_failure_reason: None,
            failures_by_reason: std::collections::BTreeMap::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::health::{Problem, ProblemPolicy, decide_problems};

    #[test]
    fn a_simulated_silent_station_shows_exactly_the_silent_microphone_problem() {
        let id = DeviceId::new("sim-1").expect("id");
        let v: fleet_core::ids::Version = "1.0.0".parse().expect("version");
        let ok = simulated(&id, 1, &v, false, 1_790_000_000);
        let silent = simulated(&id, 1, &v, true, 1_790_000_000);
        fleet_proto::health::encode(&silent).expect("valid message");
        let p = ProblemPolicy::default();
        assert!(decide_problems(&ok.signals(Some(0)), &p).is_empty());
        assert_eq!(
            decide_problems(&silent.signals(Some(0)), &p),
            [Problem::SilentMicrophone]
        );
        let cols = Columns::of(Some(&silent), false, Some(0));
        assert_eq!(
            (
                cols.rec.as_str(),
                cols.mic.as_str(),
                cols.disk.as_str(),
                cols.clock.as_str()
            ),
            ("rec", "SILENT", "42%", "ntp")
        );
        assert_eq!(cols.last_seg, "60s");
        assert_eq!(cols.upload, "12");
        let text = render(&silent, &[Problem::SilentMicrophone]);
        assert!(text.contains("problems: silent-microphone"), "{text}");
        assert!(text.contains("FLAT"), "{text}");
        assert!(text.contains("uploader: idle"), "{text}");
    }
}
