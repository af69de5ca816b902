//! The Raspberry Pi 5 tryboot flow, modelled.
//!
//! What the firmware does (Raspberry Pi documentation, "autoboot.txt" and "tryboot"):
//! with `tryboot_a_b=1` it boots the `[all]` `boot_partition`, except on the one boot after
//! the one-shot tryboot flag was set (`reboot "0 tryboot"`, or the mailbox's set-reboot-flags
//! tag), when it boots the `[tryboot]` `boot_partition`. The firmware clears the flag as it
//! uses it, and a power cut clears it too, so a trial that hangs or resets comes back on the
//! committed slot by itself. [`firmware_boot`] is that behaviour as a function.
//!
//! What we add in userspace: a [`Record`] on `/data` about the non-committed slot (good
//! fallback, on trial with N attempts left, or bad). An attempt is consumed *before* each
//! trial reboot ([`plan_trial_reboot`]), like U-Boot decrements before booting, so a trial
//! that never reaches userspace still uses up its attempts. Back on the committed slot after
//! a trial that gave no verdict, [`plan_boot`] retries the trial while attempts are left and
//! marks the slot bad when they have run out.
//!
//! One owner (ADR 0001, amendment 1): the record counts the trial's boots and the boot check
//! alone retries a trial that came back on the committed slot. The updater only makes the
//! first trial reboot and the retry after a failed health check, both through
//! [`plan_trial_reboot`], which spends from the same count and refuses a slot that is not on
//! trial; it never arms the count again ([`plan_arm_trial`] leaves a running trial alone).
//!
//! Commit order: `autoboot.txt` first (the commit point), then the record. A record about the
//! committed slot itself is stale (a power cut fell between the two writes) and is read as
//! "the other slot is not known to be good". One stale record is not ambiguous: a *trial* of
//! the committed slot is left only by a commit cut between its writes ([`plan_mark_good`] is
//! the one plan that moves `autoboot.txt` onto a slot on trial; a rollback and giving up the
//! committed slot start from a good other slot). The other slot was then the committed one
//! before: good. The boot check and a repeated commit finish that commit ([`finish_commit`]),
//! so a cut there does not leave the station without its rollback target.
use super::autoboot::Autoboot;
use super::{Attempts, Rejected};
use crate::ports::{BootStatus, SlotStatus};
use crate::slot::{Slot, SlotHealth};

/// Longest record file the parser reads.
pub const MAX_RECORD_LEN: usize = 256;

/// What userspace knows about the slot that is not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherHealth {
    /// Was committed before and booted fine: a rollback target.
    Good,
    /// Armed for a trial; `attempts_left` more trial reboots are allowed.
    Trial { attempts_left: u8 },
    /// Not to be booted (failed, being written, or unknown).
    Bad,
}

/// The attempt-counter record on `/data` (`/data/fleet/boot/attempts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The slot the record speaks about; only meaningful when it is not the committed one.
    pub slot: Slot,
    pub health: OtherHealth,
}

impl Record {
    /// The file's exact bytes: `slot=B\nstate=trial\nattempts-left=2\n`.
    #[must_use]
    pub fn render(&self) -> String {
        match self.health {
            OtherHealth::Good => format!("slot={}\nstate=good\n", self.slot),
            OtherHealth::Bad => format!("slot={}\nstate=bad\n", self.slot),
            OtherHealth::Trial { attempts_left } => {
                format!(
                    "slot={}\nstate=trial\nattempts-left={attempts_left}\n",
                    self.slot
                )
            }
        }
    }

    /// Parses exactly what [`Record::render`] writes.
    pub fn parse(text: &str) -> Result<Record, RecordError> {
        if text.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong { len: text.len() });
        }
        let mut slot = None;
        let mut state = None;
        let mut left = None;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let (key, value) = line
                .split_once('=')
                .ok_or(RecordError::Malformed { line: line_no })?;
            let target = match key {
                "slot" => &mut slot,
                "state" => &mut state,
                "attempts-left" => &mut left,
                _ => return Err(RecordError::Malformed { line: line_no }),
            };
            if target.replace(value).is_some() {
                return Err(RecordError::Malformed { line: line_no });
            }
        }
        let slot = match slot {
            Some("A") => Slot::A,
            Some("B") => Slot::B,
            _ => return Err(RecordError::Invalid { key: "slot" }),
        };
        let health = match (state, left) {
            (Some("good"), None) => OtherHealth::Good,
            (Some("bad"), None) => OtherHealth::Bad,
            (Some("trial"), Some(n)) => OtherHealth::Trial {
                attempts_left: n.parse::<u8>().ok().filter(|n| *n <= Attempts::MAX).ok_or(
                    RecordError::Invalid {
                        key: "attempts-left",
                    },
                )?,
            },
            _ => return Err(RecordError::Invalid { key: "state" }),
        };
        Ok(Record { slot, health })
    }
}

