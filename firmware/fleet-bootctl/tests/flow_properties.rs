//! Property tests of both boot flows' models (fleet_core::boot), driven through random
//! sequences of installs, boots, rollbacks and power cuts against a ground truth of what each
//! slot's image does.
use fleet_core::boot::autoboot::Autoboot;
use fleet_core::boot::sim::Image;
use fleet_core::boot::tryboot::{self, OtherHealth, Record, TrybootState};
use fleet_core::boot::uboot::{self, BootDecision, Env, View};
use fleet_core::boot::{Attempts, Rejected};
use fleet_core::slot::{Slot, SlotHealth};
use proptest::prelude::*;

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![Just(Slot::A), Just(Slot::B)]
}

fn image() -> impl Strategy<Value = Image> {
    prop_oneof![
        Just(Image::Healthy),
        Just(Image::Hangs),
        Just(Image::Unhealthy),
        Just(Image::FailsHealth)
    ]
}

fn attempts() -> impl Strategy<Value = Attempts> {
    (1u8..=4).prop_map(|n| Attempts::new(n).expect("in range"))
}

fn other_health() -> impl Strategy<Value = OtherHealth> {
    prop_oneof![
        Just(OtherHealth::Good),
        Just(OtherHealth::Bad),
        (0u8..=9).prop_map(|attempts_left| OtherHealth::Trial { attempts_left }),
    ]
}

fn tryboot_state() -> impl Strategy<Value = TrybootState> {
    (slot(), proptest::option::of((slot(), other_health()))).prop_map(|(committed, rec)| {
        TrybootState {
            autoboot: Autoboot { committed },
            record: rec.map(|(slot, health)| Record { slot, health }),
        }
    })
}

/// Any env the file could hold, including foreign and nonsense values.
fn uboot_env() -> impl Strategy<Value = Env> {
    let order = prop_oneof![
        Just("A B"),
        Just("B A"),
        Just("A"),
        Just("B"),
        Just(""),
        Just("C A"),
        Just("B B A")
    ];
    let left = prop_oneof![
        Just("0"),
        Just("1"),
        Just("2"),
        Just("3"),
        Just(""),
        Just("x")
    ];
    let trial = prop_oneof![
        Just(None),
        Just(Some("A")),
        Just(Some("B")),
        Just(Some("junk"))
    ];
    (
        proptest::option::of(order),
        proptest::option::of(left.clone()),
        proptest::option::of(left),
        trial,
    )
        .prop_map(|(order, a, b, trial)| {
            let mut env = Env::new();
            for (key, value) in [
                (uboot::BOOT_ORDER, order),
                (uboot::BOOT_A_LEFT, a),
                (uboot::BOOT_B_LEFT, b),
                (uboot::FLEET_TRIAL, trial),
            ] {
                if let Some(v) = value {
                    env.insert(key.to_owned(), v.to_owned());
                }
            }
            env
        })
}

proptest! {
    #[test]
    fn tryboot_never_marks_good_a_slot_that_is_not_booted(state in tryboot_state(), booted in slot()) {
        let slot = booted.other();
        prop_assert_eq!(tryboot::plan_mark_good(&state, booted, slot), Err(Rejected::NotBooted { slot, booted }));
    }

    #[test]
    fn uboot_never_marks_good_a_slot_that_is_not_booted(env in uboot_env(), booted in slot(), n in attempts()) {
        let slot = booted.other();
        prop_assert_eq!(uboot::plan_mark_good(&env, booted, slot, n), Err(Rejected::NotBooted { slot, booted }));
    }

    #[test]
    fn uboot_script_only_boots_a_slot_with_boots_left_and_spends_one(env in uboot_env(), n in attempts()) {
        let before = View::of(&env, n);
        match uboot::decide_boot(&env, n) {
            BootDecision::Boot { slot, env: after } => {
                prop_assert!(before.left(slot) > 0 && before.order.contains(&slot));
                prop_assert_eq!(before.primary(), Some(slot));
                prop_assert_eq!(View::of(&after, n).left(slot), before.left(slot) - 1);
            }
            BootDecision::ResetCounters { env: after } => {
                prop_assert_eq!(before.primary(), None);
                let view = View::of(&after, n);
                prop_assert_eq!(view.left, [n.get(), n.get()]);
            }
        }
    }
}

