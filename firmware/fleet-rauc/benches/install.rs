//! Figures for installs through the adapter against the real `rauc service` on a private bus
//! (`fleet_testkit::rauc::Station`, as the integration tests): wall time per install of a 4 MiB ext4 image, time to the
//! first progress event, and the number of progress events.
//!
//! `cargo bench -p fleet-rauc --bench install` (needs what the integration tests need; prints
//! SKIP otherwise).
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fleet_core::ports::{InstallRequest, Installer};
use fleet_core::slot::Slot;
use fleet_testkit::rauc::{self as station, Station, bundle, lenient};
use fleet_testkit::rauc_fixtures_or_skip as fixtures_or_skip;

const ROUNDS: usize = 5;

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(bench());
}

async fn bench() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    let path = bundle(f, "good-2.0.0");
    let mut totals = Vec::new();
    let mut firsts = Vec::new();
    let mut events = 0;
    for round in 0..ROUNDS {
        let first: Arc<Mutex<Option<Duration>>> = Arc::default();
        let count = Arc::new(Mutex::new(0usize));
        let started = Instant::now();
        let (first_in, count_in) = (Arc::clone(&first), Arc::clone(&count));
        let on_progress = move |_| {
            let mut first = first_in.lock().expect("not poisoned");
            first.get_or_insert_with(|| started.elapsed());
            *count_in.lock().expect("not poisoned") += 1;
        };
        let transaction = format!("bench-{round}");
        let request = InstallRequest {
            bundle: &path,
            slot: Slot::B,
            transaction: &transaction,
            manifest_hash: None,
        };
        client
            .install(request, &on_progress)
            .await
            .expect("install succeeds");
        totals.push(started.elapsed());
        firsts.push(first.lock().expect("not poisoned").unwrap_or_default());
        events = *count.lock().expect("not poisoned");
    }
    totals.sort();
    firsts.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "rauc install via fleet-rauc ({}, 4 MiB ext4 image, {ROUNDS} rounds): median {:.1} ms, max {:.1} ms; first progress after median {:.1} ms; {events} progress events per install",
        rauc_version(),
        ms(totals[ROUNDS / 2]),
        ms(totals[ROUNDS - 1]),
        ms(firsts[ROUNDS / 2]),
    );
}

fn rauc_version() -> String {
    station::run(std::process::Command::new("rauc").arg("--version"))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "rauc ?".to_owned())
}
