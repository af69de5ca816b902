//! Time as a value. The core never reads a clock.

/// The shell's view of "now", passed into every decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic milliseconds since an arbitrary origin (boot). Always available.
    pub monotonic_ms: u64,
    /// Unix seconds, only when the wall clock is trusted (NTP/RTC synced). `None` otherwise:
    /// no decision may depend on wall-clock age while this is `None`.
    pub wall_unix_s: Option<i64>,
}

impl Now {
    #[must_use]
    pub fn untrusted(monotonic_ms: u64) -> Self {
        Self {
            monotonic_ms,
            wall_unix_s: None,
        }
    }

    #[must_use]
    pub fn trusted(monotonic_ms: u64, wall_unix_s: i64) -> Self {
        Self {
            monotonic_ms,
            wall_unix_s: Some(wall_unix_s),
        }
    }
}
