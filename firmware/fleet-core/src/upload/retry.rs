//! Exponential backoff with equal jitter, and the dead-letter rule.
//!
//! Failures come in two scopes. A **link** failure (no route, timeout, 5xx, wrong credentials, the
//! server's disk full) says nothing about the recording: the whole queue backs off and no
//! recording's count grows. A **recording** failure (unreadable file, encoding that does not
//! decode back, a checksum the server refuses) counts against that recording; after
//! `dead_letter_after` of them it is parked with its reason and tried again after
//! `dead_letter_retry_ms`.

/// Why a retry policy was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryPolicyError {
    #[error("unable to accept a backoff base of zero")]
    ZeroBase,
    #[error("unable to accept a backoff cap ({max_ms} ms) below its base ({base_ms} ms)")]
    CapBelowBase { base_ms: u64, max_ms: u64 },
    #[error("unable to accept dead-letter-after = 0: a recording needs at least one try")]
    ZeroDeadLetter,
}

/// The retry policy, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    base_ms: u64,
    max_ms: u64,
    dead_letter_after: u32,
    dead_letter_retry_ms: u64,
}

impl RetryPolicy {
    /// # Errors
    /// A zero base, a cap below the base, or `dead_letter_after == 0`.
    pub fn new(
        base_ms: u64,
        max_ms: u64,
        dead_letter_after: u32,
        dead_letter_retry_ms: u64,
    ) -> Result<Self, RetryPolicyError> {
        if base_ms == 0 {
            return Err(RetryPolicyError::ZeroBase);
        }
        if max_ms < base_ms {
            return Err(RetryPolicyError::CapBelowBase { base_ms, max_ms });
        }
        if dead_letter_after == 0 {
            return Err(RetryPolicyError::ZeroDeadLetter);
        }
        Ok(Self {
            base_ms,
            max_ms,
            dead_letter_after,
            dead_letter_retry_ms,
        })
    }

    #[must_use]
    pub fn base_ms(&self) -> u64 {
        self.base_ms
    }
    #[must_use]
    pub fn max_ms(&self) -> u64 {
        self.max_ms
    }
    #[must_use]
    pub fn dead_letter_after(&self) -> u32 {
        self.dead_letter_after
    }
    #[must_use]
    pub fn dead_letter_retry_ms(&self) -> u64 {
        self.dead_letter_retry_ms
    }
}

/// The delay before try `failures + 1`, after `failures` consecutive failures (>= 1):
/// `cap = min(max, base * 2^(failures-1))`, then `cap/2 + jitter * cap/2` ("equal jitter": never
/// sooner than half the cap, so a fleet that lost its link together does not come back together).
/// `jitter` is a uniform random value in `[0, 1)` the shell draws; values outside are clamped.
#[must_use]
pub fn backoff_ms(policy: &RetryPolicy, failures: u32, jitter: f64) -> u64 {
    let shift = failures.saturating_sub(1).min(63);
    let cap = policy
        .base_ms
        .saturating_mul(1u64 << shift)
        .min(policy.max_ms);
    let jitter = if jitter.is_nan() {
        0.0
    } else {
        jitter.clamp(0.0, 1.0)
    };
    let half = cap / 2;
    // `half as f64 * jitter` is at most `half`; the cast back saturates.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let extra = ((cap - half) as f64 * jitter) as u64;
    (half + extra).min(cap)
}

/// Whose fault a failure was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureScope {
    /// The link or the destination: the whole queue waits.
    Link,
    /// This recording: its count grows, and it is parked after `dead_letter_after`.
    Recording,
}

/// A failed try, with a short stable reason (`connect`, `http-503`, `auth`, `checksum`, ...)
/// that the status file counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub scope: FailureScope,
    pub reason: String,
}

/// The retry state of one recording (or, for link failures, of the link), persisted by the shell.
/// Times are the shell's monotonic milliseconds; a reboot starts them again (a restart retries
/// at once, which is the safe direction).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempts {
    /// Consecutive failures since the last success.
    pub failures: u32,
    /// The last failure's reason.
    pub last_reason: Option<String>,
    /// Not tried again before this monotonic time.
    pub not_before_ms: u64,
    /// Parked (dead-letter) after `dead_letter_after` failures.
    pub parked: bool,
}

/// The state after a failure at `now_ms`. A parked recording that fails again stays parked and
/// waits `dead_letter_retry_ms` again.
#[must_use]
pub fn after_failure(
    policy: &RetryPolicy,
    attempts: &Attempts,
    reason: &str,
    now_ms: u64,
    jitter: f64,
) -> Attempts {
    let failures = attempts.failures.saturating_add(1);
    let parked = failures >= policy.dead_letter_after;
    let wait = if parked {
        policy.dead_letter_retry_ms
    } else {
        backoff_ms(policy, failures, jitter)
    };
    Attempts {
        failures,
        last_reason: Some(reason.to_owned()),
        not_before_ms: now_ms.saturating_add(wait),
        parked,
    }
}
