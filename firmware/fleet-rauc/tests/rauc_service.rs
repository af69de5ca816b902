//! Integration tests against the real `rauc service` on a private D-Bus.
//!
//! Each test starts its own `dbus-daemon` (a session-type bus that lets anyone own any name) and
//! runs the host's `rauc service` on it with a temporary `system.conf`: two file-backed ext4
//! slots (`rootfs.0` = A, `rootfs.1` = B), `bootloader=custom` with `fleet-bootctl` (U-Boot
//! flow, env file in the test's directory; a shell stand-in if it cannot be built), and
//! `bundle-formats=plain` because this host's kernel has no device-mapper for verity bundles (stations run `bundle-formats=-plain`). The bundles come
//! from `bundles/build-test-bundles.sh`, signed by a development PKI from `keys/gen-dev-pki.sh`.
//!
//! Needs root (RAUC mounts plain bundles through loop devices), rauc, dbus-daemon, e2fsprogs and
//! openssl (`tests/setup.d/20-rauc.sh` installs them). Without them each test prints SKIP and why.

use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_core::ports::{InstallProgress, InstallRequest, Installer};
use fleet_core::slot::Slot;
use fleet_rauc::{MarkState, RaucError, RaucOptions};
use fleet_testkit::rauc::{COMPATIBLE, Station, bundle, lenient, run};
use fleet_testkit::rauc_fixtures_or_skip as fixtures_or_skip;

#[tokio::test]
async fn good_bundle_lands_in_the_other_slot_with_progress_and_becomes_primary() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    assert_eq!(client.booted().await.expect("booted"), Slot::A);
    assert_eq!(client.primary().await.expect("primary"), Slot::A);

    let seen: Arc<Mutex<Vec<InstallProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let on_progress = move |p: InstallProgress| sink.lock().expect("not poisoned").push(p);
    let hash = std::fs::read_to_string(f.bundles.join("good-2.0.0.manifest-hash"))
        .expect("manifest hash written by the bundle script");
    let path = bundle(f, "good-2.0.0");
    let request = InstallRequest {
        bundle: &path,
        slot: Slot::B,
        transaction: "test-good-1",
        manifest_hash: Some(hash.trim()),
    };
    let installed = client
        .install(request, &on_progress)
        .await
        .unwrap_or_else(|e| panic!("install failed: {e}; log:\n{}", station.log()));

    assert_eq!(installed.slot, Slot::B);
    assert_eq!(installed.version, semver::Version::new(2, 0, 0));
    assert_eq!(station.slot_version(Slot::B), "2.0.0");
    assert_eq!(
        station.slot_version(Slot::A),
        "1.0.0",
        "the booted slot is untouched"
    );

    let seen = seen.lock().expect("not poisoned").clone();
    assert!(seen.len() >= 3, "progress events: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].percent <= w[1].percent),
        "progress only moves forward: {seen:?}"
    );
    assert_eq!(seen.last().map(|p| p.percent), Some(100), "{seen:?}");
    assert!(
        seen.iter().any(|p| p.message.contains("rootfs.1")),
        "progress names the slot being written: {seen:?}"
    );

    let status = client.status().await.expect("status");
    assert_eq!(status.primary, Slot::B);
    assert_eq!(status.booted, Slot::A);
    let b = status.slots.get(Slot::B).expect("slot B");
    assert_eq!(b.bundle_version.as_deref(), Some("2.0.0"));
    assert_eq!(b.bundle_compatible.as_deref(), Some(COMPATIBLE));
    assert_eq!(
        station.backend("get-primary"),
        "B",
        "the backend armed slot B"
    );
}

#[tokio::test]
async fn every_broken_bundle_is_refused_with_raucs_reason_and_leaves_the_slot_untouched() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    let index = std::fs::read_to_string(f.bundles.join("index.txt")).expect("bundle index");
    let broken: Vec<(&str, &str)> = index
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, expect)| *expect != "ok")
        .collect();
    assert!(
        broken.len() >= 5,
        "the bundle script builds the broken set: {broken:?}"
    );

    for (name, expect) in broken {
        let before = station.slot_hash(Slot::B);
        let path = bundle(f, name);
        let request = InstallRequest {
            bundle: &path,
            slot: Slot::B,
            transaction: name,
            manifest_hash: None,
        };
        let result = client.install(request, &|_| {}).await;
        let error = match result {
            Ok(installed) => panic!("{name} was installed: {installed:?}"),
            Err(e) => e,
        };
        let reason = match &error {
            RaucError::Refused { reason, .. } => reason.clone(),
            other => panic!("{name}: expected a refusal, got {other}"),
        };
        assert!(!error.is_retryable(), "{name}: a refusal is final");
        assert!(
            reason.to_lowercase().contains(&expect.to_lowercase()),
            "{name}: reason {reason:?} should contain {expect:?}"
        );
        assert_eq!(station.slot_hash(Slot::B), before, "{name} wrote to slot B");
        assert_eq!(client.primary().await.expect("primary"), Slot::A, "{name}");
        eprintln!("{name}: refused: {reason}");
    }
    assert_eq!(station.backend("get-primary"), "A");
}

