//! `/etc/fleet/updated.toml`: parsed into raw types, then validated into [`Config`] with every
//! invalid key reported by its path.
//!
//! ```toml
//! device-id = "stn-0042"          # or device-id-file = "/data/fleet/identity/device-id"
//! groups = ["canary"]
//! compatible = "fleet-rpi5"
//! data-dir = "/data"
//! trusted-keys = ["<64 hex digits: ed25519 public key>"]
//! wall-clock = "system"           # the clock rule (ADR 0004); or "untrusted"; "trusted": tests
//! clock-root = "/"                # run/, var/lib/ and sys/ of the clock facts: tests only
//!
//! [mqtt]                           # fleet_mqtt::config: the one parser every daemon uses
//! host = "broker.example"
//!
//! [update]
//! download-space-bytes = 2147483648  # bundles larger than this are refused
//! chunk-window = 8                  # chunk topics subscribed at once
//! chunk-retries = 3                 # a chunk failing its hash this often fails the download
//! chunk-retry-ms = 2000
//! stall-timeout-secs = 600          # no chunk for this long: the download fails
//! max-trial-attempts = 3
//! delta-window-log-max = 30         # largest zstd window (2^n bytes) of a delta patch taken
//!
//! installer = "rauc"                # or "sim"; default "sim" when [sim] is given
//! boot-flow = "uboot"                # or "tryboot", "sim"; default "sim" when [sim] is given
//! bootctl-config = "/etc/fleet/bootctl.toml"   # tryboot/uboot: the file RAUC's backend reads
//! version-file = "/etc/fleet-version"          # the booted image's version
//! version-floor-file = "/data/fleet/update/version-floor"  # default <data-dir>/fleet/update/...
//! reboot-command = ["systemctl", "reboot"]
//!
//! [rauc]                             # see `adapters`
//! [health]                           # see `health`; docs/reference/updated.md
//! [config-push]                      # see `config_apply`; absent: config topics are ignored
//!
//! [sim]                              # only on simulated stations
//! root = "/var/lib/fleet-sim/stn-0042"
//! factory-version = "1.0.0"
//! fail-health-file = "/var/lib/fleet-sim/stn-0042/fail-health"
//! health-delay-ms = 0                # how long the simulated health check takes
//! ```
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::ids::{DeviceId, GroupId};
use fleet_proto::envelope::TrustedKeys;
use serde::Deserialize;

use fleet_mqtt::config::{MqttConfig, RawMqtt};

use crate::adapters::{BootFlowKind, InstallerKind, RaucConfig, RawRauc};
use crate::health::{HealthConfig, RawHealth};

/// What the daemon cannot run without: the station's settings (ADR 0008). Until they are there
/// it starts and waits. Each probe meets its need with a harmless value so the rest is checked.
pub const STATION_NEEDS: &[fleet_config::Need] = &[
    fleet_config::Need(&["device-id", "device-id-file"], "device-id = \"probe\""),
    fleet_config::Need(
        &["trusted-keys"],
        "trusted-keys = [\"3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29\"]",
    ),
    fleet_config::Need(&["mqtt.host"], "[mqtt]\nhost = \"localhost\""),
];

/// An invalid configuration: every problem, each with the key path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unable to read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("unable to parse config {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("unable to accept config {path}:\n{}", .problems.join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawConfig {
    device_id: Option<String>,
    device_id_file: Option<PathBuf>,
    #[serde(default)]
    groups: Vec<String>,
    compatible: String,
    data_dir: PathBuf,
    trusted_keys: Vec<String>,
    #[serde(default)]
    wall_clock: WallClock,
    clock_root: Option<PathBuf>,
    mqtt: RawMqtt,
    #[serde(default)]
    update: RawUpdate,
    sim: Option<RawSim>,
    installer: Option<InstallerKind>,
    boot_flow: Option<BootFlowKind>,
    bootctl_config: Option<PathBuf>,
    version_file: Option<PathBuf>,
    version_floor_file: Option<PathBuf>,
    reboot_command: Option<Vec<String>>,
    #[serde(default)]
    rauc: RawRauc,
    health: Option<RawHealth>,
    config_push: Option<crate::config_apply::RawApplier>,
}

