//! The U-Boot flow, modelled: what `boot.cmd` does with the environment at every boot
//! ([`decide_boot`]) and the userspace changes that steer it (`plan_*`).
//!
//! Variables (all in `uboot.env` on the boot partition):
//! - `BOOT_ORDER`: slots to try, in order (`"A B"`); empty or missing means `"A B"`.
//! - `BOOT_A_LEFT`, `BOOT_B_LEFT`: boots left for each slot; empty or missing means the
//!   configured attempts (3). A slot with 0 left is skipped.
//! - `FLEET_TRIAL`: the slot on trial, if any. Only userspace writes it; the script carries it
//!   through unchanged. It tells a trial boot (the health gate decides) from a normal boot of
//!   the good slot (whose counter userspace refreshes at every boot, [`plan_boot`]).
//!
//! The script, exactly: import the env (a bad CRC or missing file leaves all variables unset),
//! apply the defaults, walk `BOOT_ORDER` and take the first `A`/`B` token whose counter is
//! above 0 (`test N -gt 0`, decimal), decrement that counter (`setexpr`, hexadecimal: the
//! two agree because counters stay within 0..=9), export only [`EXPORTED`] and write the file.
//! When no slot has boots left, the script's policy is: set both counters back to the
//! configured attempts, keep `BOOT_ORDER`, write, and reset the board. That retries everything
//! rather than stopping dead in the bootloader of a station nobody can reach.
use std::collections::BTreeMap;

use super::{Attempts, Rejected};
use crate::ports::{BootStatus, SlotStatus};
use crate::slot::{Slot, SlotHealth};

/// The U-Boot environment as variables.
pub type Env = BTreeMap<String, String>;

pub const BOOT_ORDER: &str = "BOOT_ORDER";
pub const BOOT_A_LEFT: &str = "BOOT_A_LEFT";
pub const BOOT_B_LEFT: &str = "BOOT_B_LEFT";
pub const FLEET_TRIAL: &str = "FLEET_TRIAL";
/// The variables the script writes back (`env export -c ... <names>`); every other variable
/// in the file is dropped by the bootloader's write.
pub const EXPORTED: [&str; 4] = [BOOT_ORDER, BOOT_A_LEFT, BOOT_B_LEFT, FLEET_TRIAL];
/// `BOOT_ORDER` when the variable is empty or missing.
pub const DEFAULT_ORDER: &str = "A B";

#[must_use]
pub fn left_key(slot: Slot) -> &'static str {
    match slot {
        Slot::A => BOOT_A_LEFT,
        Slot::B => BOOT_B_LEFT,
    }
}

/// `BOOT_ORDER` with `first` first.
#[must_use]
pub fn order_with_first(first: Slot) -> String {
    format!("{} {}", first, first.other())
}

/// How `test N -gt 0` reads a number: leading decimal digits, anything else 0.
fn test_number(value: &str) -> u64 {
    let digits: String = value
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .take(18)
        .collect();
    digits.parse().unwrap_or(0)
}

/// `setexpr X ${X} - 1`: reads hexadecimal, prints lower-case hexadecimal.
fn setexpr_decrement(value: &str) -> String {
    let digits: String = value
        .trim()
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .take(15)
        .collect();
    let n = u64::from_str_radix(&digits, 16).unwrap_or(0);
    format!("{:x}", n.wrapping_sub(1))
}

fn non_empty<'a>(env: &'a Env, key: &str) -> Option<&'a str> {
    env.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

/// The script's variables after its defaults.
fn with_defaults(env: &Env, attempts: Attempts) -> Env {
    let mut vars = env.clone();
    if non_empty(env, BOOT_ORDER).is_none() {
        vars.insert(BOOT_ORDER.into(), DEFAULT_ORDER.into());
    }
    for slot in Slot::ALL {
        if non_empty(env, left_key(slot)).is_none() {
            vars.insert(left_key(slot).into(), attempts.get().to_string());
        }
    }
    vars
}

