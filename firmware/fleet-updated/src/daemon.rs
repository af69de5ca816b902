//! The daemon: one `select!` loop wiring the MQTT session, the update engine, the journal and
//! the ports.
//!
//! Contract with the engine (`fleet_core::update::engine`): every event goes through
//! [`step`]; the next state is persisted to the journal **before** any of the transition's
//! actions runs; each action's result is fed back as the matching event.
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_core::ports::{BootControl, BootStatus, InstallRequest, Installer, PortError};
use fleet_core::rollout::{
    Control, ControlRefused, Effective, Scope, accept_control, decide_control,
    decide_offer_under_control, responsible,
};
use fleet_core::slot::Slot;
use fleet_core::time::Now;
use fleet_core::trust::{KeyStatus, RotationReject, TrustState, decide_rotation};
use fleet_core::update::{
    Action, AdmissionContext, BootOp, BundleId, DownloadFailure, Event, Outcome, Phase, Policy,
    PublicKey, RejectReason, Report, SignatureVerdict, State, Station, TrialBootCounting,
    VerifyFailure, step,
};
use fleet_mqtt::{Message, Session, SessionConfig, SessionEvent, Will};
use fleet_proto::envelope::{self, Kind, TrustedKeys};
use fleet_proto::payload::{
    self, BundleManifest, Held, Presence, StationEvent, StationState, TrustReport,
};
use fleet_proto::rollout::{control_topic, parse_control_topic};
use fleet_proto::trust::{KEY_ROTATION_TOPIC, open_rotation, trusted_keys};
use fleet_proto::{Limits, Offer, Topic, topic};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::sync::mpsc;

use crate::config::{Config, WallClock};
use crate::download::{self, ChunkOutcome, ChunkPlan, Download};
use crate::journal::{Journal, JournalError};
use crate::trust_store::{TrustStore, TrustStoreError};

/// Depth of the queue carrying results of background work (verify, install, health checks,
/// chunk retries) back into the loop. Install progress is dropped, never queued, when full.
const INTERNAL_CAPACITY: usize = 32;
/// Attempts of a retryable boot-control call before its failure is fed to the engine.
const BOOT_CONTROL_TRIES: u32 = 3;
/// How long a reboot or shutdown waits for queued publications to reach the broker.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// Download progress goes to the engine (journal, state and an event) once per this many
/// percent (bounded chatter and journal writes).
const PROGRESS_STEP_PERCENT: u64 = 1;
/// Install progress goes into the retained state once per this many percent.
const INSTALL_STATE_STEP_PERCENT: u8 = 5;
/// Most offers held back by controls at once (one per offer topic the station reads).
const MAX_HELD_OFFERS: usize = 64;

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop (SIGTERM, or the shutdown future resolved).
    Shutdown,
    /// The engine asked for a reboot into `into`; the journal already holds the intent.
    /// A real station reboots; the binary exits with [`crate::EXIT_REBOOT`]; the simulated
    /// runner boots the simulated bootloader and starts the daemon again.
    Reboot { into: Slot },
}

/// A failure that stops the daemon.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("unable to read the boot status: {0}")]
    BootStatus(String),
    #[error("unable to run blocking work: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Trust(#[from] TrustStoreError),
    #[error("unable to trust the configured keys: {0}")]
    BootstrapKeys(String),
}

/// A failed health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthFailure {
    /// Which check failed.
    pub check: String,
    pub detail: String,
}

/// The health checks a trial slot must pass before it is committed. (Not a `fleet-core` port
/// yet; see the crate docs.)
pub trait HealthCheck: Send + Sync + 'static {
    fn check(&self, booted: Slot) -> impl Future<Output = Result<(), HealthFailure>> + Send;

    /// The daemon's MQTT session came up (`true`) or went down; the broker check reads it.
    fn mqtt_connected(&self, connected: bool) {
        let _ = connected;
    }
}

/// The ports the daemon drives.
#[derive(Debug)]
pub struct Deps<B, I, H> {
    pub boot: Arc<B>,
    pub installer: Arc<I>,
    pub health: Arc<H>,
}

impl<B, I, H> Clone for Deps<B, I, H> {
    fn clone(&self) -> Self {
        Self {
            boot: self.boot.clone(),
            installer: self.installer.clone(),
            health: self.health.clone(),
        }
    }
}

/// What the journal holds: the engine state plus the shell's publication counters (so `seq`
/// keeps increasing across restarts). Unknown fields are ignored so that a release rolled back
/// to can read what a newer one wrote (fields added later must carry `#[serde(default)]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Saved {
    engine: State,
    state_seq: u64,
    event_seq: u64,
}

/// The operator controls in force, newest accepted per control topic
/// (`<data>/fleet/updated/controls.json`, written like the journal before they take effect).
/// A separate file, not a journal field: a release rolled back to, which knows nothing of
/// controls, still reads its journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct SavedControls {
    #[serde(default)]
    controls: BTreeMap<String, Control>,
}

/// An offer held back by a control, taken up again when the controls change.
#[derive(Debug, Clone)]
struct HeldOffer {
    message: Message,
    update_id: fleet_core::ids::UpdateId,
    version: fleet_core::ids::Version,
    reason: RejectReason,
}

/// Counters skipped at start: publications after the last journal write may have used them.
const SEQ_GAP: u64 = 1_000_000;

enum Internal {
    InstallProgress(u8),
    Installed(Result<fleet_core::ports::Installed, (bool, String)>),
    Verified(BundleId, Result<(), VerifyFailure>),
    Health(Result<(), HealthFailure>),
    ChunkRetry(BundleId, u32),
}

/// One download in flight, owned by the loop.
struct Transfer {
    bundle_id: BundleId,
    size: u64,
    version: fleet_core::ids::Version,
    manifest_topic: String,
    manifest: Option<BundleManifest>,
    store: Option<Download>,
    /// Chunk indexes subscribed now.
    window: BTreeSet<u32>,
    failures: HashMap<u32, u32>,
    last_activity: Instant,
    last_percent: u64,
    /// Payload bytes of chunks received that were already held (re-sent).
    resent_bytes: u64,
}

/// Figures of one run, for tests and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Chunk payload bytes received that were already held.
    pub resent_chunk_bytes: u64,
    /// Chunk payload bytes stored.
    pub stored_chunk_bytes: u64,
}

struct Shell<B, I, H> {
    cfg: Config,
    deps: Deps<B, I, H>,
    limits: Limits,
    journal: Journal,
    saved: Saved,
    boot_status: Option<BootStatus>,
    session: Session,
    internal_tx: mpsc::Sender<Internal>,
    started: Instant,
    transfer: Option<Transfer>,
    /// sha256 of the last payload handled per offer topic (retained offers come again on every
    /// reconnect; an identical one is handled once per run).
    seen_offers: HashMap<String, [u8; 32]>,
    /// Offer messages refused because an update was past the point of no return, by topic:
    /// handled again once the engine is idle (the engine's `Busy` contract).
    busy_offers: HashMap<String, Message>,
    /// Set while executing a `Busy` rejection report.
    saw_busy: bool,
    exit: Option<Exit>,
    stats: RunStats,
    /// The version floor last written (or found at or above this).
    floor: Option<semver::Version>,
    /// The offer-signing keys trusted now (configured set, or the last applied rotation).
    trust: TrustState,
    /// `trust` as envelope verification keys: every offer, manifest and control uses these.
    trusted: TrustedKeys,
    trust_store: TrustStore,
    /// SHA-256 of the rotation message applied last (the retained one comes again).
    applied_rotation: Option<[u8; 32]>,
    controls: SavedControls,
    controls_file: Journal,
    /// Offers held back by a control, by offer topic.
    held_offers: BTreeMap<String, HeldOffer>,
    /// The verified bundle of the job is held before install, and why.
    held_install: Option<RejectReason>,
    /// The installer's last progress, and the last one put into the retained state.
    install_percent: Option<u8>,
    install_percent_published: Option<u8>,
    /// The update of the job that the last transition ended (events after it carry its id).
    ended_update: Option<fleet_core::ids::UpdateId>,
}

