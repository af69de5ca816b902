//! The update state machine: [`step`] maps `(state, event, now)` to the next state and the
//! actions the shell must carry out.
//!
//! # The shell's contract
//! 1. Feed [`Event::Started`] once at every daemon start (after every boot and every crash),
//!    with the boot flow's status. The engine resumes whatever it was doing: a download
//!    resumes, a verification reruns, an interrupted install is verified again before it is
//!    retried, a trial reboot is judged (trial booted, or fell back).
//! 2. After every `Ok(transition)`, **persist `transition.next` durably (temp file, fsync,
//!    rename, fsync directory) before carrying out any action**: the journal always holds the
//!    intent of the irreversible step that follows.
//! 3. Carry out `transition.actions` in order and feed each result back as the matching event
//!    (`Download` → `DownloadProgress`/`DownloadComplete`/`DownloadFailed`, `VerifyBundle` →
//!    `BundleVerified`/`BundleVerifyFailed`, `Install` → `InstallProgress`/`Installed`/
//!    `InstallFailed`, `ArmTrial` → `TrialArmed`, `MarkGood` → `MarkedGood`, `MarkBad` →
//!    `MarkedBad`, a failed boot-control call → `BootControlFailed`, `RunHealthChecks` →
//!    `HealthPassed`/`HealthFailed`). Retry retryable port errors with backoff a bounded number
//!    of times before feeding a failure. `Report` is published as a station event.
//! 4. `Err(Rejected)` means the event does not fit the state (a stale or nonsense event): log
//!    it and keep the old state. Nothing happened.
//!
//! # Invariants (property-tested in `tests/update_invariants.rs`)
//! - `MarkGood(slot)` is only emitted when `slot` is the booted slot.
//! - `Install` is only emitted for a bundle the shell reported verified in the `Verifying`
//!   phase that immediately precedes it.
//! - An offer is only accepted with a sequence above every sequence accepted before.
//! - A rollback ends (phase back to `Idle`) only on the committed (last good) slot, which never
//!   changes during an update and is never marked bad.
//!
//! # Attempt counting
//! A trial gets `Policy::max_trial_attempts` attempts (default 3). An attempt is consumed when
//! the station comes back on the committed slot instead of the trial slot, when the trial
//! fails a health check, when committing fails, and when the daemon restarts during health
//! checks (so a check that crashes the daemon cannot loop forever; the checks then rerun
//! without a reboot). While attempts remain, the trial is re-armed and the station reboots into
//! it again; then the slot is marked bad, and the station reboots off it if it runs on it. On the
//! U-Boot flow the boot loader counts its own boots per arming (`BOOT_x_LEFT`) and falls back by
//! itself when they run out: with [`TrialBootCounting::BootLoader`] such a fallback is final
//! (the slot already had all its boots), while a failed health check is still retried up to
//! `max_trial_attempts`. The Pi's tryboot flow counts on the boot side too (its attempt
//! record, spent by every trial reboot and never reset by re-arming), and its boot check
//! retries a trial that came back: with [`TrialBootCounting::BootLoader`] the engine waits
//! while the flow holds the trial and concludes when the flow marked it bad, so exactly one
//! party retries (ADR 0001, amendment 1). With [`TrialBootCounting::Updater`] (the simulated
//! boot loader, where every arming is one boot) each fallback consumes one attempt.
use serde::{Deserialize, Serialize};

use crate::ids::{UpdateId, Version};
use crate::ports::BootStatus;
use crate::slot::Slot;
use crate::time::Now;
use crate::update::digest::{BundleId, KeyId, Sha256Digest};
use crate::update::offer::{
    AdmissionContext, Admitted, Offer, RejectReason, SignatureVerdict, Station, truncate,
};
pub use crate::update::phase::PhaseName;
use crate::update::report::{
    BootOp, DownloadFailure, FallbackCause, Outcome, Report, Stage, VerifyFailure,
};

mod admission;
mod fallback;
mod started;

use admission::{on_admitted, on_offer};
use fallback::{
    arm, fail, leave_bad_slot, reboot_off_bad_slot, start_rollback, trial_failed_to_boot, unhealthy,
};
use started::on_started;

/// Longest free-text detail kept in a report or outcome, in bytes.
pub const MAX_DETAIL_LEN: usize = 256;

