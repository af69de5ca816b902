//! `watch`: follow an update on every station from its state and events until each one has
//! ended (committed, rolled back, failed, refused), the time is up, or Ctrl-C.
//!
//! On a terminal the stations get live progress bars; otherwise (CI logs, pipes) one line per
//! step.
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::IsTerminal as _;
use std::time::Duration;

use fleet_core::ids::{DeviceId, UpdateId, Version};
use fleet_core::update::delta::{DeliveryKind, FullReason};
use fleet_core::update::{Outcome, PhaseName, RejectReason, Report};
use fleet_proto::payload::{decode_event, decode_state};
use fleet_proto::topic::{self, Topic};
use fleet_proto::{Limits, StationEvent, StationState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::time::Instant;

use crate::connection::{BrokerAddr, ConnectionError};
use crate::status::{describe_cause, name_of};

/// How a station's part in an update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StationEnd {
    /// The new slot is committed.
    Updated { version: Version },
    /// The new slot was abandoned; the station runs its previous slot.
    RolledBack { cause: String },
    /// Download, verification or install failed; no slot changed.
    Failed { detail: String },
    /// The station is outside the rollout wave (its bucket is not below the percentage): a
    /// wider offer brings it in.
    OutsideWave { bucket: u8, percent: u8 },
    /// The station refused the offer (not newer, incompatible, ...).
    Refused { reason: String },
    /// A newer update replaced this one.
    Superseded { by: UpdateId },
}

/// The line `watch` prints when a station's health problems change (the first message of a
/// station prints only when it has problems).
#[must_use]
pub fn health_change(
    id: &DeviceId,
    before: Option<&Vec<fleet_core::health::Problem>>,
    now: &[fleet_core::health::Problem],
) -> Option<String> {
    let list = |p: &[fleet_core::health::Problem]| {
        if p.is_empty() {
            "healthy".to_string()
        } else {
            p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ")
        }
    };
    match before {
        Some(b) if b.as_slice() == now => None,
        None if now.is_empty() => None,
        Some(b) => Some(format!("{id}  health: {} (was {})", list(now), list(b))),
        None => Some(format!("{id}  health: {}", list(now))),
    }
}

/// What to watch.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    pub update_id: UpdateId,
    /// The stations expected to take part; `None`: every station that shows a sign of the
    /// update (then `settle` is how long to wait for late ones).
    pub devices: Option<BTreeSet<DeviceId>>,
    pub settle: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    pub limits: Limits,
}

/// How a watch ended.
#[derive(Debug, Clone, Default)]
pub struct WatchSummary {
    pub ends: BTreeMap<DeviceId, StationEnd>,
    /// Expected or started stations that did not end.
    pub unfinished: BTreeSet<DeviceId>,
    pub timed_out: bool,
    pub interrupted: bool,
}

impl WatchSummary {
    /// Stations that committed the update.
    #[must_use]
    pub fn updated(&self) -> Vec<&DeviceId> {
        self.ends
            .iter()
            .filter(|(_, e)| matches!(e, StationEnd::Updated { .. }))
            .map(|(d, _)| d)
            .collect()
    }

    /// Stations that rolled back, with why.
    #[must_use]
    pub fn rolled_back(&self) -> Vec<(&DeviceId, &str)> {
        self.ends
            .iter()
            .filter_map(|(d, e)| match e {
                StationEnd::RolledBack { cause } => Some((d, cause.as_str())),
                _ => None,
            })
            .collect()
    }

    /// Stations outside the rollout wave.
    #[must_use]
    pub fn outside_wave(&self) -> Vec<&DeviceId> {
        self.ends
            .iter()
            .filter(|(_, e)| matches!(e, StationEnd::OutsideWave { .. }))
            .map(|(d, _)| d)
            .collect()
    }

    /// Stations that failed, refused or were superseded (everything but updated, rolled back
    /// and outside the wave), with why.
    #[must_use]
    pub fn failed(&self) -> Vec<(&DeviceId, String)> {
        self.ends
            .iter()
            .filter_map(|(d, e)| match e {
                StationEnd::Failed { detail } => Some((d, detail.clone())),
                StationEnd::Refused { reason } => Some((d, format!("refused: {reason}"))),
                StationEnd::Superseded { by } => Some((d, format!("superseded by {by}"))),
                _ => None,
            })
            .collect()
    }
}

