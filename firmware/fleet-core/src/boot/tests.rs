//! Table-driven tests of both flows, including a power loss between any two writes.
use super::autoboot::Autoboot;
use super::sim::{Image, Settled, TrybootStation, UbootStation};
use super::tryboot::{self, OtherHealth, Record, TrybootState};
use super::uboot::{self, BootDecision, Env, View};
use super::{Attempts, DEFAULT_ATTEMPTS, Rejected};
use crate::slot::{Slot, SlotHealth};

const N: Attempts = DEFAULT_ATTEMPTS;
/// Enough boots for every fallback path: N trial boots, N boots of a hanging slot, resets.
const MAX_BOOTS: usize = 40;

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn record(slot: Slot, health: OtherHealth) -> Option<Record> {
    Some(Record { slot, health })
}

// ---------------------------------------------------------------- tryboot

#[test]
fn firmware_boots_the_tryboot_partition_only_while_the_one_shot_flag_is_set() {
    let a = Some(Autoboot { committed: Slot::A });
    assert_eq!(tryboot::firmware_boot(a, false), Some((Slot::A, false)));
    assert_eq!(tryboot::firmware_boot(a, true), Some((Slot::B, true)));
    assert_eq!(tryboot::firmware_boot(None, true), None);
}

#[test]
fn attempt_record_renders_and_parses_strictly() {
    for health in [
        OtherHealth::Good,
        OtherHealth::Bad,
        OtherHealth::Trial { attempts_left: 2 },
    ] {
        let r = Record {
            slot: Slot::B,
            health,
        };
        assert_eq!(Record::parse(&r.render()), Ok(r));
    }
    for bad in [
        "",
        "slot=C\nstate=good\n",
        "slot=A\nstate=trial\n",
        "slot=A\nstate=good\nattempts-left=1\n",
        "slot=A\nstate=trial\nattempts-left=10\n",
        "slot=A\nslot=B\nstate=bad\n",
        "slot=A\nstate=bad\nextra=1\n",
    ] {
        assert!(Record::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tryboot_transitions_follow_the_table() {
    use OtherHealth::{Bad, Good, Trial};
    let st = |committed, rec| TrybootState {
        autoboot: Autoboot { committed },
        record: rec,
    };
    // (name, state, operation, expected writes or rejection)
    type Planned = Result<Vec<tryboot::Write>, Rejected>;
    type Op = fn(&TrybootState) -> Planned;
    let cases: Vec<(&str, TrybootState, Op, Planned)> = vec![
        (
            "arm B from A",
            st(Slot::A, None),
            |s| tryboot::plan_arm_trial(s, Slot::B, N),
            Ok(vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: Trial { attempts_left: 3 },
            })]),
        ),
        (
            "arm B again while it is on trial: the record keeps its count",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 1 })),
            |s| tryboot::plan_arm_trial(s, Slot::B, N),
            Ok(vec![]),
        ),
        (
            "arm B again after its last attempt was spent",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 0 })),
            |s| tryboot::plan_arm_trial(s, Slot::B, N),
            Ok(vec![]),
        ),
        (
            "arm B after it was marked bad (a fresh install): the full count",
            st(Slot::A, record(Slot::B, Bad)),
            |s| tryboot::plan_arm_trial(s, Slot::B, N),
            Ok(vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: Trial { attempts_left: 3 },
            })]),
        ),
        (
            "arm the committed slot",
            st(Slot::A, None),
            |s| tryboot::plan_arm_trial(s, Slot::A, N),
            Err(Rejected::AlreadyCommitted { slot: Slot::A }),
        ),
        (
            "mark good the booted trial",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 2 })),
            |s| tryboot::plan_mark_good(s, Slot::B, Slot::B),
            Ok(vec![
                tryboot::Write::Autoboot(Autoboot { committed: Slot::B }),
                tryboot::Write::Record(Record {
                    slot: Slot::A,
                    health: Good,
                }),
            ]),
        ),
        (
            "mark good a slot not booted",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 2 })),
            |s| tryboot::plan_mark_good(s, Slot::A, Slot::B),
            Err(Rejected::NotBooted {
                slot: Slot::B,
                booted: Slot::A,
            }),
        ),
        (
            "mark good the committed slot keeps the trial",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 2 })),
            |s| tryboot::plan_mark_good(s, Slot::A, Slot::A),
            Ok(vec![]),
        ),
        (
            "mark good the committed slot again after a cut between its commit's writes finishes the commit",
            st(Slot::B, record(Slot::B, Trial { attempts_left: 1 })),
            |s| tryboot::plan_mark_good(s, Slot::B, Slot::B),
            Ok(vec![tryboot::Write::Record(Record {
                slot: Slot::A,
                health: Good,
            })]),
        ),
        (
            "mark good the committed slot with a stale good record changes nothing",
            st(Slot::B, record(Slot::B, Good)),
            |s| tryboot::plan_mark_good(s, Slot::B, Slot::B),
            Ok(vec![]),
        ),
        (
            "mark bad the trial",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 2 })),
            |s| tryboot::plan_mark_bad(s, Slot::B),
            Ok(vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: Bad,
            })]),
        ),
        (
            "mark bad committed without a good other",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 2 })),
            |s| tryboot::plan_mark_bad(s, Slot::A),
            Err(Rejected::NoGoodSlotLeft { slot: Slot::A }),
        ),
        (
            "mark bad committed with a good other",
            st(Slot::B, record(Slot::A, Good)),
            |s| tryboot::plan_mark_bad(s, Slot::B),
            Ok(vec![
                tryboot::Write::Autoboot(Autoboot { committed: Slot::A }),
                tryboot::Write::Record(Record {
                    slot: Slot::B,
                    health: Bad,
                }),
            ]),
        ),
        (
            "roll back to the good other",
            st(Slot::B, record(Slot::A, Good)),
            |s| tryboot::plan_set_primary(s, Slot::A),
            Ok(vec![
                tryboot::Write::Autoboot(Autoboot { committed: Slot::A }),
                tryboot::Write::Record(Record {
                    slot: Slot::B,
                    health: Good,
                }),
            ]),
        ),
        (
            "roll back to an unknown slot",
            st(Slot::B, None),
            |s| tryboot::plan_set_primary(s, Slot::A),
            Err(Rejected::NotGood { slot: Slot::A }),
        ),
        (
            "stale record is not a good other",
            st(Slot::B, record(Slot::B, Trial { attempts_left: 1 })),
            |s| tryboot::plan_set_primary(s, Slot::A),
            Err(Rejected::NotGood { slot: Slot::A }),
        ),
        (
            "set primary committed cancels a trial",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 3 })),
            |s| tryboot::plan_set_primary(s, Slot::A),
            Ok(vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: Bad,
            })]),
        ),
    ];
    for (name, state, op, expected) in cases {
        assert_eq!(op(&state), expected, "{name}");
    }
}

