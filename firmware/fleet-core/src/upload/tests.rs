use proptest::prelude::*;

use super::*;
use crate::time::Now;

fn policy() -> RetryPolicy {
    RetryPolicy::new(30_000, 3_600_000, 5, 86_400_000).expect("valid policy")
}

fn etag(b: u8) -> Checksum {
    Checksum::S3Etag {
        md5: [b; 16],
        parts: None,
    }
}

fn local(size: u64, c: Checksum) -> LocalObject {
    LocalObject {
        size_bytes: size,
        checksum: c,
        verified_by_decode: true,
    }
}

#[test]
fn a_matching_confirmation_marks_the_recording_uploaded() {
    let l = local(100, etag(1));
    let r = RemoteConfirmation {
        size_bytes: 100,
        checksum: Some(etag(1)),
    };
    assert_eq!(may_mark_uploaded(true, &l, Some(&r)), MarkDecision::Mark);
}

#[test]
fn every_mismatch_refuses_the_mark() {
    let l = local(100, etag(1));
    let cases = [
        (
            None,
            MarkDecision::RefuseSizeMismatch {
                local: 100,
                remote: None,
            },
        ),
        (
            Some(RemoteConfirmation {
                size_bytes: 99,
                checksum: Some(etag(1)),
            }),
            MarkDecision::RefuseSizeMismatch {
                local: 100,
                remote: Some(99),
            },
        ),
        (
            Some(RemoteConfirmation {
                size_bytes: 100,
                checksum: None,
            }),
            MarkDecision::RefuseChecksumMismatch,
        ),
        (
            Some(RemoteConfirmation {
                size_bytes: 100,
                checksum: Some(etag(2)),
            }),
            MarkDecision::RefuseChecksumMismatch,
        ),
        (
            Some(RemoteConfirmation {
                size_bytes: 100,
                checksum: Some(Checksum::S3Etag {
                    md5: [1; 16],
                    parts: Some(2),
                }),
            }),
            MarkDecision::RefuseChecksumMismatch,
        ),
    ];
    for (remote, want) in cases {
        assert_eq!(
            may_mark_uploaded(true, &l, remote.as_ref()),
            want,
            "{remote:?}"
        );
    }
}

#[test]
fn a_recording_retention_deleted_is_skipped_not_refused() {
    let l = local(100, etag(1));
    assert_eq!(
        may_mark_uploaded(false, &l, None),
        MarkDecision::SkipDeleted
    );
}

#[test]
fn an_encoding_that_did_not_decode_back_is_never_marked() {
    let l = LocalObject {
        verified_by_decode: false,
        ..local(100, etag(1))
    };
    let r = RemoteConfirmation {
        size_bytes: 100,
        checksum: Some(etag(1)),
    };
    assert_eq!(
        may_mark_uploaded(true, &l, Some(&r)),
        MarkDecision::RefuseUnverified
    );
}

#[test]
fn backoff_doubles_from_the_base_up_to_the_cap() {
    let p = policy();
    // jitter 0: half the cap; jitter ~1: the cap.
    let table = [
        (1, 15_000, 30_000),
        (2, 30_000, 60_000),
        (3, 60_000, 120_000),
        (8, 1_800_000, 3_600_000),
        (40, 1_800_000, 3_600_000),
    ];
    for (n, lo, hi) in table {
        assert_eq!(backoff_ms(&p, n, 0.0), lo, "failures {n}");
        assert_eq!(backoff_ms(&p, n, 1.0), hi, "failures {n}");
    }
}

#[test]
fn a_recording_is_parked_at_its_fifth_failure_and_waits_the_dead_letter_delay() {
    let p = policy();
    let mut a = Attempts::default();
    for n in 1..=4 {
        a = after_failure(&p, &a, "checksum", 1000, 0.5);
        assert!(!a.parked, "failure {n}");
    }
    a = after_failure(&p, &a, "checksum", 1000, 0.5);
    assert!(a.parked);
    assert_eq!(a.not_before_ms, 1000 + 86_400_000);
    assert_eq!(a.last_reason.as_deref(), Some("checksum"));
}

#[test]
fn retry_policies_that_cannot_work_are_refused() {
    assert_eq!(
        RetryPolicy::new(0, 1, 1, 0),
        Err(RetryPolicyError::ZeroBase)
    );
    assert_eq!(
        RetryPolicy::new(10, 5, 1, 0),
        Err(RetryPolicyError::CapBelowBase {
            base_ms: 10,
            max_ms: 5
        })
    );
    assert_eq!(
        RetryPolicy::new(1, 5, 0, 0),
        Err(RetryPolicyError::ZeroDeadLetter)
    );
}