fn outcome_update(o: &Outcome) -> Option<&UpdateId> {
    match o {
        Outcome::Committed { update_id, .. }
        | Outcome::RolledBack { update_id, .. }
        | Outcome::Failed { update_id, .. }
        | Outcome::Superseded { update_id, .. } => Some(update_id),
        _ => None,
    }
}

/// The end a state shows for `update`, if the station is idle after it.
#[must_use]
pub fn end_from_state(s: &StationState, update: &UpdateId) -> Option<StationEnd> {
    if s.phase != PhaseName::Idle {
        return None;
    }
    let o = s.last_outcome.as_ref()?;
    if outcome_update(o) != Some(update) {
        return None;
    }
    Some(match o {
        Outcome::Committed { version, .. } => StationEnd::Updated {
            version: version.clone(),
        },
        Outcome::RolledBack { cause, .. } => StationEnd::RolledBack {
            cause: describe_cause(cause),
        },
        Outcome::Failed { stage, detail, .. } => StationEnd::Failed {
            detail: format!("{}: {detail}", name_of(stage)),
        },
        Outcome::Superseded { by, .. } => StationEnd::Superseded { by: by.clone() },
        other => StationEnd::Failed {
            detail: format!("{other:?}"),
        },
    })
}

/// The end a refused offer means for a station: `None` when the station takes the offer
/// later by itself (busy now).
#[must_use]
pub fn end_from_refusal(reason: &RejectReason) -> Option<StationEnd> {
    match reason {
        // A busy station takes the retained offer once it is idle again.
        RejectReason::Busy { .. } => None,
        RejectReason::NotInWave { bucket, percent } => Some(StationEnd::OutsideWave {
            bucket: *bucket,
            percent: *percent,
        }),
        other => Some(StationEnd::Refused {
            reason: reason_text(other),
        }),
    }
}

/// A one-line description of an event, `None` for the ones bars show by themselves.
#[must_use]
pub fn describe_event(r: &Report) -> Option<String> {
    Some(match r {
        Report::OfferAccepted {
            update_id,
            sequence,
            version,
            ..
        } => format!("offer accepted: {update_id} ({version}, sequence {sequence})"),
        Report::OfferRenewed { sequence, .. } => format!("offer renewed (sequence {sequence})"),
        Report::OfferRejected { reason, .. } => format!("offer refused: {}", reason_text(reason)),
        Report::Superseded { by, .. } => format!("superseded by {by}"),
        Report::DownloadStarted {
            resumed: true,
            held_bytes,
            size,
            ..
        } => format!("download resumed with {held_bytes} of {size} bytes held"),
        Report::DownloadStarted { size, .. } => format!("download started ({size} bytes)"),
        Report::DownloadProgress { .. } | Report::InstallProgress { .. } => return None,
        Report::Downloaded { .. } => "downloaded".into(),
        Report::DownloadFailed { failure } => format!("DOWNLOAD FAILED: {failure:?}"),
        Report::Verified { .. } => "bundle verified".into(),
        Report::VerifyFailed { failure } => format!("VERIFY FAILED: {failure:?}"),
        Report::InstallStarted { slot, attempt } => {
            format!("installing into slot {slot} (attempt {attempt})")
        }
        Report::Installed { slot, version } => format!("installed {version} into slot {slot}"),
        Report::InstallFailed { detail, will_retry } => format!(
            "INSTALL FAILED: {detail}{}",
            if *will_retry { " (will retry)" } else { "" }
        ),
        Report::TrialArmed { slot, attempt } => {
            format!("slot {slot} armed for trial boot {attempt}")
        }
        Report::Rebooting { into } => format!("rebooting into slot {into}"),
        Report::TrialBooted { slot, attempt } => {
            format!("trial boot of slot {slot} (attempt {attempt})")
        }
        Report::HealthPassed { slot } => format!("slot {slot} passed its health checks"),
        Report::HealthFailed {
            slot,
            check,
            attempt,
            will_retry,
        } => format!(
            "HEALTH CHECK FAILED on slot {slot}: {check} (attempt {attempt}{})",
            if *will_retry {
                ", will retry"
            } else {
                ", no attempts left"
            }
        ),
        Report::TrialFellBack {
            from,
            to,
            attempt,
            will_retry,
        } => format!(
            "came back on slot {to} instead of {from} (attempt {attempt}{})",
            if *will_retry { ", will retry" } else { "" }
        ),
        Report::Committed { slot, version } => format!("committed slot {slot}: running {version}"),
        Report::MarkedBad { slot } => format!("marked slot {slot} bad"),
        Report::RolledBack { from, to, cause } => format!(
            "FELL BACK from slot {from} to slot {to}: {}",
            describe_cause(cause)
        ),
        Report::BootControlFailed { op, slot, detail } => {
            format!("BOOT CONTROL FAILED: {op:?} slot {slot}: {detail}")
        }
        Report::RollbackStuck { slot } => {
            format!("STUCK on bad slot {slot}: a person must act")
        }
        Report::TransportChosen {
            transport: DeliveryKind::Delta,
            expected_bytes,
            bundle_bytes,
            ..
        } => format!(
            "fetching a delta: {expected_bytes} of {bundle_bytes} bytes ({} saved)",
            saved(*expected_bytes, *bundle_bytes)
        ),
        Report::TransportChosen {
            transport: DeliveryKind::Compressed,
            reason,
            expected_bytes,
            bundle_bytes,
            ..
        } => format!(
            "fetching the compressed bundle: {expected_bytes} of {bundle_bytes} bytes ({} saved): {}",
            saved(*expected_bytes, *bundle_bytes),
            reason.as_ref().map_or("no reason given", FullReason::code)
        ),
        Report::TransportChosen {
            transport: DeliveryKind::Full,
            reason,
            bundle_bytes,
            ..
        } => format!(
            "fetching the full bundle ({bundle_bytes} bytes): {}",
            reason.as_ref().map_or("no reason given", FullReason::code)
        ),
        Report::Delivered {
            transport,
            received_bytes,
            bundle_bytes,
            ..
        } => match transport {
            DeliveryKind::Delta => format!(
                "bundle rebuilt from a delta: {received_bytes} bytes received for {bundle_bytes} ({} saved)",
                saved(*received_bytes, *bundle_bytes)
            ),
            DeliveryKind::Compressed => format!(
                "bundle decoded from its compressed transfer: {received_bytes} bytes received for {bundle_bytes} ({} saved)",
                saved(*received_bytes, *bundle_bytes)
            ),
            DeliveryKind::Full => format!("full bundle received: {received_bytes} bytes"),
        },
        other => format!("{other:?}"),
    })
}

