//! `fleetctl rollout` and the operator controls (`freeze`, `pin`).
//!
//! A rollout is a [`RolloutRecord`] published signed and retained on
//! `fleet/v1/rollouts/{update-id}/state`: the plan, the bundle, the current wave and status,
//! and a short history. Every command reads it back (verifying it with the operator's key),
//! acts, and publishes the next revision, so the laptop that started a rollout can close and
//! another operator's `fleetctl` with the same key continues it. A command refuses to publish
//! over a revision newer than the one it read.
//!
//! - `start` pushes the bundle with the first wave's offer and publishes the record;
//! - `advance` offers the next wave (a new signed offer, higher sequence, wider percentage, or
//!   device offers for canaries) when the current wave met the plan, or always with `force`;
//! - `halt` publishes a signed control on the group's control topic naming the update:
//!   stations that have not started installing it do not (see `fleet_core::rollout::control`);
//! - `resume` lifts that halt and restarts the current wave's clock;
//! - [`tick`] is one round of the automatic rollout: count the current wave's stations from
//!   their retained state, ask `fleet_core::rollout::decide`, and halt, advance or complete.
//!   `fleetctl rollout run` repeats it.
use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use fleet_core::ids::{DeviceId, GroupId, UpdateId, Version};
use fleet_core::rollout::{
    Control, Decision, HaltReason, Plan, PlanError, Progress, Scope, Status, Tally, WaveSpec,
    decide,
};
use fleet_core::update::{Downgrade, Offer, RolloutPercent, wave};
use fleet_proto::Limits;
use fleet_proto::envelope::{self, Kind};
use fleet_proto::rollout::{
    RolloutBundle, RolloutRecord, control_topic, filter as rfilter, parse_rollout_topic,
    rollout_topic,
};
use serde::Serialize;

use crate::connection::{BrokerAddr, Connection, ConnectionError, collect_retained};
use crate::publish::{self, OfferBook, PublishError, PushRequest, RETAINED_QUIET};
use crate::stage::{Holds, ReasonCount, Stage, StageCounts, stage_of};
use crate::status::{self, Heard, StationRow};
use crate::target::Target;

/// How long the broker may take to acknowledge a rollout's publications.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Most rollout records one read takes in.
const MAX_ROLLOUTS: usize = 1_000;
/// Most failures listed per wave in a view (the counts are always complete).
const MAX_LISTED: usize = 50;

pub use crate::clock::unix_now;

/// Why a rollout command failed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("unable to read plan {path}: {detail}")]
    PlanFile {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("unable to find rollout {0} on the broker")]
    NotFound(String),
    #[error("unable to pick a rollout: {0} are running, name one with --update")]
    Ambiguous(usize),
    #[error("unable to start rollout {0}: it already exists (resume or advance it)")]
    Exists(UpdateId),
    #[error("unable to {what} rollout {update_id}: it is {status}")]
    WrongStatus {
        what: &'static str,
        update_id: UpdateId,
        status: String,
    },
    #[error("unable to advance rollout {update_id}: {why} (add --force to advance anyway)")]
    NotReady { update_id: UpdateId, why: String },
    #[error(
        "unable to save rollout {update_id}: another operator published revision {found} after {read}"
    )]
    Conflict {
        update_id: UpdateId,
        read: u64,
        found: u64,
    },
    #[error(transparent)]
    Push(#[from] PublishError),
    #[error(transparent)]
    Broker(#[from] ConnectionError),
}

impl RolloutError {
    /// True when the operator's input is at fault (exit code 2).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        match self {
            RolloutError::Plan(_) | RolloutError::PlanFile { .. } | RolloutError::Ambiguous(_) => {
                true
            }
            RolloutError::Push(p) => p.is_invalid_input(),
            _ => false,
        }
    }
}