#[test]
fn tryboot_boot_check_retries_then_gives_up_the_trial() {
    use OtherHealth::{Bad, Trial};
    let st = |rec| TrybootState {
        autoboot: Autoboot { committed: Slot::A },
        record: rec,
    };
    // (record, booted, expected writes, reboot into trial)
    let cases = [
        (
            record(Slot::B, Trial { attempts_left: 3 }),
            Slot::A,
            vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: Trial { attempts_left: 2 },
            })],
            true,
        ),
        (
            record(Slot::B, Trial { attempts_left: 1 }),
            Slot::A,
            vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: Trial { attempts_left: 0 },
            })],
            true,
        ),
        (
            record(Slot::B, Trial { attempts_left: 0 }),
            Slot::A,
            vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: Bad,
            })],
            false,
        ),
        (
            record(Slot::B, Trial { attempts_left: 2 }),
            Slot::B,
            vec![],
            false,
        ),
        (record(Slot::B, Bad), Slot::A, vec![], false),
        (None, Slot::A, vec![], false),
        // A commit of A cut between its writes (autoboot.txt commits A, the record still
        // has A on trial): finished, B (committed until then) is the good fallback.
        (
            record(Slot::A, Trial { attempts_left: 2 }),
            Slot::A,
            vec![tryboot::Write::Record(Record {
                slot: Slot::B,
                health: OtherHealth::Good,
            })],
            false,
        ),
    ];
    for (rec, booted, writes, reboot) in cases {
        let plan = tryboot::plan_boot(&st(rec), booted);
        assert_eq!(
            (plan.writes, plan.reboot_into_trial),
            (writes, reboot),
            "{rec:?} booted {booted}"
        );
    }
}

