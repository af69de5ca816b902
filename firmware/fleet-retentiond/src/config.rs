//! Configuration: `/etc/fleet/retentiond.toml`, kebab-case keys, unknown keys refused.
//! Parsed into raw types, then validated into [`Config`] reporting every invalid key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::retention::{Permille, Policy};
use serde::Deserialize;

/// Bounds the daemon holds itself to. Defaults are documented in `docs/reference/retentiond.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Directory depth scanned below the recordings directory.
    pub max_scan_depth: usize,
    /// Files indexed per transaction (catch-up and adoption commit in batches of this size).
    pub insert_batch: usize,
    /// inotify events handled per loop turn before the loop plans and pings the watchdog.
    pub max_events_per_turn: usize,
    /// Pending paths waiting to be indexed; past this, the next catch-up scan finds the rest.
    pub max_pending_paths: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_scan_depth: 4,
            insert_batch: 2_000,
            max_events_per_turn: 4_096,
            max_pending_paths: 65_536,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    recordings_dir: PathBuf,
    #[serde(default)]
    mount_point: Option<PathBuf>,
    state_dir: PathBuf,
    #[serde(default)]
    metrics_path: Option<PathBuf>,
    #[serde(default)]
    trust_time: Option<String>,
    #[serde(default)]
    clock_root: Option<PathBuf>,
    #[serde(default)]
    boot_id_path: Option<PathBuf>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    daemon: RawDaemon,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPolicy {
    housekeeping_at_percent: Option<f64>,
    defensive_at_percent: Option<f64>,
    panic_at_percent: Option<f64>,
    hysteresis_percent: Option<f64>,
    floor_seconds: Option<u64>,
    floor_target_seconds: Option<u64>,
    max_deletions_per_cycle: Option<usize>,
    uploader: Option<RawSwitch>,
    uploader_config: Option<PathBuf>,
    analyser: Option<bool>,
    keep_uploaded_for_seconds: Option<u64>,
    update_reserve_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDaemon {
    cycle_seconds: Option<f64>,
    catch_up_seconds: Option<f64>,
    ballast_mib: Option<u64>,
    write_rate_window_seconds: Option<u64>,
    max_missing_fraction: Option<f64>,
}

/// `uploader = true | false | "auto"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSwitch {
    Fixed(bool),
    Named(String),
}

/// Whether an uploader takes recordings off the station (`policy.uploader`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploaderSwitch {
    /// Configured or not, whatever the station holds.
    Fixed(bool),
    /// Configured while the uploader's station configuration exists (fleet-uploaderd reads its
    /// destination from it; provisioning writes it only with a destination).
    Auto(PathBuf),
}

impl UploaderSwitch {
    /// Whether an uploader is configured now.
    #[must_use]
    pub fn configured(&self) -> bool {
        match self {
            Self::Fixed(v) => *v,
            Self::Auto(path) => path.exists(),
        }
    }
}

/// Where `uploader = "auto"` looks by default.
pub const DEFAULT_UPLOADER_CONFIG: &str = "/data/fleet/identity/uploaderd.toml";

/// Whether the wall clock is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustTime {
    /// The station's clock rule (ADR 0004), asked at every decision:
    /// `fleet_facts::clock::now` reads systemd-timesyncd's files and the RTC under
    /// `clock-root` and applies `fleet_core::clock::decide_trust`, as every fleet daemon does.
    Auto,
    Always,
    Never,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the recorder promotes finished segments (its `<data>/data/`).
    pub recordings_dir: PathBuf,
    /// Must be a mounted filesystem, or the daemon refuses to reconcile (an unmounted `/data`).
    pub mount_point: Option<PathBuf>,
    /// The index, the ballast.
    pub state_dir: PathBuf,
    pub metrics_path: Option<PathBuf>,
    pub trust_time: TrustTime,
    /// Where the clock facts are read (`<clock-root>/run`, `/var/lib`, `/sys`).
    pub clock_roots: fleet_facts::Roots,
    pub boot_id_path: PathBuf,
    /// The plan's policy; its `uploader_configured` is refreshed from `uploader` before each
    /// plan ([`Config::policy_now`]).
    pub policy: Policy,
    pub uploader: UploaderSwitch,
    pub update_reserve_bytes: u64,
    pub cycle: Duration,
    pub catch_up: Duration,
    pub ballast_bytes: u64,
    pub write_rate_window: Duration,
    pub max_missing_fraction: f64,
    pub limits: Limits,
}

impl Config {
    #[must_use]
    pub fn index_path(&self) -> PathBuf {
        self.state_dir.join("index.sqlite")
    }

    /// The policy with `uploader_configured` as the station is now.
    #[must_use]
    pub fn policy_now(&self) -> Policy {
        Policy {
            uploader_configured: self.uploader.configured(),
            ..self.policy.clone()
        }
    }

