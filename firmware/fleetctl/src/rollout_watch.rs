//! `watch --rollout`: a live view of one rollout.
//!
//! The watch subscribes once to every station's state, presence and events and to the rollout
//! records, keeps the newest message per station, and at most every `refresh` counts the
//! rollout with the same code as `rollout status` ([`crate::rollout::view_with`] over
//! [`crate::status::rows`]), adding what only a live watch sees: stations whose offer a halt,
//! freeze or pin holds back (their refusal events). It ends when the rollout completes or
//! halts, at the timeout, or when `stop` resolves (Ctrl-C in the binary). Like the update
//! watch it rides out broker restarts on a `fleet-mqtt` session. A broker may drop messages
//! for a subscriber that falls behind, so every [`RESYNC_EVERY`] and once at the end the
//! watch also reads every retained state afresh (as `rollout status` does) and keeps the
//! newest per station: the last view is exact.
//!
//! Output ([`RolloutPrinter`]): on a terminal the view is redrawn in place; otherwise (logs,
//! pipes) one line per change of the current wave's counts, one per new failure and one per
//! status change; with `--json` one JSON object per line for every changed view.
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use fleet_core::ids::{DeviceId, UpdateId};
use fleet_core::rollout::Status;
use fleet_proto::payload::{decode_event, decode_state};
use fleet_proto::rollout::{RolloutRecord, filter as rfilter, parse_rollout_topic};
use fleet_proto::topic::{self, Topic};
use fleet_proto::{Limits, TrustedKeys};
use serde::Serialize;
use tokio::time::Instant;

use crate::clock::unix_now;
use crate::connection::{BrokerAddr, ConnectionError, Message};
use crate::rollout::{self, RolloutView, describe_halt};
use crate::stage::{StageCounts, hold_change};
use crate::status::{self, Heard, StationRow};
use crate::watch::Watcher;

/// Most stations one rollout watch keeps (as `status`).
pub const MAX_STATIONS: usize = 100_000;
/// Most rollout records one watch keeps (as `rollout status`).
const MAX_ROLLOUTS: usize = 1_000;
/// Without news, the view is still recounted this often (stations turn stale with time).
const RECOUNT_EVERY: Duration = Duration::from_secs(5);
/// Every retained state is read afresh this often (and once at the end): a broker drops
/// messages for a subscriber that falls behind (mosquitto's `max_queued_messages`), so the
/// live stream alone may miss a station's newest state on a large, busy fleet.
const RESYNC_EVERY: Duration = Duration::from_secs(30);

/// What to watch.
#[derive(Debug, Clone)]
pub struct RolloutWatchOptions {
    /// The rollout; `None`: the only one not completed.
    pub update: Option<UpdateId>,
    /// Verify the rollout record with these keys; `None`: read it unverified (display only).
    pub trusted: Option<TrustedKeys>,
    /// A station whose state is older than this is not heard from.
    pub stale_after: Duration,
    /// The view is recounted at most this often.
    pub refresh: Duration,
    /// Give up after this long.
    pub timeout: Duration,
    pub limits: Limits,
}

impl RolloutWatchOptions {
    /// Defaults: the only open rollout, unverified, stale after 10 min, refreshed every
    /// 500 ms, for a day.
    #[must_use]
    pub fn new(update: Option<UpdateId>) -> Self {
        Self {
            update,
            trusted: None,
            stale_after: Duration::from_secs(600),
            refresh: Duration::from_millis(500),
            timeout: Duration::from_secs(24 * 3600),
            limits: Limits::DEFAULT,
        }
    }
}

/// Why a rollout watch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutEnd {
    Completed,
    Halted,
    TimedOut,
    Interrupted,
}

impl RolloutEnd {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutEnd::Completed => "completed",
            RolloutEnd::Halted => "halted",
            RolloutEnd::TimedOut => "timed out",
            RolloutEnd::Interrupted => "interrupted",
        }
    }
}

/// Why a rollout watch could not run.
#[derive(Debug, thiserror::Error)]
pub enum RolloutWatchError {
    #[error("unable to find rollout {what} on broker {addr}")]
    NotFound { what: String, addr: BrokerAddr },
    #[error(
        "unable to pick a rollout on broker {addr}: {open} are open, name one with --rollout ID"
    )]
    Ambiguous { open: usize, addr: BrokerAddr },
    #[error(transparent)]
    Broker(#[from] ConnectionError),
}

