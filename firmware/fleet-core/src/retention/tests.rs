//! Table tests and property tests of the retention plan.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;
use crate::time::Now;

const GB: u64 = 1_000_000_000;

fn rec(id: i64, sequence: u64, size: u64, uploaded: bool, analysed: bool) -> Recording {
    Recording {
        id: RecordingId(id),
        sequence,
        trusted_start_unix_s: None,
        size_bytes: size,
        uploaded,
        analysed,
    }
}

fn disk(used: u64, capacity: u64) -> Disk {
    Disk {
        used_bytes: used,
        available_bytes: capacity - used,
    }
}

fn ids(plan: &Plan) -> Vec<i64> {
    plan.deletions.iter().map(|d| d.id.0).collect()
}

fn policy() -> Policy {
    Policy {
        analyser_configured: true,
        ..Policy::default()
    }
}

#[test]
fn tiers_follow_the_usage_thresholds() {
    let p = policy();
    let cases = [
        (690, Tier::Calm),
        (700, Tier::Housekeeping),
        (799, Tier::Housekeeping),
        (800, Tier::Defensive),
        (900, Tier::Panic),
        (1000, Tier::Panic),
    ];
    for (used_permille, tier) in cases {
        let plan = plan(
            &[],
            &p,
            disk(used_permille * GB / 1000, GB),
            0,
            0,
            Now::untrusted(0),
        );
        assert_eq!(plan.tier, tier, "at {used_permille}");
    }
}

#[test]
fn housekeeping_deletes_only_uploaded_and_analysed_recordings_oldest_first() {
    let recs = [
        rec(1, 1, GB, true, false),
        rec(2, 2, GB, false, true),
        rec(3, 3, GB, true, true),
        rec(4, 4, GB, true, true),
    ];
    // 72 % of 100 GB used: target 65 %, need 7 GB; only 3 and 4 qualify.
    let plan = plan(
        &recs,
        &policy(),
        disk(72 * GB, 100 * GB),
        0,
        0,
        Now::untrusted(0),
    );
    assert_eq!(plan.tier, Tier::Housekeeping);
    assert_eq!(ids(&plan), vec![3, 4]);
    assert_eq!(plan.shortfall_bytes(), 5 * GB);
}

#[test]
fn defensive_takes_uploaded_and_analysed_before_uploaded_only() {
    let recs = [
        rec(1, 1, GB, true, false),
        rec(2, 2, GB, false, false),
        rec(3, 3, GB, true, true),
    ];
    let plan = plan(
        &recs,
        &policy(),
        disk(82 * GB, 100 * GB),
        0,
        0,
        Now::untrusted(0),
    );
    assert_eq!(plan.tier, Tier::Defensive);
    assert_eq!(ids(&plan), vec![3, 1]);
    assert!(plan.deletions.iter().all(|d| d.reason == Reason::Defensive));
}

#[test]
fn panic_deletes_unuploaded_recordings_by_sequence_once_uploaded_ones_are_gone() {
    let recs = [
        rec(10, 7, GB, false, false),
        rec(11, 5, GB, false, false),
        rec(12, 9, GB, true, false),
    ];
    // 91 %: target 85 %, need 6 GB; everything goes, uploaded first then sequence 5, 7.
    let plan = plan(
        &recs,
        &policy(),
        disk(91 * GB, 100 * GB),
        0,
        0,
        Now::untrusted(0),
    );
    assert_eq!(plan.tier, Tier::Panic);
    assert_eq!(ids(&plan), vec![12, 11, 10]);
}

#[test]
fn the_update_reserve_counts_as_used_space() {
    let recs = [rec(1, 1, 10 * GB, true, true)];
    let p = policy();
    let without = plan(&recs, &p, disk(60 * GB, 100 * GB), 0, 0, Now::untrusted(0));
    assert_eq!(without.tier, Tier::Calm);
    let with = plan(
        &recs,
        &p,
        disk(60 * GB, 100 * GB),
        12 * GB,
        0,
        Now::untrusted(0),
    );
    assert_eq!(with.tier, Tier::Housekeeping);
    assert_eq!(ids(&with), vec![1]);
}

#[test]
fn the_floor_acts_below_an_hour_of_writing_even_at_low_usage() {
    // 1 TB disk at 50 %, but writing 200 MB/s: an hour needs 720 GB.
    let recs = [
        rec(1, 1, 100 * GB, false, false),
        rec(2, 2, 100 * GB, false, false),
    ];
    let plan = plan(
        &recs,
        &policy(),
        disk(500 * GB, 1000 * GB),
        0,
        200_000_000,
        Now::untrusted(0),
    );
    assert!(plan.floor_breached);
    assert_eq!(plan.tier, Tier::Panic);
    assert!(plan.deletions.iter().all(|d| d.reason == Reason::Floor));
    assert_eq!(ids(&plan), vec![1, 2]);
}