#[test]
fn tryboot_status_reports_the_trial_as_primary_with_its_attempts() {
    let s = TrybootState {
        autoboot: Autoboot { committed: Slot::A },
        record: record(Slot::B, OtherHealth::Trial { attempts_left: 2 }),
    };
    let status = s.status(Slot::A);
    assert_eq!(status.primary, Slot::B);
    assert_eq!(status.slot(Slot::A).health, SlotHealth::Good);
    assert_eq!(status.slot(Slot::B).health, SlotHealth::Trial);
    assert_eq!(status.slot(Slot::B).attempts_left, 2);
    let fresh = TrybootState::fresh(Slot::A).status(Slot::A);
    assert_eq!(
        (fresh.primary, fresh.slot(Slot::B).health),
        (Slot::A, SlotHealth::Bad)
    );
}

/// Arms a trial of B on a station committed to A and reboots into it.
fn tryboot_update(images: [Image; 2]) -> TrybootStation {
    let mut st = TrybootStation::new(Slot::A, images, N);
    assert_eq!(st.run(MAX_BOOTS), Settled::On(Slot::A));
    let state = st.state().expect("valid autoboot");
    st.apply(&tryboot::plan_arm_trial(&state, Slot::B, N).expect("arm"));
    let state = st.state().expect("valid autoboot");
    st.carry_out(&tryboot::plan_trial_reboot(&state).expect("trial pending"));
    st
}

#[test]
fn healthy_trial_is_committed_on_its_first_boot() {
    let mut st = tryboot_update([Image::Healthy, Image::Healthy]);
    assert_eq!(st.run(MAX_BOOTS), Settled::On(Slot::B));
    assert_eq!(st.autoboot, Some(Autoboot { committed: Slot::B }));
    assert_eq!(st.boots, vec![Slot::A, Slot::B]);
    // It stays on B on every later boot, and A is a rollback target.
    assert_eq!(st.run(MAX_BOOTS), Settled::On(Slot::B));
    assert_eq!(st.state().expect("valid").other(), OtherHealth::Good);
}

#[test]
fn hanging_trial_comes_back_on_the_old_slot_and_is_marked_bad_after_its_attempts() {
    let mut st = tryboot_update([Image::Healthy, Image::Hangs]);
    assert_eq!(st.run(MAX_BOOTS), Settled::On(Slot::A));
    // Initial boot, then: trial, back on A (retry), trial, A (retry), trial, A (gives up).
    assert_eq!(
        st.boots,
        vec![
            Slot::A,
            Slot::B,
            Slot::A,
            Slot::B,
            Slot::A,
            Slot::B,
            Slot::A
        ]
    );
    assert_eq!(st.state().expect("valid").other(), OtherHealth::Bad);
    assert_eq!(st.autoboot, Some(Autoboot { committed: Slot::A }));
}

#[test]
fn unhealthy_trial_is_retried_n_times_then_marked_bad() {
    let mut st = tryboot_update([Image::Healthy, Image::Unhealthy]);
    assert_eq!(st.run(MAX_BOOTS), Settled::On(Slot::A));
    assert_eq!(
        st.boots.iter().filter(|s| **s == Slot::B).count(),
        usize::from(N.get())
    );
    assert_eq!(st.state().expect("valid").other(), OtherHealth::Bad);
}

#[test]
fn trial_that_fails_its_health_gate_ends_on_the_old_slot_at_once() {
    let mut st = tryboot_update([Image::Healthy, Image::FailsHealth]);
    assert_eq!(st.run(MAX_BOOTS), Settled::On(Slot::A));
    assert_eq!(st.boots, vec![Slot::A, Slot::B, Slot::A]);
}