/// What the operator and the updater do between boots.
#[derive(Debug, Clone)]
enum Op {
    /// Install a bundle whose image behaves like `Image` into the other slot, arm it, reboot
    /// into the trial; the power is cut after `cut` of the plan's writes (if that is fewer).
    Install(Image, usize),
    /// Power cycle, boot until the station stays up.
    Reboot,
    /// Operator rollback to the other slot (refused unless it is good).
    Rollback,
    /// Cancel a pending trial.
    Cancel,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (image(), 0usize..6).prop_map(|(i, cut)| Op::Install(i, cut)),
        3 => Just(Op::Reboot),
        1 => Just(Op::Rollback),
        1 => Just(Op::Cancel),
    ]
}

/// A Pi 5 driven one boot at a time, checking the invariant at every firmware boot.
struct Pi {
    autoboot: Autoboot,
    record: Option<Record>,
    flag: bool,
    images: [Image; 2],
    booted: Slot,
    n: Attempts,
}

impl Pi {
    fn state(&self) -> TrybootState {
        TrybootState {
            autoboot: self.autoboot,
            record: self.record,
        }
    }

    fn apply(&mut self, writes: &[tryboot::Write]) {
        let mut s = self.state();
        for w in writes {
            s.apply(*w);
        }
        self.autoboot = s.autoboot;
        self.record = s.record;
    }

    /// Power on and boot until the station stays up. Checks: every boot is of the committed
    /// slot or of a slot on trial; the station always settles on a healthy, good slot.
    fn boot(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..40 {
            let flag = std::mem::take(&mut self.flag);
            let (slot, via_tryboot) =
                tryboot::firmware_boot(Some(self.autoboot), flag).expect("autoboot.txt valid");
            let state = self.state();
            prop_assert!(
                slot == state.committed()
                    || (via_tryboot && matches!(state.other(), OtherHealth::Trial { .. })),
                "booted {} while it is neither committed nor on trial: {:?}",
                slot,
                state
            );
            self.booted = slot;
            let image = self.images[slot as usize];
            if image == Image::Hangs {
                continue;
            }
            let plan = tryboot::plan_boot(&state, slot);
            self.apply(&plan.writes);
            if plan.reboot_into_trial {
                self.flag = true;
                continue;
            }
            if slot == self.autoboot.committed {
                prop_assert_eq!(image, Image::Healthy, "settled on a broken committed slot");
                return Ok(());
            }
            match image {
                Image::Healthy => {
                    let writes =
                        tryboot::plan_mark_good(&self.state(), slot, slot).expect("booted");
                    self.apply(&writes);
                    return Ok(());
                }
                Image::FailsHealth => {
                    let writes = tryboot::plan_mark_bad(&self.state(), slot).expect("trial");
                    self.apply(&writes);
                }
                Image::Unhealthy | Image::Hangs => {}
            }
        }
        Err(TestCaseError::fail("the station never settled"))
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let committed = self.autoboot.committed;
        match *op {
            Op::Install(image, cut) => {
                let target = committed.other();
                let mut writes = tryboot::plan_mark_bad(&self.state(), target).expect("other slot");
                // RAUC writes the image only after the slot is marked bad.
                if cut >= writes.len() {
                    self.images[target as usize] = image;
                }
                let mut s = self.state();
                writes.iter().for_each(|w| s.apply(*w));
                writes.extend(tryboot::plan_arm_trial(&s, target, self.n).expect("not committed"));
                writes.iter().for_each(|w| s.apply(*w));
                let reboot = tryboot::plan_trial_reboot(&s).expect("armed");
                writes.extend(reboot.writes.iter().copied());
                if cut < writes.len() {
                    self.apply(&writes[..cut]);
                } else {
                    self.apply(&writes);
                    self.flag = reboot.reboot_into_trial;
                }
                self.boot()
            }
            Op::Reboot => self.boot(),
            Op::Rollback => {
                if let Ok(writes) = tryboot::plan_set_primary(&self.state(), committed.other()) {
                    self.apply(&writes);
                }
                self.boot()
            }
            Op::Cancel => {
                let writes =
                    tryboot::plan_set_primary(&self.state(), committed).expect("committed slot");
                self.apply(&writes);
                self.boot()
            }
        }
    }

    fn check_good_slots_are_healthy(&self) -> Result<(), TestCaseError> {
        let status = self.state().status(self.booted);
        for s in &status.slots {
            if s.health == SlotHealth::Good {
                prop_assert_eq!(
                    self.images[s.slot as usize],
                    Image::Healthy,
                    "slot {} is good but broken",
                    s.slot
                );
            }
        }
        Ok(())
    }
}