#[test]
fn without_an_uploader_the_defensive_tier_is_a_ring_buffer() {
    let p = Policy {
        uploader_configured: false,
        ..policy()
    };
    let recs = [
        rec(1, 2, GB, false, false),
        rec(2, 1, GB, false, false),
        rec(3, 3, GB, false, true),
    ];
    let hk = plan(&recs, &p, disk(75 * GB, 100 * GB), 0, 0, Now::untrusted(0));
    assert_eq!(hk.tier, Tier::Housekeeping);
    assert!(hk.deletions.is_empty());
    let def = plan(&recs, &p, disk(82 * GB, 100 * GB), 0, 0, Now::untrusted(0));
    assert_eq!(ids(&def), vec![3, 2, 1]);
}

#[test]
fn young_uploaded_recordings_are_held_only_while_time_is_trusted() {
    let p = Policy {
        keep_uploaded_for_s: Some(3600),
        ..policy()
    };
    let mut young = rec(1, 1, 10 * GB, true, true);
    young.trusted_start_unix_s = Some(1_000_000);
    let trusted = plan(
        &[young.clone()],
        &p,
        disk(75 * GB, 100 * GB),
        0,
        0,
        Now::trusted(0, 1_000_100),
    );
    assert!(trusted.deletions.is_empty());
    let untrusted = plan(
        &[young],
        &p,
        disk(75 * GB, 100 * GB),
        0,
        0,
        Now::untrusted(0),
    );
    assert_eq!(ids(&untrusted), vec![1]);
}

#[test]
fn the_batch_limit_stops_the_plan_and_says_so() {
    let p = Policy {
        max_deletions_per_cycle: 2,
        ..policy()
    };
    let recs: Vec<_> = (0..10).map(|i| rec(i, i as u64, GB, true, true)).collect();
    let plan = plan(&recs, &p, disk(95 * GB, 100 * GB), 0, 0, Now::untrusted(0));
    assert_eq!(plan.deletions.len(), 2);
    assert!(plan.limited_by_batch);
}

#[test]
fn policies_with_disordered_thresholds_are_refused() {
    let p = Policy {
        defensive_at: Permille::new(950).unwrap(),
        ..Policy::default()
    };
    assert!(matches!(
        p.validate(),
        Err(PolicyError::ThresholdOrder { .. })
    ));
    assert_eq!(Policy::default().validate(), Ok(()));
    assert_eq!(Permille::new(1001), None);
}

// ---- properties ----

fn arb_recordings() -> impl Strategy<Value = Vec<Recording>> {
    prop::collection::vec(
        (
            0u64..10_000,
            prop::option::of(0i64..2_000_000),
            1u64..5 * GB,
            any::<bool>(),
            any::<bool>(),
        ),
        0..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(
                |(i, (sequence, start, size, uploaded, analysed))| Recording {
                    id: RecordingId(i as i64),
                    sequence,
                    trusted_start_unix_s: start,
                    size_bytes: size,
                    uploaded,
                    analysed,
                },
            )
            .collect()
    })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        100u16..600,
        1u16..100,
        1u16..100,
        0u16..100,
        0u64..7200,
        1usize..20,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0u64..1_000_000),
    )
        .prop_map(
            |(h, dd, dp, hyst, floor, batch, uploader, analyser, keep)| Policy {
                housekeeping_at: Permille::new(h).unwrap(),
                defensive_at: Permille::new(h + dd).unwrap(),
                panic_at: Permille::new((h + dd + dp).min(1000)).unwrap(),
                hysteresis: Permille::new(hyst.min(h - 1)).unwrap(),
                floor_seconds: floor,
                floor_target_seconds: floor * 2,
                max_deletions_per_cycle: batch,
                uploader_configured: uploader,
                analyser_configured: analyser,
                keep_uploaded_for_s: keep,
            },
        )
        .prop_filter("valid", |p| p.validate().is_ok())
}

fn arb_disk() -> impl Strategy<Value = Disk> {
    (1u64..1000 * GB, 0u64..=1000).prop_map(|(cap, permille)| {
        let used = Permille::new(permille as u16).unwrap().of(cap);
        Disk {
            used_bytes: used,
            available_bytes: cap - used,
        }
    })
}

fn arb_now() -> impl Strategy<Value = Now> {
    (any::<u64>(), prop::option::of(0i64..3_000_000)).prop_map(|(m, w)| Now {
        monotonic_ms: m,
        wall_unix_s: w,
    })
}

