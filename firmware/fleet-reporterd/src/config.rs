//! `/etc/fleet/reporterd.toml` (image defaults), and the station identity it borrows from the
//! provisioned `fleet-updated` configuration (device id, data directory, `[mqtt]`), so a
//! station is provisioned once for both daemons.
//!
//! ```toml
//! station-config = "/data/fleet/identity/updated.toml"  # device-id, data-dir and [mqtt] come from here
//! updater-config = "/etc/fleet/updated.toml"  # optional: the image's layer under station-config
//! heartbeat-secs = 900            # publish at least this often
//! sample-secs = 30                # read everything this often
//! min-interval-secs = 30          # a change goes out no sooner than this after the last message
//! recorder-status = "/data/fleet/recordings/status.json"
//! retention-metrics = "/data/fleet/retention/metrics.json"   # optional
//! uploader-status = "/run/fleet-uploaderd/status.json"       # optional
//! version-file = "/etc/fleet-version"
//! root = "/"                      # sys, proc, run and var/lib are read under it
//! clock-floor-unix-s = 1735689600 # no clock before this is right (default: 2025-01-01)
//! rtc-holdover-secs = 2592000     # an RTC-kept clock stays trusted this long after a sync
//! state-dir = "/var/lib/fleet-reporterd"   # the last answered log request
//! journal-directory = "/var/log/journal/x"  # only in tests: read these journal files
//! ```
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::clock::ClockPolicy;
use fleet_core::ids::DeviceId;
use fleet_mqtt::config::{MqttConfig, RawMqtt};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    station_config: PathBuf,
    /// fleet-updated's image defaults, laid under `station_config` as fleet-updated lays them
    /// (ADR 0008): a provisioned station file holds only what differs from the image.
    updater_config: Option<PathBuf>,
    #[serde(default = "default_heartbeat")]
    heartbeat_secs: u64,
    #[serde(default = "default_sample")]
    sample_secs: u64,
    #[serde(default = "default_min_interval")]
    min_interval_secs: u64,
    recorder_status: PathBuf,
    retention_metrics: Option<PathBuf>,
    uploader_status: Option<PathBuf>,
    #[serde(default = "default_version_file")]
    version_file: PathBuf,
    #[serde(default = "default_root")]
    root: PathBuf,
    clock_floor_unix_s: Option<i64>,
    rtc_holdover_secs: Option<u64>,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    journal_directory: Option<PathBuf>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/fleet-reporterd")
}

fn default_heartbeat() -> u64 {
    900
}
fn default_sample() -> u64 {
    30
}
fn default_min_interval() -> u64 {
    30
}
fn default_version_file() -> PathBuf {
    PathBuf::from("/etc/fleet-version")
}
fn default_root() -> PathBuf {
    PathBuf::from("/")
}

