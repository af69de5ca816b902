//! The update engine and the Pi 5 tryboot flow together: the firmware and the attempt record
//! (`crate::boot::tryboot`), the boot check at every boot, and fleet-updated's engine when it
//! runs. Whether the updater runs on a boot of the committed slot (before the boot check's
//! trial reboot takes the station down, or not at all) is the race of ADR 0001's amendment 1;
//! the properties hold for every outcome of it.
use std::collections::VecDeque;

use proptest::prelude::*;

use crate::boot::tryboot::{self, OtherHealth, Record, TrybootState};
use crate::boot::{Attempts, Rejected};
use crate::slot::Slot;
use crate::update::engine::{Action, Event, Phase, State, TrialBootCounting, step};
use crate::update::engine_tests::rebooting_into_trial;
use crate::update::fixtures::now;
use crate::update::report::{BootOp, FallbackCause, Outcome};

/// What a boot of the trial slot does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TrialBoot {
    /// Panics or hangs before userspace: the reset clears the tryboot flag.
    Panics,
    /// Reaches userspace but fleet-updated does not run (crashed); a power cycle follows.
    NoVerdict,
    /// fleet-updated runs and the health checks pass.
    Healthy,
    /// fleet-updated runs and a health check fails.
    Unhealthy,
}

fn trial_boot() -> impl Strategy<Value = TrialBoot> {
    prop_oneof![
        3 => Just(TrialBoot::Panics),
        1 => Just(TrialBoot::NoVerdict),
        1 => Just(TrialBoot::Healthy),
        2 => Just(TrialBoot::Unhealthy),
    ]
}

/// How the station settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    On(Slot),
    Looping,
}

struct Pi {
    state: TrybootState,
    flag: bool,
    engine: State,
    n: Attempts,
    /// Boots of the trial slot so far.
    trial_boots: usize,
    /// The record's count when it was last seen on trial: it never goes up again.
    last_left: Option<u8>,
    /// What each trial boot does, in order (then: panics).
    trials: VecDeque<TrialBoot>,
    /// Whether fleet-updated runs on each boot of the committed slot, in order (then: yes).
    updater_on_committed: VecDeque<bool>,
}

impl Pi {
    /// A station on A that installed B: RAUC marked B bad, wrote it and armed it; the engine
    /// armed it too and asked for the trial reboot, which the shell carries out.
    fn installed(n: Attempts, trials: Vec<TrialBoot>, updater: Vec<bool>) -> Pi {
        let mut engine = rebooting_into_trial();
        engine.policy.trial_boot_counting = TrialBootCounting::BootLoader;
        engine.policy.max_trial_attempts = n.get();
        let mut pi = Pi {
            state: TrybootState::fresh(Slot::A),
            flag: false,
            engine,
            n,
            trial_boots: 0,
            last_left: None,
            trials: trials.into(),
            updater_on_committed: updater.into(),
        };
        let bad = tryboot::plan_mark_bad(&pi.state, Slot::B).expect("the other slot");
        pi.apply(&bad);
        let arm = tryboot::plan_arm_trial(&pi.state, Slot::B, n).expect("not committed");
        pi.apply(&arm);
        let arm = tryboot::plan_arm_trial(&pi.state, Slot::B, n).expect("not committed");
        pi.apply(&arm);
        pi.shell_reboot(Slot::B);
        pi
    }

    fn apply(&mut self, writes: &[tryboot::Write]) {
        for w in writes {
            self.state.apply(*w);
        }
    }

    /// fleet-updated's reboot (`adapters::reboot`): into the trial through the record, else
    /// plain. Returns whether the tryboot flag will be set.
    fn shell_reboot(&mut self, into: Slot) -> bool {
        if into == self.state.committed() {
            return false;
        }
        match tryboot::plan_trial_reboot(&self.state) {
            Ok(plan) => {
                self.apply(&plan.writes);
                self.flag |= plan.reboot_into_trial;
                plan.reboot_into_trial
            }
            Err(Rejected::NoTrialPending) => false,
            Err(e) => panic!("unexpected rejection {e}"),
        }
    }

    /// fleet-updated from its start until it exits for a reboot (`Some(into)`) or idles.
    fn updater(&mut self, booted: Slot, healthy: bool) -> Option<Slot> {
        let mut events = VecDeque::from([Event::Started(self.state.status(booted))]);
        while let Some(event) = events.pop_front() {
            let Ok(t) = step(&self.engine, event, now()) else {
                continue;
            };
            self.engine = t.next;
            for action in t.actions {
                match action {
                    Action::ArmTrial { slot } => {
                        match tryboot::plan_arm_trial(&self.state, slot, self.n) {
                            Ok(w) => {
                                self.apply(&w);
                                events.push_back(Event::TrialArmed { slot });
                            }
                            Err(e) => events.push_back(Event::BootControlFailed {
                                op: BootOp::ArmTrial,
                                slot,
                                detail: e.to_string(),
                            }),
                        }
                    }
                    Action::MarkGood { slot } => {
                        let w = tryboot::plan_mark_good(&self.state, booted, slot)
                            .expect("the engine commits only the booted slot");
                        self.apply(&w);
                        events.push_back(Event::MarkedGood { slot });
                    }
                    Action::MarkBad { slot } => match tryboot::plan_mark_bad(&self.state, slot) {
                        Ok(w) => {
                            self.apply(&w);
                            events.push_back(Event::MarkedBad { slot });
                        }
                        Err(e) => events.push_back(Event::BootControlFailed {
                            op: BootOp::MarkBad,
                            slot,
                            detail: e.to_string(),
                        }),
                    },
                    Action::RunHealthChecks { .. } => events.push_back(if healthy {
                        Event::HealthPassed
                    } else {
                        Event::HealthFailed {
                            check: "probe".into(),
                        }
                    }),
                    Action::Reboot { into } => return Some(into),
                    _ => {}
                }
            }
        }
        None
    }