proptest! {
    #[test]
    fn below_the_panic_tier_no_unuploaded_recording_is_planned(
        recs in arb_recordings(), p in arb_policy(), d in arb_disk(),
        reserve in 0u64..10 * GB, rate in 0u64..1_000_000, now in arb_now(),
    ) {
        let p = Policy { uploader_configured: true, ..p };
        let plan = plan(&recs, &p, d, reserve, rate, now);
        if plan.tier < Tier::Panic {
            for del in &plan.deletions {
                let r = recs.iter().find(|r| r.id == del.id).unwrap();
                prop_assert!(r.uploaded, "planned un-uploaded {:?} at {:?}", r, plan.tier);
            }
        }
    }

    #[test]
    fn plans_never_exceed_the_batch_limit(
        recs in arb_recordings(), p in arb_policy(), d in arb_disk(),
        reserve in 0u64..10 * GB, rate in 0u64..1_000_000, now in arb_now(),
    ) {
        let plan = plan(&recs, &p, d, reserve, rate, now);
        prop_assert!(plan.deletions.len() <= p.max_deletions_per_cycle);
    }

    #[test]
    fn under_untrusted_time_no_decision_depends_on_wall_clock_start(
        recs in arb_recordings(), p in arb_policy(), d in arb_disk(),
        reserve in 0u64..10 * GB, rate in 0u64..1_000_000, mono in any::<u64>(),
        starts in prop::collection::vec(prop::option::of(any::<i64>()), 60),
    ) {
        let now = Now::untrusted(mono);
        let original = plan(&recs, &p, d, reserve, rate, now);
        let shuffled: Vec<Recording> = recs
            .iter()
            .zip(starts.iter())
            .map(|(r, s)| Recording { trusted_start_unix_s: *s, ..r.clone() })
            .collect();
        prop_assert_eq!(original, plan(&shuffled, &p, d, reserve, rate, now));
    }

    #[test]
    fn the_plan_frees_enough_when_the_eligible_recordings_can(
        recs in arb_recordings(), p in arb_policy(), d in arb_disk(),
        reserve in 0u64..10 * GB, rate in 0u64..1_000_000, now in arb_now(),
    ) {
        let plan = plan(&recs, &p, d, reserve, rate, now);
        // The oracle: the eligibility table of the docs, written independently.
        let eligible: Vec<&Recording> = recs
            .iter()
            .filter(|r| {
                let done = r.uploaded && (r.analysed || !p.analyser_configured);
                let by_tier = match plan.tier {
                    Tier::Calm => false,
                    Tier::Panic => true,
                    Tier::Defensive => !p.uploader_configured || r.uploaded,
                    Tier::Housekeeping => p.uploader_configured && done,
                };
                let held = plan.tier != Tier::Panic
                    && matches!((p.keep_uploaded_for_s, now.wall_unix_s, r.trusted_start_unix_s),
                        (Some(k), Some(n), Some(s)) if n.saturating_sub(s) < k as i64);
                by_tier && !held
            })
            .collect();
        let eligible_bytes: u64 = eligible.iter().map(|r| r.size_bytes).sum();
        if eligible.len() <= p.max_deletions_per_cycle && eligible_bytes >= plan.need_bytes {
            prop_assert!(plan.planned_bytes >= plan.need_bytes,
                "freed {} of {} with {} eligible bytes", plan.planned_bytes, plan.need_bytes, eligible_bytes);
        }
        // It takes a prefix of the eligible recordings in order: most finished class first, then
        // the segment sequence, then the id (a full sort as the reference).
        let mut ordered = eligible.clone();
        ordered.sort_by_key(|r| {
            let class = match (r.uploaded, r.analysed || !p.analyser_configured) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            (class, r.sequence, r.id)
        });
        let planned: Vec<RecordingId> = plan.deletions.iter().map(|d| d.id).collect();
        let prefix: Vec<RecordingId> = ordered.iter().take(planned.len()).map(|r| r.id).collect();
        prop_assert_eq!(planned, prefix);
        // Whatever it plans is eligible, and never twice.
        for del in &plan.deletions {
            prop_assert!(eligible.iter().any(|r| r.id == del.id));
        }
        let mut seen: Vec<_> = plan.deletions.iter().map(|d| d.id).collect();
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(seen.len(), plan.deletions.len());
        // It stops as soon as it has enough: dropping the last deletion would fall short.
        if let Some(last) = plan.deletions.last() {
            prop_assert!(plan.planned_bytes - last.size_bytes < plan.need_bytes);
        }
    }
}