fn exported(vars: &Env) -> Env {
    vars.iter()
        .filter(|(k, v)| EXPORTED.contains(&k.as_str()) && !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What the boot script does with the environment it imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    /// Writes `env` and boots `slot`.
    Boot { slot: Slot, env: Env },
    /// No slot had boots left: writes `env` (counters reset) and resets the board.
    ResetCounters { env: Env },
}

impl BootDecision {
    /// The environment the script writes.
    #[must_use]
    pub fn env(&self) -> &Env {
        match self {
            BootDecision::Boot { env, .. } | BootDecision::ResetCounters { env } => env,
        }
    }
}

/// The boot script as a function. `env` is what `env import -c` yielded (empty when the file
/// is missing or its CRC is wrong).
#[must_use]
pub fn decide_boot(env: &Env, attempts: Attempts) -> BootDecision {
    let mut vars = with_defaults(env, attempts);
    let order = vars.get(BOOT_ORDER).cloned().unwrap_or_default();
    let chosen = order.split_whitespace().find_map(|token| {
        let slot = match token {
            "A" => Slot::A,
            "B" => Slot::B,
            _ => return None,
        };
        let left = vars.get(left_key(slot)).map_or(0, |v| test_number(v));
        (left > 0).then_some(slot)
    });
    match chosen {
        Some(slot) => {
            let key = left_key(slot);
            let next = setexpr_decrement(vars.get(key).map_or("", String::as_str));
            vars.insert(key.into(), next);
            BootDecision::Boot {
                slot,
                env: exported(&vars),
            }
        }
        None => {
            for slot in Slot::ALL {
                vars.insert(left_key(slot).into(), attempts.get().to_string());
            }
            BootDecision::ResetCounters {
                env: exported(&vars),
            }
        }
    }
}

/// One `fw_setenv`-style assignment; `None` deletes the variable. A plan's writes are applied
/// in one atomic file write, and ordered so that applying any prefix of them is safe too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvWrite {
    pub key: &'static str,
    pub value: Option<String>,
}

impl EnvWrite {
    fn set(key: &'static str, value: impl Into<String>) -> EnvWrite {
        EnvWrite {
            key,
            value: Some(value.into()),
        }
    }
    fn unset(key: &'static str) -> EnvWrite {
        EnvWrite { key, value: None }
    }
}

/// `env` after `writes`.
pub fn apply(env: &mut Env, writes: &[EnvWrite]) {
    for w in writes {
        match &w.value {
            Some(v) => env.insert(w.key.to_owned(), v.clone()),
            None => env.remove(w.key),
        };
    }
}

/// The flow's state as userspace reads it (the script's defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// `A`/`B` tokens of `BOOT_ORDER`, first occurrence only.
    pub order: Vec<Slot>,
    /// Boots left per slot as `test -gt` reads them, saturated at 255.
    pub left: [u8; 2],
    pub trial: Option<Slot>,
}

impl View {
    #[must_use]
    pub fn of(env: &Env, attempts: Attempts) -> View {
        let vars = with_defaults(env, attempts);
        let mut order = Vec::new();
        for token in vars
            .get(BOOT_ORDER)
            .map_or("", String::as_str)
            .split_whitespace()
        {
            if let Ok(slot) = token.parse::<Slot>()
                && (token == "A" || token == "B")
                && !order.contains(&slot)
            {
                order.push(slot);
            }
        }
        let left = |slot: Slot| {
            u8::try_from(vars.get(left_key(slot)).map_or(0, |v| test_number(v))).unwrap_or(u8::MAX)
        };
        let trial = non_empty(env, FLEET_TRIAL).and_then(|v| match v {
            "A" => Some(Slot::A),
            "B" => Some(Slot::B),
            _ => None,
        });
        View {
            order,
            left: [left(Slot::A), left(Slot::B)],
            trial,
        }
    }

    #[must_use]
    pub fn left(&self, slot: Slot) -> u8 {
        self.left[slot as usize]
    }

    /// The slot the script would pick next.
    #[must_use]
    pub fn primary(&self) -> Option<Slot> {
        self.order.iter().copied().find(|s| self.left(*s) > 0)
    }

    #[must_use]
    pub fn health(&self, slot: Slot) -> SlotHealth {
        if self.left(slot) == 0 || !self.order.contains(&slot) {
            SlotHealth::Bad
        } else if self.trial == Some(slot) {
            SlotHealth::Trial
        } else {
            SlotHealth::Good
        }
    }

    #[must_use]
    pub fn status(&self, booted: Slot) -> BootStatus {
        let status = |slot: Slot| SlotStatus {
            slot,
            health: self.health(slot),
            attempts_left: self.left(slot),
            version: None,
        };
        BootStatus {
            booted,
            primary: self.primary().unwrap_or(booted),
            slots: [status(Slot::A), status(Slot::B)],
        }
    }
}