/// Tunables of the engine, part of the persisted state so a restart keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    /// Trial attempts before the new slot is marked bad (1..; default 3).
    pub max_trial_attempts: u8,
    /// Install attempts after retryable installer errors (default 3).
    pub max_install_attempts: u8,
    /// Reboots tried to leave a slot marked bad before giving up (default 3).
    pub max_rollback_reboots: u8,
    /// Largest bundle this station downloads, in bytes (default 2 GiB).
    pub max_bundle_bytes: u64,
    /// Who counts the boots of a trial that does not come up (journals written before this
    /// field existed read as `updater`, the behaviour they were written under).
    #[serde(default)]
    pub trial_boot_counting: TrialBootCounting,
}

/// Who counts the boots of a trial slot that never comes up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrialBootCounting {
    /// Every arming is one boot and nothing on the boot side counts (the simulated boot
    /// loader): the engine re-arms after a fallback while attempts remain.
    #[default]
    Updater,
    /// The boot side counts the trial's boots and retries by itself; the engine never re-arms
    /// after a fallback, it reads the flow's verdict. U-Boot's script boots the armed slot
    /// `BOOT_x_LEFT` times and falls back when they run out (the boot check then shows the
    /// slot bad). On the Pi's tryboot flow the attempt record counts and the boot check, on
    /// the committed slot, spends the next attempt and reboots into the trial, or marks the
    /// slot bad when none are left. A fallback while the flow still holds the trial is
    /// reported `will-retry` and waited out; a fallback the flow gave up is final.
    BootLoader,
}

/// Why a trial did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoTrial {
    /// The station came back on the committed slot. `flow_trial_left`: the boot flow still has
    /// the slot on trial (its status says `Trial`), with this many attempts left: on the
    /// tryboot flow the boot check has spent the next attempt and is rebooting into it.
    CameBack { flow_trial_left: Option<u8> },
    /// Asking for the reboot failed: the boot loader never tried the slot.
    RebootFailed,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_trial_attempts: 3,
            max_install_attempts: 3,
            max_rollback_reboots: 3,
            max_bundle_bytes: 2 * 1024 * 1024 * 1024,
            trial_boot_counting: TrialBootCounting::Updater,
        }
    }
}

/// The accepted update being worked on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Job {
    pub update_id: UpdateId,
    /// The sequence of the offer that is being acted on (the newest accepted).
    pub sequence: u64,
    pub bundle_id: BundleId,
    pub bundle_size: u64,
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_hash: Option<Sha256Digest>,
    /// The key that signed the accepted offer.
    pub key_id: KeyId,
}

impl Job {
    fn from_offer(offer: &Offer, key_id: KeyId) -> Self {
        Self {
            update_id: offer.update_id.clone(),
            sequence: offer.sequence,
            bundle_id: offer.bundle_id,
            bundle_size: offer.bundle_size,
            version: offer.version.clone(),
            manifest_hash: offer.manifest_hash,
            key_id,
        }
    }
}

/// Where the station is in an update. Persisted in the journal as `{"phase": "...", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "phase",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Phase {
    /// No update in progress.
    Idle,
    /// Receiving the bundle; `held_bytes` are already on disk and verified chunk by chunk.
    Downloading { job: Job, held_bytes: u64 },
    /// Hashing the assembled file. `install_attempts` counts installs already tried.
    Verifying { job: Job, install_attempts: u8 },
    /// Writing the inactive slot (`attempt` counts from 1).
    Installing { job: Job, slot: Slot, attempt: u8 },
    /// Asking the boot flow to try `slot` on the next boot (trial `attempt`, from 1).
    ArmingTrial { job: Job, slot: Slot, attempt: u8 },
    /// Armed; rebooting into `slot`.
    Rebooting { job: Job, slot: Slot, attempt: u8 },
    /// Booted on the trial slot; health checks run.
    HealthChecking { job: Job, slot: Slot, attempt: u8 },
    /// Healthy; committing `slot`.
    Committing { job: Job, slot: Slot, attempt: u8 },
    /// Abandoning `bad_slot`: mark it bad (`marked`), then reboot off it if it runs.
    RollingBack {
        job: Job,
        bad_slot: Slot,
        cause: FallbackCause,
        marked: bool,
        reboots: u8,
    },
}