/// What the slot on trial may do in the power-loss tables: anything, except for a commit,
/// which only a trial that passed its health checks carries out.
fn trial_images(plan: &str) -> &'static [Image] {
    if plan == "mark good" || plan == "commit" {
        &[Image::Healthy]
    } else {
        &[
            Image::Healthy,
            Image::Hangs,
            Image::Unhealthy,
            Image::FailsHealth,
        ]
    }
}

/// Every tryboot plan a station can carry out, from the states it can be in.
fn tryboot_plans() -> Vec<(&'static str, TrybootState, Slot, tryboot::Plan)> {
    use OtherHealth::{Good, Trial};
    let st = |c, rec| TrybootState {
        autoboot: Autoboot { committed: c },
        record: rec,
    };
    let writes = |w: Result<Vec<tryboot::Write>, Rejected>| tryboot::Plan {
        writes: w.expect("allowed"),
        reboot_into_trial: false,
    };
    let on_trial = st(Slot::A, record(Slot::B, Trial { attempts_left: 2 }));
    let committed_b = st(Slot::B, record(Slot::A, Good));
    vec![
        (
            "arm",
            st(Slot::A, None),
            Slot::A,
            writes(tryboot::plan_arm_trial(&st(Slot::A, None), Slot::B, N)),
        ),
        (
            "trial reboot",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 3 })),
            Slot::A,
            tryboot::plan_trial_reboot(&st(Slot::A, record(Slot::B, Trial { attempts_left: 3 })))
                .expect("pending"),
        ),
        (
            "give up",
            st(Slot::A, record(Slot::B, Trial { attempts_left: 0 })),
            Slot::A,
            tryboot::plan_boot(
                &st(Slot::A, record(Slot::B, Trial { attempts_left: 0 })),
                Slot::A,
            ),
        ),
        (
            "mark good",
            on_trial,
            Slot::B,
            writes(tryboot::plan_mark_good(&on_trial, Slot::B, Slot::B)),
        ),
        (
            "mark bad trial",
            on_trial,
            Slot::B,
            writes(tryboot::plan_mark_bad(&on_trial, Slot::B)),
        ),
        (
            "roll back",
            committed_b,
            Slot::B,
            writes(tryboot::plan_set_primary(&committed_b, Slot::A)),
        ),
        (
            "mark bad committed",
            committed_b,
            Slot::B,
            writes(tryboot::plan_mark_bad(&committed_b, Slot::B)),
        ),
    ]
}