#[tokio::test]
async fn rauc_killed_mid_install_is_reported_as_a_retryable_restart() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    // The backend blocks when RAUC marks the target slot non-bootable, just before writing.
    std::fs::write(station.path("boot/hold"), "").expect("create hold file");
    let rauc_pid = station.rauc.as_ref().map(Child::id).expect("rauc runs");

    let path = bundle(f, "good-2.0.0");
    let seen: Arc<Mutex<Vec<InstallProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let on_progress = move |p: InstallProgress| sink.lock().expect("not poisoned").push(p);
    let request = InstallRequest {
        bundle: &path,
        slot: Slot::B,
        transaction: "test-kill-1",
        manifest_hash: None,
    };
    let held = station.path("boot/held");
    let killer = async {
        for _ in 0..1200 {
            if held.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let reached = held.exists();
        run(Command::new("kill").args(["-KILL", &rauc_pid.to_string()])).expect("kill rauc");
        reached
    };
    let (result, reached) = tokio::join!(
        tokio::time::timeout(
            Duration::from_secs(60),
            client.install(request, &on_progress)
        ),
        killer
    );
    assert!(
        reached,
        "rauc never reached the backend; log:\n{}",
        station.log()
    );
    let error = match result {
        Err(_) => panic!("the adapter kept waiting after rauc died"),
        Ok(Ok(installed)) => panic!("install succeeded although rauc was killed: {installed:?}"),
        Ok(Err(e)) => e,
    };
    assert!(
        matches!(error, RaucError::Restarted { ref transaction, .. } if transaction == "test-kill-1"),
        "expected a restart, got {error}"
    );
    assert!(error.is_retryable());
    assert!(
        !seen.lock().expect("not poisoned").is_empty(),
        "progress arrived before rauc died"
    );

    // What systemd does on a station: RAUC comes back. The retry the error invites works.
    std::fs::remove_file(station.path("boot/hold")).expect("release the backend");
    station.restart_rauc().expect("restart rauc");
    let client = station.client(lenient()).await;
    let request = InstallRequest {
        bundle: &path,
        slot: Slot::B,
        transaction: "test-kill-2",
        manifest_hash: None,
    };
    let installed = client.install(request, &|_| {}).await.unwrap_or_else(|e| {
        panic!(
            "retry after the restart failed: {e}; log:\n{}",
            station.log()
        )
    });
    assert_eq!(installed.slot, Slot::B);
    assert_eq!(station.slot_version(Slot::B), "2.0.0");
}

#[tokio::test]
async fn a_manifest_hash_rauc_cannot_check_is_not_silently_dropped() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(RaucOptions::default()).await;
    let before = station.slot_hash(Slot::B);
    let path = bundle(f, "good-2.0.0");
    let wrong = "0".repeat(64);
    let request = InstallRequest {
        bundle: &path,
        slot: Slot::B,
        transaction: "test-hash-1",
        manifest_hash: Some(&wrong),
    };
    let error = client
        .install(request, &|_| {})
        .await
        .expect_err("a wrong or uncheckable manifest hash must not install");
    if f.rauc_version >= (1, 14) {
        assert!(matches!(error, RaucError::Refused { .. }), "got {error}");
    } else {
        assert!(
            matches!(error, RaucError::ManifestHashUnsupported { .. }),
            "rauc {:?} cannot check the hash; got {error}",
            f.rauc_version
        );
    }
    assert!(!error.is_retryable());
    assert_eq!(station.slot_hash(Slot::B), before);
    assert_eq!(client.primary().await.expect("primary"), Slot::A);
}

#[tokio::test]
async fn marking_slots_goes_through_raucs_bootloader_backend() {
    let _f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;

    let marked = client
        .mark(MarkState::Bad, Slot::B)
        .await
        .expect("mark B bad");
    assert_eq!(marked.slot, Slot::B);
    assert_eq!(station.backend("get-state B"), "bad");
    let status = client.status().await.expect("status");
    assert_eq!(
        status
            .slots
            .get(Slot::B)
            .expect("slot B")
            .boot_status
            .as_deref(),
        Some("bad")
    );

    client
        .mark(MarkState::Active, Slot::B)
        .await
        .expect("mark B active");
    assert_eq!(station.backend("get-primary"), "B");
    assert_eq!(client.primary().await.expect("primary"), Slot::B);

    client
        .mark(MarkState::Good, Slot::A)
        .await
        .expect("mark A good");
    assert_eq!(station.backend("get-state A"), "good");
}