/// A U-Boot board driven one boot at a time.
struct Board {
    env: Env,
    images: [Image; 2],
    booted: Slot,
    n: Attempts,
}

impl Board {
    fn boot(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..40 {
            let before = View::of(&self.env, self.n);
            let decision = uboot::decide_boot(&self.env, self.n);
            self.env = decision.env().clone();
            let BootDecision::Boot { slot, .. } = decision else {
                return Err(TestCaseError::fail(format!(
                    "no slot had boots left: {before:?}"
                )));
            };
            prop_assert!(
                before.health(slot) == SlotHealth::Good
                    || (before.health(slot) == SlotHealth::Trial && before.left(slot) > 0),
                "booted {} in {:?}",
                slot,
                before
            );
            self.booted = slot;
            let image = self.images[slot as usize];
            if image == Image::Hangs {
                continue;
            }
            let writes = uboot::plan_boot(&self.env, slot, self.n);
            uboot::apply(&mut self.env, &writes);
            if View::of(&self.env, self.n).trial != Some(slot) {
                prop_assert_eq!(image, Image::Healthy, "settled on a broken slot {}", slot);
                return Ok(());
            }
            match image {
                Image::Healthy => {
                    let writes =
                        uboot::plan_mark_good(&self.env, slot, slot, self.n).expect("booted");
                    uboot::apply(&mut self.env, &writes);
                    return Ok(());
                }
                Image::FailsHealth => {
                    let writes =
                        uboot::plan_mark_bad(&self.env, slot, slot, self.n).expect("trial");
                    uboot::apply(&mut self.env, &writes);
                }
                Image::Unhealthy | Image::Hangs => {}
            }
        }
        Err(TestCaseError::fail("the station never settled"))
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let booted = self.booted;
        match *op {
            Op::Install(image, cut) => {
                let target = booted.other();
                let mut writes =
                    uboot::plan_mark_bad(&self.env, booted, target, self.n).expect("other slot");
                // RAUC writes the image only after the slot is marked bad.
                if cut >= writes.len() {
                    self.images[target as usize] = image;
                }
                let mut env = self.env.clone();
                uboot::apply(&mut env, &writes);
                writes.extend(
                    uboot::plan_arm_trial(&env, booted, target, self.n).expect("not booted"),
                );
                uboot::apply(&mut self.env, &writes[..cut.min(writes.len())]);
                self.boot()
            }
            Op::Reboot => self.boot(),
            Op::Rollback => {
                if let Ok(writes) =
                    uboot::plan_set_primary(&self.env, booted, booted.other(), self.n)
                {
                    uboot::apply(&mut self.env, &writes);
                }
                self.boot()
            }
            Op::Cancel => {
                if let Ok(writes) = uboot::plan_set_primary(&self.env, booted, booted, self.n) {
                    uboot::apply(&mut self.env, &writes);
                }
                self.boot()
            }
        }
    }

    fn check_good_slots_are_healthy(&self) -> Result<(), TestCaseError> {
        let view = View::of(&self.env, self.n);
        for s in Slot::ALL {
            if view.health(s) == SlotHealth::Good {
                prop_assert_eq!(
                    self.images[s as usize],
                    Image::Healthy,
                    "slot {} is good but broken: {:?}",
                    s,
                    view
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tryboot_station_only_ever_boots_a_good_or_trial_slot_and_settles_on_a_healthy_one(
        ops in proptest::collection::vec(op(), 1..25), n in attempts()
    ) {
        let mut pi = Pi {
            autoboot: Autoboot { committed: Slot::A },
            record: None,
            flag: false,
            images: [Image::Healthy, Image::Hangs],
            booted: Slot::A,
            n,
        };
        pi.boot()?;
        for op in &ops {
            pi.run(op)?;
            pi.check_good_slots_are_healthy()?;
        }
    }

    #[test]
    fn uboot_station_only_ever_boots_a_good_or_trial_slot_and_settles_on_a_healthy_one(
        ops in proptest::collection::vec(op(), 1..25), n in attempts()
    ) {
        let mut env = Env::new();
        env.insert(uboot::BOOT_ORDER.into(), "A B".into());
        env.insert(uboot::BOOT_A_LEFT.into(), n.get().to_string());
        env.insert(uboot::BOOT_B_LEFT.into(), "0".into());
        let mut board = Board { env, images: [Image::Healthy, Image::Hangs], booted: Slot::A, n };
        board.boot()?;
        for op in &ops {
            board.run(op)?;
            board.check_good_slots_are_healthy()?;
        }
    }
}
