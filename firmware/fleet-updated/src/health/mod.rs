//! The health gate of a trial boot: the configured checks, run concurrently within one
//! deadline, and systemd's system state, then judged by the pure
//! `fleet_core::health::gate::decide` (the rule, and why, are documented there).
//!
//! Checks (the `[health]` section, see `docs/reference/updated.md`):
//! - `systemd:<unit>`: `systemctl is-active <unit>` says `active`. Without systemd (no
//!   `systemd-run-dir`, or no `systemctl`) the result is *unavailable*, which passes or fails
//!   as `systemd-unavailable` says.
//! - `recorder`: `fleet-recorderd`'s `status.json` was written within `max-age-secs` (by the
//!   monotonic clock, which both processes share), says `healthy`, and a device has closed a
//!   segment in this run (`segments-written` ≥ 1 with a `last-segment`).
//! - `broker`: the daemon's MQTT session is connected.
//! - `command:<name>`: the program exits 0 within its `timeout-secs`; on timeout it is killed.
//!
//! A check that says no is asked again every `retry-interval-ms` until the deadline (units
//! and the recorder need a moment after boot); its last answer counts.
//!
//! Always, and not configurable: the service manager's state, `systemctl is-system-running`
//! (the same `systemctl` and `systemd-run-dir`; its output is the state, its exit status,
//! non-zero for every state but `running`, is ignored). It is asked every retry interval while
//! the checks run: a system that is `stopping` ends the gate at once without a verdict. Once
//! every check has answered it is asked until the system is up (`running`, `degraded`) or the
//! deadline, and that last reading goes to the verdict. systemctl rather than the D-Bus
//! property: the unit checks already depend on it and its bus access under the unit's
//! sandbox (`tests/layer/test-unit-hardening.sh` runs it there), and no D-Bus client crate is
//! needed.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use fleet_core::slot::Slot;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ports::HealthCheck;
use fleet_core::health::gate::{self, Stance};
use fleet_core::update::offer::truncate as clip;

pub use fleet_core::health::gate::{
    CheckOutcome, CheckResult, Manager, SystemState, Unavailable, Verdict,
};

/// Largest `status.json` read, in bytes.
pub const MAX_STATUS_BYTES: u64 = 1024 * 1024;
/// Longest text of a failure passed to the engine (it keeps 256 bytes).
const MAX_FAILURE_TEXT: usize = 200;
/// Longest a `systemctl is-active` or `is-system-running` call may take.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most commands configured.
pub const MAX_COMMANDS: usize = 16;
/// Most systemd units configured.
pub const MAX_UNITS: usize = 32;

/// `[health]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawHealth {
    #[serde(default = "default_deadline")]
    deadline_secs: u64,
    #[serde(default = "default_retry")]
    retry_interval_ms: u64,
    #[serde(default)]
    systemd_units: Vec<String>,
    #[serde(default)]
    systemd_unavailable: RawUnavailable,
    #[serde(default = "default_run_dir")]
    systemd_run_dir: PathBuf,
    #[serde(default = "default_systemctl")]
    systemctl: PathBuf,
    #[serde(default)]
    broker: bool,
    recorder: Option<RawRecorder>,
    #[serde(default)]
    command: Vec<RawCommand>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawUnavailable {
    #[default]
    Pass,
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRecorder {
    status_file: PathBuf,
    #[serde(default = "default_max_age")]
    max_age_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawCommand {
    name: String,
    argv: Vec<String>,
    #[serde(default = "default_command_timeout")]
    timeout_secs: u64,
}

fn default_deadline() -> u64 {
    300
}
fn default_retry() -> u64 {
    2000
}
fn default_run_dir() -> PathBuf {
    PathBuf::from("/run/systemd/system")
}
fn default_systemctl() -> PathBuf {
    PathBuf::from("systemctl")
}
fn default_max_age() -> u64 {
    30
}
fn default_command_timeout() -> u64 {
    30
}

/// The validated `[health]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Every check must have passed within this long after the checks start.
    pub deadline: Duration,
    pub retry_interval: Duration,
    pub systemd_units: Vec<String>,
    pub systemd_unavailable: Unavailable,
    /// systemd runs when this directory exists (`sd_booted`).
    pub systemd_run_dir: PathBuf,
    pub systemctl: PathBuf,
    pub broker: bool,
    pub recorder: Option<RecorderCheck>,
    pub commands: Vec<CommandCheck>,
}

impl Default for HealthConfig {
    /// No checks: a trial that brings the updater up is committed.
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(default_deadline()),
            retry_interval: Duration::from_millis(default_retry()),
            systemd_units: Vec::new(),
            systemd_unavailable: Unavailable::Pass,
            systemd_run_dir: default_run_dir(),
            systemctl: default_systemctl(),
            broker: false,
            recorder: None,
            commands: Vec::new(),
        }
    }
}

