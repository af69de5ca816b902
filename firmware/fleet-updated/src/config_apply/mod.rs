//! The station's applier of signed configuration pushes (ADR 0011), fed by the daemon's MQTT
//! session: the daemon subscribes [`topics`] when `[config-push]` is configured and hands every
//! message on them to [`Applier::offer`]; the outcomes come back on the receiver of
//! [`Applier::start`] and the daemon publishes them as events.
//!
//! One push at a time, in a task of its own (a push waits up to its deadline for the daemon it
//! restarted, and the update loop must not wait with it):
//! 1. open the envelope (kind `config`, the station's trusted keys incl. rotations, the signed
//!    scope and daemon must be the topic's);
//! 2. decide (`fleet_core::config_push::decide_config_push`: scope, sequence, keys, values);
//! 3. build the next pushed layer (`apply_push`), write it as a candidate and run the daemon's
//!    own checker on image + station + candidate ([`check`]);
//! 4. record the sequence ([`store`]) *before* the layer changes;
//! 5. keep the previous layer as `<daemon>.toml.previous`, write the new one (temp file, fsync,
//!    rename, fsync directory), ask the root helper to restart the daemon ([`restart`]);
//! 6. watch it until `fleet_core::config_push::judge_restart` accepts (`config-accepted`) or the
//!    deadline passes: then the previous layer goes back, the daemon restarts again, and the
//!    report is `config-restored` with the reason.
//!
//! Every refusal is `config-refused` with the rule's code and changes no file but the record of
//! messages seen (so the broker's retained copy is not reported again at every reconnect).
//!
//! Power loss: the record notes the watch to come (`pending`) with the sequence, before the
//! layer changes; a daemon that starts with a pending watch (after a power cut or its own
//! restart) watches that daemon again and restores `<daemon>.toml.previous` when it is not
//! healthy within the deadline. A stop before the new layer took its name is reported as
//! `config-refused` / `interrupted` (the sequence stays taken: push again).
//!
//! `fleet-updated` itself is never restarted by its own applier: a push for `updated` is
//! refused with `self-restart-unsupported` (see ADR 0011 for why and what would be needed).
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::config_push::{
    AfterRestart, ConfigPush, Daemon, Watch, apply_push, decide_config_push, judge_restart,
};
use fleet_core::ids::{DeviceId, GroupId};
use fleet_proto::Limits;
use fleet_proto::config_push::{
    ConfigOutcome, ConfigPushError, open_config_push, parse_config_topic,
};
use fleet_proto::envelope::TrustedKeys;
use serde::Deserialize;
use sha2::Digest;
use tokio::sync::mpsc;

pub mod check;
pub mod layer;
pub mod restart;
pub mod store;

/// Pushes waiting for the applier (a fleet, a few groups and the device, for four daemons, is
/// well under it); a push arriving while it is full is dropped with a warning and comes back
/// retained at the next reconnect.
pub const INBOUND_CAPACITY: usize = 64;
/// Outcomes waiting for the daemon's loop to publish them.
pub const OUTCOME_CAPACITY: usize = 16;
/// Longest reason text in a report.
const MAX_REASON: usize = 256;

/// `[config-push]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawApplier {
    layer_dir: Option<PathBuf>,
    #[serde(default = "default_image_dir")]
    image_dir: PathBuf,
    station_dir: Option<PathBuf>,
    #[serde(default = "default_bin_dir")]
    bin_dir: PathBuf,
    #[serde(default = "default_restart_dir")]
    restart_dir: PathBuf,
    #[serde(default = "default_systemctl")]
    systemctl: PathBuf,
    recorder_status_file: Option<PathBuf>,
    #[serde(default = "default_settle")]
    settle_secs: u64,
    #[serde(default = "default_poll")]
    poll_ms: u64,
}

fn default_image_dir() -> PathBuf {
    PathBuf::from("/etc/fleet")
}
fn default_bin_dir() -> PathBuf {
    PathBuf::from("/usr/bin")
}
fn default_restart_dir() -> PathBuf {
    PathBuf::from("/run/fleet/config-restart")
}
fn default_systemctl() -> PathBuf {
    PathBuf::from("systemctl")
}
fn default_settle() -> u64 {
    5
}
fn default_poll() -> u64 {
    500
}

