//! `fleetctl sim`: many simulated stations in one process against a real broker.
//!
//! # Model
//! Each station is one MQTT connection (its own client id, last will, retained presence and
//! state, exactly the topics and payloads of `fleet-updated`) driven by two tokio tasks: a
//! driver that polls the rumqttc event loop and a station task with the station's logic. The
//! logic makes the same decisions a real station makes, with the same code: every offer,
//! manifest and control is opened with `fleet_proto::envelope` (signature checked), offers go
//! through `fleet_core::update::decide_offer`, controls through
//! `fleet_core::rollout::{accept_control, decide_control}` (on arrival of the offer and again
//! right before installing), and every chunk is checked against the signed manifest. What is
//! simulated is everything below that: chunks are only counted (not written), the install is a
//! timer, and the trial boot's verdict is the station's configured failure.
//!
//! Why not 1,000 `fleet-updated` daemons: each one keeps a journal, a download file and two
//! slot images on disk and fsyncs after every transition; at 1,000 stations the benchmark
//! would measure the disk, not the broker and the rollout. The daemon itself is tested against
//! mosquitto in `fleet-updated`'s own tests; this simulator tests the fleet.
//!
//! # Cost per station
//! Small buffers: a request channel of [`REQUEST_CAPACITY`], inbound of [`INBOUND_CAPACITY`],
//! at most [`INFLIGHT`] QoS 1 publishes in flight, an incoming packet limit just above one
//! chunk. No bundle bytes are kept.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::ids::{DeviceId, GroupId, UpdateId, Version};
use fleet_core::rollout::{Control, Effective, accept_control, decide_control, responsible};
use fleet_core::slot::Slot;
use fleet_core::time::Now;
use fleet_core::update::{
    AdmissionContext, FallbackCause, Offer, Outcome, PhaseName, RejectReason, Report,
    SignatureVerdict, Stage, Station, decide_offer,
};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::payload::{Held, Progress, StationEvent, Timestamp, encode};
use fleet_proto::rollout::{control_topic, filter as rfilter, parse_control_topic};
use fleet_proto::topic::{self, Topic};
use fleet_proto::{BundleManifest, Limits, Presence, StationState, TrustedKeys};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::connection::BrokerAddr;

/// Requests buffered towards one station's event loop.
pub const REQUEST_CAPACITY: usize = 16;
/// Incoming messages buffered between one station's driver and its logic.
pub const INBOUND_CAPACITY: usize = 32;
/// QoS 1 publishes in flight per station.
pub const INFLIGHT: u16 = 8;
/// Largest packet a simulated station accepts (a chunk of up to 64 KiB plus headers).
pub const MAX_PACKET: usize = 80 * 1024;
/// Most stations one simulator runs.
pub const MAX_STATIONS: usize = 20_000;

/// One simulated station.
#[derive(Debug, Clone)]
pub struct StationSpec {
    pub device_id: DeviceId,
    pub groups: Vec<GroupId>,
    /// Its new slot fails the health check: it rolls back.
    pub fails: bool,
    /// How long its install takes.
    pub install_time: Duration,
    /// How long it takes over each chunk (a slow link or a slow card).
    pub chunk_delay: Duration,
    /// Its link drops every this long (then it reconnects after a short backoff).
    pub link_drop_every: Option<Duration>,
    /// Its health message reports a microphone that records digital silence.
    pub silent_microphone: bool,
}

/// What every station shares.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    pub addr: BrokerAddr,
    pub trusted: TrustedKeys,
    pub compatible: String,
    pub factory_version: Version,
    pub limits: Limits,
    /// Delay between two station starts (spreads the connect storm).
    pub start_spacing: Duration,
}

/// Stations that started installing, by update (what the tests check "nobody else
/// installed" against).
pub type InstallLog = Arc<Mutex<BTreeMap<UpdateId, BTreeSet<DeviceId>>>>;