/// `delta`, `compressed, reason` or `full, reason`, for progress lines.
fn delivery_word(d: &fleet_proto::payload::Delivery) -> String {
    match (d.transport, &d.reason) {
        (DeliveryKind::Delta, _) => "delta".into(),
        (DeliveryKind::Compressed, Some(r)) => format!("compressed, {}", r.code()),
        (DeliveryKind::Compressed, None) => "compressed".into(),
        (DeliveryKind::Full, Some(r)) => format!("full, {}", r.code()),
        (DeliveryKind::Full, None) => "full".into(),
    }
}

/// Bytes and share a delta saved against the full bundle.
#[must_use]
pub fn saved(received: u64, bundle: u64) -> String {
    let saved = bundle.saturating_sub(received);
    format!(
        "{saved} bytes, {:.1}%",
        saved as f64 * 100.0 / bundle.max(1) as f64
    )
}

fn reason_text(r: &fleet_core::update::RejectReason) -> String {
    serde_json::to_string(r).unwrap_or_else(|_| format!("{r:?}"))
}

/// Where progress goes: bars on a terminal, lines otherwise, or nowhere.
#[derive(Debug)]
pub struct Ui {
    mode: Mode,
    bars: BTreeMap<DeviceId, ProgressBar>,
    /// Line mode: the last download quarter printed per station.
    quarter: BTreeMap<DeviceId, u64>,
}

#[derive(Debug)]
enum Mode {
    Bars(MultiProgress),
    Lines,
    Quiet,
}

impl Ui {
    /// Bars when stderr is a terminal, lines on stdout otherwise.
    #[must_use]
    pub fn auto() -> Self {
        if std::io::stderr().is_terminal() {
            Self::with(Mode::Bars(MultiProgress::with_draw_target(
                ProgressDrawTarget::stderr(),
            )))
        } else {
            Self::with(Mode::Lines)
        }
    }

    /// Prints nothing (tests, library use).
    #[must_use]
    pub fn quiet() -> Self {
        Self::with(Mode::Quiet)
    }

    fn with(mode: Mode) -> Self {
        Self {
            mode,
            bars: BTreeMap::new(),
            quarter: BTreeMap::new(),
        }
    }