/// The recorder check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderCheck {
    pub status_file: PathBuf,
    pub max_age: Duration,
}

/// A custom command check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandCheck {
    pub name: String,
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl RawHealth {
    /// Validates, pushing every problem with its key path onto `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) -> HealthConfig {
        if !(1..=3600).contains(&self.deadline_secs) {
            problems.push("health.deadline-secs: must be 1..=3600".into());
        }
        if !(10..=600_000).contains(&self.retry_interval_ms) {
            problems.push("health.retry-interval-ms: must be 10..=600000".into());
        }
        if self.systemd_units.len() > MAX_UNITS {
            problems.push(format!("health.systemd-units: at most {MAX_UNITS}"));
        }
        for (i, u) in self.systemd_units.iter().enumerate() {
            if u.is_empty() || u.starts_with('-') || u.contains(char::is_whitespace) {
                problems.push(format!("health.systemd-units[{i}]: not a unit name"));
            }
        }
        let recorder = self.recorder.as_ref().map(|r| {
            if !r.status_file.is_absolute() {
                problems.push("health.recorder.status-file: must be an absolute path".into());
            }
            if !(1..=86_400).contains(&r.max_age_secs) {
                problems.push("health.recorder.max-age-secs: must be 1..=86400".into());
            }
            RecorderCheck {
                status_file: r.status_file.clone(),
                max_age: Duration::from_secs(r.max_age_secs),
            }
        });
        if self.command.len() > MAX_COMMANDS {
            problems.push(format!("health.command: at most {MAX_COMMANDS}"));
        }
        let mut commands = Vec::new();
        for (i, c) in self.command.iter().enumerate() {
            if c.name.is_empty() || c.name.len() > 64 {
                problems.push(format!("health.command[{i}].name: must be 1..=64 bytes"));
            }
            if c.argv.first().is_none_or(String::is_empty) {
                problems.push(format!("health.command[{i}].argv: must name a program"));
            }
            if !(1..=3600).contains(&c.timeout_secs) {
                problems.push(format!(
                    "health.command[{i}].timeout-secs: must be 1..=3600"
                ));
            }
            commands.push(CommandCheck {
                name: c.name.clone(),
                argv: c.argv.clone(),
                timeout: Duration::from_secs(c.timeout_secs),
            });
        }
        HealthConfig {
            deadline: Duration::from_secs(self.deadline_secs),
            retry_interval: Duration::from_millis(self.retry_interval_ms),
            systemd_units: self.systemd_units.clone(),
            systemd_unavailable: match self.systemd_unavailable {
                RawUnavailable::Pass => Unavailable::Pass,
                RawUnavailable::Fail => Unavailable::Fail,
            },
            systemd_run_dir: self.systemd_run_dir.clone(),
            systemctl: self.systemctl.clone(),
            broker: self.broker,
            recorder,
            commands,
        }
    }
}

/// One check to run.
#[derive(Debug, Clone)]
enum Check {
    Systemd(String),
    Recorder(RecorderCheck),
    Broker,
    Command(CommandCheck),
}

impl Check {
    fn name(&self) -> String {
        match self {
            Check::Systemd(u) => format!("systemd:{u}"),
            Check::Recorder(_) => "recorder".into(),
            Check::Broker => "broker".into(),
            Check::Command(c) => format!("command:{}", c.name),
        }
    }
}