/// A record file this flow did not write. The shell reads it as "no record" (the other slot
/// is not known to be good), which is the safe reading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("unable to parse the attempt record: {len} bytes is too long")]
    TooLong { len: usize },
    #[error("unable to parse the attempt record: line {line} is not a known key=value")]
    Malformed { line: usize },
    #[error("unable to parse the attempt record: invalid or missing {key}")]
    Invalid { key: &'static str },
}

/// Everything the tryboot flow persists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrybootState {
    pub autoboot: Autoboot,
    /// `None` when the file is missing or unreadable.
    pub record: Option<Record>,
}

/// One state write, carried out by the shell as temp + fsync + rename + fsync dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Autoboot(Autoboot),
    Record(Record),
}

/// Writes, then possibly a reboot with the one-shot tryboot flag set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub writes: Vec<Write>,
    pub reboot_into_trial: bool,
}

impl TrybootState {
    /// A fresh station: `slot` committed, the other slot unknown.
    #[must_use]
    pub fn fresh(committed: Slot) -> TrybootState {
        TrybootState {
            autoboot: Autoboot { committed },
            record: None,
        }
    }

    #[must_use]
    pub fn committed(&self) -> Slot {
        self.autoboot.committed
    }

    /// What we know about the non-committed slot (stale or missing record: `Bad`).
    #[must_use]
    pub fn other(&self) -> OtherHealth {
        match self.record {
            Some(r) if r.slot == self.committed().other() => r.health,
            _ => OtherHealth::Bad,
        }
    }

    /// The state after `write` landed on disk.
    pub fn apply(&mut self, write: Write) {
        match write {
            Write::Autoboot(a) => self.autoboot = a,
            Write::Record(r) => self.record = Some(r),
        }
    }

    /// The port's view of this state.
    #[must_use]
    pub fn status(&self, booted: Slot) -> BootStatus {
        let committed = self.committed();
        let other = self.other();
        let primary = match other {
            OtherHealth::Trial { attempts_left } if attempts_left > 0 => committed.other(),
            _ => committed,
        };
        let status = |slot: Slot| {
            let (health, attempts_left) = if slot == committed {
                (SlotHealth::Good, 0)
            } else {
                match other {
                    OtherHealth::Good => (SlotHealth::Good, 0),
                    OtherHealth::Trial { attempts_left } => (SlotHealth::Trial, attempts_left),
                    OtherHealth::Bad => (SlotHealth::Bad, 0),
                }
            };
            SlotStatus {
                slot,
                health,
                attempts_left,
                version: None,
            }
        };
        BootStatus {
            booted,
            primary,
            slots: [status(Slot::A), status(Slot::B)],
        }
    }
}

/// The firmware: which slot it boots and whether this is a tryboot boot, given what is on
/// the config partition and the one-shot flag (which the firmware then clears). `None`: no
/// valid `autoboot.txt`, the firmware finds nothing to boot (the case the atomic rewrite
/// exists to prevent).
#[must_use]
pub fn firmware_boot(autoboot: Option<Autoboot>, tryboot_flag: bool) -> Option<(Slot, bool)> {
    let autoboot = autoboot?;
    Some(if tryboot_flag {
        (autoboot.tryboot(), true)
    } else {
        (autoboot.committed, false)
    })
}

/// Arms a trial of `slot`: the next trial reboot boots it, `attempts` times at most.
///
/// The record owns the trial's count: arming a slot that is already on trial changes nothing,
/// so nobody (the updater retrying an unhealthy trial, a restarted daemon, an operator) can
/// give a failing slot its attempts back. A fresh install starts from a slot marked bad (RAUC
/// marks its target bad before writing it), so it always gets the full count.
pub fn plan_arm_trial(
    state: &TrybootState,
    slot: Slot,
    attempts: Attempts,
) -> Result<Vec<Write>, Rejected> {
    if slot == state.committed() {
        return Err(Rejected::AlreadyCommitted { slot });
    }
    if matches!(state.other(), OtherHealth::Trial { .. }) {
        return Ok(Vec::new());
    }
    Ok(vec![Write::Record(Record {
        slot,
        health: OtherHealth::Trial {
            attempts_left: attempts.get(),
        },
    })])
}