impl Phase {
    #[must_use]
    pub fn name(&self) -> PhaseName {
        match self {
            Phase::Idle => PhaseName::Idle,
            Phase::Downloading { .. } => PhaseName::Downloading,
            Phase::Verifying { .. } => PhaseName::Verifying,
            Phase::Installing { .. } => PhaseName::Installing,
            Phase::ArmingTrial { .. } => PhaseName::ArmingTrial,
            Phase::Rebooting { .. } => PhaseName::Rebooting,
            Phase::HealthChecking { .. } => PhaseName::HealthChecking,
            Phase::Committing { .. } => PhaseName::Committing,
            Phase::RollingBack { .. } => PhaseName::RollingBack,
        }
    }

    /// The slot the update writes, tries or abandons (never the committed slot), if any.
    #[must_use]
    pub fn update_slot(&self) -> Option<Slot> {
        match self {
            Phase::Idle | Phase::Downloading { .. } | Phase::Verifying { .. } => None,
            Phase::Installing { slot, .. }
            | Phase::ArmingTrial { slot, .. }
            | Phase::Rebooting { slot, .. }
            | Phase::HealthChecking { slot, .. }
            | Phase::Committing { slot, .. } => Some(*slot),
            Phase::RollingBack { bad_slot, .. } => Some(*bad_slot),
        }
    }

    /// The update being worked on, if any.
    #[must_use]
    pub fn job(&self) -> Option<&Job> {
        match self {
            Phase::Idle => None,
            Phase::Downloading { job, .. }
            | Phase::Verifying { job, .. }
            | Phase::Installing { job, .. }
            | Phase::ArmingTrial { job, .. }
            | Phase::Rebooting { job, .. }
            | Phase::HealthChecking { job, .. }
            | Phase::Committing { job, .. }
            | Phase::RollingBack { job, .. } => Some(job),
        }
    }
}

/// The engine's whole state: what the shell persists in its journal.
///
/// Journal compatibility: the journal on `/data` is read by whichever slot boots, so after a
/// rollback an older release reads what a newer one wrote. The persisted types therefore
/// ignore unknown fields (no `deny_unknown_fields`), and fields added later must carry
/// `#[serde(default)]`. A new [`Phase`] variant cannot be read by an older release; the shell
/// must treat an unreadable journal as a fresh start on the committed slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct State {
    /// Identity used for admission. The shell refreshes it from configuration at start.
    pub station: Station,
    pub policy: Policy,
    /// The slot running now (from the last `Started`).
    pub booted: Slot,
    /// The last good (committed) slot: where every fallback ends.
    pub committed: Slot,
    /// The version running in the committed slot; offers must be above it.
    pub committed_version: Version,
    /// The highest offer sequence ever accepted (replay protection).
    pub last_sequence: Option<u64>,
    pub phase: Phase,
    /// How the last update ended.
    pub last_outcome: Option<Outcome>,
}

impl State {
    /// The state of a station with no journal: it runs `booted`, taken as committed, with
    /// `version`.
    #[must_use]
    pub fn new(station: Station, policy: Policy, booted: Slot, version: Version) -> Self {
        Self {
            station,
            policy,
            booted,
            committed: booted,
            committed_version: version,
            last_sequence: None,
            phase: Phase::Idle,
            last_outcome: None,
        }
    }

    /// What offer admission ([`decide_offer`]) judges against in this state.
    #[must_use]
    pub fn admission(&self) -> AdmissionContext<'_> {
        AdmissionContext {
            station: &self.station,
            installed: &self.committed_version,
            last_sequence: self.last_sequence,
            max_bundle_bytes: self.policy.max_bundle_bytes,
        }
    }
}

