//! Configuration: `/etc/fleet/recorderd.toml`, kebab-case keys, unknown keys rejected. Parsed into raw
//! types, then validated into `Config`, reporting every invalid key with its path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::ids::DeviceId;
use serde::Deserialize;

use crate::capture::{DeviceLocator, SampleFormat, StreamSpec, UsbIdentity};
use crate::civil;
use crate::guano::SegmentMeta;
use crate::recording::{ClockTrust, SessionSetup};
use crate::schedule::{self, Schedule, SolarEvent};
use crate::wav;

/// Every bound the recorder enforces, with its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest ring between capture and writer (per device).
    pub max_ring_bytes: usize,
    /// Longest segment (also bounded by the 2 GiB WAV data limit).
    pub max_segment_seconds: u32,
    pub max_rate: u32,
    pub max_channels: u16,
    /// Shortest device buffer accepted: a second, so a busy writer or a scheduling hiccup never
    /// becomes an xrun.
    pub min_buffer_ms: u32,
    pub min_period_ms: u32,
    pub max_period_ms: u32,
    /// Most devices one daemon records.
    pub max_devices: usize,
    /// Largest config file read.
    pub max_config_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_ring_bytes: 64 << 20,
            max_segment_seconds: 3600,
            max_rate: 768_000,
            max_channels: 32,
            min_buffer_ms: 1000,
            min_period_ms: 5,
            max_period_ms: 500,
            max_devices: 8,
            max_config_bytes: 256 << 10,
        }
    }
}

