//! `watch --rollout` against a real mosquitto and simulated stations: the live view follows the
//! waves with the simulator's counts, and a halted rollout's view says why and lists the
//! failures with their reasons, as text and as JSON lines.
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::{Fixture, STALE, fixture, plan};
use fleet_core::ids::{DeviceId, UpdateId};
use fleet_core::rollout::Status;
use fleet_core::update::PhaseName;
use fleet_proto::Limits;
use fleetctl::rollout::{self, RolloutView};
use fleetctl::rollout_watch::{
    RolloutEnd, RolloutSink, RolloutWatchOptions, RolloutWatchSummary, follow, subscribe,
};
use fleetctl::status::StationRow;

/// Every wait ends well within this; a stuck rollout fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(30);

impl Fixture {
    async fn until<F: std::future::Future<Output = bool>>(
        &self,
        what: &str,
        mut check: impl FnMut() -> F,
    ) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not in time"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `fleetctl watch --rollout` (stdout is a pipe: line mode, or JSON lines).
    fn watch_cli(&self, extra: &[&str]) -> std::process::Output {
        let broker = self.addr.to_string();
        let mut args = vec![
            "watch",
            "--rollout",
            "--broker",
            &broker,
            "--key",
            self.key_arg(),
            "--timeout",
            "20s",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(env!("CARGO_BIN_EXE_fleetctl"))
            .args(&args)
            .output()
            .expect("run fleetctl")
    }
}

fn members(stations: &[(DeviceId, usize)], w: usize) -> BTreeSet<DeviceId> {
    stations
        .iter()
        .filter(|(_, x)| *x == w)
        .map(|(d, _)| d.clone())
        .collect()
}

/// Keeps every view the watch shows, for the test to read while the watch runs.
#[derive(Clone, Default)]
struct Views(Arc<Mutex<Vec<RolloutView>>>);

impl Views {
    fn last(&self) -> Option<RolloutView> {
        self.0.lock().expect("lock").last().cloned()
    }
    fn all(&self) -> Vec<RolloutView> {
        self.0.lock().expect("lock").clone()
    }
}

impl RolloutSink for Views {
    fn view(&mut self, view: &RolloutView, _rows: &[StationRow]) {
        self.0.lock().expect("lock").push(view.clone());
    }
    fn note(&mut self, _line: &str) {}
    fn end(&mut self, _summary: &RolloutWatchSummary, _rows: &[StationRow]) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_of_a_running_rollout_follows_its_waves_with_the_simulators_counts() {
    let mut f = fixture();
    f.install_time = Duration::from_millis(100);
    let plan = plan(&f.group, &[30, 100], 3);
    let req = f.request();
    let stations = f.stations(30, &plan, &req);
    let (wave1, wave2) = (members(&stations, 0), members(&stations, 1));
    assert!(wave1.len() >= 3 && wave2.len() >= 3, "{stations:?}");
    let fleet = f.fleet(&stations, &BTreeSet::new()).await;
    let rec = rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    let u: UpdateId = rec.update_id.clone();

    let views = Views::default();
    let watcher = subscribe(&f.addr).await.expect("subscribe");
    let mut opts = RolloutWatchOptions::new(None);
    opts.trusted = Some(rollout::trusted_by(&f.key));
    opts.refresh = Duration::from_millis(100);
    opts.timeout = DEADLINE;
    let mut sink = views.clone();
    let watch =
        tokio::spawn(
            async move { follow(watcher, &opts, &mut sink, std::future::pending()).await },
        );

    // Wave 1 finishes; nothing advances it yet: the view must agree with the simulator.
    f.until("the watch shows wave 1 committed", || async {
        views
            .last()
            .is_some_and(|v| v.wave == 1 && v.waves[0].states.committed as usize == wave1.len())
    })
    .await;
    assert_eq!(fleet.installed(&u), wave1, "only wave 1 installed");
    let v = views.last().expect("a view");
    assert_eq!(v.waves[0].tally.members as usize, wave1.len());
    assert_eq!(v.waves[0].states.total() as usize, wave1.len());
    assert!(v.waves[0].offered && !v.waves[1].offered, "{v:?}");
    let w2 = &v.waves[1].states;
    assert_eq!(
        (w2.pending as usize, w2.committed, w2.downloading),
        (wave2.len(), 0, 0),
        "{v:?}"
    );
    // The same counts as `rollout status` reads from the retained states.
    let status = rollout::views(&f.addr, Some(&f.key), STALE, &Limits::DEFAULT)
        .await
        .expect("views");
    assert_eq!(status[0].waves[0].tally, v.waves[0].tally);
    assert_eq!(status[0].waves[0].states, v.waves[0].states);

    // Advance and complete: the watch ends with the rollout.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while f.tick().await.record.progress.status != Status::Completed {
        assert!(tokio::time::Instant::now() < deadline, "rollout stuck");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary = watch.await.expect("join").expect("watch");
    assert_eq!(summary.end, RolloutEnd::Completed);
    let last = &summary.view;
    assert_eq!(last.status, "completed");
    let committed: u32 = last.waves.iter().map(|w| w.states.committed).sum();
    assert_eq!(committed as usize, fleet.installed(&u).len());
    assert_eq!(committed as usize, stations.len());
    // It showed wave 2 under way before the end: the waves went by in order.
    let seen: Vec<usize> = views.all().iter().map(|v| v.wave).collect();
    assert!(seen.windows(2).all(|p| p[0] <= p[1]), "{seen:?}");
    assert!(seen.contains(&1) && seen.contains(&2), "{seen:?}");
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_rollouts_watch_shows_why_and_the_failures_with_their_reasons() {
    let mut f = fixture();
    f.install_time = Duration::from_millis(100);
    let plan = plan(&f.group, &[50, 100], 3);
    let req = f.request();
    let stations = f.stations(20, &plan, &req);
    let wave1 = members(&stations, 0);
    let fails: BTreeSet<DeviceId> = wave1
        .iter()
        .take(wave1.len().div_ceil(2))
        .cloned()
        .collect();
    let fleet = f.fleet(&stations, &fails).await;
    let rec = rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    let u = rec.update_id.clone();
    // Every wave-1 station finishes (nobody decides meanwhile), then the plan halts it.
    f.until("wave 1 finished", || async {
        let v = rollout::views(&f.addr, Some(&f.key), STALE, &Limits::DEFAULT)
            .await
            .expect("views");
        v[0].waves[0].tally.finished() as usize == wave1.len()
    })
    .await;
    let t = f.tick().await;
    assert!(
        matches!(t.record.progress.status, Status::Halted { .. }),
        "{:?}",
        t.view
    );
    let failed: BTreeSet<DeviceId> = fleet.installed(&u).intersection(&fails).cloned().collect();
    assert_eq!(failed, fails, "every failing wave-1 station installed");

    // JSON lines: the last one says how the watch ended.
    let out = f.watch_cli(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let last = lines.last().expect("a line");
    assert_eq!(last["end"], "halted", "{last}");
    let r = &last["rollout"];
    assert_eq!(r["update-id"], u.as_str());
    assert_eq!(r["halt-reason"]["code"], "failure-rate", "{r}");
    assert_eq!(r["halt-reason"]["wave"], 0, "{r}");
    let w1 = &r["waves"][0];
    assert_eq!(w1["states"]["rolled-back"], fails.len(), "{w1}");
    assert_eq!(w1["states"]["committed"], wave1.len() - fails.len(), "{w1}");
    let reasons = w1["failure-reasons"].as_array().expect("reasons");
    assert_eq!(reasons.len(), 1, "{w1}");
    assert_eq!(reasons[0]["stations"], fails.len());
    assert_eq!(
        reasons[0]["reason"],
        "rolled back: health check failed: sim-health, 1 attempts"
    );
    assert!(r["waves"][1]["states"]["committed"] == 0, "{r}");

    // Text (stdout is a pipe: line mode): the reason, the failures, the closing line.
    let out = f.watch_cli(&[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HALTED: wave 1 failure rate"), "{text}");
    assert!(
        text.contains(&format!(
            "{} failed: rolled back: health check failed: sim-health",
            fails.len()
        )),
        "{text}"
    );
    let one = fails.first().expect("a failing station");
    assert!(text.contains(&format!("{one}  FAILED:")), "{text}");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.starts_with(&format!("watch: rollout {u} HALTED"))),
        "{text}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stations_a_halt_stops_after_their_download_are_counted_as_held() {
    let mut f = fixture();
    f.install_time = Duration::from_millis(100);
    let plan = plan(&f.group, &[100], 3);
    let req = f.request();
    let stations = f.stations(8, &plan, &req);
    // Slow links: the halt arrives while the download is under way.
    f.chunk_delay = Duration::from_millis(500);
    let fleet = f.fleet(&stations, &BTreeSet::new()).await;
    rollout::start(&f.addr, &f.key, plan, req)
        .await
        .expect("start");
    rollout::halt(&f.addr, &f.key, None, "storm coming", &Limits::DEFAULT)
        .await
        .expect("halt");
    f.until("every station downloaded and waits", || async {
        let rows = fleetctl::status::read(&f.addr, STALE, &Limits::DEFAULT)
            .await
            .expect("status");
        rows.iter()
            .filter_map(|r| r.state.as_ref())
            .filter(|s| s.phase == PhaseName::Verifying)
            .count()
            == stations.len()
    })
    .await;
    let out = f.watch_cli(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON");
    let r = &last["rollout"];
    assert_eq!(r["halt-reason"]["note"], "storm coming", "{r}");
    assert_eq!(r["waves"][0]["states"]["held"], stations.len(), "{r}");
    assert_eq!(r["waves"][0]["states"]["installing"], 0, "{r}");
    fleet.stop().await;
}