/// Runs the station daemon until `shutdown` resolves or the engine asks for a reboot.
///
/// Call it again after [`Exit::Reboot`] (after the boot flow ran): the journal carries the
/// update across.
pub async fn run<B, I, H>(
    cfg: Config,
    deps: Deps<B, I, H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(Exit, RunStats), RunError>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    let journal = Journal::under(&cfg.data_dir);
    let station = Station {
        device_id: cfg.device_id.clone(),
        groups: cfg.groups.clone(),
        compatible: cfg.compatible.clone(),
    };
    let policy = Policy {
        max_trial_attempts: cfg.update.max_trial_attempts,
        max_bundle_bytes: cfg.update.download_space_bytes,
        trial_boot_counting: trial_boot_counting(cfg.boot_flow),
        ..Policy::default()
    };
    let boot_status = boot_call(&deps.boot, |b| b.status())
        .await
        .map_err(RunError::BootStatus)?;
    let loaded = {
        let j = journal.clone();
        tokio::task::spawn_blocking(move || match j.load::<Saved>() {
            Ok(s) => Ok(s),
            Err(e @ (JournalError::Parse { .. } | JournalError::TooLarge { .. })) => {
                tracing::error!(error = %e, "journal unreadable: set aside, starting from the boot flow");
                j.quarantine().map(|_| None)
            }
            Err(e) => Err(e),
        })
        .await??
    };
    let mut saved = loaded.unwrap_or_else(|| {
        let running = boot_status.slot(boot_status.booted);
        let version = running
            .version
            .clone()
            .unwrap_or_else(|| semver::Version::new(0, 0, 0));
        Saved {
            engine: State::new(station.clone(), policy, boot_status.booted, version),
            state_seq: 0,
            event_seq: 0,
        }
    });
    // The rotated key set wins over the configured one; a damaged trust file stops the daemon
    // (never a silent fall back to keys that may have been revoked).
    let bootstrap = TrustState::bootstrap(
        cfg.trusted_keys
            .keys()
            .map(fleet_proto::trust::public_key)
            .collect::<Vec<PublicKey>>(),
    )
    .map_err(|e| RunError::BootstrapKeys(e.to_string()))?;
    let trust_store = TrustStore::under(&cfg.data_dir);
    let loaded_trust = {
        let store = trust_store.clone();
        tokio::task::spawn_blocking(move || store.load(bootstrap)).await??
    };
    let trusted =
        trusted_keys(&loaded_trust.trust).map_err(|e| RunError::BootstrapKeys(e.to_string()))?;
    let controls_file = Journal::named(&cfg.data_dir, "controls.json");
    let controls = {
        let j = controls_file.clone();
        tokio::task::spawn_blocking(move || match j.load::<SavedControls>() {
            Ok(c) => Ok(c.unwrap_or_default()),
            Err(e @ (JournalError::Parse { .. } | JournalError::TooLarge { .. })) => {
                tracing::error!(error = %e, "controls file unreadable: set aside, no controls in force until they come again");
                j.quarantine().map(|_| SavedControls::default())
            }
            Err(e) => Err(e),
        })
        .await??
    };
    // Identity and tunables come from the configuration at every start.
    saved.engine.station = station;
    saved.engine.policy = policy;
    saved.state_seq += SEQ_GAP;
    saved.event_seq += SEQ_GAP;

    // Host, port, transport (TLS credentials), keep-alive and backoff from the config.
    let mut mqtt: SessionConfig = cfg
        .mqtt
        .session_config(format!("fleet-updated-{}", cfg.device_id));
    mqtt.will = Some(Will {
        topic: topic::device_presence(&cfg.device_id),
        payload: Presence::Offline.as_bytes().to_vec(),
        retain: true,
    });
    // fleet-mqtt's transport ceiling (its default) stays well above every protocol limit: a
    // message somewhat over its limit reaches `on_message` and is refused as `too-large`.
    let limits = Limits::DEFAULT;
    let (session, mut events) = Session::start(mqtt);
    let mut offer_topics = vec![topic::device_offer(&cfg.device_id)];
    offer_topics.extend(cfg.groups.iter().map(topic::group_offer));
    // Controls and key rotations are read before offers are judged (subscribed first; the
    // broker sends retained messages in subscription order).
    let mut topics = vec![KEY_ROTATION_TOPIC.to_owned(), control_topic(&Scope::Fleet)];
    topics.extend(
        cfg.groups
            .iter()
            .map(|g| control_topic(&Scope::Group(g.clone()))),
    );
    topics.push(control_topic(&Scope::Device(cfg.device_id.clone())));
    topics.extend(offer_topics);
    // Not connected yet: the session subscribes these at every connect.
    if let Err(e) = session.subscribe_many(&topics).await {
        tracing::error!(error = %e, "unable to subscribe offer and control topics");
    }

    let (internal_tx, mut internal_rx) = mpsc::channel(INTERNAL_CAPACITY);
    let mut shell = Shell {
        cfg,
        deps,
        limits,
        journal,
        saved,
        boot_status: Some(boot_status.clone()),
        session,
        internal_tx,
        started: Instant::now(),
        transfer: None,
        seen_offers: HashMap::new(),
        busy_offers: HashMap::new(),
        saw_busy: false,
        exit: None,
        stats: RunStats::default(),
        floor: None,
        trust: loaded_trust.trust,
        trusted,
        trust_store,
        applied_rotation: loaded_trust.applied_sha256,
        controls,
        controls_file,
        held_offers: BTreeMap::new(),
        held_install: None,
        install_percent: None,
        install_percent_published: None,
        ended_update: None,
    };
    shell.persist().await?;
    shell.raise_floor().await;
    shell.feed(Event::Started(boot_status)).await?;
    // systemd (Type=notify): started, and alive at every tick below (WatchdogSec). Without
    // NOTIFY_SOCKET (tests, simulated stations) these do nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "unable to notify systemd");
    }

    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        if let Some(exit) = shell.exit {
            shell.leave(exit, &mut events).await;
            return Ok((exit, shell.stats));
        }
        shell.retry_busy_offers().await?;
        tokio::select! {
            () = &mut shutdown => {
                shell.leave(Exit::Shutdown, &mut events).await;
                return Ok((Exit::Shutdown, shell.stats));
            }
            ev = events.recv() => match ev {
                Some(SessionEvent::Connected) => {
                    shell.deps.health.mqtt_connected(true);
                    shell.on_connected().await;
                }
                Some(SessionEvent::Disconnected { reason, retry_in }) => {
                    shell.deps.health.mqtt_connected(false);
                    tracing::warn!(reason, retry_in_ms = retry_in.as_millis() as u64, "broker connection down");
                }
                Some(SessionEvent::Message(m)) => shell.on_message(m).await?,
                None => {
                    tracing::error!("mqtt session ended");
                    return Ok((Exit::Shutdown, shell.stats));
                }
            },
            Some(msg) = internal_rx.recv() => shell.on_internal(msg).await?,
            _ = tick.tick() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                shell.on_tick().await?;
            }
        }
    }
}

