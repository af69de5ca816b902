//! The daemon on a real, small filesystem that really fills (a loop-mounted ext4 image; a tmpfs
//! with `size=` where loop mounts are impossible), with the recorder's file layout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{Station, record_segment, wait_for};
use fleet_retentiond::{config, daemon::Daemon, emergency};

const MIB: usize = 1 << 20;

fn fill_to(st: &mut Station, fraction: f64, bytes: usize) -> Vec<String> {
    let mut names = Vec::new();
    while st.fs.usage() < fraction {
        names.push(st.record(bytes, false).expect("room to record"));
    }
    names
}

fn seq_of(name: &str) -> u64 {
    name.trim_end_matches(".wav")
        .rsplit('_')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_index_matches_disk(st: &Station) {
    let (present, deleted, pending) = st.rows();
    assert_eq!(pending, 0, "no deletion left half-done");
    assert_eq!(
        present,
        st.files(),
        "every file has a present row and every present row a file"
    );
    for (path, _) in &deleted {
        assert!(
            !st.recordings.join(path).exists(),
            "{path} is deleted in the index but on disk"
        );
    }
}

#[test]
fn tiers_fire_in_order_as_the_disk_fills() {
    let mut st = Station::new(
        64,
        "[policy]\nanalyser = true\nupdate-reserve-mib = 0\nfloor-seconds = 0\nfloor-target-seconds = 0\n\
         [daemon]\nballast-mib = 1\n",
    );
    // Five uploaded and analysed, five uploaded only, then never-uploaded recordings.
    let a: Vec<String> = (0..5).map(|_| st.record(MIB, false).unwrap()).collect();
    let b: Vec<String> = (0..5).map(|_| st.record(MIB, false).unwrap()).collect();
    assert_eq!(st.once(), 0);
    let mark = |st: &Station, flags: &[&str], names: &[String]| {
        let mut args = vec!["mark"];
        args.extend_from_slice(flags);
        args.extend(names.iter().map(String::as_str));
        assert!(st.cli(&args).status.success());
    };
    mark(&st, &["--uploaded", "--analysed"], &a);
    mark(&st, &["--uploaded"], &b);
    let mut c = fill_to(&mut st, 0.72, MIB);
    assert!(
        st.fs.usage() < 0.80,
        "the test steps must land in one tier each"
    );

    // Housekeeping: only uploaded-and-analysed recordings go.
    assert_eq!(st.once(), 0);
    let (_, deleted, _) = st.rows();
    assert!(!deleted.is_empty());
    assert!(
        deleted
            .iter()
            .all(|(p, r)| r == "housekeeping" && a.contains(p)),
        "{deleted:?}"
    );
    assert!(st.fs.usage() < 0.70);
    assert_eq!(st.metrics()["tier"], "housekeeping");
    let seen: BTreeSet<(String, String)> = deleted.into_iter().collect();

    // Defensive: uploaded recordings go, never the un-uploaded ones.
    c.extend(fill_to(&mut st, 0.82, MIB));
    assert!(st.fs.usage() < 0.90);
    assert_eq!(st.once(), 0);
    let (_, deleted, _) = st.rows();
    let new: Vec<_> = deleted
        .iter()
        .filter(|d| !seen.contains(*d))
        .cloned()
        .collect();
    assert!(!new.is_empty());
    assert!(
        new.iter()
            .all(|(p, r)| r == "defensive" && (a.contains(p) || b.contains(p))),
        "{new:?}"
    );
    assert!(new.iter().any(|(p, _)| b.contains(p)));
    assert!(st.fs.usage() < 0.80);
    let seen: BTreeSet<(String, String)> = deleted.into_iter().collect();

    // Panic: the rest of the uploaded ones, then the oldest un-uploaded by sequence.
    c.extend(fill_to(&mut st, 0.92, MIB));
    assert_eq!(st.once(), 0);
    let (present, deleted, _) = st.rows();
    let new: Vec<_> = deleted
        .iter()
        .filter(|d| !seen.contains(*d))
        .cloned()
        .collect();
    assert!(new.iter().all(|(_, r)| r == "panic"), "{new:?}");
    let lost: BTreeSet<u64> = new
        .iter()
        .filter(|(p, _)| c.contains(p))
        .map(|(p, _)| seq_of(p))
        .collect();
    assert!(!lost.is_empty());
    let kept_c: Vec<u64> = present
        .iter()
        .filter(|p| c.contains(p))
        .map(|p| seq_of(p))
        .collect();
    assert!(
        kept_c.iter().all(|k| lost.iter().all(|l| l < k)),
        "oldest first: lost {lost:?}, kept {kept_c:?}"
    );
    assert!(
        present.iter().all(|p| c.contains(p)),
        "every uploaded recording went before any other"
    );
    assert!(st.fs.usage() < 0.90);
    assert_index_matches_disk(&st);
}

#[test]
fn recording_goes_on_while_the_disk_fills_more_than_twice_over() {
    let mut st = Station::new(
        32,
        "[policy]\nupdate-reserve-mib = 0\nfloor-seconds = 1\nfloor-target-seconds = 3\nmax-deletions-per-cycle = 50\n\
         [daemon]\nballast-mib = 1\ncycle-seconds = 0.1\ncatch-up-seconds = 1\nwrite-rate-window-seconds = 5\n",
    );
    let mut daemon = st.spawn();
    assert!(wait_for(Duration::from_secs(10), || st
        .metrics_path()
        .exists()));
    let segment = 256 * 1024;
    let mut refused = 0;
    for _ in 0..(80 * MIB / segment) {
        // An unprivileged recorder can use f_bavail only.
        if st.fs.available() < (segment + 64 * 1024) as u64 {
            refused += 1;
        } else {
            st.record(segment, false)
                .expect("the recorder can always write");
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    assert_eq!(
        refused, 0,
        "the recorder found the disk full {refused} times"
    );
    assert_eq!(daemon.stop(), Some(0), "SIGTERM stops the daemon cleanly");
    assert_eq!(st.once(), 0);
    let (_, deleted, _) = st.rows();
    assert!(
        deleted.len() > 100,
        "the disk really filled: {} deletions",
        deleted.len()
    );
    assert!(
        deleted
            .iter()
            .all(|(_, r)| r == "panic" || r == "floor" || r == "vanished"),
        "{deleted:?}"
    );
    assert!(deleted.iter().any(|(_, r)| r == "panic" || r == "floor"));
    assert_index_matches_disk(&st);
}

#[test]
fn the_index_survives_sigkill_at_any_point() {
    let st = Station::new(
        32,
        "[policy]\nupdate-reserve-mib = 0\nfloor-seconds = 0\nfloor-target-seconds = 0\nmax-deletions-per-cycle = 5\n\
         [daemon]\nballast-mib = 1\ncycle-seconds = 0.02\ncatch-up-seconds = 0.5\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, recorder) = (stop.clone(), written.clone(), st.recorder.clone());
        std::thread::spawn(move || {
            let mut seq = 1;
            while !stop.load(Ordering::Relaxed) {
                if record_segment(&recorder, seq, 200 * 1024, seq % 7 == 0).is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                seq += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // A small xorshift, seeded from the clock and printed, so a failure can be replayed.
    let mut x: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("sigkill seed {x}");
    for _ in 0..12 {
        let mut d = st.spawn();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        std::thread::sleep(Duration::from_millis(50 + x % 500));
        d.kill();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(st.once(), 0);
    let (_, deleted, _) = st.rows();
    assert!(written.load(Ordering::Relaxed) > 100);
    assert!(
        !deleted.is_empty(),
        "the daemon was deleting while it was killed"
    );
    assert_index_matches_disk(&st);
}

#[test]
fn a_deleted_or_corrupt_database_is_rebuilt() {
    let mut st = Station::new(
        64,
        "[policy]\nupdate-reserve-mib = 0\n[daemon]\nballast-mib = 1\n",
    );
    for i in 0..10 {
        st.record(100 * 1024, i % 5 == 0).unwrap();
    }
    assert_eq!(st.once(), 0);
    assert_eq!(st.rows().0.len(), 10);
    for f in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(st.state.join(f));
    }
    assert_eq!(st.once(), 0);
    assert_eq!(st.rows().0, st.files());
    assert_eq!(st.metrics()["index"], "rebuilt");
    let repaired: i64 = st
        .index()
        .connection()
        .query_row(
            "SELECT count(*) FROM recordings WHERE repaired = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        repaired, 2,
        "crash-repaired segments are indexed and marked"
    );

    std::fs::write(
        st.state.join("index.sqlite"),
        b"this is not a database at all, but garbage",
    )
    .unwrap();
    assert_eq!(st.once(), 0);
    assert_eq!(st.rows().0, st.files());
    let aside = std::fs::read_dir(&st.state).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("index.sqlite.broken-")
    });
    assert!(aside, "the corrupt database is kept aside for inspection");
}

#[test]
fn an_unmounted_data_directory_is_refused() {
    let mut st = Station::new(
        64,
        "[policy]\nupdate-reserve-mib = 0\n[daemon]\nballast-mib = 0\n",
    );
    for _ in 0..6 {
        st.record(100 * 1024, false).unwrap();
    }
    assert_eq!(st.once(), 0);
    st.fs.unmount();
    // The recorder (or anything) may recreate the directory on the root filesystem.
    std::fs::create_dir_all(&st.recordings).unwrap();
    assert_eq!(st.once(), 3, "refused");
    let m = st.metrics();
    assert_eq!(m["index"], "refused");
    assert_eq!(m["healthy"], false);
    assert!(
        m["alarm"]
            .as_str()
            .unwrap()
            .contains("not a mounted filesystem")
    );
    assert!(
        !st.state.exists(),
        "no index is created on the filesystem underneath"
    );
    std::fs::remove_dir_all(st.fs.mnt.join("recorder")).unwrap();
    std::fs::remove_dir_all(st.fs.mnt.join("fleet")).ok();
    st.fs.remount();
    assert_eq!(st.once(), 0);
    assert_eq!(
        st.rows().0.len(),
        6,
        "nothing was marked deleted while unmounted"
    );
}

#[test]
fn more_than_half_of_the_recordings_missing_is_refused() {
    let mut st = Station::new(
        64,
        "[policy]\nupdate-reserve-mib = 0\n[daemon]\nballast-mib = 0\n",
    );
    let names: Vec<String> = (0..6)
        .map(|_| st.record(100 * 1024, false).unwrap())
        .collect();
    assert_eq!(st.once(), 0);
    for n in &names[..4] {
        std::fs::remove_file(st.recordings.join(n)).unwrap();
    }
    assert_eq!(st.once(), 3);
    assert_eq!(st.rows().0.len(), 6, "rows are not mass-deleted");
    assert!(st.metrics()["alarm"].as_str().unwrap().contains("4 of 6"));
    // One missing file is ordinary: it is marked vanished.
    std::fs::write(st.fs.mnt.join("x"), b"").unwrap();
    let mut st2 = st;
    st2.write_config(
        "[policy]\nupdate-reserve-mib = 0\n[daemon]\nballast-mib = 0\nmax-missing-fraction = 0.7\n",
    );
    assert_eq!(st2.once(), 0);
    let (present, deleted, _) = st2.rows();
    assert_eq!(present.len(), 2);
    assert!(deleted.iter().all(|(_, r)| r == "vanished"));
}

#[test]
fn panic_without_the_index_deletes_oldest_by_sequence_and_the_index_heals_after() {
    let mut st = Station::new(
        64,
        "[policy]\nupdate-reserve-mib = 0\nfloor-seconds = 0\nfloor-target-seconds = 0\n[daemon]\nballast-mib = 0\n",
    );
    let mut names = fill_to(&mut st, 0.5, MIB);
    assert_eq!(st.once(), 0);
    names.extend(fill_to(&mut st, 0.92, MIB));
    let cfg = config::load(&st.config).unwrap();
    let disk = fleet_retentiond::disk::measure(&st.recordings).unwrap();
    let out = emergency::run_once(
        &st.recordings,
        &st.state,
        4,
        &cfg.policy,
        disk,
        0,
        0,
        fleet_core::time::Now::untrusted(0),
    )
    .unwrap();
    assert!(!out.deleted.is_empty());
    assert!(st.fs.usage() < 0.90);
    // Oldest first by the sequence in the file names.
    let mut by_seq = names.clone();
    by_seq.sort_by_key(|n| seq_of(n));
    assert_eq!(out.deleted, by_seq[..out.deleted.len()].to_vec());
    assert_eq!(emergency::read_journal(&st.state), out.deleted);

    // The index heals: the journal's deletions are recorded with their reason, not as "vanished",
    // and do not count towards the missing-half refusal.
    let mut d = Daemon::open(cfg).unwrap();
    let report = d.reconcile().unwrap();
    assert_eq!(report.healed_from_journal, out.deleted.len() as u64);
    drop(d);
    let (_, deleted, _) = st.rows();
    assert!(
        deleted.iter().all(|(_, r)| r == "panic-no-index"),
        "{deleted:?}"
    );
    assert_eq!(deleted.len(), out.deleted.len());
    assert!(emergency::read_journal(&st.state).is_empty());
    assert_index_matches_disk(&st);
}

#[test]
fn the_updater_gets_its_reserve_and_a_health_check() {
    let mut st = Station::new(
        64,
        "[policy]\nupdate-reserve-mib = 0\n[daemon]\nballast-mib = 1\ncycle-seconds = 0.1\n",
    );
    let names = fill_to(&mut st, 0.6, MIB);
    let mut daemon = st.spawn();
    assert!(wait_for(Duration::from_secs(10), || st
        .metrics_path()
        .exists()));
    assert_eq!(st.rows().0.len(), names.len());
    let mut args = vec!["mark", "--uploaded"];
    args.extend(names.iter().map(String::as_str));
    assert!(st.cli(&args).status.success());
    assert!(st.cli(&["status"]).status.success(), "healthy while calm");
    // Ask for a quarter of the disk (60 % + 25 %: the defensive tier): the daemon frees uploaded
    // recordings until it is free.
    let want = fleet_retentiond::disk::measure(&st.fs.mnt)
        .unwrap()
        .capacity()
        / 4;
    let out = st.cli(&[
        "reserve",
        "--holder",
        "update",
        "--bytes",
        &want.to_string(),
        "--wait-seconds",
        "20",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(st.fs.available() >= want);
    let (_, deleted, _) = st.rows();
    assert!(
        !deleted.is_empty()
            && deleted
                .iter()
                .all(|(_, r)| r == "housekeeping" || r == "defensive")
    );
    assert!(st.cli(&["release", "--holder", "update"]).status.success());
    assert_eq!(daemon.stop(), Some(0));
}

#[test]
fn a_daemon_started_before_the_mount_alarms_then_waits_for_it() {
    let mut st = Station::new(
        64,
        "[policy]\nupdate-reserve-mib = 0\n[daemon]\nballast-mib = 0\ncycle-seconds = 0.1\ncatch-up-seconds = 0.2\n",
    );
    for _ in 0..4 {
        st.record(100 * 1024, false).unwrap();
    }
    assert_eq!(st.once(), 0);
    st.fs.unmount();
    let index_state = |st: &Station| {
        std::fs::read_to_string(st.metrics_path())
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|m| m["index"].as_str().map(str::to_owned))
    };
    let _ = std::fs::remove_file(st.metrics_path());
    let mut daemon = st.spawn();
    assert!(wait_for(Duration::from_secs(10), || index_state(&st)
        .as_deref()
        == Some("refused")));
    assert!(
        !st.recordings.exists(),
        "nothing created on the filesystem underneath"
    );
    st.fs.remount();
    assert!(wait_for(Duration::from_secs(10), || index_state(&st)
        .as_deref()
        == Some("ok")));
    st.record(100 * 1024, false).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || st.rows().0.len() == 5),
        "indexing resumed"
    );
    assert_eq!(daemon.stop(), Some(0));
    assert_index_matches_disk(&st);
}
