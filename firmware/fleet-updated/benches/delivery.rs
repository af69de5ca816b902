//! Bundle delivery over a loopback mosquitto, printed next to `sha256sum` of the same file.
//!
//! `cargo bench -p fleet-updated --bench delivery` (FLEET_BENCH_MIB=32 sets the bundle size).
//!
//! 1. Throughput: a simulated station receives the bundle as retained 256 KiB chunks, checks
//!    each chunk, writes it, fsyncs, and hashes the whole file; timed by the station itself
//!    from accepting the offer to its `verified` event.
//! 2. Resume: only the first half of the chunks is on the broker when the station starts; the
//!    broker is restarted once the station holds them, then the rest is published; the bench
//!    prints how many chunk bytes the broker had to send again.
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{COMPATIBLE, StationOptions, spawn};
use fleet_core::update::{PhaseName, Report};
use fleet_proto::DEFAULT_CHUNK_SIZE;
use fleet_sim::Behaviour;
use fleet_testkit::operator::{offer_to_device, test_key};
use fleet_testkit::{Mosquitto, Operator, Watcher};

const WAIT: Duration = Duration::from_secs(300);

fn mib(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let size_mib: usize = std::env::var("FLEET_BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let version = semver::Version::new(9, 0, 0);
    let bundle = common::bundle("9.0.0", Behaviour::Normal, size_mib * 1024 * 1024);
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bench.bundle");
    std::fs::write(&file, &bundle)?;
    let size = bundle.len() as u64;

    // sha256sum of the same file, same run.
    let t = Instant::now();
    let out = std::process::Command::new("sha256sum")
        .arg(&file)
        .output()?;
    let sha_time = t.elapsed();
    anyhow::ensure!(out.status.success(), "sha256sum failed");

    // 1. Throughput.
    let broker = Mosquitto::start()?;
    let op = Operator::connect(&broker, "bench-op", test_key(7)).await?;
    let mut watch = Watcher::connect(&broker, "bench-watch").await?;
    let t = Instant::now();
    let m = op
        .publish_bundle(&bundle, COMPATIBLE, &version, DEFAULT_CHUNK_SIZE)
        .await?;
    let publish_time = t.elapsed();
    let opts = || StationOptions {
        chunk_window: 8,
        download_space_bytes: 4 * size,
        ..Default::default()
    };
    let stn = spawn("bench-1", &broker, &op.public_hex(), opts());
    watch
        .wait_state("bench-1", WAIT, |s| s.phase == PhaseName::Idle)
        .await?;
    op.publish_offer(&offer_to_device("bench-1", "bench", 1, &m)?, None, None)
        .await?;
    let accepted = watch
        .wait_event("bench-1", WAIT, |e| {
            matches!(e.event, Report::OfferAccepted { .. })
        })
        .await?;
    let verified = watch
        .wait_event("bench-1", WAIT, |e| {
            matches!(e.event, Report::Verified { .. })
        })
        .await?;
    let delivery = Duration::from_millis(verified.at.monotonic_ms - accepted.at.monotonic_ms);
    let summary = stn.stop().await;
    drop(watch);
    drop(op);
    drop(broker);

    // 2. Resume after a broker restart at 50 % (a download at full speed would be over before
    // the restart, so only half the chunks are there until then).
    let mut broker = Mosquitto::start()?;
    let op = Operator::connect(&broker, "bench-op", test_key(7)).await?;
    let mut watch = Watcher::connect(&broker, "bench-watch").await?;
    let half_chunks = m.chunk_count() / 2;
    op.publish_chunks(&m, &bundle, 0..half_chunks).await?;
    op.publish_manifest(&m, None).await?;
    let stn = spawn("bench-2", &broker, &op.public_hex(), opts());
    watch
        .wait_state("bench-2", WAIT, |s| s.phase == PhaseName::Idle)
        .await?;
    op.publish_offer(&offer_to_device("bench-2", "bench", 1, &m)?, None, None)
        .await?;
    let half_bytes = u64::from(half_chunks) * u64::from(DEFAULT_CHUNK_SIZE);
    let half = watch
        .wait_state("bench-2", WAIT, |s| {
            s.progress.is_some_and(|p| p.done_bytes >= half_bytes)
        })
        .await?;
    let held_at_cut = half.progress.map(|p| p.done_bytes).unwrap_or(0);
    drop(op);
    broker.restart()?;
    let mut watch = Watcher::connect(&broker, "bench-watch-2").await?;
    let op = Operator::connect(&broker, "bench-op-2", test_key(7)).await?;
    op.publish_chunks(&m, &bundle, half_chunks..m.chunk_count())
        .await?;
    watch
        .wait_event("bench-2", WAIT, |e| {
            matches!(e.event, Report::Verified { .. })
        })
        .await?;
    let resumed = stn.stop().await;

    println!(
        "bundle: {size} bytes ({size_mib} MiB), chunks of {} KiB, window 8",
        DEFAULT_CHUNK_SIZE / 1024
    );
    println!(
        "sha256sum of the same file:           {:>8.1} MiB/s ({:.3} s)",
        mib(size, sha_time),
        sha_time.as_secs_f64()
    );
    println!(
        "delivery (received, chunk-verified, written, fsynced, whole-file verified): {:>8.1} MiB/s ({:.3} s)",
        mib(size, delivery),
        delivery.as_secs_f64()
    );
    println!(
        "operator publish into mosquitto:      {:>8.1} MiB/s ({:.3} s)",
        mib(size, publish_time),
        publish_time.as_secs_f64()
    );
    println!(
        "stored {} bytes, re-sent {} bytes in the uninterrupted run",
        summary.stats.stored_chunk_bytes, summary.stats.resent_chunk_bytes
    );
    println!(
        "resume: broker restarted with {held_at_cut} of {size} bytes held ({:.0} %); after the restart the station stored {} more bytes and was sent {} bytes it already held",
        held_at_cut as f64 * 100.0 / size as f64,
        resumed.stats.stored_chunk_bytes.saturating_sub(held_at_cut),
        resumed.stats.resent_chunk_bytes
    );
    Ok(())
}