/// The applier's settings (`[config-push]` in updated.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplierConfig {
    /// Where the pushed layers are (`<data-dir>/fleet/config`): the daemons' `--pushed-config`.
    pub layer_dir: PathBuf,
    /// The image layers (`/etc/fleet`).
    pub image_dir: PathBuf,
    /// The station layers (`<data-dir>/fleet/identity`).
    pub station_dir: PathBuf,
    /// Where `fleet-<daemon>` (the checkers) are.
    pub bin_dir: PathBuf,
    /// Restart requests for the root helper (`fleet-config-restart.path`).
    pub restart_dir: PathBuf,
    /// `systemctl` (is-active).
    pub systemctl: PathBuf,
    /// The recorder's status file: must be fresh and healthy after a recorder push.
    pub recorder_status_file: Option<PathBuf>,
    /// How long a restarted daemon must stay healthy before it counts.
    pub settle: Duration,
    /// How often a restarted daemon is looked at.
    pub poll: Duration,
    /// The record of sequences and messages seen (`<data-dir>/fleet/updated/config-push.json`).
    pub record_file: PathBuf,
}

impl RawApplier {
    /// Validates `[config-push]`, reporting problems with their key paths.
    pub fn validate(&self, data_dir: &Path, problems: &mut Vec<String>) -> ApplierConfig {
        let layer_dir = self
            .layer_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("fleet/config"));
        let station_dir = self
            .station_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("fleet/identity"));
        for (key, p) in [
            ("layer-dir", &layer_dir),
            ("image-dir", &self.image_dir),
            ("station-dir", &station_dir),
            ("bin-dir", &self.bin_dir),
            ("restart-dir", &self.restart_dir),
        ] {
            if !p.is_absolute() {
                problems.push(format!("config-push.{key}: must be an absolute path"));
            }
        }
        if self
            .recorder_status_file
            .as_ref()
            .is_some_and(|p| !p.is_absolute())
        {
            problems.push("config-push.recorder-status-file: must be an absolute path".into());
        }
        if self.settle_secs > 600 {
            problems.push("config-push.settle-secs: must be at most 600".into());
        }
        if !(50..=10_000).contains(&self.poll_ms) {
            problems.push("config-push.poll-ms: must be 50..=10000".into());
        }
        ApplierConfig {
            layer_dir,
            image_dir: self.image_dir.clone(),
            station_dir,
            bin_dir: self.bin_dir.clone(),
            restart_dir: self.restart_dir.clone(),
            systemctl: self.systemctl.clone(),
            recorder_status_file: self.recorder_status_file.clone(),
            settle: Duration::from_secs(self.settle_secs),
            poll: Duration::from_millis(self.poll_ms),
            record_file: data_dir.join("fleet/updated/config-push.json"),
        }
    }
}

/// The topics a station reads for its pushes.
#[must_use]
pub fn topics(device: &DeviceId, groups: &[GroupId]) -> Vec<String> {
    fleet_proto::config_push::station_filters(device, groups)
}

/// One message on a config topic, with the keys trusted when it arrived.
struct Inbound {
    topic: String,
    payload: Vec<u8>,
    trusted: TrustedKeys,
}

/// The daemon's handle on the applier task.
#[derive(Debug, Clone)]
pub struct Applier {
    tx: mpsc::Sender<Inbound>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("topic", &self.topic)
            .finish()
    }
}

impl Applier {
    /// Starts the applier task for `station`; outcomes arrive on the returned receiver.
    #[must_use]
    pub fn start(
        cfg: ApplierConfig,
        station: fleet_core::update::Station,
        limits: Limits,
    ) -> (Applier, mpsc::Receiver<ConfigOutcome>) {
        let (tx, rx) = mpsc::channel(INBOUND_CAPACITY);
        let (out_tx, out_rx) = mpsc::channel(OUTCOME_CAPACITY);
        let record = store::load(&cfg.record_file);
        if let Err(e) = &record {
            tracing::error!(error = %e, "config pushes are refused until the record is repaired or removed");
        }
        let task = Task {
            cfg,
            station,
            limits,
            record: record.map_err(|e| e.to_string()),
        };
        tokio::spawn(task.run(rx, out_tx));
        (Applier { tx }, out_rx)
    }

    /// Hands a message on a config topic to the applier (never waits).
    pub fn offer(&self, topic: &str, payload: Vec<u8>, trusted: TrustedKeys) {
        let msg = Inbound {
            topic: topic.to_owned(),
            payload,
            trusted,
        };
        if let Err(e) = self.tx.try_send(msg) {
            tracing::warn!(topic, error = %e, "config push dropped: the applier is busy (it comes back retained)");
        }
    }
}