/// Something that happened, fed to [`step`] by the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The daemon started; `BootStatus` says which slot runs.
    Started(BootStatus),
    /// An offer whose envelope opened, with fleet-proto's signature verdict.
    OfferReceived {
        offer: Offer,
        verdict: SignatureVerdict,
    },
    /// An offer that already passed [`decide_offer`] (the station's admission, which runs
    /// the rules once, against this same state, and the controls in force after them).
    OfferAdmitted { offer: Offer, admitted: Admitted },
    /// A message on an offer topic that fleet-proto refused before an offer could be read
    /// (bad signature, unknown key, malformed, oversize). Only reported.
    OfferUnusable { reason: RejectReason },
    /// `held_bytes` of the bundle are on disk, each chunk checked against the manifest.
    DownloadProgress {
        bundle_id: BundleId,
        held_bytes: u64,
    },
    /// Every chunk is on disk.
    DownloadComplete { bundle_id: BundleId },
    /// The download cannot finish (not for transient transport trouble).
    DownloadFailed {
        bundle_id: BundleId,
        failure: DownloadFailure,
    },
    /// The whole file's SHA-256 equals the bundle id and its size the offered size.
    BundleVerified { bundle_id: BundleId },
    /// The whole file failed verification.
    BundleVerifyFailed {
        bundle_id: BundleId,
        failure: VerifyFailure,
    },
    /// The installer's progress.
    InstallProgress { percent: u8 },
    /// The installer wrote `slot` with `version` and armed it.
    Installed { slot: Slot, version: Version },
    /// The installer failed; `retryable` from `PortError::is_retryable`.
    InstallFailed { retryable: bool, detail: String },
    /// The installer failed after it armed `slot` (`PortError::armed_slot`): the slot may
    /// boot next and holds something unknown. The engine gives it up.
    InstallLeftArmed { slot: Slot, detail: String },
    /// `BootControl::arm_trial(slot)` succeeded.
    TrialArmed { slot: Slot },
    /// `BootControl::mark_good(slot)` succeeded.
    MarkedGood { slot: Slot },
    /// `BootControl::mark_bad(slot)` succeeded.
    MarkedBad { slot: Slot },
    /// A boot-control call (or the reboot request) failed after the shell's retries.
    BootControlFailed {
        op: BootOp,
        slot: Slot,
        detail: String,
    },
    /// Every health check passed on the booted slot.
    HealthPassed,
    /// A health check failed; `check` names it.
    HealthFailed { check: String },
}

/// The short name of an [`Event`], used in [`Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventName {
    Started,
    OfferReceived,
    OfferAdmitted,
    OfferUnusable,
    DownloadProgress,
    DownloadComplete,
    DownloadFailed,
    BundleVerified,
    BundleVerifyFailed,
    InstallProgress,
    Installed,
    InstallFailed,
    InstallLeftArmed,
    TrialArmed,
    MarkedGood,
    MarkedBad,
    BootControlFailed,
    HealthPassed,
    HealthFailed,
}

impl Event {
    #[must_use]
    pub fn name(&self) -> EventName {
        match self {
            Event::Started(_) => EventName::Started,
            Event::OfferReceived { .. } => EventName::OfferReceived,
            Event::OfferAdmitted { .. } => EventName::OfferAdmitted,
            Event::OfferUnusable { .. } => EventName::OfferUnusable,
            Event::DownloadProgress { .. } => EventName::DownloadProgress,
            Event::DownloadComplete { .. } => EventName::DownloadComplete,
            Event::DownloadFailed { .. } => EventName::DownloadFailed,
            Event::BundleVerified { .. } => EventName::BundleVerified,
            Event::BundleVerifyFailed { .. } => EventName::BundleVerifyFailed,
            Event::InstallProgress { .. } => EventName::InstallProgress,
            Event::Installed { .. } => EventName::Installed,
            Event::InstallFailed { .. } => EventName::InstallFailed,
            Event::InstallLeftArmed { .. } => EventName::InstallLeftArmed,
            Event::TrialArmed { .. } => EventName::TrialArmed,
            Event::MarkedGood { .. } => EventName::MarkedGood,
            Event::MarkedBad { .. } => EventName::MarkedBad,
            Event::BootControlFailed { .. } => EventName::BootControlFailed,
            Event::HealthPassed => EventName::HealthPassed,
            Event::HealthFailed { .. } => EventName::HealthFailed,
        }
    }
}

