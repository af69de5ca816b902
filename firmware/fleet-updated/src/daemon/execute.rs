//! Feeding the station and carrying out its actions. Nothing here decides: every input goes
//! through `fleet_core::station::step`, and every action's result comes back as an input.
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleet_core::health::gate;
use fleet_core::ports::{BootControl, InstallRequest, Installer, PortError};
use fleet_core::station::{self, Action, Input, Store};
use fleet_core::update::{self, BootOp, BundleId, Event, VerifyFailure};

use crate::daemon::{Exit, HealthCheck, Internal, RunError, Shell};
use crate::download;

/// How long after a gate without a verdict (the system was going down) a daemon that is still
/// running runs the gate again.
pub(super) const NO_VERDICT_RETRY: Duration = Duration::from_secs(60);

/// Attempts of a retryable boot-control call before its failure is fed to the station.
const BOOT_CONTROL_TRIES: u32 = 3;

/// A boot-control call that failed after its retries.
#[derive(Debug, thiserror::Error)]
pub enum BootCallError {
    #[error("unable to call the boot flow")]
    Port(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("unable to run the boot-flow call")]
    Join(#[source] tokio::task::JoinError),
}

/// An install that failed, as the installer reported it.
#[derive(Debug)]
pub(super) struct InstallFailure {
    pub(super) retryable: bool,
    /// The slot the installer left armed, when it says so.
    pub(super) armed: Option<fleet_core::slot::Slot>,
    pub(super) detail: String,
}

/// Calls the boot flow on a blocking thread, retrying retryable errors a bounded number of
/// times with a growing pause.
pub(super) async fn boot_call<B, T, F>(boot: &Arc<B>, f: F) -> Result<T, BootCallError>
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
            Ok(Err(e)) => return Err(BootCallError::Port(Box::new(e))),
            Err(e) => return Err(BootCallError::Join(e)),
        }
    }
}