async fn boot_call<B, T, F>(boot: &Arc<B>, f: F) -> Result<T, String>
where
    B: BootControl + 'static,
    T: Send + 'static,
    F: Fn(&B) -> Result<T, B::Error> + Send + Sync + Clone + 'static,
{
    let mut tries = 0;
    loop {
        tries += 1;
        let b = boot.clone();
        let g = f.clone();
        match tokio::task::spawn_blocking(move || g(&b)).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if e.is_retryable() && tries < BOOT_CONTROL_TRIES => {
                tracing::warn!(error = %e, tries, "boot control failed, retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    fn now(&self) -> Now {
        let mono = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.cfg.wall_clock {
            WallClock::Untrusted => Now::untrusted(mono),
            WallClock::Trusted => {
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                Now::trusted(mono, wall)
            }
        }
    }

    async fn persist(&self) -> Result<(), RunError> {
        let j = self.journal.clone();
        let s = self.saved.clone();
        tokio::task::spawn_blocking(move || j.save(&s)).await??;
        Ok(())
    }

    /// Raises the version floor RAUC's install-check hook reads to the committed version.
    async fn raise_floor(&mut self) {
        let version = self.saved.engine.committed_version.clone();
        if self.floor.as_ref() == Some(&version) {
            return;
        }
        let path = self.cfg.version_floor_file.clone();
        let v = version.clone();
        match tokio::task::spawn_blocking(move || crate::floor::raise(&path, &v)).await {
            Ok(Ok(wrote)) => {
                if wrote {
                    tracing::info!(version = %version, "version floor raised");
                }
                self.floor = Some(version);
            }
            Ok(Err(e)) => {
                tracing::warn!(path = %self.cfg.version_floor_file.display(), error = %e, "unable to write the version floor")
            }
            Err(e) => tracing::warn!(error = %e, "unable to write the version floor"),
        }
    }

    /// Steps the engine through `first` and every event its actions produce.
    async fn feed(&mut self, first: Event) -> Result<(), RunError> {
        let mut queue = VecDeque::from([first]);
        while let Some(event) = queue.pop_front() {
            let name = event.name();
            let transition = match step(&self.saved.engine, event, self.now()) {
                Ok(t) => t,
                Err(rejected) => {
                    tracing::warn!(error = %rejected, "event ignored by the engine");
                    continue;
                }
            };
            let changed = transition.next != self.saved.engine;
            let prior = self.saved.engine.phase.job().map(|j| j.update_id.clone());
            if changed {
                tracing::info!(event = ?name, from = ?self.saved.engine.phase.name(), to = ?transition.next.phase.name(), "transition");
                if transition.next.phase.name() != self.saved.engine.phase.name() {
                    self.install_percent = None;
                    self.install_percent_published = None;
                    self.held_install = None;
                }
                self.saved.engine = transition.next;
                // Intent before action: the journal holds the new state before anything runs.
                self.persist().await?;
                self.raise_floor().await;
            }
            // Reports of a transition that ended the job (committed, rolled back, failed) still
            // name its update.
            self.ended_update = prior;
            for action in transition.actions {
                self.execute(action, &mut queue).await?;
            }
            self.ended_update = None;
            if changed {
                self.publish_state().await;
            }
        }
        Ok(())
    }

    async fn execute(
        &mut self,
        action: Action,
        queue: &mut VecDeque<Event>,
    ) -> Result<(), RunError> {
        tracing::debug!(?action, "action");
        match action {
            Action::Report(report) => {
                if matches!(
                    &report,
                    Report::OfferRejected {
                        reason: fleet_core::update::RejectReason::Busy { .. },
                        ..
                    }
                ) {
                    self.saw_busy = true;
                }
                self.publish_event(report).await;
            }
            Action::Download {
                bundle_id,
                size,
                version,
                resume,
            } => self.start_download(bundle_id, size, version, resume).await,
            Action::DiscardDownload { bundle_id } => {
                self.stop_download(Some(bundle_id)).await;
                let data = self.cfg.data_dir.clone();
                let id = bundle_id.to_string();
                tokio::task::spawn_blocking(move || {
                    for p in [
                        download::downloads_dir(&data).join(format!("{id}.part")),
                        download::bundle_path(&data, &id),
                    ] {
                        match std::fs::remove_file(&p) {
                            Ok(()) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => tracing::warn!(path = %p.display(), error = %e, "unable to remove download"),
                        }
                    }
                })
                .await?;
            }
            Action::VerifyBundle { bundle_id, size } => {
                let data = self.cfg.data_dir.clone();
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    let result =
                        tokio::task::spawn_blocking(move || verify(&data, &bundle_id, size))
                            .await
                            .unwrap_or_else(|e| {
                                Err(VerifyFailure::Io {
                                    detail: e.to_string(),
                                })
                            });
                    let _ = tx.send(Internal::Verified(bundle_id, result)).await;
                });
            }
            Action::Install {
                bundle_id,
                update_id,
                slot,
                version,
                manifest_hash,
            } => {
                tracing::info!(slot = %slot, version = %version, "install starts");
                let installer = self.deps.installer.clone();
                let tx = self.internal_tx.clone();
                let bundle = download::bundle_path(&self.cfg.data_dir, &bundle_id.to_string());
                tokio::spawn(async move {
                    let transaction = update_id.to_string();
                    let hash = manifest_hash.map(|h| h.to_string());
                    let ptx = tx.clone();
                    let progress = move |p: fleet_core::ports::InstallProgress| {
                        // Progress is advisory: dropped when the loop is behind.
                        let _ = ptx.try_send(Internal::InstallProgress(p.percent));
                    };
                    let result = installer
                        .install(
                            InstallRequest {
                                bundle: &bundle,
                                transaction: &transaction,
                                manifest_hash: hash.as_deref(),
                            },
                            &progress,
                        )
                        .await
                        .map_err(|e| (e.is_retryable(), e.to_string()));
                    let _ = tx.send(Internal::Installed(result)).await;
                });
            }
            Action::ArmTrial { slot } => {
                let r = boot_call(&self.deps.boot, move |b| b.arm_trial(slot)).await;
                queue.push_back(match r {
                    Ok(()) => Event::TrialArmed { slot },
                    Err(detail) => Event::BootControlFailed {
                        op: BootOp::ArmTrial,
                        slot,
                        detail,
                    },
                });
                self.refresh_boot_status().await;
            }
            Action::MarkGood { slot } => {
                let r = boot_call(&self.deps.boot, move |b| b.mark_good(slot)).await;
                queue.push_back(match r {
                    Ok(()) => Event::MarkedGood { slot },
                    Err(detail) => Event::BootControlFailed {
                        op: BootOp::MarkGood,
                        slot,
                        detail,
                    },
                });
                self.refresh_boot_status().await;
            }
            Action::MarkBad { slot } => {
                let r = boot_call(&self.deps.boot, move |b| b.mark_bad(slot)).await;
                queue.push_back(match r {
                    Ok(()) => Event::MarkedBad { slot },
                    Err(detail) => Event::BootControlFailed {
                        op: BootOp::MarkBad,
                        slot,
                        detail,
                    },
                });
                self.refresh_boot_status().await;
            }
            Action::RunHealthChecks { slot } => {
                let health = self.deps.health.clone();
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    let r = health.check(slot).await;
                    let _ = tx.send(Internal::Health(r)).await;
                });
            }
            Action::Reboot { into } => {
                tracing::info!(into = %into, "reboot requested");
                self.exit = Some(Exit::Reboot { into });
            }
            other => tracing::warn!(action = ?other, "action not supported by this shell"),
        }
        Ok(())
    }

    async fn refresh_boot_status(&mut self) {
        match boot_call(&self.deps.boot, |b| b.status()).await {
            Ok(s) => self.boot_status = Some(s),
            Err(e) => tracing::warn!(error = %e, "unable to read boot status"),
        }
    }

    async fn publish_state(&mut self) {
        self.saved.state_seq += 1;
        let mut state = StationState::from_engine(
            &self.saved.engine,
            self.boot_status.as_ref(),
            self.saved.state_seq,
            self.now(),
        );
        if let (Some(t), Some(progress)) = (&self.transfer, state.progress.as_mut())
            && let Some(store) = &t.store
        {
            progress.done_bytes = store.held_bytes();
        }
        if matches!(self.saved.engine.phase, Phase::Installing { .. }) {
            state.install_percent = self.install_percent;
            self.install_percent_published = self.install_percent;
        }
        state.held = self.held_report();
        state.trust = Some(TrustReport {
            sequence: self.trust.sequence,
            keys: self.trust.keys().map(PublicKey::key_id).collect(),
            revoked: self.trust.revoked().copied().collect(),
        });
        let topic = topic::device_state(&self.cfg.device_id);
        if let Err(e) = self
            .session
            .publish(&topic, payload::encode(&state), true)
            .await
        {
            tracing::warn!(error = %e, "unable to publish state");
        }
    }

    async fn publish_event(&mut self, report: Report) {
        self.saved.event_seq += 1;
        let update_id = self
            .saved
            .engine
            .phase
            .job()
            .map(|j| j.update_id.clone())
            .or_else(|| self.ended_update.clone());
        let event = StationEvent {
            device_id: self.cfg.device_id.clone(),
            seq: self.saved.event_seq,
            at: self.now().into(),
            update_id,
            event: report,
        };
        tracing::info!(event = ?event.event, "station event");
        let topic = topic::device_events(&self.cfg.device_id);
        if let Err(e) = self
            .session
            .publish(&topic, payload::encode(&event), false)
            .await
        {
            tracing::warn!(error = %e, "unable to publish event");
        }
    }

    async fn on_connected(&mut self) {
        let topic = topic::device_presence(&self.cfg.device_id);
        if let Err(e) = self
            .session
            .publish(&topic, Presence::Online.as_bytes().to_vec(), true)
            .await
        {
            tracing::warn!(error = %e, "unable to publish presence");
        }
        // A clean session lost whatever was queued while down: publish the state again.
        self.publish_state().await;
        if let Some(t) = &mut self.transfer {
            t.last_activity = Instant::now();
        }
    }

    async fn on_message(&mut self, m: Message) -> Result<(), RunError> {
        if m.topic == KEY_ROTATION_TOPIC {
            return self.on_rotation(&m).await;
        }
        if let Some(scope) = parse_control_topic(&m.topic) {
            return self.on_control(&m, scope).await;
        }
        let Ok(topic) = Topic::parse(&m.topic) else {
            tracing::debug!(topic = %m.topic, "message on a topic this station does not read");
            return Ok(());
        };
        match topic {
            Topic::DeviceOffer(_) | Topic::GroupOffer(_) => self.on_offer(&m).await,
            Topic::BundleManifest(id) => self.on_manifest(id, &m.payload).await,
            Topic::BundleChunk { bundle_id, index } => {
                self.on_chunk(bundle_id, index, m.payload).await
            }
            _ => Ok(()),
        }
    }

    async fn on_offer(&mut self, m: &Message) -> Result<(), RunError> {
        if m.payload.is_empty() {
            // A cleared retained offer (`fleetctl clear`): the operator withdrew it. A
            // retraction wins over anything queued for the topic: an offer held back by a
            // control or refused as busy is dropped, and the same offer published again later
            // is judged afresh.
            if self.busy_offers.remove(&m.topic).is_some() {
                tracing::info!(topic = %m.topic, "offer refused as busy was withdrawn");
            }
            self.seen_offers.remove(&m.topic);
            self.release_offer(&m.topic, false).await;
            return Ok(());
        }
        let digest: [u8; 32] = sha2::Sha256::digest(&m.payload).into();
        if self.seen_offers.get(&m.topic) == Some(&digest) {
            return Ok(());
        }
        self.seen_offers.insert(m.topic.clone(), digest);
        // A newer message on the topic replaces whatever was queued for it as busy (queued
        // again below if it is refused as busy too).
        self.busy_offers.remove(&m.topic);
        let event = match envelope::open_json::<Offer>(
            &m.payload,
            Kind::Offer,
            &self.trusted,
            &self.limits,
        ) {
            Ok(opened) => {
                if already_handled(&self.saved.engine, &opened.value) {
                    // The retained offer of the update in progress (or just finished) comes
                    // again after every restart: not a replay worth reporting.
                    tracing::debug!(topic = %m.topic, "offer already handled");
                    self.release_offer(&m.topic, false).await;
                    return Ok(());
                }
                if self.hold_offer(m, &opened.value, opened.key_id).await {
                    return Ok(());
                }
                Event::OfferReceived {
                    offer: opened.value,
                    verdict: SignatureVerdict::Trusted {
                        key_id: opened.key_id,
                    },
                }
            }
            Err(e) => {
                tracing::warn!(topic = %m.topic, error = %e, "offer refused");
                self.release_offer(&m.topic, false).await;
                Event::OfferUnusable {
                    reason: e.reject_reason(),
                }
            }
        };
        self.saw_busy = false;
        self.feed(event).await?;
        if std::mem::take(&mut self.saw_busy) {
            self.busy_offers.insert(m.topic.clone(), m.clone());
        }
        Ok(())
    }

    /// The controls in force, merged over the station's scopes.
    fn effective(&self) -> Effective {
        Effective::merge(self.controls.controls.values())
    }

    /// The control message responsible for `reason`, as (scope, sequence).
    fn culprit(&self, reason: &RejectReason) -> (Option<Scope>, Option<u64>) {
        let found = responsible(self.controls.controls.values(), reason);
        (found.map(|c| c.scope.clone()), found.map(|c| c.sequence))
    }

    /// What the retained state reports as held: the job's install first, else an offer.
    fn held_report(&self) -> Option<Held> {
        let held = |update_id: &fleet_core::ids::UpdateId,
                    version: &fleet_core::ids::Version,
                    reason: &RejectReason| {
            let (scope, control_sequence) = self.culprit(reason);
            Held {
                update_id: update_id.clone(),
                version: version.clone(),
                reason: reason.clone(),
                scope,
                control_sequence,
            }
        };
        if let (Some(reason), Some(job)) = (&self.held_install, self.saved.engine.phase.job()) {
            return Some(held(&job.update_id, &job.version, reason));
        }
        self.held_offers
            .values()
            .next()
            .map(|h| held(&h.update_id, &h.version, &h.reason))
    }

    async fn report_held(
        &mut self,
        update_id: fleet_core::ids::UpdateId,
        sequence: Option<u64>,
        reason: RejectReason,
    ) {
        tracing::info!(update = %update_id, ?reason, "held back by a control");
        let (scope, control_sequence) = self.culprit(&reason);
        self.publish_event(Report::OfferHeld {
            update_id,
            sequence,
            reason,
            scope,
            control_sequence,
        })
        .await;
        self.publish_state().await;
    }

    /// Holds `offer` back when a control refuses it (after the offer rules, which the engine
    /// applies and reports itself). Returns true when held.
    async fn hold_offer(
        &mut self,
        m: &Message,
        offer: &Offer,
        key_id: fleet_core::update::KeyId,
    ) -> bool {
        let engine = &self.saved.engine;
        let ctx = AdmissionContext {
            station: &engine.station,
            installed: &engine.committed_version,
            last_sequence: engine.last_sequence,
            max_bundle_bytes: engine.policy.max_bundle_bytes,
        };
        let verdict = SignatureVerdict::Trusted { key_id };
        let reason =
            match decide_offer_under_control(&ctx, &self.effective(), offer, verdict, self.now()) {
                Err(
                    r @ (RejectReason::Frozen
                    | RejectReason::Halted { .. }
                    | RejectReason::Pinned { .. }),
                ) => r,
                _ => {
                    // Released only when the same update goes ahead; another offer on the topic
                    // just replaces the held one.
                    let same = self
                        .held_offers
                        .get(&m.topic)
                        .is_some_and(|h| h.update_id == offer.update_id);
                    self.release_offer(&m.topic, same).await;
                    return false;
                }
            };
        let same = self
            .held_offers
            .get(&m.topic)
            .is_some_and(|h| h.update_id == offer.update_id && h.reason == reason);
        if !self.held_offers.contains_key(&m.topic) && self.held_offers.len() >= MAX_HELD_OFFERS {
            tracing::warn!(topic = %m.topic, "too many held offers: dropped");
            return true;
        }
        self.held_offers.insert(
            m.topic.clone(),
            HeldOffer {
                message: m.clone(),
                update_id: offer.update_id.clone(),
                version: offer.version.clone(),
                reason: reason.clone(),
            },
        );
        if !same {
            self.report_held(offer.update_id.clone(), Some(offer.sequence), reason)
                .await;
        }
        true
    }

    /// Forgets the offer held on `topic`; `announce` reports that it goes ahead.
    async fn release_offer(&mut self, topic: &str, announce: bool) {
        let Some(h) = self.held_offers.remove(topic) else {
            return;
        };
        if announce {
            tracing::info!(update = %h.update_id, "held offer released");
            self.publish_event(Report::OfferReleased {
                update_id: h.update_id,
            })
            .await;
        }
        self.publish_state().await;
    }

    /// Why the job's verified bundle must not be installed now, if it must not: its signing
    /// key was revoked since, or a control refuses it.
    fn install_gate(&self, job: &fleet_core::update::Job) -> Option<RejectReason> {
        if let KeyStatus::Revoked = self.trust.status(&job.key_id) {
            return Some(RejectReason::RevokedKey { key_id: job.key_id });
        }
        decide_control(&self.effective(), &job.update_id, &job.version).err()
    }

    /// The bundle verified: the last check before anything is written to a slot. A halt or
    /// freeze that came during the download stops the station here, the bundle kept.
    async fn verified(&mut self, bundle_id: BundleId) -> Result<(), RunError> {
        let job = match &self.saved.engine.phase {
            Phase::Verifying { job, .. } if job.bundle_id == bundle_id => job.clone(),
            _ => return self.feed(Event::BundleVerified { bundle_id }).await,
        };
        if let Some(reason) = self.install_gate(&job) {
            if self.held_install.as_ref() != Some(&reason) {
                self.held_install = Some(reason.clone());
                self.report_held(job.update_id.clone(), Some(job.sequence), reason)
                    .await;
            }
            return Ok(());
        }
        if self.held_install.take().is_some() {
            tracing::info!(update = %job.update_id, "held install released");
            self.publish_event(Report::OfferReleased {
                update_id: job.update_id.clone(),
            })
            .await;
        }
        self.feed(Event::BundleVerified { bundle_id }).await
    }

    /// Looks again at what controls hold back, after the controls or the trusted keys changed.
    async fn reconsider(&mut self) -> Result<(), RunError> {
        if self.held_install.is_some() {
            match &self.saved.engine.phase {
                Phase::Verifying { job, .. } => {
                    let id = job.bundle_id;
                    self.verified(id).await?;
                }
                _ => self.held_install = None,
            }
        }
        let held: Vec<Message> = self
            .held_offers
            .values()
            .map(|h| h.message.clone())
            .collect();
        for m in held {
            self.seen_offers.remove(&m.topic);
            self.on_offer(&m).await?;
        }
        self.publish_state().await;
        Ok(())
    }

    async fn refuse_control(
        &mut self,
        scope: Option<Scope>,
        sequence: Option<u64>,
        reason: RejectReason,
    ) {
        tracing::warn!(?scope, ?sequence, ?reason, "control refused");
        self.publish_event(Report::ControlRefused {
            scope,
            sequence,
            reason,
        })
        .await;
    }

    /// A message on one of the station's control topics.
    async fn on_control(&mut self, m: &Message, topic_scope: Scope) -> Result<(), RunError> {
        if m.payload.is_empty() {
            // A cleared retained topic changes nothing: controls are lifted by a newer message.
            tracing::debug!(topic = %m.topic, "control topic cleared");
            return Ok(());
        }
        let control = match envelope::open_json::<Control>(
            &m.payload,
            Kind::Control,
            &self.trusted,
            &self.limits,
        ) {
            Ok(o) => o.value,
            Err(e) => {
                self.refuse_control(Some(topic_scope), None, e.reject_reason())
                    .await;
                return Ok(());
            }
        };
        if self.controls.controls.get(&m.topic) == Some(&control) {
            // The retained control in force, again (every reconnect and restart).
            return Ok(());
        }
        if control.scope != topic_scope {
            let detail = format!(
                "control for {:?} published on the topic of {:?}",
                control.scope, topic_scope
            );
            self.refuse_control(
                Some(topic_scope),
                Some(control.sequence),
                RejectReason::Malformed {
                    detail: fleet_core::update::offer::truncate(&detail, 200),
                },
            )
            .await;
            return Ok(());
        }
        let last = self.controls.controls.get(&m.topic).map(|c| c.sequence);
        if let Err(e) = accept_control(&self.saved.engine.station, last, &control) {
            let reason = match e {
                ControlRefused::NotForThisStation => RejectReason::NotForThisStation,
                ControlRefused::Replayed { sequence, last } => RejectReason::Replayed {
                    sequence,
                    last_accepted: last,
                },
                other => RejectReason::Malformed {
                    detail: other.to_string(),
                },
            };
            self.refuse_control(Some(control.scope), Some(control.sequence), reason)
                .await;
            return Ok(());
        }
        let mut next = self.controls.clone();
        next.controls.insert(m.topic.clone(), control.clone());
        // Persisted before it takes effect (a restart must obey it too).
        let j = self.controls_file.clone();
        let saved = next.clone();
        tokio::task::spawn_blocking(move || j.save(&saved)).await??;
        self.controls = next;
        tracing::info!(scope = ?control.scope, sequence = control.sequence, freeze = control.freeze, pin = ?control.pin, halted = control.halted.len(), "control accepted");
        self.publish_event(Report::ControlAccepted {
            scope: control.scope,
            sequence: control.sequence,
        })
        .await;
        self.reconsider().await
    }

    /// A message on the key rotation topic.
    async fn on_rotation(&mut self, m: &Message) -> Result<(), RunError> {
        if m.payload.is_empty() {
            return Ok(());
        }
        let digest: [u8; 32] = sha2::Sha256::digest(&m.payload).into();
        if self.applied_rotation == Some(digest)
            || self.seen_offers.get(KEY_ROTATION_TOPIC) == Some(&digest)
        {
            return Ok(());
        }
        self.seen_offers
            .insert(KEY_ROTATION_TOPIC.to_owned(), digest);
        let opened = match open_rotation(&m.payload, &self.trusted, &self.limits) {
            Ok(o) => o,
            Err(e) => {
                let reason = match e.reject_reason() {
                    RejectReason::UnknownKey { key_id } => RotationReject::UnknownKey { key_id },
                    RejectReason::RevokedKey { key_id } => RotationReject::RevokedKey { key_id },
                    _ => RotationReject::InvalidRotation {
                        detail: fleet_core::update::offer::truncate(&e.to_string(), 200),
                    },
                };
                tracing::warn!(?reason, "key rotation refused");
                self.publish_event(Report::RotationRefused {
                    sequence: None,
                    reason,
                })
                .await;
                return Ok(());
            }
        };
        let sequence = opened.value.sequence;
        let rotated = match decide_rotation(&self.trust, &opened.value, opened.key_id) {
            Ok(r) => r,
            Err(reason) => {
                tracing::warn!(sequence, ?reason, "key rotation refused");
                self.publish_event(Report::RotationRefused {
                    sequence: Some(sequence),
                    reason,
                })
                .await;
                return Ok(());
            }
        };
        let trusted = match trusted_keys(&rotated.next) {
            Ok(t) => t,
            Err(e) => {
                self.publish_event(Report::RotationRefused {
                    sequence: Some(sequence),
                    reason: RotationReject::InvalidRotation {
                        detail: e.to_string(),
                    },
                })
                .await;
                return Ok(());
            }
        };
        // Persisted before anything is verified with it.
        let store = self.trust_store.clone();
        let next = rotated.next.clone();
        tokio::task::spawn_blocking(move || store.save_applied(&next, Some(digest))).await??;
        self.trust = rotated.next;
        self.trusted = trusted;
        self.applied_rotation = Some(digest);
        tracing::info!(sequence, added = ?rotated.added, retired = ?rotated.retired, revoked = ?rotated.revoked, "keys rotated");
        self.publish_event(Report::KeysRotated {
            sequence,
            keys: self.trust.keys().map(PublicKey::key_id).collect(),
            added: rotated.added,
            retired: rotated.retired,
            revoked: rotated.revoked,
        })
        .await;
        // Offers held back were verified with the old set: judge them again.
        self.reconsider().await
    }

    /// Hands offers refused as busy to the engine again once it is idle.
    async fn retry_busy_offers(&mut self) -> Result<(), RunError> {
        let engine = &self.saved.engine;
        if self.busy_offers.is_empty()
            || engine.phase.job().is_some()
            || engine.booted != engine.committed
        {
            return Ok(());
        }
        let pending: Vec<Message> = self.busy_offers.drain().map(|(_, m)| m).collect();
        for m in pending {
            tracing::info!(topic = %m.topic, "offering again what came in while busy");
            self.seen_offers.remove(&m.topic);
            self.on_offer(&m).await?;
        }
        Ok(())
    }

    async fn start_download(
        &mut self,
        bundle_id: BundleId,
        size: u64,
        version: fleet_core::ids::Version,
        resume: bool,
    ) {
        self.stop_download(None).await;
        // Only one download at a time: whatever else sits in the download area goes.
        let data = self.cfg.data_dir.clone();
        let keep = bundle_id.to_string();
        match tokio::task::spawn_blocking(move || download::remove_all_except(&data, Some(&keep)))
            .await
        {
            Ok(Ok(freed)) if freed > 0 => tracing::info!(freed, "removed stale downloads"),
            Ok(Err(e)) => tracing::warn!(error = %e, "unable to clean the download area"),
            _ => {}
        }
        let manifest_topic = topic::bundle_manifest(&bundle_id);
        tracing::info!(bundle = %bundle_id, size, resume, "download starts");
        self.transfer = Some(Transfer {
            bundle_id,
            size,
            version,
            manifest_topic: manifest_topic.clone(),
            manifest: None,
            store: None,
            window: BTreeSet::new(),
            failures: HashMap::new(),
            last_activity: Instant::now(),
            last_percent: 0,
            resent_bytes: 0,
        });
        if let Err(e) = self.session.subscribe(&manifest_topic).await {
            tracing::warn!(error = %e, "unable to subscribe the manifest");
        }
    }

    async fn stop_download(&mut self, only: Option<BundleId>) {
        let Some(t) = &self.transfer else { return };
        if only.is_some_and(|id| id != t.bundle_id) {
            return;
        }
        let Some(t) = self.transfer.take() else {
            return;
        };
        self.stats.resent_chunk_bytes += t.resent_bytes;
        let _ = self.session.unsubscribe(&t.manifest_topic).await;
        for i in &t.window {
            let _ = self
                .session
                .unsubscribe(&topic::bundle_chunk(&t.bundle_id, *i))
                .await;
        }
    }

    async fn fail_download(&mut self, failure: DownloadFailure) -> Result<(), RunError> {
        let Some(t) = &self.transfer else {
            return Ok(());
        };
        let bundle_id = t.bundle_id;
        tracing::warn!(bundle = %bundle_id, ?failure, "download failed");
        self.stop_download(None).await;
        self.feed(Event::DownloadFailed { bundle_id, failure })
            .await
    }

    async fn on_manifest(&mut self, id: BundleId, bytes: &[u8]) -> Result<(), RunError> {
        let Some(t) = &self.transfer else {
            return Ok(());
        };
        if t.bundle_id != id || t.manifest.is_some() || bytes.is_empty() {
            return Ok(());
        }
        let opened = match envelope::open_json::<BundleManifest>(
            bytes,
            Kind::Manifest,
            &self.trusted,
            &self.limits,
        ) {
            Ok(o) => o.value,
            Err(e) => {
                return self
                    .fail_download(DownloadFailure::BadManifest {
                        reason: e.reject_reason(),
                    })
                    .await;
            }
        };
        if let Err(e) = opened.validate(&self.limits) {
            return self
                .fail_download(DownloadFailure::BadManifest {
                    reason: fleet_core::update::RejectReason::Malformed { detail: e.0 },
                })
                .await;
        }
        let mismatch = if opened.bundle_id != t.bundle_id {
            Some("bundle-id differs from the offer".to_owned())
        } else if opened.size != t.size {
            Some(format!(
                "size {} differs from the offer's {}",
                opened.size, t.size
            ))
        } else if opened.version != t.version {
            Some(format!(
                "version {} differs from the offer's {}",
                opened.version, t.version
            ))
        } else if opened.compatible != self.cfg.compatible {
            Some(format!(
                "compatible {:?} is not this station's {:?}",
                fleet_core::update::offer::truncate(&opened.compatible, 64),
                self.cfg.compatible
            ))
        } else {
            None
        };
        if let Some(detail) = mismatch {
            return self
                .fail_download(DownloadFailure::ManifestMismatch { detail })
                .await;
        }
        // The allowed space, and what the file system really has left.
        let data = self.cfg.data_dir.clone();
        let id = opened.bundle_id.to_string();
        let fs_free = tokio::task::spawn_blocking(move || download::free_bytes_for(&data, &id))
            .await?
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "unable to read free space; relying on the configured limit");
                u64::MAX
            });
        let available = self.cfg.update.download_space_bytes.min(fs_free);
        if opened.size > available {
            return self
                .fail_download(DownloadFailure::NoSpace {
                    needed: opened.size,
                    available,
                })
                .await;
        }
        let plan = ChunkPlan {
            bundle_id: opened.bundle_id.to_string(),
            size: opened.size,
            chunk_size: u64::from(opened.chunk_size),
            chunks: opened.chunks.iter().map(|c| *c.as_bytes()).collect(),
        };
        let data = self.cfg.data_dir.clone();
        let store = match tokio::task::spawn_blocking(move || Download::open(&data, plan)).await? {
            Ok(s) => s,
            Err(e) => {
                return self
                    .fail_download(DownloadFailure::Io {
                        detail: e.to_string(),
                    })
                    .await;
            }
        };
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        tracing::info!(
            held = store.held(),
            chunks = opened.chunks.len(),
            "manifest accepted"
        );
        t.manifest = Some(opened);
        t.store = Some(store);
        t.last_activity = Instant::now();
        self.fill_window().await;
        self.after_chunk().await
    }

    /// Subscribes missing chunks until the window is full.
    async fn fill_window(&mut self) {
        let Some(t) = &mut self.transfer else { return };
        let Some(store) = &t.store else { return };
        let room = self.cfg.update.chunk_window.saturating_sub(t.window.len());
        if room == 0 {
            return;
        }
        let next: Vec<u32> = store
            .missing()
            .filter_map(|i| u32::try_from(i).ok())
            .filter(|i| !t.window.contains(i) && !t.failures.contains_key(i))
            .take(room)
            .collect();
        if next.is_empty() {
            return;
        }
        t.window.extend(next.iter().copied());
        let topics: Vec<String> = next
            .iter()
            .map(|i| topic::bundle_chunk(&t.bundle_id, *i))
            .collect();
        if let Err(e) = self.session.subscribe_many(&topics).await {
            tracing::warn!(error = %e, "unable to subscribe chunks");
        }
    }

    async fn on_chunk(
        &mut self,
        bundle_id: BundleId,
        index: u32,
        bytes: fleet_mqtt::Bytes,
    ) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        if t.bundle_id != bundle_id || bytes.is_empty() {
            return Ok(());
        }
        let Some(mut store) = t.store.take() else {
            return Ok(());
        };
        let len = bytes.len() as u64;
        let (store, outcome) = tokio::task::spawn_blocking(move || {
            let r = store.accept(index as usize, &bytes);
            (store, r)
        })
        .await?;
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        t.store = Some(store);
        let outcome = match outcome {
            Ok(o) => o,
            Err(e) => {
                return self
                    .fail_download(DownloadFailure::Io {
                        detail: e.to_string(),
                    })
                    .await;
            }
        };
        let chunk_topic = topic::bundle_chunk(&bundle_id, index);
        match outcome {
            ChunkOutcome::Stored => {
                self.stats.stored_chunk_bytes += len;
                t.last_activity = Instant::now();
                t.window.remove(&index);
                let _ = self.session.unsubscribe(&chunk_topic).await;
                self.fill_window().await;
                self.after_chunk().await?;
            }
            ChunkOutcome::AlreadyHeld => {
                t.resent_bytes += len;
                if t.window.remove(&index) {
                    let _ = self.session.unsubscribe(&chunk_topic).await;
                }
            }
            ChunkOutcome::Refused(refusal) => {
                tracing::warn!(index, %refusal, "chunk refused");
                t.window.remove(&index);
                let _ = self.session.unsubscribe(&chunk_topic).await;
                let n = t.failures.entry(index).or_insert(0);
                *n += 1;
                if *n >= self.cfg.update.chunk_retries {
                    return self
                        .fail_download(DownloadFailure::CorruptChunk { index })
                        .await;
                }
                let tx = self.internal_tx.clone();
                let wait = self.cfg.update.chunk_retry;
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(Internal::ChunkRetry(bundle_id, index)).await;
                });
            }
        }
        Ok(())
    }

    /// Reports progress and completes the download when every chunk is held.
    async fn after_chunk(&mut self) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        let Some(store) = &t.store else { return Ok(()) };
        let held = store.held_bytes();
        let percent = (held * 100).checked_div(t.size).unwrap_or(100);
        let complete = store.is_complete();
        let bundle_id = t.bundle_id;
        if complete {
            if let Some(store) = t.store.take() {
                let r = tokio::task::spawn_blocking(move || store.sync()).await?;
                if let Err(e) = r {
                    return self
                        .fail_download(DownloadFailure::Io {
                            detail: e.to_string(),
                        })
                        .await;
                }
            }
            self.stop_download(None).await;
            self.feed(Event::DownloadProgress {
                bundle_id,
                held_bytes: held,
            })
            .await?;
            return self.feed(Event::DownloadComplete { bundle_id }).await;
        }
        if percent >= t.last_percent + PROGRESS_STEP_PERCENT {
            t.last_percent = percent;
            self.feed(Event::DownloadProgress {
                bundle_id,
                held_bytes: held,
            })
            .await?;
        }
        Ok(())
    }

    async fn on_internal(&mut self, msg: Internal) -> Result<(), RunError> {
        match msg {
            Internal::InstallProgress(percent) => {
                self.feed(Event::InstallProgress { percent }).await?;
                if !matches!(self.saved.engine.phase, Phase::Installing { .. }) {
                    return Ok(());
                }
                let percent = percent.min(100);
                self.install_percent = Some(percent);
                // The retained state follows per whole step (bounded chatter).
                let last = self.install_percent_published.unwrap_or(0);
                let due = self.install_percent_published.is_none()
                    || percent >= last.saturating_add(INSTALL_STATE_STEP_PERCENT)
                    || (percent == 100 && last < 100);
                if due {
                    self.publish_state().await;
                }
                Ok(())
            }
            Internal::Installed(Ok(done)) => {
                self.refresh_boot_status().await;
                self.feed(Event::Installed {
                    slot: done.slot,
                    version: done.version,
                })
                .await
            }
            Internal::Installed(Err((retryable, detail))) => {
                self.feed(Event::InstallFailed { retryable, detail }).await
            }
            Internal::Verified(bundle_id, Ok(())) => self.verified(bundle_id).await,
            Internal::Verified(bundle_id, Err(failure)) => {
                self.feed(Event::BundleVerifyFailed { bundle_id, failure })
                    .await
            }
            Internal::Health(Ok(())) => self.feed(Event::HealthPassed).await,
            Internal::Health(Err(f)) => {
                tracing::warn!(check = %f.check, detail = %f.detail, "health check failed");
                self.feed(Event::HealthFailed { check: f.check }).await
            }
            Internal::ChunkRetry(bundle_id, index) => {
                if let Some(t) = &mut self.transfer
                    && t.bundle_id == bundle_id
                    && !t.window.contains(&index)
                {
                    t.window.insert(index);
                    let topic = topic::bundle_chunk(&bundle_id, index);
                    if let Err(e) = self.session.subscribe(&topic).await {
                        tracing::warn!(error = %e, "unable to subscribe chunk again");
                    }
                }
                Ok(())
            }
        }
    }

    async fn on_tick(&mut self) -> Result<(), RunError> {
        let stall = self.cfg.update.stall_timeout;
        let connected = self.session.is_connected();
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        if !connected {
            // Transport trouble is not a failure: the clock restarts at the next connect.
            t.last_activity = Instant::now();
            return Ok(());
        }
        if t.last_activity.elapsed() < stall {
            return Ok(());
        }
        let waited_secs = stall.as_secs();
        let failure = match &t.store {
            None => DownloadFailure::NoManifest { waited_secs },
            Some(store) => DownloadFailure::Stalled {
                waited_secs,
                missing_chunks: store.missing().count() as u64,
                first_missing: store
                    .missing()
                    .take(8)
                    .filter_map(|i| u32::try_from(i).ok())
                    .collect(),
            },
        };
        self.fail_download(failure).await
    }

    /// Publishes what is queued, says goodbye and stops the session. Before a reboot it waits
    /// (bounded) until the broker hands back the last state: then it is retained there.
    async fn leave(&mut self, exit: Exit, events: &mut mpsc::Receiver<SessionEvent>) {
        if let Some(t) = &self.transfer {
            self.stats.resent_chunk_bytes += t.resent_bytes;
        }
        let presence = topic::device_presence(&self.cfg.device_id);
        let _ = self
            .session
            .publish(&presence, Presence::Offline.as_bytes().to_vec(), true)
            .await;
        if matches!(exit, Exit::Reboot { .. }) && self.session.is_connected() {
            self.confirm_state(events).await;
        }
        let _ = self.session.disconnect().await;
        if tokio::time::timeout(FLUSH_TIMEOUT, self.session.join())
            .await
            .is_err()
        {
            tracing::warn!(?exit, "broker did not take the last messages in time");
            self.session.abort();
        }
    }
}

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    /// Waits until the broker delivers this station's own last state back to it (it
    /// subscribes its state topic): the broker processed and retained it, and every event
    /// published before it (same connection, in order). fleet-mqtt does not surface PUBACKs;
    /// this echo is the stronger proof. Bounded by [`FLUSH_TIMEOUT`].
    async fn confirm_state(&mut self, events: &mut mpsc::Receiver<SessionEvent>) {
        let topic = topic::device_state(&self.cfg.device_id);
        let want = self.saved.state_seq;
        if let Err(e) = self.session.subscribe(&topic).await {
            tracing::warn!(error = %e, "unable to subscribe the own state topic");
            return;
        }
        let deadline = tokio::time::sleep(FLUSH_TIMEOUT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => {
                    tracing::warn!(seq = want, "broker did not confirm the last state in time");
                    return;
                }
                ev = events.recv() => match ev {
                    Some(SessionEvent::Message(m)) if m.topic == topic => {
                        if payload::decode_state(&m.payload, &self.limits)
                            .is_ok_and(|s| s.seq >= want)
                        {
                            tracing::debug!(seq = want, "broker holds the last state");
                            return;
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
            }
        }
    }
}

/// True when `offer` is the accepted offer this station acted on last: same sequence as the
/// last accepted one, and the update in progress or the one that ended last.
/// U-Boot boots an armed slot `BOOT_x_LEFT` times and falls back by itself: its fallback is
/// final. The Pi firmware's tryboot flag is one boot per arming, so the updater counts; the
/// simulated boot loader is judged like tryboot (each arming one round).
fn trial_boot_counting(flow: crate::adapters::BootFlowKind) -> TrialBootCounting {
    match flow {
        crate::adapters::BootFlowKind::Uboot => TrialBootCounting::BootLoader,
        crate::adapters::BootFlowKind::Tryboot | crate::adapters::BootFlowKind::Sim => {
            TrialBootCounting::Updater
        }
    }
}

fn already_handled(state: &State, offer: &Offer) -> bool {
    if state.last_sequence != Some(offer.sequence) {
        return false;
    }
    if let Some(job) = state.phase.job() {
        return job.update_id == offer.update_id && job.bundle_id == offer.bundle_id;
    }
    let last = match &state.last_outcome {
        Some(Outcome::Committed { update_id, .. })
        | Some(Outcome::RolledBack { update_id, .. })
        | Some(Outcome::Failed { update_id, .. })
        | Some(Outcome::Superseded { update_id, .. }) => Some(update_id),
        _ => None,
    };
    last == Some(&offer.update_id)
}

/// Verifies the downloaded bundle (`.part` or an already verified `.bundle`) and leaves it as
/// `<bundle-id>.bundle`.
fn verify(data: &std::path::Path, bundle_id: &BundleId, size: u64) -> Result<(), VerifyFailure> {
    let id = bundle_id.to_string();
    let done = download::bundle_path(data, &id);
    let part: PathBuf = download::downloads_dir(data).join(format!("{id}.part"));
    let path = if done.exists() {
        done.clone()
    } else {
        part.clone()
    };
    let io = |e: std::io::Error| VerifyFailure::Io {
        detail: format!("{}: {e}", path.display()),
    };
    let file = std::fs::File::open(&path).map_err(io)?;
    file.sync_all().map_err(io)?;
    let actual = file.metadata().map_err(io)?.len();
    if actual != size {
        return Err(VerifyFailure::SizeMismatch {
            expected: size,
            actual,
        });
    }
    let r = fleet_proto::chunk::verify_bundle(std::io::BufReader::new(file), bundle_id, size);
    if r.is_err() {
        // Bytes that do not make the bundle are worthless: drop them so a retry starts clean.
        let _ = std::fs::remove_file(&path);
        return r;
    }
    if path != done {
        std::fs::rename(&path, &done).map_err(io)?;
        if let Some(dir) = done.parent() {
            crate::durable::sync_dir(dir).map_err(io)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_with_fields_from_a_newer_release_still_loads() {
        // A release rolled back to reads what a newer one wrote: unknown fields are ignored.
        let station = Station {
            device_id: fleet_core::ids::DeviceId::new("stn-1").expect("id"),
            groups: vec![],
            compatible: "fleet-sim".into(),
        };
        let saved = Saved {
            engine: State::new(
                station,
                Policy::default(),
                Slot::A,
                semver::Version::new(1, 0, 0),
            ),
            state_seq: 7,
            event_seq: 9,
        };
        let mut value = serde_json::to_value(&saved).expect("serializes");
        value["field-of-a-newer-release"] = serde_json::json!({"x": 1});
        let back: Saved = serde_json::from_value(value).expect("loads");
        assert_eq!((back.state_seq, back.event_seq), (7, 9));
        assert_eq!(back.engine, saved.engine);
    }

    #[test]
    fn a_controls_file_without_controls_means_none_are_in_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = Journal::named(dir.path(), "controls.json");
        assert_eq!(file.load::<SavedControls>().expect("loads"), None);
        std::fs::create_dir_all(file.path().parent().expect("dir")).expect("mkdir");
        std::fs::write(file.path(), br#"{"v":1,"state":{}}"#).expect("write");
        let loaded = file.load::<SavedControls>().expect("loads").expect("some");
        assert!(loaded.controls.is_empty());
        assert_eq!(
            Effective::merge(loaded.controls.values()),
            Effective::default()
        );
    }
}