#[test]
fn tryboot_station_boots_a_good_slot_after_a_power_loss_between_any_two_writes() {
    for (name, state, booted, plan) in tryboot_plans() {
        // Ground truth: the slots the plans call good are healthy; a trial may be anything.
        for &trial_image in trial_images(name) {
            let mut images = [Image::Healthy; 2];
            if let Some(Record {
                slot,
                health: OtherHealth::Trial { .. },
            }) = state.record
            {
                images[slot as usize] = trial_image;
            }
            for k in 0..=plan.writes.len() {
                let mut st = TrybootStation::new(state.committed(), images, N);
                st.record = state.record;
                st.boots.push(booted);
                st.apply(&plan.writes[..k]);
                if k == plan.writes.len() && plan.reboot_into_trial {
                    st.tryboot_flag = true;
                }
                st.power_cut();
                let settled = st.run(MAX_BOOTS);
                let Settled::On(slot) = settled else {
                    panic!(
                        "{name}: {settled:?} after {k} of {} writes ({trial_image:?})",
                        plan.writes.len()
                    );
                };
                assert_eq!(
                    images[slot as usize],
                    Image::Healthy,
                    "{name}: k={k} {trial_image:?}"
                );
                let state = st.state().expect("autoboot.txt is always valid");
                assert_eq!(
                    state.committed(),
                    slot,
                    "{name}: settles on the committed slot"
                );
                // No commit is left half done, and a commit keeps the slot it left as the
                // good fallback, wherever the cut fell.
                assert_eq!(
                    tryboot::finish_commit(&state),
                    None,
                    "{name}: k={k} {trial_image:?}"
                );
                if name == "mark good" && slot == booted {
                    assert_eq!(
                        state.other(),
                        OtherHealth::Good,
                        "{name}: k={k}: the old slot is still the fallback"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------- U-Boot

#[test]
fn boot_script_picks_the_first_slot_with_boots_left_and_decrements_it() {
    use BootDecision::{Boot, ResetCounters};
    // (env imported, decision)
    let cases = [
        (
            env(&[]),
            Boot {
                slot: Slot::A,
                env: env(&[
                    ("BOOT_ORDER", "A B"),
                    ("BOOT_A_LEFT", "2"),
                    ("BOOT_B_LEFT", "3"),
                ]),
            },
        ),
        (
            env(&[
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "3"),
                ("BOOT_B_LEFT", "1"),
                ("FLEET_TRIAL", "B"),
            ]),
            Boot {
                slot: Slot::B,
                env: env(&[
                    ("BOOT_ORDER", "B A"),
                    ("BOOT_A_LEFT", "3"),
                    ("BOOT_B_LEFT", "0"),
                    ("FLEET_TRIAL", "B"),
                ]),
            },
        ),
        (
            env(&[
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "3"),
                ("BOOT_B_LEFT", "0"),
            ]),
            Boot {
                slot: Slot::A,
                env: env(&[
                    ("BOOT_ORDER", "B A"),
                    ("BOOT_A_LEFT", "2"),
                    ("BOOT_B_LEFT", "0"),
                ]),
            },
        ),
        (
            env(&[
                ("BOOT_ORDER", "B A"),
                ("BOOT_A_LEFT", "0"),
                ("BOOT_B_LEFT", "0"),
            ]),
            ResetCounters {
                env: env(&[
                    ("BOOT_ORDER", "B A"),
                    ("BOOT_A_LEFT", "3"),
                    ("BOOT_B_LEFT", "3"),
                ]),
            },
        ),
        (
            env(&[("BOOT_ORDER", "C B"), ("BOOT_B_LEFT", "1")]),
            Boot {
                slot: Slot::B,
                env: env(&[
                    ("BOOT_ORDER", "C B"),
                    ("BOOT_A_LEFT", "3"),
                    ("BOOT_B_LEFT", "0"),
                ]),
            },
        ),
        (
            env(&[
                ("BOOT_ORDER", "A"),
                ("BOOT_A_LEFT", "0"),
                ("BOOT_B_LEFT", "3"),
            ]),
            ResetCounters {
                env: env(&[
                    ("BOOT_ORDER", "A"),
                    ("BOOT_A_LEFT", "3"),
                    ("BOOT_B_LEFT", "3"),
                ]),
            },
        ),
        (
            env(&[("BOOT_A_LEFT", "junk")]),
            Boot {
                slot: Slot::B,
                env: env(&[
                    ("BOOT_ORDER", "A B"),
                    ("BOOT_A_LEFT", "junk"),
                    ("BOOT_B_LEFT", "2"),
                ]),
            },
        ),
        (
            env(&[("bootcmd", "run x"), ("BOOT_A_LEFT", "")]),
            Boot {
                slot: Slot::A,
                env: env(&[
                    ("BOOT_ORDER", "A B"),
                    ("BOOT_A_LEFT", "2"),
                    ("BOOT_B_LEFT", "3"),
                ]),
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(uboot::decide_boot(&input, N), expected, "{input:?}");
    }
}

#[test]
fn uboot_userspace_plans_follow_the_table() {
    let good_a = env(&[
        ("BOOT_ORDER", "A B"),
        ("BOOT_A_LEFT", "2"),
        ("BOOT_B_LEFT", "0"),
    ]);
    let trial_b = env(&[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "2"),
        ("FLEET_TRIAL", "B"),
    ]);
    let both_good = env(&[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "2"),
    ]);
    let s = |k: &'static str, v: &str| uboot::EnvWrite {
        key: k,
        value: Some(v.to_owned()),
    };
    let u = |k: &'static str| uboot::EnvWrite {
        key: k,
        value: None,
    };
    type Case<'a> = (
        &'a str,
        Result<Vec<uboot::EnvWrite>, Rejected>,
        Result<Vec<uboot::EnvWrite>, Rejected>,
    );
    let cases: Vec<Case> = vec![
        (
            "arm B",
            uboot::plan_arm_trial(&good_a, Slot::A, Slot::B, N),
            Ok(vec![
                s("FLEET_TRIAL", "B"),
                s("BOOT_B_LEFT", "3"),
                s("BOOT_ORDER", "B A"),
            ]),
        ),
        (
            "arm booted",
            uboot::plan_arm_trial(&good_a, Slot::A, Slot::A, N),
            Err(Rejected::AlreadyCommitted { slot: Slot::A }),
        ),
        (
            "commit trial",
            uboot::plan_mark_good(&trial_b, Slot::B, Slot::B, N),
            Ok(vec![
                s("BOOT_B_LEFT", "3"),
                s("BOOT_ORDER", "B A"),
                u("FLEET_TRIAL"),
            ]),
        ),
        (
            "mark good not booted",
            uboot::plan_mark_good(&trial_b, Slot::A, Slot::B, N),
            Err(Rejected::NotBooted {
                slot: Slot::B,
                booted: Slot::A,
            }),
        ),
        (
            "mark good keeps armed trial",
            uboot::plan_mark_good(&trial_b, Slot::A, Slot::A, N),
            Ok(vec![s("BOOT_A_LEFT", "3")]),
        ),
        (
            "mark good moves booted first",
            uboot::plan_mark_good(&both_good, Slot::A, Slot::A, N),
            Ok(vec![s("BOOT_A_LEFT", "3"), s("BOOT_ORDER", "A B")]),
        ),
        (
            "mark bad trial",
            uboot::plan_mark_bad(&trial_b, Slot::B, Slot::B, N),
            Ok(vec![
                s("BOOT_B_LEFT", "0"),
                s("BOOT_ORDER", "A B"),
                u("FLEET_TRIAL"),
            ]),
        ),
        (
            "mark bad other before install",
            uboot::plan_mark_bad(&good_a, Slot::A, Slot::B, N),
            Ok(vec![s("BOOT_B_LEFT", "0"), s("BOOT_ORDER", "A B")]),
        ),
        (
            "mark bad last good",
            uboot::plan_mark_bad(&good_a, Slot::A, Slot::A, N),
            Err(Rejected::NoGoodSlotLeft { slot: Slot::A }),
        ),
        (
            "roll back",
            uboot::plan_set_primary(&both_good, Slot::B, Slot::A, N),
            Ok(vec![s("BOOT_A_LEFT", "3"), s("BOOT_ORDER", "A B")]),
        ),
        (
            "roll back to bad",
            uboot::plan_set_primary(&good_a, Slot::A, Slot::B, N),
            Err(Rejected::NotGood { slot: Slot::B }),
        ),
        (
            "set primary cancels trial",
            uboot::plan_set_primary(&trial_b, Slot::A, Slot::A, N),
            Ok(vec![
                s("BOOT_A_LEFT", "3"),
                s("BOOT_ORDER", "A B"),
                s("BOOT_B_LEFT", "0"),
                u("FLEET_TRIAL"),
            ]),
        ),
        (
            "boot on trial",
            Ok(uboot::plan_boot(&trial_b, Slot::B, N)),
            Ok(vec![]),
        ),
        (
            "boot after trial ran out",
            Ok(uboot::plan_boot(
                &env(&[
                    ("BOOT_ORDER", "B A"),
                    ("BOOT_A_LEFT", "2"),
                    ("BOOT_B_LEFT", "0"),
                    ("FLEET_TRIAL", "B"),
                ]),
                Slot::A,
                N,
            )),
            Ok(vec![s("BOOT_A_LEFT", "3"), u("FLEET_TRIAL")]),
        ),
        (
            "boot refreshes good",
            Ok(uboot::plan_boot(&good_a, Slot::A, N)),
            Ok(vec![s("BOOT_A_LEFT", "3")]),
        ),
        (
            "second boot check keeps a trial armed this boot",
            Ok(uboot::plan_boot(&trial_b, Slot::A, N)),
            Ok(vec![]),
        ),
        (
            "mark good keeps a slot missing from the order bad",
            uboot::plan_mark_good(
                &env(&[
                    ("BOOT_ORDER", "A"),
                    ("BOOT_A_LEFT", "2"),
                    ("BOOT_B_LEFT", "3"),
                ]),
                Slot::A,
                Slot::A,
                N,
            ),
            Ok(vec![
                s("BOOT_A_LEFT", "3"),
                s("BOOT_B_LEFT", "0"),
                s("BOOT_ORDER", "A B"),
            ]),
        ),
    ];
    for (name, got, expected) in cases {
        assert_eq!(got, expected, "{name}");
    }
    let view = View::of(&trial_b, N);
    assert_eq!(
        (view.primary(), view.health(Slot::B), view.health(Slot::A)),
        (Some(Slot::B), SlotHealth::Trial, SlotHealth::Good)
    );
}

#[test]
fn good_slot_is_not_given_up_after_many_plain_reboots() {
    let mut st = UbootStation::new(Slot::A, [Image::Healthy, Image::Hangs], N);
    for _ in 0..10 {
        assert_eq!(st.run(MAX_BOOTS, None), Settled::On(Slot::A));
    }
    assert!(st.boots.iter().all(|s| *s == Slot::A));
}

/// Arms a trial of B on a station running A.
fn uboot_update(images: [Image; 2]) -> UbootStation {
    let mut st = UbootStation::new(Slot::A, images, N);
    assert_eq!(st.run(MAX_BOOTS, None), Settled::On(Slot::A));
    let env = st.env();
    st.apply(
        &uboot::plan_mark_bad(&env, Slot::A, Slot::B, N).expect("target marked bad before writing"),
    );
    let env = st.env();
    st.apply(&uboot::plan_arm_trial(&env, Slot::A, Slot::B, N).expect("arm"));
    st
}

#[test]
fn unbootable_slot_falls_back_after_its_attempts_run_out() {
    for image in [Image::Hangs, Image::Unhealthy] {
        let mut st = uboot_update([Image::Healthy, image]);
        assert_eq!(st.run(MAX_BOOTS, None), Settled::On(Slot::A), "{image:?}");
        assert_eq!(st.boots, vec![Slot::A, Slot::B, Slot::B, Slot::B, Slot::A]);
        let view = View::of(&st.env(), N);
        assert_eq!(
            (view.health(Slot::B), view.trial, view.left(Slot::A)),
            (SlotHealth::Bad, None, 3)
        );
    }
}

#[test]
fn healthy_uboot_trial_is_committed_and_stays() {
    let mut st = uboot_update([Image::Healthy, Image::Healthy]);
    assert_eq!(st.run(MAX_BOOTS, None), Settled::On(Slot::B));
    for _ in 0..5 {
        assert_eq!(st.run(MAX_BOOTS, None), Settled::On(Slot::B));
    }
    let view = View::of(&st.env(), N);
    assert_eq!(
        (view.trial, view.health(Slot::B), view.health(Slot::A)),
        (None, SlotHealth::Good, SlotHealth::Good)
    );
}

#[test]
fn torn_bootloader_write_falls_back_to_defaults_and_still_boots_a_good_slot() {
    for torn in 0..6 {
        let mut st = uboot_update([Image::Healthy, Image::Hangs]);
        let settled = st.run(MAX_BOOTS, Some(torn));
        assert_eq!(settled, Settled::On(Slot::A), "torn write at boot {torn}");
    }
}

/// Every U-Boot plan userspace carries out, from the states it can be in (env, booted).
fn uboot_plans() -> Vec<(&'static str, Env, Slot, Vec<uboot::EnvWrite>)> {
    let good_a = env(&[
        ("BOOT_ORDER", "A B"),
        ("BOOT_A_LEFT", "2"),
        ("BOOT_B_LEFT", "0"),
    ]);
    let trial_b = env(&[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "2"),
        ("FLEET_TRIAL", "B"),
    ]);
    let ran_out = env(&[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "2"),
        ("BOOT_B_LEFT", "0"),
        ("FLEET_TRIAL", "B"),
    ]);
    let committed_b = env(&[
        ("BOOT_ORDER", "B A"),
        ("BOOT_A_LEFT", "3"),
        ("BOOT_B_LEFT", "2"),
    ]);
    let ok = |r: Result<Vec<uboot::EnvWrite>, Rejected>| r.expect("allowed");
    vec![
        (
            "arm",
            good_a.clone(),
            Slot::A,
            ok(uboot::plan_arm_trial(&good_a, Slot::A, Slot::B, N)),
        ),
        (
            "mark bad before install",
            committed_b.clone(),
            Slot::B,
            ok(uboot::plan_mark_bad(&committed_b, Slot::B, Slot::A, N)),
        ),
        (
            "commit",
            trial_b.clone(),
            Slot::B,
            ok(uboot::plan_mark_good(&trial_b, Slot::B, Slot::B, N)),
        ),
        (
            "mark bad trial",
            trial_b.clone(),
            Slot::B,
            ok(uboot::plan_mark_bad(&trial_b, Slot::B, Slot::B, N)),
        ),
        (
            "boot check after trial",
            ran_out.clone(),
            Slot::A,
            uboot::plan_boot(&ran_out, Slot::A, N),
        ),
        (
            "roll back",
            committed_b.clone(),
            Slot::B,
            ok(uboot::plan_set_primary(&committed_b, Slot::B, Slot::A, N)),
        ),
        (
            "cancel trial",
            trial_b.clone(),
            Slot::A,
            ok(uboot::plan_set_primary(&trial_b, Slot::A, Slot::A, N)),
        ),
    ]
}

