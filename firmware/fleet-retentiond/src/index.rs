//! The recording index: SQLite in WAL mode, one row per promoted recording, soft deletes.
//!
//! Schema changes are migrations in [`MIGRATIONS`], applied in order and recorded in
//! `PRAGMA user_version`. **Migrations are additive only** (new tables, new columns with defaults,
//! new indexes), so a firmware rolled back to an older release keeps using an index a newer one
//! migrated: [`Index::open`] accepts a newer `user_version` and warns.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::retention::{Reason, Recording, RecordingId};
use rusqlite::{Connection, OptionalExtension, params};

/// Schema migrations; `MIGRATIONS[i]` takes `user_version` from `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: the recordings.
    "CREATE TABLE recordings (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        station TEXT NOT NULL,
        device TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        start_unix_ms INTEGER,
        start_trusted INTEGER NOT NULL DEFAULT 0,
        duration_ms INTEGER,
        sample_rate INTEGER,
        size_bytes INTEGER NOT NULL,
        uploaded INTEGER NOT NULL DEFAULT 0,
        analysed INTEGER NOT NULL DEFAULT 0,
        local_deleted INTEGER NOT NULL DEFAULT 0,
        deleted_reason TEXT
    );",
    // 2: crash-repaired segments, audio bytes, two-phase deletes, update reservations.
    "ALTER TABLE recordings ADD COLUMN repaired INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE recordings ADD COLUMN data_bytes INTEGER;
     ALTER TABLE recordings ADD COLUMN pending_unlink INTEGER NOT NULL DEFAULT 0;
     CREATE TABLE reservations (
        holder TEXT PRIMARY KEY,
        bytes INTEGER NOT NULL,
        boot_id TEXT NOT NULL,
        expires_boottime_ms INTEGER NOT NULL
     );",
    // 3: the plan's order and the pending deletions, without a table scan.
    "CREATE INDEX recordings_present ON recordings (local_deleted, sequence, id);
     CREATE INDEX recordings_pending ON recordings (pending_unlink) WHERE pending_unlink = 1;",
];

/// The schema version this build writes.
#[must_use]
pub fn latest_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// The holder name of the updater's reservation while it downloads a bundle (fleet-updated
/// takes it; fleet-uploaderd pauses while it is live).
pub const UPDATE_HOLDER: &str = "update";

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("unable to open index {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("unable to migrate index {path} to schema {version}")]
    Migrate {
        path: PathBuf,
        version: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("unable to {op} in the index")]
    Query {
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },
}

impl IndexError {
    /// The disk is full (SQLITE_FULL): releasing the ballast and retrying may help.
    #[must_use]
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            Self::Open { source, .. }
            | Self::Migrate { source, .. }
            | Self::Query { source, .. } => source,
        };
        matches!(
            source.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DiskFull)
        )
    }
}

fn q(op: &'static str) -> impl FnOnce(rusqlite::Error) -> IndexError {
    move |source| IndexError::Query { op, source }
}

/// A recording about to be indexed. `path` is relative to the recordings directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecording {
    pub path: String,
    pub station: String,
    pub device: String,
    pub sequence: u64,
    pub start_unix_ms: Option<i64>,
    pub start_trusted: bool,
    pub duration_ms: Option<u64>,
    pub sample_rate: Option<u32>,
    pub size_bytes: u64,
    pub data_bytes: Option<u64>,
    pub repaired: bool,
}

/// A row as reconciliation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowState {
    pub id: RecordingId,
    pub deleted: bool,
    pub pending_unlink: bool,
    pub size_bytes: u64,
}

/// Counts for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub present: u64,
    pub present_bytes: u64,
    pub not_uploaded: u64,
    pub deleted: u64,
    pub pending_unlink: u64,
}

/// A recording waiting for the uploader. `path` is relative to the recordings directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: RecordingId,
    pub path: String,
    pub station: String,
    pub device: String,
    pub sequence: u64,
    pub start_unix_ms: Option<i64>,
    pub start_trusted: bool,
    pub size_bytes: u64,
}

