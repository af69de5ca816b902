//! Benchmark (not a test): a million indexed recordings.
//!
//! Prints the time to compute a plan, the startup reconciliation time, and the index size on disk.
//! Targets: plan under 100 ms, reconciliation under 30 s.
//!
//!     CARGO_TARGET_DIR=/work/target-retention cargo bench -p fleet-retentiond --bench retention
//!
//! `FLEET_BENCH_RECORDINGS` changes the count (default 1000000); `FLEET_BENCH_DIR` the directory
//! the temporary archive and index are made in (default the system temp dir; `/dev/shm` makes the
//! million files quickly, at the price of a warm, memory-backed filesystem). The files are created
//! empty (reconciliation reads names and sizes, not audio) and removed at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::fs::File;
use std::time::{Duration, Instant};

use fleet_core::retention::{self, Disk, Policy};
use fleet_core::time::Now;
use fleet_retentiond::index::{Index, NewRecording};
use fleet_retentiond::reconcile;

fn name(seq: u64) -> String {
    let t = 1_795_373_580 + seq * 60;
    let (h, m, s) = (t / 3600 % 24, t / 60 % 60, t % 60);
    let day = 22 + t / 86_400 - 1_795_373_580 / 86_400;
    // The day field wraps into a tolerant but unrealistic date after a few days; irrelevant here.
    format!(
        "2026{:04}T{h:02}{m:02}{s:02}Z_st-1_mic0_{seq:07}.wav",
        1100 + day % 100
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let n: u64 = std::env::var("FLEET_BENCH_RECORDINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = match std::env::var_os("FLEET_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    println!(
        "retention benchmark: {n} recordings in {}",
        dir.path().display()
    );

    let t = Instant::now();
    for seq in 1..=n {
        File::create(data.join(name(seq))).unwrap();
    }
    println!(
        "  create {n} files:             {:>10.1} ms",
        ms(t.elapsed())
    );

    let db = dir.path().join("index.sqlite");
    let mut index = Index::open(&db).unwrap();
    let size = 46_080_000u64; // one minute at 384 kHz, 16 bit, mono
    let t = Instant::now();
    let mut batch = Vec::with_capacity(10_000);
    for seq in 1..=n {
        batch.push(NewRecording {
            path: name(seq),
            station: "st-1".into(),
            device: "mic0".into(),
            sequence: seq,
            start_unix_ms: Some(1_795_373_580_000 + i64::try_from(seq).unwrap() * 60_000),
            start_trusted: seq % 2 == 0,
            duration_ms: Some(60_000),
            sample_rate: Some(384_000),
            size_bytes: 0,
            data_bytes: Some(size),
            repaired: seq % 1000 == 0,
        });
        if batch.len() == 10_000 {
            index.insert(&batch).unwrap();
            batch.clear();
        }
    }
    index.insert(&batch).unwrap();
    println!(
        "  index {n} rows:               {:>10.1} ms",
        ms(t.elapsed())
    );
    // 40 % uploaded and analysed, 30 % uploaded, 30 % neither; sizes as recorded.
    index
        .connection()
        .execute_batch(&format!(
            "UPDATE recordings SET size_bytes = {size},
                uploaded = (sequence % 10) < 7, analysed = (sequence % 10) < 4;
             PRAGMA wal_checkpoint(TRUNCATE);"
        ))
        .unwrap();
    let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);

    let t = Instant::now();
    let snapshot = index.snapshot().unwrap();
    let load = t.elapsed();
    assert_eq!(snapshot.len() as u64, n);

    let total = size * n;
    let policy = Policy {
        analyser_configured: true,
        ..Policy::default()
    };
    for (label, permille, now) in [
        (
            "housekeeping (72 %)",
            720u64,
            Now::trusted(0, 1_800_000_000),
        ),
        ("defensive (82 %)", 820, Now::untrusted(0)),
        ("panic (95 %)", 950, Now::untrusted(0)),
    ] {
        let capacity = total * 1000 / permille;
        let disk = Disk {
            used_bytes: total,
            available_bytes: capacity - total,
        };
        let mut times = Vec::new();
        let mut plan = None;
        for _ in 0..11 {
            let t = Instant::now();
            plan = Some(retention::plan(&snapshot, &policy, disk, 0, 800_000, now));
            times.push(t.elapsed());
        }
        times.sort();
        let plan = plan.unwrap();
        println!(
            "  plan, {label:<20} {:>10.1} ms median ({} deletions, tier {})",
            ms(times[times.len() / 2]),
            plan.deletions.len(),
            plan.tier.as_str()
        );
    }
    println!("  snapshot load (SQLite):       {:>10.1} ms", ms(load));
    drop(snapshot);

    let report = reconcile::reconcile(&mut index, &data, None, 0.5, 4, 2_000, &[]).unwrap();
    assert_eq!(report.files, n);
    assert_eq!(report.adopted + report.vanished, 0);
    println!(
        "  startup reconciliation:       {:>10.1} ms (all {n} rows and files present)",
        ms(report.took)
    );

    let wal = std::fs::metadata(dir.path().join("index.sqlite-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "  index size on disk:           {:>10.1} MiB ({:.0} bytes per recording; WAL {:.1} MiB)",
        db_bytes as f64 / 1048576.0,
        db_bytes as f64 / n as f64,
        wal as f64 / 1048576.0
    );
    drop(index);

    // The periodic catch-up through the daemon: nothing changed, then one new file in the (flat)
    // recordings directory, which makes the catch-up list it whole.
    let cfg = fleet_retentiond::config::parse(&format!(
        "recordings-dir = {:?}\nstate-dir = {:?}\ntrust-time = \"never\"\n",
        data,
        dir.path()
    ))
    .map_err(|e| format!("{e:?}"))
    .unwrap();
    let mut daemon = fleet_retentiond::daemon::Daemon::open(cfg).unwrap();
    daemon.catch_up().unwrap();
    let t = Instant::now();
    assert_eq!(daemon.catch_up().unwrap(), 0);
    println!(
        "  catch-up, nothing changed:    {:>10.1} ms",
        ms(t.elapsed())
    );
    std::thread::sleep(Duration::from_millis(20));
    File::create(data.join(name(n + 1))).unwrap();
    let t = Instant::now();
    assert_eq!(daemon.catch_up().unwrap(), 1);
    println!(
        "  catch-up, one file missed:    {:>10.1} ms (lists the flat directory, compares)",
        ms(t.elapsed())
    );
    // The usual case: the recorder promoted a file, the events indexed it, the directory changed.
    std::thread::sleep(Duration::from_millis(20));
    let extra = name(n + 2);
    File::create(data.join(&extra)).unwrap();
    let mut changes = fleet_retentiond::watch::Changes::default();
    changes.added.insert(extra);
    daemon.queue(changes);
    daemon.flush().unwrap();
    let t = Instant::now();
    assert_eq!(daemon.catch_up().unwrap(), 0);
    println!(
        "  catch-up, events kept up:     {:>10.1} ms (lists the flat directory, counts agree)",
        ms(t.elapsed())
    );
    drop(daemon);

    // A deleted database: rebuild by adopting every file.
    std::fs::remove_file(&db).unwrap();
    let _ = std::fs::remove_file(dir.path().join("index.sqlite-wal"));
    let _ = std::fs::remove_file(dir.path().join("index.sqlite-shm"));
    let mut fresh = Index::open(&db).unwrap();
    let report = reconcile::reconcile(&mut fresh, &data, None, 0.5, 4, 2_000, &[]).unwrap();
    assert_eq!(report.adopted, n + 2);
    println!(
        "  rebuild from files (no index):{:>10.1} ms",
        ms(report.took)
    );
}
