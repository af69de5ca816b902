//! End to end on this machine with the real parts: `fleet-updated` (in-process, built from its
//! configuration exactly as the binary builds it: `installer = "rauc"`, `boot-flow = "uboot"`)
//! talking to a real mosquitto, the real `rauc service` on a private D-Bus with two file-backed
//! slots and `fleet-bootctl` (U-Boot flow) as its custom backend (`fleet_testkit::rauc`), and
//! bundles pushed with the operator's own `fleetctl::publish::push`.
//!
//! Reboots are simulated: the daemon returns `Exit::Reboot`, then `Station::boot` decides the
//! slot as the U-Boot script would (`decide_boot` over `uboot.env`), runs
//! `fleet-bootctl boot-check`, restarts RAUC on that slot, and the daemon starts again.
//!
//! Needs root, rauc, dbus-daemon, e2fsprogs, openssl and mosquitto (`tests/setup.d/`);
//! without them each test prints SKIP and why.
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_core::slot::Slot;
use fleet_core::update::{FallbackCause, Outcome, PhaseName, Report, Stage};
use fleet_testkit::operator::test_key;
use fleet_testkit::rauc::{self, COMPATIBLE, Station as Rauc};
use fleet_testkit::{Mosquitto, Operator, Watcher, rauc_fixtures_or_skip};
use fleet_updated::{Config, Exit, wiring};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Upper bound for anything in these tests (installs of the small test bundles take ~1 s).
const WAIT: Duration = Duration::from_secs(60);

/// One bench at a time: four RAUC stations, brokers and daemons at once on two cores are slow.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).expect("version")
}

/// The station's daemon side: data dir, configuration, the running daemon.
struct Daemon {
    dir: tempfile::TempDir,
    config: Config,
    stop: Option<watch::Sender<bool>>,
    task: Option<JoinHandle<Exit>>,
}

