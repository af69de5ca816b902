//! The daemon: one `select!` loop carrying out what the station decides.
//!
//! Every decision is `fleet_core::station::step`'s: the daemon turns MQTT messages and the
//! results of its work into [`Input`]s, and carries out the returned actions in order
//! (persisting the named part of the station before anything that follows it). It is a folder
//! of small rooms:
//! - `mod.rs`: start-up and the event loop;
//! - [`store`]: the files the station is persisted in (journal, controls, trusted keys) and the
//!   version floor;
//! - [`inbound`]: MQTT messages to inputs (envelopes opened here, with `fleet-proto`);
//! - [`transfer`]: the chunk transfer of one bundle (manifest, chunk window, stall timer);
//! - [`delta`]: how the bundle travels (full or a delta from the kept base) and the rebuild;
//! - [`space`]: the download's space reservation in retentiond's index;
//! - [`execute`]: feeding the station and carrying out its actions;
//! - [`publish`]: the retained state, events, presence and the goodbye.
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use fleet_core::clock::ClockPolicy;
use fleet_core::ports::{BootControl, BootStatus, Installer};
use fleet_core::rollout::Scope;
use fleet_core::slot::Slot;
use fleet_core::station::{Input, Station};
use fleet_core::time::Now;
use fleet_core::trust::{BootstrapError, TrustState};
use fleet_core::update::{BundleId, Policy, PublicKey, State, TrialBootCounting, VerifyFailure};
use fleet_mqtt::{Session, SessionConfig, SessionEvent, Will};
use fleet_proto::envelope::TrustedKeys;
use fleet_proto::payload::Presence;
use fleet_proto::rollout::control_topic;
use fleet_proto::trust::{KEY_ROTATION_TOPIC, NotAPoint, trusted_keys};
use fleet_proto::{Limits, topic};
use tokio::sync::mpsc;

use crate::config::{Config, WallClock};
use crate::config_apply::Applier;
use crate::journal::JournalError;
use crate::trust_store::TrustStoreError;
use fleet_proto::config_push::ConfigOutcome;

pub use crate::ports::{Deps, HealthCheck};

mod delta;
mod execute;
mod inbound;
mod publish;
mod space;
mod store;
mod transfer;
pub use transfer::TransferTimes;

use execute::BootCallError;
use space::Space;
use store::{Counters, Files};
use transfer::Transfer;