#[tokio::test]
async fn installing_while_rauc_is_down_is_a_retryable_error() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    station.kill_rauc();
    let path = bundle(f, "good-2.0.0");
    let request = InstallRequest {
        bundle: &path,
        slot: Slot::B,
        transaction: "test-down-1",
        manifest_hash: None,
    };
    let error = client
        .install(request, &|_| {})
        .await
        .expect_err("nobody can install");
    assert!(matches!(error, RaucError::NotRunning { .. }), "got {error}");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_second_install_while_one_runs_is_busy_and_the_first_still_completes() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    std::fs::write(station.path("boot/hold"), "").expect("create hold file");
    let first_path = bundle(f, "good-2.0.0");
    let second_path = bundle(f, "good-2.1.0");
    let first = InstallRequest {
        bundle: &first_path,
        slot: Slot::B,
        transaction: "test-busy-1",
        manifest_hash: None,
    };
    let held = station.path("boot/held");
    let hold = station.path("boot/hold");
    let second = async {
        for _ in 0..1200 {
            if held.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let request = InstallRequest {
            bundle: &second_path,
            slot: Slot::B,
            transaction: "test-busy-2",
            manifest_hash: None,
        };
        let result = client.install(request, &|_| {}).await;
        std::fs::remove_file(&hold).expect("release the backend");
        result
    };
    let (first, second) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), client.install(first, &|_| {})),
        second
    );
    let error = second.expect_err("rauc runs one install at a time");
    assert!(matches!(error, RaucError::Busy { .. }), "got {error}");
    assert!(error.is_retryable());
    let installed = first
        .expect("the first install finishes once the backend is released")
        .unwrap_or_else(|e| panic!("first install failed: {e}; log:\n{}", station.log()));
    assert_eq!(installed.slot, Slot::B);
    assert_eq!(installed.version, semver::Version::new(2, 0, 0));
    assert_eq!(station.slot_version(Slot::B), "2.0.0");
}

#[tokio::test]
async fn the_bus_dying_mid_install_is_reported_as_a_lost_connection() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    std::fs::write(station.path("boot/hold"), "").expect("create hold file");
    let bus_pid = station.dbus.id();
    let path = bundle(f, "good-2.0.0");
    let request = InstallRequest {
        bundle: &path,
        slot: Slot::B,
        transaction: "test-bus-1",
        manifest_hash: None,
    };
    let held = station.path("boot/held");
    let killer = async {
        for _ in 0..1200 {
            if held.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let reached = held.exists();
        run(Command::new("kill").args(["-KILL", &bus_pid.to_string()])).expect("kill dbus-daemon");
        reached
    };
    let (result, reached) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(60), client.install(request, &|_| {})),
        killer
    );
    assert!(
        reached,
        "rauc never reached the backend; log:\n{}",
        station.log()
    );
    let error = match result {
        Err(_) => panic!("the adapter kept waiting after the bus died"),
        Ok(Ok(installed)) => panic!("install succeeded without a bus: {installed:?}"),
        Ok(Err(e)) => e,
    };
    assert!(
        matches!(
            error,
            RaucError::ConnectionLost { .. } | RaucError::Restarted { .. }
        ),
        "got {error}"
    );
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_request_to_write_the_booted_slot_is_refused_before_rauc_is_asked() {
    let f = fixtures_or_skip!();
    let mut station = Station::start().expect("station starts");
    let client = station.client(lenient()).await;
    let before = (station.slot_hash(Slot::A), station.slot_hash(Slot::B));
    let path = bundle(f, "good-2.0.0");
    let request = InstallRequest {
        bundle: &path,
        slot: Slot::A,
        transaction: "test-wrong-slot",
        manifest_hash: None,
    };
    let error = client
        .install(request, &|_| {})
        .await
        .expect_err("the booted slot is never written");
    assert!(
        matches!(
            error,
            RaucError::WrongSlot {
                requested: Slot::A,
                booted: Slot::A,
                inactive: Slot::B,
                ..
            }
        ),
        "got {error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        (station.slot_hash(Slot::A), station.slot_hash(Slot::B)),
        before
    );
    assert_eq!(client.primary().await.expect("primary"), Slot::A);
}
