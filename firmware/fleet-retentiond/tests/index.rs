//! The index against real SQLite files on disk.
#![allow(clippy::unwrap_used)]

use fleet_retentiond::index::{Index, MIGRATIONS, NewRecording, latest_version};
use rusqlite::Connection;

fn rec(path: &str, sequence: u64) -> NewRecording {
    NewRecording {
        path: path.into(),
        station: "st-1".into(),
        device: "mic0".into(),
        sequence,
        start_unix_ms: Some(1_795_373_580_000),
        start_trusted: true,
        duration_ms: Some(60_000),
        sample_rate: Some(384_000),
        size_bytes: 1000,
        data_bytes: Some(900),
        repaired: false,
    }
}

#[test]
fn migrations_from_every_earlier_schema_reach_the_latest_and_keep_rows() {
    for start in 0..MIGRATIONS.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            for (i, sql) in MIGRATIONS.iter().take(start).enumerate() {
                c.execute_batch(sql).unwrap();
                c.pragma_update(None, "user_version", i64::try_from(i + 1).unwrap())
                    .unwrap();
            }
            if start >= 1 {
                // A row as schema 1 knew it, flagged uploaded.
                c.execute(
                    "INSERT INTO recordings (path, station, device, sequence, size_bytes, uploaded)
                     VALUES ('old.wav', 'st', 'mic', 3, 500, 1)",
                    [],
                )
                .unwrap();
            }
        }
        let mut index = Index::open(&path).unwrap();
        assert_eq!(
            index.schema_version().unwrap(),
            latest_version(),
            "from {start}"
        );
        index.insert(&[rec("new.wav", 4)]).unwrap();
        let snap = index.snapshot().unwrap();
        assert_eq!(snap.len(), if start >= 1 { 2 } else { 1 }, "from {start}");
        if start >= 1 {
            let old = snap.iter().find(|r| r.size_bytes == 500).unwrap();
            assert_eq!(
                old.sequence,
                u64::try_from(old.id.0).unwrap(),
                "the plan orders by row id"
            );
            assert!(old.uploaded, "flags survive the migration from {start}");
            assert_eq!(old.size_bytes, 500);
        }
        index.reserve("update", 10, "boot", 100).unwrap();
        assert_eq!(index.reserved_bytes("boot", 50).unwrap(), 10);
    }
}

#[test]
fn an_index_from_a_newer_release_is_used_after_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.sqlite");
    {
        let mut index = Index::open(&path).unwrap();
        index.insert(&[rec("a.wav", 1)]).unwrap();
        // A newer release added a column and bumped the version.
        let c = index.connection();
        c.execute_batch("ALTER TABLE recordings ADD COLUMN future INTEGER NOT NULL DEFAULT 7;")
            .unwrap();
        c.pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
    }
    let mut index = Index::open(&path).unwrap();
    assert_eq!(index.schema_version().unwrap(), latest_version() + 1);
    index.insert(&[rec("b.wav", 2)]).unwrap();
    assert_eq!(index.snapshot().unwrap().len(), 2);
}

#[test]
fn deletions_are_soft_two_phase_and_keep_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut index = Index::open(&dir.path().join("i.sqlite")).unwrap();
    let ids = index.insert(&[rec("a.wav", 1), rec("b.wav", 2)]).unwrap();
    let a = ids[0].0;
    index.mark_deleting(&[(a, "housekeeping")]).unwrap();
    assert_eq!(
        index.pending_unlinks().unwrap(),
        vec![(a, "a.wav".to_owned())]
    );
    assert_eq!(index.snapshot().unwrap().len(), 1);
    index.confirm_unlinked(&[a]).unwrap();
    assert!(index.pending_unlinks().unwrap().is_empty());
    assert_eq!(
        index.deleted_reason("a.wav").unwrap().as_deref(),
        Some("housekeeping")
    );
    let counts = index.counts().unwrap();
    assert_eq!((counts.present, counts.deleted), (1, 1));
    // Inserting the same path again (a re-scan) does not resurrect a row whose deletion is pending,
    // and leaves a present row alone.
    assert!(index.insert(&[rec("b.wav", 2)]).unwrap().is_empty());
}

#[test]
fn flags_set_by_another_process_are_seen_through_the_data_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("i.sqlite");
    let mut daemon = Index::open(&path).unwrap();
    daemon.insert(&[rec("a.wav", 1)]).unwrap();
    let before = daemon.data_version().unwrap();
    let mut cli = Index::open(&path).unwrap();
    assert_eq!(
        cli.set_flags(&["a.wav".into(), "missing.wav".into()], Some(true), None)
            .unwrap(),
        1
    );
    assert_ne!(daemon.data_version().unwrap(), before);
    let snap = daemon.snapshot().unwrap();
    assert!(snap[0].uploaded && !snap[0].analysed);
    let wal: String = daemon
        .connection()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(wal, "wal");
}