    /// Prints a line above the bars (or just a line).
    pub fn println(&self, line: &str) {
        match &self.mode {
            Mode::Bars(m) => {
                let _ = m.println(line);
            }
            Mode::Lines => println!("{line}"),
            Mode::Quiet => {}
        }
    }

    /// Makes sure `id` has a bar (so bars appear in a chosen order).
    pub fn station(&mut self, id: &DeviceId) {
        let Mode::Bars(m) = &self.mode else { return };
        if self.bars.contains_key(id) {
            return;
        }
        let bar = m.add(ProgressBar::new(100));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {percent:>3}% {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(id.to_string());
        bar.set_message("waiting");
        self.bars.insert(id.clone(), bar);
    }

    fn state(&mut self, s: &StationState) {
        let id = &s.device_id;
        self.station(id);
        let phase = name_of(&s.phase);
        match &self.mode {
            Mode::Bars(_) => {
                // A finished bar keeps its final message.
                if let Some(bar) = self.bars.get(id).filter(|b| !b.is_finished()) {
                    if let Some(p) = &s.progress {
                        bar.set_length(p.total_bytes.max(1));
                        bar.set_position(p.done_bytes);
                    } else if s.phase != PhaseName::Idle {
                        bar.set_position(bar.length().unwrap_or(100));
                    }
                    let detail = match (s.attempt, &s.delivery) {
                        (Some(a), _) => format!("{phase} (attempt {a})"),
                        (None, Some(d)) if s.progress.is_some() => {
                            format!("{phase} ({})", delivery_word(d))
                        }
                        (None, _) => phase,
                    };
                    bar.set_message(detail);
                }
            }
            Mode::Lines => {
                if let Some(p) = &s.progress
                    && p.total_bytes > 0
                {
                    let q = p.done_bytes.saturating_mul(4) / p.total_bytes;
                    let prev = self.quarter.get(id).copied();
                    if prev.is_none_or(|prev| q > prev) && q > 0 {
                        self.quarter.insert(id.clone(), q);
                        let how = s.delivery.as_ref().map(delivery_word).unwrap_or_default();
                        println!("{id:>10}  downloading {:>3}% {how}", q * 25);
                    }
                }
            }
            Mode::Quiet => {}
        }
    }

    fn event(&mut self, e: &StationEvent) {
        let id = &e.device_id;
        self.station(id);
        if let Some(text) = describe_event(&e.event) {
            self.println(&format!("{id:>10}  {text}"));
        }
        if let (Mode::Bars(_), Report::InstallProgress { percent }) = (&self.mode, &e.event)
            && let Some(bar) = self.bars.get(id).filter(|b| !b.is_finished())
        {
            bar.set_length(100);
            bar.set_position(u64::from(*percent));
            bar.set_message("installing");
        }
    }

    fn end(&mut self, id: &DeviceId, end: &StationEnd) {
        let text = match end {
            StationEnd::Updated { version } => format!("updated to {version}"),
            StationEnd::RolledBack { cause } => format!("rolled back ({cause})"),
            StationEnd::Failed { detail } => format!("failed ({detail})"),
            StationEnd::OutsideWave { bucket, percent } => {
                format!("outside the wave (bucket {bucket}, rollout {percent}%)")
            }
            StationEnd::Refused { reason } => format!("refused the offer ({reason})"),
            StationEnd::Superseded { by } => format!("superseded by {by}"),
        };
        match &self.mode {
            Mode::Bars(_) => {
                if let Some(bar) = self.bars.get(id) {
                    if matches!(end, StationEnd::Updated { .. }) {
                        bar.set_position(bar.length().unwrap_or(100));
                    }
                    bar.finish_with_message(text);
                }
            }
            Mode::Lines => println!("{id:>10}  => {text}"),
            Mode::Quiet => {}
        }
    }

    /// Leaves the bars on screen as they are.
    pub fn finish(&mut self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.abandon();
            }
        }
    }
}

/// How long events that trail the last state are still shown after every station ended.
const TRAILING_EVENTS: Duration = Duration::from_millis(300);

