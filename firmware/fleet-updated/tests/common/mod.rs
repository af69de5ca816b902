//! Simulated stations for the integration tests: each runs `fleet_updated::sim::run_sim_station`
//! (the daemon with in-process reboots) on its own temp root, against a real mosquitto.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_sim::{Behaviour, SimBootloader};
use fleet_testkit::Mosquitto;
use fleet_updated::Config;
use fleet_updated::sim::{SimRunError, SimSummary, run_sim_station};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub const COMPATIBLE: &str = "fleet-sim";
/// Generous upper bound for anything a station does in these tests (they take well under it).
pub const WAIT: Duration = Duration::from_secs(30);

pub struct StationOptions {
    pub groups: Vec<String>,
    pub fail_health: bool,
    pub download_space_bytes: u64,
    pub chunk_window: usize,
    pub stall_timeout_secs: u64,
    /// `wall-clock`: `trusted` by default (the simulated stations' override); `system` asks the
    /// clock rule, reading the facts under `clock_root`.
    pub wall_clock: &'static str,
    /// `clock-root`: a fake tree of timesyncd's files and the RTC (`fleet_facts::Roots::under`).
    pub clock_root: Option<PathBuf>,
    pub health_delay_ms: u64,
}

impl Default for StationOptions {
    fn default() -> Self {
        Self {
            groups: vec![],
            fail_health: false,
            download_space_bytes: 64 * 1024 * 1024,
            chunk_window: 4,
            stall_timeout_secs: 60,
            wall_clock: "trusted",
            clock_root: None,
            health_delay_ms: 0,
        }
    }
}

pub struct Station {
    pub id: String,
    pub dir: tempfile::TempDir,
    pub config: Config,
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<Result<SimSummary, SimRunError>>>,
}

impl Station {
    pub fn sim_root(&self) -> PathBuf {
        self.dir.path().join("sim")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn bootloader(&self) -> SimBootloader {
        SimBootloader::new(self.sim_root())
    }

    /// Stops the daemon (as SIGTERM would) and returns its summary.
    pub async fn stop(mut self) -> SimSummary {
        let _ = self.stop.send(true);
        let handle = self.handle.take().expect("running");
        tokio::time::timeout(WAIT, handle)
            .await
            .expect("station stops in time")
            .expect("station task")
            .expect("station run")
    }

    /// Kills the station mid-flight, as a power cut would (no goodbye, no flush).
    pub fn power_cut(mut self) -> (tempfile::TempDir, Config) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        (dir, self.config.clone())
    }
}

impl Drop for Station {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

pub fn config_text(
    id: &str,
    broker: &Mosquitto,
    key_hex: &str,
    dir: &Path,
    o: &StationOptions,
) -> String {
    let groups = o
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let fail = dir.join("fail-health");
    format!(
        r#"device-id = "{id}"
groups = [{groups}]
compatible = "{COMPATIBLE}"
data-dir = "{data}"
trusted-keys = ["{key_hex}"]
wall-clock = "{clock}"
{clock_root}

[mqtt]
host = "127.0.0.1"
port = {port}
keep-alive-secs = 5
backoff-initial-ms = 50
backoff-max-ms = 300

[update]
download-space-bytes = {space}
chunk-window = {window}
chunk-retries = 2
chunk-retry-ms = 100
stall-timeout-secs = {stall}

[sim]
root = "{root}"
factory-version = "1.0.0"
fail-health-file = "{fail}"
health-delay-ms = {delay}
"#,
        data = dir.join("data").display(),
        clock = o.wall_clock,
        clock_root = o
            .clock_root
            .as_ref()
            .map(|r| format!("clock-root = \"{}\"", r.display()))
            .unwrap_or_default(),
        port = broker.port(),
        space = o.download_space_bytes,
        window = o.chunk_window,
        stall = o.stall_timeout_secs,
        root = dir.join("sim").display(),
        fail = fail.display(),
        delay = o.health_delay_ms,
    )
}

/// Starts a simulated station on a fresh root.
pub fn spawn(id: &str, broker: &Mosquitto, key_hex: &str, o: StationOptions) -> Station {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(id, broker, key_hex, dir.path(), &o);
    let path = dir.path().join("updated.toml");
    std::fs::write(&path, &text).expect("write config");
    let config = Config::load(&path).expect("valid config");
    if o.fail_health {
        std::fs::write(dir.path().join("fail-health"), b"fail").expect("fail file");
    }
    start(id, dir, config)
}

/// Starts (again) a station on an existing root.
pub fn start(id: &str, dir: tempfile::TempDir, config: Config) -> Station {
    let (stop, rx) = watch::channel(false);
    let handle = tokio::spawn(run_sim_station(config.clone(), rx));
    Station {
        id: id.to_owned(),
        dir,
        config,
        stop,
        handle: Some(handle),
    }
}

/// A simulated bundle of `len` payload bytes.
pub fn bundle(version: &str, behaviour: Behaviour, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    fleet_sim::bundle::build(
        &semver::Version::parse(version).expect("version"),
        COMPATIBLE,
        behaviour,
        &payload,
    )
}
