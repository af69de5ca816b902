//! Bundle delivery over a loopback mosquitto, printed next to `sha256sum` of the same file.
//!
//! `cargo bench -p fleet-updated --bench delivery` (FLEET_BENCH_MIB=32 sets the bundle size,
//! FLEET_BENCH_WINDOW the station's `chunk-window`, default the configuration's default).
//!
//! 1. Throughput: a simulated station receives the bundle as retained 256 KiB chunks, checks
//!    each chunk, writes it, fsyncs, and hashes the whole file; timed by the station itself
//!    from accepting the offer to its `verified` event, printed next to `sha256sum` of the
//!    same file and as their ratio, with where the station's time went.
//! 2. Resume: only the first half of the chunks is on the broker when the station starts; the
//!    broker is restarted once the station holds them, then the rest is published; the bench
//!    prints how many chunk bytes the broker had to send again.
//! 3. Delta: a station that committed the bundle (it came whole) is offered the next version,
//!    256 KiB changed, pushed by `fleetctl` with a delta from the first; timed from accepting
//!    the offer to `verified` (the base check, the patch's chunks, the rebuild and the
//!    verification), printed as the bundle's bytes per second next to `sha256sum`.
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
    let window: usize = std::env::var("FLEET_BENCH_WINDOW")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(fleet_updated::config::DEFAULT_CHUNK_WINDOW);
    let opts = || StationOptions {
        chunk_window: window,
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
    let delivered = watch
        .wait_event("bench-1", WAIT, |e| {
            matches!(e.event, Report::Delivered { .. })
        })
        .await?;
    let verified = watch
        .wait_event("bench-1", WAIT, |e| {
            matches!(e.event, Report::Verified { .. })
        })
        .await?;
    let delivery = Duration::from_millis(verified.at.monotonic_ms - accepted.at.monotonic_ms);
    let verify_time = Duration::from_millis(verified.at.monotonic_ms - delivered.at.monotonic_ms);
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
    drop(watch);
    drop(op);
    drop(broker);

    // 3. Delta.
    let mut payload: Vec<u8> = (0..size_mib * 1024 * 1024)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let third = payload.len() / 3;
    for (j, b) in payload[third..third + (256 << 10)].iter_mut().enumerate() {
        *b = (j * 13 % 241) as u8;
    }
    let next = semver::Version::new(9, 1, 0);
    let two = fleet_sim::bundle::build(&next, COMPATIBLE, Behaviour::Normal, &payload);
    let two_file = dir.path().join("next.bundle");
    std::fs::write(&two_file, &two)?;
    let broker = Mosquitto::start()?;
    let op = Operator::connect(&broker, "bench-op", test_key(7)).await?;
    let mut watch = Watcher::connect(&broker, "bench-watch").await?;
    let stn = spawn("bench-3", &broker, &op.public_hex(), opts());
    watch
        .wait_state("bench-3", WAIT, |s| s.phase == PhaseName::Idle)
        .await?;
    let addr = fleetctl::connection::BrokerAddr {
        host: broker.host().to_owned(),
        port: broker.port(),
    };
    let request = |file: &std::path::Path, v: &semver::Version, from: Vec<std::path::PathBuf>| {
        let mut req = fleetctl::publish::PushRequest::new(
            file.to_path_buf(),
            "device:bench-3".parse().expect("target"),
            v.clone(),
            COMPATIBLE.to_owned(),
        );
        req.delta_from = from;
        req
    };
    fleetctl::publish::push(
        &addr,
        op.key(),
        &request(&file, &version, vec![]),
        &mut |_| {},
    )
    .await?;
    watch
        .wait_state("bench-3", WAIT, |s| {
            s.phase == PhaseName::Idle && s.kept_base.is_some()
        })
        .await?;
    let pushed = fleetctl::publish::push(
        &addr,
        op.key(),
        &request(&two_file, &next, vec![file.clone()]),
        &mut |_| {},
    )
    .await?;
    let patch_size = pushed.deltas.first().map_or(0, |d| d.patch_size);
    let accepted = watch
        .wait_event(
            "bench-3",
            WAIT,
            |e| matches!(&e.event, Report::OfferAccepted { version, .. } if *version == next),
        )
        .await?;
    let two_id = fleet_updated::base::id_of(&two);
    let delivered3 = watch
        .wait_event(
            "bench-3",
            WAIT,
            |e| matches!(e.event, Report::Delivered { bundle_id, .. } if bundle_id == two_id),
        )
        .await?;
    let verified = watch
        .wait_event(
            "bench-3",
            WAIT,
            |e| matches!(e.event, Report::Verified { bundle_id } if bundle_id == two_id),
        )
        .await?;
    let delta_time = Duration::from_millis(verified.at.monotonic_ms - accepted.at.monotonic_ms);
    let delta_verify = Duration::from_millis(verified.at.monotonic_ms - delivered3.at.monotonic_ms);
    let delta_kind = match delivered3.event {
        Report::Delivered { transport, .. } => format!("{transport:?}"),
        _ => String::new(),
    };
    let before_delta = stn.stop().await.stats.transfer;

    println!(
        "bundle: {size} bytes ({size_mib} MiB), chunks of {} KiB, window {window}",
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
        "ratio delivery / sha256sum:           {:>8.2}",
        sha_time.as_secs_f64() / delivery.as_secs_f64()
    );
    let tt = summary.stats.transfer;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let accounted = tt.store + tt.window + tt.progress + tt.finish + verify_time;
    println!(
        "station time: store (check, write, whole hash) {:.0} ms, window requests {:.0} ms, progress {:.0} ms, finish (last flush, whole check) {:.0} ms, verify step {:.0} ms, waiting and the rest {:.0} ms; {} chunks, {} read back",
        ms(tt.store),
        ms(tt.window),
        ms(tt.progress),
        ms(tt.finish),
        ms(verify_time),
        ms(delivery.saturating_sub(accounted)),
        tt.chunks,
        tt.read_back_chunks,
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
    let two_size = two.len() as u64;
    println!(
        "delta ({delta_kind}, patch {patch_size} bytes) accepted to verified: {:>8.1} MiB/s of the bundle ({:.3} s), ratio to sha256sum {:.2}; verify step {:.0} ms; the station's chunk times over both updates: store {:.0} ms, window {:.0} ms, finish {:.0} ms",
        mib(two_size, delta_time),
        delta_time.as_secs_f64(),
        sha_time.as_secs_f64() / delta_time.as_secs_f64() * two_size as f64 / size as f64,
        ms(delta_verify),
        ms(before_delta.store),
        ms(before_delta.window),
        ms(before_delta.finish),
    );
    Ok(())
}
