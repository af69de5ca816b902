//! The plan: a pure function of (recordings, policy, disk, reserve, write rate, now).

use super::policy::{Disk, Permille, Policy, Recording, RecordingId};
use crate::time::Now;

/// How hard the plan pushes, from the usage (or the floor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Below every threshold: nothing to do.
    Calm,
    /// Above `housekeeping-at`: recordings that are uploaded and analysed go.
    Housekeeping,
    /// Above `defensive-at`: uploaded recordings go (without an uploader: the oldest).
    Defensive,
    /// Above `panic-at`, or the floor is breached: the oldest go, uploaded or not.
    Panic,
}

impl Tier {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Calm => "calm",
            Self::Housekeeping => "housekeeping",
            Self::Defensive => "defensive",
            Self::Panic => "panic",
        }
    }
}

/// Why a recording is deleted; recorded in the index with the deletion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Housekeeping,
    Defensive,
    Panic,
    /// The free space fell under `floor-seconds` of the current write rate.
    Floor,
}

impl Reason {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Housekeeping => "housekeeping",
            Self::Defensive => "defensive",
            Self::Panic => "panic",
            Self::Floor => "floor",
        }
    }
}

/// One recording to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub id: RecordingId,
    pub size_bytes: u64,
    pub reason: Reason,
}

/// What the shell must do this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tier: Tier,
    /// Used space plus reserve, in thousandths of the usable capacity (may exceed 1000).
    pub usage_permille: u32,
    /// The free space (after the reserve) is under `floor-seconds` of the write rate.
    pub floor_breached: bool,
    /// Bytes the plan should free to get back under its target.
    pub need_bytes: u64,
    /// Bytes the planned deletions free.
    pub planned_bytes: u64,
    /// Oldest first within each class, at most `max-deletions-per-cycle`.
    pub deletions: Vec<Deletion>,
    /// The batch limit stopped the plan before it freed `need_bytes`.
    pub limited_by_batch: bool,
}

impl Plan {
    /// Bytes still missing after the planned deletions.
    #[must_use]
    pub fn shortfall_bytes(&self) -> u64 {
        self.need_bytes.saturating_sub(self.planned_bytes)
    }
}

/// Decides which recordings to delete.
///
/// - Thresholds apply to `used + reserve` over the usable capacity `used + available`
///   ([`Disk`]): the reserve for update downloads counts as used, so it stays free.
/// - Each tier frees until usage is `hysteresis` below its own threshold. The floor (free space
///   under `floor-seconds` of `write_rate_bytes_per_s`) raises the tier to panic and frees until
///   `floor-target-seconds` of writing fit.
/// - Eligibility, with an uploader configured: housekeeping takes uploaded and analysed
///   recordings (analysed is not required without an analyser), defensive takes uploaded ones,
///   panic takes any. **Without an uploader** nothing is ever uploaded, so the station is a ring
///   buffer: housekeeping takes nothing, defensive and panic take any recording.
/// - Order: the most finished class first (uploaded and analysed, uploaded, analysed, neither),
///   then the segment sequence, then the id. The wall clock never orders.
/// - `keep_uploaded_for_s` holds young recordings below the panic tier, only while `now` and the
///   recording's start are both trusted. While time is untrusted, no decision reads a start time.
#[must_use]
pub fn plan(
    recordings: &[Recording],
    policy: &Policy,
    disk: Disk,
    reserve_bytes: u64,
    write_rate_bytes_per_s: u64,
    now: Now,
) -> Plan {
    let capacity = disk.capacity();
    let pressure = disk.used_bytes.saturating_add(reserve_bytes);
    let free = disk.available_bytes.saturating_sub(reserve_bytes);
    let usage_permille = if capacity == 0 {
        0
    } else {
        u32::try_from(u128::from(pressure) * 1000 / u128::from(capacity)).unwrap_or(u32::MAX)
    };

    let usage_tier = tier_for(policy, usage_permille);
    let floor_bytes = write_rate_bytes_per_s.saturating_mul(policy.floor_seconds);
    let floor_breached = capacity > 0 && write_rate_bytes_per_s > 0 && free < floor_bytes;
    let tier = if floor_breached {
        Tier::Panic
    } else {
        usage_tier
    };

    let need_usage = match usage_tier {
        Tier::Calm => 0,
        Tier::Housekeeping => excess(
            policy.housekeeping_at,
            policy.hysteresis,
            pressure,
            capacity,
        ),
        Tier::Defensive => excess(policy.defensive_at, policy.hysteresis, pressure, capacity),
        Tier::Panic => excess(policy.panic_at, policy.hysteresis, pressure, capacity),
    };
    let need_floor = if floor_breached {
        write_rate_bytes_per_s
            .saturating_mul(policy.floor_target_seconds)
            .saturating_sub(free)
    } else {
        0
    };
    let need_bytes = need_usage.max(need_floor);
    let reason = match tier {
        Tier::Calm => None,
        Tier::Housekeeping => Some(Reason::Housekeeping),
        Tier::Defensive => Some(Reason::Defensive),
        Tier::Panic if floor_breached && usage_tier < Tier::Panic => Some(Reason::Floor),
        Tier::Panic => Some(Reason::Panic),
    };

    let mut plan = Plan {
        tier,
        usage_permille,
        floor_breached,
        need_bytes,
        planned_bytes: 0,
        deletions: Vec::new(),
        limited_by_batch: false,
    };
    let Some(reason) = reason else {
        return plan;
    };
    if need_bytes == 0 {
        return plan;
    }

    let mut candidates: Vec<(u8, &Recording)> = recordings
        .iter()
        .filter(|r| eligible(policy, tier, r) && !held(policy, tier, r, now))
        .map(|r| (class(policy, r), r))
        .collect();
    // At most `max_deletions_per_cycle` candidates can be taken: select those first (linear),
    // then sort only them, so a plan over a million recordings stays cheap.
    let key = |(rank, r): &(u8, &Recording)| (*rank, r.sequence, r.id);
    let batch = policy.max_deletions_per_cycle;
    if candidates.len() > batch + 1 {
        candidates.select_nth_unstable_by_key(batch, key);
        candidates.truncate(batch + 1);
    }
    candidates.sort_unstable_by_key(key);

    for (_, r) in candidates {
        if plan.planned_bytes >= need_bytes {
            break;
        }
        if plan.deletions.len() >= policy.max_deletions_per_cycle {
            plan.limited_by_batch = true;
            break;
        }
        plan.planned_bytes = plan.planned_bytes.saturating_add(r.size_bytes);
        plan.deletions.push(Deletion {
            id: r.id,
            size_bytes: r.size_bytes,
            reason,
        });
    }
    plan
}

