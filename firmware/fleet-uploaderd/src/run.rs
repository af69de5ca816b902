//! The daemon loop: a turn, then sleep on a signalfd until the next turn is due; SIGTERM stops it
//! between turns or, during an upload, at the next chunk (the upload stays resumable).

use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::config::Config;
use crate::daemon::{DaemonError, Turn, Uploader};

/// Runs until SIGTERM/SIGINT; with `once`, runs turns until the queue is idle or waiting.
///
/// # Errors
/// Setup fails (state directory, state file, signals).
pub fn run(cfg: Config, once: bool) -> Result<(), DaemonError> {
    let mut up = Uploader::new(cfg)?;
    if once {
        while let Turn::Tried(_) = up.turn(&mut || true) {}
        return Ok(());
    }
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    let signal_err = |e: nix::Error| DaemonError::CreateDir {
        path: "signalfd".into(),
        source: std::io::Error::from(e),
    };
    mask.thread_block().map_err(signal_err)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(signal_err)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
        .then(|| Duration::from_micros(watchdog_usec) / 2);
    let mut last_ping = Instant::now();
    let mut stopping = false;
    loop {
        let turn = {
            let mut keep_going = || {
                if let Some(w) = watchdog
                    && last_ping.elapsed() >= w
                {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    last_ping = Instant::now();
                }
                if !stopping && matches!(signals.read_signal(), Ok(Some(_))) {
                    stopping = true;
                }
                !stopping
            };
            up.turn(&mut keep_going)
        };
        if stopping {
            break;
        }
        let mut wait = match turn {
            Turn::Tried(_) => Duration::ZERO,
            Turn::Sleep(d) => d,
        };
        loop {
            if let Some(w) = watchdog {
                if last_ping.elapsed() >= w {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    last_ping = Instant::now();
                }
                wait = wait.min(w);
            }
            let started = Instant::now();
            let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => tracing::warn!(error = %e, "poll failed"),
            }
            if matches!(signals.read_signal(), Ok(Some(_))) {
                stopping = true;
                break;
            }
            let slept = started.elapsed();
            if slept >= wait {
                break;
            }
            wait -= slept;
        }
        if stopping {
            break;
        }
    }
    tracing::info!("stopping");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    Ok(())
}