#[test]
fn uboot_station_boots_a_good_slot_after_a_power_loss_between_any_two_writes() {
    for (name, start, booted, writes) in uboot_plans() {
        let trial = View::of(&start, N).trial;
        for &trial_image in trial_images(name) {
            let mut images = [Image::Healthy; 2];
            // A slot on trial (or about to be armed) may be anything; the others are good.
            let candidate = trial.or(writes
                .iter()
                .find(|w| w.key == uboot::FLEET_TRIAL)
                .and_then(|w| w.value.as_deref()?.parse().ok()));
            if let Some(slot) = candidate {
                images[slot as usize] = trial_image;
            }
            for k in 0..=writes.len() {
                let mut st = UbootStation::new(Slot::A, images, N);
                st.env = Some(start.clone());
                st.boots.push(booted);
                st.apply(&writes[..k]);
                let settled = st.run(MAX_BOOTS, None);
                let Settled::On(slot) = settled else {
                    panic!("{name}: {settled:?} after {k} writes")
                };
                assert_eq!(
                    images[slot as usize],
                    Image::Healthy,
                    "{name}: k={k} {trial_image:?}"
                );
                assert_ne!(
                    View::of(&st.env(), N).health(slot),
                    SlotHealth::Bad,
                    "{name}: k={k}"
                );
            }
        }
    }
}

