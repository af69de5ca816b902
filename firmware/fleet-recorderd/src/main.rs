//! fleet-recorderd: records every configured device, segment by segment, into `<data-dir>/data/`.
//!
//! Exit codes: 0 stopped cleanly, 1 runtime failure, 2 invalid config.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use fleet_recorderd::capture::{AlsaSource, clocks_now};
use fleet_recorderd::config::{Config, DeviceConfig, Limits};
use fleet_recorderd::guano::ClosedBy;
use fleet_recorderd::metrics::{DeviceMetrics, DeviceState, Status, is_healthy};
use fleet_recorderd::recording::{StopFlag, ensure_dirs, run_session};
use fleet_recorderd::recovery::{self, Repair};
use fleet_recorderd::schedule::is_active;
use fleet_recorderd::segment;

#[derive(Debug, Parser)]
#[command(
    name = "fleet-recorderd",
    version,
    about = "Gap-free recording from ALSA"
)]
struct Args {
    /// Configuration file.
    #[arg(
        long,
        default_value = "/etc/fleet/recorderd.toml",
        env = "FLEET_RECORDERD_CONFIG"
    )]
    config: PathBuf,
    /// Station settings, laid over the image defaults of --config (ADR 0008); may be absent
    /// on a station that is not provisioned yet.
    #[arg(long, env = "FLEET_RECORDERD_STATION_CONFIG")]
    station_config: Option<PathBuf>,
    /// Pushed settings, laid over both (ADR 0011: written only by fleet-updated's applier of
    /// signed configuration pushes); may be absent.
    #[arg(long, env = "FLEET_RECORDERD_PUSHED_CONFIG")]
    pushed_config: Option<PathBuf>,
    /// Validate the merged configuration and exit (0 valid, 2 invalid, 3 incomplete: the
    /// daemon would wait for station settings).
    #[arg(long)]
    check_config: bool,
    /// Stop after this many seconds of audio per device (benchmarks, tests, field checks).
    #[arg(long)]
    duration: Option<f64>,
}

/// How often the loop evaluates schedules, checks health and pings the watchdog (a signal wakes it
/// at once).
const TICK: Duration = Duration::from_secs(1);
/// How often an idle device thread looks at its schedule again.
const IDLE_POLL: Duration = Duration::from_millis(250);
/// The status file is rewritten when a device changes state or closes a segment, and at least this
/// often (each write is an fsync: not every tick).
const STATUS_EVERY_MS: u64 = 5_000;
/// A recording device with no progress for this long makes the daemon unhealthy.
const STALE_MS: u64 = 15_000;

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let limits = Limits::default();
    let layers = fleet_config::Stack::new(
        args.config.clone(),
        args.station_config.clone(),
        args.pushed_config.clone(),
    );
    // No station id or no microphone yet: start, say so in the status and wait (ADR 0008).
    let out = fleet_config::load_for_daemon(
        &layers,
        fleet_recorderd::config::STATION_NEEDS,
        args.check_config,
        |m| Config::parse(&m.text, &m.origin, &limits),
    );
    let config = match out.finish(&layers) {
        Ok(c) => c,
        Err((code, message)) => {
            eprintln!("{message}");
            std::process::exit(i32::from(code));
        }
    };
    if args.check_config {
        println!(
            "config {} is valid: station {}, {} device(s)",
            args.config.display(),
            config.station_id,
            config.devices.len()
        );
        return;
    }
    if let Err(e) = run(&config, args.duration) {
        tracing::error!(error = format!("{e:#}"), "fleet-recorderd failed");
        std::process::exit(1);
    }
}

/// What makes the status file worth rewriting at once: (state, segments written, gaps).
type StatusKey = (DeviceState, u64, u64);

