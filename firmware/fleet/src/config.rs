//! `/etc/fleet/fleet.toml`: where the recovery CLI finds the station's state. Every key is
//! optional; the defaults are the image's paths, so a station without the file works.
//!
//! ```toml
//! data-root = "/data"                          # the data partition
//! bootctl-config = "/etc/fleet/bootctl.toml"   # the boot flow (fleet-bootctl's config)
//! dbus-address = "unix:path=/run/dbus/system_bus_socket"   # where RAUC listens
//! profile = "production"                       # or "development" (accepts plain bundles)
//! identity-file = "/data/fleet/identity/updated.toml"      # default: under data-root
//! os-release = "/etc/os-release"               # VERSION_ID of the running image
//! daemons = ["fleet-updated", "fleet-recorderd", "fleet-retentiond"]
//! journal-units = "fleet-*"                    # `fleet logs`: journalctl -u <this>
//! log-lines = 50                               # `fleet logs` default line count
//! max-bundle-bytes = 2147483648                # larger bundle files are refused
//! rauc-slot-class = "rootfs"
//! systemd-dir = "/run/systemd/system"          # exists only when systemd runs
//! journald-dir = "/run/systemd/journal"        # exists only when journald runs
//! ```
//!
//! Flags and environment variables (`--data-root`/`FLEET_DATA_ROOT`, `--bootctl-config`/
//! `FLEET_BOOTCTL_CONFIG`, `--dbus-address`/`FLEET_DBUS_ADDRESS`) override the file.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::limits::MAX_LOG_LINES;

/// The default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleet/fleet.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    data_root: Option<PathBuf>,
    bootctl_config: Option<PathBuf>,
    dbus_address: Option<String>,
    profile: Option<String>,
    identity_file: Option<PathBuf>,
    os_release: Option<PathBuf>,
    daemons: Option<Vec<String>>,
    journal_units: Option<String>,
    log_lines: Option<u32>,
    max_bundle_bytes: Option<u64>,
    rauc_slot_class: Option<String>,
    systemd_dir: Option<PathBuf>,
    journald_dir: Option<PathBuf>,
}

/// Which bundles this station accepts from a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Only `verity` (or `crypt`) bundles: a `plain` bundle is refused before RAUC sees it.
    Production,
    /// Any format RAUC accepts (development hosts without device-mapper).
    Development,
}

/// Values given on the command line or in the environment; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_root: Option<PathBuf>,
    pub bootctl_config: Option<PathBuf>,
    pub dbus_address: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub data_root: PathBuf,
    pub bootctl_config: PathBuf,
    pub dbus_address: String,
    pub profile: Profile,
    pub identity_file: PathBuf,
    pub os_release: PathBuf,
    pub daemons: Vec<String>,
    pub journal_units: String,
    pub log_lines: u32,
    pub max_bundle_bytes: u64,
    pub rauc_slot_class: String,
    pub systemd_dir: PathBuf,
    pub journald_dir: PathBuf,
}

