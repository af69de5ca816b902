//! The download's space reservation (see [`crate::reservation`]), carried out off the loop: a
//! worker task applies holds and releases in order (SQLite in `spawn_blocking`), so neither a
//! busy index nor a slow disk stalls chunk handling. Failures are logged and never stop a
//! download: the reservation is advisory, and whatever is left behind lapses by itself.
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::reservation::{RESERVATION_RENEW, Reservations};

/// Depth of the queue towards the worker: a start-up release, a hold, its renewals and a
/// release are all a download sends, one at a time; more are dropped (and lapse).
const SPACE_CAPACITY: usize = 8;
/// How long a shutdown waits for the last release.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
enum Op {
    Hold(u64),
    Release,
}

/// The reservation as the loop sees it.
pub(super) struct Space {
    /// `None` once closed.
    tx: Option<mpsc::Sender<Op>>,
    worker: Option<JoinHandle<()>>,
    /// The bytes held and when the hold was last sent.
    held: Option<(u64, Instant)>,
}

impl Space {
    /// Starts the worker and drops a reservation a previous run left behind.
    pub(super) fn start(reservations: Reservations) -> Self {
        let (tx, mut rx) = mpsc::channel::<Op>(SPACE_CAPACITY);
        let worker = tokio::spawn(async move {
            while let Some(op) = rx.recv().await {
                let r = reservations.clone();
                let done = tokio::task::spawn_blocking(move || match op {
                    Op::Hold(bytes) => r.hold(bytes),
                    Op::Release => r.release(),
                })
                .await;
                match (op, done) {
                    (Op::Hold(bytes), Ok(Ok(true))) => {
                        tracing::debug!(bytes, "download space reserved");
                    }
                    (Op::Release, Ok(Ok(true))) => tracing::debug!("download space released"),
                    (_, Ok(Ok(false))) => {}
                    (_, Ok(Err(e))) => {
                        tracing::warn!(error = %e, "unable to update the download's space reservation");
                    }
                    (_, Err(e)) => {
                        tracing::warn!(error = %e, "unable to run the space reservation");
                    }
                }
            }
        });
        let space = Self {
            tx: Some(tx),
            worker: Some(worker),
            held: None,
        };
        space.send(Op::Release);
        space
    }

    fn send(&self, op: Op) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(op) {
            tracing::warn!(?op, error = %e, "space reservation queue full; dropped (it lapses)");
        }
    }

    /// Holds `bytes` for the download starting now.
    pub(super) fn hold(&mut self, bytes: u64) {
        self.held = Some((bytes, Instant::now()));
        self.send(Op::Hold(bytes));
    }

    /// The download ended.
    pub(super) fn release(&mut self) {
        if self.held.take().is_some() {
            self.send(Op::Release);
        }
    }

    /// Renews a held reservation before it lapses.
    pub(super) fn renew(&mut self) {
        if let Some((bytes, at)) = self.held
            && at.elapsed() >= RESERVATION_RENEW
        {
            self.hold(bytes);
        }
    }

    /// Releases what is held and waits (bounded) for the worker to finish.
    pub(super) async fn close(&mut self) {
        self.release();
        self.tx = None;
        let Some(worker) = self.worker.take() else {
            return;
        };
        if tokio::time::timeout(CLOSE_TIMEOUT, worker).await.is_err() {
            tracing::warn!("space reservation not released in time (it lapses)");
        }
    }
}