impl BootCallError {
    /// What a station event says about the failure: the boot flow's own message.
    #[must_use]
    pub fn detail(&self) -> String {
        match self {
            BootCallError::Port(e) => e.to_string(),
            BootCallError::Join(e) => e.to_string(),
        }
    }
}

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    /// Steps the station through `first` and every input its actions produce.
    pub(super) async fn feed(&mut self, first: Input) -> Result<(), RunError> {
        let mut queue = VecDeque::from([first]);
        while let Some(input) = queue.pop_front() {
            let t = station::step(&self.station, input, self.now());
            if let Some(rejected) = &t.ignored {
                tracing::warn!(error = %rejected, "input ignored by the station");
            }
            let (from, to) = (
                self.station.engine().phase.name(),
                t.next.engine().phase.name(),
            );
            if from != to {
                tracing::info!(from = ?from, to = ?to, "transition");
                self.install_percent = None;
                self.install_percent_published = None;
            }
            self.station = t.next;
            for action in t.actions {
                self.execute(action, &mut queue).await?;
            }
        }
        Ok(())
    }

    async fn execute(
        &mut self,
        action: Action,
        queue: &mut VecDeque<Input>,
    ) -> Result<(), RunError> {
        tracing::debug!(?action, "action");
        match action {
            Action::Save(Store::Journal) => {
                // Intent before action: the journal holds the new state before anything runs.
                self.persist_journal().await?;
                self.raise_floor().await;
            }
            Action::Save(Store::Controls) => self.persist_controls().await?,
            Action::Save(Store::Trust) => {
                // Persisted before anything is verified with it.
                self.persist_trust().await?;
                self.trusted = fleet_proto::trust::trusted_keys(self.station.trust())?;
            }
            Action::Report { update_id, report } => self.publish_event(update_id, report).await,
            Action::PublishState => self.publish_state().await,
            Action::Update(action) => self.carry_out(action, queue).await?,
        }
        Ok(())
    }

    /// Carries out one engine action.
    async fn carry_out(
        &mut self,
        action: update::Action,
        queue: &mut VecDeque<Input>,
    ) -> Result<(), RunError> {
        match action {
            update::Action::Download {
                bundle_id,
                size,
                version,
                resume,
            } => {
                self.start_download(bundle_id, size, version, resume)
                    .await?;
            }
            update::Action::KeepBase { bundle_id, size } => {
                let data = self.cfg.data_dir.clone();
                let from = download::bundle_path(&data, &bundle_id.to_string());
                let store = crate::base::BaseStore::under(&data);
                match tokio::task::spawn_blocking(move || store.keep(&from, bundle_id, size))
                    .await?
                {
                    Ok(true) => {
                        tracing::info!(bundle = %bundle_id, size, "kept as the base of the next delta")
                    }
                    Ok(false) => {
                        tracing::warn!(bundle = %bundle_id, "no committed bundle file to keep as the base")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unable to keep the committed bundle as the base")
                    }
                }
                self.refresh_kept_base().await;
            }
            update::Action::DiscardDownload { bundle_id } => {
                self.stop_download(Some(bundle_id)).await;
                let data = self.cfg.data_dir.clone();
                tokio::task::spawn_blocking(move || discard(&data, &bundle_id)).await?;
            }
            update::Action::VerifyBundle { bundle_id, size } => {
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
            update::Action::Install {
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
                                slot,
                                transaction: &transaction,
                                manifest_hash: hash.as_deref(),
                            },
                            &progress,
                        )
                        .await
                        .map_err(|e| InstallFailure {
                            retryable: e.is_retryable(),
                            armed: e.armed_slot(),
                            detail: e.to_string(),
                        });
                    let _ = tx.send(Internal::Installed(result)).await;
                });
            }
            update::Action::ArmTrial { slot } => {
                let r = boot_call(&self.deps.boot, move |b| b.arm_trial(slot)).await;
                queue.push_back(Input::Event(match r {
                    Ok(()) => Event::TrialArmed { slot },
                    Err(e) => Event::BootControlFailed {
                        op: BootOp::ArmTrial,
                        slot,
                        detail: e.detail(),
                    },
                }));
                self.refresh_boot_status().await;
            }
            update::Action::MarkGood { slot } => {
                let r = boot_call(&self.deps.boot, move |b| b.mark_good(slot)).await;
                queue.push_back(Input::Event(match r {
                    Ok(()) => Event::MarkedGood { slot },
                    Err(e) => Event::BootControlFailed {
                        op: BootOp::MarkGood,
                        slot,
                        detail: e.detail(),
                    },
                }));
                self.refresh_boot_status().await;
            }
            update::Action::MarkBad { slot } => {
                let r = boot_call(&self.deps.boot, move |b| b.mark_bad(slot)).await;
                queue.push_back(Input::Event(match r {
                    Ok(()) => Event::MarkedBad { slot },
                    Err(e) => Event::BootControlFailed {
                        op: BootOp::MarkBad,
                        slot,
                        detail: e.detail(),
                    },
                }));
                self.refresh_boot_status().await;
            }
            update::Action::RunHealthChecks { slot } => {
                let health = self.deps.health.clone();
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    let r = health.check(slot).await;
                    let _ = tx.send(Internal::Health(r)).await;
                });
            }
            update::Action::Reboot { into } => {
                tracing::info!(into = %into, "reboot requested");
                self.exit = Some(Exit::Reboot { into });
            }
            other => tracing::warn!(action = ?other, "action not supported by this shell"),
        }
        Ok(())
    }

    /// The health gate's verdict, carried out as `fleet_core::health::gate::conclude` says:
    /// nothing at all once the daemon was asked to stop (`stop_requested`) or when the system
    /// is going down. Without a verdict the trial stays in its checks (the journal says so), and
    /// the next start judges it; a daemon that is not stopped after all runs the gate again in
    /// [`NO_VERDICT_RETRY`].
    pub(super) async fn on_health(
        &mut self,
        verdict: gate::Verdict,
        stop_requested: bool,
    ) -> Result<(), RunError> {
        match gate::conclude(verdict, stop_requested) {
            gate::Conclusion::Pass => self.feed(Input::Event(Event::HealthPassed)).await,
            gate::Conclusion::Fail { check, detail } => {
                tracing::warn!(check = %check, detail = %detail, "health check failed");
                self.feed(Input::Event(Event::HealthFailed { check })).await
            }
            gate::Conclusion::NoVerdict { why } => {
                tracing::warn!(why = %why, "no health verdict: the trial is neither committed nor failed");
                if !stop_requested
                    && let update::Phase::HealthChecking { slot, .. } = self.station.engine().phase
                {
                    let health = self.deps.health.clone();
                    let tx = self.internal_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(NO_VERDICT_RETRY).await;
                        let r = health.check(slot).await;
                        let _ = tx.send(Internal::Health(r)).await;
                    });
                }
                Ok(())
            }
        }
    }

    pub(super) async fn refresh_boot_status(&mut self) {
        match boot_call(&self.deps.boot, |b| b.status()).await {
            Ok(s) => self.boot_status = Some(s),
            Err(e) => tracing::warn!(error = %e.detail(), "unable to read boot status"),
        }
    }

    /// A result of background work: into the station.
    pub(super) async fn on_internal(&mut self, msg: Internal) -> Result<(), RunError> {
        match msg {
            Internal::InstallProgress(percent) => {
                self.feed(Input::Event(Event::InstallProgress { percent }))
                    .await?;
                self.install_progress(percent).await;
                Ok(())
            }
            Internal::Installed(Ok(done)) => {
                self.refresh_boot_status().await;
                self.feed(Input::Event(Event::Installed {
                    slot: done.slot,
                    version: done.version,
                }))
                .await
            }
            Internal::Installed(Err(f)) => {
                let event = match f.armed {
                    Some(slot) => Event::InstallLeftArmed {
                        slot,
                        detail: f.detail,
                    },
                    None => Event::InstallFailed {
                        retryable: f.retryable,
                        detail: f.detail,
                    },
                };
                self.feed(Input::Event(event)).await
            }
            Internal::Verified(bundle_id, Ok(())) => {
                self.feed(Input::Event(Event::BundleVerified { bundle_id }))
                    .await
            }
            Internal::Verified(bundle_id, Err(failure)) => {
                self.feed(Input::Event(Event::BundleVerifyFailed {
                    bundle_id,
                    failure,
                }))
                .await
            }
            Internal::Health(verdict) => self.on_health(verdict, false).await,
            Internal::ChunkRetry(bundle_id, index) => {
                self.retry_chunk(bundle_id, index).await;
                Ok(())
            }
            Internal::BaseChecked(bundle_id, found) => self.on_base_checked(bundle_id, found).await,
            Internal::Rebuilt(bundle_id, outcome) => self.on_rebuilt(bundle_id, outcome).await,
        }
    }
}

/// Removes the partial or complete download of `bundle_id`.
fn discard(data: &Path, bundle_id: &BundleId) {
    let id = bundle_id.to_string();
    for p in [
        download::downloads_dir(data).join(format!("{id}.part")),
        download::bundle_path(data, &id),
    ] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %p.display(), error = %e, "unable to remove download"),
        }
    }
}

/// Verifies the downloaded bundle and leaves it as `<bundle-id>.bundle`. A `.bundle` was
/// verified whole before it got that name ([`download::Download::finish`], or here): only its
/// size is checked again. A `.part` (a rebuilt bundle, or a download whose hash did not match
/// on arrival) is read and hashed whole.
fn verify(data: &Path, bundle_id: &BundleId, size: u64) -> Result<(), VerifyFailure> {
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
    if path == done {
        return Ok(());
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
