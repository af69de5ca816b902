//! Sending at the bandwidth budget's pace, and stopping when the daemon must stop.
//!
//! The budget is `fleet_core::upload::Budget` (pure); this wraps a reader so every read asks it
//! first and sleeps for the wait it names. Between reads `keep_going` is asked (shutdown,
//! watchdog), so a long part never holds the daemon past its stop timeout.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use fleet_core::upload::{Budget, Grant};

/// The budget and the stop check shared by every request of one daemon.
pub struct Pacer<'a> {
    budget: Budget,
    rate: u64,
    origin: Instant,
    keep_going: &'a mut dyn FnMut() -> bool,
    /// Bytes sent since the pacer was made.
    pub sent: u64,
    /// Bytes read back from the server (an SFTP confirmation) since the pacer was made.
    pub received: u64,
    /// Largest read handed to the HTTP client.
    chunk: usize,
}

impl std::fmt::Debug for Pacer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("budget", &self.budget)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

/// The error a paced reader returns when the daemon must stop; the request fails with it.
pub const STOPPED: &str = "stopped by shutdown";

impl<'a> Pacer<'a> {
    /// `rate == 0`: unlimited; `burst == 0`: one second of the rate. No read is larger than the
    /// burst or `chunk`.
    pub fn new(
        rate_bytes_per_s: u64,
        burst_bytes: u64,
        chunk: usize,
        keep_going: &'a mut dyn FnMut() -> bool,
    ) -> Self {
        Self {
            budget: Budget::new(rate_bytes_per_s, burst_bytes, 0),
            rate: rate_bytes_per_s,
            origin: Instant::now(),
            keep_going,
            sent: 0,
            received: 0,
            chunk: chunk.max(1),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether a bandwidth cap applies.
    #[must_use]
    pub fn is_capped(&self) -> bool {
        self.rate > 0
    }

    /// Asks whether to go on (the daemon's shutdown flag and watchdog ping).
    pub fn keep_going(&mut self) -> bool {
        (self.keep_going)()
    }

    /// Wraps `inner` (what is sent) so reads follow the budget.
    pub fn reader<R: Read>(&mut self, inner: R) -> PacedReader<'_, 'a, R> {
        PacedReader {
            inner,
            pacer: self,
            inbound: false,
        }
    }

    /// Wraps `inner` (what is read back from the server) so reads follow the same budget: the
    /// cap is the link's, whichever way the bytes go.
    pub fn reader_in<R: Read>(&mut self, inner: R) -> PacedReader<'_, 'a, R> {
        PacedReader {
            inner,
            pacer: self,
            inbound: true,
        }
    }
}

/// A reader that asks the budget before every read.
pub struct PacedReader<'p, 'a, R> {
    inner: R,
    pacer: &'p mut Pacer<'a>,
    inbound: bool,
}

impl<R> std::fmt::Debug for PacedReader<'_, '_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacedReader").finish_non_exhaustive()
    }
}

impl<R: Read> Read for PacedReader<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(self.pacer.chunk) as u64;
        loop {
            if !self.pacer.keep_going() {
                return Err(io::Error::other(STOPPED));
            }
            let now = self.pacer.now_ms();
            match self.pacer.budget.take(now, want) {
                Grant::Send(n) => {
                    let n = usize::try_from(n).unwrap_or(buf.len()).min(buf.len());
                    let got = self.inner.read(&mut buf[..n])?;
                    if self.inbound {
                        self.pacer.received += got as u64;
                    } else {
                        self.pacer.sent += got as u64;
                    }
                    return Ok(got);
                }
                // Sleep in slices, so shutdown is noticed within a quarter second.
                Grant::Wait(ms) => std::thread::sleep(Duration::from_millis(ms.clamp(1, 250))),
            }
        }
    }
}