impl RolloutWatchError {
    /// True when the operator's input is at fault (exit code 2).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(self, RolloutWatchError::Ambiguous { .. })
    }
}

/// How a rollout watch ended, with the last view.
#[derive(Debug, Clone)]
pub struct RolloutWatchSummary {
    pub end: RolloutEnd,
    pub view: RolloutView,
    /// Views shown (each one differed from the one before).
    pub views: u64,
}

/// Where views go.
pub trait RolloutSink {
    /// A view that differs from the previous one; `rows` are the stations it was counted from.
    fn view(&mut self, view: &RolloutView, rows: &[StationRow]);
    /// A remark about the watch itself (connection lost, reconnected).
    fn note(&mut self, line: &str);
    /// The watch ended.
    fn end(&mut self, summary: &RolloutWatchSummary, rows: &[StationRow]);
}

/// The newest word from every station, bounded by [`MAX_STATIONS`].
#[derive(Debug, Default)]
struct Fleet {
    /// Newest state per station (by the station's sequence) and its sequence.
    states: BTreeMap<DeviceId, (u64, Message)>,
    presence: BTreeMap<DeviceId, Message>,
    /// Stations whose newest word on the rollout's update is a refusal for a control.
    refused: BTreeSet<DeviceId>,
}

impl Fleet {
    fn room_for(&self, id: &DeviceId) -> bool {
        self.states.contains_key(id)
            || self.presence.contains_key(id)
            || self.states.len().max(self.presence.len()) < MAX_STATIONS
    }

