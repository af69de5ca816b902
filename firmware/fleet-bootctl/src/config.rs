//! `/etc/fleet/bootctl.toml`: which flow, and where its files are.
//!
//! ```toml
//! flow = "tryboot"                 # or "uboot"
//! attempts = 3                     # trial boots before a slot is given up (1..=9)
//! lock-file = "/run/fleet/bootctl.lock"
//!
//! [tryboot]
//! config-root = "/boot/config"     # mounted config partition (autoboot.txt)
//! data-root = "/data"              # attempt record at <data-root>/fleet/boot/attempts
//! bootloader-dir = "/proc/device-tree/chosen/bootloader"
//! boot-partition-a = 2
//! boot-partition-b = 3
//! reboot-command = ["systemctl", "reboot", "0 tryboot"]
//!
//! [uboot]
//! env-file = "/boot/uboot.env"
//! env-size = 0x4000
//! cmdline = "/proc/cmdline"
//! ```
use std::path::{Path, PathBuf};

use fleet_core::boot::Attempts;
use fleet_core::boot::autoboot::BootPartitions;
use serde::Deserialize;

use crate::tryboot::{TrybootBackend, TrybootPaths, default_reboot_command};
use crate::uboot::{UbootBackend, UbootPaths};
use crate::uenv::{DEFAULT_ENV_SIZE, MAX_ENV_SIZE};

/// Default location of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleet/bootctl.toml";
const DEFAULT_LOCK: &str = "/run/fleet/bootctl.lock";
const DEFAULT_BOOTLOADER_DIR: &str = "/proc/device-tree/chosen/bootloader";
const DEFAULT_CMDLINE: &str = "/proc/cmdline";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    flow: String,
    attempts: Option<u8>,
    lock_file: Option<PathBuf>,
    tryboot: Option<RawTryboot>,
    uboot: Option<RawUboot>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTryboot {
    config_root: PathBuf,
    data_root: PathBuf,
    bootloader_dir: Option<PathBuf>,
    boot_partition_a: Option<u8>,
    boot_partition_b: Option<u8>,
    reboot_command: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawUboot {
    env_file: PathBuf,
    env_size: Option<usize>,
    cmdline: Option<PathBuf>,
}

/// A validated configuration: one backend, ready to use.
#[derive(Debug, Clone)]
pub enum Config {
    Tryboot(TrybootBackend),
    Uboot(UbootBackend),
}

/// A configuration that cannot be used (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unable to parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unable to use {path}: {}", problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates, reporting every invalid key with its path.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let attempts = match raw.attempts {
            None => Attempts::default(),
            Some(n) => Attempts::new(n).unwrap_or_else(|| {
                problems.push(format!("attempts: {n} is outside 1..={}", Attempts::MAX));
                Attempts::default()
            }),
        };
        let lock = raw.lock_file.unwrap_or_else(|| PathBuf::from(DEFAULT_LOCK));
        let config = match raw.flow.as_str() {
            "tryboot" => {
                if raw.uboot.is_some() {
                    problems.push("uboot: section given but flow is \"tryboot\"".into());
                }
                match raw.tryboot {
                    None => {
                        problems.push("tryboot: section missing for flow \"tryboot\"".into());
                        None
                    }
                    Some(t) => {
                        let partitions = BootPartitions {
                            a: t.boot_partition_a.unwrap_or(BootPartitions::default().a),
                            b: t.boot_partition_b.unwrap_or(BootPartitions::default().b),
                        };
                        for (key, p) in [
                            ("tryboot.boot-partition-a", partitions.a),
                            ("tryboot.boot-partition-b", partitions.b),
                        ] {
                            if !(1..=63).contains(&p) {
                                problems.push(format!("{key}: {p} is outside 1..=63"));
                            }
                        }
                        if partitions.a == partitions.b {
                            problems.push(
                                "tryboot.boot-partition-b: same partition as boot-partition-a"
                                    .into(),
                            );
                        }
                        let reboot_command =
                            t.reboot_command.unwrap_or_else(default_reboot_command);
                        if reboot_command.is_empty() || reboot_command[0].is_empty() {
                            problems.push("tryboot.reboot-command: must name a program".into());
                        }
                        let bootloader_dir = t
                            .bootloader_dir
                            .unwrap_or_else(|| PathBuf::from(DEFAULT_BOOTLOADER_DIR));
                        Some(Config::Tryboot(TrybootBackend {
                            paths: TrybootPaths::under(
                                &t.config_root,
                                &t.data_root,
                                &bootloader_dir,
                                &lock,
                            ),
                            partitions,
                            attempts,
                            reboot_command,
                        }))
                    }
                }
            }
            "uboot" => {
                if raw.tryboot.is_some() {
                    problems.push("tryboot: section given but flow is \"uboot\"".into());
                }
                match raw.uboot {
                    None => {
                        problems.push("uboot: section missing for flow \"uboot\"".into());
                        None
                    }
                    Some(u) => {
                        let env_size = u.env_size.unwrap_or(DEFAULT_ENV_SIZE);
                        if !(16..=MAX_ENV_SIZE).contains(&env_size) {
                            problems.push(format!(
                                "uboot.env-size: {env_size} is outside 16..={MAX_ENV_SIZE}"
                            ));
                        }
                        Some(Config::Uboot(UbootBackend {
                            paths: UbootPaths {
                                env_file: u.env_file,
                                cmdline: u
                                    .cmdline
                                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CMDLINE)),
                                lock,
                            },
                            env_size,
                            attempts,
                        }))
                    }
                }
            }
            other => {
                problems.push(format!("flow: {other:?} is not \"tryboot\" or \"uboot\""));
                None
            }
        };
        match config {
            Some(c) if problems.is_empty() => Ok(c),
            _ => Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("bootctl.toml"))
    }

    #[test]
    fn tryboot_config_fills_in_the_contract_defaults() {
        let c = parse("flow = \"tryboot\"\n[tryboot]\nconfig-root = \"/c\"\ndata-root = \"/d\"\n")
            .expect("valid");
        let Config::Tryboot(t) = c else {
            panic!("tryboot expected")
        };
        assert_eq!(t.paths.autoboot, PathBuf::from("/c/autoboot.txt"));
        assert_eq!(t.paths.record, PathBuf::from("/d/fleet/boot/attempts"));
        assert_eq!(t.partitions, BootPartitions { a: 2, b: 3 });
        assert_eq!(t.attempts.get(), 3);
        assert_eq!(t.reboot_command, vec!["systemctl", "reboot", "0 tryboot"]);
    }

    #[test]
    fn uboot_config_reads_hex_env_size() {
        let c = parse("flow = \"uboot\"\nattempts = 2\n[uboot]\nenv-file = \"/b/uboot.env\"\nenv-size = 0x4000\n").expect("valid");
        let Config::Uboot(u) = c else {
            panic!("uboot expected")
        };
        assert_eq!((u.env_size, u.attempts.get()), (0x4000, 2));
    }

    #[test]
    fn every_invalid_key_is_reported_with_its_path() {
        let err = parse(
            "flow = \"tryboot\"\nattempts = 12\n[tryboot]\nconfig-root = \"/c\"\ndata-root = \"/d\"\nboot-partition-a = 3\nreboot-command = []\n",
        )
        .expect_err("invalid");
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("attempts:")));
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("tryboot.boot-partition-b:"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("tryboot.reboot-command:"))
        );
        assert!(matches!(
            parse("flow = \"grub\"\n"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            parse("flow = \"uboot\"\nenv = 1\n"),
            Err(ConfigError::Parse { .. })
        ));
    }
}