/// Early in every boot. Booted the trial slot: nothing (the health gate decides). Booted any
/// other slot: it runs as the good slot, so its counter goes back to the full attempts, and a
/// trial that is over (ran out, or never started) is given up. A trial the script would pick
/// next was armed during this boot (had the script seen it, it would have booted it): it stays,
/// so running the check twice cannot cancel an install.
#[must_use]
pub fn plan_boot(env: &Env, booted: Slot, attempts: Attempts) -> Vec<EnvWrite> {
    let view = View::of(env, attempts);
    if view.trial == Some(booted) {
        return Vec::new();
    }
    let mut writes = Vec::new();
    if view.left(booted) != attempts.get() || non_empty(env, left_key(booted)).is_none() {
        writes.push(EnvWrite::set(left_key(booted), attempts.get().to_string()));
    }
    if let Some(trial) = view.trial
        && view.primary() != Some(trial)
    {
        if view.left(trial) != 0 {
            writes.push(EnvWrite::set(left_key(trial), "0"));
        }
        writes.push(EnvWrite::unset(FLEET_TRIAL));
    }
    writes
}

/// Arms a trial of `slot` (not the booted one): marker first, then counter, then order, so no
/// prefix makes an unproven slot look good.
pub fn plan_arm_trial(
    env: &Env,
    booted: Slot,
    slot: Slot,
    attempts: Attempts,
) -> Result<Vec<EnvWrite>, Rejected> {
    let _ = env;
    if slot == booted {
        return Err(Rejected::AlreadyCommitted { slot });
    }
    Ok(vec![
        EnvWrite::set(FLEET_TRIAL, slot.as_str()),
        EnvWrite::set(left_key(slot), attempts.get().to_string()),
        EnvWrite::set(BOOT_ORDER, order_with_first(slot)),
    ])
}

/// Commits the booted slot. Only the booted slot can be marked good.
pub fn plan_mark_good(
    env: &Env,
    booted: Slot,
    slot: Slot,
    attempts: Attempts,
) -> Result<Vec<EnvWrite>, Rejected> {
    if slot != booted {
        return Err(Rejected::NotBooted { slot, booted });
    }
    let view = View::of(env, attempts);
    let mut writes = vec![EnvWrite::set(left_key(slot), attempts.get().to_string())];
    match view.trial {
        Some(t) if t == slot => {
            writes.push(EnvWrite::set(BOOT_ORDER, order_with_first(slot)));
            writes.push(EnvWrite::unset(FLEET_TRIAL));
        }
        // A trial of the other slot is armed: committing the running slot must not cancel it.
        Some(_) => {}
        None => {
            if view.order.first() != Some(&slot) || view.order.len() != 2 {
                // A slot missing from the order is bad: it stays bad when the order is rewritten.
                let other = slot.other();
                if !view.order.contains(&other) && view.left(other) > 0 {
                    writes.push(EnvWrite::set(left_key(other), "0"));
                }
                writes.push(EnvWrite::set(BOOT_ORDER, order_with_first(slot)));
            }
        }
    }
    Ok(writes)
}

/// Marks `slot` bad: counter first (the script skips it from then on), then order.
pub fn plan_mark_bad(
    env: &Env,
    booted: Slot,
    slot: Slot,
    attempts: Attempts,
) -> Result<Vec<EnvWrite>, Rejected> {
    let view = View::of(env, attempts);
    let other = slot.other();
    if slot == booted && view.trial != Some(slot) && view.health(other) != SlotHealth::Good {
        return Err(Rejected::NoGoodSlotLeft { slot });
    }
    let mut writes = vec![
        EnvWrite::set(left_key(slot), "0"),
        EnvWrite::set(BOOT_ORDER, order_with_first(other)),
    ];
    if view.trial == Some(slot) {
        writes.push(EnvWrite::unset(FLEET_TRIAL));
    }
    Ok(writes)
}

/// Makes a good `slot` primary without a trial (operator rollback), cancelling a pending
/// trial of the other slot.
pub fn plan_set_primary(
    env: &Env,
    booted: Slot,
    slot: Slot,
    attempts: Attempts,
) -> Result<Vec<EnvWrite>, Rejected> {
    let view = View::of(env, attempts);
    let good =
        view.trial != Some(slot) && (slot == booted || view.health(slot) == SlotHealth::Good);
    if !good {
        return Err(Rejected::NotGood { slot });
    }
    let mut writes = vec![
        EnvWrite::set(left_key(slot), attempts.get().to_string()),
        EnvWrite::set(BOOT_ORDER, order_with_first(slot)),
    ];
    if view.trial == Some(slot.other()) {
        writes.push(EnvWrite::set(left_key(slot.other()), "0"));
        writes.push(EnvWrite::unset(FLEET_TRIAL));
    }
    Ok(writes)
}