    /// Takes a message; true when it changed what the view counts.
    fn take(&mut self, m: Message, update: Option<&UpdateId>, limits: &Limits) -> bool {
        match Topic::parse(&m.topic) {
            Ok(Topic::DeviceState(id)) => {
                let Ok(s) = decode_state(&m.payload, limits) else {
                    return false;
                };
                if s.device_id != id || !self.room_for(&id) {
                    return false;
                }
                // Retained and live copies may arrive out of order: keep the newest.
                if self.states.get(&id).is_some_and(|(seq, _)| s.seq <= *seq) {
                    return false;
                }
                self.states.insert(id, (s.seq, m));
                true
            }
            Ok(Topic::DevicePresence(id)) => {
                if !self.room_for(&id) {
                    return false;
                }
                self.presence.insert(id, m);
                true
            }
            Ok(Topic::DeviceEvents(id)) => {
                let (Some(u), Ok(e)) = (update, decode_event(&m.payload, limits)) else {
                    return false;
                };
                if e.device_id != id || !self.room_for(&id) {
                    return false;
                }
                let about = e.update_id.as_ref().is_none_or(|x| x == u);
                match hold_change(&e.event, u) {
                    Some(true) => self.refused.insert(id),
                    Some(false) if about => self.refused.remove(&id),
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// Takes every message of a fresh read of the retained states and presence.
    fn take_all(&mut self, msgs: Vec<Message>, update: Option<&UpdateId>, limits: &Limits) {
        for m in msgs {
            self.take(m, update, limits);
        }
    }

    fn rows(&self, stale_after: Duration, limits: &Limits) -> Vec<StationRow> {
        let msgs: Vec<Message> = self
            .states
            .values()
            .map(|(_, m)| m.clone())
            .chain(self.presence.values().cloned())
            .collect();
        status::rows(&msgs, stale_after, unix_now(), limits)
    }
}

fn message(m: fleet_mqtt::Message) -> Message {
    Message {
        topic: m.topic,
        payload: m.payload.to_vec(),
        retain: m.retain,
    }
}

/// The rollout a watch follows: the named one, or the only one not completed.
fn pick(
    records: &BTreeMap<UpdateId, RolloutRecord>,
    update: Option<&UpdateId>,
    addr: &BrokerAddr,
) -> Result<UpdateId, RolloutWatchError> {
    if let Some(u) = update {
        return if records.contains_key(u) {
            Ok(u.clone())
        } else {
            Err(RolloutWatchError::NotFound {
                what: u.to_string(),
                addr: addr.clone(),
            })
        };
    }
    let open: Vec<&UpdateId> = records
        .values()
        .filter(|r| r.progress.status != Status::Completed)
        .map(|r| &r.update_id)
        .collect();
    match open.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(RolloutWatchError::NotFound {
            what: "(any open)".into(),
            addr: addr.clone(),
        }),
        many => Err(RolloutWatchError::Ambiguous {
            open: many.len(),
            addr: addr.clone(),
        }),
    }
}

/// Subscribes to the rollouts and every station's state, presence and events.
pub async fn subscribe(addr: &BrokerAddr) -> Result<Watcher, ConnectionError> {
    Watcher::subscribe_to(
        addr,
        &[
            topic::filter::ALL_STATES.to_owned(),
            topic::filter::ALL_PRESENCE.to_owned(),
            topic::filter::ALL_EVENTS.to_owned(),
            rfilter::ALL_ROLLOUTS.to_owned(),
        ],
    )
    .await
}

/// Watches a rollout until it completes or halts, `opts.timeout`, or `stop`.
pub async fn watch_rollout<S: RolloutSink>(
    addr: &BrokerAddr,
    opts: &RolloutWatchOptions,
    sink: &mut S,
    stop: impl Future<Output = ()>,
) -> Result<RolloutWatchSummary, RolloutWatchError> {
    let watcher = subscribe(addr).await?;
    follow(watcher, opts, sink, stop).await
}

/// Follows a rollout on a watcher made by [`subscribe`].
pub async fn follow<S: RolloutSink>(
    mut w: Watcher,
    opts: &RolloutWatchOptions,
    sink: &mut S,
    stop: impl Future<Output = ()>,
) -> Result<RolloutWatchSummary, RolloutWatchError> {
    let result = run(&mut w, opts, sink, stop).await;
    let _ = w.session.disconnect().await;
    result
}

async fn run<S: RolloutSink>(
    w: &mut Watcher,
    opts: &RolloutWatchOptions,
    sink: &mut S,
    stop: impl Future<Output = ()>,
) -> Result<RolloutWatchSummary, RolloutWatchError> {
    use fleet_mqtt::SessionEvent;
    let deadline = Instant::now() + opts.timeout;
    let mut fleet = Fleet::default();
    let mut records: BTreeMap<UpdateId, RolloutRecord> = BTreeMap::new();
    let trusted = opts.trusted.as_ref();
    let lost = |addr: &BrokerAddr| {
        RolloutWatchError::Broker(ConnectionError::Lost {
            addr: addr.clone(),
            reason: "the MQTT session ended".into(),
        })
    };
    // Keeps the newer revision of a record; true when it is new.
    let take_record = |records: &mut BTreeMap<UpdateId, RolloutRecord>, m: &Message| -> bool {
        let Some(rec) = rollout::open_record(&m.topic, &m.payload, trusted, &opts.limits) else {
            return false;
        };
        if records
            .get(&rec.update_id)
            .is_some_and(|r| r.revision >= rec.revision)
            || (records.len() >= MAX_ROLLOUTS && !records.contains_key(&rec.update_id))
        {
            return false;
        }
        records.insert(rec.update_id.clone(), rec);
        true
    };
    // The retained burst first: it tells which rollout to follow.
    let mut early = Vec::new();
    for _ in 0..w.initial {
        match w.events.recv().await {
            Some(SessionEvent::Message(m)) if parse_rollout_topic(&m.topic).is_some() => {
                take_record(&mut records, &message(m));
            }
            Some(SessionEvent::Message(m)) => early.push(message(m)),
            Some(_) => {}
            None => return Err(lost(&w.addr)),
        }
    }
    let update = pick(&records, opts.update.as_ref(), &w.addr)?;
    for m in early {
        fleet.take(m, Some(&update), &opts.limits);
    }
    let mut refresh = tokio::time::interval(opts.refresh.max(Duration::from_millis(10)));
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut counted_at = Instant::now();
    let mut last: Option<(RolloutView, String)> = None;
    let mut views = 0u64;
    let mut rows = Vec::new();
    let verified = trusted.is_some();
    let read_all = {
        let addr = w.addr.clone();
        move || {
            let addr = addr.clone();
            async move {
                let filters = [
                    topic::filter::ALL_STATES.to_owned(),
                    topic::filter::ALL_PRESENCE.to_owned(),
                ];
                crate::connection::collect_retained(
                    &addr,
                    &filters,
                    crate::publish::RETAINED_QUIET,
                    2 * MAX_STATIONS,
                )
                .await
            }
        }
    };
    let mut resync = tokio::time::interval_at(Instant::now() + RESYNC_EVERY, RESYNC_EVERY);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One re-read at a time, off the loop so the live stream keeps flowing.
    let mut reading: Option<tokio::task::JoinHandle<Result<Vec<Message>, ConnectionError>>> = None;
    tokio::pin!(stop);
    let end = loop {
        tokio::select! {
            () = &mut stop => break RolloutEnd::Interrupted,
            () = tokio::time::sleep_until(deadline) => break RolloutEnd::TimedOut,
            _ = resync.tick(), if reading.is_none() => {
                reading = Some(tokio::spawn(read_all()));
            }
            done = async { reading.as_mut().expect("guarded").await }, if reading.is_some() => {
                reading = None;
                match done {
                    Ok(Ok(msgs)) => {
                        fleet.take_all(msgs, Some(&update), &opts.limits);
                        dirty = true;
                    }
                    // The live stream goes on; the next round reads again.
                    Ok(Err(e)) => sink.note(&format!("watch: unable to re-read the states: {e}")),
                    Err(_) => {}
                }
            }
            _ = refresh.tick() => {
                if !dirty && counted_at.elapsed() < RECOUNT_EVERY {
                    continue;
                }
                let Some(rec) = records.get(&update) else { continue };
                rows = fleet.rows(opts.stale_after, &opts.limits);
                let view = rollout::view_with(rec, &rows, verified, Some(&fleet.refused));
                dirty = false;
                counted_at = Instant::now();
                let key = serde_json::to_string(&view).unwrap_or_default();
                if last.as_ref().is_none_or(|(_, k)| *k != key) {
                    sink.view(&view, &rows);
                    views += 1;
                }
                let status = rec.progress.status.clone();
                last = Some((view, key));
                match status {
                    Status::Completed => break RolloutEnd::Completed,
                    Status::Halted { .. } => break RolloutEnd::Halted,
                    Status::Running => {}
                }
            }
            ev = w.events.recv() => match ev {
                None => return Err(lost(&w.addr)),
                Some(SessionEvent::Disconnected { reason, retry_in }) => sink.note(&format!(
                    "watch: broker connection lost ({reason}); retrying in {:.1} s",
                    retry_in.as_secs_f64()
                )),
                Some(SessionEvent::Connected) => sink.note("watch: reconnected to the broker"),
                Some(SessionEvent::TopicSkipped { topic, size, retry_in, .. }) => sink.note(&format!(
                    "watch: {topic} holds a message of {size} bytes, above the transport ceiling; \
                     skipped for {:.1} s (clear it on the broker)",
                    retry_in.as_secs_f64()
                )),
                Some(SessionEvent::Message(m)) => {
                    let m = message(m);
                    if parse_rollout_topic(&m.topic).is_some() {
                        dirty |= take_record(&mut records, &m);
                    } else {
                        dirty |= fleet.take(m, Some(&update), &opts.limits);
                    }
                }
            },
        }
    };
    if let Some(r) = reading.take() {
        r.abort();
    }
    // The last view from every retained state read afresh (not after Ctrl-C: the operator
    // wants out), so that messages the broker dropped do not skew it.
    let mut fresh = false;
    if end != RolloutEnd::Interrupted {
        match read_all().await {
            Ok(msgs) => {
                fleet.take_all(msgs, Some(&update), &opts.limits);
                fresh = true;
            }
            Err(e) => sink.note(&format!("watch: unable to re-read the states: {e}")),
        }
    }
    let view = match last {
        Some((v, _)) if !fresh => v,
        last => {
            let rec = records
                .get(&update)
                .ok_or_else(|| RolloutWatchError::NotFound {
                    what: update.to_string(),
                    addr: w.addr.clone(),
                })?;
            rows = fleet.rows(opts.stale_after, &opts.limits);
            let view = rollout::view_with(rec, &rows, verified, Some(&fleet.refused));
            let key = serde_json::to_string(&view).unwrap_or_default();
            if last.is_some_and(|(_, k)| k != key) {
                sink.view(&view, &rows);
                views += 1;
            }
            view
        }
    };
    let summary = RolloutWatchSummary { end, view, views };
    sink.end(&summary, &rows);
    Ok(summary)
}

/// How the printer shows views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Redraw the whole view in place (a terminal).
    Redraw,
    /// One line per change (logs, pipes).
    Lines,
    /// One JSON object per line for every changed view.
    Json,
}

/// One line of `watch --rollout --json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct JsonLine<'a> {
    /// Unix seconds of the count.
    pub at: i64,
    /// Set on the last line only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<RolloutEnd>,
    pub rollout: &'a RolloutView,
}

/// Prints views to `out` in a [`Style`].
#[derive(Debug)]
pub struct RolloutPrinter<W: Write> {
    style: Style,
    out: W,
    /// Lines drawn by the last redraw.
    drawn: usize,
    /// Line mode: the last header and counts line printed, and the failures printed.
    header: String,
    counts: String,
    failures: BTreeSet<DeviceId>,
}

impl<W: Write> RolloutPrinter<W> {
    pub fn new(style: Style, out: W) -> Self {
        Self {
            style,
            out,
            drawn: 0,
            header: String::new(),
            counts: String::new(),
            failures: BTreeSet::new(),
        }
    }

