//! `fleetctl sim`: many simulated stations in one process against a real broker.
//!
//! # Model
//! Each station is one MQTT connection (its own client id, last will, retained presence and
//! state, exactly the topics and payloads of `fleet-updated`) driven by two tokio tasks: a
//! driver that polls the rumqttc event loop and a station task. The station task runs the same
//! `fleet_core::station::Station` as `fleet-updated`: every offer, control and manifest is
//! opened with `fleet_proto::envelope` (signature checked) and fed to
//! `fleet_core::station::step`, which decides admission, holds and releases under controls,
//! busy re-offers, retraction and the install gate; every chunk is checked against the signed
//! manifest. What is simulated is everything below the station's actions: chunks are only
//! counted (not written), the whole-bundle hash is taken as the chunks' verdict, the install is
//! a timer, the boot flow answers at once, and the trial's health check fails when the station
//! is configured to fail.
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
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::ids::{DeviceId, GroupId, UpdateId, Version};
use fleet_core::ports::{BootStatus, SlotStatus};
use fleet_core::rollout::Control;
use fleet_core::slot::{Slot, SlotHealth};
use fleet_core::station::{self, Action, Input, SignedOffer, Station};
use fleet_core::time::Now;
use fleet_core::trust::TrustState;
use fleet_core::update::manifest::{ManifestFacts, manifest_mismatch};
use fleet_core::update::{self, BundleId, DownloadFailure, Event, Offer, Phase, Policy, Report};
use fleet_proto::envelope::{self, Kind};
use fleet_proto::payload::{Held, StationEvent, Timestamp, encode};
use fleet_proto::rollout::{control_topic, filter as rfilter, parse_control_topic};
use fleet_proto::topic::{self, Topic};
use fleet_proto::{BundleManifest, Limits, Presence, StationState, TrustedKeys};
use rumqttc::{AsyncClient, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
use sha2::Digest as _;
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
            let sim = match SimStation::new(spec, opts.clone(), installs.clone()) {
                Ok(sim) => sim,
                Err(e) => {
                    tracing::error!(error = %e, "unable to start a simulated station");
                    continue;
                }
            };
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

/// The bundle a station is fetching (the station's `Download` action carried out).
#[derive(Debug, Clone)]
struct Transfer {
    bundle_id: BundleId,
    size: u64,
    version: Version,
    manifest: Option<BundleManifest>,
    held: Vec<bool>,
    held_count: u32,
    held_bytes: u64,
}

/// A simulated install in progress (the station's `Install` action carried out).
#[derive(Debug, Clone, Copy)]
struct Installing {
    slot: Slot,
    done_at: Instant,
}

/// One simulated station: the real station core, and the simulated world under it (kept in
/// memory: a restart of the simulator is a new fleet).
#[derive(Debug)]
struct SimStation {
    spec: StationSpec,
    opts: Arc<FleetOptions>,
    installs: InstallLog,
    station: Station,
    /// The simulated boot flow: which slot runs, and each slot's health and version.
    boot: BootStatus,
    transfer: Option<Transfer>,
    installing: Option<Installing>,
    /// The version of the bundle being installed, by slot (what the slot holds afterwards).
    install_version: Option<Version>,
    /// Chunks received but not yet taken (stations with a `chunk-delay`).
    slow_chunks: VecDeque<(u32, Vec<u8>)>,
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

/// The policy of a simulated station: one trial (a failing station rolls back at once).
fn sim_policy(limits: &Limits) -> Policy {
    Policy {
        max_trial_attempts: 1,
        max_bundle_bytes: limits.max_bundle_bytes,
        ..Policy::default()
    }
}

impl SimStation {
    fn new(
        spec: StationSpec,
        opts: Arc<FleetOptions>,
        installs: InstallLog,
    ) -> Result<Self, fleet_core::trust::BootstrapError> {
        let identity = update::Station {
            device_id: spec.device_id.clone(),
            groups: spec.groups.clone(),
            compatible: opts.compatible.clone(),
        };
        let engine = update::State::new(
            identity,
            sim_policy(&opts.limits),
            Slot::A,
            opts.factory_version.clone(),
        );
        let trust = trust_of(&opts.trusted)?;
        let slot = |s: Slot| SlotStatus {
            slot: s,
            health: if s == Slot::A {
                SlotHealth::Good
            } else {
                SlotHealth::Bad
            },
            attempts_left: 0,
            version: (s == Slot::A).then(|| opts.factory_version.clone()),
        };
        let boot = BootStatus {
            booted: Slot::A,
            primary: Slot::A,
            slots: [slot(Slot::A), slot(Slot::B)],
        };
        let mut sim = Self {
            spec,
            opts,
            installs,
            station: Station::new(engine, BTreeMap::new(), trust, None),
            boot,
            transfer: None,
            installing: None,
            install_version: None,
            slow_chunks: VecDeque::new(),
            state_seq: 0,
            event_seq: 0,
            health_seq: 0,
            started: Instant::now(),
            summary: StationSummary::default(),
        };
        // The first start: nothing to publish yet (no connection), only the station's view.
        let t = station::step(&sim.station, Input::Started(sim.boot.clone()), sim.now());
        sim.station = t.next;
        Ok(sim)
    }

    fn now(&self) -> Now {
        Now {
            monotonic_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            wall_unix_s: Some(crate::clock::unix_now()),
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
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        if in_tx.send(Ok((p.topic, p.payload.to_vec()))).await.is_err() {
                            return;
                        }
                    }
                    Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
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
        if let Some(t) = &self.transfer {
            let resubscribe = if t.manifest.is_some() {
                topic::filter::bundle_chunks(&t.bundle_id)
            } else {
                topic::bundle_manifest(&t.bundle_id)
            };
            ok &= client
                .subscribe(resubscribe, QoS::AtLeastOnce)
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
            let install_at = self.installing.map_or(far, |i| i.done_at);
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
        if let Some(scope) = parse_control_topic(t) {
            if payload.is_empty() {
                return; // a cleared control topic changes nothing
            }
            let input = match envelope::open_json::<Control>(
                payload,
                Kind::Control,
                &self.opts.trusted,
                &self.opts.limits,
            ) {
                Ok(o) => Input::Control {
                    topic: t.to_owned(),
                    topic_scope: scope,
                    control: o.value,
                },
                Err(e) => Input::ControlUnusable {
                    topic_scope: scope,
                    reason: e.reject_reason(),
                },
            };
            self.feed(client, input).await;
            return;
        }
        match Topic::parse(t) {
            Ok(Topic::DeviceOffer(_) | Topic::GroupOffer(_)) => {
                let input = self.offer_input(t, payload);
                self.feed(client, input).await;
            }
            Ok(Topic::BundleManifest(_)) => self.on_manifest(client, payload).await,
            Ok(Topic::BundleChunk { index, .. }) => {
                self.on_chunk(client, index, payload, false).await;
            }
            _ => {}
        }
    }

    fn offer_input(&self, t: &str, payload: &[u8]) -> Input {
        if payload.is_empty() {
            return Input::OfferRetracted {
                topic: t.to_owned(),
            };
        }
        let digest: [u8; 32] = sha2::Sha256::digest(payload).into();
        match envelope::open_json::<Offer>(
            payload,
            Kind::Offer,
            &self.opts.trusted,
            &self.opts.limits,
        ) {
            Ok(o) => Input::Offer {
                topic: t.to_owned(),
                signed: SignedOffer {
                    offer: o.value,
                    key_id: o.key_id,
                    digest,
                },
            },
            Err(e) => Input::OfferUnusable {
                topic: t.to_owned(),
                digest,
                reason: e.reject_reason(),
            },
        }
    }

    /// Steps the station through `first` and every input its actions produce, carrying the
    /// actions out on the simulated world.
    async fn feed(&mut self, client: &AsyncClient, first: Input) {
        let mut queue = VecDeque::from([first]);
        while let Some(input) = queue.pop_front() {
            let t = station::step(&self.station, input, self.now());
            self.station = t.next;
            for action in t.actions {
                self.execute(client, action, &mut queue).await;
            }
        }
    }

    async fn execute(&mut self, client: &AsyncClient, action: Action, queue: &mut VecDeque<Input>) {
        match action {
            // Kept in memory only.
            Action::Save(_) => {}
            Action::Report { update_id, report } => {
                self.publish_event(client, update_id, report).await;
            }
            Action::PublishState => {
                self.publish_state(client).await;
            }
            Action::Update(a) => self.carry_out(client, a, queue).await,
        }
    }

    async fn carry_out(
        &mut self,
        client: &AsyncClient,
        action: update::Action,
        queue: &mut VecDeque<Input>,
    ) {
        match action {
            update::Action::Download {
                bundle_id,
                size,
                version,
                ..
            } => {
                self.stop_transfer(client).await;
                self.transfer = Some(Transfer {
                    bundle_id,
                    size,
                    version,
                    manifest: None,
                    held: Vec::new(),
                    held_count: 0,
                    held_bytes: 0,
                });
                let _ = client
                    .subscribe(topic::bundle_manifest(&bundle_id), QoS::AtLeastOnce)
                    .await;
            }
            update::Action::DiscardDownload { bundle_id }
                if self
                    .transfer
                    .as_ref()
                    .is_some_and(|t| t.bundle_id == bundle_id) =>
            {
                self.stop_transfer(client).await;
            }
            // Every chunk was checked against the signed manifest as it came; no bytes are
            // kept, so that verdict stands for the whole file's.
            update::Action::VerifyBundle { bundle_id, .. } => {
                queue.push_back(Input::Event(Event::BundleVerified { bundle_id }));
            }
            update::Action::Install {
                update_id,
                slot,
                version,
                ..
            } => {
                if let Ok(mut m) = self.installs.lock() {
                    m.entry(update_id)
                        .or_default()
                        .insert(self.spec.device_id.clone());
                }
                self.summary.installs += 1;
                self.install_version = Some(version);
                self.installing = Some(Installing {
                    slot,
                    done_at: Instant::now() + self.spec.install_time,
                });
            }
            update::Action::ArmTrial { slot } => {
                self.boot.primary = slot;
                let s = self.slot_mut(slot);
                s.health = SlotHealth::Trial;
                s.attempts_left = 1;
                queue.push_back(Input::Event(Event::TrialArmed { slot }));
            }
            update::Action::Reboot { .. } => {
                // The simulated boot flow: the primary slot comes up unless it is bad.
                let primary = self.boot.primary;
                let booted = if self.boot.slot(primary).health == SlotHealth::Bad {
                    primary.other()
                } else {
                    primary
                };
                self.boot.booted = booted;
                queue.push_back(Input::Started(self.boot.clone()));
            }
            update::Action::RunHealthChecks { .. } => {
                queue.push_back(Input::Event(if self.spec.fails {
                    Event::HealthFailed {
                        check: "sim-health".into(),
                    }
                } else {
                    Event::HealthPassed
                }));
            }
            update::Action::MarkGood { slot } => {
                self.slot_mut(slot).health = SlotHealth::Good;
                self.boot.primary = slot;
                queue.push_back(Input::Event(Event::MarkedGood { slot }));
            }
            update::Action::MarkBad { slot } => {
                self.slot_mut(slot).health = SlotHealth::Bad;
                if self.boot.primary == slot {
                    self.boot.primary = slot.other();
                }
                queue.push_back(Input::Event(Event::MarkedBad { slot }));
            }
            _ => {}
        }
    }

    fn slot_mut(&mut self, slot: Slot) -> &mut SlotStatus {
        match slot {
            Slot::A => &mut self.boot.slots[0],
            Slot::B => &mut self.boot.slots[1],
        }
    }

    async fn stop_transfer(&mut self, client: &AsyncClient) {
        if let Some(t) = self.transfer.take() {
            self.slow_chunks.clear();
            let _ = client
                .unsubscribe(topic::bundle_manifest(&t.bundle_id))
                .await;
            let _ = client
                .unsubscribe(topic::filter::bundle_chunks(&t.bundle_id))
                .await;
        }
    }

    async fn on_manifest(&mut self, client: &AsyncClient, payload: &[u8]) {
        let Some(t) = self.transfer.as_ref() else {
            return;
        };
        if t.manifest.is_some() || payload.is_empty() {
            return;
        }
        let bundle_id = t.bundle_id;
        let checked = match envelope::open_json::<BundleManifest>(
            payload,
            Kind::Manifest,
            &self.opts.trusted,
            &self.opts.limits,
        ) {
            Err(e) => Err(DownloadFailure::BadManifest {
                reason: e.reject_reason(),
            }),
            Ok(m) => match m.value.validate(&self.opts.limits) {
                Err(e) => Err(DownloadFailure::BadManifest {
                    reason: update::RejectReason::Malformed { detail: e.0 },
                }),
                Ok(()) => mismatch(&m.value, t, &self.opts.compatible)
                    .map_or(Ok(m.value), |detail| {
                        Err(DownloadFailure::ManifestMismatch { detail })
                    }),
            },
        };
        match checked {
            Ok(m) => {
                let chunks = topic::filter::bundle_chunks(&m.bundle_id);
                if let Some(t) = self.transfer.as_mut() {
                    t.held = vec![false; m.chunks.len()];
                    t.manifest = Some(m);
                }
                let _ = client.unsubscribe(topic::bundle_manifest(&bundle_id)).await;
                let _ = client.subscribe(chunks, QoS::AtLeastOnce).await;
            }
            Err(failure) => {
                self.stop_transfer(client).await;
                self.feed(
                    client,
                    Input::Event(Event::DownloadFailed { bundle_id, failure }),
                )
                .await;
            }
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
        let wanted = self
            .transfer
            .as_ref()
            .is_some_and(|t| t.manifest.is_some() && i < t.held.len() && !t.held[i]);
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
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        let Some(m) = t.manifest.as_ref() else {
            return;
        };
        if fleet_proto::chunk::verify_chunk(m, index, payload).is_err() {
            return; // a bad chunk is not held; the retained good one may come again
        }
        t.held[i] = true;
        t.held_count += 1;
        t.held_bytes += payload.len() as u64;
        if t.held_count as usize == t.held.len() {
            let (bundle_id, held_bytes) = (t.bundle_id, t.held_bytes);
            self.stop_transfer(client).await;
            self.feed(
                client,
                Input::Event(Event::DownloadProgress {
                    bundle_id,
                    held_bytes,
                }),
            )
            .await;
            self.feed(client, Input::Event(Event::DownloadComplete { bundle_id }))
                .await;
        }
    }

    /// The simulated installer finished: the slot holds the bundle's version.
    async fn finish_install(&mut self, client: &AsyncClient) {
        let Some(done) = self.installing.take() else {
            return;
        };
        let version = self.install_version.take();
        if let Some(v) = &version {
            self.slot_mut(done.slot).version = Some(v.clone());
        }
        let Some(version) = version else { return };
        self.feed(
            client,
            Input::Event(Event::Installed {
                slot: done.slot,
                version,
            }),
        )
        .await;
    }

    async fn publish_state(&mut self, client: &AsyncClient) -> bool {
        self.state_seq += 1;
        let engine = self.station.engine();
        let mut s = StationState::from_engine(engine, Some(&self.boot), self.state_seq, self.now());
        if let (Some(t), Some(progress), Phase::Downloading { .. }) =
            (&self.transfer, s.progress.as_mut(), &engine.phase)
        {
            progress.done_bytes = t.held_bytes;
        }
        s.held = self.station.held().map(|h| Held {
            update_id: h.update_id,
            version: h.version,
            reason: h.reason,
            scope: h.scope,
            control_sequence: h.control_sequence,
        });
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
        let wall = crate::clock::unix_now();
        let h = crate::health::simulated(
            &self.spec.device_id,
            self.health_seq,
            &self.station.engine().committed_version,
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

    async fn publish_event(
        &mut self,
        client: &AsyncClient,
        update_id: Option<UpdateId>,
        event: Report,
    ) {
        self.event_seq += 1;
        let e = StationEvent {
            device_id: self.spec.device_id.clone(),
            seq: self.event_seq,
            at: Timestamp::from(self.now()),
            update_id,
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

/// What the station trusts: the operator keys the simulator verifies with.
fn trust_of(keys: &TrustedKeys) -> Result<TrustState, fleet_core::trust::BootstrapError> {
    TrustState::bootstrap(keys.keys().map(fleet_proto::trust::public_key))
}

/// Why `m` is not the manifest of the bundle `t` fetches, if it is not (the station's rule).
fn mismatch(m: &BundleManifest, t: &Transfer, compatible: &str) -> Option<String> {
    manifest_mismatch(
        ManifestFacts {
            bundle_id: t.bundle_id,
            size: t.size,
            version: &t.version,
            compatible,
        },
        ManifestFacts {
            bundle_id: m.bundle_id,
            size: m.size,
            version: &m.version,
            compatible: &m.compatible,
        },
    )
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