/// A running simulated fleet. Dropping it stops every station.
#[derive(Debug)]
pub struct SimFleet {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<StationSummary>>,
    installs: InstallLog,
}

/// How one station's run went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StationSummary {
    pub connects: u32,
    pub installs: u32,
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SimFleet {
    /// Starts every station (spaced by `start_spacing`); returns once all were spawned.
    pub async fn start(opts: FleetOptions, stations: Vec<StationSpec>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let installs: InstallLog = Arc::default();
        let opts = Arc::new(opts);
        let mut tasks = Vec::with_capacity(stations.len().min(MAX_STATIONS));
        for spec in stations.into_iter().take(MAX_STATIONS) {
            let sim = SimStation::new(spec, opts.clone(), installs.clone());
            tasks.push(tokio::spawn(sim.run(stopped.clone())));
            if !opts.start_spacing.is_zero() {
                tokio::time::sleep(opts.start_spacing).await;
            }
        }
        Self {
            stop,
            tasks,
            installs,
        }
    }

    /// The stations that started installing `update`.
    #[must_use]
    pub fn installed(&self, update: &UpdateId) -> BTreeSet<DeviceId> {
        self.installs
            .lock()
            .map(|m| m.get(update).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Stops every station (each disconnects cleanly) and sums their runs.
    pub async fn stop(mut self) -> StationSummary {
        let _ = self.stop.send(true);
        let mut total = StationSummary::default();
        for t in std::mem::take(&mut self.tasks) {
            if let Ok(s) = t.await {
                total.connects += s.connects;
                total.installs += s.installs;
            }
        }
        total
    }
}

/// The update a station works on.
#[derive(Debug, Clone)]
struct Job {
    offer: Offer,
    manifest: Option<BundleManifest>,
    held: Vec<bool>,
    held_count: u32,
    held_bytes: u64,
    phase: PhaseName,
}

/// One station's logic and state (kept in memory: a restart of the simulator is a new fleet).
#[derive(Debug)]
struct SimStation {
    spec: StationSpec,
    opts: Arc<FleetOptions>,
    installs: InstallLog,
    station: Station,
    version: Version,
    committed: Slot,
    last_sequence: Option<u64>,
    last_outcome: Option<Outcome>,
    job: Option<Job>,
    /// An offer refused by a control, looked at again when the controls change.
    held_back: Option<(Offer, fleet_core::update::KeyId)>,
    /// What a control holds back now (an offer or a verified bundle), reported as `held` in
    /// the state as fleet-updated does.
    holding: Option<Held>,
    controls: BTreeMap<String, Control>,
    install_done_at: Option<Instant>,
    /// Chunks received but not yet taken (stations with a `chunk-delay`).
    slow_chunks: std::collections::VecDeque<(u32, Vec<u8>)>,
    state_seq: u64,
    event_seq: u64,
    health_seq: u64,
    started: Instant,
    summary: StationSummary,
}

enum Step {
    Stop,
    Reconnect,
}

impl SimStation {
    fn new(spec: StationSpec, opts: Arc<FleetOptions>, installs: InstallLog) -> Self {
        let station = Station {
            device_id: spec.device_id.clone(),
            groups: spec.groups.clone(),
            compatible: opts.compatible.clone(),
        };
        Self {
            version: opts.factory_version.clone(),
            spec,
            opts,
            installs,
            station,
            committed: Slot::A,
            last_sequence: None,
            last_outcome: None,
            job: None,
            held_back: None,
            holding: None,
            controls: BTreeMap::new(),
            install_done_at: None,
            slow_chunks: std::collections::VecDeque::new(),
            state_seq: 0,
            event_seq: 0,
            health_seq: 0,
            started: Instant::now(),
            summary: StationSummary::default(),
        }
    }

    fn now(&self) -> Now {
        Now {
            monotonic_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            wall_unix_s: Some(crate::rollout::unix_now()),
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> StationSummary {
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return self.summary;
            }
            match self.session(&mut stop).await {
                Step::Stop => return self.summary,
                Step::Reconnect => {
                    // Backoff with jitter, as a real station's session does.
                    let jitter = rand::random::<u64>() % 100;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff + Duration::from_millis(jitter)) => {}
                        _ = stop.changed() => return self.summary,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// One connection: subscribe, announce, then handle messages until stopped or the link
    /// drops.
    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> Step {
        let id = &self.spec.device_id;
        let mut o = MqttOptions::new(
            format!("sim-{id}"),
            self.opts.addr.host.clone(),
            self.opts.addr.port,
        );
        o.set_clean_session(true)
            .set_keep_alive(Duration::from_secs(30))
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_inflight(INFLIGHT)
            .set_last_will(LastWill::new(
                topic::device_presence(id),
                Presence::Offline.as_bytes().to_vec(),
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut eventloop) = AsyncClient::new(o, REQUEST_CAPACITY);
        let (in_tx, mut inbound) = mpsc::channel::<Result<(String, Vec<u8>), ()>>(INBOUND_CAPACITY);
        let driver = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if in_tx.send(Ok((p.topic, p.payload.to_vec()))).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) => {
                        let _ = in_tx.send(Err(())).await;
                        return;
                    }
                }
            }
        });
        self.summary.connects += 1;
        let mut filters = vec![
            topic::device_offer(id),
            control_topic(&fleet_core::rollout::Scope::Device(id.clone())),
            rfilter::FLEET_CONTROL.to_owned(),
        ];
        for g in &self.spec.groups {
            filters.push(topic::group_offer(g));
            filters.push(control_topic(&fleet_core::rollout::Scope::Group(g.clone())));
        }
        let mut ok = true;
        for f in filters {
            ok &= client.subscribe(f, QoS::AtLeastOnce).await.is_ok();
        }
        let downloading = self
            .job
            .as_ref()
            .filter(|j| j.phase == PhaseName::Downloading);
        if let Some(m) = downloading.and_then(|j| j.manifest.as_ref()) {
            ok &= client
                .subscribe(topic::filter::bundle_chunks(&m.bundle_id), QoS::AtLeastOnce)
                .await
                .is_ok();
        } else if let Some(j) = downloading {
            ok &= client
                .subscribe(topic::bundle_manifest(&j.offer.bundle_id), QoS::AtLeastOnce)
                .await
                .is_ok();
        }
        ok &= client
            .publish(
                topic::device_presence(id),
                QoS::AtLeastOnce,
                true,
                Presence::Online.as_bytes().to_vec(),
            )
            .await
            .is_ok();
        ok &= self.publish_state(&client).await;
        ok &= self.publish_health(&client).await;
        let drop_at = self
            .spec
            .link_drop_every
            .map(|d| Instant::now() + d.mul_f64(0.5 + rand::random::<f64>()));
        let step = if ok {
            self.serve(&client, &mut inbound, stop, drop_at).await
        } else {
            Step::Reconnect
        };
        if matches!(step, Step::Stop) {
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), driver).await;
        } else {
            driver.abort();
        }
        step
    }

    async fn serve(
        &mut self,
        client: &AsyncClient,
        inbound: &mut mpsc::Receiver<Result<(String, Vec<u8>), ()>>,
        stop: &mut watch::Receiver<bool>,
        drop_at: Option<Instant>,
    ) -> Step {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut next_chunk_at = far;
        loop {
            let install_at = self.install_done_at.unwrap_or(far);
            if self.slow_chunks.is_empty() {
                next_chunk_at = far;
            } else if next_chunk_at == far {
                next_chunk_at = Instant::now() + self.spec.chunk_delay;
            }
            tokio::select! {
                () = tokio::time::sleep_until(next_chunk_at) => {
                    next_chunk_at = far;
                    if let Some((index, payload)) = self.slow_chunks.pop_front() {
                        self.on_chunk(client, index, &payload, true).await;
                    }
                }
                _ = stop.changed() => return Step::Stop,
                () = tokio::time::sleep_until(drop_at.unwrap_or(far)) => return Step::Reconnect,
                () = tokio::time::sleep_until(install_at) => {
                    self.install_done_at = None;
                    self.finish_install(client).await;
                }
                m = inbound.recv() => match m {
                    Some(Ok((t, payload))) => self.on_message(client, &t, &payload).await,
                    Some(Err(())) | None => return Step::Reconnect,
                },
            }
        }
    }

    async fn on_message(&mut self, client: &AsyncClient, t: &str, payload: &[u8]) {
        if payload.is_empty() {
            return; // a cleared retained topic
        }
        if let Some(scope) = parse_control_topic(t) {
            let _ = scope;
            self.on_control(client, t, payload).await;
            return;
        }
        match Topic::parse(t) {
            Ok(Topic::DeviceOffer(_) | Topic::GroupOffer(_)) => {
                self.on_offer(client, payload).await;
            }
            Ok(Topic::BundleManifest(_)) => self.on_manifest(client, payload).await,
            Ok(Topic::BundleChunk { index, .. }) => {
                self.on_chunk(client, index, payload, false).await;
            }
            _ => {}
        }
    }

    fn effective(&self) -> Effective {
        Effective::merge(self.controls.values())
    }

    async fn on_control(&mut self, client: &AsyncClient, t: &str, payload: &[u8]) {
        let Ok(opened) = envelope::open_json::<Control>(
            payload,
            Kind::Control,
            &self.opts.trusted,
            &self.opts.limits,
        ) else {
            return;
        };
        let c = opened.value;
        // The topic must name the scope the signed message claims.
        if parse_control_topic(t).as_ref() != Some(&c.scope) {
            return;
        }
        let last = self.controls.get(t).map(|c| c.sequence);
        if accept_control(&self.station, last, &c).is_err() {
            return;
        }
        self.controls.insert(t.to_owned(), c);
        // A lifted halt or freeze: the verified bundle may now be installed, and an offer
        // held back may now be taken.
        if self
            .job
            .as_ref()
            .is_some_and(|j| j.phase == PhaseName::Verifying)
            && self.install_done_at.is_none()
        {
            self.try_install(client).await;
        } else if self.job.is_none()
            && let Some((o, key)) = self.held_back.take()
        {
            self.admit(client, o, key).await;
        }
    }

    async fn on_offer(&mut self, client: &AsyncClient, payload: &[u8]) {
        match envelope::open_json::<Offer>(
            payload,
            Kind::Offer,
            &self.opts.trusted,
            &self.opts.limits,
        ) {
            Ok(o) => self.admit(client, o.value, o.key_id).await,
            Err(e) => {
                self.reject(client, None, None, e.reject_reason()).await;
            }
        }
    }

    async fn admit(
        &mut self,
        client: &AsyncClient,
        offer: Offer,
        key_id: fleet_core::update::KeyId,
    ) {
        if let Some(j) = &self.job
            && j.offer.update_id == offer.update_id
        {
            // A wider wave of the update under way: nothing changes.
            self.last_sequence = Some(self.last_sequence.unwrap_or(0).max(offer.sequence));
            return;
        }
        if let Some(j) = &self.job {
            let phase = j.phase;
            self.reject(
                client,
                Some(&offer.update_id),
                Some(offer.sequence),
                RejectReason::Busy { phase },
            )
            .await;
            return;
        }
        // A held-back offer was verified when it arrived; it is judged again by the same rules.
        let ctx = AdmissionContext {
            station: &self.station,
            installed: &self.version,
            last_sequence: self.last_sequence,
            max_bundle_bytes: self.opts.limits.max_bundle_bytes,
        };
        let verdict = SignatureVerdict::Trusted { key_id };
        if let Err(r) = decide_offer(&ctx, &offer, verdict, self.now()) {
            self.reject(client, Some(&offer.update_id), Some(offer.sequence), r)
                .await;
            return;
        }
        if let Err(r) = decide_control(&self.effective(), &offer.update_id, &offer.version) {
            self.held_back = Some((offer.clone(), key_id));
            self.hold(
                client,
                &offer.update_id,
                Some(offer.sequence),
                &offer.version,
                r,
            )
            .await;
            return;
        }
        self.held_back = None;
        self.release(client, &offer.update_id).await;
        // Whatever else was held is superseded by this offer.
        self.holding = None;
        self.last_sequence = Some(offer.sequence);
        let report = Report::OfferAccepted {
            update_id: offer.update_id.clone(),
            sequence: offer.sequence,
            version: offer.version.clone(),
            key_id,
            expiry_checked: true,
        };
        let manifest_topic = topic::bundle_manifest(&offer.bundle_id);
        self.job = Some(Job {
            offer,
            manifest: None,
            held: Vec::new(),
            held_count: 0,
            held_bytes: 0,
            phase: PhaseName::Downloading,
        });
        self.publish_event(client, report).await;
        self.publish_state(client).await;
        let _ = client.subscribe(manifest_topic, QoS::AtLeastOnce).await;
    }

    /// A control holds `update_id` back: `offer-held` once per reason, `held` in the state.
    async fn hold(
        &mut self,
        client: &AsyncClient,
        update_id: &UpdateId,
        sequence: Option<u64>,
        version: &Version,
        reason: RejectReason,
    ) {
        let by = responsible(self.controls.values(), &reason);
        let (scope, control_sequence) = (by.map(|c| c.scope.clone()), by.map(|c| c.sequence));
        let held = Held {
            update_id: update_id.clone(),
            version: version.clone(),
            reason: reason.clone(),
            scope: scope.clone(),
            control_sequence,
        };
        if self.holding.as_ref() != Some(&held) {
            self.holding = Some(held);
            let report = Report::OfferHeld {
                update_id: update_id.clone(),
                sequence,
                reason,
                scope,
                control_sequence,
            };
            self.publish_event(client, report).await;
        }
        self.publish_state(client).await;
    }

    /// The control holding `update_id` back was lifted: `offer-released`.
    async fn release(&mut self, client: &AsyncClient, update_id: &UpdateId) {
        if self
            .holding
            .as_ref()
            .is_some_and(|h| &h.update_id == update_id)
        {
            self.holding = None;
            let report = Report::OfferReleased {
                update_id: update_id.clone(),
            };
            self.publish_event(client, report).await;
        }
    }

    async fn reject(
        &mut self,
        client: &AsyncClient,
        update_id: Option<&UpdateId>,
        sequence: Option<u64>,
        reason: RejectReason,
    ) {
        let report = Report::OfferRejected {
            update_id: update_id.cloned(),
            sequence,
            reason,
        };
        self.publish_event(client, report).await;
    }

    async fn on_manifest(&mut self, client: &AsyncClient, payload: &[u8]) {
        let Some(job) = self.job.as_mut() else { return };
        if job.manifest.is_some() {
            return;
        }
        let m = envelope::open_json::<BundleManifest>(
            payload,
            Kind::Manifest,
            &self.opts.trusted,
            &self.opts.limits,
        )
        .map_err(|e| e.to_string())
        .and_then(|m| {
            m.value
                .validate(&self.opts.limits)
                .and_then(|()| m.value.matches_offer(&job.offer))
                .map_err(|e| e.to_string())
                .map(|()| m.value)
        });
        match m {
            Ok(m) => {
                job.held = vec![false; m.chunks.len()];
                let chunks = topic::filter::bundle_chunks(&m.bundle_id);
                let manifest_topic = topic::bundle_manifest(&m.bundle_id);
                job.manifest = Some(m);
                let _ = client.unsubscribe(manifest_topic).await;
                let _ = client.subscribe(chunks, QoS::AtLeastOnce).await;
            }
            Err(detail) => self.end_job(client, Stage::Download, detail).await,
        }
    }

    async fn on_chunk(
        &mut self,
        client: &AsyncClient,
        index: u32,
        payload: &[u8],
        slow_done: bool,
    ) {
        let i = index as usize;
        let wanted = self.job.as_ref().is_some_and(|j| {
            j.manifest.is_some()
                && j.phase == PhaseName::Downloading
                && i < j.held.len()
                && !j.held[i]
        });
        if !wanted {
            return;
        }
        if !self.spec.chunk_delay.is_zero() && !slow_done {
            // A slow link: the chunk is taken `chunk-delay` later, while controls and other
            // messages are still handled at once.
            if self.slow_chunks.len() < self.opts.limits.max_chunks as usize {
                self.slow_chunks.push_back((index, payload.to_vec()));
            }
            return;
        }
        let Some(job) = self.job.as_mut() else { return };
        let Some(m) = job.manifest.as_ref() else {
            return;
        };
        if fleet_proto::chunk::verify_chunk(m, index, payload).is_err() {
            return; // a bad chunk is not held; the retained good one may come again
        }
        job.held[i] = true;
        job.held_count += 1;
        job.held_bytes += payload.len() as u64;
        if job.held_count as usize == job.held.len() {
            job.phase = PhaseName::Verifying;
            let bundle_id = m.bundle_id;
            let _ = client
                .unsubscribe(topic::filter::bundle_chunks(&bundle_id))
                .await;
            self.publish_event(client, Report::Downloaded { bundle_id })
                .await;
            self.try_install(client).await;
        }
    }

    /// The last check before anything is written to a slot: halts and freezes stop here.
    async fn try_install(&mut self, client: &AsyncClient) {
        let Some(job) = self.job.as_ref() else { return };
        let (u, v) = (job.offer.update_id.clone(), job.offer.version.clone());
        if let Err(reason) = decide_control(&self.effective(), &u, &v) {
            self.hold(client, &u, None, &v, reason).await;
            return;
        }
        self.release(client, &u).await;
        if let Some(j) = self.job.as_mut() {
            j.phase = PhaseName::Installing;
        }
        if let Ok(mut m) = self.installs.lock() {
            m.entry(u).or_default().insert(self.spec.device_id.clone());
        }
        self.summary.installs += 1;
        self.install_done_at = Some(Instant::now() + self.spec.install_time);
        let slot = self.committed.other();
        self.publish_event(client, Report::InstallStarted { slot, attempt: 1 })
            .await;
        self.publish_state(client).await;
    }

    async fn finish_install(&mut self, client: &AsyncClient) {
        let Some(job) = self.job.take() else { return };
        let slot = self.committed.other();
        let update_id = job.offer.update_id.clone();
        let (outcome, report) = if self.spec.fails {
            let cause = FallbackCause::HealthCheckFailed {
                check: "sim-health".into(),
                attempts: 1,
            };
            (
                Outcome::RolledBack {
                    update_id,
                    bad_slot: slot,
                    cause: cause.clone(),
                },
                Report::RolledBack {
                    from: slot,
                    to: self.committed,
                    cause,
                },
            )
        } else {
            self.committed = slot;
            self.version = job.offer.version.clone();
            (
                Outcome::Committed {
                    update_id,
                    slot,
                    version: job.offer.version.clone(),
                },
                Report::Committed {
                    slot,
                    version: job.offer.version,
                },
            )
        };
        self.last_outcome = Some(outcome);
        self.publish_event(client, report).await;
        self.publish_state(client).await;
    }

    async fn end_job(&mut self, client: &AsyncClient, stage: Stage, detail: String) {
        if let Some(job) = self.job.take() {
            self.last_outcome = Some(Outcome::Failed {
                update_id: job.offer.update_id,
                stage,
                detail: fleet_core::update::offer::truncate(&detail, 200),
            });
            self.publish_state(client).await;
        }
    }

    async fn publish_state(&mut self, client: &AsyncClient) -> bool {
        self.state_seq += 1;
        let job = self.job.as_ref();
        let s = StationState {
            device_id: self.spec.device_id.clone(),
            seq: self.state_seq,
            updated_at: Timestamp::from(self.now()),
            time_trusted: true,
            booted: self.committed,
            committed: self.committed,
            version: self.version.clone(),
            slots: Vec::new(),
            phase: job.map_or(PhaseName::Idle, |j| j.phase),
            update_id: job.map(|j| j.offer.update_id.clone()),
            target_version: job.map(|j| j.offer.version.clone()),
            attempt: None,
            progress: job
                .filter(|j| j.phase == PhaseName::Downloading)
                .map(|j| Progress {
                    done_bytes: j.held_bytes,
                    total_bytes: j.offer.bundle_size,
                }),
            last_sequence: self.last_sequence,
            last_outcome: self.last_outcome.clone(),
            install_percent: None,
            held: self.holding.clone(),
            trust: None,
        };
        client
            .publish(
                topic::device_state(&self.spec.device_id),
                QoS::AtLeastOnce,
                true,
                encode(&s),
            )
            .await
            .is_ok()
    }

    /// The station's retained health message, as `fleet-reporterd` would publish it.
    async fn publish_health(&mut self, client: &AsyncClient) -> bool {
        self.health_seq += 1;
        let wall = crate::rollout::unix_now();
        let h = crate::health::simulated(
            &self.spec.device_id,
            self.health_seq,
            &self.version,
            self.spec.silent_microphone,
            wall,
        );
        match fleet_proto::health::encode(&h) {
            Ok(bytes) => client
                .publish(
                    topic::device_health(&self.spec.device_id),
                    QoS::AtLeastOnce,
                    true,
                    bytes,
                )
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    async fn publish_event(&mut self, client: &AsyncClient, event: Report) {
        self.event_seq += 1;
        let e = StationEvent {
            device_id: self.spec.device_id.clone(),
            seq: self.event_seq,
            at: Timestamp::from(self.now()),
            update_id: self.job.as_ref().map(|j| j.offer.update_id.clone()),
            event,
        };
        let _ = client
            .publish(
                topic::device_events(&self.spec.device_id),
                QoS::AtLeastOnce,
                false,
                encode(&e),
            )
            .await;
    }
}

/// Builds `n` station specs named `{prefix}-{i:05}` in `group`: a `fail_rate` share fail their
/// health check, a `slow_rate` share install five times slower and take 50 ms per chunk, a `flaky_rate` share
/// drop their link every `flaky_every`. Deterministic for a `seed`.
#[allow(clippy::too_many_arguments)]
#[must_use]
pub fn specs(
    prefix: &str,
    n: usize,
    group: &GroupId,
    install_time: Duration,
    fail_rate: f64,
    slow_rate: f64,
    flaky_rate: f64,
    flaky_every: Duration,
    seed: u64,
) -> Vec<StationSpec> {
    use rand::{Rng as _, SeedableRng as _};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n.min(MAX_STATIONS))
        .filter_map(|i| {
            let id = DeviceId::new(format!("{prefix}-{i:05}")).ok()?;
            let slow = rng.gen_bool(slow_rate.clamp(0.0, 1.0));
            let flaky = rng.gen_bool(flaky_rate.clamp(0.0, 1.0));
            Some(StationSpec {
                device_id: id,
                groups: vec![group.clone()],
                fails: rng.gen_bool(fail_rate.clamp(0.0, 1.0)),
                install_time: if slow { install_time * 5 } else { install_time },
                chunk_delay: if slow {
                    Duration::from_millis(50)
                } else {
                    Duration::ZERO
                },
                link_drop_every: flaky.then_some(flaky_every),
                // One station in a hundred has a dead microphone (not drawn from `rng`, so
                // the other traits stay what they were for a seed).
                silent_microphone: i % 100 == 99,
            })
        })
        .collect()
}