/// Depth of the queue carrying results of background work (verify, install, health checks,
/// chunk retries) back into the loop. Install progress is dropped, never queued, when full.
const INTERNAL_CAPACITY: usize = 32;

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
    #[error("unable to read the boot status")]
    BootStatus(#[source] BootCallError),
    #[error("unable to run blocking work")]
    Join(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Trust(#[from] TrustStoreError),
    #[error("unable to trust the configured keys")]
    BootstrapKeys(#[from] BootstrapError),
    #[error("unable to verify with the trusted keys")]
    KeyPoint(#[from] NotAPoint),
}

/// Figures of one run, for tests and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RunStats {
    /// Chunk payload bytes received that were already held.
    pub resent_chunk_bytes: u64,
    /// Chunk payload bytes stored.
    pub stored_chunk_bytes: u64,
    /// Where the chunk transfers' time went.
    pub transfer: transfer::TransferTimes,
}

/// Results of background work, back into the loop.
enum Internal {
    InstallProgress(u8),
    Installed(Result<fleet_core::ports::Installed, execute::InstallFailure>),
    Verified(BundleId, Result<(), VerifyFailure>),
    Health(fleet_core::health::gate::Verdict),
    ChunkRetry(BundleId, u32),
    /// The kept base's hash check, for the download of this bundle.
    BaseChecked(BundleId, crate::base::Found),
    /// The rebuild of this bundle from its delta.
    Rebuilt(BundleId, delta::RebuildOutcome),
}

struct Shell<B, I, H> {
    cfg: Config,
    deps: Deps<B, I, H>,
    limits: Limits,
    files: Files,
    /// Everything the station decides with; changed only by `fleet_core::station::step`.
    station: Station,
    counters: Counters,
    boot_status: Option<BootStatus>,
    session: Session,
    internal_tx: mpsc::Sender<Internal>,
    started: Instant,
    transfer: Option<Transfer>,
    /// The download's space reservation: held while `transfer` is.
    space: Space,
    exit: Option<Exit>,
    stats: RunStats,
    /// The version floor last written (or found at or above this).
    floor: Option<semver::Version>,
    /// The station's trusted keys as envelope verification keys: every offer, manifest,
    /// control and rotation is opened with these.
    trusted: TrustedKeys,
    /// The installer's last progress, and the last one put into the retained state.
    install_percent: Option<u8>,
    install_percent_published: Option<u8>,
    /// The applier of signed configuration pushes (`[config-push]`), fed from `on_message`.
    config_push: Option<Applier>,
    /// How the bundle of the update in progress travels (reported in the state).
    delivery: Option<fleet_proto::payload::Delivery>,
    /// The kept base as its record names it (reported in the state; refreshed when kept or
    /// dropped).
    kept_base: Option<BundleId>,
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
    let files = Files::under(&cfg.data_dir);
    let identity = fleet_core::update::Station {
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
    let boot_status = execute::boot_call(&deps.boot, |b| b.status())
        .await
        .map_err(RunError::BootStatus)?;
    let (engine, mut counters) = match files.load_journal().await? {
        Some((engine, counters)) => (engine, counters),
        None => {
            let running = boot_status.slot(boot_status.booted);
            let version = running
                .version
                .clone()
                .unwrap_or_else(|| semver::Version::new(0, 0, 0));
            let engine = State::new(identity.clone(), policy, boot_status.booted, version);
            (engine, Counters::default())
        }
    };
    // Identity and tunables come from the configuration at every start.
    let engine = State {
        station: identity,
        policy,
        ..engine
    };
    counters.skip_gap();
    // The rotated key set wins over the configured one; a damaged trust file stops the daemon
    // (never a silent fall back to keys that may have been revoked).
    let bootstrap = TrustState::bootstrap(
        cfg.trusted_keys
            .keys()
            .map(fleet_proto::trust::public_key)
            .collect::<Vec<PublicKey>>(),
    )?;
    let loaded_trust = files.load_trust(bootstrap).await?;
    let trusted = trusted_keys(&loaded_trust.trust)?;
    let controls = files.load_controls().await?;
    let station = Station::new(
        engine,
        controls,
        loaded_trust.trust,
        loaded_trust.applied_sha256,
    );

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
    // The applier runs beside the loop: a push waits for the daemon it restarted.
    let (config_push, mut config_outcomes) = match &cfg.config_push {
        Some(c) => {
            let (a, rx) = Applier::start(
                c.clone(),
                fleet_core::update::Station {
                    device_id: cfg.device_id.clone(),
                    groups: cfg.groups.clone(),
                    compatible: cfg.compatible.clone(),
                },
                limits,
            );
            (Some(a), Some(rx))
        }
        None => (None, None),
    };
    // Not connected yet: the session subscribes these at every connect.
    if let Err(e) = session.subscribe_many(&station_topics(&cfg)).await {
        tracing::error!(error = %e, "unable to subscribe offer and control topics");
    }

    let (internal_tx, mut internal_rx) = mpsc::channel(INTERNAL_CAPACITY);
    let shell_data_dir = cfg.data_dir.clone();
    let mut shell = Shell {
        cfg,
        deps,
        limits,
        files,
        station,
        counters,
        boot_status: Some(boot_status.clone()),
        session,
        internal_tx,
        started: Instant::now(),
        transfer: None,
        // Drops whatever an earlier run left behind, before a resumed download takes it again.
        space: Space::start(crate::reservation::Reservations::under(&shell_data_dir)),
        exit: None,
        stats: RunStats::default(),
        floor: None,
        trusted,
        install_percent: None,
        install_percent_published: None,
        config_push,
        delivery: None,
        kept_base: None,
    };
    shell.refresh_kept_base().await;
    shell.persist_journal().await?;
    shell.raise_floor().await;
    shell.feed(Input::Started(boot_status)).await?;
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
                Some(SessionEvent::TopicSkipped { topic, size, strikes, retry_in }) => {
                    shell.on_skipped(&topic, size, strikes, retry_in).await?;
                }
                None => {
                    tracing::error!("mqtt session ended");
                    return Ok((Exit::Shutdown, shell.stats));
                }
            },
            Some(msg) = internal_rx.recv() => {
                if let Internal::Health(verdict) = msg {
                    // A verdict is never carried out once the daemon was asked to stop
                    // (SIGTERM), even when this branch won the select over the stop: a stop
                    // during the gate commits nothing (fleet_core's `health::gate::conclude`).
                    // The stop, if asked for, is taken here.
                    let stop_requested = tokio::select! {
                        biased;
                        () = &mut shutdown => true,
                        () = std::future::ready(()) => false,
                    };
                    shell.on_health(verdict, stop_requested).await?;
                    if stop_requested {
                        shell.leave(Exit::Shutdown, &mut events).await;
                        return Ok((Exit::Shutdown, shell.stats));
                    }
                } else {
                    shell.on_internal(msg).await?;
                }
            }
            Some(outcome) = next_outcome(&mut config_outcomes) => {
                shell.publish_config_event(outcome).await;
            }
            _ = tick.tick() => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                shell.on_tick().await?;
            }
        }
    }
}

