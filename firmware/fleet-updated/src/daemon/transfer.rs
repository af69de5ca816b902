//! The chunk transfer of one bundle: subscribe its manifest, check the manifest against the
//! job, keep a window of chunk subscriptions, store each chunk checked against the manifest,
//! retry refused chunks, and give up on a stall. Progress, completion and failure go to the
//! station as inputs. What is fetched, the bundle or a delta's patch, is [`super::delta`]'s
//! business: this room moves the chunks of `fetch_id`.
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use fleet_core::ports::{BootControl, Installer};
use fleet_core::station::Input;
use fleet_core::update::manifest::{ManifestFacts, manifest_mismatch};
use fleet_core::update::{BundleId, DownloadFailure, Event, RejectReason};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::payload::BundleManifest;
use fleet_proto::topic;

use crate::daemon::delta::{Choosing, Route};
use crate::daemon::{HealthCheck, Internal, RunError, Shell};
use crate::download::{self, ChunkOutcome, ChunkPlan, Download};

/// Download progress goes to the station (journal, state and an event) once per this many
/// percent (bounded chatter and journal writes).
const PROGRESS_STEP_PERCENT: u64 = 1;

/// ... and at most once per this long: each step writes the journal (a durable write, tens of
/// milliseconds on an SD card), which would otherwise pace a fast transfer. A step held back
/// goes out at the next tick.
const PROGRESS_MIN_INTERVAL: Duration = Duration::from_millis(500);

/// Where the time of the chunk transfers went, summed over a run (the benchmark prints it).
/// The rest of a transfer's time the loop waited for the broker or did other work.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TransferTimes {
    /// Chunks stored.
    pub chunks: u64,
    /// Checking chunks against the manifest, writing them, hashing them into the whole-file
    /// hash (off the loop, awaited).
    pub store: Duration,
    /// Subscribing and unsubscribing chunk topics (queueing the requests to the session).
    pub window: Duration,
    /// Progress to the station (its journal writes included).
    pub progress: Duration,
    /// The last flush, the whole-file check and the rename at the end.
    pub finish: Duration,
    /// Chunks read back into the whole-file hash (they came out of order).
    pub read_back_chunks: u64,
}

impl TransferTimes {
    /// Adds `other` (of another run) to these.
    pub fn add(&mut self, other: &TransferTimes) {
        self.chunks += other.chunks;
        self.store += other.store;
        self.window += other.window;
        self.progress += other.progress;
        self.finish += other.finish;
        self.read_back_chunks += other.read_back_chunks;
    }
}