#[test]
fn a_tryboot_station_reaches_only_its_committed_slot_with_a_plain_reboot() {
    use super::{RebootKind, tryboot_reboot_kind};
    for committed in [Slot::A, Slot::B] {
        assert_eq!(tryboot_reboot_kind(committed, committed), RebootKind::Plain);
        assert_eq!(
            tryboot_reboot_kind(committed.other(), committed),
            RebootKind::Trial
        );
    }
}

#[test]
fn a_uboot_trial_running_on_its_slot_is_not_armed_again() {
    use super::uboot_needs_arming;
    let armed_b = View::of(
        &env(&[
            ("BOOT_ORDER", "B A"),
            ("BOOT_B_LEFT", "2"),
            (uboot::FLEET_TRIAL, "B"),
        ]),
        DEFAULT_ATTEMPTS,
    );
    assert_eq!(armed_b.trial, Some(Slot::B));
    // Running the armed trial: the boot script counts; arming again would reset the count.
    assert!(!uboot_needs_arming(Slot::B, &armed_b, Slot::B));
    // Came back on A: the trial of B is armed again.
    assert!(uboot_needs_arming(Slot::A, &armed_b, Slot::B));
    let settled = View::of(&env(&[("BOOT_ORDER", "A B")]), DEFAULT_ATTEMPTS);
    assert!(uboot_needs_arming(Slot::A, &settled, Slot::B));
    assert!(uboot_needs_arming(Slot::B, &settled, Slot::B));
}