    /// The writer back (tests).
    pub fn into_inner(self) -> W {
        self.out
    }

    fn write(&mut self, text: &str) {
        // A closed pipe must not stop the watch: output is best effort.
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    fn json(&mut self, view: &RolloutView, end: Option<RolloutEnd>) {
        let line = JsonLine {
            at: unix_now(),
            end,
            rollout: view,
        };
        if let Ok(s) = serde_json::to_string(&line) {
            self.write(&format!("{s}\n"));
        }
    }

    fn lines(&mut self, view: &RolloutView) {
        let header = header_line(view);
        if header != self.header {
            self.write(&format!("{header}\n"));
            self.header = header;
        }
        if let Some(w) = view.waves.get(view.wave.saturating_sub(1)) {
            let counts = format!(
                "wave {}/{}: {}; not heard from {}",
                w.number,
                view.waves.len(),
                counts_text(&w.states),
                w.not_heard_count
            );
            if counts != self.counts {
                self.write(&format!("{counts}\n"));
                self.counts = counts;
            }
        }
        let mut new = Vec::new();
        for w in &view.waves {
            for (d, why) in &w.failures {
                if self.failures.len() < MAX_STATIONS && self.failures.insert(d.clone()) {
                    new.push(format!("{d:>10}  FAILED: {why}\n"));
                }
            }
        }
        for line in new {
            self.write(&line);
        }
    }

    fn redraw(&mut self, view: &RolloutView, rows: &[StationRow]) {
        let block = render_view(view, rows);
        let mut s = String::new();
        if self.drawn > 0 {
            // Up to the first line of the last drawing, then clear to the end of the screen.
            s.push_str(&format!("\x1b[{}F\x1b[J", self.drawn));
        }
        s.push_str(&block);
        self.drawn = block.lines().count();
        self.write(&s);
    }
}

impl<W: Write> RolloutSink for RolloutPrinter<W> {
    fn view(&mut self, view: &RolloutView, rows: &[StationRow]) {
        match self.style {
            Style::Json => self.json(view, None),
            Style::Lines => self.lines(view),
            Style::Redraw => self.redraw(view, rows),
        }
    }

