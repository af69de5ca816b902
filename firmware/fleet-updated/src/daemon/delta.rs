//! The delta and compressed paths of a download (ADR 0012): how the offered bundle travels,
//! and the decoding.
//!
//! A download starts by gathering what the choice needs: the kept base (its record, then its
//! hash, checked off the loop), the signed delta description from that base, the signed
//! description of the compressed bundle, and the offered bundle's own manifest. The broker
//! sends the retained messages of the topics in subscription order (delta, compressed,
//! manifest), so a manifest with no description before it means none is published.
//! `fleet_core::update::delta::decide_transport` then chooses; this room carries the choice
//! out:
//! - `delta` and `compressed`: a zstd file (the patch, or the compressed bundle) is fetched
//!   through the same chunk transport (its own signed manifest, every chunk checked, resume by
//!   hashing what is held), hashed whole against its id, decoded (`crate::rebuild`; a patch
//!   with the mapped base as reference, the compressed bundle with none) into the bundle's
//!   `.part` file, and judged (`judge_result`) against the offer before the station hears
//!   `DownloadComplete`; it then verifies and installs the file as it would a full download;
//! - `full`: the ordinary transfer of the raw bundle.
//!
//! Any failure on the delta path (a refused description or patch manifest, a corrupt chunk, a
//! stall, a patch that does not rebuild the offered bundle) falls back with reason
//! `delta-failed` to the compressed bundle if one is published, else the raw one; any failure
//! on the compressed path falls back to the raw bundle with `compressed-failed`: the station
//! never fails an update over its delta or its compressed transfer. Each choice is reported
//! (`transport-chosen`) and kept in the state (`delivery`).
use std::path::{Path, PathBuf};

use fleet_core::ids::UpdateId;
use fleet_core::ports::{BootControl, Installer};
use fleet_core::station::Input;
use fleet_core::update::delta::{
    DeliveryKind, FullReason, ResultVerdict, Transport, TransportContext, decide_transport,
    judge_result,
};
use fleet_core::update::{BundleId, Event, Report};
use fleet_proto::delta::{CompressedDescription, DeltaDescription, compressed_topic, delta_topic};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::payload::Delivery;
use fleet_proto::topic;

use crate::base::{BaseStore, Found, KeptRecord};
use crate::daemon::{HealthCheck, Internal, RunError, Shell};
use crate::download;

/// How the bundle of a transfer travels.
pub(super) enum Route {
    /// Gathering what the choice needs.
    Choosing(Choosing),
    /// The whole raw bundle.
    Full,
    /// A zstd file that decodes to the bundle: a patch or the compressed bundle.
    Decode(Decode),
    /// The file is held; the bundle is being decoded off the loop.
    Rebuilding(Decode),
}

/// What a zstd file that decodes to the bundle is.
#[derive(Clone)]
pub(super) enum Described {
    /// A patch from the kept base.
    Delta {
        description: DeltaDescription,
        base: KeptRecord,
    },
    /// The compressed bundle.
    Compressed(CompressedDescription),
}

/// The file fetched instead of the raw bundle.
#[derive(Clone)]
pub(super) struct Decode {
    pub(super) described: Described,
    /// For a delta: the compressed bundle to fall back to when it fails.
    then: Option<CompressedDescription>,
}

impl Decode {
    fn kind(&self) -> DeliveryKind {
        match self.described {
            Described::Delta { .. } => DeliveryKind::Delta,
            Described::Compressed(_) => DeliveryKind::Compressed,
        }
    }

    fn file(&self) -> (BundleId, u64) {
        match &self.described {
            Described::Delta { description, .. } => (description.patch_id, description.patch_size),
            Described::Compressed(c) => (c.file_id, c.file_size),
        }
    }

    fn base(&self) -> Option<KeptRecord> {
        match &self.described {
            Described::Delta { base, .. } => Some(*base),
            Described::Compressed(_) => None,
        }
    }
}

/// What the choice waits for.
#[derive(Default)]
pub(super) struct Choosing {
    /// The delta topic subscribed for the kept base.
    delta_topic: Option<String>,
    /// The kept base as checked (`None` while its hash is being checked).
    base: Option<Found>,
    /// The delta description from the kept base, opened (or why it is unusable).
    description: Option<Result<DeltaDescription, String>>,
    /// The compressed bundle's topic, subscribed after the delta topic.
    compressed_topic: Option<String>,
    /// The compressed bundle's description, opened (or why it is unusable).
    compressed: Option<Result<CompressedDescription, String>>,
    /// The offered bundle's manifest, when it came before the choice.
    full_manifest: Option<Vec<u8>>,
}

