//! Stations in miniature: the boot firmware's behaviour plus the userspace decisions, driven
//! by a ground truth the station does not know (what each slot's image does when booted).
//! Pure; used by the tests here, by fleet-bootctl's property tests and by simulated stations.
use super::tryboot::{self, TrybootState};
use super::uboot::{self, BootDecision, Env};
use super::{Attempts, autoboot::Autoboot};
use crate::slot::Slot;

/// What a slot's image does when booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Image {
    /// Boots and passes its health checks.
    Healthy,
    /// Hangs before userspace (the watchdog resets the board).
    Hangs,
    /// Reaches userspace, never passes its health checks, reboots without a verdict.
    Unhealthy,
    /// Reaches userspace, fails its health checks and marks itself bad, then reboots.
    FailsHealth,
}

impl Image {
    fn reaches_userspace(self) -> bool {
        !matches!(self, Image::Hangs)
    }
}

/// How a run of boots ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Running `slot` and staying there.
    On(Slot),
    /// The firmware found nothing to boot.
    Bricked,
    /// Still rebooting after the allowed number of boots.
    Looping,
}

/// A Pi 5 with the tryboot flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrybootStation {
    /// On disk: `autoboot.txt` (`None`: missing or unparsable) and the record.
    pub autoboot: Option<Autoboot>,
    pub record: Option<tryboot::Record>,
    /// The firmware's one-shot flag (lost on power cut, cleared by the firmware as it boots).
    pub tryboot_flag: bool,
    pub images: [Image; 2],
    pub attempts: Attempts,
    /// Every slot the firmware started, in order.
    pub boots: Vec<Slot>,
}

impl TrybootStation {
    #[must_use]
    pub fn new(committed: Slot, images: [Image; 2], attempts: Attempts) -> TrybootStation {
        TrybootStation {
            autoboot: Some(Autoboot { committed }),
            record: None,
            tryboot_flag: false,
            images,
            attempts,
            boots: Vec::new(),
        }
    }

    /// The state userspace reads (`None` if `autoboot.txt` is broken).
    #[must_use]
    pub fn state(&self) -> Option<TrybootState> {
        Some(TrybootState {
            autoboot: self.autoboot?,
            record: self.record,
        })
    }

    pub fn apply(&mut self, writes: &[tryboot::Write]) {
        for w in writes {
            match *w {
                tryboot::Write::Autoboot(a) => self.autoboot = Some(a),
                tryboot::Write::Record(r) => self.record = Some(r),
            }
        }
    }

    /// The power goes: the one-shot flag is lost with it.
    pub fn power_cut(&mut self) {
        self.tryboot_flag = false;
    }

    /// Carries out a plan the way the shell does (writes, then the trial reboot's flag).
    pub fn carry_out(&mut self, plan: &tryboot::Plan) {
        self.apply(&plan.writes);
        if plan.reboot_into_trial {
            self.tryboot_flag = true;
        }
    }

    /// Boots until the station stays up on a slot, at most `max_boots` times.
    pub fn run(&mut self, max_boots: usize) -> Settled {
        for _ in 0..max_boots {
            let flag = std::mem::take(&mut self.tryboot_flag);
            let Some((slot, _via_tryboot)) = tryboot::firmware_boot(self.autoboot, flag) else {
                return Settled::Bricked;
            };
            self.boots.push(slot);
            let image = self.images[slot as usize];
            if !image.reaches_userspace() {
                continue;
            }
            let Some(state) = self.state() else {
                return Settled::Bricked;
            };
            let plan = tryboot::plan_boot(&state, slot);
            self.carry_out(&plan);
            if plan.reboot_into_trial {
                continue;
            }
            let Some(state) = self.state() else {
                return Settled::Bricked;
            };
            if slot == state.committed() {
                return Settled::On(slot);
            }
            // A trial boot: the health gate decides.
            match image {
                Image::Healthy => {
                    let writes = tryboot::plan_mark_good(&state, slot, slot)
                        .expect("the booted slot can always be marked good");
                    self.apply(&writes);
                    return Settled::On(slot);
                }
                Image::FailsHealth => {
                    let writes = tryboot::plan_mark_bad(&state, slot)
                        .expect("a slot that is not committed can always be marked bad");
                    self.apply(&writes);
                }
                Image::Unhealthy | Image::Hangs => {}
            }
        }
        Settled::Looping
    }
}

/// A board with U-Boot and our boot script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UbootStation {
    /// `uboot.env` as the script imports it (`None`: missing or bad CRC).
    pub env: Option<Env>,
    pub images: [Image; 2],
    pub attempts: Attempts,
    pub boots: Vec<Slot>,
}

impl UbootStation {
    /// A station as flashed: `slot` first in the order, both counters full, no trial.
    #[must_use]
    pub fn new(first: Slot, images: [Image; 2], attempts: Attempts) -> UbootStation {
        let mut env = Env::new();
        env.insert(uboot::BOOT_ORDER.into(), uboot::order_with_first(first));
        for s in Slot::ALL {
            env.insert(uboot::left_key(s).into(), attempts.get().to_string());
        }
        UbootStation {
            env: Some(env),
            images,
            attempts,
            boots: Vec::new(),
        }
    }

    /// The env userspace reads (after a boot the script has always rewritten it).
    #[must_use]
    pub fn env(&self) -> Env {
        self.env.clone().unwrap_or_default()
    }

    pub fn apply(&mut self, writes: &[uboot::EnvWrite]) {
        let mut env = self.env();
        uboot::apply(&mut env, writes);
        self.env = Some(env);
    }

    /// Boots until the station stays up on a slot, at most `max_boots` times. With
    /// `torn_write_at = Some(n)`, the bootloader's own (non-atomic) write of boot `n` is cut
    /// by a power loss and leaves a file with a bad CRC.
    pub fn run(&mut self, max_boots: usize, torn_write_at: Option<usize>) -> Settled {
        for n in 0..max_boots {
            let decision = uboot::decide_boot(&self.env(), self.attempts);
            if torn_write_at == Some(n) {
                self.env = None;
                continue;
            }
            self.env = Some(decision.env().clone());
            let BootDecision::Boot { slot, .. } = decision else {
                continue;
            };
            self.boots.push(slot);
            let image = self.images[slot as usize];
            if !image.reaches_userspace() {
                continue;
            }
            let writes = uboot::plan_boot(&self.env(), slot, self.attempts);
            self.apply(&writes);
            if uboot::View::of(&self.env(), self.attempts).trial != Some(slot) {
                return Settled::On(slot);
            }
            match image {
                Image::Healthy => {
                    let writes = uboot::plan_mark_good(&self.env(), slot, slot, self.attempts)
                        .expect("the booted slot can always be marked good");
                    self.apply(&writes);
                    return Settled::On(slot);
                }
                Image::FailsHealth => {
                    let writes = uboot::plan_mark_bad(&self.env(), slot, slot, self.attempts)
                        .expect("a trial slot can always be marked bad");
                    self.apply(&writes);
                }
                Image::Unhealthy | Image::Hangs => {}
            }
        }
        Settled::Looping
    }
}