fn cand(order: i64) -> Candidate {
    Candidate {
        order,
        uploaded: false,
        deleted: false,
        attempts: Attempts::default(),
    }
}

fn open_gate() -> LinkGate {
    LinkGate {
        window_open: true,
        update_downloading: false,
        link: Attempts::default(),
    }
}

#[test]
fn the_queue_follows_the_configured_order() {
    let c = [cand(3), cand(1), cand(2)];
    assert_eq!(
        pick_next(&c, Order::OldestFirst, &open_gate(), 0),
        Pick::Upload(1)
    );
    assert_eq!(
        pick_next(&c, Order::NewestFirst, &open_gate(), 0),
        Pick::Upload(3)
    );
}

#[test]
fn the_link_gates_hold_every_recording_back() {
    let c = [cand(1)];
    let closed = LinkGate {
        window_open: false,
        ..open_gate()
    };
    assert_eq!(
        pick_next(&c, Order::OldestFirst, &closed, 0),
        Pick::Wait {
            reason: WaitReason::OutsideWindow,
            until_ms: None
        }
    );
    let update = LinkGate {
        update_downloading: true,
        ..open_gate()
    };
    assert_eq!(
        pick_next(&c, Order::OldestFirst, &update, 0),
        Pick::Wait {
            reason: WaitReason::UpdateDownload,
            until_ms: None
        }
    );
    let backing_off = LinkGate {
        link: Attempts {
            failures: 1,
            not_before_ms: 50,
            ..Attempts::default()
        },
        ..open_gate()
    };
    assert_eq!(
        pick_next(&c, Order::OldestFirst, &backing_off, 10),
        Pick::Wait {
            reason: WaitReason::LinkBackoff,
            until_ms: Some(50)
        }
    );
    assert_eq!(
        pick_next(&c, Order::OldestFirst, &backing_off, 50),
        Pick::Upload(1)
    );
    assert_eq!(pick_next(&[], Order::OldestFirst, &closed, 0), Pick::Idle);
}

#[test]
fn parked_recordings_go_after_every_other_one() {
    let mut parked = cand(1);
    parked.attempts = Attempts {
        failures: 5,
        parked: true,
        not_before_ms: 0,
        last_reason: None,
    };
    let c = [parked, cand(9)];
    assert_eq!(
        pick_next(&c, Order::OldestFirst, &open_gate(), 0),
        Pick::Upload(9)
    );
}