/// The station's health checks: a [`HealthCheck`] over real units, files, the MQTT session
/// and commands.
#[derive(Debug, Clone)]
pub struct StationHealth {
    cfg: Arc<HealthConfig>,
    connected: Arc<watch::Sender<bool>>,
}

impl StationHealth {
    #[must_use]
    pub fn new(cfg: HealthConfig) -> Self {
        let (tx, _) = watch::channel(false);
        Self {
            cfg: Arc::new(cfg),
            connected: Arc::new(tx),
        }
    }

    /// The daemon tells the broker check whether its MQTT session is up.
    pub fn set_mqtt_connected(&self, connected: bool) {
        self.connected.send_replace(connected);
    }

    fn checks(&self) -> Vec<Check> {
        let c = &self.cfg;
        let mut out: Vec<Check> = c
            .systemd_units
            .iter()
            .cloned()
            .map(Check::Systemd)
            .collect();
        out.extend(c.recorder.clone().map(Check::Recorder));
        if c.broker {
            out.push(Check::Broker);
        }
        out.extend(c.commands.iter().cloned().map(Check::Command));
        out
    }

    /// Runs every check concurrently until each has passed, or the deadline.
    pub async fn run_checks(&self) -> Vec<CheckResult> {
        let deadline = Instant::now() + self.cfg.deadline;
        let (checks, _aborts) = self.spawn_checks(deadline);
        checks.await
    }

    /// The whole gate: [`Self::run_checks`] while systemd's state is watched (a system going
    /// down ends the gate at once, without the checks' results), then the state read until the
    /// system is up or the deadline. Returns the results and the manager's last reading,
    /// taken after every check answered: the reading the verdict uses.
    pub async fn run_gate(&self) -> (Vec<CheckResult>, Manager) {
        let deadline = Instant::now() + self.cfg.deadline;
        let (checks, aborts) = self.spawn_checks(deadline);
        let results = tokio::select! {
            results = checks => results,
            manager = until_going_down(&self.cfg, deadline) => {
                for a in &aborts {
                    a.abort();
                }
                return (Vec::new(), manager);
            }
        };
        let manager = until_up(&self.cfg, deadline).await;
        (results, manager)
    }

    /// Starts every check; the future collects their results in configured order.
    fn spawn_checks(
        &self,
        deadline: Instant,
    ) -> (
        impl std::future::Future<Output = Vec<CheckResult>> + use<>,
        Vec<tokio::task::AbortHandle>,
    ) {
        let mut handles = Vec::new();
        for check in self.checks() {
            let cfg = self.cfg.clone();
            let connected = self.connected.subscribe();
            handles.push((
                check.name(),
                tokio::spawn(run_until(check, cfg, connected, deadline)),
            ));
        }
        let aborts = handles.iter().map(|(_, h)| h.abort_handle()).collect();
        let results = async move {
            let mut results = Vec::new();
            for (name, h) in handles {
                results.push(h.await.unwrap_or_else(|e| CheckResult {
                    name,
                    outcome: CheckOutcome::Failed {
                        detail: format!("check panicked: {e}"),
                    },
                    if_unavailable: Unavailable::Fail,
                }));
            }
            results
        };
        (results, aborts)
    }
}

impl HealthCheck for StationHealth {
    fn check(&self, booted: Slot) -> impl std::future::Future<Output = Verdict> + Send {
        let me = self.clone();
        async move {
            tracing::info!(slot = %booted, deadline_s = me.cfg.deadline.as_secs(), "health gate starts");
            let (results, manager) = me.run_gate().await;
            let summary = gate::summary(&results, &manager);
            match gate::decide(&results, &manager, me.cfg.systemd_unavailable) {
                Verdict::Healthy => {
                    tracing::info!(slot = %booted, checks = %summary, "health checks passed");
                    Verdict::Healthy
                }
                Verdict::Unhealthy { check, detail } => {
                    tracing::warn!(slot = %booted, check = %check, detail = %detail, checks = %summary, "health checks failed");
                    Verdict::Unhealthy {
                        check: clip(&format!("{check}: {detail}"), MAX_FAILURE_TEXT),
                        detail,
                    }
                }
                Verdict::NoVerdict { why } => {
                    tracing::warn!(slot = %booted, why = %why, checks = %summary, "health gate ended without a verdict: the trial is neither committed nor failed, the next boot decides");
                    Verdict::NoVerdict { why }
                }
            }
        }
    }