impl Route {
    pub(super) fn is_rebuilding(&self) -> bool {
        matches!(self, Route::Rebuilding(_))
    }

    /// True when the fetched file decodes to the bundle (both are written).
    pub(super) fn decodes(&self) -> bool {
        matches!(self, Route::Decode(_))
    }

    /// Why the fetched file's manifest is not the one the description names, if it is not.
    pub(super) fn file_manifest_mismatch(
        &self,
        m: &fleet_proto::payload::BundleManifest,
    ) -> Option<String> {
        let Route::Decode(d) = self else { return None };
        match &d.described {
            Described::Delta { description, .. } => description.matches_patch_manifest(m),
            Described::Compressed(c) => c.matches_file_manifest(m),
        }
        .err()
        .map(|e| e.to_string())
    }
}

impl Choosing {
    /// The description topics subscribed while choosing.
    pub(super) fn topics(&self) -> impl Iterator<Item = &str> {
        [&self.delta_topic, &self.compressed_topic]
            .into_iter()
            .filter_map(|t| t.as_deref())
    }
}

/// The rebuild's verdict, back into the loop.
pub(super) type RebuildOutcome = Result<(), String>;

impl<B, I, H> Shell<B, I, H>
where
    B: BootControl + 'static,
    I: Installer + 'static,
    H: HealthCheck,
{
    /// Starts gathering for the transfer just created: the kept base's record decides
    /// whether a delta topic is worth reading.
    pub(super) async fn begin_choice(&mut self) -> Result<(), RunError> {
        let Some(t) = &self.transfer else {
            return Ok(());
        };
        let bundle_id = t.bundle_id;
        // While choosing, the bundle's size (what every transport writes at least); the
        // choice holds what its transport writes.
        self.space.hold(t.size);
        let store = BaseStore::under(&self.cfg.data_dir);
        let s = store.clone();
        let record = tokio::task::spawn_blocking(move || s.record()).await?;
        let found = match record {
            Ok(None) => Some(Found::None),
            Ok(Some(Err(why))) => Some(Found::Damaged(why)),
            Err(e) => Some(Found::Damaged(e.to_string())),
            Ok(Some(Ok(record))) => {
                let delta = delta_topic(&bundle_id, &record.bundle_id);
                if let Some(t) = &mut self.transfer
                    && let super::delta::Route::Choosing(c) = &mut t.route
                {
                    c.delta_topic = Some(delta.clone());
                }
                // The delta topic before the manifest: its retained message arrives first.
                if let Err(e) = self.session.subscribe(&delta).await {
                    tracing::warn!(error = %e, "unable to subscribe the delta topic");
                }
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    let found = tokio::task::spawn_blocking(move || store.find())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                        .unwrap_or_else(Found::Damaged);
                    let _ = tx.send(Internal::BaseChecked(bundle_id, found)).await;
                });
                None
            }
        };
        if let Some(Found::Damaged(why)) = &found {
            tracing::warn!(why, "kept base unusable");
        }
        let compressed = compressed_topic(&bundle_id);
        if let Some(t) = &mut self.transfer
            && let Route::Choosing(c) = &mut t.route
        {
            c.base = found;
            c.compressed_topic = Some(compressed.clone());
        }
        // After the delta topic, before the manifest: retained messages come in this order.
        if let Err(e) = self.session.subscribe(&compressed).await {
            tracing::warn!(error = %e, "unable to subscribe the compressed topic");
        }
        let manifest_topic = self.transfer.as_ref().map(|t| t.manifest_topic.clone());
        if let Some(m) = manifest_topic
            && let Err(e) = self.session.subscribe(&m).await
        {
            tracing::warn!(error = %e, "unable to subscribe the manifest");
        }
        self.try_choose().await
    }

    /// Reads which base the record names (for the state).
    pub(super) async fn refresh_kept_base(&mut self) {
        let store = BaseStore::under(&self.cfg.data_dir);
        self.kept_base = match tokio::task::spawn_blocking(move || store.record()).await {
            Ok(Ok(Some(Ok(r)))) => Some(r.bundle_id),
            _ => None,
        };
    }

    /// The kept base's hash check finished.
    pub(super) async fn on_base_checked(
        &mut self,
        bundle_id: BundleId,
        found: Found,
    ) -> Result<(), RunError> {
        if let Some(t) = &mut self.transfer
            && t.bundle_id == bundle_id
            && let Route::Choosing(c) = &mut t.route
        {
            if let Found::Damaged(why) = &found {
                tracing::warn!(why, "kept base damaged");
            }
            c.base = Some(found);
            return self.try_choose().await;
        }
        Ok(())
    }

    /// A message on a delta topic: the description, if it is the one being waited for.
    pub(super) async fn on_delta_description(
        &mut self,
        bundle_id: BundleId,
        base_id: BundleId,
        bytes: &[u8],
    ) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        let Route::Choosing(c) = &mut t.route else {
            return Ok(());
        };
        if t.bundle_id != bundle_id
            || c.delta_topic.as_deref() != Some(&delta_topic(&bundle_id, &base_id))
            || bytes.is_empty()
            || c.description.is_some()
        {
            return Ok(());
        }
        c.description = Some(open_description(
            bytes,
            Kind::Delta,
            "delta",
            &self.trusted,
            &self.limits,
            DeltaDescription::validate,
        ));
        self.try_choose().await
    }

    /// A message on a compressed topic: the description, if it is the one being waited for.
    pub(super) async fn on_compressed_description(
        &mut self,
        bundle_id: BundleId,
        bytes: &[u8],
    ) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        let Route::Choosing(c) = &mut t.route else {
            return Ok(());
        };
        if t.bundle_id != bundle_id || bytes.is_empty() || c.compressed.is_some() {
            return Ok(());
        }
        c.compressed = Some(open_description(
            bytes,
            Kind::Compressed,
            "compressed",
            &self.trusted,
            &self.limits,
            CompressedDescription::validate,
        ));
        self.try_choose().await
    }

    /// The offered bundle's manifest came while the choice is open: kept for after it.
    /// Returns true when it was taken here.
    pub(super) async fn hold_full_manifest(
        &mut self,
        id: BundleId,
        bytes: &[u8],
    ) -> Result<bool, RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(false);
        };
        let Route::Choosing(c) = &mut t.route else {
            return Ok(false);
        };
        if t.bundle_id != id || bytes.is_empty() {
            return Ok(true);
        }
        c.full_manifest = Some(bytes.to_vec());
        self.try_choose().await?;
        Ok(true)
    }

    /// Chooses once the base is checked and either every description or the bundle's
    /// manifest came (retained messages come in subscription order: a manifest means every
    /// description there is came before it); then carries the choice out.
    async fn try_choose(&mut self) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        let Route::Choosing(c) = &mut t.route else {
            return Ok(());
        };
        let Some(found) = &c.base else {
            return Ok(());
        };
        let delta_known = matches!(found, Found::None | Found::Damaged(_))
            || c.delta_topic.is_none()
            || c.description.is_some();
        let ready = c.full_manifest.is_some() || (delta_known && c.compressed.is_some());
        if !ready {
            return Ok(());
        }
        let (kept, base_fault) = match found {
            Found::None => (None, None),
            Found::Damaged(why) => (None, Some(why.clone())),
            Found::Intact(r) => (Some(*r), None),
        };
        let (description, refused) = match &c.description {
            Some(Ok(d)) => (Some(d.clone()), None),
            Some(Err(why)) => (None, Some(why.clone())),
            None => (None, None),
        };
        let failed = t.delta_failed.clone().or(refused);
        let (compressed, compressed_refused) = match &c.compressed {
            Some(Ok(d)) => (Some(d.clone()), None),
            Some(Err(why)) => (None, Some(why.clone())),
            None => (None, None),
        };
        let cx = TransportContext {
            bundle_id: t.bundle_id,
            bundle_size: t.size,
            kept: kept.map(|r| r.facts()),
            base_fault: base_fault.as_deref(),
            delta: description.as_ref().map(DeltaDescription::facts),
            budget_bytes: 1u64 << self.cfg.update.delta_window_log_max,
            failed: failed.as_deref(),
            compressed: compressed.as_ref().map(CompressedDescription::facts),
            // A refused description counts as a compressed bundle that failed.
            compressed_failed: compressed_refused.as_deref(),
        };
        let transport = decide_transport(&cx);
        let Route::Choosing(c) = std::mem::replace(&mut t.route, Route::Full) else {
            return Ok(());
        };
        for topic in c.topics() {
            let _ = self.session.unsubscribe(topic).await;
        }
        if base_fault.is_some() {
            let store = BaseStore::under(&self.cfg.data_dir);
            match tokio::task::spawn_blocking(move || store.drop_all()).await? {
                Ok(()) => tracing::warn!("dropped the damaged kept base"),
                Err(e) => tracing::warn!(error = %e, "unable to drop the damaged kept base"),
            }
            self.refresh_kept_base().await;
        }
        match transport {
            Transport::Delta { .. } => {
                let (Some(description), Some(base)) = (description, kept) else {
                    return Ok(());
                };
                let decode = Decode {
                    described: Described::Delta { description, base },
                    then: compressed,
                };
                self.take_decode(decode, None).await;
                Ok(())
            }
            Transport::Compressed { reason, .. } => {
                let Some(compressed) = compressed else {
                    return Ok(());
                };
                let decode = Decode {
                    described: Described::Compressed(compressed),
                    then: None,
                };
                self.take_decode(decode, Some(reason)).await;
                Ok(())
            }
            Transport::Full { reason } => {
                self.take_full(reason).await;
                match c.full_manifest {
                    Some(bytes) => {
                        let id = self.transfer.as_ref().map(|t| t.bundle_id);
                        match id {
                            // Boxed: `on_manifest` leads here while a choice is open.
                            Some(id) => Box::pin(self.on_manifest(id, &bytes)).await,
                            None => Ok(()),
                        }
                    }
                    None => Ok(()),
                }
            }
        }
    }

    /// Fetches the patch or the compressed bundle instead of the bundle; `reason` says why
    /// no delta.
    async fn take_decode(&mut self, decode: Decode, reason: Option<FullReason>) {
        let Some(t) = &mut self.transfer else { return };
        let (file_id, file_size) = decode.file();
        let bundle_topic = topic::bundle_manifest(&t.bundle_id);
        let file_topic = topic::bundle_manifest(&file_id);
        t.fetch_id = file_id;
        t.fetch_size = file_size;
        t.manifest_topic = file_topic.clone();
        let keep = [t.bundle_id.to_string(), file_id.to_string()];
        let delivery = Delivery {
            bundle_id: t.bundle_id,
            transport: decode.kind(),
            reason,
            expected_bytes: file_size,
            received_bytes: 0,
            bundle_bytes: t.size,
        };
        tracing::info!(
            bundle = %t.bundle_id,
            transport = ?delivery.transport,
            base = ?decode.base().map(|b| b.bundle_id.to_string()),
            file = %file_id,
            file_size,
            "decoded transfer chosen"
        );
        t.route = Route::Decode(decode);
        // The fetched file and the decoded bundle are written; a base is already on disk.
        self.space
            .hold(delivery.expected_bytes + delivery.bundle_bytes);
        let _ = self.session.unsubscribe(&bundle_topic).await;
        self.clean_downloads(&keep).await;
        self.announce(delivery).await;
        if let Err(e) = self.session.subscribe(&file_topic).await {
            tracing::warn!(error = %e, "unable to subscribe the file's manifest");
        }
    }

    /// Fetches the whole bundle (its manifest topic is subscribed already).
    async fn take_full(&mut self, reason: FullReason) {
        let Some(t) = &mut self.transfer else { return };
        t.route = Route::Full;
        let keep = [t.bundle_id.to_string()];
        let delivery = Delivery {
            bundle_id: t.bundle_id,
            transport: DeliveryKind::Full,
            reason: Some(reason),
            expected_bytes: t.size,
            received_bytes: 0,
            bundle_bytes: t.size,
        };
        tracing::info!(bundle = %t.bundle_id, reason = delivery.reason.as_ref().map(FullReason::code), "full bundle chosen");
        self.space.hold(t.size);
        self.clean_downloads(&keep).await;
        self.announce(delivery).await;
    }

    /// Only one download at a time: whatever else sits in the download area goes.
    async fn clean_downloads(&mut self, keep: &[String]) {
        let data = self.cfg.data_dir.clone();
        let keep = keep.to_vec();
        match tokio::task::spawn_blocking(move || {
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            download::remove_all_except(&data, &keep)
        })
        .await
        {
            Ok(Ok(freed)) if freed > 0 => tracing::info!(freed, "removed stale downloads"),
            Ok(Err(e)) => tracing::warn!(error = %e, "unable to clean the download area"),
            _ => {}
        }
    }

    /// The update the engine is working on, which the delivery's events belong to.
    fn update_in_progress(&self) -> Option<UpdateId> {
        self.station
            .engine()
            .phase
            .job()
            .map(|j| j.update_id.clone())
    }

    /// Reports a choice and keeps it for the state.
    async fn announce(&mut self, delivery: Delivery) {
        let update_id = self.update_in_progress();
        self.delivery = Some(delivery.clone());
        self.publish_event(
            update_id,
            Report::TransportChosen {
                bundle_id: delivery.bundle_id,
                transport: delivery.transport,
                reason: delivery.reason,
                expected_bytes: delivery.expected_bytes,
                bundle_bytes: delivery.bundle_bytes,
            },
        )
        .await;
        self.publish_state().await;
    }

    /// True when the transfer fetches a patch or the compressed bundle: a failure there falls
    /// back (done here) instead of failing the update: a delta to the compressed bundle when
    /// one is published, else to the raw bundle; the compressed bundle to the raw one.
    pub(super) async fn delta_fell_back(&mut self, detail: &str) -> bool {
        let Some(t) = &mut self.transfer else {
            return false;
        };
        let decode = match &t.route {
            Route::Decode(d) | Route::Rebuilding(d) => d.clone(),
            _ => return false,
        };
        let kind = decode.kind();
        tracing::warn!(detail, bundle = %t.bundle_id, ?kind, "decoded transfer failed; falling back");
        let old_manifest =
            std::mem::replace(&mut t.manifest_topic, topic::bundle_manifest(&t.bundle_id));
        let file = t.fetch_id;
        let window: Vec<u32> = std::mem::take(&mut t.window).into_iter().collect();
        t.fetch_id = t.bundle_id;
        t.fetch_size = t.size;
        t.manifest = None;
        t.store = None;
        t.failures.clear();
        t.last_activity = std::time::Instant::now();
        t.last_percent = 0;
        let detail = fleet_core::update::offer::truncate(detail, 200);
        let (compressed, compressed_failed) = match &decode.described {
            Described::Delta { .. } => {
                t.delta_failed = Some(detail);
                (decode.then.clone(), None)
            }
            Described::Compressed(c) => (Some(c.clone()), Some(detail)),
        };
        let failed = t.delta_failed.clone();
        let manifest_topic = t.manifest_topic.clone();
        let _ = self.session.unsubscribe(&old_manifest).await;
        for i in window {
            let _ = self
                .session
                .unsubscribe(&topic::bundle_chunk(&file, i))
                .await;
        }
        let Some(t) = &mut self.transfer else {
            return true;
        };
        // The choice again, as the rule says: never the failed path twice.
        let cx = TransportContext {
            bundle_id: t.bundle_id,
            bundle_size: t.size,
            kept: None,
            base_fault: None,
            delta: None,
            budget_bytes: 1u64 << self.cfg.update.delta_window_log_max,
            failed: Some(failed.as_deref().unwrap_or("the delta failed")),
            compressed: compressed.as_ref().map(CompressedDescription::facts),
            compressed_failed: compressed_failed.as_deref(),
        };
        match decide_transport(&cx) {
            Transport::Compressed { reason, .. } => {
                let Some(compressed) = compressed else {
                    return true;
                };
                let decode = Decode {
                    described: Described::Compressed(compressed),
                    then: None,
                };
                self.take_decode(decode, Some(reason)).await;
            }
            Transport::Full { reason } => {
                self.take_full(reason).await;
                if let Err(e) = self.session.subscribe(&manifest_topic).await {
                    tracing::warn!(error = %e, "unable to subscribe the manifest");
                }
            }
            Transport::Delta { .. } => {}
        }
        true
    }

    /// The patch or compressed file is held: decode the bundle off the loop.
    pub(super) async fn start_rebuild(&mut self) -> Result<(), RunError> {
        let Some(t) = &mut self.transfer else {
            return Ok(());
        };
        let Route::Decode(decode) = &t.route else {
            return Ok(());
        };
        let decode = decode.clone();
        t.route = Route::Rebuilding(decode.clone());
        let (file_id, file_size) = decode.file();
        let base = decode.base();
        let data = self.cfg.data_dir.clone();
        let window = u32::from(self.cfg.update.delta_window_log_max);
        let tx = self.internal_tx.clone();
        let bundle_id = t.bundle_id;
        let size = t.size;
        tracing::info!(bundle = %bundle_id, file = %file_id, "file complete; decoding");
        tokio::spawn(async move {
            let outcome = tokio::task::spawn_blocking(move || {
                apply(
                    &data,
                    (file_id, file_size),
                    base.as_ref(),
                    bundle_id,
                    size,
                    window,
                )
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            let _ = tx.send(Internal::Rebuilt(bundle_id, outcome)).await;
        });
        Ok(())
    }

    /// The rebuild's verdict.
    pub(super) async fn on_rebuilt(
        &mut self,
        bundle_id: BundleId,
        outcome: RebuildOutcome,
    ) -> Result<(), RunError> {
        let Some(t) = &self.transfer else {
            return Ok(());
        };
        if t.bundle_id != bundle_id || !t.route.is_rebuilding() {
            return Ok(());
        }
        match outcome {
            Ok(()) => {
                let size = t.size;
                tracing::info!(bundle = %bundle_id, "decoded from the fetched file");
                self.finish_download(bundle_id, size).await
            }
            Err(detail) => {
                self.delta_fell_back(&detail).await;
                Ok(())
            }
        }
    }

    /// Every byte of the bundle is on disk (received or rebuilt): tell the station.
    pub(super) async fn finish_download(
        &mut self,
        bundle_id: BundleId,
        size: u64,
    ) -> Result<(), RunError> {
        self.stop_download(None).await;
        let update_id = self.update_in_progress();
        if let Some(d) = &mut self.delivery
            && d.bundle_id == bundle_id
        {
            d.received_bytes = d.expected_bytes;
            let report = Report::Delivered {
                bundle_id,
                transport: d.transport,
                received_bytes: d.received_bytes,
                expected_bytes: d.expected_bytes,
                bundle_bytes: d.bundle_bytes,
            };
            self.publish_event(update_id, report).await;
        }
        self.feed(Input::Event(Event::DownloadProgress {
            bundle_id,
            held_bytes: size,
        }))
        .await?;
        self.feed(Input::Event(Event::DownloadComplete { bundle_id }))
            .await
    }
}

/// Checks the fetched file (`file`: its id and size) whole, decodes the bundle into its
/// `.part` file (against the kept `base` for a patch, against nothing for the compressed
/// bundle) and judges it; the fetched file goes either way, the output only when it is not the
/// offered bundle.
fn apply(
    data: &Path,
    file: (BundleId, u64),
    base: Option<&KeptRecord>,
    bundle_id: BundleId,
    size: u64,
    window_log_max: u32,
) -> RebuildOutcome {
    let dir = download::downloads_dir(data);
    let (file_id, file_size) = file;
    let patch: PathBuf = dir.join(format!("{file_id}.part"));
    let out: PathBuf = dir.join(format!("{bundle_id}.part"));
    let result = (|| {
        let file = std::fs::File::open(&patch)
            .map_err(|e| format!("unable to open {}: {e}", patch.display()))?;
        fleet_proto::chunk::verify_bundle(
            std::io::BufReader::with_capacity(1 << 20, file),
            &file_id,
            file_size,
        )
        .map_err(|f| format!("the fetched file is not the described one: {f:?}"))?;
        let base_path = base.map(|b| BaseStore::under(data).bundle_path(&b.bundle_id));
        let rebuilt =
            crate::rebuild::rebuild(base_path.as_deref(), &patch, &out, window_log_max, size)
                .map_err(|e| e.to_string())?;
        match judge_result(
            bundle_id,
            size,
            BundleId::from_bytes(rebuilt.sha256),
            rebuilt.size,
        ) {
            ResultVerdict::Install => Ok(()),
            ResultVerdict::Refuse { detail } => Err(detail),
        }
    })();
    let _ = std::fs::remove_file(&patch);
    if result.is_err() {
        let _ = std::fs::remove_file(&out);
    }
    result
}

/// Opens a signed description (delta or compressed) and checks it against the limits; what is
/// wrong with it is logged and kept as the reason.
fn open_description<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    kind: Kind,
    what: &str,
    trusted: &envelope::TrustedKeys,
    limits: &fleet_proto::limits::Limits,
    validate: fn(&T, &fleet_proto::limits::Limits) -> Result<(), fleet_proto::delta::DeltaError>,
) -> Result<T, String> {
    let opened = envelope::open_json::<T>(bytes, kind, trusted, limits)
        .map_err(|e| format!("{what} description refused: {e}"))
        .and_then(|o| {
            validate(&o.value, limits)
                .map_err(|e| e.to_string())
                .map(|()| o.value)
        });
    if let Err(why) = &opened {
        tracing::warn!(why, what, "description unusable");
    }
    opened
}