/// Consumes one attempt and reboots with the tryboot flag; with none left, marks the trial
/// slot bad and stays.
pub fn plan_trial_reboot(state: &TrybootState) -> Result<Plan, Rejected> {
    let slot = state.committed().other();
    match state.other() {
        OtherHealth::Trial { attempts_left: 0 } => Ok(Plan {
            writes: vec![Write::Record(Record {
                slot,
                health: OtherHealth::Bad,
            })],
            reboot_into_trial: false,
        }),
        OtherHealth::Trial { attempts_left } => Ok(Plan {
            writes: vec![Write::Record(Record {
                slot,
                health: OtherHealth::Trial {
                    attempts_left: attempts_left - 1,
                },
            })],
            reboot_into_trial: true,
        }),
        OtherHealth::Good | OtherHealth::Bad => Err(Rejected::NoTrialPending),
    }
}

/// The record's write that finishes a commit cut between its two writes: `autoboot.txt`
/// already commits the slot the record still has on trial, so the other slot (committed
/// until then) is the good fallback. `None` for every other state.
#[must_use]
pub fn finish_commit(state: &TrybootState) -> Option<Write> {
    let committed = state.committed();
    match state.record {
        Some(Record {
            slot,
            health: OtherHealth::Trial { .. },
        }) if slot == committed => Some(Write::Record(Record {
            slot: committed.other(),
            health: OtherHealth::Good,
        })),
        _ => None,
    }
}

/// Early in every boot. On the committed slot with a trial still pending (the trial hung,
/// reset, or rebooted without a verdict; or the station went down between arming and the
/// trial reboot): retry it, or give it up when its attempts have run out. A commit cut
/// between its writes is finished ([`finish_commit`]). On the trial slot: nothing, the
/// health gate decides.
#[must_use]
pub fn plan_boot(state: &TrybootState, booted: Slot) -> Plan {
    if booted != state.committed() {
        return Plan::default();
    }
    if let Some(write) = finish_commit(state) {
        return Plan {
            writes: vec![write],
            reboot_into_trial: false,
        };
    }
    plan_trial_reboot(state).unwrap_or_default()
}

/// Commits the booted slot. Only the booted slot can be marked good. Marking the committed
/// slot good again finishes its commit if a cut left it half done (an updater that resumes
/// its commit after the cut).
pub fn plan_mark_good(
    state: &TrybootState,
    booted: Slot,
    slot: Slot,
) -> Result<Vec<Write>, Rejected> {
    if slot != booted {
        return Err(Rejected::NotBooted { slot, booted });
    }
    let committed = state.committed();
    if slot == committed {
        return Ok(finish_commit(state).into_iter().collect());
    }
    Ok(vec![
        Write::Autoboot(Autoboot { committed: slot }),
        Write::Record(Record {
            slot: committed,
            health: OtherHealth::Good,
        }),
    ])
}

/// Marks `slot` bad. The committed slot can only be given up for a good other slot.
pub fn plan_mark_bad(state: &TrybootState, slot: Slot) -> Result<Vec<Write>, Rejected> {
    let committed = state.committed();
    if slot != committed {
        return Ok(vec![Write::Record(Record {
            slot,
            health: OtherHealth::Bad,
        })]);
    }
    if state.other() != OtherHealth::Good {
        return Err(Rejected::NoGoodSlotLeft { slot });
    }
    Ok(vec![
        Write::Autoboot(Autoboot {
            committed: slot.other(),
        }),
        Write::Record(Record {
            slot,
            health: OtherHealth::Bad,
        }),
    ])
}

/// Makes `slot` primary without a trial: a rollback to the good other slot, or (for the
/// committed slot) cancelling a pending trial.
pub fn plan_set_primary(state: &TrybootState, slot: Slot) -> Result<Vec<Write>, Rejected> {
    let committed = state.committed();
    if slot == committed {
        return Ok(match state.other() {
            OtherHealth::Trial { .. } => {
                vec![Write::Record(Record {
                    slot: slot.other(),
                    health: OtherHealth::Bad,
                })]
            }
            OtherHealth::Good | OtherHealth::Bad => Vec::new(),
        });
    }
    if state.other() != OtherHealth::Good {
        return Err(Rejected::NotGood { slot });
    }
    Ok(vec![
        Write::Autoboot(Autoboot { committed: slot }),
        Write::Record(Record {
            slot: committed,
            health: OtherHealth::Good,
        }),
    ])
}