    fn mqtt_connected(&self, connected: bool) {
        self.set_mqtt_connected(connected);
    }
}

/// Reads systemd's state every retry interval until it says the system is going down; never
/// returns otherwise (nor without systemd).
async fn until_going_down(cfg: &HealthConfig, deadline: Instant) -> Manager {
    loop {
        let manager = system_state(cfg).await;
        match &manager {
            Manager::State(s) if s.stance() == Stance::GoingDown => return manager,
            Manager::Unavailable { .. } => return std::future::pending().await,
            Manager::State(_) => {}
        }
        if Instant::now() >= deadline {
            return std::future::pending().await;
        }
        tokio::time::sleep(cfg.retry_interval).await;
    }
}

/// Reads systemd's state until the system is up or going down, or the deadline: the last
/// reading.
async fn until_up(cfg: &HealthConfig, deadline: Instant) -> Manager {
    loop {
        let manager = system_state(cfg).await;
        if manager.stance(cfg.systemd_unavailable) != Stance::NotUp
            || matches!(manager, Manager::Unavailable { .. })
            || Instant::now() + cfg.retry_interval >= deadline
        {
            return manager;
        }
        tracing::debug!(state = manager.as_str(), "the system is not up yet");
        tokio::time::sleep(cfg.retry_interval).await;
    }
}

/// What one `systemctl` call came to.
enum Systemctl {
    /// No systemd (no `systemd-run-dir`) or no `systemctl` binary: why.
    Unavailable(String),
    /// It could not be run: why.
    Error(String),
    /// It did not answer within `SYSTEMCTL_TIMEOUT`.
    TimedOut,
    /// It ran: its exit status and output.
    Answered(std::process::Output),
}

/// Runs `systemctl args` (stdout captured, killed if dropped), once systemd is known to run.
async fn systemctl(cfg: &HealthConfig, args: &[&str]) -> Systemctl {
    if !cfg.systemd_run_dir.is_dir() {
        return Systemctl::Unavailable(format!(
            "systemd is not running ({} missing)",
            cfg.systemd_run_dir.display()
        ));
    }
    let mut cmd = tokio::process::Command::new(&cfg.systemctl);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Systemctl::Unavailable(format!("{} not found", cfg.systemctl.display()));
        }
        Err(e) => {
            return Systemctl::Error(format!("unable to run {}: {e}", cfg.systemctl.display()));
        }
    };
    match tokio::time::timeout(SYSTEMCTL_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => Systemctl::Answered(out),
        Ok(Err(e)) => Systemctl::Error(format!("unable to run {}: {e}", cfg.systemctl.display())),
        Err(_) => Systemctl::TimedOut,
    }
}

/// systemd's system state: `systemctl is-system-running`'s output. Unavailable without
/// systemd (no `systemd-run-dir`) or without `systemctl`; `unknown` when it cannot be run or
/// does not answer in time.
pub async fn system_state(cfg: &HealthConfig) -> Manager {
    match systemctl(cfg, &["is-system-running"]).await {
        Systemctl::Unavailable(detail) => Manager::Unavailable { detail },
        Systemctl::Answered(out) => {
            Manager::State(SystemState::parse(&String::from_utf8_lossy(&out.stdout)))
        }
        Systemctl::Error(error) => {
            tracing::warn!(%error, "systemctl is-system-running failed");
            Manager::State(SystemState::Unknown)
        }
        Systemctl::TimedOut => {
            tracing::warn!("systemctl is-system-running did not answer");
            Manager::State(SystemState::Unknown)
        }
    }
}