/// The part of the station's `updated.toml` the reporter reads (its other keys belong to
/// `fleet-updated` and are ignored here; `fleet-updated --check-config` judges them).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawStation {
    device_id: Option<String>,
    device_id_file: Option<PathBuf>,
    data_dir: PathBuf,
    mqtt: RawMqtt,
    #[serde(default)]
    trusted_keys: Vec<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub device_id: DeviceId,
    pub mqtt: MqttConfig,
    pub heartbeat: Duration,
    pub sample: Duration,
    pub min_interval: Duration,
    pub recorder_status: PathBuf,
    pub retention_metrics: Option<PathBuf>,
    pub uploader_status: Option<PathBuf>,
    pub version_file: PathBuf,
    pub roots: fleet_facts::Roots,
    pub clock: ClockPolicy,
    /// The keys whose signed log requests are answered (the station's bootstrap offer keys).
    pub trusted_keys: fleet_proto::TrustedKeys,
    pub state_dir: PathBuf,
    pub journal: crate::logs::Journal,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("invalid configuration in {path}:\n  {}", problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// What the reporter cannot run without, from the station's identity (ADR 0008): until a
/// provisioned `updated.toml` names them it starts and waits, like fleet-updated. Each probe
/// meets its need with a harmless value so the rest is checked.
pub const STATION_NEEDS: &[fleet_config::Need] = &[
    fleet_config::Need(&["device-id", "device-id-file"], "device-id = \"probe\""),
    fleet_config::Need(&["mqtt.host"], "[mqtt]\nhost = \"localhost\""),
];

/// The reporter's own file, read and parsed; the station identity it names is read separately
/// (it may not be there yet).
#[derive(Debug)]
pub struct Settings {
    path: PathBuf,
    raw: RawConfig,
}

impl Settings {
    /// Reads and parses the reporter's own file (not the station file it names).
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = read(path)?;
        let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            detail: e.message().to_string(),
        })?;
        Ok(Settings {
            path: path.to_owned(),
            raw,
        })
    }

    /// Where the station identity comes from: the provisioned `updated.toml` over
    /// fleet-updated's image defaults, or the station file alone when no image layer is named.
    #[must_use]
    pub fn station_layers(&self) -> fleet_config::Layers {
        match &self.raw.updater_config {
            Some(image) => fleet_config::Layers {
                image: image.clone(),
                station: Some(self.raw.station_config.clone()),
            },
            None => fleet_config::Layers::image_only(self.raw.station_config.clone()),
        }
    }

    /// Validates these settings with the station identity read from [`Self::station_layers`].
    pub fn with_station(&self, station_text: &str) -> Result<Config, ConfigError> {
        let (path, raw) = (self.path.as_path(), &self.raw);
        let station: RawStation = toml::from_str(station_text).map_err(|e| ConfigError::Parse {
            path: raw.station_config.clone(),
            detail: e.message().to_string(),
        })?;
        let mut problems = Vec::new();
        if !(60..=86_400).contains(&raw.heartbeat_secs) {
            problems.push("heartbeat-secs: must be 60..=86400".into());
        }
        if raw.sample_secs == 0 || raw.sample_secs > raw.heartbeat_secs {
            problems.push("sample-secs: must be 1..=heartbeat-secs".into());
        }
        if raw.min_interval_secs > raw.heartbeat_secs {
            problems.push("min-interval-secs: must be at most heartbeat-secs".into());
        }
        for (key, p) in [
            ("recorder-status", Some(&raw.recorder_status)),
            ("retention-metrics", raw.retention_metrics.as_ref()),
            ("uploader-status", raw.uploader_status.as_ref()),
            ("version-file", Some(&raw.version_file)),
            ("root", Some(&raw.root)),
        ] {
            if p.is_some_and(|p| !p.is_absolute()) {
                problems.push(format!("{key}: must be an absolute path"));
            }
        }
        let mut clock = ClockPolicy::default();
        if let Some(f) = raw.clock_floor_unix_s {
            clock.floor_unix_s = f;
        }
        if let Some(h) = raw.rtc_holdover_secs {
            match i64::try_from(h) {
                Ok(h) => clock.rtc_holdover_s = h,
                Err(_) => problems.push("rtc-holdover-secs: too large".into()),
            }
        }
        // Problems of the station file are named by their keys there.
        let station_path = raw.station_config.display().to_string();
        let mut station_problems = Vec::new();
        let device_id = match (&station.device_id, &station.device_id_file) {
            (Some(id), None) => Some(id.clone()),
            (None, Some(file)) => match std::fs::read_to_string(file) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(e) => {
                    station_problems.push(format!(
                        "device-id-file: unable to read {}: {e}",
                        file.display()
                    ));
                    None
                }
            },
            _ => {
                station_problems
                    .push("device-id: give exactly one of device-id and device-id-file".into());
                None
            }
        }
        .and_then(|s| match DeviceId::new(s) {
            Ok(d) => Some(d),
            Err(e) => {
                station_problems.push(format!("device-id: {e}"));
                None
            }
        });
        let mqtt = station
            .mqtt
            .validate(&station.data_dir, &mut station_problems);
        let mut trusted_keys = fleet_proto::TrustedKeys::new();
        for (i, k) in station.trusted_keys.iter().enumerate() {
            match fleet_proto::TrustedKeys::parse_public_hex(k) {
                Ok(key) => {
                    trusted_keys.insert(key);
                }
                Err(e) => station_problems.push(format!("trusted-keys[{i}]: {e}")),
            }
        }
        if !raw.state_dir.is_absolute() {
            problems.push("state-dir: must be an absolute path".into());
        }
        problems.extend(
            station_problems
                .into_iter()
                .map(|p| format!("{station_path}: {p}")),
        );
        match device_id {
            Some(device_id) if problems.is_empty() => Ok(Config {
                device_id,
                mqtt,
                heartbeat: Duration::from_secs(raw.heartbeat_secs),
                sample: Duration::from_secs(raw.sample_secs),
                min_interval: Duration::from_secs(raw.min_interval_secs),
                recorder_status: raw.recorder_status.clone(),
                retention_metrics: raw.retention_metrics.clone(),
                uploader_status: raw.uploader_status.clone(),
                version_file: raw.version_file.clone(),
                roots: fleet_facts::Roots::under(&raw.root),
                clock,
                trusted_keys,
                state_dir: raw.state_dir.clone(),
                journal: crate::logs::Journal {
                    directory: raw.journal_directory.clone(),
                    ..crate::logs::Journal::default()
                },
            }),
            _ => Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            }),
        }
    }
}