/// The tier the usage alone calls for.
#[must_use]
pub fn tier_for(policy: &Policy, usage_permille: u32) -> Tier {
    if usage_permille >= u32::from(policy.panic_at.get()) {
        Tier::Panic
    } else if usage_permille >= u32::from(policy.defensive_at.get()) {
        Tier::Defensive
    } else if usage_permille >= u32::from(policy.housekeeping_at.get()) {
        Tier::Housekeeping
    } else {
        Tier::Calm
    }
}

/// Bytes above `(threshold - hysteresis)` of the capacity.
fn excess(threshold: Permille, hysteresis: Permille, pressure: u64, capacity: u64) -> u64 {
    let target = Permille::new(threshold.get().saturating_sub(hysteresis.get()))
        .unwrap_or(Permille::WHOLE)
        .of(capacity);
    pressure.saturating_sub(target)
}

fn analysed_enough(policy: &Policy, r: &Recording) -> bool {
    r.analysed || !policy.analyser_configured
}

/// 0: uploaded and analysed; 1: uploaded; 2: analysed; 3: neither.
fn class(policy: &Policy, r: &Recording) -> u8 {
    match (r.uploaded, analysed_enough(policy, r)) {
        (true, true) => 0,
        (true, false) => 1,
        (false, true) => 2,
        (false, false) => 3,
    }
}

fn eligible(policy: &Policy, tier: Tier, r: &Recording) -> bool {
    match (policy.uploader_configured, tier) {
        (_, Tier::Calm) => false,
        (true, Tier::Housekeeping) => r.uploaded && analysed_enough(policy, r),
        (true, Tier::Defensive) => r.uploaded,
        (false, Tier::Housekeeping) => false,
        (false, Tier::Defensive) | (_, Tier::Panic) => true,
    }
}

fn held(policy: &Policy, tier: Tier, r: &Recording, now: Now) -> bool {
    if tier >= Tier::Panic {
        return false;
    }
    match (
        policy.keep_uploaded_for_s,
        now.wall_unix_s,
        r.trusted_start_unix_s,
    ) {
        (Some(keep), Some(now_s), Some(start)) => {
            let age = now_s.saturating_sub(start);
            age < i64::try_from(keep).unwrap_or(i64::MAX)
        }
        _ => false,
    }
}