    #[must_use]
    pub fn ballast_path(&self) -> PathBuf {
        self.state_dir.join("ballast")
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unable to accept config {path}: {}", .problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// Reads and validates a config file.
///
/// # Errors
/// The file cannot be read, does not parse, or holds invalid values (all reported).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_at(&text, path)
}

/// Parses and validates a config text read from `path` (named in errors; for the merged
/// layers of ADR 0008, both files).
///
/// # Errors
/// The text does not parse or holds invalid values (all reported).
pub fn parse_at(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse(text).map_err(|e| match e {
        ParseError::Syntax(message) => ConfigError::Parse {
            path: path.to_owned(),
            message,
        },
        ParseError::Invalid(problems) => ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        },
    })
}

/// Why a config text was refused.
#[derive(Debug)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<String>),
}

fn percent(key: &str, value: Option<f64>, default: u16, problems: &mut Vec<String>) -> Permille {
    let Some(v) = value else {
        return Permille::new(default).unwrap_or(Permille::WHOLE);
    };
    if !(0.0..=100.0).contains(&v) {
        problems.push(format!("{key}: {v} is not a percentage between 0 and 100"));
        return Permille::new(default).unwrap_or(Permille::WHOLE);
    }
    // In range, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let permille = (v * 10.0).round() as u16;
    Permille::new(permille).unwrap_or(Permille::WHOLE)
}

fn seconds(key: &str, value: Option<f64>, default: f64, problems: &mut Vec<String>) -> Duration {
    let v = value.unwrap_or(default);
    if !(0.01..=86_400.0).contains(&v) {
        problems.push(format!("{key}: {v} is not between 0.01 and 86400 seconds"));
        return Duration::from_secs_f64(default);
    }
    Duration::from_secs_f64(v)
}

