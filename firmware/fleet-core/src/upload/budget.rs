//! The bandwidth budget: a token bucket over bytes. The shell asks before sending each chunk and
//! sleeps for the wait it is told.

/// A token bucket: `rate` bytes per second, holding at most `burst` bytes. `rate == 0` means
/// unlimited. Tokens are kept in thousandths of a byte, so no fraction of a millisecond's share
/// is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    rate_bytes_per_s: u64,
    burst_bytes: u64,
    milli_tokens: u128,
    last_ms: u64,
}

/// The answer to a request for bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Send this many bytes now: what was asked, or the burst when more was asked.
    Send(u64),
    /// Nothing may be sent before this many milliseconds have passed.
    Wait(u64),
}

impl Budget {
    /// A full bucket at `now_ms`. A zero burst is raised to one second of the rate.
    #[must_use]
    pub fn new(rate_bytes_per_s: u64, burst_bytes: u64, now_ms: u64) -> Self {
        let burst_bytes = if burst_bytes == 0 {
            rate_bytes_per_s.max(1)
        } else {
            burst_bytes
        };
        Self {
            rate_bytes_per_s,
            burst_bytes,
            milli_tokens: u128::from(burst_bytes) * 1000,
            last_ms: now_ms,
        }
    }

    /// No cap configured.
    #[must_use]
    pub fn unlimited(&self) -> bool {
        self.rate_bytes_per_s == 0
    }

    /// The largest grant.
    #[must_use]
    pub fn burst_bytes(&self) -> u64 {
        self.burst_bytes
    }

    /// Asks to send `want` bytes at `now_ms` (monotonic; an earlier time than the last call counts
    /// as no time passed).
    pub fn take(&mut self, now_ms: u64, want: u64) -> Grant {
        if self.unlimited() || want == 0 {
            return Grant::Send(want);
        }
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let cap = u128::from(self.burst_bytes) * 1000;
        self.milli_tokens =
            (self.milli_tokens + u128::from(elapsed) * u128::from(self.rate_bytes_per_s)).min(cap);
        let need = want.min(self.burst_bytes);
        let need_milli = u128::from(need) * 1000;
        if self.milli_tokens >= need_milli {
            self.milli_tokens -= need_milli;
            Grant::Send(need)
        } else {
            let missing = need_milli - self.milli_tokens;
            let wait = missing.div_ceil(u128::from(self.rate_bytes_per_s));
            Grant::Wait(u64::try_from(wait).unwrap_or(u64::MAX).max(1))
        }
    }
}
