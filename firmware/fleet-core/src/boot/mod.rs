//! Boot-flow models (pure). See docs/adr/0001-boot-flow.md and docs/boot-flows.md.
//!
//! Two flows, each a pure model of what the boot firmware does plus the userspace decisions
//! that steer it:
//!
//! - [`tryboot`]: the Raspberry Pi 5 firmware's `tryboot_a_b` mode. The committed slot lives
//!   in `autoboot.txt` ([`autoboot`]), the trial and its attempt counter in a small record on
//!   `/data` ([`tryboot::Record`]).
//! - [`uboot`]: the U-Boot boot script's `BOOT_ORDER` / `BOOT_x_LEFT` counters in the U-Boot
//!   environment.
//!
//! Every userspace change is planned as an ordered list of writes. The plans are ordered so
//! that a power loss between any two writes still leaves a station that boots a good slot; the
//! tests enumerate every prefix of every plan to show it.
use crate::slot::Slot;

pub mod autoboot;
pub mod sim;
pub mod tryboot;
pub mod uboot;

/// Trial boots a freshly installed slot gets before it is given up (the contract's N).
pub const DEFAULT_ATTEMPTS: Attempts = Attempts(3);

/// Number of trial boots a slot gets: 1..=9.
///
/// The upper bound is U-Boot's: `setexpr` reads and prints numbers in hexadecimal while
/// `test -gt` reads decimal, and the two agree only on single digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Attempts(u8);

impl Attempts {
    pub const MAX: u8 = 9;

    /// `None` outside 1..=9.
    #[must_use]
    pub fn new(n: u8) -> Option<Attempts> {
        (1..=Self::MAX).contains(&n).then_some(Attempts(n))
    }

    #[must_use]
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Attempts {
    fn default() -> Self {
        DEFAULT_ATTEMPTS
    }
}

/// A userspace request the boot flow refuses because carrying it out could leave the
/// station without a good slot, or contradicts what is running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("unable to mark slot {slot} good: slot {booted} is booted")]
    NotBooted { slot: Slot, booted: Slot },
    #[error("unable to arm a trial of slot {slot}: it is already the committed slot")]
    AlreadyCommitted { slot: Slot },
    #[error("unable to make slot {slot} primary: it is not known to be good")]
    NotGood { slot: Slot },
    #[error("unable to mark slot {slot} bad: the other slot is not known to be good")]
    NoGoodSlotLeft { slot: Slot },
    #[error("unable to reboot into a trial: no trial is pending")]
    NoTrialPending,
}

/// How the station reboots into `into`: on a flow with a one-shot trial flag (tryboot), a slot
/// other than the committed one is reached only by a trial reboot (which spends an attempt);
/// everything else is a plain reboot, and the boot flow picks the slot itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootKind {
    /// Reboot with the firmware's one-shot trial flag.
    Trial,
    /// An ordinary reboot.
    Plain,
}

/// The reboot a tryboot station makes to reach `into`, given its committed slot.
#[must_use]
pub fn tryboot_reboot_kind(into: Slot, committed: Slot) -> RebootKind {
    if into == committed {
        RebootKind::Plain
    } else {
        RebootKind::Trial
    }
}

/// Whether arming a trial of `slot` must write the U-Boot environment: not when the station
/// already runs `slot` as the armed trial (a restart during the trial, or a health check
/// retried on the same boot). Arming again there would reset `BOOT_x_LEFT` and let a slot
/// that keeps failing boot forever; the boot script counts its attempts instead.
#[must_use]
pub fn uboot_needs_arming(booted: Slot, view: &uboot::View, slot: Slot) -> bool {
    !(booted == slot && view.trial == Some(slot))
}

#[cfg(test)]
mod tests;
