//! The imperative shell: open the index, reconcile, then loop on filesystem events and the plan
//! cycle, carrying out what [`fleet_core::retention::plan`] returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fleet_core::retention::{self, Disk, Plan, RecordingId, Tier};
use fleet_core::time::Now;
use serde::Serialize;

use crate::archive;
use crate::ballast;
use crate::config::{Config, TrustTime};
use crate::disk;
use crate::emergency;
use crate::index::{Index, IndexError};
use crate::reconcile::{self, ReconcileError};
use crate::watch::{Changes, Watcher};

/// Bound of the write-rate window's samples (one per indexed file).
const MAX_RATE_SAMPLES: usize = 100_000;

/// The state of the station as the metrics file reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Metrics {
    /// `ok`, `rebuilt`, `unusable` (panic without the index) or `refused`.
    pub index: String,
    pub alarm: Option<String>,
    pub healthy: bool,
    pub tier: String,
    pub usage_permille: u32,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub reserve_bytes: u64,
    pub write_rate_bytes_per_s: u64,
    pub floor_breached: bool,
    pub time_trusted: bool,
    pub ballast_present: bool,
    pub recordings_present: u64,
    pub recordings_present_bytes: u64,
    pub recordings_not_uploaded: u64,
    pub pending_files: u64,
    pub deletions_total: BTreeMap<String, u64>,
    pub last_shortfall_bytes: u64,
    pub cycles: u64,
}

/// What one cycle did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleOutcome {
    pub tier: Tier,
    pub deleted: Vec<String>,
    pub shortfall_bytes: u64,
}

/// The daemon's state between turns.
#[derive(Debug)]
pub struct Daemon {
    cfg: Config,
    index: Option<Index>,
    started: Instant,
    refused: Option<String>,
    rebuilt: bool,
    rate: VecDeque<(Instant, u64)>,
    pending: Changes,
    dir_mtimes: archive::DirCache,
    metrics: Metrics,
    /// Bumped by every change this process makes to the index.
    generation: u64,
    /// (data version, generation, tier) of the last full plan that found nothing to delete: while
    /// they hold, nothing eligible changed, so the snapshot is not read again.
    idle: Option<(i64, u64, Tier)>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("unable to create state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
}

fn wal_files(path: &std::path::Path) -> [PathBuf; 3] {
    let s = path.as_os_str().to_owned();
    let with = |suffix: &str| {
        let mut p = s.clone();
        p.push(suffix);
        PathBuf::from(p)
    };
    [path.to_owned(), with("-wal"), with("-shm")]
}

/// Opens the index, releasing the ballast if the disk is full and moving a corrupt database
/// aside to rebuild it. `None` when it stays unusable.
fn open_index(cfg: &Config) -> (Option<Index>, bool) {
    let path = cfg.index_path();
    let existed = path.exists();
    match Index::open(&path) {
        Ok(i) => return (Some(i), !existed),
        Err(e) if e.is_disk_full() => {
            tracing::warn!(error = %e, "index cannot open on a full disk; releasing the ballast");
            let _ = ballast::release(&cfg.ballast_path());
            if let Ok(i) = Index::open(&path) {
                return (Some(i), !existed);
            }
        }
        Err(e) => {
            let aside = cfg.state_dir.join(format!(
                "index.sqlite.broken-{}",
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            ));
            tracing::error!(error = %e, aside = %aside.display(), "index unusable; moving it aside and rebuilding");
            for (i, f) in wal_files(&path).iter().enumerate() {
                let target = if i == 0 {
                    aside.clone()
                } else {
                    PathBuf::from(format!(
                        "{}{}",
                        aside.display(),
                        if i == 1 { "-wal" } else { "-shm" }
                    ))
                };
                let _ = std::fs::rename(f, target);
            }
            if let Ok(i) = Index::open(&path) {
                return (Some(i), true);
            }
        }
    }
    tracing::error!(path = %path.display(), "index unusable; running without it (panic tier only)");
    (None, false)
}

fn boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
        })
        .unwrap_or(0)
}