impl Config {
    /// Reads and validates `path` and the station configuration it names, once: a station that
    /// was never provisioned is an error naming the station file (the daemon waits instead).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let settings = Settings::load(path)?;
        let station = &settings.raw.station_config;
        std::fs::metadata(station).map_err(|source| ConfigError::Read {
            path: station.clone(),
            source,
        })?;
        let merged = settings
            .station_layers()
            .read(&fleet_config::Limits::default())
            .map_err(|e| ConfigError::Parse {
                path: station.clone(),
                detail: e.to_string(),
            })?;
        settings.with_station(&merged.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn station(dir: &Path) -> PathBuf {
        write(
            dir,
            "updated.toml",
            "device-id = \"stn-7\"\ngroups = [\"canary\"]\ncompatible = \"fleet-rpi5\"\n\
             data-dir = \"/data\"\ntrusted-keys = []\n[mqtt]\nhost = \"127.0.0.1\"\n\
             [update]\nchunk-window = 8\n",
        )
    }

    /// The image's updated.toml as the recipe installs it (paths of this test's station).
    fn image_updated_toml() -> String {
        include_str!("../../../meta-fleet/recipes-fleet/fleet-firmware/files/updated.toml")
            .replace("@COMPATIBLE@", "fleet-raspberrypi5")
            .replace("@DATADIR@", "/data")
            .replace("@BOOT_FLOW@", "tryboot")
            .replace("@LIBEXECDIR@", "/usr/libexec")
    }

    /// A station file as `fleetctl provision` writes it holds only what differs from the image
    /// (no data-dir): the reporter reads it over fleet-updated's image layer, as fleet-updated does.
    #[test]
    fn a_provisioned_station_file_is_read_over_the_updaters_image_defaults() {
        let d = tempfile::tempdir().expect("tempdir");
        let image = write(d.path(), "image-updated.toml", &image_updated_toml());
        let s = write(
            d.path(),
            "updated.toml",
            "device-id = \"stn-8\"\n[mqtt]\nhost = \"127.0.0.1\"\n",
        );
        let text = format!(
            "station-config = \"{}\"\nrecorder-status = \"/data/fleet/recordings/status.json\"\n",
            s.display()
        );
        let alone = write(d.path(), "alone.toml", &text);
        let err = Config::load(&alone).expect_err("no data-dir without the image layer");
        assert!(err.to_string().contains("data-dir"), "{err}");
        let layered = write(
            d.path(),
            "layered.toml",
            &format!("{text}updater-config = \"{}\"\n", image.display()),
        );
        let cfg = Config::load(&layered).expect("valid over the image layer");
        assert_eq!(cfg.device_id.as_str(), "stn-8");
        // Not provisioned: still an error naming the station file.
        std::fs::remove_file(&s).expect("rm");
        let err = Config::load(&layered).expect_err("no station file");
        assert!(err.to_string().contains("updated.toml"), "{err}");
    }

    /// ADR 0008: an unprovisioned or half-provisioned station is incomplete (the daemon waits
    /// and says what is missing), a present but wrong value is invalid.
    #[test]
    fn an_unprovisioned_identity_is_incomplete_and_names_what_is_missing() {
        let d = tempfile::tempdir().expect("tempdir");
        let image = write(d.path(), "image-updated.toml", &image_updated_toml());
        let s = d.path().join("updated.toml");
        let c = write(
            d.path(),
            "reporterd.toml",
            &format!(
                "station-config = \"{}\"\nupdater-config = \"{}\"\n\
                 recorder-status = \"/data/fleet/recordings/status.json\"\n",
                s.display(),
                image.display()
            ),
        );
        let settings = Settings::load(&c).expect("the reporter's own file");
        let once = |settings: &Settings| {
            fleet_config::load_once(
                &settings.station_layers(),
                STATION_NEEDS,
                &fleet_config::Limits::default(),
                |m| settings.with_station(&m.text),
            )
        };
        let fleet_config::Outcome::Incomplete(gaps) = once(&settings) else {
            panic!("no station file must be incomplete");
        };
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert!(
            gaps[0].contains("device-id") && gaps[1].contains("mqtt.host"),
            "{gaps:?}"
        );
        std::fs::write(&s, "device-id = \"stn-9\"\n").expect("write");
        let fleet_config::Outcome::Incomplete(gaps) = once(&settings) else {
            panic!("no broker yet must be incomplete");
        };
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].contains("mqtt.host"), "{gaps:?}");
        std::fs::write(&s, "device-id = \"bad id!\"\n").expect("write");
        let fleet_config::Outcome::Invalid(msg) = once(&settings) else {
            panic!("a wrong device id is invalid, not incomplete");
        };
        assert!(msg.contains("device-id"), "{msg}");
        std::fs::write(&s, "device-id = \"stn-9\"\n[mqtt]\nhost = \"127.0.0.1\"\n").expect("write");
        let fleet_config::Outcome::Ready(cfg) = once(&settings) else {
            panic!("provisioned must be ready");
        };
        assert_eq!(cfg.device_id.as_str(), "stn-9");
    }

    #[test]
    fn the_reporter_borrows_device_id_and_broker_from_the_station_configuration() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = station(d.path());
        let c = write(
            d.path(),
            "reporterd.toml",
            &format!(
                "station-config = \"{}\"\nrecorder-status = \"/data/fleet/recordings/status.json\"\n",
                s.display()
            ),
        );
        let cfg = Config::load(&c).expect("valid");
        assert_eq!(cfg.device_id.as_str(), "stn-7");
        assert_eq!(cfg.mqtt.port, 1883);
        assert_eq!(cfg.heartbeat, Duration::from_secs(900));
        assert_eq!(cfg.roots.sys, PathBuf::from("/sys"));
    }

    /// The sample in docs/reference/reporterd.md and the image's reporterd.toml load with the
    /// station file they name replaced by a test one.
    #[test]
    fn the_documented_sample_and_the_image_configuration_load() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = station(d.path());
        let doc = include_str!("../../../docs/reference/reporterd.md");
        let sample = doc
            .split("```toml reporterd\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a `toml reporterd` block");
        let image =
            include_str!("../../../meta-fleet/recipes-fleet/fleet-firmware/files/reporterd.toml")
                .replace("@DATADIR@", "/data");
        // Both name fleet-updated's image defaults, laid under the station file.
        let updater_image = write(d.path(), "updater-image.toml", &image_updated_toml());
        for (name, text) in [("doc.toml", sample.to_owned()), ("image.toml", image)] {
            let text = text
                .replace(
                    "\"/data/fleet/identity/updated.toml\"",
                    &format!("\"{}\"", s.display()),
                )
                .replace(
                    "\"/etc/fleet/updated.toml\"",
                    &format!("\"{}\"", updater_image.display()),
                );
            assert!(
                text.contains(&updater_image.display().to_string()),
                "{name} names the updater's image layer"
            );
            assert!(
                text.contains(&s.display().to_string()),
                "{name} names the station file"
            );
            let cfg = Config::load(&write(d.path(), name, &text))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                cfg.uploader_status,
                Some(PathBuf::from("/run/fleet-uploaderd/status.json")),
                "{name}"
            );
        }
    }

    #[test]
    fn every_invalid_key_is_reported_by_its_path() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = write(
            d.path(),
            "updated.toml",
            "data-dir = \"/data\"\n[mqtt]\nhost = \"broker.example\"\n",
        );
        let c = write(
            d.path(),
            "reporterd.toml",
            &format!(
                "station-config = \"{}\"\nrecorder-status = \"status.json\"\n\
                 heartbeat-secs = 5\n",
                s.display()
            ),
        );
        let Err(ConfigError::Invalid { problems, .. }) = Config::load(&c) else {
            panic!("must be invalid");
        };
        let text = problems.join("\n");
        for want in [
            "heartbeat-secs: must be",
            "recorder-status: must be an absolute path",
            "updated.toml: device-id: give exactly one",
            "updated.toml: mqtt.tls: needed",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        let bad = write(d.path(), "bad.toml", "station-config = 3\n");
        assert!(matches!(Config::load(&bad), Err(ConfigError::Parse { .. })));
        let unknown = write(d.path(), "unknown.toml", "surprise = 1\n");
        assert!(matches!(
            Config::load(&unknown),
            Err(ConfigError::Parse { .. })
        ));
    }
}
