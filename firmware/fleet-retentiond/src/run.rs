//! The daemon loop: one `poll` over inotify and a signalfd, the plan cycle on a timer, the
//! watchdog pinged every turn.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::Config;
use crate::daemon::{Daemon, DaemonError};
use crate::watch::Changes;

/// How the daemon ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT, or `--once` finished.
    Stopped,
    /// `--once` and reconciliation refused (unmounted, or too many rows missing).
    Refused,
}

/// Runs the daemon until SIGTERM; with `once`, reconciles, runs one cycle and returns.
///
/// # Errors
/// Setup fails (state directory, inotify, signals, the disk cannot be measured).
pub fn run(cfg: Config, once: bool) -> Result<Exit, DaemonError> {
    let mut d = Daemon::open(cfg)?;
    if once {
        let refused = matches!(d.reconcile(), Err(e) if e.is_refusal());
        d.cycle()?;
        d.write_metrics();
        return Ok(if refused {
            Exit::Refused
        } else {
            Exit::Stopped
        });
    }

    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().map_err(|e| {
        DaemonError::Disk(crate::disk::DiskError::Statvfs {
            path: "signal mask".into(),
            source: e,
        })
    })?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| {
            DaemonError::Disk(crate::disk::DiskError::Statvfs {
                path: "signalfd".into(),
                source: e,
            })
        })?;

    // Watch before reconciling, so a segment promoted during the scan is not missed.
    let mut watcher = match d.watcher() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "no filesystem events; relying on the catch-up scan");
            None
        }
    };
    // Reconciliation scans the whole archive (about 15 s for a million recordings): ask systemd
    // for more start time than the unit's default rather than be killed half-way.
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Status("reconciling the index"),
            sd_notify::NotifyState::ExtendTimeoutUsec(300_000_000),
        ],
    );
    let _ = d.reconcile();
    let cfg = d.config().clone();
    d.cycle()?;
    d.write_metrics();

    let status = match d.refused() {
        Some(alarm) => format!("refused: {alarm}"),
        None => "watching".to_owned(),
    };
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ],
    );
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec) / 2);

    let mut last_cycle = Instant::now();
    let mut last_catch_up = Instant::now();
    loop {
        let mut wait =
            Daemon::until(last_cycle, cfg.cycle).min(Daemon::until(last_catch_up, cfg.catch_up));
        if let Some(w) = watchdog {
            wait = wait.min(w);
        }
        let timeout =
            PollTimeout::try_from(wait.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX);
        let (sig_ready, fs_ready) = {
            let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            if let Some(w) = &watcher {
                fds.push(PollFd::new(w.fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => tracing::warn!(error = %e, "poll failed"),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| r.contains(PollFlags::POLLIN));
            (ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if fs_ready && let Some(w) = watcher.as_mut() {
            let mut changes = Changes::default();
            if let Err(e) = w.drain(
                &mut changes,
                cfg.limits.max_events_per_turn,
                cfg.limits.max_pending_paths,
            ) {
                tracing::warn!(error = %e, "unable to read filesystem events");
                changes.overflowed = true;
            }
            d.queue(changes);
        }
        if d.refused().is_none()
            && let Err(e) = d.flush()
        {
            tracing::warn!(error = %e, "unable to index new recordings; the catch-up retries");
        }
        // Stop only after indexing what the events brought: the unit stops after the recorder's
        // (it is ordered before it), so the segment the recorder closed as it stopped is indexed
        // in this boot, not by the next boot's reconciliation.
        if sig_ready {
            if let Ok(Some(info)) = signals.read_signal() {
                tracing::info!(signal = info.ssi_signo, "stopping");
            }
            break;
        }
        if last_catch_up.elapsed() >= cfg.catch_up {
            last_catch_up = Instant::now();
            if d.refused().is_some() || d.index().is_none() {
                // The data partition may be back, or the index usable again.
                if d.index().is_none() {
                    match Daemon::open(cfg.clone()) {
                        Ok(fresh) => d = fresh,
                        Err(e) => tracing::warn!(error = %e, "unable to reopen"),
                    }
                }
                if d.reconcile().is_ok() {
                    watcher = d.watcher().ok();
                }
            } else if let Err(e) = d.catch_up() {
                tracing::warn!(error = %e, "catch-up failed");
            }
        }
        if last_cycle.elapsed() >= cfg.cycle {
            last_cycle = Instant::now();
            if let Err(e) = d.cycle() {
                tracing::warn!(error = %e, "retention cycle failed");
            }
            d.write_metrics();
        }
        if watchdog.is_some() {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    d.write_metrics();
    Ok(Exit::Stopped)
}