struct Device {
    config: DeviceConfig,
    metrics: Arc<DeviceMetrics>,
    stop: Arc<StopFlag>,
    active: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn run(config: &Config, duration: Option<f64>) -> anyhow::Result<()> {
    // Signals are taken by one thread with sigwait: every other thread inherits the blocked mask.
    let shutdown = Arc::new(AtomicBool::new(false));
    // Capacity 1: one signal is enough to stop; the loop waits on it instead of sleeping.
    let (wake_tx, wake_rx) = std::sync::mpsc::sync_channel::<()>(1);
    {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block()
            .context("unable to block termination signals")?;
        let shutdown = Arc::clone(&shutdown);
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(sig) = set.wait() {
                    tracing::info!(signal = %sig, "stopping");
                }
                shutdown.store(true, Ordering::SeqCst);
                let _ = wake_tx.try_send(());
            })
            .context("unable to start the signal thread")?;
    }

    let (buffer_dir, data_dir) = ensure_dirs(&config.data_dir).with_context(|| {
        format!(
            "unable to create directories under {}",
            config.data_dir.display()
        )
    })?;
    let repaired = recover(&buffer_dir, &data_dir)?;

    let mut devices: Vec<Device> = Vec::new();
    for dev in &config.devices {
        let metrics = Arc::new(DeviceMetrics::default());
        let stop = StopFlag::new();
        let active = Arc::new(AtomicBool::new(false));
        let first_seq = next_seq(config, &dev.id, &buffer_dir, &data_dir);
        let max_frames =
            duration.map(|s| (s * f64::from(dev.profile.spec.rate)).round().max(0.0) as u64);
        let setup = config.session_setup(dev, first_seq, max_frames);
        let thread = {
            let (metrics, stop, active) =
                (Arc::clone(&metrics), Arc::clone(&stop), Arc::clone(&active));
            let (locator, id) = (dev.locator.clone(), dev.id.clone());
            let (buffer_dir, data_dir) = (buffer_dir.clone(), data_dir.clone());
            std::thread::Builder::new()
                .name(format!("device-{id}"))
                .spawn(move || {
                    supervise(
                        &id,
                        locator,
                        setup,
                        &stop,
                        &active,
                        &metrics,
                        &buffer_dir,
                        &data_dir,
                    );
                })
                .with_context(|| format!("unable to start the thread of device {}", dev.id))?
        };
        devices.push(Device {
            config: dev.clone(),
            metrics,
            stop,
            active,
            thread: Some(thread),
        });
    }

    let mut watchdog_usec = 0u64;
    // Pinged every tick (1 s): set WatchdogSec to 10 s or more.
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    tracing::info!(station = %config.station_id, devices = devices.len(), "recording");
    let mut last_written: Option<(u64, Vec<StatusKey>)> = None;
    loop {
        let stopping = shutdown.load(Ordering::SeqCst);
        let now = clocks_now();
        let wall_s = config
            .clock
            .trusted()
            .then_some(now.wall_unix_ns.div_euclid(1_000_000_000));
        for d in &devices {
            if stopping {
                d.stop.stop(ClosedBy::Shutdown);
                continue;
            }
            let want = is_active(&d.config.schedule, wall_s, config.utc_offset_minutes);
            if d.active.swap(want, Ordering::SeqCst) != want {
                tracing::info!(device = %d.config.id, active = want, "schedule");
            }
            if !want {
                d.stop.stop(ClosedBy::Schedule);
            }
        }
        let all_done = devices
            .iter()
            .all(|d| d.thread.as_ref().is_none_or(|t| t.is_finished()));
        let status = status(config, &devices, repaired, &now);
        let now_ms = now.monotonic_ns / 1_000_000;
        let key: Vec<_> = status
            .devices
            .iter()
            .map(|d| (d.state, d.segments_written, d.gaps))
            .collect();
        let due = last_written
            .as_ref()
            .is_none_or(|(at, k)| *k != key || now_ms.saturating_sub(*at) >= STATUS_EVERY_MS);
        if due {
            if let Err(e) = write_status(&config.status_file, &status) {
                tracing::warn!(error = format!("{e:#}"), "unable to write the status file");
            }
            let summary: Vec<String> = status
                .devices
                .iter()
                .map(|d| {
                    format!(
                        "{} {}: {} segments, {} gaps",
                        d.id,
                        d.state.as_str(),
                        d.segments_written,
                        d.gaps
                    )
                })
                .collect();
            let _ = sd_notify::notify(
                false,
                &[sd_notify::NotifyState::Status(&summary.join("; "))],
            );
            last_written = Some((now_ms, key));
        }
        // The watchdog proves the daemon is not wedged: a device that is missing is not a hang
        // (restarting would not bring it back), a recording device without progress is.
        let wedged = status.devices.iter().any(|d| {
            d.state == DeviceState::Recording
                && !is_healthy(d, now.monotonic_ns / 1_000_000, STALE_MS)
        });
        if watchdog && !wedged {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
        if all_done {
            break;
        }
        // Woken early by a signal; after a stop request, tick fast until the devices are done.
        let wait = if stopping { IDLE_POLL } else { TICK };
        wait_for_wake(&wake_rx, wait);
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    for d in &mut devices {
        if let Some(t) = d.thread.take() {
            let _ = t.join();
        }
    }
    let now = clocks_now();
    write_status(
        &config.status_file,
        &status(config, &devices, repaired, &now),
    )?;
    Ok(())
}

/// Waits up to `wait` for the signal thread's wake-up. The signal thread ends once it has
/// signalled, dropping its sender: from then on the channel answers at once, so the wait is a
/// sleep. Without that, a device thread slow to stop (a capture blocked in the driver) made the
/// loop spin and flood systemd's notify socket with watchdog pings until PID 1 could do nothing
/// else, the stop included.
fn wait_for_wake(wake_rx: &std::sync::mpsc::Receiver<()>, wait: Duration) {
    if let Err(std::sync::mpsc::RecvTimeoutError::Disconnected) = wake_rx.recv_timeout(wait) {
        std::thread::sleep(wait);
    }
}

fn status(config: &Config, devices: &[Device], repaired: u64, now: &segment::Stamp) -> Status {
    let now_ms = now.monotonic_ns / 1_000_000;
    let devs: Vec<_> = devices
        .iter()
        .map(|d| d.metrics.snapshot(&d.config.id))
        .collect();
    Status {
        version: 1,
        station: config.station_id.to_string(),
        healthy: devs.iter().all(|d| is_healthy(d, now_ms, STALE_MS)),
        repaired_at_start: repaired,
        written_monotonic_ms: now_ms,
        written_unix_ms: config
            .clock
            .trusted()
            .then_some(now.wall_unix_ns.div_euclid(1_000_000)),
        devices: devs,
    }
}

/// Temp file, fsync, rename, fsync directory.
fn write_status(path: &Path, status: &Status) -> anyhow::Result<()> {
    let body = serde_json::to_vec_pretty(status).context("unable to serialise status")?;
    fleet_durable::write_atomic(path, &body, fleet_durable::Replace::Rename)?;
    Ok(())
}

fn recover(buffer_dir: &Path, data_dir: &Path) -> anyhow::Result<u64> {
    let mut n = 0;
    for r in recovery::recover(buffer_dir, data_dir).context("unable to recover open segments")? {
        match r {
            Repair::Promoted { path, frames } => {
                n += 1;
                tracing::warn!(path = %path.display(), frames, "repaired a segment left open by a crash");
            }
            Repair::RemovedEmpty { path } => {
                tracing::info!(path = %path.display(), "removed an empty segment");
            }
            Repair::Quarantined { path, reason } => {
                tracing::error!(path = %path.display(), reason, "moved an unreadable segment aside");
            }
        }
    }
    Ok(n)
}

fn next_seq(config: &Config, device: &str, buffer_dir: &Path, data_dir: &Path) -> u64 {
    let names: Vec<String> = [buffer_dir, data_dir]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    segment::next_seq(
        names.iter().map(String::as_str),
        config.station_id.as_str(),
        device,
    )
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    id: &str,
    locator: fleet_recorderd::capture::DeviceLocator,
    mut setup: fleet_recorderd::recording::SessionSetup,
    stop: &Arc<StopFlag>,
    active: &AtomicBool,
    metrics: &Arc<DeviceMetrics>,
    buffer_dir: &Path,
    data_dir: &Path,
) {
    loop {
        match stop.requested() {
            Some(ClosedBy::Shutdown) => break,
            Some(_) if !active.load(Ordering::SeqCst) => {
                metrics.set_state(DeviceState::Idle);
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            Some(_) => stop.clear(),
            None if !active.load(Ordering::SeqCst) => {
                metrics.set_state(DeviceState::Idle);
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            None => {}
        }
        metrics.set_state(DeviceState::Starting);
        match run_session(AlsaSource::new(locator.clone()), &setup, stop, metrics) {
            Ok(report) => {
                setup.first_seq = report.next_seq;
                if setup.max_frames.is_some() {
                    break; // --duration: one session
                }
            }
            Err(e) => {
                DeviceMetrics::add(&metrics.write_errors, 1);
                metrics.set_state(DeviceState::Failing);
                tracing::error!(device = id, error = %e, "recording failed; retrying");
                std::thread::sleep(Duration::from_secs(5));
                // Promote what the failed session left behind, then continue after it.
                // Only this device's segments: the others are still being written.
                let station = setup.template.station.clone();
                let device = setup.template.device.clone();
                let mine = |name: &str| segment::seq_of(name, &station, &device).is_some();
                if let Ok(rs) = recovery::recover_matching(buffer_dir, data_dir, mine) {
                    let n = rs
                        .iter()
                        .filter(|r| matches!(r, Repair::Promoted { .. }))
                        .count();
                    DeviceMetrics::add(&metrics.segments_repaired, n as u64);
                }
                if let Ok(rd) = std::fs::read_dir(data_dir) {
                    let names: Vec<String> = rd
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    setup.first_seq = setup.first_seq.max(segment::next_seq(
                        names.iter().map(String::as_str),
                        &setup.template.station,
                        &setup.template.device,
                    ));
                }
            }
        }
    }
    metrics.set_state(DeviceState::Stopped);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loop_still_waits_its_tick_once_the_signal_thread_is_gone() {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        tx.try_send(()).expect("room for one wake-up");
        drop(tx);
        let wait = Duration::from_millis(50);
        wait_for_wake(&rx, wait); // takes the signal's one wake-up
        let gone = std::time::Instant::now();
        for _ in 0..3 {
            wait_for_wake(&rx, wait);
        }
        assert!(
            gone.elapsed() >= wait * 3,
            "with the sender gone each wait lasts its tick: {:?}",
            gone.elapsed()
        );
    }
}