/// One download in flight, owned by the loop.
pub(super) struct Transfer {
    /// The offered bundle.
    pub(super) bundle_id: BundleId,
    pub(super) size: u64,
    version: fleet_core::ids::Version,
    /// The file the chunk transport fetches: the bundle, or the patch of a delta.
    pub(super) fetch_id: BundleId,
    pub(super) fetch_size: u64,
    /// How the bundle travels (chosen at the start, see [`super::delta`]).
    pub(super) route: Route,
    /// Why a delta of this transfer failed: never tried again in this transfer.
    pub(super) delta_failed: Option<String>,
    pub(super) manifest_topic: String,
    pub(super) manifest: Option<BundleManifest>,
    pub(super) store: Option<Download>,
    /// Chunk indexes subscribed now.
    pub(super) window: BTreeSet<u32>,
    pub(super) failures: HashMap<u32, u32>,
    pub(super) last_activity: Instant,
    pub(super) last_percent: u64,
    /// When progress last went to the station, and whether a step is held back since.
    last_progress: Instant,
    progress_pending: bool,
    /// The fetched file's bytes last claimed held in progress (flushed ones only).
    claimed: u64,
    /// Payload bytes of chunks received that were already held (re-sent).
    pub(super) resent_bytes: u64,
}

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    pub(super) async fn start_download(
        &mut self,
        bundle_id: BundleId,
        size: u64,
        version: fleet_core::ids::Version,
        resume: bool,
    ) -> Result<(), RunError> {
        self.stop_download(None).await;
        tracing::info!(bundle = %bundle_id, size, resume, "download starts");
        self.transfer = Some(Transfer {
            bundle_id,
            size,
            version,
            fetch_id: bundle_id,
            fetch_size: size,
            route: Route::Choosing(Choosing::default()),
            delta_failed: None,
            manifest_topic: topic::bundle_manifest(&bundle_id),
            manifest: None,
            store: None,
            window: BTreeSet::new(),
            failures: HashMap::new(),
            last_activity: Instant::now(),
            last_percent: 0,
            last_progress: Instant::now(),
            progress_pending: false,
            claimed: 0,
            resent_bytes: 0,
        });
        self.begin_choice().await
    }

    pub(super) async fn stop_download(&mut self, only: Option<BundleId>) {
        let Some(t) = &self.transfer else { return };
        if only.is_some_and(|id| id != t.bundle_id) {
            return;
        }
        let Some(t) = self.transfer.take() else {
            return;
        };
        self.space.release();
        self.stats.resent_chunk_bytes += t.resent_bytes;
        let _ = self.session.unsubscribe(&t.manifest_topic).await;
        if let Route::Choosing(c) = &t.route {
            for topic in c.topics() {
                let _ = self.session.unsubscribe(topic).await;
            }
        }
        for i in &t.window {
            let _ = self
                .session
                .unsubscribe(&topic::bundle_chunk(&t.fetch_id, *i))
                .await;
        }
    }

    async fn fail_download(&mut self, failure: DownloadFailure) -> Result<(), RunError> {
        let Some(t) = &self.transfer else {
            return Ok(());
        };
        let bundle_id = t.bundle_id;
        if self.delta_fell_back(&format!("{failure:?}")).await {
            return Ok(());
        }
        tracing::warn!(bundle = %bundle_id, ?failure, "download failed");
        self.stop_download(None).await;
        self.feed(Input::Event(Event::DownloadFailed { bundle_id, failure }))
            .await
    }

    /// The manifest of `id` came above the transport ceiling (the session skipped its topic):
    /// the download fails as it does for a readable manifest over its limit.
    pub(super) async fn on_manifest_unreadable(
        &mut self,
        id: BundleId,
        size: u64,
    ) -> Result<(), RunError> {
        let Some(t) = &self.transfer else {
            return Ok(());
        };
        if t.fetch_id != id || t.manifest.is_some() || matches!(t.route, Route::Choosing(_)) {
            return Ok(());
        }
        let limit = self.limits.max_envelope_bytes(Kind::Manifest) as u64;
        self.fail_download(DownloadFailure::BadManifest {
            reason: RejectReason::TooLarge { size, limit },
        })
        .await
    }

    pub(super) async fn on_manifest(&mut self, id: BundleId, bytes: &[u8]) -> Result<(), RunError> {
        if self.hold_full_manifest(id, bytes).await? {
            return Ok(());
        }
        let Some(t) = &self.transfer else {
            return Ok(());
        };
        if t.fetch_id != id || t.manifest.is_some() || bytes.is_empty() {
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
                    reason: RejectReason::Malformed { detail: e.0 },
                })
                .await;
        }
        let mismatch = manifest_mismatch(
            ManifestFacts {
                bundle_id: t.fetch_id,
                size: t.fetch_size,
                version: &t.version,
                compatible: &self.cfg.compatible,
            },
            ManifestFacts {
                bundle_id: opened.bundle_id,
                size: opened.size,
                version: &opened.version,
                compatible: &opened.compatible,
            },
        );
        let mismatch = mismatch.or_else(|| t.route.file_manifest_mismatch(&opened));
        if let Some(detail) = mismatch {
            return self
                .fail_download(DownloadFailure::ManifestMismatch { detail })
                .await;
        }
        // What this transfer writes: the file fetched, and for a delta the rebuilt bundle.
        let needed = if t.route.decodes() {
            opened.size.saturating_add(t.size)
        } else {
            opened.size
        };
        // The allowed space (less the kept base, which counts against it), and what the file
        // system really has left.
        let data = self.cfg.data_dir.clone();
        let id = opened.bundle_id.to_string();
        let (fs_free, base_bytes) = tokio::task::spawn_blocking(move || {
            let base = crate::base::BaseStore::under(&data).used_bytes();
            (download::free_bytes_for(&data, &id), base)
        })
        .await?;
        let fs_free = fs_free.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unable to read free space; relying on the configured limit");
            u64::MAX
        });
        let available = self
            .cfg
            .update
            .download_space_bytes
            .saturating_sub(base_bytes)
            .min(fs_free);
        if needed > available {
            return self
                .fail_download(DownloadFailure::NoSpace { needed, available })
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

    /// Subscribes missing chunks until the window is full, in one SUBSCRIBE, once at least
    /// [`refill_batch`] of the window is free (or the window ran empty): fewer, fuller
    /// packets, while the broker still has the rest of the window to send.
    async fn fill_window(&mut self) {
        let started = Instant::now();
        let Some(t) = &mut self.transfer else { return };
        let Some(store) = &t.store else { return };
        let size = self.cfg.update.chunk_window;
        let room = size.saturating_sub(t.window.len());
        if room == 0 || (room < refill_batch(size) && !t.window.is_empty()) {
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
            .map(|i| topic::bundle_chunk(&t.fetch_id, *i))
            .collect();
        if let Err(e) = self.session.subscribe_many(&topics).await {
            tracing::warn!(error = %e, "unable to subscribe chunks");
        }
        self.stats.transfer.window += started.elapsed();
    }

    pub(super) async fn on_chunk(
        &mut self,
        bundle_id: BundleId,
        index: u32,
        bytes: fleet_mqtt::Bytes,
    ) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        if t.fetch_id != bundle_id || bytes.is_empty() {
            return Ok(());
        }
        let Some(mut store) = t.store.take() else {
            return Ok(());
        };
        let len = bytes.len() as u64;
        let started = Instant::now();
        let (store, outcome) = tokio::task::spawn_blocking(move || {
            let r = store.accept(index as usize, &bytes);
            (store, r)
        })
        .await?;
        self.stats.transfer.store += started.elapsed();
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
                self.stats.transfer.chunks += 1;
                t.last_activity = Instant::now();
                t.window.remove(&index);
                let started = Instant::now();
                let _ = self.session.unsubscribe(&chunk_topic).await;
                self.stats.transfer.window += started.elapsed();
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

    /// Subscribes a refused chunk again after its pause.
    pub(super) async fn retry_chunk(&mut self, bundle_id: BundleId, index: u32) {
        if let Some(t) = &mut self.transfer
            && t.fetch_id == bundle_id
            && !t.window.contains(&index)
        {
            t.window.insert(index);
            let topic = topic::bundle_chunk(&bundle_id, index);
            if let Err(e) = self.session.subscribe(&topic).await {
                tracing::warn!(error = %e, "unable to subscribe chunk again");
            }
        }
    }

    /// Reports progress and completes the download when every chunk is held.
    async fn after_chunk(&mut self) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        let Some(store) = &t.store else { return Ok(()) };
        let complete = store.is_complete();
        let held = if complete {
            store.held_bytes()
        } else {
            // Only what is flushed is claimed: a power cut keeps all of it.
            store.durable_bytes()
        };
        let percent = (held * 100).checked_div(t.fetch_size).unwrap_or(100);
        let bundle_id = t.bundle_id;
        if complete {
            // The whole bundle is checked here, from the hash taken while it arrived, and
            // named `.bundle` when it matches (the verification then need not read it
            // again); a patch stays `.part` for the rebuild, which checks it itself.
            let whole = matches!(t.route, Route::Full) && t.fetch_id == t.bundle_id;
            let data = self.cfg.data_dir.clone();
            let started = Instant::now();
            if let Some(mut store) = t.store.take() {
                self.stats.transfer.read_back_chunks += store.read_back_chunks() as u64;
                let r = tokio::task::spawn_blocking(move || {
                    if whole {
                        store.finish(&data).map(|r| r.err())
                    } else {
                        store.sync().map(|()| None)
                    }
                })
                .await?;
                match r {
                    Err(e) => {
                        return self
                            .fail_download(DownloadFailure::Io {
                                detail: e.to_string(),
                            })
                            .await;
                    }
                    // The verification reads the file again and refuses it.
                    Ok(Some(m)) => {
                        tracing::warn!(expected = %m.expected, actual = %m.actual, "the chunks do not make the bundle")
                    }
                    Ok(None) => {}
                }
            }
            self.stats.transfer.finish += started.elapsed();
            if let Some(d) = &mut self.delivery {
                d.received_bytes = held;
            }
            if t.route.decodes() {
                return self.start_rebuild().await;
            }
            let size = t.size;
            return self.finish_download(bundle_id, size).await;
        }
        if percent >= t.last_percent + PROGRESS_STEP_PERCENT {
            t.last_percent = percent;
            if t.last_progress.elapsed() < PROGRESS_MIN_INTERVAL {
                t.progress_pending = true;
                return Ok(());
            }
            t.progress_pending = false;
            t.last_progress = Instant::now();
            t.claimed = held;
            let held_bytes = t.bundle_share(held);
            let started = Instant::now();
            self.feed(Input::Event(Event::DownloadProgress {
                bundle_id,
                held_bytes,
            }))
            .await?;
            self.stats.transfer.progress += started.elapsed();
        }
        Ok(())
    }

    /// Sends a progress step that was held back ([`PROGRESS_MIN_INTERVAL`]) or that a flush
    /// made claimable since, and asks for a flush of what is held and not flushed yet.
    async fn flush_progress(&mut self) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        let Some(store) = &mut t.store else {
            return Ok(());
        };
        let durable = store.durable_bytes();
        // A transfer that paused: its last batch is flushed now and claimed at the next tick.
        store.flush_written();
        if !t.progress_pending && durable == t.claimed {
            return Ok(());
        }
        t.progress_pending = false;
        t.last_progress = Instant::now();
        t.claimed = durable;
        let (bundle_id, held_bytes) = (t.bundle_id, t.bundle_share(durable));
        let started = Instant::now();
        self.feed(Input::Event(Event::DownloadProgress {
            bundle_id,
            held_bytes,
        }))
        .await?;
        self.stats.transfer.progress += started.elapsed();
        Ok(())
    }

    /// Gives the download up when nothing arrived for the stall timeout while connected.
    pub(super) async fn on_tick(&mut self) -> Result<(), RunError> {
        self.space.renew();
        self.flush_progress().await?;
        let stall = self.cfg.update.stall_timeout;
        let connected = self.session.is_connected();
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        if !connected || t.route.is_rebuilding() {
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
}

/// How many window places must be free before the window is refilled: a quarter of it.
fn refill_batch(window: usize) -> usize {
    (window / 4).max(1)
}

impl Transfer {
    /// `held` bytes of the fetched file as the share of the offered bundle the station's
    /// progress counts in (the same share of a patch is the same share of the work).
    fn bundle_share(&self, held: u64) -> u64 {
        if self.fetch_size == self.size || self.fetch_size == 0 {
            return held.min(self.size);
        }
        let share = u128::from(held) * u128::from(self.size) / u128::from(self.fetch_size);
        u64::try_from(share).unwrap_or(self.size).min(self.size)
    }
}