#[test]
fn windows_parse_and_run_over_midnight() {
    let w = Window::parse("22:00-04:00").expect("valid");
    assert!(w.contains(MinuteOfDay::new(23 * 60).expect("minute")));
    assert!(w.contains(MinuteOfDay::new(60).expect("minute")));
    assert!(!w.contains(MinuteOfDay::new(12 * 60).expect("minute")));
    let d = Window::parse("06:00-24:00").expect("valid");
    assert!(d.contains(MinuteOfDay::new(23 * 60 + 59).expect("minute")));
    for bad in ["6-18", "06:00", "25:00-01:00", "06:00-06:00", "06:60-07:00"] {
        assert!(Window::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn windows_follow_the_local_offset_and_the_untrusted_clock_rule() {
    let w = [Window::parse("06:00-18:00").expect("valid")];
    // 1970-01-01 05:00 UTC: outside at UTC, inside at UTC+02:00.
    let now = Now::trusted(0, 5 * 3600);
    assert!(!window_open(&w, 0, UntrustedClock::Wait, now));
    assert!(window_open(&w, 120, UntrustedClock::Wait, now));
    assert!(window_open(
        &w,
        0,
        UntrustedClock::Upload,
        Now::untrusted(0)
    ));
    assert!(!window_open(&w, 0, UntrustedClock::Wait, Now::untrusted(0)));
    assert!(window_open(&[], 0, UntrustedClock::Wait, Now::untrusted(0)));
}

#[test]
fn an_unlimited_budget_grants_everything() {
    let mut b = Budget::new(0, 0, 0);
    assert_eq!(b.take(0, u64::MAX), Grant::Send(u64::MAX));
}

#[test]
fn a_budget_waits_for_the_bytes_it_lacks() {
    let mut b = Budget::new(1000, 500, 0);
    assert_eq!(b.take(0, 400), Grant::Send(400));
    assert_eq!(b.take(0, 400), Grant::Wait(300));
    assert_eq!(b.take(300, 400), Grant::Send(400));
    assert_eq!(b.take(300, 10_000), Grant::Wait(500));
}

fn arb_checksum() -> impl Strategy<Value = Checksum> {
    prop_oneof![
        (any::<[u8; 16]>(), proptest::option::of(1u32..10_000))
            .prop_map(|(md5, parts)| Checksum::S3Etag { md5, parts }),
        any::<[u8; 32]>().prop_map(Checksum::Sha256),
        // Few distinct values, so matches happen often.
        (0u8..3).prop_map(|b| Checksum::S3Etag {
            md5: [b; 16],
            parts: None
        }),
    ]
}

fn arb_attempts() -> impl Strategy<Value = Attempts> {
    (0u32..8, 0u64..1000, any::<bool>()).prop_map(|(failures, not_before_ms, parked)| Attempts {
        failures,
        last_reason: None,
        not_before_ms,
        parked,
    })
}

proptest! {
    #[test]
    fn never_marked_uploaded_before_the_remote_confirmed_the_checksum(
        present in any::<bool>(),
        verified in any::<bool>(),
        size in 0u64..4, rsize in 0u64..4,
        lc in arb_checksum(), rc in proptest::option::of(arb_checksum()),
        remote_has_it in any::<bool>(),
    ) {
        let l = LocalObject { size_bytes: size, checksum: lc, verified_by_decode: verified };
        let r = RemoteConfirmation { size_bytes: rsize, checksum: rc };
        let remote = remote_has_it.then_some(&r);
        if may_mark_uploaded(present, &l, remote) == MarkDecision::Mark {
            prop_assert!(present && verified && remote_has_it);
            prop_assert_eq!(rsize, size);
            prop_assert_eq!(rc, Some(lc));
        }
    }

    #[test]
    fn backoff_stays_between_half_the_cap_and_the_cap(
        base in 1u64..100_000, extra in 0u64..10_000_000, failures in 1u32..200, jitter in -1.0f64..2.0,
    ) {
        let p = RetryPolicy::new(base, base + extra, 3, 0).expect("valid");
        let d = backoff_ms(&p, failures, jitter);
        let cap = base.saturating_mul(1u64 << (failures - 1).min(63)).min(base + extra);
        let cap = if failures > 64 { base + extra } else { cap };
        prop_assert!(d <= cap && d >= cap / 2, "{} not in [{}, {}]", d, cap / 2, cap);
        prop_assert!(d <= p.max_ms());
    }

    #[test]
    fn a_recording_is_parked_exactly_when_its_failures_reach_the_limit(
        limit in 1u32..10, n in 1u32..20, jitter in 0.0f64..1.0,
    ) {
        let p = RetryPolicy::new(10, 1000, limit, 5000).expect("valid");
        let mut a = Attempts::default();
        for _ in 0..n {
            a = after_failure(&p, &a, "x", 0, jitter);
        }
        prop_assert_eq!(a.failures, n);
        prop_assert_eq!(a.parked, n >= limit);
    }

    #[test]
    fn the_queue_never_picks_a_recording_that_is_not_due_deleted_or_uploaded(
        cands in proptest::collection::vec(
            (0i64..50, any::<bool>(), any::<bool>(), arb_attempts()), 0..20),
        newest in any::<bool>(), now in 0u64..1000,
        window_open in any::<bool>(), update in any::<bool>(), link in arb_attempts(),
    ) {
        let cands: Vec<Candidate> = cands.into_iter()
            .map(|(order, uploaded, deleted, attempts)| Candidate { order, uploaded, deleted, attempts })
            .collect();
        let order = if newest { Order::NewestFirst } else { Order::OldestFirst };
        let gate = LinkGate { window_open, update_downloading: update, link };
        if let Pick::Upload(o) = pick_next(&cands, order, &gate, now) {
            prop_assert!(window_open && !update && gate.link.not_before_ms <= now);
            prop_assert!(cands.iter().any(|c| c.order == o && !c.uploaded && !c.deleted
                && c.attempts.not_before_ms <= now));
        }
    }

    #[test]
    fn a_budget_never_grants_more_than_its_burst_and_rate(
        rate in 1u64..100_000, burst in 1u64..100_000,
        steps in proptest::collection::vec((0u64..2000, 1u64..200_000), 1..60),
    ) {
        let mut b = Budget::new(rate, burst, 0);
        let (mut now, mut sent) = (0u64, 0u128);
        for (dt, want) in steps {
            now += dt;
            if let Grant::Send(n) = b.take(now, want) {
                prop_assert!(n <= want);
                sent += u128::from(n);
            }
            let allowed = u128::from(burst) + u128::from(now) * u128::from(rate) / 1000;
            prop_assert!(sent <= allowed, "sent {} > allowed {}", sent, allowed);
        }
    }
}