    fn note(&mut self, line: &str) {
        match self.style {
            // Notes go to stderr so that stdout stays JSON lines.
            Style::Json => eprintln!("{line}"),
            Style::Lines => self.write(&format!("{line}\n")),
            Style::Redraw => {
                self.write(&format!("{line}\n"));
                // The note now sits below the drawing: draw afresh underneath.
                self.drawn = 0;
            }
        }
    }

    fn end(&mut self, summary: &RolloutWatchSummary, rows: &[StationRow]) {
        match self.style {
            Style::Json => self.json(&summary.view, Some(summary.end)),
            Style::Lines => {
                self.lines(&summary.view);
                let block = render_view(&summary.view, rows);
                self.write(&block);
            }
            Style::Redraw => self.redraw(&summary.view, rows),
        }
        if self.style != Style::Json {
            let tail = match (&summary.end, &summary.view.halt_reason) {
                (RolloutEnd::Halted, Some(r)) => format!("HALTED: {}", describe_halt(r)),
                (end, _) => end.as_str().to_owned(),
            };
            self.write(&format!(
                "watch: rollout {} {tail}\n",
                summary.view.update_id
            ));
        }
    }
}

fn header_line(v: &RolloutView) -> String {
    let target = v
        .waves
        .get(v.wave.saturating_sub(1))
        .map_or_else(String::new, |w| format!(" ({})", w.spec));
    let status = match &v.halt_reason {
        Some(r) => format!("HALTED: {}", describe_halt(r)),
        None => v.status.clone(),
    };
    format!(
        "rollout {} ({} to group {}): wave {}/{}{target}, {status}{}",
        v.update_id,
        v.version,
        v.group,
        v.wave,
        v.waves.len(),
        if v.verified { "" } else { " [unverified]" },
    )
}

/// The stage counts in words, in the order a station goes through them.
#[must_use]
pub fn counts_text(c: &StageCounts) -> String {
    format!(
        "pending {}  downloading {}  installing {}  trial {}  committed {}  rolled-back {}  failed {}  held {}",
        c.pending,
        c.downloading,
        c.installing,
        c.trial,
        c.committed,
        c.rolled_back,
        c.failed,
        c.held
    )
}

/// Most stations named per list in the text view (the counts are complete).
const NAMED: usize = 10;

/// The whole view as text: the rollout, why it halted, and per wave its target, the stage
/// counts, the failures grouped by reason, and the stations not heard from (with how).
#[must_use]
pub fn render_view(v: &RolloutView, rows: &[StationRow]) -> String {
    use std::fmt::Write as _;
    let heard: BTreeMap<&DeviceId, &StationRow> = rows.iter().map(|r| (&r.device_id, r)).collect();
    let mut s = String::new();
    let _ = writeln!(s, "{}", header_line(v));
    let _ = writeln!(s, "  next: {}", v.next);
    for w in &v.waves {
        let current = w.number == v.wave;
        let _ = writeln!(
            s,
            "{} wave {}/{} {:<24} {:<15} members {}",
            if current { ">" } else { " " },
            w.number,
            v.waves.len(),
            w.spec,
            if w.offered {
                "offered"
            } else {
                "not offered yet"
            },
            w.tally.members
        );
        if w.tally.members == 0 {
            continue;
        }
        let _ = writeln!(s, "      {}", counts_text(&w.states));
        for r in &w.failure_reasons {
            let _ = writeln!(s, "      {} failed: {}", r.stations, r.reason);
        }
        if w.not_heard_count > 0 {
            let names: Vec<String> = w
                .not_heard
                .iter()
                .take(NAMED)
                .map(|d| match heard.get(d) {
                    Some(r) => match (r.heard, r.age_s) {
                        (Heard::Stale, Some(a)) => format!("{d} (stale, {a} s)"),
                        (h, _) => format!("{d} ({})", h.as_str().to_lowercase()),
                    },
                    None => format!("{d} (never)"),
                })
                .collect();
            let more = (w.not_heard_count as usize).saturating_sub(names.len());
            let _ = writeln!(
                s,
                "      not heard from {}: {}{}",
                w.not_heard_count,
                names.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
    let _ = writeln!(s, "  stations in no wave: {}", v.outside);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::ids::{GroupId, Version};
    use fleet_core::rollout::{HaltReason, Plan, Progress, WaveSpec};
    use fleet_core::update::{BundleId, RolloutPercent};
    use fleet_proto::rollout::RolloutBundle;

    fn record(status: Status) -> RolloutRecord {
        RolloutRecord {
            update_id: UpdateId::new("rel-2").expect("id"),
            revision: 3,
            plan: Plan {
                group: GroupId::new("field").expect("group"),
                waves: vec![
                    WaveSpec::Devices(vec![DeviceId::new("canary").expect("id")]),
                    WaveSpec::Percent(RolloutPercent::ALL),
                ],
                min_stations: 1,
                success_percent: 90,
                failure_percent: 20,
                wave_timeout_s: None,
                window: None,
            },
            bundle: RolloutBundle {
                bundle_id: BundleId::from_bytes([7; 32]),
                bundle_size: 10,
                version: Version::new(2, 0, 0),
                compatible: "fleet-sim".into(),
            },
            progress: Progress {
                wave: 0,
                wave_started_at: 0,
                status,
            },
            offer_sequence: 1,
            history: vec![],
        }
    }

    #[test]
    fn a_halted_view_says_why_and_names_the_canary_never_heard_from() {
        let halted = Status::Halted {
            reason: HaltReason::Operator {
                note: "storm coming".into(),
            },
        };
        let view = rollout::view_of(&record(halted), &[], false);
        let text = render_view(&view, &[]);
        assert!(
            text.contains("HALTED: halted by operator: storm coming"),
            "{text}"
        );
        assert!(text.contains("> wave 1/2 1 canary device(s)"), "{text}");
        assert!(text.contains("pending 1"), "{text}");
        assert!(text.contains("not heard from 1: canary (never)"), "{text}");

        let mut p = RolloutPrinter::new(Style::Json, Vec::new());
        p.view(&view, &[]);
        p.end(
            &RolloutWatchSummary {
                end: RolloutEnd::Halted,
                view: view.clone(),
                views: 1,
            },
            &[],
        );
        let out = String::from_utf8(p.into_inner()).expect("utf-8");
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["end"], "halted");
        assert_eq!(lines[0]["rollout"]["halt-reason"]["code"], "operator");
        assert_eq!(lines[0]["rollout"]["waves"][0]["states"]["pending"], 1);
    }

    #[test]
    fn line_mode_prints_a_change_once_and_each_failure_once() {
        let view = rollout::view_of(&record(Status::Running), &[], true);
        let mut p = RolloutPrinter::new(Style::Lines, Vec::new());
        p.view(&view, &[]);
        p.view(&view, &[]);
        let out = String::from_utf8(p.into_inner()).expect("utf-8");
        assert_eq!(out.lines().count(), 2, "{out}");
        assert!(
            out.starts_with(
                "rollout rel-2 (2.0.0 to group field): wave 1/2 (1 canary device(s)), running\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn a_terminal_view_is_redrawn_over_the_previous_one() {
        let view = rollout::view_of(&record(Status::Running), &[], true);
        let block = render_view(&view, &[]);
        let n = block.lines().count();
        let mut p = RolloutPrinter::new(Style::Redraw, Vec::new());
        p.view(&view, &[]);
        p.view(&view, &[]);
        let out = String::from_utf8(p.into_inner()).expect("utf-8");
        // The first drawing as is; the second goes back up over it and clears below.
        assert_eq!(out, format!("{block}\x1b[{n}F\x1b[J{block}"));
    }

    #[test]
    fn the_only_open_rollout_is_picked_and_several_need_a_name() {
        let addr = BrokerAddr {
            host: "127.0.0.1".into(),
            port: 1883,
        };
        let mut records = BTreeMap::new();
        assert!(matches!(
            pick(&records, None, &addr),
            Err(RolloutWatchError::NotFound { .. })
        ));
        let a = record(Status::Running);
        let mut done = record(Status::Completed);
        done.update_id = UpdateId::new("rel-1").expect("id");
        records.insert(a.update_id.clone(), a);
        records.insert(done.update_id.clone(), done);
        assert_eq!(
            pick(&records, None, &addr).expect("one open").as_str(),
            "rel-2"
        );
        let named = UpdateId::new("rel-1").expect("id");
        assert_eq!(pick(&records, Some(&named), &addr).expect("named"), named);
        let mut b = record(Status::Running);
        b.update_id = UpdateId::new("rel-3").expect("id");
        records.insert(b.update_id.clone(), b);
        let err = pick(&records, None, &addr).expect_err("two open");
        assert!(err.is_invalid_input(), "{err}");
    }
}
