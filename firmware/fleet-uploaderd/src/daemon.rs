//! The uploader's turn: read the queue from the index, ask `fleet_core::upload::pick_next`, upload
//! one recording, record the outcome (retry state, status). The loop around it (signals,
//! watchdog, sleeping) is in `run`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_core::time::Now;
use fleet_core::upload::{
    Attempts, Candidate, Failure, FailureScope, LinkGate, Order, Pick, WaitReason, after_failure,
    pick_next, window_open,
};
use fleet_retentiond::index::{Index, UploadRow};
use rand::Rng as _;

use crate::config::{Config, Destination, TrustTime};
use crate::pace::Pacer;
use crate::s3::InFlight;
use crate::state::{self, Stored, StoredAttempts};
use crate::status::{self, LastFailure, State, Status};
use crate::upload::{self, Outcome, Persist};

/// The reservation holder whose live reservation means an update download runs (fleet-updated
/// takes it; one name in retentiond's index module).
pub use fleet_retentiond::index::UPDATE_HOLDER;

/// Why the daemon could not go on.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("unable to create {path}")]
    CreateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a turn did, and when to look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// One recording was tried; look again at once.
    Tried(Outcome),
    /// Nothing to do before this long has passed (or a poll interval, whichever is first).
    Sleep(Duration),
}

/// The daemon's memory between turns.
#[derive(Debug)]
pub struct Uploader {
    cfg: Config,
    index: Option<Index>,
    attempts: HashMap<String, Attempts>,
    link: Attempts,
    stored: Stored,
    status: Status,
    origin: Instant,
    recording_bytes_total: u64,
    object_bytes_total: u64,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

struct StatePersist<'a> {
    path: &'a Path,
    spool: &'a Path,
    stored: &'a mut Stored,
}

impl Persist for StatePersist<'_> {
    fn in_flight(&mut self, record: Option<&InFlight>) -> std::io::Result<()> {
        // A multipart upload of another recording is abandoned: its spool file goes with it
        // (a WAV sent as it is lives outside the spool and stays).
        if let Some(old) = &self.stored.in_flight
            && record.is_none_or(|r| r.object != old.object)
            && old.object.starts_with(self.spool)
        {
            let _ = std::fs::remove_file(&old.object);
        }
        self.stored.in_flight = record.cloned();
        state::save(self.path, self.stored).map_err(std::io::Error::other)
    }
    fn current(&self) -> Option<&InFlight> {
        self.stored.in_flight.as_ref()
    }
}

fn wait_reason(r: WaitReason) -> &'static str {
    match r {
        WaitReason::OutsideWindow => "outside-window",
        WaitReason::UpdateDownload => "update-download",
        WaitReason::LinkBackoff => "link-backoff",
        WaitReason::RecordingBackoff => "recording-backoff",
    }
}