/// Something the shell must do. Carry out in order, after persisting the next state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Fetch the bundle's signed manifest and chunks into the download area, keeping chunks
    /// already held (`resume`), checking each chunk against the manifest and the manifest
    /// against this offer (`size`, version and compatible).
    Download {
        bundle_id: BundleId,
        size: u64,
        version: Version,
        resume: bool,
    },
    /// Delete the partial or complete download of `bundle_id`.
    DiscardDownload { bundle_id: BundleId },
    /// Keep the committed bundle `bundle_id` (`size` bytes, in the download area) as the
    /// base of future deltas, replacing the base kept before (ADR 0012). Comes before the
    /// `DiscardDownload` of the same bundle; without the file, nothing is kept.
    KeepBase { bundle_id: BundleId, size: u64 },
    /// Hash the whole file; it must be `size` bytes with SHA-256 `bundle_id`.
    VerifyBundle { bundle_id: BundleId, size: u64 },
    /// Install the verified bundle into `slot` (the inactive one).
    Install {
        bundle_id: BundleId,
        update_id: UpdateId,
        slot: Slot,
        version: Version,
        manifest_hash: Option<Sha256Digest>,
    },
    /// `BootControl::arm_trial(slot)`.
    ArmTrial { slot: Slot },
    /// Reboot; the engine expects to come back on `into` (it judges what actually booted).
    Reboot { into: Slot },
    /// Run the health checks on the booted slot `slot`.
    RunHealthChecks { slot: Slot },
    /// `BootControl::mark_good(slot)`; `slot` is always the booted slot.
    MarkGood { slot: Slot },
    /// `BootControl::mark_bad(slot)`; never the committed slot.
    MarkBad { slot: Slot },
    /// Publish as a station event.
    Report(Report),
}

/// The result of a step: the state to persist and the actions to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub next: State,
    pub actions: Vec<Action>,
}

/// An event that does not fit the state: nothing happens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unable to apply event {event:?} in phase {phase:?}: {why}")]
pub struct Rejected {
    pub phase: PhaseName,
    pub event: EventName,
    pub why: &'static str,
}

fn reject(state: &State, event: &Event, why: &'static str) -> Rejected {
    Rejected {
        phase: state.phase.name(),
        event: event.name(),
        why,
    }
}

pub(super) fn detail(s: &str) -> String {
    truncate(s, MAX_DETAIL_LEN)
}

fn percent(held: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        u64::try_from(u128::from(held) * 100 / u128::from(total)).unwrap_or(100)
    }
}

/// Advances the engine by one event. See the module documentation for the shell's contract.
pub fn step(state: &State, event: Event, now: Now) -> Result<Transition, Rejected> {
    let Some(detail) = inconsistency(state) else {
        return step_consistent(state, event, now);
    };
    // A journal that names the committed slot as the update's slot (corrupted, or written by
    // a buggy release) must never lead to arming, committing or marking bad the slot that
    // keeps the station alive: abandon the update, then handle the event as an idle station.
    let mut repaired = state.clone();
    if let Some(job) = state.phase.job() {
        repaired.last_outcome = Some(Outcome::Failed {
            update_id: job.update_id.clone(),
            stage: Stage::Install,
            detail: detail.clone(),
        });
    }
    repaired.phase = Phase::Idle;
    let report = Action::Report(Report::JournalRepaired { detail });
    match step_consistent(&repaired, event, now) {
        Ok(mut t) => {
            t.actions.insert(0, report);
            Ok(t)
        }
        Err(_) => Ok(Transition {
            next: repaired,
            actions: vec![report],
        }),
    }
}

/// Why `state` cannot be trusted, if it cannot.
fn inconsistency(state: &State) -> Option<String> {
    let slot = state.phase.update_slot()?;
    (slot == state.committed).then(|| {
        format!(
            "journal names the committed slot {slot} as the slot of update in phase {:?}",
            state.phase.name()
        )
    })
}