/// A subscription to every station's state and events, opened before an offer goes out so
/// that no step is missed. It runs on a `fleet-mqtt` session: a watch that lasts an hour
/// survives a broker restart (reconnect with backoff and jitter, then resubscribe; the retained
/// states come again and the newest per station wins).
#[derive(Debug)]
pub struct Watcher {
    pub(crate) addr: BrokerAddr,
    pub(crate) session: fleet_mqtt::Session,
    pub(crate) events: tokio::sync::mpsc::Receiver<fleet_mqtt::SessionEvent>,
    /// How many of the first queued events arrived before the subscriptions were confirmed
    /// (the retained burst, on a broker that delivers in order).
    pub(crate) initial: usize,
}

impl Watcher {
    /// Connects and subscribes; fails at once when the broker cannot be reached the first
    /// time. Returns when the broker has the subscriptions (seen by a marker message sent to
    /// itself through them, or after 2 s if the marker cannot come back).
    pub async fn subscribe(addr: &BrokerAddr) -> Result<Self, ConnectionError> {
        Self::subscribe_to(
            addr,
            &[
                topic::filter::ALL_STATES.to_owned(),
                topic::filter::ALL_EVENTS.to_owned(),
                topic::filter::ALL_HEALTH.to_owned(),
            ],
        )
        .await
    }

    /// [`Watcher::subscribe`] to `filters`.
    pub(crate) async fn subscribe_to(
        addr: &BrokerAddr,
        filters: &[String],
    ) -> Result<Self, ConnectionError> {
        use fleet_mqtt::SessionEvent;
        let timeout = Duration::from_secs(10);
        // Plain or TLS as every other connection to this broker (`--tls-ca` ...).
        let config = crate::connection::session_config(addr, "fleetctl-watch");
        let sync_topic = format!("{}/{}", crate::connection::SYNC_PREFIX, config.client_id);
        let (session, mut events) = crate::connection::start_session(addr, config, timeout).await?;
        let lost = |reason: String| ConnectionError::Connect {
            addr: addr.clone(),
            reason,
        };
        let mut all = filters.to_vec();
        all.push(sync_topic.clone());
        session
            .subscribe_many(&all)
            .await
            .map_err(|e| lost(e.to_string()))?;
        // The subscriptions went out in one request: once the marker comes back through one of
        // them, all are in place. Messages read meanwhile are kept for the watch.
        // A broker that handles subscriptions apart from publications (rumqttd) may let a
        // marker overtake the SUBSCRIBE: send it again every 100 ms until one comes back.
        let nonce = format!("{:016x}", rand::random::<u64>()).into_bytes();
        let mut held = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut resend = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = resend.tick() => {
                    session
                        .publish(&sync_topic, nonce.clone(), false)
                        .await
                        .map_err(|e| lost(e.to_string()))?;
                }
                ev = tokio::time::timeout_at(deadline, events.recv()) => match ev {
                    Err(_) | Ok(None) => break,
                    Ok(Some(SessionEvent::Message(m))) if m.topic == sync_topic => {
                        if m.payload[..] == nonce[..] {
                            break;
                        }
                    }
                    Ok(Some(ev)) => held.push(ev),
                },
            }
        }
        // Markers still in flight are dropped by the watch loop (not a fleet topic).
        // Give back what arrived before the marker, in order, ahead of everything else.
        let (tx, rx) = tokio::sync::mpsc::channel(held.len().max(1) + WATCH_QUEUE);
        let initial = held.len();
        for ev in held {
            let _ = tx.try_send(ev);
        }
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if tx.send(ev).await.is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            addr: addr.clone(),
            session,
            events: rx,
            initial,
        })
    }

    /// Follows `opts.update_id` until every station ended, `opts.timeout`, or `stop`
    /// resolves (Ctrl-C in the binary).
    pub async fn run(
        mut self,
        opts: &WatchOptions,
        ui: &mut Ui,
        stop: impl Future<Output = ()>,
    ) -> Result<WatchSummary, ConnectionError> {
        let summary = follow(&self.addr, &mut self.events, opts, ui, stop).await;
        let _ = self.session.disconnect().await;
        summary
    }
}

/// Events queued between the session and the watch loop.
const WATCH_QUEUE: usize = 256;

/// [`Watcher::subscribe`] then [`Watcher::run`].
pub async fn watch(
    addr: &BrokerAddr,
    opts: &WatchOptions,
    ui: &mut Ui,
    stop: impl Future<Output = ()>,
) -> Result<WatchSummary, ConnectionError> {
    Watcher::subscribe(addr).await?.run(opts, ui, stop).await
}

