//! Whether the wall clock may be trusted: the one rule every daemon uses (ADR 0004).
//!
//! The shell gathers [`ClockFacts`] (the NTP client's synchronized flag, the RTC, the last
//! synchronization, the wall clock itself) and [`decide_trust`] answers. A daemon builds its
//! [`Now`](crate::time::Now) from the answer: `wall_unix_s` is `Some` only while
//! [`Trust::is_trusted`] holds.
use serde::{Deserialize, Serialize};

/// What the station knows about its clock at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockFacts {
    /// The wall clock now, Unix seconds.
    pub wall_unix_s: i64,
    /// The NTP client reports the kernel clock synchronized now (systemd-timesyncd's
    /// `/run/systemd/timesync/synchronized`, timedated's `NTPSynchronized`). `None`: unknown
    /// (no NTP client installed or readable).
    pub ntp_synchronized: Option<bool>,
    /// A battery-backed RTC is present and holds a time (not the epoch).
    pub rtc_valid: bool,
    /// Unix seconds of the last NTP synchronization this station remembers (survives reboots).
    pub last_sync_unix_s: Option<i64>,
}

/// The limits of the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockPolicy {
    /// No clock earlier than this is ever right (the image's build time, Unix seconds).
    pub floor_unix_s: i64,
    /// How long an RTC-kept clock stays trusted after the last synchronization, in seconds
    /// (default 30 days: a Pi 5 RTC drifts a few seconds per month).
    pub rtc_holdover_s: i64,
    /// Worst RTC drift assumed for the offset bound, parts per million (default 50).
    pub rtc_drift_ppm: u32,
}

impl Default for ClockPolicy {
    fn default() -> Self {
        Self {
            floor_unix_s: 1_735_689_600, // 2025-01-01
            rtc_holdover_s: 30 * 86_400,
            rtc_drift_ppm: 50,
        }
    }
}

/// Why the clock is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrustedBy {
    /// The NTP client synchronized it.
    Ntp,
    /// The RTC kept it since a synchronization within the holdover.
    Rtc,
}

/// Why the clock is not trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UntrustedBecause {
    /// The wall clock is before the image was built.
    BeforeFloor,
    /// Never synchronized, and no RTC to carry an old synchronization.
    NeverSynchronized,
    /// The last synchronization is older than the RTC holdover.
    SyncTooOld,
    /// The last synchronization lies in the future of the wall clock (the clock went back).
    SyncInFuture,
    /// Not synchronized now and no RTC.
    NoRtc,
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Trusted {
        by: TrustedBy,
        /// Upper bound of the clock's error in milliseconds, when one can be given: 0 right
        /// after a synchronization, growing with the RTC drift since.
        max_offset_ms: Option<u64>,
    },
    Untrusted(UntrustedBecause),
}

impl Trust {
    #[must_use]
    pub fn is_trusted(&self) -> bool {
        matches!(self, Trust::Trusted { .. })
    }
}