    /// Power on and boot until the station stays up (at most 40 boots), checking at every
    /// firmware boot that only the committed slot or a slot on trial boots, that the record's
    /// count never goes back up, and that the trial boots stay within the attempts.
    fn run(&mut self) -> Result<Settled, TestCaseError> {
        for _ in 0..40 {
            if let OtherHealth::Trial { attempts_left } = self.state.other() {
                if let Some(last) = self.last_left {
                    prop_assert!(attempts_left <= last, "the record's count went back up");
                }
                self.last_left = Some(attempts_left);
            }
            let flag = std::mem::take(&mut self.flag);
            let (slot, _) =
                tryboot::firmware_boot(Some(self.state.autoboot), flag).expect("valid autoboot");
            let committed = self.state.committed();
            let trial = if slot == committed {
                None
            } else {
                prop_assert!(
                    matches!(self.state.other(), OtherHealth::Trial { .. }),
                    "booted {slot} on trial while the record says {:?}",
                    self.state.other()
                );
                self.trial_boots += 1;
                prop_assert!(
                    self.trial_boots <= usize::from(self.n.get()),
                    "trial boot {} of at most {}",
                    self.trial_boots,
                    self.n.get()
                );
                Some(self.trials.pop_front().unwrap_or(TrialBoot::Panics))
            };
            if trial == Some(TrialBoot::Panics) {
                continue;
            }
            // The boot check, before fleet-updated.
            let plan = tryboot::plan_boot(&self.state, slot);
            self.apply(&plan.writes);
            self.flag |= plan.reboot_into_trial;
            let updater_runs = match trial {
                None => self.updater_on_committed.pop_front().unwrap_or(true),
                Some(t) => t != TrialBoot::NoVerdict,
            };
            let mut rebooting = plan.reboot_into_trial;
            if updater_runs
                && let Some(into) = self.updater(slot, trial == Some(TrialBoot::Healthy))
            {
                self.shell_reboot(into);
                rebooting = true;
            }
            if rebooting || trial == Some(TrialBoot::NoVerdict) {
                continue;
            }
            return Ok(Settled::On(slot));
        }
        Ok(Settled::Looping)
    }
}

fn rolled_back_cause(engine: &State) -> Option<&FallbackCause> {
    match &engine.last_outcome {
        Some(Outcome::RolledBack {
            bad_slot: Slot::B,
            cause,
            ..
        }) => Some(cause),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_tryboot_trial_boots_at_most_its_attempts_and_a_bad_slot_never_boots_again(
        n in 1u8..=5,
        trials in proptest::collection::vec(trial_boot(), 0..7),
        updater in proptest::collection::vec(any::<bool>(), 0..8),
    ) {
        let n = Attempts::new(n).expect("1..=5");
        let mut pi = Pi::installed(n, trials, updater);
        let settled = pi.run()?;
        let Settled::On(slot) = settled else {
            return Err(TestCaseError::fail("the station never settled"));
        };
        if slot == Slot::B {
            prop_assert_eq!(pi.state.committed(), Slot::B);
            let committed = matches!(pi.engine.last_outcome, Some(Outcome::Committed { .. }));
            prop_assert!(committed, "{:?}", pi.engine.last_outcome);
        } else {
            // On A by itself, with B given up in the record, whether or not the updater ran.
            prop_assert_eq!(pi.state.committed(), Slot::A);
            prop_assert_eq!(pi.state.other(), OtherHealth::Bad);
            // fleet-updated, whenever it starts next, concludes without booting B again.
            if pi.engine.phase != Phase::Idle {
                prop_assert_eq!(pi.updater(Slot::A, true), None);
            }
            prop_assert_eq!(&pi.engine.phase, &Phase::Idle);
            prop_assert!(rolled_back_cause(&pi.engine).is_some(), "{:?}", pi.engine.last_outcome);
        }
    }

    #[test]
    fn a_tryboot_trial_that_never_comes_up_boots_exactly_its_attempts_then_rolls_back(
        n in 1u8..=5,
        updater in proptest::collection::vec(any::<bool>(), 0..8),
    ) {
        let n = Attempts::new(n).expect("1..=5");
        let mut pi = Pi::installed(n, Vec::new(), updater);
        prop_assert_eq!(pi.run()?, Settled::On(Slot::A));
        prop_assert_eq!(pi.trial_boots, usize::from(n.get()));
        prop_assert_eq!(
            pi.state.record,
            Some(Record { slot: Slot::B, health: OtherHealth::Bad })
        );
        if pi.engine.phase != Phase::Idle {
            prop_assert_eq!(pi.updater(Slot::A, true), None);
        }
        let not_booted =
            matches!(rolled_back_cause(&pi.engine), Some(FallbackCause::TrialDidNotBoot { .. }));
        prop_assert!(
            not_booted,
            "{:?}",
            pi.engine.last_outcome
        );
    }
}

#[test]
fn an_unhealthy_tryboot_trial_boots_its_attempts_and_reports_the_check() {
    let n = Attempts::new(3).expect("3");
    let mut pi = Pi::installed(n, vec![TrialBoot::Unhealthy; 3], Vec::new());
    assert_eq!(pi.run().expect("invariants"), Settled::On(Slot::A));
    assert_eq!(pi.trial_boots, 3);
    assert_eq!(pi.state.other(), OtherHealth::Bad);
    assert!(
        matches!(
            rolled_back_cause(&pi.engine),
            Some(FallbackCause::HealthCheckFailed { attempts: 3, .. })
        ),
        "{:?}",
        pi.engine.last_outcome
    );
}