async fn follow(
    addr: &BrokerAddr,
    events: &mut tokio::sync::mpsc::Receiver<fleet_mqtt::SessionEvent>,
    opts: &WatchOptions,
    ui: &mut Ui,
    stop: impl Future<Output = ()>,
) -> Result<WatchSummary, ConnectionError> {
    let started = Instant::now();
    let deadline = started + opts.timeout;
    let mut summary = WatchSummary::default();
    let mut participants: BTreeSet<DeviceId> = opts.devices.clone().unwrap_or_default();
    if let Some(devs) = &opts.devices {
        for d in devs {
            ui.station(d);
        }
    }
    let mut last_seq: BTreeMap<DeviceId, u64> = BTreeMap::new();
    let mut last_problems: BTreeMap<DeviceId, Vec<fleet_core::health::Problem>> = BTreeMap::new();
    let mut last_new_participant = Instant::now();
    let mut ended_at: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let all_ended =
            !participants.is_empty() && participants.iter().all(|d| summary.ends.contains_key(d));
        let settled = opts.devices.is_some() || last_new_participant.elapsed() >= opts.settle;
        let now = Instant::now();
        if all_ended && settled {
            // Show the events that trail the final states, then stop.
            match ended_at {
                None => ended_at = Some(now),
                Some(t) if now.duration_since(t) >= TRAILING_EVENTS => break,
                Some(_) => {}
            }
        } else {
            ended_at = None;
        }
        if now >= deadline {
            summary.timed_out = !all_ended;
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        let event = tokio::select! {
            e = tokio::time::timeout(wait, events.recv()) => e,
            () = &mut stop => {
                summary.interrupted = true;
                break;
            }
        };
        let msg = match event {
            Err(_) => continue,
            Ok(None) => {
                return Err(ConnectionError::Lost {
                    addr: addr.clone(),
                    reason: "the MQTT session ended".into(),
                });
            }
            Ok(Some(fleet_mqtt::SessionEvent::Disconnected { reason, retry_in })) => {
                ui.println(&format!(
                    "watch: broker connection lost ({reason}); retrying in {:.1} s",
                    retry_in.as_secs_f64()
                ));
                continue;
            }
            Ok(Some(fleet_mqtt::SessionEvent::Connected)) => {
                ui.println("watch: reconnected to the broker");
                continue;
            }
            Ok(Some(fleet_mqtt::SessionEvent::TopicSkipped {
                topic,
                size,
                retry_in,
                ..
            })) => {
                ui.println(&format!(
                    "watch: {topic} holds a message of {size} bytes, above the transport \
                     ceiling; skipped for {:.1} s (clear it on the broker)",
                    retry_in.as_secs_f64()
                ));
                continue;
            }
            Ok(Some(fleet_mqtt::SessionEvent::Message(m))) => m,
        };
        match Topic::parse(&msg.topic) {
            Ok(Topic::DeviceState(id)) => {
                let Ok(s) = decode_state(&msg.payload, &opts.limits) else {
                    continue;
                };
                if s.device_id != id {
                    continue;
                }
                // Retained and live copies may arrive out of order: keep the newest.
                if last_seq.get(&id).is_some_and(|&prev| s.seq <= prev) {
                    continue;
                }
                last_seq.insert(id.clone(), s.seq);
                let involved = s.update_id.as_ref() == Some(&opts.update_id)
                    || s.last_outcome.as_ref().and_then(outcome_update) == Some(&opts.update_id);
                let expected = opts.devices.as_ref().is_none_or(|d| d.contains(&id));
                if !expected {
                    continue;
                }
                if involved && participants.insert(id.clone()) {
                    last_new_participant = Instant::now();
                }
                if participants.contains(&id) {
                    ui.state(&s);
                }
                match end_from_state(&s, &opts.update_id) {
                    Some(end) if summary.ends.get(&id) != Some(&end) => {
                        ui.end(&id, &end);
                        summary.ends.insert(id, end);
                    }
                    Some(_) => {}
                    None if involved => {
                        summary.ends.remove(&id);
                    }
                    None => {}
                }
            }
            Ok(Topic::DeviceEvents(id)) => {
                let Ok(e) = decode_event(&msg.payload, &opts.limits) else {
                    continue;
                };
                if e.device_id != id || opts.devices.as_ref().is_some_and(|d| !d.contains(&id)) {
                    continue;
                }
                // Events published after the last transition of an update (committed, rolled
                // back) may carry no update id: a participant's are still about this update.
                let ours = e.update_id.as_ref() == Some(&opts.update_id)
                    || (e.update_id.is_none() && participants.contains(&id));
                let refusal = match &e.event {
                    Report::OfferRejected {
                        update_id: Some(u),
                        reason,
                        ..
                    } if *u == opts.update_id => end_from_refusal(reason),
                    _ => None,
                };
                let about_it = matches!(
                    &e.event,
                    Report::OfferRejected { update_id: Some(u), .. } if *u == opts.update_id
                );
                if !(ours || about_it) {
                    continue;
                }
                if participants.insert(id.clone()) {
                    last_new_participant = Instant::now();
                }
                ui.event(&e);
                if let Some(end) = refusal
                    && !summary.ends.contains_key(&id)
                {
                    ui.end(&id, &end);
                    summary.ends.insert(id, end);
                }
            }
            Ok(Topic::DeviceHealth(id)) if !msg.payload.is_empty() => {
                let Ok(h) = fleet_proto::health::decode(&msg.payload) else {
                    continue;
                };
                if h.device_id != id || !participants.contains(&id) {
                    continue;
                }
                // A message that just arrived: the station is heard from now.
                let problems = fleet_core::health::decide_problems(
                    &h.signals(Some(0)),
                    &fleet_core::health::ProblemPolicy::default(),
                );
                if let Some(line) = health_change(&id, last_problems.get(&id), &problems) {
                    ui.println(&line);
                }
                last_problems.insert(id, problems);
            }
            _ => {}
        }
    }
    ui.finish();
    summary.unfinished = participants
        .into_iter()
        .filter(|d| !summary.ends.contains_key(d))
        .collect();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_lines_appear_only_when_a_stations_problems_change() {
        use fleet_core::health::Problem;
        let id = DeviceId::new("stn-1").expect("id");
        assert_eq!(health_change(&id, None, &[]), None);
        assert_eq!(
            health_change(&id, None, &[Problem::SilentMicrophone]).as_deref(),
            Some("stn-1  health: silent-microphone")
        );
        let before = vec![Problem::SilentMicrophone];
        assert_eq!(
            health_change(&id, Some(&before), &[Problem::SilentMicrophone]),
            None
        );
        assert_eq!(
            health_change(&id, Some(&before), &[]).as_deref(),
            Some("stn-1  health: healthy (was silent-microphone)")
        );
    }

    #[test]
    fn a_refused_offer_ends_a_station_unless_it_was_only_busy() {
        let table = [
            (
                RejectReason::Busy {
                    phase: PhaseName::Installing,
                },
                None,
            ),
            (
                RejectReason::NotInWave {
                    bucket: 70,
                    percent: 50,
                },
                Some(StationEnd::OutsideWave {
                    bucket: 70,
                    percent: 50,
                }),
            ),
        ];
        for (reason, want) in table {
            assert_eq!(end_from_refusal(&reason), want, "{reason:?}");
        }
        let replay = RejectReason::Replayed {
            sequence: 3,
            last_accepted: 5,
        };
        assert!(matches!(
            end_from_refusal(&replay),
            Some(StationEnd::Refused { reason }) if reason.contains("replayed")
        ));
    }

    #[test]
    fn a_delta_shows_its_bytes_saved_and_a_full_bundle_its_reason() {
        use fleet_core::update::BundleId;
        let b = BundleId::from_bytes([1; 32]);
        let delta = describe_event(&Report::Delivered {
            bundle_id: b,
            transport: DeliveryKind::Delta,
            received_bytes: 100,
            expected_bytes: 100,
            bundle_bytes: 1000,
        })
        .expect("described");
        assert!(delta.contains("900 bytes, 90.0%"), "{delta}");
        let full = describe_event(&Report::TransportChosen {
            bundle_id: b,
            transport: DeliveryKind::Full,
            reason: Some(FullReason::NoBase),
            expected_bytes: 1000,
            bundle_bytes: 1000,
        })
        .expect("described");
        assert!(full.ends_with("no-base"), "{full}");
        let compressed = describe_event(&Report::TransportChosen {
            bundle_id: b,
            transport: DeliveryKind::Compressed,
            reason: Some(FullReason::NoBase),
            expected_bytes: 730,
            bundle_bytes: 1000,
        })
        .expect("described");
        assert!(
            compressed.contains("compressed") && compressed.contains("270 bytes, 27.0%"),
            "{compressed}"
        );
    }
}