/// The rule, in order: a clock before the floor is never trusted; a synchronized clock is;
/// otherwise an RTC carries the last synchronization for `rtc_holdover_s`.
#[must_use]
pub fn decide_trust(f: &ClockFacts, p: &ClockPolicy) -> Trust {
    if f.wall_unix_s < p.floor_unix_s {
        return Trust::Untrusted(UntrustedBecause::BeforeFloor);
    }
    let bound = |since_s: i64| -> u64 {
        (since_s.max(0) as u64)
            .saturating_mul(u64::from(p.rtc_drift_ppm))
            .saturating_div(1000)
    };
    if f.ntp_synchronized == Some(true) {
        let since = f.last_sync_unix_s.map(|s| f.wall_unix_s.saturating_sub(s));
        return Trust::Trusted {
            by: TrustedBy::Ntp,
            max_offset_ms: since.filter(|s| *s >= 0).map(bound),
        };
    }
    if !f.rtc_valid {
        return Trust::Untrusted(match f.last_sync_unix_s {
            None => UntrustedBecause::NeverSynchronized,
            Some(_) => UntrustedBecause::NoRtc,
        });
    }
    let Some(last) = f.last_sync_unix_s else {
        return Trust::Untrusted(UntrustedBecause::NeverSynchronized);
    };
    let since = f.wall_unix_s.saturating_sub(last);
    if since < 0 {
        Trust::Untrusted(UntrustedBecause::SyncInFuture)
    } else if since > p.rtc_holdover_s {
        Trust::Untrusted(UntrustedBecause::SyncTooOld)
    } else {
        Trust::Trusted {
            by: TrustedBy::Rtc,
            max_offset_ms: Some(bound(since)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: i64 = 1_790_000_000;

    fn facts(ntp: Option<bool>, rtc: bool, last: Option<i64>) -> ClockFacts {
        ClockFacts {
            wall_unix_s: NOW,
            ntp_synchronized: ntp,
            rtc_valid: rtc,
            last_sync_unix_s: last,
        }
    }

    #[test]
    fn each_combination_of_clock_facts_gets_its_documented_answer() {
        let p = ClockPolicy::default();
        let day = 86_400;
        let cases = [
            (
                facts(Some(true), false, None),
                Trust::Trusted {
                    by: TrustedBy::Ntp,
                    max_offset_ms: None,
                },
            ),
            (
                facts(Some(true), false, Some(NOW)),
                Trust::Trusted {
                    by: TrustedBy::Ntp,
                    max_offset_ms: Some(0),
                },
            ),
            (
                facts(Some(false), true, Some(NOW - day)),
                Trust::Trusted {
                    by: TrustedBy::Rtc,
                    max_offset_ms: Some(4320),
                },
            ),
            (
                facts(None, true, Some(NOW - 31 * day)),
                Trust::Untrusted(UntrustedBecause::SyncTooOld),
            ),
            (
                facts(None, true, Some(NOW + 60)),
                Trust::Untrusted(UntrustedBecause::SyncInFuture),
            ),
            (
                facts(None, true, None),
                Trust::Untrusted(UntrustedBecause::NeverSynchronized),
            ),
            (
                facts(Some(false), false, Some(NOW - 10)),
                Trust::Untrusted(UntrustedBecause::NoRtc),
            ),
            (
                facts(None, false, None),
                Trust::Untrusted(UntrustedBecause::NeverSynchronized),
            ),
        ];
        for (f, want) in cases {
            assert_eq!(decide_trust(&f, &p), want, "{f:?}");
        }
    }

    proptest! {
        #[test]
        fn a_clock_before_the_floor_is_never_trusted(
            wall in -10_000_000_000i64..1_735_689_600,
            ntp in proptest::option::of(any::<bool>()),
            rtc in any::<bool>(),
            last in proptest::option::of(-10_000_000_000i64..10_000_000_000),
        ) {
            let f = ClockFacts { wall_unix_s: wall, ntp_synchronized: ntp, rtc_valid: rtc, last_sync_unix_s: last };
            prop_assert!(!decide_trust(&f, &ClockPolicy::default()).is_trusted());
        }

        #[test]
        fn without_synchronization_now_or_ever_the_clock_is_never_trusted(
            wall in any::<i64>(),
            ntp in proptest::option::of(Just(false)),
            rtc in any::<bool>(),
        ) {
            let f = ClockFacts { wall_unix_s: wall, ntp_synchronized: ntp, rtc_valid: rtc, last_sync_unix_s: None };
            prop_assert!(!decide_trust(&f, &ClockPolicy::default()).is_trusted());
        }

        #[test]
        fn an_unsynchronized_clock_without_rtc_is_never_trusted(
            wall in any::<i64>(),
            last in proptest::option::of(any::<i64>()),
        ) {
            let f = ClockFacts { wall_unix_s: wall, ntp_synchronized: Some(false), rtc_valid: false, last_sync_unix_s: last };
            prop_assert!(!decide_trust(&f, &ClockPolicy::default()).is_trusted());
        }
    }
}