/// Reads a plan from a TOML file (kebab-case keys, unknown keys refused) and validates it.
pub fn read_plan(path: &std::path::Path) -> Result<Plan, RolloutError> {
    let bad = |detail: String| RolloutError::PlanFile {
        path: path.to_owned(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let plan: Plan = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    plan.validate()?;
    Ok(plan)
}

fn ours(key: &SigningKey) -> fleet_proto::TrustedKeys {
    [key.verifying_key()].into_iter().collect()
}

/// Every rollout record on the broker: verified with `key` when given (records that do not
/// verify are left out), else read unverified.
pub async fn list(
    addr: &BrokerAddr,
    key: Option<&SigningKey>,
    limits: &Limits,
) -> Result<Vec<RolloutRecord>, RolloutError> {
    let msgs = collect_retained(
        addr,
        &[rfilter::ALL_ROLLOUTS.to_owned()],
        RETAINED_QUIET,
        MAX_ROLLOUTS,
    )
    .await?;
    let trusted = key.map(ours);
    Ok(msgs
        .iter()
        .filter_map(|m| open_record(&m.topic, &m.payload, trusted.as_ref(), limits))
        .collect())
}

/// The rollout record in a message on `fleet/v1/rollouts/{id}/state`: verified with `trusted`
/// when given (`None` when it does not verify), else read unverified. `None` for other topics
/// and for a record that names another update than its topic.
#[must_use]
pub fn open_record(
    topic: &str,
    payload: &[u8],
    trusted: Option<&fleet_proto::TrustedKeys>,
    limits: &Limits,
) -> Option<RolloutRecord> {
    let id = parse_rollout_topic(topic)?;
    let rec = match trusted {
        Some(t) => envelope::open_json::<RolloutRecord>(payload, Kind::Rollout, t, limits)
            .ok()
            .map(|o| o.value),
        None => {
            envelope::read_unverified_json::<RolloutRecord>(payload, Kind::Rollout, limits).ok()
        }
    };
    rec.filter(|r| r.update_id == id)
}

/// The keys that verify what `key` signed.
#[must_use]
pub fn trusted_by(key: &SigningKey) -> fleet_proto::TrustedKeys {
    ours(key)
}

/// The rollout named `update`, or the only one not completed.
pub async fn load(
    addr: &BrokerAddr,
    key: Option<&SigningKey>,
    update: Option<&UpdateId>,
    limits: &Limits,
) -> Result<RolloutRecord, RolloutError> {
    let all = list(addr, key, limits).await?;
    match update {
        Some(u) => all
            .into_iter()
            .find(|r| &r.update_id == u)
            .ok_or_else(|| RolloutError::NotFound(u.to_string())),
        None => {
            let open: Vec<RolloutRecord> = all
                .into_iter()
                .filter(|r| r.progress.status != Status::Completed)
                .collect();
            match open.len() {
                0 => Err(RolloutError::NotFound("(any open)".into())),
                1 => Ok(open.into_iter().next().expect("one element")),
                n => Err(RolloutError::Ambiguous(n)),
            }
        }
    }
}

/// Publishes `rec` as the next revision after `read_revision`, refusing when someone else
/// published in between.
async fn save(
    addr: &BrokerAddr,
    key: &SigningKey,
    rec: &mut RolloutRecord,
    read_revision: u64,
    limits: &Limits,
) -> Result<(), RolloutError> {
    if read_revision > 0 {
        let current = load(addr, Some(key), Some(&rec.update_id), limits).await?;
        if current.revision != read_revision {
            return Err(RolloutError::Conflict {
                update_id: rec.update_id.clone(),
                read: read_revision,
                found: current.revision,
            });
        }
    }
    rec.revision = read_revision + 1;
    let sealed = envelope::seal_json(Kind::Rollout, rec, key)
        .map_err(|e| RolloutError::NotFound(e.to_string()))?;
    let mut conn = Connection::open(addr, "fleetctl-rollout", ACK_TIMEOUT).await?;
    conn.publish(&rollout_topic(&rec.update_id), sealed, true)
        .await?;
    conn.close(ACK_TIMEOUT).await?;
    Ok(())
}

/// The offers of wave `index`: (target, percent).
fn wave_targets(plan: &Plan, index: usize) -> Vec<(Target, RolloutPercent)> {
    match &plan.waves[index] {
        WaveSpec::Devices(ds) => ds
            .iter()
            .map(|d| (Target::Device(d.clone()), RolloutPercent::ALL))
            .collect(),
        WaveSpec::Percent(p) => vec![(Target::Group(plan.group.clone()), *p)],
    }
}

fn core_target(t: &Target) -> fleet_core::update::Target {
    match t {
        Target::Device(d) => fleet_core::update::Target::Device(d.clone()),
        Target::Group(g) => fleet_core::update::Target::Group(g.clone()),
    }
}

/// Signs and publishes wave `index`'s offers (skipping `skip`), each with a fresh sequence
/// above everything on the broker.
async fn offer_wave(
    addr: &BrokerAddr,
    key: &SigningKey,
    rec: &mut RolloutRecord,
    index: usize,
    skip: Option<&Target>,
    limits: &Limits,
) -> Result<(), RolloutError> {
    let book = OfferBook::read(addr, limits).await?;
    let mut seq = book
        .highest_sequence
        .unwrap_or(0)
        .max(rec.offer_sequence)
        .checked_add(1)
        .ok_or(PublishError::SequenceExhausted(rec.offer_sequence))?;
    let mut conn = Connection::open(addr, "fleetctl-rollout", ACK_TIMEOUT).await?;
    for (target, percent) in wave_targets(&rec.plan, index) {
        if Some(&target) == skip {
            continue;
        }
        let offer = Offer {
            update_id: rec.update_id.clone(),
            sequence: seq,
            bundle_id: rec.bundle.bundle_id,
            bundle_size: rec.bundle.bundle_size,
            compatible: rec.bundle.compatible.clone(),
            version: rec.bundle.version.clone(),
            downgrade: Downgrade::Refuse,
            target: core_target(&target),
            rollout_percent: percent,
            issued_at: unix_now(),
            expires_at: None,
            manifest_hash: None,
        };
        let sealed = envelope::seal_json(Kind::Offer, &offer, key)
            .map_err(|e| RolloutError::NotFound(e.to_string()))?;
        conn.publish(&publish::offer_topic(&target), sealed, true)
            .await?;
        rec.offer_sequence = seq;
        seq = seq.saturating_add(1);
    }
    conn.close(ACK_TIMEOUT).await?;
    Ok(())
}

/// Starts a rollout: pushes the bundle with wave 0's offers and publishes the record. The
/// request's target and percentage are replaced by the plan's first wave.
pub async fn start(
    addr: &BrokerAddr,
    key: &SigningKey,
    plan: Plan,
    mut req: PushRequest,
) -> Result<RolloutRecord, RolloutError> {
    plan.validate()?;
    let first = wave_targets(&plan, 0)
        .into_iter()
        .next()
        .expect("a valid plan has a first wave with a target");
    req.target = first.0.clone();
    req.percent = first.1;
    let manifest = publish::describe_bundle(&req)?;
    let update_id = req
        .update_id
        .clone()
        .unwrap_or_else(|| publish::derived_update_id(&req.version, &manifest.bundle_id));
    let existing = list(addr, Some(key), &req.limits).await?;
    if existing.iter().any(|r| r.update_id == update_id) {
        return Err(RolloutError::Exists(update_id));
    }
    req.update_id = Some(update_id.clone());
    let pushed = publish::push(addr, key, &req, &mut |_| {}).await?;
    let now = unix_now();
    let mut rec = RolloutRecord {
        update_id,
        revision: 0,
        plan,
        bundle: RolloutBundle {
            bundle_id: pushed.bundle_id,
            bundle_size: pushed.size,
            version: req.version.clone(),
            compatible: req.compatible.clone(),
        },
        progress: Progress {
            wave: 0,
            wave_started_at: now,
            status: Status::Running,
        },
        offer_sequence: pushed.sequence,
        history: Vec::new(),
    };
    offer_wave(addr, key, &mut rec, 0, Some(&first.0), &req.limits).await?;
    rec.log(now, "started", None);
    save(addr, key, &mut rec, 0, &req.limits).await?;
    Ok(rec)
}

/// Changes the control of `scope` (read back, verified, then re-signed with the next
/// sequence). `change` edits the current control (a fresh one when there is none).
pub async fn change_control(
    addr: &BrokerAddr,
    key: &SigningKey,
    scope: Scope,
    limits: &Limits,
    change: impl FnOnce(&mut Control),
) -> Result<Control, RolloutError> {
    let t = control_topic(&scope);
    let msgs = collect_retained(addr, std::slice::from_ref(&t), RETAINED_QUIET, 4).await?;
    let trusted = ours(key);
    let current = msgs
        .iter()
        .find(|m| m.topic == t)
        .and_then(|m| {
            envelope::open_json::<Control>(&m.payload, Kind::Control, &trusted, limits).ok()
        })
        .map(|o| o.value)
        .filter(|c| c.scope == scope);
    let mut c = current.unwrap_or(Control {
        scope: scope.clone(),
        sequence: 0,
        freeze: false,
        halted: Vec::new(),
        pin: None,
        issued_at: 0,
    });
    change(&mut c);
    c.sequence = c.sequence.saturating_add(1);
    c.issued_at = unix_now();
    let sealed = envelope::seal_json(Kind::Control, &c, key)
        .map_err(|e| RolloutError::NotFound(e.to_string()))?;
    let mut conn = Connection::open(addr, "fleetctl-control", ACK_TIMEOUT).await?;
    conn.publish(&t, sealed, true).await?;
    conn.close(ACK_TIMEOUT).await?;
    Ok(c)
}

/// Freezes (or unfreezes) every station in `scope`: no new install starts.
pub async fn freeze(
    addr: &BrokerAddr,
    key: &SigningKey,
    scope: Scope,
    frozen: bool,
    limits: &Limits,
) -> Result<Control, RolloutError> {
    change_control(addr, key, scope, limits, |c| c.freeze = frozen).await
}

/// Pins every station in `scope` at `pin` (no version above it), or lifts the pin.
pub async fn pin(
    addr: &BrokerAddr,
    key: &SigningKey,
    scope: Scope,
    pin: Option<Version>,
    limits: &Limits,
) -> Result<Control, RolloutError> {
    change_control(addr, key, scope, limits, |c| c.pin = pin).await
}

fn status_name(s: &Status) -> String {
    match s {
        Status::Running => "running".into(),
        Status::Completed => "completed".into(),
        Status::Halted { reason } => format!("halted ({})", describe_halt(reason)),
    }
}

/// A one-line description of why a rollout halted.
#[must_use]
pub fn describe_halt(r: &HaltReason) -> String {
    match r {
        HaltReason::FailureRate {
            wave,
            failed,
            finished,
            failure_percent,
        } => format!(
            "wave {} failure rate {failed}/{finished} above {failure_percent}%",
            wave + 1
        ),
        HaltReason::WaveTimedOut {
            wave,
            elapsed_s,
            limit_s,
        } => format!(
            "wave {} not done after {elapsed_s} s (limit {limit_s} s)",
            wave + 1
        ),
        HaltReason::Operator { note } => format!("halted by operator: {note}"),
    }
}

async fn halt_with(
    addr: &BrokerAddr,
    key: &SigningKey,
    mut rec: RolloutRecord,
    reason: HaltReason,
    limits: &Limits,
) -> Result<RolloutRecord, RolloutError> {
    let read = rec.revision;
    let u = rec.update_id.clone();
    // The control first: stations must stop before the record says so.
    change_control(
        addr,
        key,
        Scope::Group(rec.plan.group.clone()),
        limits,
        |c| {
            if !c.halted.contains(&u) {
                c.halted.push(u.clone());
            }
            if c.halted.len() > fleet_core::rollout::control::MAX_HALTED {
                c.halted.remove(0);
            }
        },
    )
    .await?;
    rec.log(unix_now(), "halted", Some(describe_halt(&reason)));
    rec.progress.status = Status::Halted { reason };
    save(addr, key, &mut rec, read, limits).await?;
    Ok(rec)
}

/// `rec` when its status lets `what` go ahead, else why not.
fn in_status(
    rec: RolloutRecord,
    what: &'static str,
    allowed: impl Fn(&Status) -> bool,
) -> Result<RolloutRecord, RolloutError> {
    if allowed(&rec.progress.status) {
        return Ok(rec);
    }
    Err(RolloutError::WrongStatus {
        what,
        status: status_name(&rec.progress.status),
        update_id: rec.update_id,
    })
}

/// Halts a running rollout by hand.
pub async fn halt(
    addr: &BrokerAddr,
    key: &SigningKey,
    update: Option<&UpdateId>,
    note: &str,
    limits: &Limits,
) -> Result<RolloutRecord, RolloutError> {
    let rec = in_status(load(addr, Some(key), update, limits).await?, "halt", |s| {
        *s == Status::Running
    })?;
    let reason = HaltReason::Operator {
        note: fleet_core::update::offer::truncate(note, 200),
    };
    halt_with(addr, key, rec, reason, limits).await
}

/// Resumes a halted rollout at its current wave (the wave's clock restarts).
pub async fn resume(
    addr: &BrokerAddr,
    key: &SigningKey,
    update: Option<&UpdateId>,
    limits: &Limits,
) -> Result<RolloutRecord, RolloutError> {
    let mut rec = in_status(
        load(addr, Some(key), update, limits).await?,
        "resume",
        |s| matches!(s, Status::Halted { .. }),
    )?;
    let read = rec.revision;
    let u = rec.update_id.clone();
    change_control(
        addr,
        key,
        Scope::Group(rec.plan.group.clone()),
        limits,
        |c| {
            c.halted.retain(|h| *h != u);
        },
    )
    .await?;
    rec.progress.status = Status::Running;
    rec.progress.wave_started_at = unix_now();
    rec.log(unix_now(), "resumed", None);
    save(addr, key, &mut rec, read, limits).await?;
    Ok(rec)
}

/// Offers the next wave. Without `force`, only when the plan's decision is to advance.
pub async fn advance(
    addr: &BrokerAddr,
    key: &SigningKey,
    update: Option<&UpdateId>,
    force: bool,
    limits: &Limits,
) -> Result<RolloutRecord, RolloutError> {
    let rec = in_status(
        load(addr, Some(key), update, limits).await?,
        "advance",
        |s| *s == Status::Running,
    )?;
    if rec.progress.wave + 1 >= rec.plan.waves.len() {
        return Err(RolloutError::NotReady {
            update_id: rec.update_id,
            why: "the last wave is already offered".into(),
        });
    }
    if !force {
        let rows = status::read(addr, Duration::from_secs(600), limits).await?;
        let view = view_of(&rec, &rows, false);
        let d = decide(
            &rec.plan,
            &rec.progress,
            &view.waves[rec.progress.wave].tally,
            Some(unix_now()),
        );
        if !matches!(d, Decision::Advance { .. }) {
            return Err(RolloutError::NotReady {
                update_id: rec.update_id,
                why: describe_decision(&d),
            });
        }
    }
    apply_advance(addr, key, rec, limits).await
}

async fn apply_advance(
    addr: &BrokerAddr,
    key: &SigningKey,
    mut rec: RolloutRecord,
    limits: &Limits,
) -> Result<RolloutRecord, RolloutError> {
    let read = rec.revision;
    let next = rec.progress.wave + 1;
    offer_wave(addr, key, &mut rec, next, None, limits).await?;
    rec.progress.wave = next;
    rec.progress.wave_started_at = unix_now();
    rec.log(
        unix_now(),
        "advanced",
        Some(describe_wave(&rec.plan.waves[next])),
    );
    save(addr, key, &mut rec, read, limits).await?;
    Ok(rec)
}

/// What one [`tick`] did.
#[derive(Debug, Clone)]
pub struct Tick {
    pub decision: Decision,
    pub record: RolloutRecord,
    pub view: RolloutView,
}

/// One round of the automatic rollout: counts, decides, and halts, advances or completes.
pub async fn tick(
    addr: &BrokerAddr,
    key: &SigningKey,
    update: Option<&UpdateId>,
    stale_after: Duration,
    limits: &Limits,
) -> Result<Tick, RolloutError> {
    let rec = load(addr, Some(key), update, limits).await?;
    let rows = status::read(addr, stale_after, limits).await?;
    let view = view_of(&rec, &rows, true);
    let tally = view.waves[rec.progress.wave].tally;
    let decision = decide(&rec.plan, &rec.progress, &tally, Some(unix_now()));
    let record = match &decision {
        Decision::Halt(reason) => halt_with(addr, key, rec, reason.clone(), limits).await?,
        Decision::Advance { .. } => apply_advance(addr, key, rec, limits).await?,
        Decision::Complete => {
            let mut rec = rec;
            let read = rec.revision;
            rec.progress.status = Status::Completed;
            rec.log(unix_now(), "completed", None);
            save(addr, key, &mut rec, read, limits).await?;
            rec
        }
        Decision::Wait(_) => rec,
    };
    let view = view_of(&record, &rows, true);
    Ok(Tick {
        decision,
        record,
        view,
    })
}

/// A decision in words.
#[must_use]
pub fn describe_decision(d: &Decision) -> String {
    use fleet_core::rollout::WaitReason as W;
    match d {
        Decision::Advance { to } => format!("advance to wave {}", to + 1),
        Decision::Complete => "complete".into(),
        Decision::Halt(r) => format!("halt: {}", describe_halt(r)),
        Decision::Wait(W::NotRunning) => "not running".into(),
        Decision::Wait(W::TooFewFinished { finished, needed }) => {
            format!("waiting: {finished} of {needed} stations needed have finished")
        }
        Decision::Wait(W::BelowSuccess { succeeded, needed }) => {
            format!("waiting: {succeeded} of {needed} needed stations committed")
        }
        Decision::Wait(W::OutsideWindow) => "waiting for the maintenance window".into(),
    }
}

fn describe_wave(w: &WaveSpec) -> String {
    match w {
        WaveSpec::Devices(d) => format!("{} canary device(s)", d.len()),
        WaveSpec::Percent(p) => format!("{}% of the group", p.get()),
    }
}

/// One wave as `rollout status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct WaveView {
    /// From 1.
    pub number: usize,
    pub spec: String,
    /// Offered yet.
    pub offered: bool,
    pub tally: Tally,
    /// Stations per stage (pending, downloading, installing, trial, committed, rolled back,
    /// failed, held); they add up to `tally.members`.
    pub states: StageCounts,
    /// Failed stations with their reasons (at most 50 listed).
    pub failures: Vec<(DeviceId, String)>,
    /// Every failure's reason with how many stations failed for it, most first (complete
    /// counts; at most 20 distinct reasons, the rest under "(other reasons)").
    pub failure_reasons: Vec<ReasonCount>,
    /// Stations of the wave that are offline, stale or never published a state (at most 50
    /// listed).
    pub not_heard: Vec<DeviceId>,
    /// How many stations of the wave are not heard from (complete).
    pub not_heard_count: u32,
}

/// A rollout with its waves counted, for `status`, `watch` and `--json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RolloutView {
    pub update_id: UpdateId,
    pub group: GroupId,
    pub version: Version,
    pub revision: u64,
    /// False when read without the key (display only).
    pub verified: bool,
    pub status: String,
    /// Why it halted, when it is halted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<HaltReason>,
    /// Current wave, from 1.
    pub wave: usize,
    pub waves: Vec<WaveView>,
    /// Stations on the broker in no wave of the plan yet... or ever.
    pub outside: u32,
    /// What the plan says to do now.
    pub next: String,
}