/// The topics a station reads. Controls and key rotations come first: the broker sends
/// retained messages in subscription order, so they are in force before offers are judged.
fn station_topics(cfg: &Config) -> Vec<String> {
    let mut topics = vec![KEY_ROTATION_TOPIC.to_owned(), control_topic(&Scope::Fleet)];
    topics.extend(
        cfg.groups
            .iter()
            .map(|g| control_topic(&Scope::Group(g.clone()))),
    );
    topics.push(control_topic(&Scope::Device(cfg.device_id.clone())));
    topics.push(topic::device_offer(&cfg.device_id));
    topics.extend(cfg.groups.iter().map(topic::group_offer));
    if cfg.config_push.is_some() {
        topics.extend(crate::config_apply::topics(&cfg.device_id, &cfg.groups));
    }
    topics
}

/// The applier's next outcome; never, without an applier.
async fn next_outcome(rx: &mut Option<mpsc::Receiver<ConfigOutcome>>) -> Option<ConfigOutcome> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// On both real flows the boot side counts a trial's boots and retries it by itself: U-Boot's
/// script (`BOOT_x_LEFT`), and on the Pi the attempt record with the boot check, which spends
/// the next attempt and reboots into the trial from the committed slot (ADR 0001, amendment
/// 1). The engine then never re-arms after a fallback, so one party alone retries. Only the
/// simulated boot loader leaves the counting to the updater (each arming one round).
fn trial_boot_counting(flow: crate::adapters::BootFlowKind) -> TrialBootCounting {
    match flow {
        crate::adapters::BootFlowKind::Uboot | crate::adapters::BootFlowKind::Tryboot => {
            TrialBootCounting::BootLoader
        }
        crate::adapters::BootFlowKind::Sim => TrialBootCounting::Updater,
    }
}

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    /// The time every decision is taken at. Its wall-clock part is there only while the clock
    /// is trusted: by default the station's clock rule decides, read afresh for each decision
    /// (ADR 0004), as in every other daemon.
    fn now(&self) -> Now {
        let mono = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.cfg.wall_clock {
            WallClock::System => {
                fleet_facts::clock::now(&self.cfg.clock_roots, &ClockPolicy::default(), mono)
            }
            WallClock::Untrusted => Now::untrusted(mono),
            WallClock::Trusted => Now::trusted(mono, fleet_facts::clock::wall_unix_s()),
        }
    }
}

/// The controls file's content, by control topic.
type ControlsByTopic = BTreeMap<String, fleet_core::rollout::Control>;