struct Task {
    cfg: ApplierConfig,
    station: fleet_core::update::Station,
    limits: Limits,
    record: Result<store::Record, String>,
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_REASON).collect()
}

fn refused(daemon: Daemon, sequence: u64, code: &str, reason: &str) -> ConfigOutcome {
    ConfigOutcome::ConfigRefused {
        daemon,
        sequence,
        code: code.to_owned(),
        reason: clip(reason),
    }
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Inbound>, out: mpsc::Sender<ConfigOutcome>) {
        // A push that was being watched when this daemon stopped (power cut, restart): watch
        // its daemon again before anything new is taken.
        if let Some(p) = self.record.as_ref().ok().and_then(|r| r.pending.clone()) {
            tracing::warn!(
                daemon = p.daemon.as_str(),
                sequence = p.sequence,
                "a config push was not judged before the last stop: watching its daemon again"
            );
            let current = self.layer_path(p.daemon, "toml");
            let previous = layer::read_bytes(&self.layer_path(p.daemon, "toml.previous"));
            let outcome = match (previous, layer::read_bytes(&current)) {
                // The stop came before the new layer took its name: nothing changed, but the
                // sequence is taken; the operator pushes again with a new one.
                (Ok(previous), Ok(now)) if previous == now => {
                    self.clear_pending();
                    refused(
                        p.daemon,
                        p.sequence,
                        "interrupted",
                        "the station stopped before the layer was written: push again",
                    )
                }
                (Ok(previous), Ok(_)) => {
                    let deadline = Duration::from_secs(u64::from(p.health_deadline_secs));
                    let verdict = self.watch(p.daemon, deadline, false).await;
                    self.conclude(p.daemon, p.sequence, &current, previous.as_deref(), verdict)
                }
                (Err(e), _) | (_, Err(e)) => {
                    self.clear_pending();
                    refused(p.daemon, p.sequence, "layer-unusable", &e.to_string())
                }
            };
            if out.send(outcome).await.is_err() {
                return;
            }
        }
        while let Some(m) = rx.recv().await {
            if let Some(outcome) = self.handle(m).await {
                tracing::info!(?outcome, "config push");
                if out.send(outcome).await.is_err() {
                    return;
                }
            }
        }
    }

    async fn handle(&mut self, m: Inbound) -> Option<ConfigOutcome> {
        if m.payload.is_empty() {
            // A cleared retained push changes nothing: the pushed layer stays until a newer push.
            return None;
        }
        let (_, topic_daemon) = parse_config_topic(&m.topic)?;
        let digest = hex::encode(sha2::Sha256::digest(&m.payload));
        let record = match &mut self.record {
            Ok(r) => r,
            Err(e) => {
                return Some(refused(topic_daemon, 0, "record-unreadable", e));
            }
        };
        if record.seen.get(&m.topic) == Some(&digest) {
            tracing::debug!(topic = %m.topic, "config push already judged");
            return None;
        }
        record.seen.insert(m.topic.clone(), digest);
        let outcome = self.judge(&m, topic_daemon).await;
        if let (ConfigOutcome::ConfigRefused { .. }, Ok(record)) = (&outcome, &self.record)
            && let Err(e) = store::save(&self.cfg.record_file, record)
        {
            tracing::warn!(error = %e, "unable to remember a refused config push");
        }
        Some(outcome)
    }

    async fn judge(&mut self, m: &Inbound, topic_daemon: Daemon) -> ConfigOutcome {
        let push = match open_config_push(&m.topic, &m.payload, &m.trusted, &self.limits) {
            Ok(o) => o.value,
            Err(e) => {
                let code = match &e {
                    ConfigPushError::TopicMismatch => "topic-mismatch",
                    ConfigPushError::Envelope(_) => "unverified",
                };
                tracing::warn!(topic = %m.topic, error = %e, "config push refused");
                return refused(topic_daemon, 0, code, &e.to_string());
            }
        };
        let d = push.daemon;
        let last = self
            .record
            .as_ref()
            .ok()
            .and_then(|r| r.last.get(d.as_str()).copied());
        if let Err(r) = decide_config_push(&self.station, last, &push) {
            return refused(d, push.sequence, r.code(), &r.to_string());
        }
        if d == Daemon::Updated {
            return refused(
                d,
                push.sequence,
                "self-restart-unsupported",
                "fleet-updated does not restart itself for a configuration push",
            );
        }
        match self.apply(&push).await {
            Ok(outcome) => outcome,
            Err(Refusal { code, reason }) => refused(d, push.sequence, code, &reason),
        }
    }

    /// Steps 3 to 6 for a push the core took.
    async fn apply(&mut self, push: &ConfigPush) -> Result<ConfigOutcome, Refusal> {
        let d = push.daemon;
        let name = d.as_str();
        let current = self.cfg.layer_dir.join(format!("{name}.toml"));
        let previous_file = self.cfg.layer_dir.join(format!("{name}.toml.previous"));
        let candidate = self.cfg.layer_dir.join(format!(".{name}.toml.candidate"));
        let previous = layer::read_bytes(&current).map_err(Refusal::layer)?;
        let layer_now = match &previous {
            Some(bytes) => layer::parse(&current, bytes).map_err(Refusal::layer)?,
            None => Default::default(),
        };
        let text = layer::render(&apply_push(&layer_now, push));
        layer::write(&candidate, text.as_bytes()).map_err(Refusal::layer)?;
        let checked = check::run(&self.cfg, d, &candidate).await;
        if let Err(why) = checked {
            let _ = layer::remove(&candidate);
            return Err(Refusal {
                code: "rejected-by-daemon",
                reason: why,
            });
        }
        // The layer as it is now, kept for the restore (a copy: nothing changed yet).
        let kept = match &previous {
            Some(bytes) => layer::write(&previous_file, bytes),
            None => layer::remove(&previous_file),
        };
        if let Err(e) = kept {
            let _ = layer::remove(&candidate);
            return Err(Refusal::layer(e));
        }
        // The sequence is taken, and the watch to come noted, before anything changes: a replay
        // is refused from here on whatever happens to the layer, and a daemon that stops
        // before the verdict judges again at its next start.
        if let Ok(record) = &mut self.record {
            record.last.insert(name.to_owned(), push.sequence);
            record.pending = Some(store::Pending {
                daemon: d,
                sequence: push.sequence,
                health_deadline_secs: push.health_deadline_secs,
            });
            if let Err(e) = store::save(&self.cfg.record_file, record) {
                let _ = layer::remove(&candidate);
                return Err(Refusal {
                    code: "record-unwritable",
                    reason: e.to_string(),
                });
            }
        }
        fleet_durable::rename(&candidate, &current).map_err(|e| Refusal {
            code: "layer-unwritable",
            reason: e.to_string(),
        })?;
        tracing::info!(daemon = name, sequence = push.sequence, layer = %current.display(), "pushed layer written; restarting the daemon");
        let deadline = Duration::from_secs(u64::from(push.health_deadline_secs));
        let verdict = self.watch(d, deadline, true).await;
        Ok(self.conclude(d, push.sequence, &current, previous.as_deref(), verdict))
    }

    fn layer_path(&self, d: Daemon, suffix: &str) -> PathBuf {
        self.cfg.layer_dir.join(format!("{}.{suffix}", d.as_str()))
    }

    /// The outcome of a watched push: accepted, or the previous layer (none: no file) back, the
    /// daemon restarted on it, and restored. Clears the pending watch.
    fn conclude(
        &mut self,
        d: Daemon,
        sequence: u64,
        current: &Path,
        previous: Option<&[u8]>,
        verdict: Result<(), String>,
    ) -> ConfigOutcome {
        let outcome = match verdict {
            Ok(()) => ConfigOutcome::ConfigAccepted {
                daemon: d,
                sequence,
            },
            Err(reason) => {
                tracing::warn!(daemon = d.as_str(), sequence, %reason, "daemon not healthy: restoring the previous layer");
                let restored = match previous {
                    Some(bytes) => layer::write(current, bytes),
                    None => layer::remove(current),
                };
                let reason = match restored {
                    Ok(()) => {
                        if let Err(e) = restart::request(&self.cfg, d) {
                            tracing::error!(error = %e, "unable to restart the daemon on its previous layer");
                        }
                        reason
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "unable to restore the previous layer");
                        format!("{reason}; and {e}")
                    }
                };
                ConfigOutcome::ConfigRestored {
                    daemon: d,
                    sequence,
                    reason: clip(&reason),
                }
            }
        };
        self.clear_pending();
        outcome
    }

    fn clear_pending(&mut self) {
        if let Ok(record) = &mut self.record {
            record.pending = None;
            if let Err(e) = store::save(&self.cfg.record_file, record) {
                tracing::warn!(error = %e, "unable to clear the pending config push");
            }
        }
    }

    /// Asks for the restart (unless resuming a watch) and watches until the core's judgement:
    /// `Err(reason)` to restore.
    async fn watch(&self, d: Daemon, deadline: Duration, restart: bool) -> Result<(), String> {
        let asked_ms = restart::monotonic_ms();
        let started = tokio::time::Instant::now();
        if restart {
            restart::request(&self.cfg, d)?;
        }
        let watch = Watch {
            deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
            settle_ms: u64::try_from(self.cfg.settle.as_millis()).unwrap_or(u64::MAX),
        };
        let mut healthy_since: Option<u64> = None;
        let mut last_failure = String::new();
        loop {
            tokio::time::sleep(self.cfg.poll).await;
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match restart::observe(&self.cfg, d, asked_ms).await {
                Ok(()) => {
                    healthy_since.get_or_insert(now);
                }
                Err(why) => {
                    healthy_since = None;
                    last_failure = why;
                }
            }
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match judge_restart(watch, healthy_since, now, &last_failure) {
                AfterRestart::Accept => return Ok(()),
                AfterRestart::Wait => {}
                AfterRestart::Restore { reason } => return Err(reason),
            }
        }
    }
}