/// Counts every wave's stations from the rows of `status::read` (pure).
#[must_use]
pub fn view_of(rec: &RolloutRecord, rows: &[StationRow], verified: bool) -> RolloutView {
    view_with(rec, rows, verified, None)
}

/// [`view_of`], also counting as held the stations in `refused` (their newest event on the
/// update is a refusal for a halt, freeze or pin: what a live watch sees).
#[must_use]
pub fn view_with(
    rec: &RolloutRecord,
    rows: &[StationRow],
    verified: bool,
    refused: Option<&std::collections::BTreeSet<DeviceId>>,
) -> RolloutView {
    let holds = Holds {
        rollout_halted: matches!(rec.progress.status, Status::Halted { .. }),
        refused,
    };
    let n = rec.plan.waves.len();
    let mut waves: Vec<WaveView> = rec
        .plan
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| WaveView {
            number: i + 1,
            spec: describe_wave(w),
            offered: i <= rec.progress.wave,
            tally: Tally::default(),
            states: StageCounts::default(),
            failures: Vec::new(),
            failure_reasons: Vec::new(),
            not_heard: Vec::new(),
            not_heard_count: 0,
        })
        .collect();
    let mut outside = 0u32;
    let mut canaries_seen: BTreeMap<&DeviceId, bool> =
        rec.plan.canaries().map(|d| (d, false)).collect();
    for row in rows {
        let bucket = wave::bucket(&row.device_id, &rec.update_id);
        let Some(w) = rec.plan.wave_of(&row.device_id, bucket) else {
            outside += 1;
            continue;
        };
        if let Some(seen) = canaries_seen.get_mut(&row.device_id) {
            *seen = true;
        }
        let v = &mut waves[w.min(n - 1)];
        let stage = stage_of(row, &rec.update_id, &rec.bundle.version, holds);
        stage.count(&mut v.tally, &mut v.states);
        if let Some(why) = stage.failure() {
            crate::stage::add_reason(&mut v.failure_reasons, why);
            if v.failures.len() < MAX_LISTED
                && let Some(o) = row.state.as_ref().and_then(|s| s.last_outcome.as_ref())
            {
                v.failures
                    .push((row.device_id.clone(), status::describe_outcome(o)));
            }
        }
        if row.heard != Heard::Recently {
            v.not_heard_count += 1;
            if v.not_heard.len() < MAX_LISTED {
                v.not_heard.push(row.device_id.clone());
            }
        }
    }
    // Canaries that never published anything are members not heard from.
    for (d, seen) in canaries_seen {
        if !seen && let Some(w) = rec.plan.wave_of(d, 0) {
            let v = &mut waves[w];
            Stage::Pending.count(&mut v.tally, &mut v.states);
            waves[w].not_heard_count += 1;
            waves[w].not_heard.push(d.clone());
        }
    }
    for w in &mut waves {
        crate::stage::sort_reasons(&mut w.failure_reasons);
    }
    let cur = rec.progress.wave.min(n - 1);
    let next = describe_decision(&decide(
        &rec.plan,
        &rec.progress,
        &waves[cur].tally,
        Some(unix_now()),
    ));
    RolloutView {
        update_id: rec.update_id.clone(),
        group: rec.plan.group.clone(),
        version: rec.bundle.version.clone(),
        revision: rec.revision,
        verified,
        status: status_name(&rec.progress.status),
        halt_reason: match &rec.progress.status {
            Status::Halted { reason } => Some(reason.clone()),
            _ => None,
        },
        wave: rec.progress.wave + 1,
        waves,
        outside,
        next,
    }
}

