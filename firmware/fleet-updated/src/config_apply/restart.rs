//! Restarting a daemon through the root helper and watching it come back.
//!
//! fleet-updated runs unprivileged: it asks for a restart by leaving the unit's name as a file in
//! `restart-dir` (`/run/fleet/config-restart/fleet-recorderd.service`), which
//! `fleet-config-restart.path` turns into `fleet-config-restart.service` (root), which restarts
//! exactly the units it knows. Health is `systemctl is-active <unit>` and, for the recorder, a
//! status file written after the restart was asked for and saying `healthy`.
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleet_core::config_push::Daemon;

use super::ApplierConfig;

/// Longest a `systemctl is-active` may take.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest status file read.
const MAX_STATUS_BYTES: u64 = 1 << 20;

/// The unit of `daemon`.
#[must_use]
pub fn unit(daemon: Daemon) -> String {
    format!("fleet-{}.service", daemon.as_str())
}

/// Leaves a restart request for `daemon` (atomically: the helper never sees half a name).
pub fn request(cfg: &ApplierConfig, daemon: Daemon) -> Result<(), String> {
    let path = cfg.restart_dir.join(unit(daemon));
    fleet_durable::WriteOptions::new()
        .mode(0o644)
        .write(&path, b"restart\n")
        .map_err(|e| format!("unable to request a restart: {e}"))
}

/// The monotonic clock in ms (shared with the recorder, which stamps its status file with it).
#[must_use]
pub fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
        })
        .unwrap_or(0)
}

/// Whether `daemon` looks healthy now: `Err(why)` when not.
pub async fn observe(cfg: &ApplierConfig, daemon: Daemon, asked_at_ms: u64) -> Result<(), String> {
    let unit = unit(daemon);
    let out = tokio::time::timeout(
        SYSTEMCTL_TIMEOUT,
        tokio::process::Command::new(&cfg.systemctl)
            .args(["is-active", &unit])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("systemctl is-active {unit} did not answer"))?
    .map_err(|e| format!("unable to run {}: {e}", cfg.systemctl.display()))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if state != "active" {
        return Err(format!("{unit} is {state}"));
    }
    if daemon == Daemon::Recorderd
        && let Some(status) = &cfg.recorder_status_file
    {
        recorder_status(status, asked_at_ms)?;
    }
    Ok(())
}

/// The recorder's status file: written after `asked_at_ms` and `healthy`.
fn recorder_status(path: &Path, asked_at_ms: u64) -> Result<(), String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_STATUS_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("unable to read {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("unable to parse {}: {e}", path.display()))?;
    let written = v
        .get("written-monotonic-ms")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if written < asked_at_ms {
        return Err("the recorder wrote no status since its restart".into());
    }
    if v.get("healthy").and_then(serde_json::Value::as_bool) != Some(true) {
        return Err("the recorder reports itself unhealthy".into());
    }
    Ok(())
}
