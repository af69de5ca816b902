//! Staged rollouts over 100 simulated stations on a real mosquitto: waves, auto-halt, and a
//! rollout resumed by a second `fleetctl` process.
use std::collections::BTreeSet;
use std::time::Duration;

mod common;

use common::{STALE, fixture, pct, plan};
use fleet_core::ids::{DeviceId, Version};
use fleet_core::rollout::{Decision, HaltReason, Status};
use fleet_proto::Limits;
use fleet_proto::rollout::RolloutRecord;
use fleetctl::rollout;

const STATIONS: usize = 100;
/// Every test ends well within this; a stuck rollout fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(40);

fn members(stations: &[(DeviceId, usize)], waves: &[usize]) -> BTreeSet<DeviceId> {
    stations
        .iter()
        .filter(|(_, w)| waves.contains(w))
        .map(|(d, _)| d.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_wave_rollout_over_a_hundred_stations_advances_wave_by_wave() {
    let f = fixture();
    let plan = plan(&f.group, &[10, 40, 100], 5);
    let req = f.request();
    let stations = f.stations(STATIONS, &plan, &req);
    let fleet = f.fleet(&stations, &BTreeSet::new()).await;
    let rec = rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    let u = rec.update_id.clone();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut advanced_to = Vec::new();
    loop {
        let installed_before = fleet.installed(&u);
        let t = f.tick().await;
        if let Decision::Advance { to } = t.decision {
            // Nobody outside the waves offered so far had started installing.
            let allowed = members(&stations, &(0..to).collect::<Vec<_>>());
            assert!(
                installed_before.is_subset(&allowed),
                "stations outside waves 1..={to} installed before wave {} was offered",
                to + 1
            );
            // The wave that just ended met its success share.
            let prev = &t.view.waves[to - 1].tally;
            assert!(prev.succeeded * 100 >= prev.members * 90, "{prev:?}");
            advanced_to.push(to);
        }
        if t.record.progress.status == Status::Completed {
            break;
        }
        assert_eq!(t.record.progress.status, Status::Running, "{:?}", t.view);
        assert!(tokio::time::Instant::now() < deadline, "{:?}", t.view);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(advanced_to, vec![1, 2]);
    let views = rollout::views(&f.addr, Some(&f.key), STALE, &Limits::DEFAULT)
        .await
        .expect("views");
    let v = &views[0];
    assert_eq!(v.status, "completed");
    let total: u32 = v.waves.iter().map(|w| w.tally.succeeded).sum();
    assert_eq!(total as usize, STATIONS, "{v:?}");
    assert_eq!(fleet.installed(&u).len(), STATIONS);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_percent_failures_in_wave_two_halt_the_rollout_and_nobody_later_installs() {
    let f = fixture();
    let plan = plan(&f.group, &[10, 40, 100], 5);
    let req = f.request();
    let stations = f.stations(STATIONS, &plan, &req);
    let wave2: Vec<&DeviceId> = stations
        .iter()
        .filter(|(_, w)| *w == 1)
        .map(|(d, _)| d)
        .collect();
    let failing = (wave2.len() * 3).div_ceil(10);
    let fails: BTreeSet<DeviceId> = wave2.iter().take(failing).map(|d| (*d).clone()).collect();
    let fleet = f.fleet(&stations, &fails).await;
    let rec = rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    let u = rec.update_id.clone();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let reason = loop {
        let t = f.tick().await;
        if let Status::Halted { reason } = &t.record.progress.status {
            break reason.clone();
        }
        assert_eq!(t.record.progress.status, Status::Running, "{:?}", t.view);
        assert!(tokio::time::Instant::now() < deadline, "{:?}", t.view);
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    match &reason {
        HaltReason::FailureRate {
            wave,
            failed,
            finished,
            failure_percent,
        } => {
            assert_eq!(*wave, 1, "halted in wave 2");
            assert!(failed * 100 > u32::from(*failure_percent) * finished);
        }
        other => panic!("halted for {other:?}"),
    }
    // Give any station that would disobey the time to start installing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let installed = fleet.installed(&u);
    let allowed = members(&stations, &[0, 1]);
    let outside: Vec<&DeviceId> = installed.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "outside waves 1 and 2 installed: {outside:?}"
    );
    let t = f.tick().await;
    assert!(matches!(t.record.progress.status, Status::Halted { .. }));
    assert_eq!(t.record.progress.wave, 1, "wave 3 was never offered");
    let w2 = &t.view.waves[1];
    assert!(w2.tally.failed > 0 && !w2.failures.is_empty(), "{w2:?}");
    assert!(w2.failures[0].1.contains("health check failed"), "{w2:?}");
    fleet.stop().await;
}

fn fleetctl(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .output()
        .expect("run fleetctl")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_resumed_from_a_second_fleetctl_continues_where_the_first_stopped() {
    let f = fixture();
    let plan = plan(&f.group, &[10, 40, 100], 5);
    let req = f.request();
    let stations = f.stations(STATIONS, &plan, &req);
    let fleet = f.fleet(&stations, &BTreeSet::new()).await;
    let rec = rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    let u = rec.update_id.clone();
    // The first operator drives the rollout into wave 2, then halts it and goes away.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let t = f.tick().await;
        if t.record.progress.wave == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{:?}", t.view);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let halted = rollout::halt(
        &f.addr,
        &f.key,
        None,
        "operator one goes home",
        &Limits::DEFAULT,
    )
    .await
    .expect("halt");
    let at_halt: RolloutRecord = halted.clone();
    assert_eq!(at_halt.progress.wave, 1);

    // A second fleetctl process, with only the broker and the key, resumes and drives it.
    let broker = f.addr.to_string();
    let key = f.key_arg();
    let status = fleetctl(&["rollout", "status", "--broker", &broker, "--json"]);
    assert!(status.status.success(), "{status:?}");
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(json[0]["update-id"], u.as_str());
    assert_eq!(json[0]["wave"], 2);
    assert!(
        json[0]["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("halted")),
        "{json}"
    );
    let resumed = fleetctl(&["rollout", "resume", "--broker", &broker, "--key", key]);
    assert!(resumed.status.success(), "{resumed:?}");
    let run = fleetctl(&[
        "rollout",
        "run",
        "--broker",
        &broker,
        "--key",
        key,
        "--interval",
        "300ms",
        "--timeout",
        "40s",
    ]);
    assert!(
        run.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let done = rollout::load(&f.addr, Some(&f.key), Some(&u), &Limits::DEFAULT)
        .await
        .expect("load");
    assert_eq!(done.progress.status, Status::Completed);
    assert!(done.revision > at_halt.revision);
    let steps: Vec<(&str, usize)> = done
        .history
        .iter()
        .map(|h| (h.what.as_str(), h.wave))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("started", 0),
            ("advanced", 1),
            ("halted", 1),
            ("resumed", 1),
            ("advanced", 2),
            ("completed", 2)
        ]
    );
    assert_eq!(fleet.installed(&u).len(), STATIONS);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_fleet_installs_nothing_until_unfrozen_and_a_pinned_station_never_does() {
    use fleet_core::rollout::Scope;
    let f = fixture();
    let mut plan = plan(&f.group, &[10, 40, 100], 5);
    plan.waves = vec![pct(100)];
    let req = f.request();
    let stations: Vec<(DeviceId, usize)> = f
        .stations(STATIONS, &plan, &req)
        .into_iter()
        .take(20)
        .collect();
    let pinned = stations[0].0.clone();
    let fleet = f.fleet(&stations, &BTreeSet::new()).await;
    let limits = Limits::DEFAULT;
    rollout::freeze(&f.addr, &f.key, Scope::Fleet, true, &limits)
        .await
        .expect("freeze");
    rollout::pin(
        &f.addr,
        &f.key,
        Scope::Device(pinned.clone()),
        Some(Version::new(1, 5, 0)),
        &limits,
    )
    .await
    .expect("pin");
    let rec = rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    let u = rec.update_id.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fleet.installed(&u).is_empty(), "installed while frozen");
    // Like fleet-updated, each simulated station says in its state what is held and why.
    let held = |rows: &[fleetctl::status::StationRow], id: &DeviceId| {
        rows.iter()
            .find(|r| &r.device_id == id)
            .and_then(|r| r.state.as_ref())
            .and_then(|s| s.held.clone())
    };
    let rows = fleetctl::status::read(&f.addr, STALE, &limits)
        .await
        .expect("status");
    for (id, _) in &stations {
        let h = held(&rows, id).unwrap_or_else(|| panic!("{id} reports nothing held"));
        assert_eq!(h.update_id, u);
        assert!(
            h.scope.is_some(),
            "{id} names the control holding it: {h:?}"
        );
        assert!(
            matches!(
                h.reason,
                fleet_core::update::RejectReason::Frozen
                    | fleet_core::update::RejectReason::Pinned { .. }
            ),
            "{id}: {:?}",
            h.reason
        );
    }
    // Unfreezing lets the held offer through without a new offer.
    rollout::freeze(&f.addr, &f.key, Scope::Fleet, false, &limits)
        .await
        .expect("unfreeze");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while fleet.installed(&u).len() < stations.len() - 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} installed",
            fleet.installed(&u).len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !fleet.installed(&u).contains(&pinned),
        "the pinned station installed"
    );
    let rows = fleetctl::status::read(&f.addr, STALE, &limits)
        .await
        .expect("status");
    let h = held(&rows, &pinned).expect("the pinned station reports its held update");
    assert!(
        matches!(h.reason, fleet_core::update::RejectReason::Pinned { .. }),
        "{:?}",
        h.reason
    );
    let released = &stations[1].0;
    assert_eq!(
        held(&rows, released),
        None,
        "an unfrozen station holds nothing"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stations_halted_during_their_download_do_not_install_until_the_rollout_resumes() {
    let mut f = fixture();
    // Slow links: the download takes seconds, so the halt arrives while it is under way.
    f.chunk_delay = Duration::from_millis(600);
    let mut plan = plan(&f.group, &[10, 40, 100], 5);
    plan.waves = vec![pct(100)];
    let req = f.request();
    let stations: Vec<(DeviceId, usize)> = f
        .stations(STATIONS, &plan, &req)
        .into_iter()
        .take(20)
        .collect();
    let fleet = f.fleet(&stations, &BTreeSet::new()).await;
    let limits = Limits::DEFAULT;
    let rec = rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    let u = rec.update_id.clone();
    rollout::halt(&f.addr, &f.key, None, "stop", &limits)
        .await
        .expect("halt");
    assert!(
        fleet.installed(&u).is_empty(),
        "the halt came too late for this test: make the chunks slower"
    );
    // Every station finishes its download and then waits.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let rows = fleetctl::status::read(&f.addr, STALE, &limits)
            .await
            .expect("status");
        let verified = rows
            .iter()
            .filter_map(|r| r.state.as_ref())
            .filter(|s| s.phase == fleet_core::update::PhaseName::Verifying)
            .count();
        if verified == stations.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{verified} verified: {:?}",
            rows.iter()
                .map(|r| r
                    .state
                    .as_ref()
                    .map(|s| (s.phase, s.progress, s.last_outcome.clone())))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(fleet.installed(&u).is_empty(), "installed while halted");
    // Resuming installs the held bundles without a new offer.
    rollout::resume(&f.addr, &f.key, None, &limits)
        .await
        .expect("resume");
    while fleet.installed(&u).len() < stations.len() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    fleet.stop().await;
}