/// Asks `check` until it passes, cannot run, or `deadline` comes.
async fn run_until(
    check: Check,
    cfg: Arc<HealthConfig>,
    mut connected: watch::Receiver<bool>,
    deadline: Instant,
) -> CheckResult {
    let if_unavailable = match check {
        Check::Systemd(_) => cfg.systemd_unavailable,
        _ => Unavailable::Fail,
    };
    let name = check.name();
    let mut last: Option<CheckOutcome> = None;
    let outcome = loop {
        let now = Instant::now();
        if now >= deadline {
            break match last {
                Some(o) => o,
                None => CheckOutcome::TimedOut {
                    detail: "no answer before the deadline".into(),
                },
            };
        }
        let once = once(&check, &cfg, &mut connected);
        let outcome = match tokio::time::timeout_at(deadline, once).await {
            Ok(o) => o,
            Err(_) => {
                break CheckOutcome::TimedOut {
                    detail: format!("still running at the deadline ({:?})", cfg.deadline),
                };
            }
        };
        match outcome {
            CheckOutcome::Passed | CheckOutcome::Unavailable { .. } => break outcome,
            o => last = Some(o),
        }
        if Instant::now() + cfg.retry_interval >= deadline {
            break last.unwrap_or(CheckOutcome::TimedOut {
                detail: "deadline".into(),
            });
        }
        tokio::time::sleep(cfg.retry_interval).await;
    };
    tracing::debug!(check = %name, ?outcome, "health check done");
    CheckResult {
        name,
        outcome,
        if_unavailable,
    }
}

async fn once(
    check: &Check,
    cfg: &HealthConfig,
    connected: &mut watch::Receiver<bool>,
) -> CheckOutcome {
    match check {
        Check::Systemd(unit) => systemd_active(cfg, unit).await,
        Check::Recorder(r) => {
            let r = r.clone();
            tokio::task::spawn_blocking(move || recorder_fresh(&r, monotonic_ms()))
                .await
                .unwrap_or_else(|e| CheckOutcome::Failed {
                    detail: e.to_string(),
                })
        }
        Check::Broker => {
            if *connected.borrow_and_update() {
                CheckOutcome::Passed
            } else {
                CheckOutcome::Failed {
                    detail: "not connected to the broker".into(),
                }
            }
        }
        Check::Command(c) => run_command(c).await,
    }
}

async fn systemd_active(cfg: &HealthConfig, unit: &str) -> CheckOutcome {
    match systemctl(cfg, &["is-active", "--", unit]).await {
        Systemctl::Unavailable(detail) => CheckOutcome::Unavailable { detail },
        Systemctl::Error(detail) => CheckOutcome::Failed { detail },
        Systemctl::TimedOut => CheckOutcome::TimedOut {
            detail: "systemctl is-active did not answer".into(),
        },
        Systemctl::Answered(out) => {
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && state == "active" {
                CheckOutcome::Passed
            } else {
                CheckOutcome::Failed {
                    detail: format!(
                        "unit is {}",
                        if state.is_empty() { "unknown" } else { &state }
                    ),
                }
            }
        }
    }
}

/// Milliseconds of `CLOCK_MONOTONIC`, the clock `fleet-recorderd` stamps its status with.
fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
        })
        .unwrap_or(0)
}

/// Judges `fleet-recorderd`'s status file at monotonic time `now_ms`.
pub fn recorder_fresh(check: &RecorderCheck, now_ms: u64) -> CheckOutcome {
    let path = &check.status_file;
    let failed = |detail: String| CheckOutcome::Failed { detail };
    let bytes = match read_bounded(path, MAX_STATUS_BYTES) {
        Ok(b) => b,
        Err(e) => return failed(format!("unable to read {}: {e}", path.display())),
    };
    let v: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return failed(format!("unable to parse {}: {e}", path.display())),
    };
    let written = v
        .get("written-monotonic-ms")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let age = now_ms.saturating_sub(written);
    if written == 0
        || written > now_ms
        || age > u64::try_from(check.max_age.as_millis()).unwrap_or(u64::MAX)
    {
        return failed(format!(
            "status not written in the last {} s (age {} ms)",
            check.max_age.as_secs(),
            age
        ));
    }
    if v.get("healthy").and_then(serde_json::Value::as_bool) != Some(true) {
        return failed("recorder reports itself unhealthy".into());
    }
    let devices = v
        .get("devices")
        .and_then(serde_json::Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let produced = devices.iter().any(|d| {
        d.get("segments-written")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
            >= 1
            && d.get("last-segment")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|s| !s.is_empty())
    });
    if !produced {
        return failed("no segment written yet in this run".into());
    }
    CheckOutcome::Passed
}

fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

async fn run_command(c: &CommandCheck) -> CheckOutcome {
    let Some((program, args)) = c.argv.split_first() else {
        return CheckOutcome::Failed {
            detail: "no program".into(),
        };
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CheckOutcome::Failed {
                detail: format!("unable to run {program}: {e}"),
            };
        }
    };
    let stderr = child.stderr.take();
    let tail = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = Vec::new();
        if let Some(s) = stderr {
            let _ = s.take(4096).read_to_end(&mut buf).await;
        }
        String::from_utf8_lossy(&buf).trim().to_owned()
    });
    match tokio::time::timeout(c.timeout, child.wait()).await {
        Err(_) => {
            if let Err(e) = child.kill().await {
                tracing::warn!(command = %c.name, error = %e, "unable to kill a timed-out health command");
            }
            tail.abort();
            CheckOutcome::TimedOut {
                detail: format!("killed after {} s", c.timeout.as_secs()),
            }
        }
        Ok(Err(e)) => CheckOutcome::Failed {
            detail: format!("unable to wait for {program}: {e}"),
        },
        Ok(Ok(status)) if status.success() => {
            tail.abort();
            CheckOutcome::Passed
        }
        Ok(Ok(status)) => {
            let err = tokio::time::timeout(Duration::from_millis(200), tail)
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            let last = err.lines().last().unwrap_or("").to_owned();
            CheckOutcome::Failed {
                detail: if last.is_empty() {
                    format!("{status}")
                } else {
                    format!("{status}: {last}")
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without systemd unless a test gives one: the host's own manager does not judge these.
    fn cfg(f: impl FnOnce(&mut HealthConfig)) -> HealthConfig {
        let mut c = HealthConfig {
            deadline: Duration::from_secs(5),
            retry_interval: Duration::from_millis(50),
            systemd_run_dir: PathBuf::from("/nonexistent/fleet-test-no-systemd"),
            ..HealthConfig::default()
        };
        f(&mut c);
        c
    }

    fn failed_check(v: Verdict) -> String {
        match v {
            Verdict::Unhealthy { check, .. } => check,
            other => panic!("not unhealthy: {other:?}"),
        }
    }

    /// A `systemctl` that answers `is-system-running` with the lines of `states` in turn (the
    /// last one from then on) and exits 1 as systemctl does for every state but `running`;
    /// `is-active` says `active` (and, when `dir/stop-at-is-active` exists, makes every later
    /// answer `stopping`: a reboot asked for as the unit checks run). With a systemd run
    /// directory, in `dir`.
    fn systemctl_saying(dir: &Path, states: &[&str]) -> (PathBuf, PathBuf) {
        let run_dir = dir.join("run-systemd-system");
        std::fs::create_dir(&run_dir).expect("run dir");
        let list = dir.join("states");
        std::fs::write(&list, states.join("\n") + "\n").expect("states");
        let count = dir.join("count");
        let script = dir.join("systemctl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\ncase \"$1\" in\n\
                 is-active) [ -e {stop} ] && echo stopping > {list}; echo active; exit 0;;\n\
                 is-system-running)\n\
                 n=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {count}\n\
                 s=$(sed -n \"${{n}}p\" {list}); [ -n \"$s\" ] || s=$(tail -n 1 {list})\n\
                 echo \"$s\"; [ \"$s\" = running ];;\n\
                 *) exit 2;;\nesac\n",
                count = count.display(),
                list = list.display(),
                stop = dir.join("stop-at-is-active").display()
            ),
        )
        .expect("script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (script, run_dir)
    }

    #[tokio::test]
    async fn the_gate_ends_without_a_verdict_when_systemctl_says_the_system_is_stopping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (systemctl, run_dir) =
            systemctl_saying(dir.path(), &["running", "running", "stopping"]);
        let health = StationHealth::new(cfg(|c| {
            c.deadline = Duration::from_secs(30);
            c.systemctl = systemctl;
            c.systemd_run_dir = run_dir;
            // a check that never passes: only the stop ends the gate before its deadline
            c.broker = true;
        }));
        let v = health.check(Slot::B).await;
        assert_eq!(
            v,
            Verdict::NoVerdict {
                why: "the system is stopping".into()
            }
        );
    }

    #[tokio::test]
    async fn checks_that_passed_are_not_healthy_when_the_last_reading_says_stopping() {
        let dir = tempfile::tempdir().expect("tempdir");
        // running until the unit check has answered, stopping from then on
        let (systemctl, run_dir) = systemctl_saying(dir.path(), &["running"]);
        std::fs::write(dir.path().join("stop-at-is-active"), b"").expect("marker");
        let health = StationHealth::new(cfg(|c| {
            c.retry_interval = Duration::from_secs(60);
            c.systemctl = systemctl;
            c.systemd_run_dir = run_dir;
            c.systemd_units = vec!["fleet-recorderd.service".into()];
        }));
        let (results, manager) = health.run_gate().await;
        // (the watch during the checks may have seen the stop first: then no results at all)
        assert!(results.iter().all(CheckResult::acceptable), "{results:?}");
        assert_eq!(manager, Manager::State(SystemState::Stopping));
        assert_eq!(
            gate::decide(&results, &manager, Unavailable::Pass),
            Verdict::NoVerdict {
                why: "the system is stopping".into()
            }
        );
    }

    #[tokio::test]
    async fn a_system_still_starting_is_waited_for_and_then_the_trial_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (systemctl, run_dir) = systemctl_saying(
            dir.path(),
            &["starting", "starting", "starting", "degraded"],
        );
        let health = StationHealth::new(cfg(|c| {
            c.systemctl = systemctl;
            c.systemd_run_dir = run_dir;
        }));
        assert_eq!(health.check(Slot::B).await, Verdict::Healthy);
        let asked: u32 = std::fs::read_to_string(dir.path().join("count"))
            .expect("count")
            .trim()
            .parse()
            .expect("number");
        assert!(asked >= 4, "asked {asked} times");
    }

    #[tokio::test]
    async fn a_system_that_never_finishes_booting_fails_the_trial_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (systemctl, run_dir) = systemctl_saying(dir.path(), &["starting"]);
        let health = StationHealth::new(cfg(|c| {
            c.deadline = Duration::from_secs(1);
            c.systemctl = systemctl;
            c.systemd_run_dir = run_dir;
        }));
        let check = failed_check(health.check(Slot::B).await);
        assert!(
            check.starts_with("system: failed: the system is starting"),
            "{check}"
        );
    }

    fn sh(name: &str, script: &str, timeout_ms: u64) -> CommandCheck {
        CommandCheck {
            name: name.into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_at_its_timeout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let health = StationHealth::new(cfg(|c| {
            c.deadline = Duration::from_secs(3);
            c.retry_interval = Duration::from_secs(10);
            c.commands = vec![sh("hang", &script, 500)];
        }));
        let started = std::time::Instant::now();
        let results = health.run_checks().await;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            matches!(results[0].outcome, CheckOutcome::TimedOut { .. }),
            "{results:?}"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid")
            .trim()
            .parse()
            .expect("number");
        // Killed and reaped: the process is gone.
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "));
        assert!(!alive, "the timed-out command still runs");
    }

    #[tokio::test]
    async fn a_failing_command_names_itself_and_its_last_words() {
        let health = StationHealth::new(cfg(|c| {
            c.deadline = Duration::from_secs(2);
            c.retry_interval = Duration::from_millis(500);
            c.commands = vec![
                sh("fine", "true", 1000),
                sh("probe", "echo 'mic missing' >&2; exit 3", 1000),
            ];
        }));
        let check = failed_check(health.check(Slot::B).await);
        assert!(check.starts_with("command:probe: failed"), "{check}");
        assert!(check.contains("mic missing"), "{check}");
    }

    #[tokio::test]
    async fn a_check_that_comes_good_before_the_deadline_passes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ready");
        let script = format!("test -e {}", flag.display());
        let health = StationHealth::new(cfg(|c| {
            c.commands = vec![sh("ready", &script, 1000)];
            c.broker = true;
        }));
        let f2 = flag.clone();
        let h2 = health.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            std::fs::write(&f2, b"").expect("flag");
            h2.set_mqtt_connected(true);
        });
        assert_eq!(health.check(Slot::B).await, Verdict::Healthy);
    }

    #[tokio::test]
    async fn without_systemd_units_are_unavailable_and_pass_or_fail_as_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let absent = dir.path().join("no-systemd");
        let pass = StationHealth::new(cfg(|c| {
            c.systemd_units = vec!["fleet-recorderd.service".into()];
            c.systemd_run_dir = absent.clone();
        }));
        let results = pass.run_checks().await;
        assert!(
            matches!(results[0].outcome, CheckOutcome::Unavailable { .. }),
            "{results:?}"
        );
        assert_eq!(pass.check(Slot::A).await, Verdict::Healthy);
        let fail = StationHealth::new(cfg(|c| {
            c.systemd_units = vec!["fleet-recorderd.service".into()];
            c.systemd_run_dir = absent.clone();
            c.systemd_unavailable = Unavailable::Fail;
        }));
        let check = failed_check(fail.check(Slot::A).await);
        assert!(
            check.starts_with("systemd:fleet-recorderd.service: unavailable"),
            "{check}"
        );
    }

    #[tokio::test]
    async fn the_broker_check_fails_while_the_session_is_down() {
        let health = StationHealth::new(cfg(|c| {
            c.deadline = Duration::from_millis(500);
            c.broker = true;
        }));
        let check = failed_check(health.check(Slot::A).await);
        assert!(check.starts_with("broker: failed"), "{check}");
    }

    fn status(written: u64, healthy: bool, segments: u64) -> String {
        format!(
            r#"{{"version":1,"station":"s","healthy":{healthy},"written-monotonic-ms":{written},
            "devices":[{{"id":"mic","state":"recording","segments-written":{segments},
            "last-segment":"{}"}}]}}"#,
            if segments > 0 { "x_00000001.wav" } else { "" }
        )
    }

    #[test]
    fn the_recorder_passes_only_with_a_fresh_healthy_status_and_a_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("status.json");
        let check = RecorderCheck {
            status_file: file.clone(),
            max_age: Duration::from_secs(30),
        };
        let now = 1_000_000;
        let table = [
            (status(now - 1_000, true, 2), true),
            (status(now - 31_000, true, 2), false),
            (status(now - 1_000, false, 2), false),
            (status(now - 1_000, true, 0), false),
            (status(now + 5_000, true, 2), false),
            ("{not json".to_owned(), false),
        ];
        for (text, pass) in table {
            std::fs::write(&file, &text).expect("write");
            let outcome = recorder_fresh(&check, now);
            assert_eq!(outcome == CheckOutcome::Passed, pass, "{text}: {outcome:?}");
        }
        std::fs::remove_file(&file).expect("rm");
        assert!(matches!(
            recorder_fresh(&check, now),
            CheckOutcome::Failed { .. }
        ));
    }

    #[test]
    fn invalid_health_keys_are_reported_with_their_paths() {
        let raw: RawHealth = toml::from_str(
            "deadline-secs = 0\n[recorder]\nstatus-file = \"rel\"\n\
             [[command]]\nname = \"\"\nargv = []\ntimeout-secs = 0\n",
        )
        .expect("parses");
        let mut problems = Vec::new();
        raw.validate(&mut problems);
        let all = problems.join("\n");
        for key in [
            "health.deadline-secs",
            "health.recorder.status-file",
            "health.command[0].name",
            "health.command[0].argv",
            "health.command[0].timeout-secs",
        ] {
            assert!(all.contains(key), "{key} missing in {all}");
        }
    }
}