fn step_consistent(state: &State, event: Event, now: Now) -> Result<Transition, Rejected> {
    let mut next = state.clone();
    let mut actions = Vec::new();
    match (&state.phase, &event) {
        (_, Event::Started(status)) => on_started(&mut next, status, &mut actions),
        (_, Event::OfferReceived { offer, verdict }) => {
            on_offer(&mut next, offer, *verdict, now, &mut actions);
        }
        (_, Event::OfferAdmitted { offer, admitted }) => {
            on_admitted(&mut next, offer, *admitted, &mut actions);
        }
        (_, Event::OfferUnusable { reason }) => {
            actions.push(Action::Report(Report::OfferRejected {
                update_id: None,
                sequence: None,
                reason: reason.clone(),
            }));
        }
        (
            Phase::Downloading { job, held_bytes },
            Event::DownloadProgress {
                bundle_id,
                held_bytes: new_held,
            },
        ) => {
            if *bundle_id != job.bundle_id {
                return Err(reject(state, &event, "progress for another bundle"));
            }
            if *new_held > job.bundle_size {
                return Err(reject(state, &event, "more bytes held than the bundle has"));
            }
            if percent(*new_held, job.bundle_size) != percent(*held_bytes, job.bundle_size) {
                actions.push(Action::Report(Report::DownloadProgress {
                    held_bytes: *new_held,
                    total_bytes: job.bundle_size,
                }));
            }
            next.phase = Phase::Downloading {
                job: job.clone(),
                held_bytes: *new_held,
            };
        }
        (Phase::Downloading { job, .. }, Event::DownloadComplete { bundle_id }) => {
            if *bundle_id != job.bundle_id {
                return Err(reject(state, &event, "completion of another bundle"));
            }
            actions.push(Action::Report(Report::Downloaded {
                bundle_id: *bundle_id,
            }));
            actions.push(Action::VerifyBundle {
                bundle_id: *bundle_id,
                size: job.bundle_size,
            });
            next.phase = Phase::Verifying {
                job: job.clone(),
                install_attempts: 0,
            };
        }
        (Phase::Downloading { job, .. }, Event::DownloadFailed { bundle_id, failure }) => {
            if *bundle_id != job.bundle_id {
                return Err(reject(state, &event, "failure of another bundle"));
            }
            actions.push(Action::Report(Report::DownloadFailed {
                failure: failure.clone(),
            }));
            fail(
                &mut next,
                job,
                Stage::Download,
                failure_detail(failure),
                &mut actions,
            );
        }
        (
            Phase::Verifying {
                job,
                install_attempts,
            },
            Event::BundleVerified { bundle_id },
        ) => {
            if *bundle_id != job.bundle_id {
                return Err(reject(state, &event, "verdict on another bundle"));
            }
            if state.booted != state.committed {
                // The inactive slot would be the running one: never install into it.
                actions.push(Action::Report(Report::Verified {
                    bundle_id: *bundle_id,
                }));
                let d = format!(
                    "station runs slot {}, not its committed slot {}",
                    state.booted, state.committed
                );
                fail(&mut next, job, Stage::Install, d, &mut actions);
                return Ok(Transition { next, actions });
            }
            let slot = state.committed.other();
            let attempt = install_attempts.saturating_add(1);
            actions.push(Action::Report(Report::Verified {
                bundle_id: *bundle_id,
            }));
            actions.push(Action::Report(Report::InstallStarted { slot, attempt }));
            actions.push(Action::Install {
                bundle_id: job.bundle_id,
                update_id: job.update_id.clone(),
                slot,
                version: job.version.clone(),
                manifest_hash: job.manifest_hash,
            });
            next.phase = Phase::Installing {
                job: job.clone(),
                slot,
                attempt,
            };
        }
        (Phase::Verifying { job, .. }, Event::BundleVerifyFailed { bundle_id, failure }) => {
            if *bundle_id != job.bundle_id {
                return Err(reject(state, &event, "verdict on another bundle"));
            }
            actions.push(Action::Report(Report::VerifyFailed {
                failure: failure.clone(),
            }));
            let d = match failure {
                VerifyFailure::HashMismatch { actual } => format!("sha256 was {actual}"),
                VerifyFailure::SizeMismatch { expected, actual } => {
                    format!("size was {actual}, expected {expected}")
                }
                VerifyFailure::Io { detail } => detail.clone(),
            };
            fail(&mut next, job, Stage::Verify, d, &mut actions);
        }
        (Phase::Installing { .. }, Event::InstallProgress { percent }) => {
            actions.push(Action::Report(Report::InstallProgress {
                percent: (*percent).min(100),
            }));
        }
        (
            Phase::Installing { job, slot, .. },
            Event::Installed {
                slot: written,
                version,
            },
        ) => {
            actions.push(Action::Report(Report::Installed {
                slot: *written,
                version: version.clone(),
            }));
            if *written == state.committed || *written == state.booted {
                // Never arm, and never mark bad, the slot we run on: fail without touching
                // the boot flow. The installer contract was broken; a person must look.
                fail(
                    &mut next,
                    job,
                    Stage::Install,
                    format!("installer reported writing the running slot {written}"),
                    &mut actions,
                );
            } else if written != slot || *version != job.version {
                let cause = FallbackCause::InstallMismatch {
                    detail: detail(&format!(
                        "installed {version} into {written}, offered {} for {slot}",
                        job.version
                    )),
                };
                actions.push(Action::MarkBad { slot: *written });
                next.phase = Phase::RollingBack {
                    job: job.clone(),
                    bad_slot: *written,
                    cause,
                    marked: false,
                    reboots: 0,
                };
            } else {
                arm(&mut next, job, *slot, 1, &mut actions);
            }
        }
        (
            Phase::Installing { job, attempt, .. },
            Event::InstallFailed {
                retryable,
                detail: d,
            },
        ) => {
            let will_retry = *retryable && *attempt < state.policy.max_install_attempts;
            actions.push(Action::Report(Report::InstallFailed {
                detail: detail(d),
                will_retry,
            }));
            if will_retry {
                // The bytes are hashed again before the next install.
                actions.push(Action::VerifyBundle {
                    bundle_id: job.bundle_id,
                    size: job.bundle_size,
                });
                next.phase = Phase::Verifying {
                    job: job.clone(),
                    install_attempts: *attempt,
                };
            } else {
                fail(&mut next, job, Stage::Install, detail(d), &mut actions);
            }
        }
        (
            Phase::Installing { job, .. },
            Event::InstallLeftArmed {
                slot: armed,
                detail: d,
            },
        ) => {
            actions.push(Action::Report(Report::InstallFailed {
                detail: detail(d),
                will_retry: false,
            }));
            if *armed == state.committed || *armed == state.booted {
                // Never mark bad the slot we run on: the installer contract was broken.
                fail(
                    &mut next,
                    job,
                    Stage::Install,
                    format!("installer reported arming the running slot {armed}"),
                    &mut actions,
                );
            } else {
                let cause = FallbackCause::InstallMismatch {
                    detail: detail(&format!("install left slot {armed} armed: {d}")),
                };
                start_rollback(&mut next, job, *armed, cause, &mut actions);
            }
        }
        (Phase::ArmingTrial { job, slot, attempt }, Event::TrialArmed { slot: armed }) => {
            if armed != slot {
                return Err(reject(state, &event, "armed another slot"));
            }
            actions.push(Action::Report(Report::TrialArmed {
                slot: *slot,
                attempt: *attempt,
            }));
            actions.push(Action::Report(Report::Rebooting { into: *slot }));
            actions.push(Action::Reboot { into: *slot });
            next.phase = Phase::Rebooting {
                job: job.clone(),
                slot: *slot,
                attempt: *attempt,
            };
        }
        (
            Phase::ArmingTrial { job, slot, .. },
            Event::BootControlFailed {
                op: BootOp::ArmTrial,
                slot: failed,
                detail: d,
            },
        ) => {
            if failed != slot {
                return Err(reject(state, &event, "failure for another slot"));
            }
            let cause = FallbackCause::BootControl {
                op: BootOp::ArmTrial,
                detail: detail(d),
            };
            start_rollback(&mut next, job, *slot, cause, &mut actions);
        }
        (
            Phase::Rebooting { job, slot, attempt },
            Event::BootControlFailed {
                op: BootOp::Reboot, ..
            },
        ) => {
            // The reboot request failed: the trial never ran. Count it as an attempt.
            actions.push(Action::Report(Report::BootControlFailed {
                op: BootOp::Reboot,
                slot: *slot,
                detail: match &event {
                    Event::BootControlFailed { detail: d, .. } => detail(d),
                    _ => String::new(),
                },
            }));
            trial_failed_to_boot(
                &mut next,
                job,
                *slot,
                *attempt,
                NoTrial::RebootFailed,
                &mut actions,
            );
        }
        (Phase::HealthChecking { job, slot, attempt }, Event::HealthPassed) => {
            if state.booted != *slot {
                return Err(reject(
                    state,
                    &event,
                    "health verdict for a slot not booted",
                ));
            }
            actions.push(Action::Report(Report::HealthPassed { slot: *slot }));
            actions.push(Action::MarkGood { slot: *slot });
            next.phase = Phase::Committing {
                job: job.clone(),
                slot: *slot,
                attempt: *attempt,
            };
        }
        (Phase::HealthChecking { job, slot, attempt }, Event::HealthFailed { check }) => {
            unhealthy(
                &mut next,
                job,
                *slot,
                *attempt,
                &detail(check),
                &mut actions,
            );
        }
        (Phase::Committing { job, slot, .. }, Event::MarkedGood { slot: marked }) => {
            if marked != slot || state.booted != *slot {
                return Err(reject(state, &event, "committed a slot not on trial"));
            }
            actions.push(Action::Report(Report::Committed {
                slot: *slot,
                version: job.version.clone(),
            }));
            actions.push(Action::KeepBase {
                bundle_id: job.bundle_id,
                size: job.bundle_size,
            });
            actions.push(Action::DiscardDownload {
                bundle_id: job.bundle_id,
            });
            next.committed = *slot;
            next.committed_version = job.version.clone();
            next.last_outcome = Some(Outcome::Committed {
                update_id: job.update_id.clone(),
                slot: *slot,
                version: job.version.clone(),
            });
            next.phase = Phase::Idle;
        }
        (
            Phase::Committing { job, slot, attempt },
            Event::BootControlFailed {
                op: BootOp::MarkGood,
                detail: d,
                ..
            },
        ) => {
            actions.push(Action::Report(Report::BootControlFailed {
                op: BootOp::MarkGood,
                slot: *slot,
                detail: detail(d),
            }));
            unhealthy(&mut next, job, *slot, *attempt, "commit", &mut actions);
        }
        (
            Phase::RollingBack {
                job,
                bad_slot,
                cause,
                reboots,
                ..
            },
            Event::MarkedBad { slot },
        ) => {
            if slot != bad_slot {
                return Err(reject(state, &event, "marked another slot bad"));
            }
            actions.push(Action::Report(Report::MarkedBad { slot: *slot }));
            next.phase = Phase::RollingBack {
                job: job.clone(),
                bad_slot: *bad_slot,
                cause: cause.clone(),
                marked: true,
                reboots: *reboots,
            };
            leave_bad_slot(&mut next, &mut actions);
        }
        (
            Phase::RollingBack {
                job,
                bad_slot,
                cause,
                marked,
                reboots,
            },
            Event::BootControlFailed { op, detail: d, .. },
        ) if matches!(op, BootOp::MarkBad | BootOp::Reboot) => {
            actions.push(Action::Report(Report::BootControlFailed {
                op: *op,
                slot: *bad_slot,
                detail: detail(d),
            }));
            if state.booted == *bad_slot {
                // Reboot (again) anyway, within the bounded number of rollback reboots: the
                // Pi's tryboot flag is one-shot and U-Boot counts down, so a reboot is the
                // best remaining way off the bad slot.
                next.phase = Phase::RollingBack {
                    job: job.clone(),
                    bad_slot: *bad_slot,
                    cause: cause.clone(),
                    marked: *marked,
                    reboots: *reboots,
                };
                reboot_off_bad_slot(&mut next, &mut actions);
            }
            // Otherwise the station already runs its good slot: the mark is retried at the
            // next start.
        }
        _ => return Err(reject(state, &event, "event does not apply in this phase")),
    }
    Ok(Transition { next, actions })
}

fn failure_detail(f: &DownloadFailure) -> String {
    let s = match f {
        DownloadFailure::NoSpace { needed, available } => {
            format!("no space: need {needed} bytes, {available} available")
        }
        DownloadFailure::BadManifest { reason } => format!("bad manifest: {reason:?}"),
        DownloadFailure::ManifestMismatch { detail } => format!("manifest mismatch: {detail}"),
        DownloadFailure::CorruptChunk { index } => format!("chunk {index} corrupt"),
        DownloadFailure::NoManifest { waited_secs } => {
            format!("no manifest within {waited_secs}s")
        }
        DownloadFailure::Stalled {
            waited_secs,
            missing_chunks,
            first_missing,
        } => format!(
            "stalled for {waited_secs}s with {missing_chunks} chunks missing (first: {first_missing:?})"
        ),
        DownloadFailure::Io { detail } => detail.clone(),
    };
    detail(&s)
}