/// Reads every rollout (verified with `key` when given) and counts its waves.
pub async fn views(
    addr: &BrokerAddr,
    key: Option<&SigningKey>,
    stale_after: Duration,
    limits: &Limits,
) -> Result<Vec<RolloutView>, RolloutError> {
    let recs = list(addr, key, limits).await?;
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = status::read(addr, stale_after, limits).await?;
    Ok(recs
        .iter()
        .map(|r| view_of(r, &rows, key.is_some()))
        .collect())
}

/// The rollout as text lines (for `status`, `rollout status` and `rollout run`).
#[must_use]
pub fn render(v: &RolloutView) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "rollout {} ({} to group {}): {}, wave {}/{}{}; next: {}",
        v.update_id,
        v.version,
        v.group,
        v.status,
        v.wave,
        v.waves.len(),
        if v.verified { "" } else { " [unverified]" },
        v.next
    );
    for w in &v.waves {
        let t = &w.tally;
        let _ = writeln!(
            s,
            "  wave {} {:<22} {:<9} members {:>5}  committed {:>5}  failed {:>4}  in progress {:>5}  waiting {:>5}  not heard {:>4}",
            w.number,
            w.spec,
            if w.offered { "offered" } else { "pending" },
            t.members,
            t.succeeded,
            t.failed,
            t.in_progress,
            t.waiting,
            w.not_heard_count
        );
        for (d, why) in w.failures.iter().take(10) {
            let _ = writeln!(s, "      failed {d}: {why}");
        }
        if w.failures.len() > 10 {
            let _ = writeln!(s, "      ... {} more failures", w.failures.len() - 10);
        }
        if !w.not_heard.is_empty() {
            let names: Vec<String> = w
                .not_heard
                .iter()
                .take(10)
                .map(ToString::to_string)
                .collect();
            let _ = writeln!(s, "      not heard from: {}", names.join(", "));
        }
    }
    let _ = writeln!(s, "  stations in no wave: {}", v.outside);
    s
}

/// Stations of the rollout's plan that are past wave `last` (for tests and reports).
#[must_use]
pub fn waves_of<'a>(
    rec: &RolloutRecord,
    devices: impl IntoIterator<Item = &'a DeviceId>,
) -> BTreeMap<DeviceId, Option<usize>> {
    devices
        .into_iter()
        .map(|d| {
            let b = wave::bucket(d, &rec.update_id);
            (d.clone(), rec.plan.wave_of(d, b))
        })
        .collect()
}