impl Daemon {
    fn new(id: &str, broker: &Mosquitto, key_hex: &str, rauc: &Rauc) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(d.join("version"), "1.0.0\n").expect("version file");
        let text = format!(
            r#"device-id = "{id}"
compatible = "{COMPATIBLE}"
data-dir = "{data}"
trusted-keys = ["{key_hex}"]
wall-clock = "trusted"
installer = "rauc"
boot-flow = "uboot"
bootctl-config = "{bootctl}"
version-file = "{version}"
version-floor-file = "{floor}"
reboot-command = ["true"]

[mqtt]
host = "127.0.0.1"
port = {port}
keep-alive-secs = 5
backoff-initial-ms = 50
backoff-max-ms = 300

[update]
max-trial-attempts = 3

[rauc]
dbus-address = "{address}"
manifest-hash = "where-supported"
ready-timeout-secs = 20

[health]
deadline-secs = 3
retry-interval-ms = 200
broker = true
systemd-units = ["fleet-recorderd.service"]
systemd-run-dir = "{no_systemd}"

[[health.command]]
name = "probe"
argv = ["sh", "-c", "if [ -e {unhealthy} ]; then echo 'probe says no' >&2; exit 1; fi"]
timeout-secs = 2
"#,
            data = d.join("data").display(),
            bootctl = rauc.path("boot/bootctl.toml").display(),
            version = d.join("version").display(),
            floor = rauc.path("version-floor").display(),
            port = broker.port(),
            address = rauc.address,
            no_systemd = d.join("no-systemd").display(),
            unhealthy = d.join("unhealthy").display(),
        );
        let path = d.join("updated.toml");
        std::fs::write(&path, text).expect("config");
        let config = Config::load(&path).expect("valid config");
        Daemon {
            dir,
            config,
            stop: None,
            task: None,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Starts the daemon with the ports its configuration names.
    fn start(&mut self) {
        let deps = wiring::from_config(&self.config).expect("ports from the configuration");
        let (tx, mut rx) = watch::channel(false);
        let config = self.config.clone();
        self.task = Some(tokio::spawn(async move {
            let stop = async move {
                while !*rx.borrow_and_update() {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            };
            let (exit, _) = fleet_updated::run(config, deps, stop)
                .await
                .expect("daemon runs");
            exit
        }));
        self.stop = Some(tx);
    }

    /// Waits for the daemon to ask for a reboot.
    async fn reboot_requested(&mut self) -> Slot {
        let task = self.task.take().expect("running");
        match tokio::time::timeout(WAIT, task).await {
            Ok(Ok(Exit::Reboot { into })) => into,
            other => panic!("daemon did not ask for a reboot: {other:?}"),
        }
    }

    async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(WAIT, task).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct Bench {
    /// Each test its own station id: tests in parallel may end up on one broker.
    id: &'static str,
    broker: Mosquitto,
    op: Operator,
    watch: Watcher,
    rauc: Rauc,
    daemon: Daemon,
    files: tempfile::TempDir,
}

async fn bench(id: &'static str) -> Bench {
    let broker = Mosquitto::start().expect("broker");
    let op = Operator::connect(&broker, "operator", test_key(7))
        .await
        .expect("operator");
    let watch = Watcher::connect(&broker, "watcher").await.expect("watcher");
    let mut rauc = Rauc::start().expect("rauc station");
    let _ = rauc.client(rauc::lenient()).await;
    let mut daemon = Daemon::new(id, &broker, &op.public_hex(), &rauc);
    daemon.start();
    let mut b = Bench {
        id,
        broker,
        op,
        watch,
        rauc,
        daemon,
        files: tempfile::tempdir().expect("tempdir"),
    };
    b.watch
        .wait_state(b.id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("station idle");
    b
}

impl Bench {
    /// Pushes `bundle` (a file of `bundles/build-test-bundles.sh`) to this station.
    async fn push(
        &self,
        bundle: &Path,
        version: &str,
        downgrade: bool,
    ) -> fleetctl::publish::PushReport {
        self.push_with_deltas(bundle, version, downgrade, &[]).await
    }

    /// Pushes `bundle` with a delta from each of `bases` (bundle files).
    async fn push_with_deltas(
        &self,
        bundle: &Path,
        version: &str,
        downgrade: bool,
        bases: &[PathBuf],
    ) -> fleetctl::publish::PushReport {
        // fleetctl reads the bundle from where it is; copy so each push names its own file.
        let path = self.files.path().join(bundle.file_name().expect("name"));
        std::fs::copy(bundle, &path).expect("copy bundle");
        let addr = fleetctl::connection::BrokerAddr {
            host: self.broker.host().to_owned(),
            port: self.broker.port(),
        };
        let mut req = fleetctl::publish::PushRequest::new(
            path,
            format!("device:{}", self.id).parse().expect("target"),
            v(version),
            COMPATIBLE.to_owned(),
        );
        req.chunk_size = 16 * 1024;
        if downgrade {
            req.downgrade = fleet_core::update::Downgrade::Allow;
        }
        req.delta_from = bases.to_vec();
        fleetctl::publish::push(&addr, self.op.key(), &req, &mut |_| {})
            .await
            .expect("fleetctl push")
    }

    /// Simulated power-on after the daemon asked for a reboot; starts the daemon again.
    fn boot(&mut self) -> Slot {
        let slot = self
            .rauc
            .boot()
            .unwrap_or_else(|e| panic!("boot: {e}; rauc log:\n{}", self.rauc.log()));
        self.daemon.start();
        slot
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_bundle_lands_in_the_other_slot_arms_a_trial_and_commits_when_healthy() {
    let f = rauc_fixtures_or_skip!();
    let _serial = SERIAL.lock().await;
    let mut b = bench("stn-good").await;
    let a_before = b.rauc.slot_hash(Slot::A);

    b.push(&rauc::bundle(f, "good-2.0.0"), "2.0.0", false).await;
    // Follow the station's MQTT output while the daemon works (the watcher reads only while
    // it waits). Not asserted: the retained `rebooting` state and event, the last messages
    // before the daemon exits, which are sometimes lost in its goodbye (see the report); the
    // state is checked again after the reboot.
    let (into, installed) = tokio::join!(
        b.daemon.reboot_requested(),
        b.watch.wait_event(b.id, WAIT, |e| {
            matches!(&e.event, Report::Installed { slot: Slot::B, version } if *version == v("2.0.0"))
        })
    );
    assert_eq!(into, Slot::B);
    installed.expect("installed event");

    // The bytes are in slot B, the booted slot is untouched, and the boot flow armed B.
    assert_eq!(b.rauc.slot_version(Slot::B), "2.0.0");
    assert_eq!(b.rauc.slot_hash(Slot::A), a_before);
    let env = b.rauc.uboot_env();
    assert_eq!(
        env.get("FLEET_TRIAL").map(String::as_str),
        Some("B"),
        "{env:?}"
    );
    assert_eq!(
        env.get("BOOT_ORDER").map(String::as_str),
        Some("B A"),
        "{env:?}"
    );
    assert_eq!(b.rauc.backend("get-primary"), "B");
    // RAUC's progress came through as events.
    b.watch
        .wait_event(b.id, WAIT, |e| {
            matches!(&e.event, Report::Installed { slot: Slot::B, version } if *version == v("2.0.0"))
        })
        .await
        .expect("installed event");
    b.watch
        .wait_event(b.id, WAIT, |e| {
            matches!(e.event, Report::InstallProgress { percent: 100 })
        })
        .await
        .expect("install progress reached 100");

    // Trial boot of B: the health gate passes (systemd unavailable here, so skipped), commits.
    std::fs::write(b.daemon.path("version"), "2.0.0\n").expect("B's version file");
    assert_eq!(b.boot(), Slot::B);
    let s = b
        .watch
        .wait_state(b.id, WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(s.last_outcome, Some(Outcome::Committed { .. }))
        })
        .await
        .expect("committed");
    assert_eq!(
        (s.booted, s.committed, s.version.clone()),
        (Slot::B, Slot::B, v("2.0.0"))
    );
    let env = b.rauc.uboot_env();
    assert_eq!(env.get("FLEET_TRIAL"), None, "{env:?}");
    assert_eq!(env.get("BOOT_ORDER").map(String::as_str), Some("B A"));
    assert_eq!(env.get("BOOT_B_LEFT").map(String::as_str), Some("3"));
    assert_eq!(
        std::fs::read_to_string(b.rauc.path("version-floor")).expect("floor"),
        "2.0.0\n",
        "the committed version is the new floor for the install-check hook"
    );
    b.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broken_bundle_is_refused_with_raucs_reason_in_the_mqtt_state_and_no_slot_changes() {
    let f = rauc_fixtures_or_skip!();
    let _serial = SERIAL.lock().await;
    let mut b = bench("stn-broken").await;
    let index = std::fs::read_to_string(f.bundles.join("index.txt")).expect("index");
    let expected = |name: &str| -> String {
        index
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("{name} not in index.txt"))
            .to_owned()
    };
    for (name, version, downgrade) in [
        ("bad-signature", "2.0.1", false),
        ("untrusted-ca", "2.0.2", false),
        ("wrong-compatible", "2.0.3", false),
        ("truncated", "2.0.4", false),
        ("downgrade", "0.9.0", true),
    ] {
        let hashes = (b.rauc.slot_hash(Slot::A), b.rauc.slot_hash(Slot::B));
        let report = b.push(&rauc::bundle(f, name), version, downgrade).await;
        // RAUC's wording varies in case between versions; index.txt gives the words.
        let reason = expected(name).to_lowercase();
        let s = b
            .watch
            .wait_state(b.id, WAIT, |s| {
                s.phase == PhaseName::Idle
                    && matches!(&s.last_outcome, Some(Outcome::Failed { update_id, .. }) if *update_id == report.update_id)
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}; rauc log:\n{}", b.rauc.log()));
        let Some(Outcome::Failed { stage, detail, .. }) = &s.last_outcome else {
            unreachable!("matched above");
        };
        assert_eq!(*stage, Stage::Install, "{name}");
        assert!(
            detail.starts_with("rauc refused the bundle: ")
                && detail.to_lowercase().contains(&reason),
            "{name}: RAUC's reason {reason:?} not in the state's {detail:?}"
        );
        b.watch
            .wait_event(b.id, WAIT, |e| {
                matches!(&e.event, Report::InstallFailed { detail, will_retry: false } if detail.to_lowercase().contains(&reason))
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            (b.rauc.slot_hash(Slot::A), b.rauc.slot_hash(Slot::B)),
            hashes,
            "{name} changed a slot's bytes"
        );
        assert_eq!(b.rauc.backend("get-primary"), "A", "{name}");
        assert_eq!((s.booted, s.committed), (Slot::A, Slot::A), "{name}");
    }
    b.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_trial_ends_on_the_old_slot_after_its_attempts_run_out() {
    let f = rauc_fixtures_or_skip!();
    let _serial = SERIAL.lock().await;
    let mut b = bench("stn-sick").await;
    std::fs::write(b.daemon.path("unhealthy"), b"").expect("make the probe fail");
    b.push(&rauc::bundle(f, "good-2.1.0"), "2.1.0", false).await;

    let mut boots = Vec::new();
    // Each trial boot fails the probe; the boot script counts B's boots down (3 attempts),
    // then the daemon marks B bad and reboots into A. Bounded: a loop here is a failure.
    while boots.len() < 8 {
        b.daemon.reboot_requested().await;
        let slot = b.boot();
        boots.push(slot);
        if slot == Slot::A {
            break;
        }
    }
    assert_eq!(boots, [Slot::B, Slot::B, Slot::B, Slot::A], "boot sequence");

    let s = b
        .watch
        .wait_state(b.id, WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(s.last_outcome, Some(Outcome::RolledBack { .. }))
        })
        .await
        .expect("rolled back");
    let Some(Outcome::RolledBack {
        bad_slot, cause, ..
    }) = &s.last_outcome
    else {
        unreachable!("matched above");
    };
    assert_eq!(*bad_slot, Slot::B);
    assert!(
        matches!(cause, FallbackCause::HealthCheckFailed { check, attempts: 3 } if check.starts_with("command:probe: failed") && check.contains("probe says no")),
        "{cause:?}"
    );
    assert_eq!(
        (s.booted, s.committed, s.version.clone()),
        (Slot::A, Slot::A, v("1.0.0"))
    );
    b.watch
        .wait_event(b.id, WAIT, |e| {
            matches!(
                e.event,
                Report::RolledBack {
                    from: Slot::B,
                    to: Slot::A,
                    ..
                }
            )
        })
        .await
        .expect("rolled-back event");
    let env = b.rauc.uboot_env();
    assert_eq!(
        env.get("BOOT_B_LEFT").map(String::as_str),
        Some("0"),
        "{env:?}"
    );
    assert_eq!(
        env.get("BOOT_ORDER").map(String::as_str),
        Some("A B"),
        "{env:?}"
    );
    assert_eq!(env.get("FLEET_TRIAL"), None, "{env:?}");
    assert_eq!(b.rauc.backend("get-state B"), "bad");
    assert_eq!(
        std::fs::read_to_string(b.rauc.path("version-floor")).expect("floor"),
        "1.0.0\n",
        "a rolled-back version never raises the floor"
    );
    b.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rauc_restarting_mid_install_is_reported_and_the_install_is_retried() {
    let f = rauc_fixtures_or_skip!();
    let _serial = SERIAL.lock().await;
    let mut b = bench("stn-restart").await;
    // RAUC blocks in the backend's set-state (just before writing the slot) while this exists.
    std::fs::write(b.rauc.path("boot/hold"), b"").expect("hold");
    b.push(&rauc::bundle(f, "good-2.0.0"), "2.0.0", false).await;
    let held = b.rauc.path("boot/held");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !held.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "rauc never reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What systemd does on a station: RAUC dies and comes back. Then the backend lets go.
    b.rauc.restart_rauc().expect("rauc restarts");
    std::fs::remove_file(b.rauc.path("boot/hold")).expect("release");

    let e = b
        .watch
        .wait_event(b.id, WAIT, |e| {
            matches!(
                e.event,
                Report::InstallFailed {
                    will_retry: true,
                    ..
                }
            )
        })
        .await
        .expect("install-failed, retrying");
    let Report::InstallFailed { detail, .. } = &e.event else {
        unreachable!("matched above");
    };
    assert!(detail.contains("restarted"), "{detail}");
    let (into, second) = tokio::join!(
        b.daemon.reboot_requested(),
        b.watch.wait_event(b.id, WAIT, |e| matches!(
            e.event,
            Report::InstallStarted { attempt: 2, .. }
        ))
    );
    assert_eq!(into, Slot::B, "the retry installs");
    second.expect("second install attempt");
    assert_eq!(b.rauc.slot_version(Slot::B), "2.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_reboot_command_still_exits_for_the_service_manager_to_reboot() {
    let f = rauc_fixtures_or_skip!();
    let _serial = SERIAL.lock().await;
    let mut b = bench("stn-noreboot").await;
    b.daemon.stop().await;
    // The real binary, with a reboot command that fails (as `systemctl reboot` does for an
    // unprivileged user without polkit). Exit 10 lets the unit's ExecStopPost ask the root
    // reboot service; exit 1 would restart the daemon into a station that never reboots.
    let cfg = b.daemon.path("updated.toml");
    let text = std::fs::read_to_string(&cfg).expect("config");
    let text = text.replace(
        r#"reboot-command = ["true"]"#,
        r#"reboot-command = ["false"]"#,
    );
    assert!(text.contains(r#"["false"]"#));
    std::fs::write(&cfg, text).expect("config");
    let daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_fleet-updated"))
        .arg("--config")
        .arg(&cfg)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("daemon binary");
    b.watch
        .wait_state(b.id, WAIT, |s| s.phase == PhaseName::Idle)
        .await
        .expect("the binary's station is idle");
    b.push(&rauc::bundle(f, "good-2.0.0"), "2.0.0", false).await;
    let out = tokio::time::timeout(WAIT, daemon.wait_with_output())
        .await
        .expect("the daemon exits in time")
        .expect("daemon output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(fleet_updated::EXIT_REBOOT),
        "stderr:\n{stderr}"
    );
    assert!(
        stderr.contains("reboot command failed"),
        "stderr:\n{stderr}"
    );
    // The journal held the intent: after the reboot the service manager carried out, the
    // daemon judges the trial and commits.
    std::fs::write(b.daemon.path("version"), "2.0.0\n").expect("B's version file");
    assert_eq!(b.boot(), Slot::B);
    let s = b
        .watch
        .wait_state(b.id, WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(s.last_outcome, Some(Outcome::Committed { .. }))
        })
        .await
        .expect("committed after the reboot");
    assert_eq!((s.booted, s.committed), (Slot::B, Slot::B));
    b.daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_that_never_boots_gets_the_boot_loaders_three_boots_and_no_more() {
    let f = rauc_fixtures_or_skip!();
    let _serial = SERIAL.lock().await;
    let mut b = bench("stn-dead").await;
    b.push(&rauc::bundle(f, "good-2.0.0"), "2.0.0", false).await;
    assert_eq!(b.daemon.reboot_requested().await, Slot::B);
    // B's kernel never comes up: U-Boot spends BOOT_B_LEFT and falls back to A by itself.
    let (up, dead_boots) = b
        .rauc
        .boot_with_dead_slot(Some(Slot::B))
        .unwrap_or_else(|e| panic!("boot: {e}; rauc log:\n{}", b.rauc.log()));
    assert_eq!((up, dead_boots), (Slot::A, 3));
    b.daemon.start();
    // max-trial-attempts is 3, but the boot loader's fallback is final: the daemon rolls back
    // instead of arming B for three more boots.
    let s = b
        .watch
        .wait_state(b.id, WAIT, |s| {
            s.phase == PhaseName::Idle && matches!(s.last_outcome, Some(Outcome::RolledBack { .. }))
        })
        .await
        .expect("rolled back without another trial");
    assert!(
        matches!(
            &s.last_outcome,
            Some(Outcome::RolledBack {
                cause: FallbackCause::TrialDidNotBoot { attempts: 1 },
                ..
            })
        ),
        "{:?}",
        s.last_outcome
    );
    assert_eq!((s.booted, s.committed), (Slot::A, Slot::A));
    let env = b.rauc.uboot_env();
    assert_eq!(env.get("FLEET_TRIAL"), None, "{env:?}");
    assert_eq!(
        env.get("BOOT_ORDER").map(String::as_str),
        Some("A B"),
        "{env:?}"
    );
    assert_eq!(b.rauc.backend("get-primary"), "A");
    b.daemon.stop().await;
}

/// Waits for the daemon's reboot after installing `version`, boots the other slot with that
/// version and waits for the commit.
async fn install_and_commit(b: &mut Bench, version: &str) {
    let into = b.daemon.reboot_requested().await;
    assert_eq!(b.rauc.slot_version(into), version);
    std::fs::write(b.daemon.path("version"), format!("{version}\n")).expect("version file");
    assert_eq!(b.boot(), into);
    let want = v(version);
    b.watch
        .wait_state(b.id, WAIT, |s| {
            s.phase == PhaseName::Idle
                && matches!(&s.last_outcome, Some(Outcome::Committed { version, .. }) if *version == want)
        })
        .await
        .unwrap_or_else(|e| panic!("{version} not committed: {e}; rauc log:\n{}", b.rauc.log()));
}

/// The `transport-chosen` event of this station for `bundle`, the last one when there are
/// several (a fallback).
async fn transport_of(b: &mut Bench, bundle: fleet_core::update::BundleId) -> Report {
    b.watch
        .wait_event(b.id, WAIT, |e| {
            matches!(&e.event, Report::TransportChosen { bundle_id, .. } if *bundle_id == bundle)
        })
        .await
        .expect("transport-chosen event")
        .event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_station_updates_through_a_delta_from_its_kept_bundle_and_rauc_installs_the_rebuilt_bundle()
 {
    use fleet_core::update::delta::{DeliveryKind, FullReason};
    let f = rauc_fixtures_or_skip!();
    let _serial = SERIAL.lock().await;
    let mut b = bench("stn-delta").await;
    let (v30, v31, v32) = (
        rauc::bundle(f, "delta-3.0.0"),
        rauc::bundle(f, "delta-3.1.0"),
        rauc::bundle(f, "delta-3.2.0"),
    );

    // A fresh station keeps no base: 3.0.0 comes whole, zstd-compressed (a delta from 2.0.0
    // is published, but the station has nothing to apply it to); the station decodes it, and
    // RAUC installs it; it is committed and kept.
    let first = b
        .push_with_deltas(&v30, "3.0.0", false, &[rauc::bundle(f, "good-2.0.0")])
        .await;
    let compressed = first.compressed.clone().expect("a compressed transfer");
    assert!(
        transport_of(&mut b, first.bundle_id).await
            == Report::TransportChosen {
                bundle_id: first.bundle_id,
                transport: DeliveryKind::Compressed,
                reason: Some(FullReason::NoBase),
                expected_bytes: compressed.file_size,
                bundle_bytes: first.size,
            }
    );
    let delivered = b
        .watch
        .wait_event(b.id, WAIT, |e| {
            matches!(&e.event, Report::Delivered { bundle_id, .. } if *bundle_id == first.bundle_id)
        })
        .await
        .expect("delivered");
    let Report::Delivered {
        transport,
        received_bytes,
        ..
    } = delivered.event
    else {
        unreachable!("matched above")
    };
    eprintln!(
        "compressed 3.0.0: {received_bytes} bytes received for a bundle of {} ({:.1}%)",
        first.size,
        received_bytes as f64 * 100.0 / first.size as f64
    );
    assert_eq!(
        (transport, received_bytes),
        (DeliveryKind::Compressed, compressed.file_size)
    );
    assert!(received_bytes < first.size);
    install_and_commit(&mut b, "3.0.0").await;
    let s = b
        .watch
        .wait_state(b.id, WAIT, |s| s.kept_base == Some(first.bundle_id))
        .await
        .expect("3.0.0 is the kept base");
    assert_eq!(s.version, v("3.0.0"));

    // 3.1.0 with a delta from 3.0.0: only the patch crosses the broker; the station rebuilds
    // the bundle and RAUC installs it (checking its signature as for any bundle).
    let second = b
        .push_with_deltas(&v31, "3.1.0", false, std::slice::from_ref(&v30))
        .await;
    assert_eq!(second.deltas.len(), 1);
    let patch = second.deltas[0].patch_size;
    assert!(
        transport_of(&mut b, second.bundle_id).await
            == Report::TransportChosen {
                bundle_id: second.bundle_id,
                transport: DeliveryKind::Delta,
                reason: None,
                expected_bytes: patch,
                bundle_bytes: second.size,
            }
    );
    let delivered = b
        .watch
        .wait_event(b.id, WAIT, |e| {
            matches!(&e.event, Report::Delivered { bundle_id, .. } if *bundle_id == second.bundle_id)
        })
        .await
        .expect("delivered");
    let Report::Delivered {
        transport,
        received_bytes,
        ..
    } = delivered.event
    else {
        unreachable!("matched above")
    };
    eprintln!(
        "delta 3.0.0 -> 3.1.0: {received_bytes} bytes received for a bundle of {} ({:.1}%)",
        second.size,
        received_bytes as f64 * 100.0 / second.size as f64
    );
    assert_eq!(transport, DeliveryKind::Delta);
    assert_eq!(received_bytes, patch);
    assert!(
        received_bytes * 5 < second.size,
        "{received_bytes} bytes received for a bundle of {}",
        second.size
    );
    install_and_commit(&mut b, "3.1.0").await;
    b.watch
        .wait_state(b.id, WAIT, |s| s.kept_base == Some(second.bundle_id))
        .await
        .expect("3.1.0 is the kept base");

    // A damaged kept base: 3.2.0 comes whole (compressed), and the station says why.
    let kept = fleet_updated::base::BaseStore::under(&b.daemon.config.data_dir)
        .bundle_path(&second.bundle_id);
    let mut bytes = std::fs::read(&kept).expect("kept base");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&kept, bytes).expect("damage the kept base");
    let third = b
        .push_with_deltas(&v32, "3.2.0", false, std::slice::from_ref(&v31))
        .await;
    assert!(matches!(
        transport_of(&mut b, third.bundle_id).await,
        Report::TransportChosen {
            transport: DeliveryKind::Compressed,
            reason: Some(FullReason::BaseCorrupt { .. }),
            ..
        }
    ));
    install_and_commit(&mut b, "3.2.0").await;
    b.daemon.stop().await;
}