/// Default `[update] chunk-window`: chunk topics subscribed at once.
pub const DEFAULT_CHUNK_WINDOW: usize = 8;

/// Default `[update] delta-window-log-max`: patches of bundles up to 1 GiB.
pub const DEFAULT_DELTA_WINDOW_LOG_MAX: u8 = 30;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
struct RawUpdate {
    download_space_bytes: u64,
    chunk_window: usize,
    chunk_retries: u32,
    chunk_retry_ms: u64,
    stall_timeout_secs: u64,
    max_trial_attempts: u8,
    delta_window_log_max: u8,
}

impl Default for RawUpdate {
    fn default() -> Self {
        Self {
            download_space_bytes: 2 * 1024 * 1024 * 1024,
            chunk_window: DEFAULT_CHUNK_WINDOW,
            chunk_retries: 3,
            chunk_retry_ms: 2000,
            stall_timeout_secs: 600,
            max_trial_attempts: 3,
            delta_window_log_max: DEFAULT_DELTA_WINDOW_LOG_MAX,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawSim {
    root: PathBuf,
    #[serde(default = "default_factory")]
    factory_version: String,
    fail_health_file: Option<PathBuf>,
    #[serde(default)]
    health_delay_ms: u64,
}

fn default_factory() -> String {
    "1.0.0".into()
}

/// Where the answer to "is the wall clock trusted" (offer expiry) comes from (ADR 0004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WallClock {
    /// The station's clock rule, asked at every decision: `fleet_facts::clock::now` reads
    /// systemd-timesyncd's files and the RTC under `clock-root` and applies
    /// `fleet_core::clock::decide_trust`, as every other daemon does.
    #[default]
    System,
    /// Never judge by wall-clock time, whatever the clock rule says (a safe override).
    Untrusted,
    /// Always trust the system clock, without asking the rule: only for simulated stations and
    /// tests. `--check-config` and every start warn when a station with real ports says it.
    Trusted,
}

impl WallClock {
    /// True when a station with real ports (not `[sim]`) says `trusted`: it would judge offer
    /// expiry by a clock that may read 1970 after a power loss.
    #[must_use]
    pub fn is_overridden_on_a_real_station(self, sim: bool) -> bool {
        self == Self::Trusted && !sim
    }
}

/// How downloads behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateConfig {
    /// The space this station may use for downloads; larger bundles are refused.
    pub download_space_bytes: u64,
    /// Chunk topics subscribed at once (flow control: the broker sends at most this many
    /// chunks ahead of what is written).
    pub chunk_window: usize,
    pub chunk_retries: u32,
    pub chunk_retry: Duration,
    pub stall_timeout: Duration,
    pub max_trial_attempts: u8,
    /// The largest decoder window (log2 bytes) of a delta patch the station takes (ADR 0012):
    /// a delta whose signed description or frame declares more is not used (full bundle,
    /// `window-too-large`). The rebuild maps the base and the output, so the window costs no
    /// heap; this bounds how far a patch reaches and the mapped size.
    pub delta_window_log_max: u8,
}

/// A simulated station (see `fleet-sim`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    pub root: PathBuf,
    pub factory_version: semver::Version,
    pub fail_health_file: Option<PathBuf>,
    /// How long the simulated health check takes (a slow check keeps the station busy).
    pub health_delay: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub device_id: DeviceId,
    pub groups: Vec<GroupId>,
    pub compatible: String,
    pub data_dir: PathBuf,
    pub trusted_keys: TrustedKeys,
    pub wall_clock: WallClock,
    /// Where the clock facts are read (`<root>/run`, `<root>/var/lib`, `<root>/sys`).
    pub clock_roots: fleet_facts::Roots,
    pub mqtt: MqttConfig,
    pub update: UpdateConfig,
    pub sim: Option<SimConfig>,
    /// Which installer writes the slots.
    pub installer: InstallerKind,
    /// Which boot flow picks the slot.
    pub boot_flow: BootFlowKind,
    /// `fleet-bootctl`'s configuration (tryboot and uboot flows).
    pub bootctl_config: Option<PathBuf>,
    /// Where the booted image's version is read when the boot flow does not know it.
    pub version_file: Option<PathBuf>,
    /// The committed version is written here (only ever raised); the bundles' install-check
    /// hook refuses bundles below it.
    pub version_floor_file: PathBuf,
    /// Run to reboot (after the journal holds the intent); tryboot trials use the flow's own.
    pub reboot_command: Vec<String>,
    pub rauc: RaucConfig,
    pub health: HealthConfig,
    /// The applier of signed configuration pushes (ADR 0011); `None`: config topics are not
    /// even subscribed.
    pub config_push: Option<crate::config_apply::ApplierConfig>,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` (read from `path`, used in messages).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let mut problems = Vec::new();
        let device_id = match (&raw.device_id, &raw.device_id_file) {
            (Some(id), None) => Some(id.clone()),
            (None, Some(file)) => match std::fs::read_to_string(file) {
                Ok(s) => Some(s.trim().to_owned()),
                Err(e) => {
                    problems.push(format!(
                        "device-id-file: unable to read {}: {e}",
                        file.display()
                    ));
                    None
                }
            },
            _ => {
                problems.push("device-id: give exactly one of device-id and device-id-file".into());
                None
            }
        }
        .and_then(|s| match DeviceId::new(s) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("device-id: {e}"));
                None
            }
        });
        let mut groups = Vec::new();
        for (i, g) in raw.groups.iter().enumerate() {
            match GroupId::new(g.clone()) {
                Ok(g) => groups.push(g),
                Err(e) => problems.push(format!("groups[{i}]: {e}")),
            }
        }
        if raw.compatible.is_empty()
            || raw.compatible.len() > fleet_core::update::offer::MAX_COMPATIBLE_LEN
        {
            problems.push("compatible: must be 1..=64 bytes".into());
        }
        if !raw.data_dir.is_absolute() {
            problems.push("data-dir: must be an absolute path".into());
        }
        let mut trusted_keys = TrustedKeys::new();
        for (i, k) in raw.trusted_keys.iter().enumerate() {
            match TrustedKeys::parse_public_hex(k) {
                Ok(key) => {
                    trusted_keys.insert(key);
                }
                Err(e) => problems.push(format!("trusted-keys[{i}]: {e}")),
            }
        }
        if raw.trusted_keys.is_empty() {
            problems.push("trusted-keys: at least one key is needed".into());
        }
        let mqtt = raw.mqtt.validate(&raw.data_dir, &mut problems);
        let clock_root = raw.clock_root.clone().unwrap_or_else(|| PathBuf::from("/"));
        if !clock_root.is_absolute() {
            problems.push("clock-root: must be an absolute path".into());
        }
        let u = &raw.update;
        if u.download_space_bytes == 0 {
            problems.push("update.download-space-bytes: must not be 0".into());
        }
        if !(1..=64).contains(&u.chunk_window) {
            problems.push("update.chunk-window: must be 1..=64".into());
        }
        if !(1..=100).contains(&u.chunk_retries) {
            problems.push("update.chunk-retries: must be 1..=100".into());
        }
        if u.stall_timeout_secs == 0 {
            problems.push("update.stall-timeout-secs: must not be 0".into());
        }
        if !(fleet_proto::delta::MIN_WINDOW_LOG..=fleet_proto::delta::MAX_WINDOW_LOG)
            .contains(&u.delta_window_log_max)
        {
            problems.push(format!(
                "update.delta-window-log-max: must be {}..={}",
                fleet_proto::delta::MIN_WINDOW_LOG,
                fleet_proto::delta::MAX_WINDOW_LOG
            ));
        }
        if !(1..=9).contains(&u.max_trial_attempts) {
            problems.push("update.max-trial-attempts: must be 1..=9".into());
        }
        let sim = match &raw.sim {
            None => None,
            Some(s) => {
                if !s.root.is_absolute() {
                    problems.push("sim.root: must be an absolute path".into());
                }
                if s.health_delay_ms > 600_000 {
                    problems.push("sim.health-delay-ms: must be at most 600000".into());
                }
                match semver::Version::parse(&s.factory_version) {
                    Ok(v) => Some(SimConfig {
                        root: s.root.clone(),
                        factory_version: v,
                        fail_health_file: s.fail_health_file.clone(),
                        health_delay: Duration::from_millis(s.health_delay_ms),
                    }),
                    Err(e) => {
                        problems.push(format!("sim.factory-version: {e}"));
                        None
                    }
                }
            }
        };
        let (installer, boot_flow) = match (raw.installer, raw.boot_flow, &raw.sim) {
            (Some(i), Some(b), _) => (i, b),
            (None, None, Some(_)) => (InstallerKind::Sim, BootFlowKind::Sim),
            (i, b, _) => {
                if i.is_none() {
                    problems.push("installer: say \"rauc\" or \"sim\"".into());
                }
                if b.is_none() {
                    problems.push("boot-flow: say \"tryboot\", \"uboot\" or \"sim\"".into());
                }
                (
                    i.unwrap_or(InstallerKind::Sim),
                    b.unwrap_or(BootFlowKind::Sim),
                )
            }
        };
        if raw.sim.is_none() && (installer == InstallerKind::Sim || boot_flow == BootFlowKind::Sim)
        {
            problems.push("sim: the simulated installer or boot flow needs a [sim] section".into());
        }
        if matches!(boot_flow, BootFlowKind::Tryboot | BootFlowKind::Uboot) {
            match &raw.bootctl_config {
                None => problems.push(format!(
                    "bootctl-config: needed for boot-flow {boot_flow:?} (fleet-bootctl's file)"
                )),
                Some(p) if !p.is_absolute() => {
                    problems.push("bootctl-config: must be an absolute path".into());
                }
                Some(_) => {}
            }
        }
        for (key, p) in [
            ("version-file", &raw.version_file),
            ("version-floor-file", &raw.version_floor_file),
        ] {
            if p.as_ref().is_some_and(|p| !p.is_absolute()) {
                problems.push(format!("{key}: must be an absolute path"));
            }
        }
        let reboot_command = raw
            .reboot_command
            .clone()
            .unwrap_or_else(|| vec!["systemctl".into(), "reboot".into()]);
        if reboot_command.first().is_none_or(String::is_empty) {
            problems.push("reboot-command: must name a program".into());
        }
        let rauc = raw.rauc.validate(&mut problems);
        let health = raw
            .health
            .as_ref()
            .map(|h| h.validate(&mut problems))
            .unwrap_or_default();
        let config_push = raw
            .config_push
            .as_ref()
            .map(|c| c.validate(&raw.data_dir, &mut problems));
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        let device_id = device_id.ok_or_else(|| ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec!["device-id: missing".into()],
        })?;
        let version_floor_file = raw
            .version_floor_file
            .clone()
            .unwrap_or_else(|| raw.data_dir.join("fleet/update/version-floor"));
        Ok(Config {
            device_id,
            groups,
            compatible: raw.compatible,
            data_dir: raw.data_dir,
            trusted_keys,
            wall_clock: raw.wall_clock,
            clock_roots: fleet_facts::Roots::under(&clock_root),
            mqtt,
            update: UpdateConfig {
                download_space_bytes: u.download_space_bytes,
                chunk_window: u.chunk_window,
                chunk_retries: u.chunk_retries,
                chunk_retry: Duration::from_millis(u.chunk_retry_ms),
                stall_timeout: Duration::from_secs(u.stall_timeout_secs),
                max_trial_attempts: u.max_trial_attempts,
                delta_window_log_max: u.delta_window_log_max,
            },
            sim,
            installer,
            boot_flow,
            bootctl_config: raw.bootctl_config,
            version_file: raw.version_file,
            version_floor_file,
            reboot_command,
            rauc,
            health,
            config_push,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

    fn good() -> String {
        format!(
            "device-id = \"stn-1\"\ngroups = [\"canary\"]\ncompatible = \"fleet-sim\"\n\
             data-dir = \"/tmp/x\"\ntrusted-keys = [\"{KEY}\"]\ninstaller = \"rauc\"\n\
             boot-flow = \"uboot\"\nbootctl-config = \"/etc/fleet/bootctl.toml\"\n\
             [mqtt]\nhost = \"127.0.0.1\"\n"
        )
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let c = Config::parse(Path::new("t.toml"), &good()).expect("valid");
        assert_eq!(c.device_id.as_str(), "stn-1");
        assert_eq!(c.mqtt.port, 1883);
        assert_eq!(c.update.chunk_window, 8);
        assert_eq!(c.wall_clock, WallClock::System);
        assert_eq!(c.clock_roots, fleet_facts::Roots::system());
        assert_eq!(c.trusted_keys.len(), 1);
        assert_eq!(c.installer, InstallerKind::Rauc);
        assert_eq!(
            c.version_floor_file,
            Path::new("/tmp/x/fleet/update/version-floor")
        );
        assert_eq!(c.health, HealthConfig::default());
    }

    #[test]
    fn real_ports_need_their_boot_flow_file_and_sim_ports_a_sim_section() {
        let text = format!(
            "device-id = \"stn-1\"\ncompatible = \"c\"\ndata-dir = \"/tmp/x\"\n\
             trusted-keys = [\"{KEY}\"]\ninstaller = \"sim\"\nboot-flow = \"tryboot\"\n\
             [mqtt]\nhost = \"h\"\n[health]\ndeadline-secs = 0\n"
        );
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(Path::new("t.toml"), &text)
        else {
            panic!("expected invalid");
        };
        let all = problems.join("\n");
        for key in ["sim:", "bootctl-config:", "health.deadline-secs"] {
            assert!(all.contains(key), "{key} not reported in {all}");
        }
    }

    fn with_mqtt(mqtt: &str) -> Result<Config, ConfigError> {
        let text = good().replace("[mqtt]\nhost = \"127.0.0.1\"\n", mqtt);
        Config::parse(Path::new("t.toml"), &text)
    }

    fn problems(r: Result<Config, ConfigError>) -> String {
        match r {
            Err(ConfigError::Invalid { problems, .. }) => problems.join("\n"),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_loopback_broker_defaults_to_plain_on_1883() {
        let c = with_mqtt("[mqtt]\nhost = \"localhost\"\n").expect("valid");
        assert_eq!(c.mqtt.transport, fleet_mqtt::Transport::Plain);
        assert_eq!(c.mqtt.port, 1883);
        assert!(!c.mqtt.is_plain_over_a_network());
    }

    #[test]
    fn a_remote_broker_defaults_to_tls_and_needs_its_credential_files() {
        let all = problems(with_mqtt("[mqtt]\nhost = \"broker.example\"\n"));
        assert!(all.contains("mqtt.tls: needed"), "{all}");
        let c = with_mqtt(
            "[mqtt]\nhost = \"broker.example\"\n[mqtt.tls]\nca-file = \"/etc/fleet/ca.crt\"\n\
             cert-file = \"/tmp/x/id/stn.crt\"\nkey-file = \"/tmp/x/id/stn.key\"\n",
        )
        .expect("valid");
        assert_eq!(c.mqtt.port, 8883);
        let fleet_mqtt::Transport::Tls(tls) = &c.mqtt.transport else {
            panic!("not tls: {:?}", c.mqtt.transport);
        };
        assert_eq!(tls.server_verify, fleet_mqtt::ServerVerify::Enforce);
        assert_eq!(
            tls.client_auth.as_ref().map(|a| a.key.as_path()),
            Some(Path::new("/tmp/x/id/stn.key"))
        );
        let session = c.mqtt.session_config("stn-1".into());
        assert_eq!(
            (session.host.as_str(), session.port),
            ("broker.example", 8883)
        );
        assert_eq!(session.transport, c.mqtt.transport);
    }

    #[test]
    fn credential_files_outside_the_data_dir_are_refused() {
        let all = problems(with_mqtt(
            "[mqtt]\nhost = \"broker.example\"\nusername = \"stn-1\"\n\
             password-file = \"/etc/fleet/pw\"\n[mqtt.tls]\nca-file = \"/etc/fleet/ca.crt\"\n\
             cert-file = \"/etc/fleet/stn.crt\"\nkey-file = \"/tmp/x/../etc/stn.key\"\n",
        ));
        for key in [
            "mqtt.password-file",
            "mqtt.tls.cert-file",
            "mqtt.tls.key-file",
        ] {
            assert!(
                all.contains(&format!("{key}: must be an absolute path under data-dir")),
                "{key}: {all}"
            );
        }
    }

    #[test]
    fn inconsistent_transport_settings_are_each_reported() {
        let all = problems(with_mqtt(
            "[mqtt]\nhost = \"10.0.0.1\"\ntransport = \"plain\"\nusername = \"u\"\n\
             password-file = \"/tmp/x/pw\"\n[mqtt.tls]\nca-file = \"ca.crt\"\n",
        ));
        assert!(
            all.contains("mqtt.tls: given, but mqtt.transport is \"plain\""),
            "{all}"
        );
        let all = problems(with_mqtt(
            "[mqtt]\nhost = \"b\"\n[mqtt.tls]\nca-file = \"ca.crt\"\ncert-file = \"/tmp/x/c\"\n",
        ));
        assert!(
            all.contains("mqtt.tls.ca-file: must be an absolute path"),
            "{all}"
        );
        assert!(all.contains("both cert-file and key-file"), "{all}");
        // No value turns server verification off.
        assert!(matches!(
            with_mqtt(
                "[mqtt]\nhost = \"b\"\n[mqtt.tls]\nca-file = \"/ca.crt\"\nserver-verify = \"skip\"\n",
            ),
            Err(ConfigError::Parse { .. })
        ));
        let plain = with_mqtt("[mqtt]\nhost = \"10.0.2.100\"\ntransport = \"plain\"\n")
            .expect("explicit plain is allowed");
        assert!(plain.mqtt.is_plain_over_a_network());
    }

    #[test]
    fn the_wall_clock_follows_the_clock_rule_unless_a_word_overrides_it() {
        let with = |line: &str| Config::parse(Path::new("t.toml"), &format!("{line}\n{}", good()));
        let c = with("wall-clock = \"system\"\nclock-root = \"/tmp/fake\"").expect("valid");
        assert_eq!(c.wall_clock, WallClock::System);
        assert_eq!(
            c.clock_roots.run,
            Path::new("/tmp/fake/run"),
            "the facts are read under clock-root"
        );
        let c = with("wall-clock = \"untrusted\"").expect("valid");
        assert_eq!(c.wall_clock, WallClock::Untrusted);
        let c = with("wall-clock = \"trusted\"").expect("valid");
        assert!(c.wall_clock.is_overridden_on_a_real_station(false));
        assert!(!c.wall_clock.is_overridden_on_a_real_station(true));
        assert!(matches!(
            with("wall-clock = \"ntp\""),
            Err(ConfigError::Parse { .. })
        ));
        let all = problems(with("clock-root = \"fake\""));
        assert!(
            all.contains("clock-root: must be an absolute path"),
            "{all}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = good() + "colour = 1\n";
        assert!(matches!(
            Config::parse(Path::new("t.toml"), &text),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn every_invalid_value_is_reported_with_its_key() {
        let text = "device-id = \"Bad/Id\"\ngroups = [\"#\"]\ncompatible = \"\"\n\
                    data-dir = \"rel\"\ntrusted-keys = [\"zz\"]\n[mqtt]\nhost = \"\"\nport = 0\n\
                    [update]\nchunk-window = 0\n";
        let Err(ConfigError::Invalid { problems, .. }) = Config::parse(Path::new("t.toml"), text)
        else {
            panic!("expected invalid");
        };
        let all = problems.join("\n");
        for key in [
            "device-id",
            "groups[0]",
            "compatible",
            "data-dir",
            "trusted-keys[0]",
            "mqtt.host",
            "mqtt.port",
            "update.chunk-window",
        ] {
            assert!(all.contains(key), "{key} not reported in {all}");
        }
    }
}