/// A refusal found while applying (nothing changed yet).
struct Refusal {
    code: &'static str,
    reason: String,
}

impl Refusal {
    fn layer(e: layer::LayerFileError) -> Self {
        Refusal {
            code: "layer-unusable",
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

    fn base() -> String {
        format!(
            "device-id = \"stn-1\"\ncompatible = \"fleet-sim\"\ndata-dir = \"/data\"\n\
             trusted-keys = [\"{KEY}\"]\ninstaller = \"rauc\"\nboot-flow = \"uboot\"\n\
             bootctl-config = \"/etc/fleet/bootctl.toml\"\n[mqtt]\nhost = \"127.0.0.1\"\n"
        )
    }

    #[test]
    fn the_documented_config_push_section_parses_into_the_applier_settings() {
        let doc = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/reference/updated.md"),
        )
        .expect("updated.md");
        let block: String = doc
            .lines()
            .skip_while(|l| l.trim() != "```toml config-push")
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            block.contains("[config-push]"),
            "no ```toml config-push block"
        );
        let cfg = crate::Config::parse(Path::new("updated.md"), &format!("{}{block}", base()))
            .expect("the documented section is valid");
        let a = cfg.config_push.expect("configured");
        assert_eq!(a.layer_dir, PathBuf::from("/data/fleet/config"));
        assert_eq!(a.restart_dir, PathBuf::from("/run/fleet/config-restart"));
        assert_eq!(a.settle, Duration::from_secs(5));
        assert_eq!(
            a.record_file,
            PathBuf::from("/data/fleet/updated/config-push.json")
        );
    }