/// Parses and validates a config text.
///
/// # Errors
/// Syntax errors, or every invalid value.
pub fn parse(text: &str) -> Result<Config, ParseError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ParseError::Syntax(e.to_string()))?;
    let mut problems = Vec::new();
    let p = &raw.policy;
    let policy = Policy {
        housekeeping_at: percent(
            "policy.housekeeping-at-percent",
            p.housekeeping_at_percent,
            700,
            &mut problems,
        ),
        defensive_at: percent(
            "policy.defensive-at-percent",
            p.defensive_at_percent,
            800,
            &mut problems,
        ),
        panic_at: percent(
            "policy.panic-at-percent",
            p.panic_at_percent,
            900,
            &mut problems,
        ),
        hysteresis: percent(
            "policy.hysteresis-percent",
            p.hysteresis_percent,
            50,
            &mut problems,
        ),
        floor_seconds: p.floor_seconds.unwrap_or(3600),
        floor_target_seconds: p.floor_target_seconds.unwrap_or(7200),
        max_deletions_per_cycle: p.max_deletions_per_cycle.unwrap_or(500),
        uploader_configured: true,
        analyser_configured: p.analyser.unwrap_or(false),
        keep_uploaded_for_s: p.keep_uploaded_for_seconds.filter(|s| *s > 0),
    };
    if let Err(e) = policy.validate() {
        problems.push(format!("policy: {e}"));
    }
    let uploader = match &p.uploader {
        Some(RawSwitch::Fixed(v)) => UploaderSwitch::Fixed(*v),
        None => UploaderSwitch::Auto(
            p.uploader_config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_UPLOADER_CONFIG)),
        ),
        Some(RawSwitch::Named(n)) if n == "auto" => UploaderSwitch::Auto(
            p.uploader_config
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_UPLOADER_CONFIG)),
        ),
        Some(RawSwitch::Named(other)) => {
            problems.push(format!(
                "policy.uploader: {other:?} is not one of true, false, \"auto\""
            ));
            UploaderSwitch::Fixed(false)
        }
    };
    let trust_time = match raw.trust_time.as_deref() {
        None | Some("auto") => TrustTime::Auto,
        Some("always") => TrustTime::Always,
        Some("never") => TrustTime::Never,
        Some(other) => {
            problems.push(format!(
                "trust-time: {other:?} is not one of auto, always, never"
            ));
            TrustTime::Never
        }
    };
    let clock_root = raw.clock_root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if !clock_root.is_absolute() {
        problems.push(format!(
            "clock-root: {} is not an absolute path",
            clock_root.display()
        ));
    }
    for (key, path) in [
        ("recordings-dir", &raw.recordings_dir),
        ("state-dir", &raw.state_dir),
    ] {
        if !path.is_absolute() {
            problems.push(format!("{key}: {} is not an absolute path", path.display()));
        }
    }
    let d = &raw.daemon;
    let max_missing_fraction = d.max_missing_fraction.unwrap_or(0.5);
    if !(0.0..=1.0).contains(&max_missing_fraction) {
        problems.push(format!(
            "daemon.max-missing-fraction: {max_missing_fraction} is not between 0 and 1"
        ));
    }
    let reserve_mib = p.update_reserve_mib.unwrap_or(1024);
    let ballast_mib = d.ballast_mib.unwrap_or(64);
    if reserve_mib > 1 << 30 || ballast_mib > 1 << 20 {
        problems.push("policy.update-reserve-mib or daemon.ballast-mib: unreasonably large".into());
    }
    let config = Config {
        recordings_dir: raw.recordings_dir,
        mount_point: raw.mount_point.filter(|p| !p.as_os_str().is_empty()),
        state_dir: raw.state_dir,
        metrics_path: raw.metrics_path,
        trust_time,
        clock_roots: fleet_facts::Roots::under(&clock_root),
        boot_id_path: raw
            .boot_id_path
            .unwrap_or_else(|| PathBuf::from("/proc/sys/kernel/random/boot_id")),
        policy,
        uploader,
        update_reserve_bytes: reserve_mib << 20,
        cycle: seconds("daemon.cycle-seconds", d.cycle_seconds, 10.0, &mut problems),
        catch_up: seconds(
            "daemon.catch-up-seconds",
            d.catch_up_seconds,
            300.0,
            &mut problems,
        ),
        ballast_bytes: ballast_mib << 20,
        write_rate_window: Duration::from_secs(d.write_rate_window_seconds.unwrap_or(900).max(1)),
        max_missing_fraction,
        limits: Limits::default(),
    };
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ParseError::Invalid(problems))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_minimal_config_takes_the_documented_defaults() {
        let c = parse(
            "recordings-dir = \"/data/recorder/data\"\nstate-dir = \"/data/fleet/retention\"\n",
        )
        .unwrap();
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.update_reserve_bytes, 1 << 30);
        assert_eq!(c.cycle, Duration::from_secs(10));
        assert_eq!(
            c.index_path(),
            PathBuf::from("/data/fleet/retention/index.sqlite")
        );
        assert_eq!(c.trust_time, TrustTime::Auto, "the clock rule decides");
        assert_eq!(c.clock_roots, fleet_facts::Roots::system());
    }

    #[test]
    fn the_clock_rule_reads_its_facts_under_clock_root() {
        let c = parse("recordings-dir = \"/a\"\nstate-dir = \"/b\"\nclock-root = \"/tmp/fake\"\n")
            .unwrap();
        assert_eq!(
            c.clock_roots,
            fleet_facts::Roots::under(Path::new("/tmp/fake"))
        );
        let ParseError::Invalid(problems) =
            parse("recordings-dir = \"/a\"\nstate-dir = \"/b\"\nclock-root = \"fake\"\n")
                .unwrap_err()
        else {
            panic!("not a validation error")
        };
        assert!(
            problems.iter().any(|p| p.starts_with("clock-root:")),
            "{problems:?}"
        );
    }

    #[test]
    fn the_uploader_switch_follows_the_uploaders_station_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let station = dir.path().join("uploaderd.toml");
        let base = "recordings-dir = \"/a\"\nstate-dir = \"/b\"\n[policy]\n";
        let c = parse(&format!(
            "{base}uploader-config = \"{}\"\n",
            station.display()
        ))
        .unwrap();
        assert_eq!(c.uploader, UploaderSwitch::Auto(station.clone()));
        assert!(
            !c.policy_now().uploader_configured,
            "no uploader configured yet"
        );
        std::fs::write(&station, "[destination]\n").unwrap();
        assert!(c.policy_now().uploader_configured);
        let c = parse(&format!("{base}uploader = \"auto\"\n")).unwrap();
        assert_eq!(
            c.uploader,
            UploaderSwitch::Auto(PathBuf::from(DEFAULT_UPLOADER_CONFIG))
        );
        let c = parse(&format!("{base}uploader = false\n")).unwrap();
        assert!(!c.policy_now().uploader_configured);
        let e = parse(&format!("{base}uploader = \"maybe\"\n")).unwrap_err();
        assert!(matches!(e, ParseError::Invalid(p) if p[0].starts_with("policy.uploader")));
    }

    #[test]
    fn the_reference_configuration_sample_parses() {
        let doc = include_str!("../../../docs/reference/retentiond.md");
        let (_, after) = doc.split_once("## Configuration").unwrap();
        let (_, block) = after.split_once("```toml\n").unwrap();
        let (sample, _) = block.split_once("```").unwrap();
        let c = parse(sample).unwrap();
        assert_eq!(
            c.uploader,
            UploaderSwitch::Auto(PathBuf::from(DEFAULT_UPLOADER_CONFIG))
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = parse("recordings-dir = \"/a\"\nstate-dir = \"/b\"\nstate_dir2 = 1\n").unwrap_err();
        assert!(matches!(e, ParseError::Syntax(m) if m.contains("state_dir2")));
    }

    #[test]
    fn every_invalid_value_is_reported_with_its_key() {
        let e = parse(
            "recordings-dir = \"rel\"\nstate-dir = \"/b\"\ntrust-time = \"maybe\"\n\
             [policy]\nhousekeeping-at-percent = 95.0\npanic-at-percent = 120.0\n",
        )
        .unwrap_err();
        let ParseError::Invalid(problems) = e else {
            panic!("not a validation error")
        };
        let all = problems.join("\n");
        for key in [
            "recordings-dir",
            "trust-time",
            "policy.panic-at-percent",
            "policy:",
        ] {
            assert!(all.contains(key), "{key} missing in {all}");
        }
    }
}
