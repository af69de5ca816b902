//! The clock facts `fleet_core::clock::decide_trust` judges, from the files systemd-timesyncd
//! keeps and the RTC's sysfs node:
//!
//! - synchronized: `<run>/systemd/timesync/synchronized` exists (timesyncd creates it when it
//!   synchronized the kernel clock and removes it at start). Without timesyncd (no
//!   `<run>/systemd/timesync` directory) the flag is unknown.
//! - last synchronization: the modification time of `<var_lib>/systemd/timesync/clock`, which
//!   timesyncd touches at every synchronization (and which survives reboots).
//! - RTC: `<sys>/class/rtc/rtc0/since_epoch` holds a time after the policy's floor.
//!
//! Files, not D-Bus: they are readable from any daemon's sandbox without a bus policy, and the
//! answer equals timedated's `NTPSynchronized` on a station that runs timesyncd (ADR 0004).
//!
//! A daemon asks once per decision:
//! ```no_run
//! use fleet_core::clock::ClockPolicy;
//! let roots = fleet_facts::Roots::system();
//! let now = fleet_facts::clock::now(&roots, &ClockPolicy::default(), 0);
//! // now.wall_unix_s is Some only while the clock is trusted.
//! ```
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use fleet_core::clock::{ClockFacts, ClockPolicy, Trust, decide_trust};
use fleet_core::time::Now;

use crate::{Roots, read_trimmed};

/// Reads the clock facts at wall time `wall_unix_s`.
#[must_use]
pub fn read(roots: &Roots, wall_unix_s: i64, policy: &ClockPolicy) -> ClockFacts {
    let timesync = roots.run.join("systemd/timesync");
    let ntp_synchronized = timesync
        .is_dir()
        .then(|| timesync.join("synchronized").exists());
    let last_sync_unix_s = mtime_unix_s(&roots.var_lib.join("systemd/timesync/clock"));
    let rtc_valid = read_trimmed(&roots.sys.join("class/rtc/rtc0/since_epoch"))
        .and_then(|s| s.parse::<i64>().ok())
        .is_some_and(|t| t >= policy.floor_unix_s);
    ClockFacts {
        wall_unix_s,
        ntp_synchronized,
        rtc_valid,
        last_sync_unix_s,
    }
}

/// Whether an RTC device is present at all (valid or not).
#[must_use]
pub fn rtc_present(roots: &Roots) -> bool {
    roots.sys.join("class/rtc/rtc0").exists()
}

fn mtime_unix_s(p: &Path) -> Option<i64> {
    let m = std::fs::metadata(p).ok()?.modified().ok()?;
    m.duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

/// The system's wall clock, Unix seconds.
#[must_use]
pub fn wall_unix_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The facts and the verdict now.
#[must_use]
pub fn trust(roots: &Roots, policy: &ClockPolicy) -> (ClockFacts, Trust) {
    let facts = read(roots, wall_unix_s(), policy);
    let t = decide_trust(&facts, policy);
    (facts, t)
}

/// A [`Now`] whose wall-clock part is present only while the clock is trusted: the one way
/// every daemon builds its time value.
#[must_use]
pub fn now(roots: &Roots, policy: &ClockPolicy, monotonic_ms: u64) -> Now {
    let (facts, t) = trust(roots, policy);
    if t.is_trusted() {
        Now::trusted(monotonic_ms, facts.wall_unix_s)
    } else {
        Now::untrusted(monotonic_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_core::clock::{TrustedBy, UntrustedBecause};

    const NOW: i64 = 1_790_000_000;

    fn tree() -> (tempfile::TempDir, Roots) {
        let d = tempfile::tempdir().expect("tempdir");
        let r = Roots::under(d.path());
        (d, r)
    }

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, "").expect("write");
    }

    #[test]
    fn a_station_without_timesyncd_or_rtc_has_an_untrusted_clock() {
        let (_d, r) = tree();
        let f = read(&r, NOW, &ClockPolicy::default());
        assert_eq!(f.ntp_synchronized, None);
        assert!(!f.rtc_valid);
        assert_eq!(
            decide_trust(&f, &ClockPolicy::default()),
            Trust::Untrusted(UntrustedBecause::NeverSynchronized)
        );
    }

    #[test]
    fn timesyncds_flag_file_makes_the_clock_trusted_by_ntp() {
        let (_d, r) = tree();
        std::fs::create_dir_all(r.run.join("systemd/timesync")).expect("mkdir");
        let f = read(&r, NOW, &ClockPolicy::default());
        assert_eq!(f.ntp_synchronized, Some(false));
        touch(&r.run.join("systemd/timesync/synchronized"));
        touch(&r.var_lib.join("systemd/timesync/clock"));
        let (facts, t) = trust(&r, &ClockPolicy::default());
        assert_eq!(facts.ntp_synchronized, Some(true));
        assert!(facts.last_sync_unix_s.is_some());
        assert!(matches!(
            t,
            Trust::Trusted {
                by: TrustedBy::Ntp,
                ..
            }
        ));
    }

    #[test]
    fn an_rtc_carries_a_recent_synchronization_across_a_reboot() {
        let (_d, r) = tree();
        std::fs::create_dir_all(r.run.join("systemd/timesync")).expect("mkdir");
        let rtc = r.sys.join("class/rtc/rtc0/since_epoch");
        std::fs::create_dir_all(rtc.parent().expect("parent")).expect("mkdir");
        std::fs::write(&rtc, format!("{NOW}\n")).expect("write");
        touch(&r.var_lib.join("systemd/timesync/clock"));
        assert!(rtc_present(&r));
        // The clock file was touched just now; judge at the real wall time.
        let (_, t) = trust(&r, &ClockPolicy::default());
        assert!(matches!(
            t,
            Trust::Trusted {
                by: TrustedBy::Rtc,
                ..
            }
        ));
        std::fs::write(&rtc, "0\n").expect("write");
        let (_, t) = trust(&r, &ClockPolicy::default());
        assert!(!t.is_trusted());
        assert!(now(&r, &ClockPolicy::default(), 5).wall_unix_s.is_none());
    }
}