impl Uploader {
    /// Loads the state file and prepares the spool directory.
    ///
    /// # Errors
    /// The state or spool directory cannot be created, or the state file cannot be read.
    pub fn new(cfg: Config) -> Result<Self, DaemonError> {
        for dir in [cfg.state_dir.clone(), cfg.spool_dir()] {
            std::fs::create_dir_all(&dir).map_err(|source| DaemonError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let stored = state::load(&cfg.queue_path())?;
        let attempts = stored
            .recordings
            .iter()
            .map(|(k, v)| (k.clone(), Attempts::from(v)))
            .collect();
        let link = Attempts::from(&stored.link);
        // Spool files no multipart upload refers to are leftovers of a crash.
        if let Ok(entries) = std::fs::read_dir(cfg.spool_dir()) {
            for e in entries.flatten() {
                let keep = stored
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.object == e.path());
                if !keep {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let status = Status {
            destination: cfg.destination.as_ref().map(Destination::display),
            ..Status::default()
        };
        Ok(Self {
            cfg,
            index: None,
            attempts,
            link,
            stored,
            status,
            origin: Instant::now(),
            recording_bytes_total: 0,
            object_bytes_total: 0,
        })
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The status as last written.
    #[must_use]
    pub fn status(&self) -> &Status {
        &self.status
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The time every decision is taken at: wall-clock time only while the station's clock
    /// rule trusts the clock (ADR 0004), unless `trust-time` overrides it.
    fn now(&self) -> Now {
        match self.cfg.trust_time {
            TrustTime::Auto => fleet_facts::clock::now(
                &self.cfg.clock_roots,
                &fleet_core::clock::ClockPolicy::default(),
                self.now_ms(),
            ),
            TrustTime::Always => Now::trusted(self.now_ms(), unix_now()),
            TrustTime::Never => Now::untrusted(self.now_ms()),
        }
    }

    fn write_status(&mut self) {
        if let Err(e) = status::write(&self.cfg.status_path, &self.status) {
            tracing::warn!(path = %self.cfg.status_path.display(), error = %e, "unable to write the status file");
        }
    }

    fn save_state(&mut self) {
        self.stored.recordings = self
            .attempts
            .iter()
            .filter(|(_, a)| a.failures > 0)
            .map(|(k, a)| (k.clone(), StoredAttempts::from(a)))
            .collect();
        self.stored.link = StoredAttempts::from(&self.link);
        if let Err(e) = state::save(&self.cfg.queue_path(), &self.stored) {
            tracing::warn!(error = %e, "unable to save the uploader state");
        }
    }

    fn open_index(&mut self) -> Option<&mut Index> {
        if self.index.is_none() {
            // Never create retentiond's index: wait for retentiond.
            if !self.cfg.index_path.exists() {
                return None;
            }
            match Index::open(&self.cfg.index_path) {
                Ok(i) => self.index = Some(i),
                Err(e) => {
                    tracing::warn!(error = %e, "unable to open the index");
                    return None;
                }
            }
        }
        self.index.as_mut()
    }

    fn update_downloading(&mut self) -> bool {
        let boot_id = std::fs::read_to_string(&self.cfg.boot_id_path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let now = fleet_retentiond::daemon::now_boottime_ms();
        self.index
            .as_ref()
            .and_then(|i| i.has_reservation(UPDATE_HOLDER, &boot_id, now).ok())
            .unwrap_or(false)
    }

    /// One look at the queue; uploads at most one recording. `keep_going` is asked while
    /// sending (shutdown, watchdog).
    pub fn turn(&mut self, keep_going: &mut dyn FnMut() -> bool) -> Turn {
        let poll = self.cfg.poll;
        if self.cfg.destination.is_none() {
            self.status.state = State::Unconfigured;
            self.write_status();
            return Turn::Sleep(poll);
        }
        let order = self.cfg.order;
        let batch = self.cfg.limits.queue_batch;
        let Some(index) = self.open_index() else {
            self.status.state = State::IndexMissing;
            self.write_status();
            return Turn::Sleep(poll);
        };
        let rows = match index.upload_queue(order == Order::NewestFirst, batch) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "unable to read the upload queue");
                self.index = None;
                return Turn::Sleep(poll);
            }
        };
        if let Ok((n, bytes)) = index.upload_backlog() {
            self.status.queue_recordings = n;
            self.status.queue_bytes = bytes;
        }
        let now = self.now();
        let gate = LinkGate {
            window_open: window_open(
                &self.cfg.schedule.windows,
                self.cfg.schedule.utc_offset_minutes,
                self.cfg.schedule.when_clock_untrusted,
                now,
            ),
            update_downloading: self.update_downloading(),
            link: self.link.clone(),
        };
        let candidates: Vec<Candidate> = rows
            .iter()
            .map(|r| Candidate {
                order: r.id.0,
                uploaded: false,
                deleted: false,
                attempts: self.attempts.get(&r.path).cloned().unwrap_or_default(),
            })
            .collect();
        self.status.parked = candidates.iter().filter(|c| c.attempts.parked).count() as u64;
        self.status.link_failures = self.link.failures;
        match pick_next(&candidates, order, &gate, now.monotonic_ms) {
            Pick::Idle => {
                self.status.state = State::Idle;
                self.status.wait_reason = None;
                self.write_status();
                Turn::Sleep(poll)
            }
            Pick::Wait { reason, until_ms } => {
                self.status.state = State::Waiting;
                self.status.wait_reason = Some(wait_reason(reason).into());
                self.write_status();
                let wait = until_ms.map_or(poll, |u| {
                    Duration::from_millis(u.saturating_sub(now.monotonic_ms)).min(poll)
                });
                Turn::Sleep(wait.max(Duration::from_millis(10)))
            }
            Pick::Upload(id) => {
                let Some(row) = rows.iter().find(|r| r.id.0 == id).cloned() else {
                    return Turn::Sleep(poll);
                };
                self.status.state = State::Uploading;
                self.status.wait_reason = None;
                self.write_status();
                let outcome = self.upload(&row, keep_going);
                self.record(&row, &outcome);
                Turn::Tried(outcome)
            }
        }
    }

    fn upload(&mut self, row: &UploadRow, keep_going: &mut dyn FnMut() -> bool) -> Outcome {
        let in_flight = self
            .stored
            .in_flight
            .clone()
            .filter(|f| f.recording == row.path);
        let (rate, burst, chunk) = (
            self.cfg.max_bytes_per_second,
            self.cfg.burst_bytes,
            self.cfg.limits.chunk_bytes,
        );
        let mut pacer = Pacer::new(rate, burst, chunk, keep_going);
        let queue_path = self.cfg.queue_path();
        let spool = self.cfg.spool_dir();
        let Some(index) = self.index.as_mut() else {
            return Outcome::Failed {
                failure: Failure {
                    scope: FailureScope::Link,
                    reason: "index".into(),
                },
                message: "the index is not open".into(),
            };
        };
        let mut persist = StatePersist {
            path: &queue_path,
            spool: &spool,
            stored: &mut self.stored,
        };
        let outcome =
            upload::upload_one(&self.cfg, index, row, in_flight, &mut persist, &mut pacer);
        self.status.sent_bytes_total += pacer.sent;
        outcome
    }

    fn record(&mut self, row: &UploadRow, outcome: &Outcome) {
        let now_ms = self.now_ms();
        match outcome {
            Outcome::Marked {
                key,
                object_bytes,
                recording_bytes,
            } => {
                tracing::info!(recording = %row.path, key = %key, bytes = object_bytes, "uploaded and marked");
                self.attempts.remove(&row.path);
                self.link = Attempts::default();
                self.status.uploaded_total += 1;
                self.status.uploaded_bytes_total += object_bytes;
                self.status.last_success_key = Some(key.clone());
                self.status.last_success_unix_s = self.now().wall_unix_s;
                self.recording_bytes_total += recording_bytes;
                self.object_bytes_total += object_bytes;
                if self.recording_bytes_total > 0 {
                    self.status.compression_permille = Some(
                        u64::try_from(
                            u128::from(self.object_bytes_total) * 1000
                                / u128::from(self.recording_bytes_total),
                        )
                        .unwrap_or(u64::MAX),
                    );
                }
            }
            Outcome::SkippedDeleted => {
                tracing::info!(recording = %row.path, "deleted by retention while queued: skipped");
                self.attempts.remove(&row.path);
                self.status.skipped_deleted_total += 1;
                if self
                    .stored
                    .in_flight
                    .as_ref()
                    .is_some_and(|f| f.recording == row.path)
                {
                    self.stored.in_flight = None;
                }
            }
            Outcome::Failed { failure, message } => {
                let jitter: f64 = rand::thread_rng().r#gen();
                *self
                    .status
                    .failures_by_reason
                    .entry(failure.reason.clone())
                    .or_default() += 1;
                self.status.last_failure = Some(LastFailure {
                    reason: failure.reason.clone(),
                    message: message.clone(),
                    at_unix_s: self.now().wall_unix_s,
                });
                match failure.scope {
                    FailureScope::Link => {
                        self.link = after_failure(
                            &self.cfg.retry,
                            &self.link,
                            &failure.reason,
                            now_ms,
                            jitter,
                        );
                        // The link never parks: it only backs off.
                        self.link.parked = false;
                        if self.link.failures >= self.cfg.retry.dead_letter_after() {
                            self.link.not_before_ms =
                                now_ms.saturating_add(fleet_core::upload::backoff_ms(
                                    &self.cfg.retry,
                                    self.link.failures,
                                    jitter,
                                ));
                        }
                        tracing::warn!(recording = %row.path, reason = %failure.reason, error = %message, failures = self.link.failures, "link failure; the queue backs off");
                    }
                    FailureScope::Recording => {
                        let a = self.attempts.entry(row.path.clone()).or_default();
                        *a = after_failure(&self.cfg.retry, a, &failure.reason, now_ms, jitter);
                        if a.parked {
                            tracing::error!(recording = %row.path, reason = %failure.reason, error = %message, failures = a.failures, "recording parked (dead-letter)");
                        } else {
                            tracing::warn!(recording = %row.path, reason = %failure.reason, error = %message, failures = a.failures, "upload failed; will retry");
                        }
                    }
                }
            }
        }
        // Bounded memory: forget the oldest retry records past the limit.
        if self.attempts.len() > self.cfg.limits.max_tracked {
            let mut keys: Vec<String> = self.attempts.keys().cloned().collect();
            keys.sort();
            for k in keys
                .into_iter()
                .take(self.attempts.len() - self.cfg.limits.max_tracked)
            {
                self.attempts.remove(&k);
            }
        }
        self.status.link_failures = self.link.failures;
        self.status.parked = self.attempts.values().filter(|a| a.parked).count() as u64;
        self.save_state();
        self.write_status();
    }

    /// Failures counted per reason, for tests and the status.
    #[must_use]
    pub fn failures_by_reason(&self) -> &BTreeMap<String, u64> {
        &self.status.failures_by_reason
    }
}