/// The index. One connection; other processes (the CLI) open their own.
#[derive(Debug)]
pub struct Index {
    conn: Connection,
    path: PathBuf,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Index {
    /// Opens (creating if needed) and migrates the index at `path`.
    ///
    /// # Errors
    /// The file cannot be opened, is not a database, or a migration fails.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let conn = Connection::open(path).map_err(|source| IndexError::Open {
            path: path.to_owned(),
            source,
        })?;
        let open_err = |source| IndexError::Open {
            path: path.to_owned(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        // WAL: readers (the CLI) never block the daemon; FULL: a commit survives power loss.
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "index is not in WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        let mut index = Self {
            conn,
            path: path.to_owned(),
        };
        index.migrate()?;
        Ok(index)
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw connection, for tests and the benchmark.
    #[must_use]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn migrate(&mut self) -> Result<(), IndexError> {
        let current: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| IndexError::Open {
                path: self.path.clone(),
                source,
            })?;
        if current > latest_version() {
            tracing::warn!(
                path = %self.path.display(),
                found = current,
                known = latest_version(),
                "index schema is newer than this build; using it (migrations are additive)"
            );
            return Ok(());
        }
        for (from, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(current).unwrap_or(0))
        {
            let version = i64::try_from(from + 1).unwrap_or(i64::MAX);
            let err = |source| IndexError::Migrate {
                path: self.path.clone(),
                version,
                source,
            };
            let tx = self.conn.transaction().map_err(err)?;
            tx.execute_batch(sql).map_err(err)?;
            tx.pragma_update(None, "user_version", version)
                .map_err(err)?;
            tx.commit().map_err(err)?;
            tracing::info!(path = %self.path.display(), version, "index migrated");
        }
        Ok(())
    }

    /// The schema version recorded in the file.
    ///
    /// # Errors
    /// The pragma cannot be read.
    pub fn schema_version(&self) -> Result<i64, IndexError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(q("read the schema version"))
    }

    /// Changes whenever another connection commits (the CLI setting flags or reserving space).
    ///
    /// # Errors
    /// The pragma cannot be read.
    pub fn data_version(&self) -> Result<i64, IndexError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(q("read the data version"))
    }

    /// Indexes recordings in one transaction. A path already present is left alone; a path
    /// whose row was deleted (a file with the same name came back) is revived with the new facts.
    /// Returns the ids of rows inserted or revived.
    ///
    /// # Errors
    /// The transaction fails (`is_disk_full` tells whether the ballast may help).
    pub fn insert(
        &mut self,
        recordings: &[NewRecording],
    ) -> Result<Vec<(RecordingId, usize)>, IndexError> {
        let tx = self.conn.transaction().map_err(q("begin an insert"))?;
        let mut out = Vec::with_capacity(recordings.len());
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO recordings (path, station, device, sequence, start_unix_ms,
                        start_trusted, duration_ms, sample_rate, size_bytes, data_bytes, repaired)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (path) DO UPDATE SET
                        station = excluded.station, device = excluded.device,
                        sequence = excluded.sequence, start_unix_ms = excluded.start_unix_ms,
                        start_trusted = excluded.start_trusted, duration_ms = excluded.duration_ms,
                        sample_rate = excluded.sample_rate, size_bytes = excluded.size_bytes,
                        data_bytes = excluded.data_bytes, repaired = excluded.repaired,
                        local_deleted = 0, deleted_reason = NULL,
                        pending_unlink = 0
                     WHERE local_deleted = 1 AND pending_unlink = 0
                     RETURNING id",
                )
                .map_err(q("prepare an insert"))?;
            for (i, r) in recordings.iter().enumerate() {
                let id: Option<i64> = stmt
                    .query_row(
                        params![
                            r.path,
                            r.station,
                            r.device,
                            to_i64(r.sequence),
                            r.start_unix_ms,
                            r.start_trusted,
                            r.duration_ms.map(to_i64),
                            r.sample_rate,
                            to_i64(r.size_bytes),
                            r.data_bytes.map(to_i64),
                            r.repaired
                        ],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(q("insert a recording"))?;
                if let Some(id) = id {
                    out.push((RecordingId(id), i));
                }
            }
        }
        tx.commit().map_err(q("commit an insert"))?;
        Ok(out)
    }

    /// Every present recording, as the plan sees it.
    ///
    /// The plan's `sequence` is the row id: the order in which recordings were promoted and
    /// indexed, station-wide and independent of the wall clock. The recorder's segment sequence
    /// counts per device, so with several devices (say 1-minute bat and 10-minute bird segments)
    /// it would interleave devices unevenly; it orders adoption instead (see
    /// [`crate::reconcile::reconcile`]) and panic without the index.
    ///
    /// # Errors
    /// The query fails.
    pub fn snapshot(&self) -> Result<Vec<Recording>, IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, sequence, start_unix_ms, start_trusted, size_bytes, uploaded, analysed
                 FROM recordings WHERE local_deleted = 0",
            )
            .map_err(q("prepare the snapshot"))?;
        let rows = stmt
            .query_map([], |r| {
                let start_ms: Option<i64> = r.get(2)?;
                let trusted: bool = r.get(3)?;
                Ok(Recording {
                    id: RecordingId(r.get(0)?),
                    sequence: to_u64(r.get(0)?),
                    trusted_start_unix_s: start_ms
                        .filter(|_| trusted)
                        .map(|ms| ms.div_euclid(1000)),
                    size_bytes: to_u64(r.get(4)?),
                    uploaded: r.get(5)?,
                    analysed: r.get(6)?,
                })
            })
            .map_err(q("read the snapshot"))?;
        rows.collect::<Result<_, _>>()
            .map_err(q("read the snapshot"))
    }

    /// Every row by path, deleted or not, for reconciliation.
    ///
    /// # Errors
    /// The query fails.
    pub fn rows_by_path(&self) -> Result<HashMap<String, RowState>, IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, id, local_deleted, pending_unlink, size_bytes FROM recordings")
            .map_err(q("prepare the row listing"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    RowState {
                        id: RecordingId(r.get(1)?),
                        deleted: r.get(2)?,
                        pending_unlink: r.get(3)?,
                        size_bytes: to_u64(r.get(4)?),
                    },
                ))
            })
            .map_err(q("list the rows"))?;
        rows.collect::<Result<_, _>>().map_err(q("list the rows"))
    }

    /// Row states of the given paths (those that have a row).
    ///
    /// # Errors
    /// The query fails.
    pub fn rows_by_path_for(&self, paths: &[String]) -> Result<Vec<RowState>, IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, local_deleted, pending_unlink, size_bytes FROM recordings WHERE path = ?1",
            )
            .map_err(q("prepare a row lookup"))?;
        let mut out = Vec::new();
        for p in paths {
            let row = stmt
                .query_row([p], |r| {
                    Ok(RowState {
                        id: RecordingId(r.get(0)?),
                        deleted: r.get(1)?,
                        pending_unlink: r.get(2)?,
                        size_bytes: to_u64(r.get(3)?),
                    })
                })
                .optional()
                .map_err(q("look up a row"))?;
            out.extend(row);
        }
        Ok(out)
    }

    /// Which of `paths` have a present row.
    ///
    /// # Errors
    /// The query fails.
    pub fn present_paths_among(&self, paths: &[String]) -> Result<HashSet<String>, IndexError> {
        // Many paths (a large flat directory listed again): one scan beats a lookup each.
        if paths.len() > 4_096 {
            let all = self.present_paths()?;
            return Ok(paths.iter().filter(|p| all.contains(*p)).cloned().collect());
        }
        Ok(paths
            .iter()
            .zip(self.rows_by_path_for_each(paths)?)
            .filter(|(_, present)| *present)
            .map(|(p, _)| p.clone())
            .collect())
    }

    /// How many rows are present (not deleted).
    ///
    /// # Errors
    /// The query fails.
    pub fn present_count(&self) -> Result<u64, IndexError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM recordings WHERE local_deleted = 0",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(to_u64)
            .map_err(q("count present rows"))
    }

    /// Every present row's path.
    ///
    /// # Errors
    /// The query fails.
    pub fn present_paths(&self) -> Result<HashSet<String>, IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM recordings WHERE local_deleted = 0")
            .map_err(q("prepare the path listing"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(q("list present paths"))?;
        rows.collect::<Result<_, _>>()
            .map_err(q("list present paths"))
    }

    fn rows_by_path_for_each(&self, paths: &[String]) -> Result<Vec<bool>, IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM recordings WHERE path = ?1 AND local_deleted = 0")
            .map_err(q("prepare a presence lookup"))?;
        paths
            .iter()
            .map(|p| stmt.exists([p]).map_err(q("look up a presence")))
            .collect()
    }

    /// The paths of the given rows.
    ///
    /// # Errors
    /// The query fails.
    pub fn paths(&self, ids: &[RecordingId]) -> Result<Vec<(RecordingId, String)>, IndexError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path FROM recordings WHERE id = ?1")
            .map_err(q("prepare a path lookup"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let path: Option<String> = stmt
                .query_row([id.0], |r| r.get(0))
                .optional()
                .map_err(q("look up a path"))?;
            if let Some(p) = path {
                out.push((*id, p));
            }
        }
        Ok(out)
    }

    /// First phase of a deletion: the intent, committed before any file is unlinked.
    ///
    /// # Errors
    /// The transaction fails.
    pub fn mark_deleting(&mut self, items: &[(RecordingId, &str)]) -> Result<(), IndexError> {
        let tx = self.conn.transaction().map_err(q("begin a deletion"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE recordings SET local_deleted = 1, deleted_reason = ?2, pending_unlink = 1
                     WHERE id = ?1",
                )
                .map_err(q("prepare a deletion"))?;
            for (id, reason) in items {
                stmt.execute(params![id.0, reason])
                    .map_err(q("mark a deletion"))?;
            }
        }
        tx.commit().map_err(q("commit a deletion"))
    }

    /// Second phase: the files are gone.
    ///
    /// # Errors
    /// The transaction fails.
    pub fn confirm_unlinked(&mut self, ids: &[RecordingId]) -> Result<(), IndexError> {
        let tx = self.conn.transaction().map_err(q("begin a confirmation"))?;
        {
            let mut stmt = tx
                .prepare_cached("UPDATE recordings SET pending_unlink = 0 WHERE id = ?1")
                .map_err(q("prepare a confirmation"))?;
            for id in ids {
                stmt.execute([id.0]).map_err(q("confirm a deletion"))?;
            }
        }
        tx.commit().map_err(q("commit a confirmation"))
    }

    /// Rows whose files vanished outside our control (or were deleted in panic mode).
    ///
    /// # Errors
    /// The transaction fails.
    pub fn mark_gone(&mut self, ids: &[RecordingId], reason: &str) -> Result<(), IndexError> {
        let tx = self.conn.transaction().map_err(q("begin marking gone"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE recordings SET local_deleted = 1, pending_unlink = 0,
                        deleted_reason = ?2 WHERE id = ?1",
                )
                .map_err(q("prepare marking gone"))?;
            for id in ids {
                stmt.execute(params![id.0, reason])
                    .map_err(q("mark a row gone"))?;
            }
        }
        tx.commit().map_err(q("commit marking gone"))
    }

    /// Rows whose deletion was committed but not confirmed (a crash in between).
    ///
    /// # Errors
    /// The query fails.
    pub fn pending_unlinks(&self) -> Result<Vec<(RecordingId, String)>, IndexError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, path FROM recordings WHERE pending_unlink = 1")
            .map_err(q("prepare the pending listing"))?;
        let rows = stmt
            .query_map([], |r| Ok((RecordingId(r.get(0)?), r.get(1)?)))
            .map_err(q("list pending deletions"))?;
        rows.collect::<Result<_, _>>()
            .map_err(q("list pending deletions"))
    }

    /// Sets the uploaded and/or analysed flags of the recordings at `paths` (relative to the
    /// recordings directory). Returns how many rows changed.
    ///
    /// # Errors
    /// The transaction fails.
    pub fn set_flags(
        &mut self,
        paths: &[String],
        uploaded: Option<bool>,
        analysed: Option<bool>,
    ) -> Result<usize, IndexError> {
        let tx = self.conn.transaction().map_err(q("begin setting flags"))?;
        let mut changed = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE recordings SET uploaded = coalesce(?2, uploaded),
                        analysed = coalesce(?3, analysed) WHERE path = ?1",
                )
                .map_err(q("prepare setting flags"))?;
            for p in paths {
                changed += stmt
                    .execute(params![p, uploaded, analysed])
                    .map_err(q("set flags"))?;
            }
        }
        tx.commit().map_err(q("commit flags"))?;
        Ok(changed)
    }

    /// The recordings waiting for the uploader (present, not uploaded, no deletion pending), in
    /// the recording order (the row id), oldest or newest first, at most `limit`.
    ///
    /// # Errors
    /// The query fails.
    pub fn upload_queue(
        &self,
        newest_first: bool,
        limit: usize,
    ) -> Result<Vec<UploadRow>, IndexError> {
        let sql = if newest_first {
            "SELECT id, path, station, device, sequence, start_unix_ms, start_trusted, size_bytes
             FROM recordings WHERE local_deleted = 0 AND uploaded = 0 AND pending_unlink = 0
             ORDER BY id DESC LIMIT ?1"
        } else {
            "SELECT id, path, station, device, sequence, start_unix_ms, start_trusted, size_bytes
             FROM recordings WHERE local_deleted = 0 AND uploaded = 0 AND pending_unlink = 0
             ORDER BY id ASC LIMIT ?1"
        };
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(q("prepare the upload queue"))?;
        let rows = stmt
            .query_map([to_i64(limit as u64)], |r| {
                Ok(UploadRow {
                    id: RecordingId(r.get(0)?),
                    path: r.get(1)?,
                    station: r.get(2)?,
                    device: r.get(3)?,
                    sequence: to_u64(r.get(4)?),
                    start_unix_ms: r.get(5)?,
                    start_trusted: r.get(6)?,
                    size_bytes: to_u64(r.get(7)?),
                })
            })
            .map_err(q("read the upload queue"))?;
        rows.collect::<Result<_, _>>()
            .map_err(q("read the upload queue"))
    }

    /// Recordings and bytes waiting for the uploader.
    ///
    /// # Errors
    /// The query fails.
    pub fn upload_backlog(&self) -> Result<(u64, u64), IndexError> {
        self.conn
            .query_row(
                "SELECT count(*), coalesce(sum(size_bytes), 0) FROM recordings
                 WHERE local_deleted = 0 AND uploaded = 0 AND pending_unlink = 0",
                [],
                |r| Ok((to_u64(r.get(0)?), to_u64(r.get(1)?))),
            )
            .map_err(q("count the upload backlog"))
    }

    /// Whether the recording at `path` is still on the station: `None` without a row, `Some(false)`
    /// once retention deleted it (or is deleting it).
    ///
    /// # Errors
    /// The query fails.
    pub fn is_present(&self, path: &str) -> Result<Option<bool>, IndexError> {
        self.conn
            .query_row(
                "SELECT local_deleted = 0 AND pending_unlink = 0 FROM recordings WHERE path = ?1",
                [path],
                |r| r.get::<_, bool>(0),
            )
            .optional()
            .map_err(q("look up a recording"))
    }

    /// Whether `holder` has a live reservation (same boot, not expired): the updater's download
    /// holds one, and the uploader leaves the link to it meanwhile.
    ///
    /// # Errors
    /// The query fails.
    pub fn has_reservation(
        &self,
        holder: &str,
        boot_id: &str,
        boottime_ms: u64,
    ) -> Result<bool, IndexError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM reservations
                 WHERE holder = ?1 AND boot_id = ?2 AND expires_boottime_ms > ?3",
                params![holder, boot_id, to_i64(boottime_ms)],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(q("look up a reservation"))
    }

    /// Records (or replaces) a reservation of free space for `holder`.
    ///
    /// # Errors
    /// The statement fails.
    pub fn reserve(
        &self,
        holder: &str,
        bytes: u64,
        boot_id: &str,
        expires_boottime_ms: u64,
    ) -> Result<(), IndexError> {
        self.conn
            .execute(
                "INSERT INTO reservations (holder, bytes, boot_id, expires_boottime_ms)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (holder) DO UPDATE SET bytes = excluded.bytes,
                    boot_id = excluded.boot_id, expires_boottime_ms = excluded.expires_boottime_ms",
                params![holder, to_i64(bytes), boot_id, to_i64(expires_boottime_ms)],
            )
            .map(drop)
            .map_err(q("record a reservation"))
    }

    /// Drops a reservation. Returns whether one existed.
    ///
    /// # Errors
    /// The statement fails.
    pub fn release(&self, holder: &str) -> Result<bool, IndexError> {
        self.conn
            .execute("DELETE FROM reservations WHERE holder = ?1", [holder])
            .map(|n| n > 0)
            .map_err(q("drop a reservation"))
    }

    /// The bytes reserved by live reservations (same boot, not expired).
    ///
    /// # Errors
    /// The query fails.
    pub fn reserved_bytes(&self, boot_id: &str, boottime_ms: u64) -> Result<u64, IndexError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(bytes), 0) FROM reservations
                 WHERE boot_id = ?1 AND expires_boottime_ms > ?2",
                params![boot_id, to_i64(boottime_ms)],
                |r| r.get::<_, i64>(0),
            )
            .map(to_u64)
            .map_err(q("sum the reservations"))
    }

    /// Counts for the metrics.
    ///
    /// # Errors
    /// The query fails.
    pub fn counts(&self) -> Result<Counts, IndexError> {
        self.conn
            .query_row(
                "SELECT
                    coalesce(sum(local_deleted = 0), 0),
                    coalesce(sum(CASE WHEN local_deleted = 0 THEN size_bytes END), 0),
                    coalesce(sum(local_deleted = 0 AND uploaded = 0), 0),
                    coalesce(sum(local_deleted = 1), 0),
                    coalesce(sum(pending_unlink = 1), 0)
                 FROM recordings",
                [],
                |r| {
                    Ok(Counts {
                        present: to_u64(r.get(0)?),
                        present_bytes: to_u64(r.get(1)?),
                        not_uploaded: to_u64(r.get(2)?),
                        deleted: to_u64(r.get(3)?),
                        pending_unlink: to_u64(r.get(4)?),
                    })
                },
            )
            .map_err(q("count the rows"))
    }

    /// Reason recorded for a path's deletion, if deleted.
    ///
    /// # Errors
    /// The query fails.
    pub fn deleted_reason(&self, path: &str) -> Result<Option<String>, IndexError> {
        self.conn
            .query_row(
                "SELECT deleted_reason FROM recordings WHERE path = ?1 AND local_deleted = 1",
                [path],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(q("read a deletion reason"))
    }
}

/// The text stored for a plan's reason.
#[must_use]
pub fn reason_text(reason: Reason) -> &'static str {
    reason.as_str()
}