    #[test]
    fn without_the_section_no_config_topic_is_read_and_bad_values_are_named() {
        let cfg = crate::Config::parse(Path::new("t.toml"), &base()).expect("valid");
        assert!(cfg.config_push.is_none());
        let err = crate::Config::parse(
            Path::new("t.toml"),
            &format!(
                "{}[config-push]\nlayer-dir = \"rel\"\npoll-ms = 1\n",
                base()
            ),
        )
        .expect_err("invalid");
        let text = err.to_string();
        assert!(text.contains("config-push.layer-dir"), "{text}");
        assert!(text.contains("config-push.poll-ms"), "{text}");
    }

    #[test]
    fn every_daemons_checker_gets_all_three_layers() {
        let mut problems = Vec::new();
        let raw: RawApplier = toml::from_str("").expect("defaults");
        let cfg = raw.validate(Path::new("/data"), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let (program, args) = check::argv(&cfg, Daemon::Recorderd, Path::new("/c"));
        assert_eq!(program, PathBuf::from("/usr/bin/fleet-recorderd"));
        assert_eq!(
            args.join(" "),
            "--config /etc/fleet/recorderd.toml --station-config /data/fleet/identity/recorderd.toml \
             --pushed-config /c --check-config"
        );
        let (_, args) = check::argv(&cfg, Daemon::Uploaderd, Path::new("/c"));
        assert_eq!(
            args.join(" "),
            "--config /etc/fleet/uploaderd.toml --station-config /data/fleet/identity/uploaderd.toml \
             --pushed-config /c --check-config"
        );
    }
}