/// The boot id (reservations expire with the boot).
#[must_use]
pub fn boot_id(cfg: &Config) -> String {
    std::fs::read_to_string(&cfg.boot_id_path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Milliseconds on `CLOCK_BOOTTIME`, shared by every process of this boot.
#[must_use]
pub fn now_boottime_ms() -> u64 {
    boottime_ms()
}

impl Daemon {
    /// Opens (or rebuilds) the index. Does not reconcile yet.
    ///
    /// # Errors
    /// The state directory cannot be created.
    pub fn open(cfg: Config) -> Result<Self, DaemonError> {
        // An unmounted data partition: create nothing on the filesystem underneath (the state
        // directory lives on the data partition too), refuse, and wait for the mount.
        let refused =
            match reconcile::check_mounted(cfg.mount_point.as_deref(), &cfg.recordings_dir) {
                Err(e) if e.is_refusal() => {
                    tracing::error!(error = %e, "data directory unavailable; touching nothing");
                    Some(e.to_string())
                }
                _ => None,
            };
        let (index, rebuilt) = if refused.is_some() {
            (None, false)
        } else {
            std::fs::create_dir_all(&cfg.state_dir).map_err(|source| DaemonError::StateDir {
                path: cfg.state_dir.clone(),
                source,
            })?;
            open_index(&cfg)
        };
        Ok(Self {
            cfg,
            index,
            started: Instant::now(),
            refused,
            rebuilt,
            rate: VecDeque::new(),
            pending: Changes::default(),
            dir_mtimes: HashMap::new(),
            metrics: Metrics::default(),
            generation: 0,
            idle: None,
        })
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The index, when usable.
    #[must_use]
    pub fn index(&self) -> Option<&Index> {
        self.index.as_ref()
    }

    /// The current metrics.
    #[must_use]
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether reconciliation refused (unmounted, or too many rows missing).
    #[must_use]
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Reconciles the index with the disk (healing deletions made without the index first).
    /// A refusal is recorded as an alarm and returned; nothing in the index changes then.
    ///
    /// # Errors
    /// A refusal or a failure.
    pub fn reconcile(&mut self) -> Result<reconcile::Report, ReconcileError> {
        let Some(index) = self.index.as_mut() else {
            reconcile::check_mounted(self.cfg.mount_point.as_deref(), &self.cfg.recordings_dir)?;
            return Ok(reconcile::Report::default());
        };
        let journal = emergency::read_journal(&self.cfg.state_dir);
        let result = reconcile::reconcile(
            index,
            &self.cfg.recordings_dir,
            self.cfg.mount_point.as_deref(),
            self.cfg.max_missing_fraction,
            self.cfg.limits.max_scan_depth,
            self.cfg.limits.insert_batch,
            &journal,
        );
        match &result {
            Ok(report) => {
                self.refused = None;
                if !journal.is_empty()
                    && let Err(e) = emergency::clear_journal(&self.cfg.state_dir)
                {
                    tracing::warn!(error = %e, "unable to clear the panic journal");
                }
                tracing::info!(
                    files = report.files,
                    adopted = report.adopted,
                    vanished = report.vanished,
                    finished_unlinks = report.finished_unlinks,
                    healed = report.healed_from_journal,
                    took_ms = u64::try_from(report.took.as_millis()).unwrap_or(u64::MAX),
                    "index reconciled"
                );
            }
            Err(e) if e.is_refusal() => {
                tracing::error!(error = %e, "reconciliation refused; the index is left untouched");
                self.refused = Some(e.to_string());
            }
            Err(e) => tracing::error!(error = %e, "reconciliation failed"),
        }
        result
    }

    /// The time every plan is made at: wall-clock time only while the station's clock rule
    /// trusts the clock (ADR 0004), unless `trust-time` overrides it.
    fn now(&self) -> Now {
        let mono = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match self.cfg.trust_time {
            TrustTime::Auto => fleet_facts::clock::now(
                &self.cfg.clock_roots,
                &fleet_core::clock::ClockPolicy::default(),
                mono,
            ),
            TrustTime::Always => Now::trusted(mono, fleet_facts::clock::wall_unix_s()),
            TrustTime::Never => Now::untrusted(mono),
        }
    }

    fn write_rate(&mut self) -> u64 {
        let window = self.cfg.write_rate_window;
        while self.rate.front().is_some_and(|(t, _)| t.elapsed() > window) {
            self.rate.pop_front();
        }
        let bytes: u64 = self.rate.iter().map(|(_, b)| b).sum();
        // Over the window, or the uptime if shorter, but never under a minute (or the window):
        // a burst right after start must not read as a huge rate and trip the floor.
        let floor = window.min(Duration::from_secs(60));
        let span = self
            .started
            .elapsed()
            .min(window)
            .max(floor)
            .as_secs()
            .max(1);
        bytes / span
    }

    /// Indexes what the watcher reported. Returns the number of rows added. Only recordings seen
    /// through events (`count_rate`) feed the write rate: a catch-up after downtime is not a rate.
    ///
    /// # Errors
    /// The index fails.
    pub fn index_changes(
        &mut self,
        changes: Changes,
        count_rate: bool,
    ) -> Result<usize, IndexError> {
        let Some(index) = self.index.as_mut() else {
            return Ok(0);
        };
        let root = &self.cfg.recordings_dir;
        let new: Vec<_> = changes
            .added
            .iter()
            .filter_map(|rel| archive::describe(root, rel))
            .collect();
        let inserted = if new.is_empty() {
            Vec::new()
        } else {
            index.insert(&new)?
        };
        self.generation += 1;
        for (id, i) in &inserted {
            let r = &new[*i];
            tracing::debug!(id = id.0, path = %r.path, bytes = r.size_bytes, repaired = r.repaired, "indexed");
            if !count_rate {
                continue;
            }
            if self.rate.len() >= MAX_RATE_SAMPLES {
                self.rate.pop_front();
            }
            self.rate.push_back((Instant::now(), r.size_bytes));
        }
        let gone: Vec<String> = changes
            .removed
            .into_iter()
            .filter(|rel| !root.join(rel).exists())
            .collect();
        if !gone.is_empty() {
            let rows = index.rows_by_path_for(&gone)?;
            let ids: Vec<RecordingId> = rows.iter().filter(|r| !r.deleted).map(|r| r.id).collect();
            if !ids.is_empty() {
                tracing::warn!(
                    count = ids.len(),
                    "recordings removed outside retention; marked vanished"
                );
                index.mark_gone(&ids, "vanished")?;
            }
        }
        Ok(inserted.len())
    }

    /// The periodic cheap catch-up: lists only directories whose mtime changed, indexes files
    /// the events missed.
    ///
    /// # Errors
    /// The directory or the index fails.
    pub fn catch_up(&mut self) -> Result<usize, DaemonError> {
        if self.index.is_none() || self.refused.is_some() {
            return Ok(0);
        }
        let mut found = Vec::new();
        let mut listed = Vec::new();
        archive::scan_changed(
            &self.cfg.recordings_dir,
            self.cfg.limits.max_scan_depth,
            false,
            &mut self.dir_mtimes,
            &mut found,
            &mut listed,
        )
        .map_err(ReconcileError::from)?;
        let Some(index) = self.index.as_ref() else {
            return Ok(0);
        };
        if found.is_empty() {
            return Ok(0);
        }
        // Every directory was listed (a flat archive always is): when the files and the present
        // rows agree in number, the events missed nothing (an add and a removal both missed would
        // cancel out; the exact check is the startup reconciliation).
        let complete = listed.len() == self.dir_mtimes.len();
        if complete && index.present_count()? == found.len() as u64 {
            return Ok(0);
        }
        let known =
            index.present_paths_among(&found.iter().map(|f| f.rel.clone()).collect::<Vec<_>>())?;
        let mut changes = Changes::default();
        for f in found {
            if !known.contains(&f.rel) {
                changes.added.insert(f.rel);
            }
        }
        let n = self.index_changes(changes, false)?;
        if n > 0 {
            tracing::info!(
                adopted = n,
                dirs = listed.len(),
                "catch-up indexed files the events missed"
            );
        }
        Ok(n)
    }

    /// One plan cycle: measure, plan, delete. Keeps the metrics current.
    ///
    /// # Errors
    /// The disk cannot be measured.
    pub fn cycle(&mut self) -> Result<CycleOutcome, DaemonError> {
        self.metrics.cycles += 1;
        if self.refused.is_some()
            && matches!(
                self.cfg.mount_point.as_deref().map(disk::is_mount_point),
                Some(Ok(false))
            )
        {
            // Unmounted: the directory we see is not the archive. Touch nothing.
            self.metrics.index = "refused".into();
            self.metrics.alarm.clone_from(&self.refused);
            self.metrics.healthy = false;
            return Ok(CycleOutcome {
                tier: Tier::Calm,
                deleted: Vec::new(),
                shortfall_bytes: 0,
            });
        }
        let disk = disk::measure(&self.cfg.recordings_dir)?;
        let now = self.now();
        let rate = self.write_rate();
        let reserved = match &self.index {
            Some(i) => i
                .reserved_bytes(&boot_id(&self.cfg), boottime_ms())
                .unwrap_or(0),
            None => 0,
        };
        let reserve = self.cfg.update_reserve_bytes.max(reserved);
        let policy = self.cfg.policy_now();
        let quick = retention::plan(&[], &policy, disk, reserve, rate, now);
        let mut outcome = CycleOutcome {
            tier: quick.tier,
            deleted: Vec::new(),
            shortfall_bytes: 0,
        };

        if self.index.is_none() || self.refused.is_some() {
            // Panic without the index (or with an index we refuse to trust): file names only.
            if quick.need_bytes > 0 {
                outcome.deleted = self.delete_without_index(&policy, disk, reserve, rate, now);
            }
            self.update_metrics(disk, reserve, rate, now, &quick);
            return Ok(outcome);
        }

        let mut plan = quick;
        let data_version = self
            .index
            .as_ref()
            .and_then(|i| i.data_version().ok())
            .unwrap_or(-1);
        let idle_key = (data_version, self.generation, plan.tier);
        if plan.need_bytes > 0 && self.idle == Some(idle_key) {
            // Nothing eligible changed since the last plan found nothing: do not re-read.
            outcome.shortfall_bytes = plan.shortfall_bytes();
        } else if plan.need_bytes > 0 {
            match self.index.as_ref().map(Index::snapshot) {
                Some(Ok(snapshot)) => {
                    plan = retention::plan(&snapshot, &policy, disk, reserve, rate, now);
                }
                Some(Err(e)) => tracing::error!(error = %e, "unable to read the index snapshot"),
                None => {}
            }
            self.idle = plan.deletions.is_empty().then_some(idle_key);
            tracing::info!(
                tier = plan.tier.as_str(),
                usage_permille = plan.usage_permille,
                need_bytes = plan.need_bytes,
                planned = plan.deletions.len(),
                planned_bytes = plan.planned_bytes,
                floor = plan.floor_breached,
                "retention plan"
            );
            match self.apply(&plan) {
                Some(deleted) => outcome.deleted = deleted,
                None => {
                    // The index cannot record deletions: protect the disk by file names.
                    outcome.deleted = self.delete_without_index(&policy, disk, reserve, rate, now);
                }
            }
            outcome.shortfall_bytes = plan.shortfall_bytes();
            if plan.tier == Tier::Panic
                && plan.shortfall_bytes() > 0
                && let Ok(true) = ballast::release(&self.cfg.ballast_path())
            {
                tracing::warn!("ballast released: the plan cannot free enough this cycle");
            }
        }
        if plan.tier == Tier::Calm {
            self.restore_ballast(disk, reserve);
        }
        self.update_metrics(disk, reserve, rate, now, &plan);
        Ok(outcome)
    }

    /// Carries out a plan: intent committed, files unlinked, each logged, then confirmed.
    /// `None` when the index cannot record the deletions (the caller falls back to file names).
    fn apply(&mut self, plan: &Plan) -> Option<Vec<String>> {
        if plan.deletions.is_empty() {
            return Some(Vec::new());
        }
        let index = self.index.as_mut()?;
        let ids: Vec<RecordingId> = plan.deletions.iter().map(|d| d.id).collect();
        let reasons: HashMap<RecordingId, &'static str> = plan
            .deletions
            .iter()
            .map(|d| (d.id, d.reason.as_str()))
            .collect();
        let paths = match index.paths(&ids) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "unable to look up the planned recordings");
                return None;
            }
        };
        self.generation += 1;
        let items: Vec<(RecordingId, &str)> = paths
            .iter()
            .map(|(id, _)| (*id, reasons.get(id).copied().unwrap_or("panic")))
            .collect();
        let mut marked = index.mark_deleting(&items);
        if let Err(e) = &marked
            && e.is_disk_full()
        {
            tracing::warn!("index full; releasing the ballast to commit the deletions");
            let _ = ballast::release(&self.cfg.ballast_path());
            marked = index.mark_deleting(&items);
        }
        if let Err(e) = marked {
            tracing::error!(error = %e, "unable to record deletions; deleting without the index this cycle");
            return None;
        }
        let mut done = Vec::with_capacity(paths.len());
        let mut deleted = Vec::with_capacity(paths.len());
        let mut dirs = std::collections::BTreeSet::new();
        for (id, rel) in &paths {
            let path = self.cfg.recordings_dir.join(rel);
            let reason = reasons.get(id).copied().unwrap_or("panic");
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(id = id.0, path = %rel, reason, "recording deleted");
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(id = id.0, path = %rel, reason, "recording already gone");
                }
                Err(e) => {
                    tracing::error!(id = id.0, path = %rel, error = %e, "unable to delete a recording");
                    continue;
                }
            }
            *self
                .metrics
                .deletions_total
                .entry(reason.to_owned())
                .or_default() += 1;
            if let Some(parent) = path.parent() {
                dirs.insert(parent.to_owned());
            }
            done.push(*id);
            deleted.push(rel.clone());
        }
        for d in dirs {
            let _ = fleet_durable::sync_dir(&d);
        }
        if let Err(e) = index.confirm_unlinked(&done) {
            tracing::warn!(error = %e, "unable to confirm deletions; the next start finishes them");
        }
        Some(deleted)
    }

    fn restore_ballast(&self, disk: Disk, reserve: u64) {
        let path = self.cfg.ballast_path();
        let size = self.cfg.ballast_bytes;
        if size == 0 || matches!(ballast::present(&path, size), Ok(true)) {
            return;
        }
        // Only with plenty of room: the ballast must never push the disk into a tier.
        let target = self.cfg.policy.housekeeping_at.of(disk.capacity());
        if disk.used_bytes.saturating_add(reserve).saturating_add(size) < target {
            match ballast::create(&path, size) {
                Ok(()) => tracing::info!(bytes = size, "ballast restored"),
                Err(e) => tracing::warn!(error = %e, "unable to restore the ballast"),
            }
        }
    }

    /// Deletes by file names alone (no index, or one that cannot record deletions) and
    /// counts what went; returns the deleted paths.
    fn delete_without_index(
        &mut self,
        policy: &retention::Policy,
        disk: Disk,
        reserve: u64,
        rate: u64,
        now: Now,
    ) -> Vec<String> {
        match emergency::run_once(
            &self.cfg.recordings_dir,
            &self.cfg.state_dir,
            self.cfg.limits.max_scan_depth,
            policy,
            disk,
            reserve,
            rate,
            now,
        ) {
            Ok(o) => {
                *self
                    .metrics
                    .deletions_total
                    .entry("panic-no-index".into())
                    .or_default() += o.deleted.len() as u64;
                o.deleted
            }
            Err(e) => {
                tracing::error!(error = %e, "emergency deletion failed");
                Vec::new()
            }
        }
    }

    fn update_metrics(&mut self, disk: Disk, reserve: u64, rate: u64, now: Now, plan: &Plan) {
        let m = &mut self.metrics;
        m.index = match (&self.index, &self.refused, self.rebuilt) {
            (_, Some(_), _) => "refused",
            (None, None, _) => "unusable",
            (Some(_), None, true) => "rebuilt",
            (Some(_), None, false) => "ok",
        }
        .into();
        m.alarm = self
            .refused
            .clone()
            .or_else(|| self.index.is_none().then(|| "index unusable".to_owned()));
        m.tier = plan.tier.as_str().into();
        m.usage_permille = plan.usage_permille;
        m.used_bytes = disk.used_bytes;
        m.available_bytes = disk.available_bytes;
        m.reserve_bytes = reserve;
        m.write_rate_bytes_per_s = rate;
        m.floor_breached = plan.floor_breached;
        m.time_trusted = now.wall_unix_s.is_some();
        m.ballast_present = matches!(
            ballast::present(&self.cfg.ballast_path(), self.cfg.ballast_bytes),
            Ok(true)
        );
        m.last_shortfall_bytes = plan.shortfall_bytes();
        m.pending_files = (self.pending.added.len() + self.pending.removed.len()) as u64;
        if let Some(Ok(c)) = self.index.as_ref().map(Index::counts) {
            m.recordings_present = c.present;
            m.recordings_present_bytes = c.present_bytes;
            m.recordings_not_uploaded = c.not_uploaded;
        }
        m.healthy = m.alarm.is_none() && !(plan.tier == Tier::Panic && plan.shortfall_bytes() > 0);
    }

    /// Writes the metrics file (atomically), if configured.
    pub fn write_metrics(&self) {
        let Some(path) = &self.cfg.metrics_path else {
            return;
        };
        let write = || -> std::io::Result<()> {
            let json = serde_json::to_vec_pretty(&self.metrics).map_err(std::io::Error::other)?;
            Ok(fleet_durable::WriteOptions::new()
                .create_parents()
                .write(path, &json)?)
        };
        if let Err(e) = write() {
            tracing::warn!(error = %e, path = %path.display(), "unable to write metrics");
        }
    }

    /// Takes the watcher's changes for the next turn.
    pub fn queue(&mut self, changes: Changes) {
        let limit = self.cfg.limits.max_pending_paths;
        for p in changes.added {
            if self.pending.added.len() < limit {
                self.pending.removed.remove(&p);
                self.pending.added.insert(p);
            } else {
                self.pending.overflowed = true;
            }
        }
        for p in changes.removed {
            if self.pending.removed.len() < limit {
                self.pending.added.remove(&p);
                self.pending.removed.insert(p);
            } else {
                self.pending.overflowed = true;
            }
        }
        self.pending.overflowed |= changes.overflowed;
    }

    /// Indexes what is queued; a lost event triggers a catch-up.
    ///
    /// # Errors
    /// The index or the archive fails.
    pub fn flush(&mut self) -> Result<(), DaemonError> {
        let pending = std::mem::take(&mut self.pending);
        let overflowed = pending.overflowed;
        if let Err(e) = self.index_changes(pending, true) {
            if e.is_disk_full() {
                let _ = ballast::release(&self.cfg.ballast_path());
            }
            return Err(e.into());
        }
        if overflowed {
            self.catch_up()?;
        }
        Ok(())
    }

    /// Forgets the directory mtimes so the next catch-up lists everything.
    pub fn forget_dir_times(&mut self) {
        self.dir_mtimes.clear();
    }

    /// Sets up the watcher on the recordings directory.
    ///
    /// # Errors
    /// inotify fails.
    pub fn watcher(&self) -> Result<Watcher, DaemonError> {
        Ok(Watcher::new(
            &self.cfg.recordings_dir,
            self.cfg.limits.max_scan_depth,
        )?)
    }

    /// Time until the next cycle is due, given when the last one ran.
    #[must_use]
    pub fn until(last: Instant, every: Duration) -> Duration {
        every.saturating_sub(last.elapsed())
    }
}