/// A configuration the CLI cannot use (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to parse config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unable to use config {path}: {}", problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    /// Reads `path`. A missing file at the default location means "all defaults"; a file named
    /// explicitly (`explicit`) must exist.
    pub fn load(path: &Path, explicit: bool, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => String::new(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        Config::parse(&text, path, overrides)
    }

    /// Parses and validates, listing every invalid key.
    pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let data_root = overrides
            .data_root
            .clone()
            .or(raw.data_root)
            .unwrap_or_else(|| PathBuf::from("/data"));
        let bootctl_config = overrides
            .bootctl_config
            .clone()
            .or(raw.bootctl_config)
            .unwrap_or_else(|| PathBuf::from(fleet_bootctl::config::DEFAULT_CONFIG_PATH));
        let dbus_address = overrides
            .dbus_address
            .clone()
            .or(raw.dbus_address)
            .unwrap_or_else(|| fleet_rauc::SYSTEM_BUS_ADDRESS.to_owned());
        let profile = match raw.profile.as_deref() {
            None | Some("production") => Profile::Production,
            Some("development") => Profile::Development,
            Some(other) => {
                problems.push(format!(
                    "profile: {other:?} is not \"production\" or \"development\""
                ));
                Profile::Production
            }
        };
        let identity_file = raw
            .identity_file
            .unwrap_or_else(|| data_root.join("fleet/identity/updated.toml"));
        let os_release = raw
            .os_release
            .unwrap_or_else(|| PathBuf::from("/etc/os-release"));
        let daemons = raw.daemons.unwrap_or_else(|| {
            ["fleet-updated", "fleet-recorderd", "fleet-retentiond"]
                .map(String::from)
                .to_vec()
        });
        for (i, d) in daemons.iter().enumerate() {
            if d.is_empty() || d.starts_with('-') || d.chars().any(char::is_whitespace) {
                problems.push(format!("daemons[{i}]: {d:?} is not a unit name"));
            }
        }
        let journal_units = raw.journal_units.unwrap_or_else(|| "fleet-*".to_owned());
        if journal_units.is_empty() || journal_units.starts_with('-') {
            problems.push("journal-units: must be a unit name or pattern".into());
        }
        let log_lines = raw.log_lines.unwrap_or(50);
        if !(1..=MAX_LOG_LINES).contains(&log_lines) {
            problems.push(format!(
                "log-lines: {log_lines} is outside 1..={MAX_LOG_LINES}"
            ));
        }
        let max_bundle_bytes = raw.max_bundle_bytes.unwrap_or(2 * 1024 * 1024 * 1024);
        if max_bundle_bytes == 0 {
            problems.push("max-bundle-bytes: must be above 0".into());
        }
        let rauc_slot_class = raw.rauc_slot_class.unwrap_or_else(|| "rootfs".to_owned());
        if rauc_slot_class.is_empty() {
            problems.push("rauc-slot-class: must not be empty".into());
        }
        for (key, p) in [
            ("data-root", &data_root),
            ("bootctl-config", &bootctl_config),
            ("identity-file", &identity_file),
            ("os-release", &os_release),
        ] {
            if !p.is_absolute() {
                problems.push(format!("{key}: {} is not an absolute path", p.display()));
            }
        }
        if dbus_address.is_empty() {
            problems.push("dbus-address: must not be empty".into());
        }
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(Config {
            data_root,
            bootctl_config,
            dbus_address,
            profile,
            identity_file,
            os_release,
            daemons,
            journal_units,
            log_lines,
            max_bundle_bytes,
            rauc_slot_class,
            systemd_dir: raw
                .systemd_dir
                .unwrap_or_else(|| PathBuf::from("/run/systemd/system")),
            journald_dir: raw
                .journald_dir
                .unwrap_or_else(|| PathBuf::from("/run/systemd/journal")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_gives_the_image_defaults_and_production() {
        let c = Config::parse("", Path::new("fleet.toml"), &Overrides::default()).expect("valid");
        assert_eq!(c.data_root, PathBuf::from("/data"));
        assert_eq!(c.bootctl_config, PathBuf::from("/etc/fleet/bootctl.toml"));
        assert_eq!(c.dbus_address, "unix:path=/run/dbus/system_bus_socket");
        assert_eq!(c.profile, Profile::Production);
        assert_eq!(
            c.identity_file,
            PathBuf::from("/data/fleet/identity/updated.toml")
        );
        assert_eq!(c.daemons.len(), 3);
    }

    #[test]
    fn overrides_win_over_the_file_and_move_the_identity_with_the_data_root() {
        let o = Overrides {
            data_root: Some("/tmp/d".into()),
            dbus_address: Some("unix:path=/tmp/bus".into()),
            ..Overrides::default()
        };
        let c = Config::parse(
            "data-root = \"/data\"\nprofile = \"development\"\n",
            Path::new("f"),
            &o,
        )
        .expect("valid");
        assert_eq!(c.data_root, PathBuf::from("/tmp/d"));
        assert_eq!(
            c.identity_file,
            PathBuf::from("/tmp/d/fleet/identity/updated.toml")
        );
        assert_eq!(c.dbus_address, "unix:path=/tmp/bus");
        assert_eq!(c.profile, Profile::Development);
    }

    #[test]
    fn every_invalid_key_is_listed_and_unknown_keys_are_refused() {
        let err = Config::parse(
            "profile = \"lab\"\nlog-lines = 0\ndata-root = \"data\"\n",
            Path::new("f"),
            &Overrides::default(),
        )
        .expect_err("invalid");
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(matches!(
            Config::parse("colour = true\n", Path::new("f"), &Overrides::default()),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn a_missing_default_file_is_all_defaults_but_a_named_one_must_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("fleet.toml");
        assert!(Config::load(&missing, false, &Overrides::default()).is_ok());
        assert!(matches!(
            Config::load(&missing, true, &Overrides::default()),
            Err(ConfigError::Read { .. })
        ));
    }
}