/// What the recorder cannot run without (ADR 0008): both come from the station layer. Without
/// a microphone the recorder records nothing rather than guess a device: a Pi 5 has no audio
/// input of its own, so any guess would be a USB device someone plugged in for another purpose,
/// and a recording with the wrong device's metadata is worse than none. Each probe meets its
/// need with a harmless value so the rest is still checked.
pub const STATION_NEEDS: &[fleet_config::Need] = &[
    fleet_config::Need(&["station-id", "station-id-file"], "station-id = \"probe\""),
    fleet_config::Need(
        &["devices"],
        "[profiles.fleet-probe]\nrate = 48000\n[[devices]]\nid = \"probe\"\nalsa-name = \"null\"\nprofile = \"fleet-probe\"",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to parse config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unable to validate config {path}:\n  {}", problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    station_id: Option<String>,
    station_id_file: Option<PathBuf>,
    data_dir: PathBuf,
    status_file: Option<PathBuf>,
    utc_offset: Option<String>,
    clock_trust: Option<String>,
    clock_root: Option<PathBuf>,
    sys_root: Option<PathBuf>,
    position: Option<RawPosition>,
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
    #[serde(default)]
    schedules: BTreeMap<String, RawSchedule>,
    #[serde(default)]
    devices: Vec<RawDevice>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPosition {
    lat: f64,
    lon: f64,
    elevation_m: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawProfile {
    rate: u32,
    channels: Option<u16>,
    format: Option<String>,
    segment_seconds: Option<u32>,
    period_ms: Option<u32>,
    buffer_ms: Option<u32>,
    stall_timeout_ms: Option<u32>,
    ring_ms: Option<u32>,
    sync_interval_seconds: Option<u32>,
    mixer_control: Option<String>,
    gain_db: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSchedule {
    kind: String,
    windows: Option<Vec<String>>,
    start: Option<String>,
    start_offset_minutes: Option<i32>,
    end: Option<String>,
    end_offset_minutes: Option<i32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDevice {
    id: String,
    alsa_name: Option<String>,
    usb: Option<RawUsb>,
    make: Option<String>,
    model: Option<String>,
    serial: Option<String>,
    profile: String,
    schedule: Option<String>,
    reopen_debounce_ms: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawUsb {
    vendor: String,
    product: String,
    serial: Option<String>,
}

/// A validated recording profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub spec: StreamSpec,
    pub segment_frames: u64,
    pub sync_every_frames: u64,
    pub ring_bytes: usize,
}

/// A validated device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub id: String,
    pub locator: DeviceLocator,
    pub make: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub profile: Profile,
    pub schedule: Schedule,
    pub reopen_debounce: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The station's id: the same rules as fleet-updated's `device-id`.
    pub station_id: DeviceId,
    pub data_dir: PathBuf,
    pub status_file: PathBuf,
    pub utc_offset_minutes: i32,
    pub clock: ClockTrust,
    pub position: Option<(f64, f64)>,
    pub elevation_m: Option<f64>,
    pub devices: Vec<DeviceConfig>,
}

impl Config {
    /// Reads and validates `path`.
    pub fn load(path: &Path, limits: &Limits) -> Result<Self, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > limits.max_config_bytes {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems: vec![format!(
                    "file is {} bytes, more than {}",
                    meta.len(),
                    limits.max_config_bytes
                )],
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text, path, limits)
    }

    /// Validates a config text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &Path, limits: &Limits) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })?;
        validate(raw, limits).map_err(|problems| ConfigError::Invalid {
            path: origin.to_path_buf(),
            problems,
        })
    }

    /// The session setup for one device.
    #[must_use]
    pub fn session_setup(
        &self,
        dev: &DeviceConfig,
        first_seq: u64,
        max_frames: Option<u64>,
    ) -> SessionSetup {
        SessionSetup {
            spec: dev.profile.spec,
            frames_per_segment: dev.profile.segment_frames,
            sync_every_frames: dev.profile.sync_every_frames,
            buffer_dir: self.data_dir.join(".buffer"),
            data_dir: self.data_dir.join("data"),
            template: SegmentMeta {
                station: self.station_id.to_string(),
                device: dev.id.clone(),
                make: dev.make.clone(),
                model: dev.model.clone(),
                serial: dev.serial.clone(),
                position: self.position,
                elevation_m: self.elevation_m,
                rate: dev.profile.spec.rate,
                channels: dev.profile.spec.channels,
                seq: 0,
                wall_unix_ms: 0,
                clock_trusted: false,
                monotonic_ns: 0,
                stream_frame: 0,
                utc_offset_minutes: self.utc_offset_minutes,
                file_name: String::new(),
                gap_before: None,
            },
            clock: self.clock.clone(),
            ring_bytes: dev.profile.ring_bytes,
            reopen_debounce: dev.reopen_debounce,
            retry_interval: Duration::from_millis(500),
            max_frames,
            first_seq,
        }
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn is_hex4(s: &str) -> bool {
    s.len() == 4 && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn solar_event(s: &str) -> Option<SolarEvent> {
    Some(match s {
        "sunrise" => SolarEvent::Sunrise,
        "sunset" => SolarEvent::Sunset,
        "civil-dawn" => SolarEvent::CivilDawn,
        "civil-dusk" => SolarEvent::CivilDusk,
        _ => return None,
    })
}

fn validate(raw: RawConfig, limits: &Limits) -> Result<Config, Vec<String>> {
    let mut p: Vec<String> = Vec::new();
    let station_id = match (&raw.station_id, &raw.station_id_file) {
        (Some(id), None) => id.clone(),
        (None, Some(file)) => match std::fs::read_to_string(file) {
            Ok(s) => s.trim().to_string(),
            Err(e) => {
                p.push(format!(
                    "station-id-file: unable to read {}: {e}",
                    file.display()
                ));
                String::new()
            }
        },
        _ => {
            p.push("station-id / station-id-file: set exactly one".into());
            String::new()
        }
    };
    // The station id is the device id of fleet-updated, one rule for both (fleet-core's DeviceId).
    let station_id = if station_id.is_empty() {
        None
    } else {
        DeviceId::new(station_id)
            .map_err(|e| p.push(format!("station-id: {e}")))
            .ok()
    };
    if !raw.data_dir.is_absolute() {
        p.push("data-dir: must be an absolute path".into());
    }
    let utc_offset_minutes = match raw.utc_offset.as_deref() {
        None => 0,
        Some(s) => civil::parse_utc_offset(s).unwrap_or_else(|| {
            p.push(format!("utc-offset: {s:?} is not +HH:MM or -HH:MM"));
            0
        }),
    };
    let clock_root = raw.clock_root.unwrap_or_else(|| PathBuf::from("/"));
    if !clock_root.is_absolute() {
        p.push(format!(
            "clock-root: {} is not an absolute path",
            clock_root.display()
        ));
    }
    // "file" is the older word for the rule (it once meant timesyncd's flag file alone); pushed
    // layers may still say it.
    let clock = match raw.clock_trust.as_deref() {
        None | Some("system" | "file") => {
            ClockTrust::System(fleet_facts::Roots::under(&clock_root))
        }
        Some("always") => ClockTrust::Always,
        Some("never") => ClockTrust::Never,
        Some(other) => {
            p.push(format!(
                "clock-trust: {other:?} must be \"system\" (the station's clock rule), \
                 \"always\" or \"never\""
            ));
            ClockTrust::Never
        }
    };
    let position = raw.position.as_ref().map(|pos| {
        if !(-90.0..=90.0).contains(&pos.lat) {
            p.push("position.lat: must be within -90..90".into());
        }
        if !(-180.0..=180.0).contains(&pos.lon) {
            p.push("position.lon: must be within -180..180".into());
        }
        (pos.lat, pos.lon)
    });

    let mut profiles = BTreeMap::new();
    for (name, rp) in &raw.profiles {
        let at = |k: &str| format!("profiles.{name}.{k}");
        let channels = rp.channels.unwrap_or(1);
        let format = match rp.format.as_deref().unwrap_or("s16") {
            "s16" => SampleFormat::S16,
            "s32" => SampleFormat::S32,
            other => {
                p.push(format!(
                    "{}: {other:?} must be \"s16\" or \"s32\"",
                    at("format")
                ));
                SampleFormat::S16
            }
        };
        if rp.rate < 1000 || rp.rate > limits.max_rate {
            p.push(format!(
                "{}: must be within 1000..={}",
                at("rate"),
                limits.max_rate
            ));
        }
        if channels == 0 || channels > limits.max_channels {
            p.push(format!(
                "{}: must be within 1..={}",
                at("channels"),
                limits.max_channels
            ));
        }
        let seg_s = rp.segment_seconds.unwrap_or(60);
        let frame_bytes = u64::from(channels) * format.bytes() as u64;
        let segment_frames = u64::from(seg_s) * u64::from(rp.rate);
        if seg_s == 0 || seg_s > limits.max_segment_seconds {
            p.push(format!(
                "{}: must be within 1..={}",
                at("segment-seconds"),
                limits.max_segment_seconds
            ));
        } else if segment_frames * frame_bytes > wav::MAX_DATA_BYTES {
            p.push(format!(
                "{}: a segment would exceed 2 GiB",
                at("segment-seconds")
            ));
        }
        let period_ms = rp.period_ms.unwrap_or(40);
        if !(limits.min_period_ms..=limits.max_period_ms).contains(&period_ms) {
            p.push(format!(
                "{}: must be within {}..={}",
                at("period-ms"),
                limits.min_period_ms,
                limits.max_period_ms
            ));
        }
        let buffer_ms = rp.buffer_ms.unwrap_or(2000);
        if buffer_ms < limits.min_buffer_ms || buffer_ms < 2 * period_ms {
            p.push(format!(
                "{}: must be at least {} and two periods",
                at("buffer-ms"),
                limits.min_buffer_ms
            ));
        }
        let stall_ms = rp.stall_timeout_ms.unwrap_or(buffer_ms.max(2000));
        if stall_ms <= period_ms {
            p.push(format!(
                "{}: must be longer than a period",
                at("stall-timeout-ms")
            ));
        }
        let ring_ms = rp.ring_ms.unwrap_or(2000);
        let ring_bytes = (u64::from(ring_ms) * u64::from(rp.rate) / 1000 * frame_bytes) as usize;
        if ring_ms < 2 * period_ms || ring_bytes > limits.max_ring_bytes {
            p.push(format!(
                "{}: must hold two periods and at most {} bytes",
                at("ring-ms"),
                limits.max_ring_bytes
            ));
        }
        if rp.gain_db.is_some() != rp.mixer_control.is_some() {
            p.push(format!(
                "{}: gain-db and mixer-control go together",
                at("gain-db")
            ));
        }
        let sync_s = rp.sync_interval_seconds.unwrap_or(10).max(1);
        profiles.insert(
            name.clone(),
            (
                Profile {
                    spec: StreamSpec {
                        rate: rp.rate,
                        channels,
                        format,
                        period: Duration::from_millis(u64::from(period_ms)),
                        buffer: Duration::from_millis(u64::from(buffer_ms)),
                        stall_timeout: Duration::from_millis(u64::from(stall_ms)),
                    },
                    segment_frames,
                    sync_every_frames: u64::from(sync_s) * u64::from(rp.rate),
                    ring_bytes,
                },
                rp.mixer_control.clone().zip(rp.gain_db),
            ),
        );
    }

    let mut schedules = BTreeMap::new();
    for (name, rs) in &raw.schedules {
        let at = |k: &str| format!("schedules.{name}.{k}");
        let s = match rs.kind.as_str() {
            "always" => Schedule::Always,
            "daily" => {
                let mut ws = Vec::new();
                for (i, w) in rs.windows.iter().flatten().enumerate() {
                    match schedule::parse_window(w) {
                        Some(w) => ws.push(w),
                        None => p.push(format!("{}[{i}]: {w:?} is not HH:MM-HH:MM", at("windows"))),
                    }
                }
                if rs.windows.as_ref().is_none_or(Vec::is_empty) {
                    p.push(format!("{}: a daily schedule needs windows", at("windows")));
                }
                Schedule::Daily(ws)
            }
            "solar" => {
                let ev = |k: &str, v: &Option<String>, p: &mut Vec<String>| match v
                    .as_deref()
                    .and_then(solar_event)
                {
                    Some(e) => e,
                    None => {
                        p.push(format!(
                            "{}: must be sunrise, sunset, civil-dawn or civil-dusk",
                            at(k)
                        ));
                        SolarEvent::Sunrise
                    }
                };
                let start = ev("start", &rs.start, &mut p);
                let end = ev("end", &rs.end, &mut p);
                let Some((lat, lon)) = position else {
                    p.push(format!("{}: a solar schedule needs [position]", at("kind")));
                    continue;
                };
                Schedule::Solar {
                    lat,
                    lon,
                    start,
                    start_offset_min: rs.start_offset_minutes.unwrap_or(0),
                    end,
                    end_offset_min: rs.end_offset_minutes.unwrap_or(0),
                }
            }
            other => {
                p.push(format!(
                    "{}: {other:?} must be always, daily or solar",
                    at("kind")
                ));
                continue;
            }
        };
        schedules.insert(name.clone(), s);
    }

    if raw.devices.is_empty() {
        p.push("devices: at least one device is needed".into());
    }
    if raw.devices.len() > limits.max_devices {
        p.push(format!("devices: at most {} devices", limits.max_devices));
    }
    let sys_root = raw.sys_root.clone().unwrap_or_else(|| "/sys".into());
    let mut devices = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, rd) in raw.devices.iter().enumerate() {
        let at = |k: &str| format!("devices[{i}].{k}");
        if !is_id(&rd.id) {
            p.push(format!(
                "{}: {:?} is not [A-Za-z0-9-]{{1,64}}",
                at("id"),
                rd.id
            ));
        }
        if !seen.insert(rd.id.clone()) {
            p.push(format!("{}: {:?} is used twice", at("id"), rd.id));
        }
        let usb = rd.usb.as_ref().map(|u| {
            if !is_hex4(&u.vendor) || !is_hex4(&u.product) {
                p.push(format!(
                    "{}: vendor and product are four hex digits",
                    at("usb")
                ));
            }
            UsbIdentity {
                vendor: u.vendor.to_ascii_lowercase(),
                product: u.product.to_ascii_lowercase(),
                serial: u.serial.clone(),
            }
        });
        let alsa_name = match (&rd.alsa_name, &usb) {
            (Some(n), _) => n.clone(),
            (None, Some(_)) => "hw:CARD={card},DEV=0".into(),
            (None, None) => {
                p.push(format!(
                    "{}: set alsa-name or usb (or both)",
                    at("alsa-name")
                ));
                String::new()
            }
        };
        let Some((profile, gain)) = profiles.get(&rd.profile).cloned() else {
            p.push(format!(
                "{}: unknown profile {:?}",
                at("profile"),
                rd.profile
            ));
            continue;
        };
        let schedule = match rd.schedule.as_deref() {
            None | Some("always") => Schedule::Always,
            Some(s) => match schedules.get(s) {
                Some(s) => s.clone(),
                None => {
                    p.push(format!("{}: unknown schedule {s:?}", at("schedule")));
                    continue;
                }
            },
        };
        devices.push(DeviceConfig {
            id: rd.id.clone(),
            locator: DeviceLocator {
                alsa_name,
                usb,
                sys_root: sys_root.clone(),
                gain,
            },
            make: rd.make.clone(),
            model: rd.model.clone(),
            serial: rd.serial.clone(),
            profile,
            schedule,
            reopen_debounce: Duration::from_millis(u64::from(
                rd.reopen_debounce_ms.unwrap_or(2000),
            )),
        });
    }
    if !p.is_empty() {
        return Err(p);
    }
    let status_file = raw
        .status_file
        .unwrap_or_else(|| raw.data_dir.join("status.json"));
    let Some(station_id) = station_id else {
        return Err(vec!["station-id: missing".into()]);
    };
    Ok(Config {
        station_id,
        data_dir: raw.data_dir,
        status_file,
        utc_offset_minutes,
        clock,
        position,
        elevation_m: raw.position.and_then(|p| p.elevation_m),
        devices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
station-id = "st-0042"
data-dir = "/data/recordings"
utc-offset = "+01:00"
clock-trust = "always"

[position]
lat = 52.1
lon = -1.5

[profiles.bats]
rate = 384000
segment-seconds = 60
mixer-control = "Mic"
gain-db = 12.0

[schedules.night]
kind = "solar"
start = "sunset"
start-offset-minutes = -30
end = "sunrise"
end-offset-minutes = 30

[[devices]]
id = "ultramic"
usb = { vendor = "0869", product = "0001" }
make = "Dodotronic"
model = "UltraMic 384K"
profile = "bats"
schedule = "night"
"#;

    #[test]
    fn a_full_config_validates_into_typed_values() {
        let c = Config::parse(GOOD, Path::new("t.toml"), &Limits::default()).expect("valid");
        assert_eq!(c.station_id.as_str(), "st-0042");
        assert_eq!(c.utc_offset_minutes, 60);
        let d = &c.devices[0];
        assert_eq!(d.locator.alsa_name, "hw:CARD={card},DEV=0");
        assert_eq!(d.profile.segment_frames, 60 * 384_000);
        assert_eq!(d.profile.spec.buffer, Duration::from_secs(2));
        assert_eq!(d.locator.gain, Some(("Mic".into(), 12.0)));
        assert!(matches!(d.schedule, Schedule::Solar { .. }));
        assert_eq!(c.status_file, PathBuf::from("/data/recordings/status.json"));
    }

    #[test]
    fn every_invalid_key_is_reported_with_its_path() {
        let bad = r#"
station-id = "st 42"
data-dir = "relative"
utc-offset = "CET"
[profiles.p]
rate = 48000
buffer-ms = 100
format = "f32"
[schedules.s]
kind = "daily"
windows = ["25:00-06:00"]
[[devices]]
id = "mic"
profile = "nope"
"#;
        let Err(ConfigError::Invalid { problems, .. }) =
            Config::parse(bad, Path::new("t.toml"), &Limits::default())
        else {
            panic!("must be invalid");
        };
        let all = problems.join("\n");
        for key in [
            "station-id:",
            "data-dir:",
            "utc-offset:",
            "profiles.p.buffer-ms:",
            "profiles.p.format:",
            "schedules.s.windows[0]:",
            "devices[0].alsa-name:",
            "devices[0].profile:",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
    }

    #[test]
    fn segments_follow_the_stations_clock_rule_unless_a_word_overrides_it() {
        let with = |lines: &str| {
            let text = GOOD.replace("clock-trust = \"always\"\n", lines);
            Config::parse(&text, Path::new("t.toml"), &Limits::default())
        };
        let rule = ClockTrust::System(fleet_facts::Roots::system());
        assert_eq!(with("").expect("valid").clock, rule);
        // "file", the older word, means the rule too (pushed layers may still say it).
        assert_eq!(with("clock-trust = \"file\"\n").expect("valid").clock, rule);
        let c = with("clock-trust = \"system\"\nclock-root = \"/tmp/fake\"\n").expect("valid");
        assert_eq!(
            c.clock,
            ClockTrust::System(fleet_facts::Roots::under(Path::new("/tmp/fake")))
        );
        // A fake tree where timesyncd never synchronized: not trusted.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("run/systemd/timesync")).expect("mkdir");
        assert!(!ClockTrust::System(fleet_facts::Roots::under(dir.path())).trusted());
        std::fs::write(dir.path().join("run/systemd/timesync/synchronized"), b"").expect("flag");
        assert!(ClockTrust::System(fleet_facts::Roots::under(dir.path())).trusted());
        let Err(ConfigError::Invalid { problems, .. }) =
            with("clock-trust = \"maybe\"\nclock-root = \"rel\"\n")
        else {
            panic!("must be invalid");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("clock-trust:") && all.contains("clock-root:"),
            "{all}"
        );
    }

    #[test]
    fn the_station_id_is_read_from_the_data_partition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id_file = dir.path().join("station-id");
        std::fs::write(&id_file, "st-0099\n").expect("write");
        let text = GOOD.replace(
            "station-id = \"st-0042\"",
            &format!("station-id-file = \"{}\"", id_file.display()),
        );
        let c = Config::parse(&text, Path::new("t.toml"), &Limits::default()).expect("valid");
        assert_eq!(c.station_id.as_str(), "st-0099");
        let both = format!("station-id = \"x\"\n{text}");
        assert!(matches!(
            Config::parse(&both, Path::new("t.toml"), &Limits::default()),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = format!("{GOOD}\nsegment-length = 3\n");
        assert!(matches!(
            Config::parse(&text, Path::new("t.toml"), &Limits::default()),
            Err(ConfigError::Parse { .. })
        ));
    }
}
